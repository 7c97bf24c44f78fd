//! API tokens of `flowrt serve`: created for a user of `flow.toml`, shown once, stored only as
//! a SHA-256 hash, optionally expiring, revocable. A request presents `Bearer flow_…` and acts
//! as the token's user.

use crate::store::{Millis, Store, StoreResult, TokenRecord};
use sha2::{Digest, Sha256};

/// Every token starts with this, so that a leaked one is recognisable (secret scanners).
pub const PREFIX: &str = "flow_";

/// Why a presented token does not authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Unknown,
    Expired { id: String, user: String },
    Revoked { id: String, user: String },
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => {
                f.write_str("this request needs an API token: Authorization: Bearer flow_…")
            }
            AuthError::Unknown => f.write_str("the API token is not valid"),
            AuthError::Expired { id, .. } => write!(f, "the API token {id} has expired"),
            AuthError::Revoked { id, .. } => write!(f, "the API token {id} has been revoked"),
        }
    }
}

/// SHA-256 (hex) of a token: what the store keeps.
pub fn hash(token: &str) -> String {
    flow_stdlib::hex::encode(&Sha256::digest(token.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    // Without the OS random source no token can be made safely.
    getrandom::fill(&mut buffer).expect("the operating system's random source");
    flow_stdlib::hex::encode(&buffer)
}

/// Creates a token for `user`; returns the token (to show once) and its record.
pub fn create(
    store: &mut dyn Store,
    user: &str,
    name: &str,
    expires_in_ms: Option<i64>,
    now: Millis,
) -> StoreResult<(String, TokenRecord)> {
    let token = format!("{PREFIX}{}", random_hex(24));
    let record = TokenRecord {
        id: format!("t{}", random_hex(4)),
        user: user.to_string(),
        name: name.to_string(),
        created_at: now,
        expires_at: expires_in_ms.map(|ms| now.saturating_add(ms)),
        revoked_at: None,
    };
    store.create_token(&record, &hash(&token))?;
    Ok((token, record))
}

/// The user of a scrape token (`flowrt token create --scrape`): a monitoring system that
/// reads `GET /metrics` and `GET /openapi.json` and nothing else. No user of flow.toml can
/// have this name (`@` starts no name the configuration accepts as a person's).
pub const SCRAPER: &str = "@scrape";

/// What a scrape token may ask for (`METHOD /path`).
pub const SCRAPE_REQUESTS: [&str; 2] = ["GET /metrics", "GET /openapi.json"];

/// The user of a token made for a system (`flowrt token create --system NAME`) starts with
/// this; no user of flow.toml can (config refuses the name). A system may send the signals
/// whose senders name it (`from system("NAME")`), and nothing else.
pub const SYSTEM_PREFIX: &str = "system:";

/// The identity system `name` acts as.
pub fn system_identity(name: &str) -> String {
    format!("{SYSTEM_PREFIX}{name}")
}

/// The system an identity is, when it is one.
pub fn system_of(identity: &str) -> Option<&str> {
    identity.strip_prefix(SYSTEM_PREFIX)
}

/// Whether a system may make this request (`METHOD /path`): it sends signals only.
pub fn system_may_ask(request: &str) -> bool {
    request
        .strip_prefix("POST /api/runs/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(_, rest)| {
            rest.strip_prefix("signals/")
                .is_some_and(|name| !name.is_empty() && !name.contains('/'))
        })
}

/// The record of a live token, or why the presented one does not authenticate.
pub fn authenticate(
    store: &mut dyn Store,
    presented: Option<&str>,
    now: Millis,
) -> StoreResult<Result<TokenRecord, AuthError>> {
    let Some(token) = presented.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(Err(AuthError::Missing));
    };
    let Some(record) = store.token_by_hash(&hash(token))? else {
        return Ok(Err(AuthError::Unknown));
    };
    if record.revoked_at.is_some() {
        return Ok(Err(AuthError::Revoked {
            id: record.id,
            user: record.user,
        }));
    }
    if record.expires_at.is_some_and(|at| at <= now) {
        return Ok(Err(AuthError::Expired {
            id: record.id,
            user: record.user,
        }));
    }
    Ok(Ok(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Tokens;
    use crate::store::sqlite::SqliteStore;

    #[test]
    fn a_token_authenticates_until_it_expires_or_is_revoked() {
        let mut store = SqliteStore::in_memory().expect("a store");
        let (token, record) = create(&mut store, "ana", "ci", Some(1_000), 10).expect("created");
        assert!(token.starts_with(PREFIX));
        assert_eq!(
            authenticate(&mut store, Some(&token), 500).expect("reads"),
            Ok(record.clone())
        );
        assert_eq!(
            authenticate(&mut store, Some(&token), 1_010).expect("reads"),
            Err(AuthError::Expired {
                id: record.id.clone(),
                user: "ana".into()
            })
        );
        let (forever, other) = create(&mut store, "ben", "", None, 10).expect("created");
        assert!(store.revoke_token(&other.id, 20).expect("revokes"));
        assert!(!store.revoke_token(&other.id, 30).expect("once"));
        assert!(matches!(
            authenticate(&mut store, Some(&forever), 40).expect("reads"),
            Err(AuthError::Revoked { .. })
        ));
        assert_eq!(
            authenticate(&mut store, Some("flow_nope"), 40).expect("reads"),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            authenticate(&mut store, None, 40).expect("reads"),
            Err(AuthError::Missing)
        );
        // Only the hash is stored.
        let listed = store.tokens().expect("lists");
        assert_eq!(listed.len(), 2);
        assert!(!format!("{listed:?}").contains(&token));
    }
}
