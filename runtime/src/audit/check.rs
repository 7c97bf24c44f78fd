//! Verifying a whole store: what `flowrt audit verify` and `flowrt audit anchor` do. In: a
//! store, optionally one run and an anchor; out: a line per intact trail, every break, and
//! the state an anchor would sign.

use super::anchor::{Anchor, AnchoredRun};
use super::{Break, Head, Installation, key};
use crate::store::{Store, StoreResult};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub struct Report {
    /// One line per intact trail, and for the installation and the anchor when they hold.
    pub intact: Vec<String>,
    pub breaks: Vec<Break>,
    /// Every run's trail as it stands, for an anchor.
    pub runs: Vec<AnchoredRun>,
    pub installation: Option<Installation>,
}

/// Verifies every run of `store` (or only `only`), the numbering of the runs, and what
/// `anchor` covers.
pub fn check(
    store: &mut dyn Store,
    only: Option<&str>,
    anchor: Option<&Anchor>,
) -> StoreResult<Report> {
    let key = key::current();
    let mut records = store.runs(None)?;
    records.reverse();
    let (installation, heads) = store.audit_heads()?;
    let heads: BTreeMap<&str, &Head> = heads.iter().map(|h| (h.run.as_str(), h)).collect();
    let mut report = Report {
        installation: installation.clone(),
        ..Report::default()
    };
    if let Some(run) = only {
        records.retain(|r| r.id == run);
        if records.is_empty()
            && let Some(head) = heads.get(run)
        {
            report.breaks.push(Break::run(
                run,
                format!(
                    "was deleted (number {} in the installation): its head remains, the run is gone",
                    head.n
                ),
            ));
        }
    } else {
        let ids: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let all: Vec<Head> = heads.values().map(|h| (*h).clone()).collect();
        let breaks = super::verify_installation(key, installation.as_ref(), &all, &ids);
        if breaks.is_empty() {
            report.intact.push(format!(
                "installation: {} run(s) numbered, none missing",
                installation.as_ref().map_or(0, |i| i.runs)
            ));
        }
        report.breaks.extend(breaks);
    }
    let anchored: BTreeMap<&str, &AnchoredRun> = anchor
        .map(|a| a.heads.iter().map(|h| (h.run.as_str(), h)).collect())
        .unwrap_or_default();
    let mut anchor_breaks = Vec::new();
    for record in &records {
        let events = store.history(&record.id)?;
        let head = heads.get(record.id.as_str()).copied();
        match super::verify(key, record, &events, head) {
            Ok(verified) => report.intact.push(format!(
                "run {}: {} record(s), chain intact{}",
                record.id,
                verified.records,
                match verified.unkeyed {
                    0 => String::new(),
                    n if n == verified.records => {
                        " (unkeyed: written before the audit key)".to_string()
                    }
                    n => format!(" ({n} unkeyed record(s) from before the audit key)"),
                }
            )),
            Err(broken) => report.breaks.push(broken),
        }
        if let (Some(anchor), Some(covered)) = (anchor, anchored.get(record.id.as_str())) {
            anchor_breaks.extend(anchor.check_run(covered, Some((head.map(|h| h.n), &events))));
        }
        report.runs.push(AnchoredRun {
            run: record.id.clone(),
            n: head.map(|h| h.n),
            seq: events.len() as i64,
            hash: events
                .last()
                .map_or(super::GENESIS.to_string(), |e| e.hash.clone()),
        });
    }
    if let Some(anchor) = anchor {
        let present: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        for covered in anchor
            .heads
            .iter()
            .filter(|h| only.is_none_or(|o| o == h.run))
        {
            if !present.contains(covered.run.as_str()) {
                anchor_breaks.extend(anchor.check_run(covered, None));
            }
        }
        if only.is_none() {
            anchor_breaks.extend(anchor.check_installation(installation.as_ref()));
        }
        if anchor_breaks.is_empty() {
            report.intact.push(format!(
                "anchor of {}: the {} run(s) and {} record(s) it covers are all here, unchanged",
                anchor.at,
                anchor.heads.len(),
                anchor.records
            ));
        }
        report.breaks.extend(anchor_breaks);
    }
    Ok(report)
}
