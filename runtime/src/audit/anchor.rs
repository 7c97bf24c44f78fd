//! Audit anchors: a signed snapshot of the whole installation's trail that an operator keeps
//! outside the database. In: the installation head and every run's length and last hash; out:
//! a JSON document signed with the audit key, and later the breaks between it and the database.
//!
//! A record's hash commits to every record before it, so an anchor holding each run's length
//! and last hash proves, for as long as it is kept, that none of those records was removed
//! or changed — even by someone who later obtains the audit key and rewrites the database.

use super::{AuditKey, Break, Installation};
use crate::store::Event;
use serde::{Deserialize, Serialize};

const FORMAT: &str = "flow-audit-anchor/1";

/// One run as the anchor saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchoredRun {
    pub run: String,
    /// Its number in the installation; none for a run begun before the audit key that did not
    /// go on after it.
    pub n: Option<i64>,
    /// How many records its trail had.
    pub seq: i64,
    /// The last one's hash (the genesis hash for an empty trail).
    pub hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    pub anchor: String,
    /// When it was taken (RFC 3339).
    pub at: String,
    /// How many runs the installation had numbered, and the last one.
    pub runs: i64,
    pub last_run: Option<String>,
    /// How many records all the trails held.
    pub records: i64,
    pub heads: Vec<AnchoredRun>,
    /// HMAC-SHA-256 under the audit key of everything above.
    pub signature: String,
}

impl Anchor {
    /// Signs the state: `installation` (none in a database with no numbered run) and every
    /// run's trail as it stands.
    pub fn sign(
        key: &AuditKey,
        at: String,
        installation: Option<&Installation>,
        mut heads: Vec<AnchoredRun>,
    ) -> Anchor {
        heads.sort_by(|a, b| (a.n, &a.run).cmp(&(b.n, &b.run)));
        let mut anchor = Anchor {
            anchor: FORMAT.to_string(),
            at,
            runs: installation.map_or(0, |i| i.runs),
            last_run: installation.and_then(|i| i.last_run.clone()),
            records: heads.iter().map(|h| h.seq).sum(),
            heads,
            signature: String::new(),
        };
        anchor.signature = anchor.expected_signature(key);
        anchor
    }

    fn expected_signature(&self, key: &AuditKey) -> String {
        let heads: Vec<serde_json::Value> = self
            .heads
            .iter()
            .map(|h| serde_json::json!([h.run, h.n, h.seq, h.hash]))
            .collect();
        key.mac_hex(
            &serde_json::json!([
                self.anchor,
                self.at,
                self.runs,
                self.last_run,
                self.records,
                heads
            ])
            .to_string(),
        )
    }

    /// Reads an anchor and checks its signature; the error says what is wrong with the text.
    pub fn parse(key: &AuditKey, text: &str) -> Result<Anchor, String> {
        let anchor: Anchor = serde_json::from_str(text)
            .map_err(|e| format!("it is not an audit anchor (from `flowrt audit anchor`): {e}"))?;
        if anchor.anchor != FORMAT {
            return Err(format!(
                "it is an anchor of format `{}`; this flowrt reads `{FORMAT}`",
                anchor.anchor
            ));
        }
        if anchor.signature != anchor.expected_signature(key) {
            return Err(
                "its signature does not match: the file was changed or forged, or it was signed with another audit key (FLOW_AUDIT_KEY, or the one derived from the secret key)"
                    .to_string(),
            );
        }
        if anchor.records != anchor.heads.iter().map(|h| h.seq).sum::<i64>() {
            return Err("its record count does not add up".to_string());
        }
        Ok(anchor)
    }

    /// The anchor as `flowrt audit anchor` prints it: its fields in order, indented.
    pub fn to_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The anchored run `run` against its trail now (`None`: the run is gone) and its number
    /// now (`None`: it has no head).
    pub fn check_run(
        &self,
        anchored: &AnchoredRun,
        now: Option<(Option<i64>, &[Event])>,
    ) -> Option<Break> {
        let run = anchored.run.as_str();
        let when = &self.at;
        let Some((n, events)) = now else {
            return Some(Break::run(
                run,
                format!(
                    "was deleted: the anchor of {when} covers it with {} record(s)",
                    anchored.seq
                ),
            ));
        };
        if anchored.n.is_some() && n != anchored.n {
            return Some(Break::run(
                run,
                format!(
                    "has the number {} in the installation, but {} in the anchor of {when}: its head was removed or replaced",
                    n.map_or("none".to_string(), |n| n.to_string()),
                    anchored.n.unwrap_or_default()
                ),
            ));
        }
        let length = events.len() as i64;
        if length < anchored.seq {
            return Some(Break::at(
                run,
                length + 1,
                format!(
                    "is missing: the anchor of {when} covers records 1..{} of this run",
                    anchored.seq
                ),
            ));
        }
        let hash = match usize::try_from(anchored.seq - 1) {
            Ok(index) => events.get(index).map(|e| e.hash.as_str()),
            Err(_) => Some(super::GENESIS),
        };
        if hash != Some(anchored.hash.as_str()) {
            return Some(Break::at(
                run,
                anchored.seq,
                format!(
                    "was changed since the anchor of {when}: the anchor holds another hash for it (this record or one before it was altered, removed or replaced)"
                ),
            ));
        }
        None
    }

    /// The installation head now against the anchor's.
    pub fn check_installation(&self, now: Option<&Installation>) -> Option<Break> {
        let runs = now.map_or(0, |i| i.runs);
        (runs < self.runs).then(|| {
            Break::run(
                "",
                format!(
                    "it numbers {runs} run(s), fewer than the {} of the anchor of {}: runs were deleted and the numbering rolled back",
                    self.runs, self.at
                ),
            )
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_reads_back_only_unchanged_and_with_its_key() {
        let key = AuditKey::from_hex(&"5a".repeat(32)).unwrap();
        let heads = vec![AnchoredRun {
            run: "r1".to_string(),
            n: Some(1),
            seq: 3,
            hash: "ab".repeat(32),
        }];
        let anchor = Anchor::sign(&key, "2026-01-01T00:00:00Z".to_string(), None, heads);
        let text = anchor.to_pretty();
        assert_eq!(Anchor::parse(&key, &text), Ok(anchor.clone()));
        let other = AuditKey::from_hex(&"5b".repeat(32)).unwrap();
        assert!(
            Anchor::parse(&other, &text)
                .unwrap_err()
                .contains("signature")
        );
        let changed = text.replace("\"seq\": 3", "\"seq\": 2");
        assert!(
            Anchor::parse(&key, &changed)
                .unwrap_err()
                .contains("signature")
        );
        assert!(
            Anchor::parse(&key, "[]")
                .unwrap_err()
                .contains("not an audit anchor")
        );
    }
}
