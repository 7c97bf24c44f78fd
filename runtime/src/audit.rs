//! The tamper-evident audit trail. Every history event of a run is a trail record: besides
//! what happened it holds the hash of the record before it, and its own hash, SHA-256 over a
//! canonical JSON encoding of the record and that previous hash. Changing a byte of a record,
//! removing one or reordering two breaks the chain at that record; [`verify`] names it.

use crate::store::Event;
use sha2::{Digest, Sha256};
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

/// SHA-256 (hex) of the canonical encoding.
pub fn hash(record: &Record, prev_hash: &str) -> String {
    Sha256::digest(canonical(record, prev_hash).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Links `events`, appended to `run` after its record number `last` whose hash is `previous`
/// (0 and [`GENESIS`] for a new run): each one's sequence number, the hash before it, and
/// its own hash. What every store writes.
pub fn link(
    run: &str,
    last: i64,
    previous: &str,
    events: &[crate::store::NewEvent],
) -> Vec<(i64, String, String)> {
    let mut previous = previous.to_string();
    (last + 1..)
        .zip(events)
        .map(|(seq, event)| {
            let record = Record {
                run,
                seq,
                at: event.at,
                kind: &event.kind,
                step: event.step.as_deref(),
                attempt: event.attempt,
                line: event.line,
                duration_ms: event.duration_ms,
                data: &event.data,
            };
            let hash = hash(&record, &previous);
            (seq, std::mem::replace(&mut previous, hash.clone()), hash)
        })
        .collect()
}

fn event_hash(run: &str, event: &Event) -> String {
    let record = Record {
        run,
        seq: event.seq,
        at: event.at,
        kind: &event.kind,
        step: event.step.as_deref(),
        attempt: event.attempt,
        line: event.line,
        duration_ms: event.duration_ms,
        data: &event.data,
    };
    hash(&record, &event.prev_hash)
}

/// Where a trail stops being trustworthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    pub run: String,
    /// The record (its sequence number) at which the chain breaks.
    pub seq: i64,
    pub why: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "run {}: record {}: {}", self.run, self.seq, self.why)
    }
}

/// Checks a run's trail, in the order the store returns it (by sequence number). Returns how
/// many records were checked.
pub fn verify(run: &str, events: &[Event]) -> Result<usize, Break> {
    let broken = |seq, why: String| Break {
        run: run.to_string(),
        seq,
        why,
    };
    let mut previous = GENESIS.to_string();
    for (index, event) in events.iter().enumerate() {
        let expected_seq = index as i64 + 1;
        if event.seq != expected_seq {
            return Err(broken(
                expected_seq,
                format!("is missing (the next record is number {})", event.seq),
            ));
        }
        if event.prev_hash != previous {
            return Err(broken(
                event.seq,
                "does not follow the record before it (removed or reordered records)".to_string(),
            ));
        }
        let actual = event_hash(run, event);
        if actual != event.hash {
            return Err(broken(
                event.seq,
                "was altered: its contents do not match its hash".to_string(),
            ));
        }
        previous = actual;
    }
    Ok(events.len())
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
    })
}
