//! The tamper-evident audit trail. In: the history events a store appends, its run heads and
//! installation head; out: what the store writes (sequence numbers, hashes, heads) and, on
//! verification, the first place where the trail stops being trustworthy ([`Break`]).
//!
//! Three layers, each signed with the audit key ([`key`], held outside the database):
//! - **records**: every history event is a record holding the hash of the record before it
//!   and its own hash, an HMAC over a canonical JSON encoding of the record and that previous
//!   hash. Changing, removing or reordering records breaks the chain at that record, and
//!   without the key it cannot be recomputed. The record that leaves a run final also
//!   *seals* the run's final state (status and digests of its output and error), so that a
//!   changed `runs` row is found.
//! - **run heads**: one row per run, updated in the transaction of every append, with the
//!   run's number in the installation, the run numbered before it, its length and its last
//!   hash. A trail whose end (or whole) was removed no longer reaches its head.
//! - **the installation head**: how many runs were numbered and the last one. Runs are
//!   numbered 1, 2, 3, … without gaps when they are created, so a deleted run leaves a gap
//!   that its successor's head (or the installation head) names.
//!
//! Records written before the audit key existed (chain format 0: plain SHA-256, see
//! [`hash`]) are still verified as before and reported as unkeyed; a run that goes on after
//! the upgrade gets a head then, and its keyed records chain onto the old ones. [`anchor`]
//! signs the whole state so that an operator can keep it elsewhere.

pub mod anchor;
pub mod check;
pub mod key;

use crate::store::{Event, NewEvent, RunRecord, RunStatus};
pub use key::AuditKey;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The hash the first record of a run chains to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of a trail record that its hash covers.
pub struct Record<'a> {
    pub run: &'a str,
    pub seq: i64,
    pub at: i64,
    pub kind: &'a str,
    pub step: Option<&'a str>,
    pub attempt: Option<i64>,
    pub line: Option<i64>,
    pub duration_ms: Option<i64>,
    pub data: &'a str,
}

impl<'a> Record<'a> {
    fn of(run: &'a str, event: &'a Event) -> Record<'a> {
        Record {
            run,
            seq: event.seq,
            at: event.at,
            kind: event.kind.as_str(),
            step: event.step.as_deref(),
            attempt: event.attempt,
            line: event.line,
            duration_ms: event.duration_ms,
            data: &event.data,
        }
    }
}

/// The canonical encoding: a JSON array of the fields in a fixed order (no maps whose key
/// order could vary), then the previous hash.
pub fn canonical(record: &Record, prev_hash: &str) -> String {
    serde_json::json!([
        record.run,
        record.seq,
        record.at,
        record.kind,
        record.step,
        record.attempt,
        record.line,
        record.duration_ms,
        record.data,
        prev_hash
    ])
    .to_string()
}

/// Chain format 0, before the audit key: SHA-256 (hex) of the canonical encoding. Only
/// verified, never written any more.
pub fn hash(record: &Record, prev_hash: &str) -> String {
    flow_stdlib::hex::encode(&Sha256::digest(canonical(record, prev_hash).as_bytes()))
}

/// Chain format 1: the HMAC of a record under the audit key, over its fields, the previous
/// hash, and the final state it seals (if it does).
pub fn keyed_hash(key: &AuditKey, record: &Record, prev_hash: &str, seal: Option<&str>) -> String {
    key.mac_hex(
        &serde_json::json!([
            "flow-audit/1",
            record.run,
            record.seq,
            record.at,
            record.kind,
            record.step,
            record.attempt,
            record.line,
            record.duration_ms,
            record.data,
            prev_hash,
            seal
        ])
        .to_string(),
    )
}

/// What the record that leaves a run final seals: its status and the SHA-256 of its output
/// and error, as the `runs` row holds them. None for a status that is not final.
pub fn seal(status: RunStatus, output: Option<&str>, error: Option<&str>) -> Option<String> {
    let digest =
        |text: Option<&str>| text.map(|t| flow_stdlib::hex::encode(&Sha256::digest(t.as_bytes())));
    status.is_final().then(|| {
        serde_json::json!({
            "status": status.as_str(),
            "output": digest(output),
            "error": digest(error),
        })
        .to_string()
    })
}

/// A run's head: its number in the installation, the run numbered before it, how many
/// records its trail has, the last one's hash, and from which record on the trail is keyed
/// (1, or the first record after the upgrade for a run begun before it). `mac` signs it all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub run: String,
    pub n: i64,
    pub prev_run: Option<String>,
    pub seq: i64,
    pub hash: String,
    pub keyed_from: i64,
    pub mac: String,
}

impl Head {
    fn expected_mac(&self, key: &AuditKey) -> String {
        key.mac_hex(
            &serde_json::json!([
                "flow-audit-head/1",
                self.run,
                self.n,
                self.prev_run,
                self.seq,
                self.hash,
                self.keyed_from
            ])
            .to_string(),
        )
    }

    fn signed(mut self, key: &AuditKey) -> Head {
        self.mac = self.expected_mac(key);
        self
    }
}

/// The installation head: how many runs were numbered, and the last one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installation {
    pub runs: i64,
    pub last_run: Option<String>,
    pub mac: String,
}

impl Installation {
    fn expected_mac(&self, key: &AuditKey) -> String {
        key.mac_hex(
            &serde_json::json!(["flow-audit-installation/1", self.runs, self.last_run]).to_string(),
        )
    }
}

/// Where a run's trail stands before an append.
pub enum Tail {
    /// A run with a head.
    Head(Head),
    /// A run without one — new, or begun before the audit key — that this append numbers:
    /// the installation head (none yet in a new database) and the run's last record (0 and
    /// [`GENESIS`] for a new run).
    Unnumbered {
        installation: Option<Installation>,
        last: i64,
        hash: String,
    },
}

/// One appended record's sequence number, the hash before it, its own, and its seal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Linked {
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
    pub seal: Option<String>,
}

/// What a store writes for an append, in the same transaction: the records, the run's new
/// head, and the new installation head when the run was numbered.
pub struct Append {
    pub records: Vec<Linked>,
    pub head: Head,
    pub installation: Option<Installation>,
}

/// Links `events` onto `run`'s trail. `seal` is the run's final state after the append
/// ([`seal`]), sealed by the last record; what every store writes.
pub fn append(
    key: &AuditKey,
    run: &str,
    tail: Tail,
    events: &[NewEvent],
    seal: Option<&str>,
) -> Append {
    let (head, installation) = match tail {
        Tail::Head(head) => (head, None),
        Tail::Unnumbered {
            installation,
            last,
            hash,
        } => {
            let (n, prev_run) = installation.map_or((1, None), |i| (i.runs + 1, i.last_run));
            let head = Head {
                run: run.to_string(),
                n,
                prev_run,
                seq: last,
                hash,
                keyed_from: last + 1,
                mac: String::new(),
            };
            let mut installation = Installation {
                runs: n,
                last_run: Some(run.to_string()),
                mac: String::new(),
            };
            installation.mac = installation.expected_mac(key);
            (head, Some(installation))
        }
    };
    let mut previous = head.hash.clone();
    let records: Vec<Linked> = (head.seq + 1..)
        .zip(events)
        .enumerate()
        .map(|(index, (seq, event))| {
            let seal = seal
                .filter(|_| index + 1 == events.len())
                .map(str::to_string);
            let record = Record {
                run,
                seq,
                at: event.at,
                kind: event.kind.as_str(),
                step: event.step.as_deref(),
                attempt: event.attempt,
                line: event.line,
                duration_ms: event.duration_ms,
                data: &event.data,
            };
            let hash = keyed_hash(key, &record, &previous, seal.as_deref());
            Linked {
                seq,
                prev_hash: std::mem::replace(&mut previous, hash.clone()),
                hash,
                seal,
            }
        })
        .collect();
    let head = Head {
        seq: head.seq + records.len() as i64,
        hash: previous,
        ..head
    }
    .signed(key);
    Append {
        records,
        head,
        installation,
    }
}

/// Where a trail stops being trustworthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    /// The run concerned; empty for the installation head itself.
    pub run: String,
    /// The record (its sequence number) at which the chain breaks, when it is one record.
    pub seq: Option<i64>,
    pub why: String,
}

impl Break {
    fn at(run: &str, seq: i64, why: impl Into<String>) -> Break {
        Break {
            run: run.to_string(),
            seq: Some(seq),
            why: why.into(),
        }
    }

    fn run(run: &str, why: impl Into<String>) -> Break {
        Break {
            run: run.to_string(),
            seq: None,
            why: why.into(),
        }
    }
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.run.as_str(), self.seq) {
            ("", _) => write!(f, "the installation: {}", self.why),
            (run, Some(seq)) => write!(f, "run {run}: record {seq}: {}", self.why),
            (run, None) => write!(f, "run {run}: {}", self.why),
        }
    }
}

/// What a verified trail holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub records: usize,
    /// Records written before the audit key (chain format 0): chained, but not keyed.
    pub unkeyed: usize,
}

const WRONG_KEY_HINT: &str = "(or this flowrt's audit key, FLOW_AUDIT_KEY or the one derived from the secret key, is not the one the installation was written with)";

/// Checks a run's trail, in the order the store returns it (by sequence number), against the
/// run's head (none for a run begun before the audit key that never went on after it) and its
/// `runs` row.
pub fn verify(
    key: &AuditKey,
    run: &RunRecord,
    events: &[Event],
    head: Option<&Head>,
) -> Result<Verified, Break> {
    let id = run.id.as_str();
    if let Some(head) = head
        && (head.run != id || head.mac != head.expected_mac(key))
    {
        return Err(Break::run(
            id,
            format!("its head (length and last hash) was altered {WRONG_KEY_HINT}"),
        ));
    }
    let keyed_from = head.map_or(i64::MAX, |h| h.keyed_from);
    let mut previous = GENESIS.to_string();
    for (index, event) in events.iter().enumerate() {
        let expected_seq = index as i64 + 1;
        if event.seq != expected_seq {
            return Err(Break::at(
                id,
                expected_seq,
                format!("is missing (the next record is number {})", event.seq),
            ));
        }
        if event.prev_hash != previous {
            return Err(Break::at(
                id,
                event.seq,
                "does not follow the record before it (removed or reordered records)",
            ));
        }
        let record = Record::of(id, event);
        let actual = if event.seq < keyed_from {
            hash(&record, &event.prev_hash)
        } else {
            keyed_hash(key, &record, &event.prev_hash, event.seal.as_deref())
        };
        if actual != event.hash {
            let why = if event.seq < keyed_from {
                "was altered: its contents do not match its hash".to_string()
            } else {
                format!(
                    "was altered: its contents do not match its keyed hash (changed, forged, or its chain recomputed without the audit key) {WRONG_KEY_HINT}"
                )
            };
            return Err(Break::at(id, event.seq, why));
        }
        previous = actual;
    }
    let records = events.len();
    let unkeyed = usize::try_from(keyed_from.saturating_sub(1))
        .unwrap_or(usize::MAX)
        .min(records);
    if let Some(head) = head {
        check_against_head(id, events, head)?;
        if records > unkeyed {
            check_final_state(run, events)?;
        }
    }
    Ok(Verified { records, unkeyed })
}

/// [`verify`] on a run of `store`: its trail, its head, its `runs` row.
pub fn check_run(
    store: &mut dyn crate::store::Store,
    run: &RunRecord,
) -> crate::store::StoreResult<Result<Verified, Break>> {
    let events = store.history(&run.id)?;
    let head = store.audit_head(&run.id)?;
    Ok(verify(key::current(), run, &events, head.as_ref()))
}

/// The trail reaches its head: same length, same last hash.
fn check_against_head(run: &str, events: &[Event], head: &Head) -> Result<(), Break> {
    let length = events.len() as i64;
    if length < head.seq {
        let why = if length == 0 {
            format!(
                "is missing: the run's whole trail was removed (its head records {} record(s))",
                head.seq
            )
        } else {
            format!(
                "is missing: the trail ends at record {length} but its head records {} — records {}..{} were removed from its end",
                head.seq,
                length + 1,
                head.seq
            )
        };
        return Err(Break::at(run, length + 1, why));
    }
    if length > head.seq {
        return Err(Break::at(
            run,
            head.seq + 1,
            format!(
                "was added after the run's head (which records {} record(s)): forged, or appended without the audit key",
                head.seq
            ),
        ));
    }
    let last = events.last().map_or(GENESIS, |e| e.hash.as_str());
    if last != head.hash {
        return Err(Break::at(
            run,
            length,
            "does not match the run's head: the trail was rewritten",
        ));
    }
    Ok(())
}

/// The `runs` row agrees with what the trail's last record sealed.
fn check_final_state(run: &RunRecord, events: &[Event]) -> Result<(), Break> {
    let Some(last) = events.last() else {
        return Ok(());
    };
    let now = seal(run.status, run.output.as_deref(), run.error.as_deref());
    let status = run.status.as_str();
    match (last.seal.as_deref(), now.as_deref()) {
        (None, None) => Ok(()),
        (Some(sealed), Some(now)) if sealed == now => Ok(()),
        (None, Some(_)) => Err(Break::at(
            &run.id,
            last.seq,
            format!(
                "is the trail's last record, but the run is `{status}` in the runs table and no final record seals that: its status was changed, or its final records were removed"
            ),
        )),
        (Some(sealed), now) => {
            let sealed: serde_json::Value = serde_json::from_str(sealed).unwrap_or_default();
            let was = sealed["status"].as_str().unwrap_or("?");
            let what = match now {
                None => format!("status was changed from `{was}` to `{status}`"),
                Some(_) if was != status => {
                    format!("status was changed from `{was}` to `{status}`")
                }
                Some(now) => {
                    let now: serde_json::Value = serde_json::from_str(now).unwrap_or_default();
                    let changed: Vec<&str> = ["output", "error"]
                        .into_iter()
                        .filter(|field| sealed[field] != now[field])
                        .collect();
                    format!("{} was changed", changed.join(" and "))
                }
            };
            Err(Break::at(
                &run.id,
                last.seq,
                format!(
                    "sealed the run's final state, but the runs table no longer holds it: the run's {what}"
                ),
            ))
        }
    }
}

/// Checks the installation head and the numbering of the runs: every number from 1 to the
/// installation's count belongs to a head, each head to a run of `runs` (by id), each head
/// names the run numbered before it. Returns every break found.
pub fn verify_installation(
    key: &AuditKey,
    installation: Option<&Installation>,
    heads: &[Head],
    runs: &BTreeSet<&str>,
) -> Vec<Break> {
    let mut breaks = Vec::new();
    let Some(installation) = installation else {
        if !heads.is_empty() {
            breaks.push(Break::run(
                "",
                format!(
                    "its head (how many runs were numbered) is missing, but {} run head(s) exist: it was deleted",
                    heads.len()
                ),
            ));
        }
        return breaks;
    };
    if installation.mac != installation.expected_mac(key) {
        breaks.push(Break::run(
            "",
            format!("its head (how many runs were numbered) was altered {WRONG_KEY_HINT}"),
        ));
        return breaks;
    }
    let mut by_number: BTreeMap<i64, &Head> = BTreeMap::new();
    for head in heads.iter().filter(|h| h.mac == h.expected_mac(key)) {
        if let Some(other) = by_number.insert(head.n, head) {
            breaks.push(Break::run(
                &head.run,
                format!("has the number {} of run {} too: forged", head.n, other.run),
            ));
        }
        if !runs.contains(head.run.as_str()) {
            breaks.push(Break::run(
                &head.run,
                format!(
                    "was deleted (number {} of {} in the installation): its head remains, the run is gone",
                    head.n, installation.runs
                ),
            ));
        }
        if head.n > installation.runs {
            breaks.push(Break::run(
                &head.run,
                format!(
                    "has the number {} but the installation numbered only {} run(s): forged",
                    head.n, installation.runs
                ),
            ));
        }
    }
    for n in 1..=installation.runs {
        let successor_names = |n: i64| -> Option<String> {
            if n == installation.runs {
                installation.last_run.clone()
            } else {
                by_number.get(&(n + 1)).and_then(|h| h.prev_run.clone())
            }
        };
        match by_number.get(&n) {
            None => {
                let why = format!(
                    "was deleted (number {n} of {} in the installation): its head is gone",
                    installation.runs
                );
                breaks.push(match successor_names(n) {
                    Some(run) => Break::run(&run, why),
                    None => Break::run("", format!("the run numbered {n} {why}")),
                });
            }
            Some(head) => {
                let before = n.checked_sub(1).and_then(|p| by_number.get(&p));
                if let Some(before) = before
                    && head.prev_run.as_deref() != Some(before.run.as_str())
                {
                    breaks.push(Break::run(
                        &head.run,
                        format!(
                            "(number {n}) follows run {} in its head, not run {}: the numbering was altered",
                            head.prev_run.as_deref().unwrap_or("none"),
                            before.run
                        ),
                    ));
                }
            }
        }
    }
    if let Some(last) = by_number.get(&installation.runs)
        && installation.last_run.as_deref() != Some(last.run.as_str())
    {
        breaks.push(Break::run(
            "",
            format!(
                "its last run is {}, but run {} holds number {}: the numbering was altered",
                installation.last_run.as_deref().unwrap_or("none"),
                last.run,
                installation.runs
            ),
        ));
    }
    breaks
}

/// One trail record as exported (JSON lines for a SIEM or archive).
pub fn export_record(run: &str, workflow: &str, version: &str, event: &Event) -> serde_json::Value {
    serde_json::json!({
        "run": run,
        "workflow": workflow,
        "version": version,
        "seq": event.seq,
        "at": crate::vm::value::format_time(event.at),
        "event": event.kind,
        "step": event.step,
        "attempt": event.attempt,
        "line": event.line,
        "duration_ms": event.duration_ms,
        "data": serde_json::from_str::<serde_json::Value>(&event.data).unwrap_or(serde_json::Value::Null),
        "prev_hash": event.prev_hash,
        "hash": event.hash,
        "seal": event.seal.as_deref().and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::EventKind;

    fn key() -> AuditKey {
        AuditKey::from_hex(&"5a".repeat(32)).unwrap()
    }

    fn event(kind: EventKind) -> NewEvent {
        NewEvent {
            at: 7,
            kind,
            step: None,
            attempt: None,
            line: None,
            duration_ms: None,
            data: "{}".to_string(),
        }
    }

    fn run(id: &str, status: RunStatus, output: Option<&str>) -> RunRecord {
        RunRecord {
            id: id.to_string(),
            workflow: "w".to_string(),
            version: "v".to_string(),
            status,
            input: "{}".to_string(),
            output: output.map(str::to_string),
            error: None,
            waiting_on: None,
            wake_at: None,
            started_by: "ana".to_string(),
            parent: None,
            created_at: 0,
            updated_at: 0,
            attention: None,
        }
    }

    /// Appends like a store would, and returns the stored events.
    fn stored(events: &[NewEvent], appended: &Append) -> Vec<Event> {
        events
            .iter()
            .zip(&appended.records)
            .map(|(e, l)| Event {
                seq: l.seq,
                at: e.at,
                kind: e.kind,
                step: None,
                attempt: None,
                line: None,
                duration_ms: None,
                data: e.data.clone(),
                prev_hash: l.prev_hash.clone(),
                hash: l.hash.clone(),
                seal: l.seal.clone(),
            })
            .collect()
    }

    fn new_tail() -> Tail {
        Tail::Unnumbered {
            installation: None,
            last: 0,
            hash: GENESIS.to_string(),
        }
    }

    #[test]
    fn an_appended_trail_verifies_and_its_final_record_seals_the_run() {
        let key = key();
        let events = [event(EventKind::RunStarted), event(EventKind::RunCompleted)];
        let sealed = seal(RunStatus::Completed, Some("3"), None);
        let appended = append(&key, "r1", new_tail(), &events, sealed.as_deref());
        assert_eq!(appended.head.n, 1);
        assert_eq!(appended.head.seq, 2);
        assert_eq!(appended.installation.as_ref().unwrap().runs, 1);
        let trail = stored(&events, &appended);
        assert_eq!(trail[0].seal, None);
        assert_eq!(trail[1].seal, sealed);
        let done = run("r1", RunStatus::Completed, Some("3"));
        assert_eq!(
            verify(&key, &done, &trail, Some(&appended.head)),
            Ok(Verified {
                records: 2,
                unkeyed: 0
            })
        );
        // Another output in the runs row, another key, a cut trail.
        let changed = run("r1", RunStatus::Completed, Some("4"));
        let broken = verify(&key, &changed, &trail, Some(&appended.head)).unwrap_err();
        assert!(broken.why.contains("output was changed"), "{broken}");
        let other = AuditKey::from_hex(&"5b".repeat(32)).unwrap();
        assert!(verify(&other, &done, &trail, Some(&appended.head)).is_err());
        let broken = verify(&key, &done, &trail[..1], Some(&appended.head)).unwrap_err();
        assert_eq!(broken.seq, Some(2), "{broken}");
    }

    #[test]
    fn a_gap_in_the_numbering_names_the_deleted_run() {
        let key = key();
        let mut installation = None;
        let mut heads = Vec::new();
        for id in ["a", "b", "c"] {
            let tail = Tail::Unnumbered {
                installation: installation.clone(),
                last: 0,
                hash: GENESIS.to_string(),
            };
            let appended = append(&key, id, tail, &[event(EventKind::RunStarted)], None);
            installation = appended.installation;
            heads.push(appended.head);
        }
        let all: BTreeSet<&str> = ["a", "b", "c"].into();
        assert!(verify_installation(&key, installation.as_ref(), &heads, &all).is_empty());
        heads.remove(1);
        let breaks = verify_installation(&key, installation.as_ref(), &heads, &all);
        assert_eq!(breaks.len(), 1, "{breaks:?}");
        assert_eq!(breaks[0].run, "b");
        assert!(breaks[0].why.contains("number 2 of 3"), "{}", breaks[0]);
    }
}
