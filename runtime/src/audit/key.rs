//! The audit key: the HMAC-SHA-256 key the trail, the run heads, the installation head and the
//! anchors are signed with. In: `FLOW_AUDIT_KEY` (64 hex digits), or else the store's secret
//! key (see [`crate::secrets`]) from which it is derived. Out: MACs, as hex.
//!
//! It is held outside the database, like the sealing key, so that whoever can write the
//! database but does not hold the key cannot rewrite the trail and recompute the chain.
//! Deriving it from the secret key means every process that can resume runs can also extend
//! their trails, with nothing more to configure; an operator who wants auditors to verify
//! without the sealing key, or the two kept apart, sets `FLOW_AUDIT_KEY` on every process.

use crate::secrets::SecretKey;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::OnceLock;

#[derive(Clone)]
pub struct AuditKey([u8; 32]);

static KEY: OnceLock<AuditKey> = OnceLock::new();

/// What the derived key is the MAC of, under the secret key: a new purpose gets a new label.
const DERIVATION: &[u8] = b"flow audit key 1";

/// The process's audit key: the one installed with [`install`], or else derived from the
/// process's secret key (so a process that installed only the secret key, or none, as a
/// benchmark, signs consistently with itself).
pub fn current() -> &'static AuditKey {
    KEY.get_or_init(|| AuditKey::derive(crate::secrets::current()))
}

/// Installs the audit key for this process. The first call wins.
pub fn install(key: AuditKey) {
    let _ = KEY.set(key);
}

impl AuditKey {
    /// The audit key of the store a `--db` value names: `FLOW_AUDIT_KEY`, or else derived from
    /// the store's secret key (`FLOW_SECRET_KEY`, or the key file beside a SQLite database).
    pub fn for_store(spec: &str) -> Result<AuditKey, String> {
        if let Some(key) = AuditKey::from_env()? {
            return Ok(key);
        }
        Ok(AuditKey::derive(&SecretKey::for_store(spec)?))
    }

    /// `FLOW_AUDIT_KEY` when it is set.
    pub fn from_env() -> Result<Option<AuditKey>, String> {
        match std::env::var("FLOW_AUDIT_KEY") {
            Ok(hex) => AuditKey::from_hex(hex.trim()).map(Some).ok_or_else(|| {
                "FLOW_AUDIT_KEY must be 64 hexadecimal digits (32 bytes)".to_string()
            }),
            Err(_) => Ok(None),
        }
    }

    pub fn derive(secret: &SecretKey) -> AuditKey {
        AuditKey(mac(secret.bytes(), DERIVATION))
    }

    pub fn from_hex(hex: &str) -> Option<AuditKey> {
        SecretKey::from_hex(hex).map(|key| AuditKey(*key.bytes()))
    }

    /// HMAC-SHA-256 of `message`, as 64 hex digits.
    pub fn mac_hex(&self, message: &str) -> String {
        flow_stdlib::hex::encode(&mac(&self.0, message.as_bytes()))
    }
}

fn mac(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_is_hmac_sha256() {
        // RFC 4231, test case 2 has a short key; HMAC pads any key to the block size, so a
        // 32-byte key of "Jefe" and zeros gives the same MAC as "Jefe" itself.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            AuditKey(key).mac_hex("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_derived_key_depends_on_the_secret_key() {
        let a = SecretKey::from_hex(&"11".repeat(32)).expect("a key");
        let b = SecretKey::from_hex(&"12".repeat(32)).expect("a key");
        assert_eq!(AuditKey::derive(&a).0, AuditKey::derive(&a).0);
        assert_ne!(AuditKey::derive(&a).0, AuditKey::derive(&b).0);
        assert_ne!(AuditKey::derive(&a).0, *a.bytes());
    }
}
