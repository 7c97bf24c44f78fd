//! Who may read a run through the server — its input, output, error, open gate, history and
//! audit trail (spec/server.md, "Who may read a run"). In: the engine (configuration, store),
//! the user, the run; out: whether the user may read it, and if not, why.
//!
//! A user may read a run when they hold the `auditor` role, started it, hold one of the
//! `readers` roles of its workflow (`[workflows.NAME] readers = […]` in flow.toml), or may
//! decide one of its gates (named by its approvers, or by its escalation once it escalated, or
//! decided one); a run started by another run may also be read by whoever may read that one.

use crate::engine::{Engine, EngineResult};
use crate::store::RunRecord;

/// The role that may read every run.
pub const AUDITOR: &str = "auditor";

/// How far up the chain of parent runs a read is allowed through (a chain is never this deep
/// in practice; the bound keeps a corrupt cycle from looping).
const MAX_PARENTS: usize = 64;

/// `Ok(Ok(()))` when `user` may read `run`, `Ok(Err(why))` when not.
pub fn may_read(
    engine: &mut Engine,
    user: &str,
    run: &RunRecord,
) -> EngineResult<Result<(), String>> {
    if engine.config().has_role(user, AUDITOR) {
        return Ok(Ok(()));
    }
    let mut record = run.clone();
    for _ in 0..MAX_PARENTS {
        if reads_itself(engine, user, &record)? {
            return Ok(Ok(()));
        }
        let Some(parent) = record.parent.as_deref() else {
            break;
        };
        match engine.store().run(parent)? {
            Some(up) => record = up,
            None => break,
        }
    }
    Ok(Err(refusal(engine, user, run)))
}

/// Whether `user` may read `record` on its own account (not through a parent run).
fn reads_itself(engine: &mut Engine, user: &str, record: &RunRecord) -> EngineResult<bool> {
    let config = engine.config();
    if record.started_by == user || config.reader_role(user, &record.workflow).is_some() {
        return Ok(true);
    }
    let roles = config
        .user(user)
        .map(|u| u.roles.clone())
        .unwrap_or_default();
    let history = engine.store().history(&record.id)?;
    Ok(crate::gates::decider_of(&history, user, &roles))
}

/// Why `user` may not read `run`, saying who may.
fn refusal(engine: &Engine, user: &str, run: &RunRecord) -> String {
    let readers = engine
        .config()
        .readers
        .get(&run.workflow)
        .filter(|roles| !roles.is_empty())
        .map(|roles| {
            format!(
                ", role {} (readers of `{}`)",
                roles.join(" or "),
                run.workflow
            )
        })
        .unwrap_or_default();
    format!(
        "{user} may not read run {}: only who started it, who may decide its gates{readers} or role {AUDITOR} may",
        run.id
    )
}
