//! `compensate`: the handler of the `compensate` instruction, for the engine's drive loop.
//!
//! In: a [`Driving`] run stopped at `compensate` with its undo stack (a `List` of
//! `{workflow, args}` records, the latest last: what each `let b = step() undo { … }` that
//! succeeded registered, with the values its block reads). Out: each undo block run as a
//! child run `RUN.STEP.K` (`K` counting from the latest), one after the other, each recorded
//! as `compensation_started` and then `compensated` or `compensation_failed` in the run's
//! history; then the instruction completes with the names of the blocks that ran. An undo
//! that fails does not stop the others: it is recorded (a failure for an operator to look
//! at), and the next runs.
//!
//! Like a `parallel`'s branches, the undo runs have derived ids and what the history holds of
//! them is kept with the checkpoint ([`BranchMemory`]), so a crash anywhere runs no undo
//! block twice and records none twice.

use crate::engine::{
    CHILD_RECHECK_MS, Change, Driving, Engine, EngineError, EngineResult, StartedAs,
    arguments_json, event,
};
use crate::history::{EventKind, WaitingOn};
use crate::parallel::BranchMemory;
use crate::steps::Step;
use crate::store::RunStatus;
use crate::vm::Value;

impl Engine {
    pub(crate) fn compensate_step(
        &mut self,
        d: &mut Driving<'_>,
        stack: &Value,
        here: Option<i64>,
    ) -> Step {
        let module = d.module;
        let corrupt = |why: &str| EngineError::Corrupt(format!("compensate: {why}"));
        let Value::List(entries) = stack else {
            return Err(corrupt("the undo stack is not a list"));
        };
        // The latest first.
        let mut undos = Vec::with_capacity(entries.len());
        for entry in entries.iter().rev() {
            let workflow = match entry.field("workflow") {
                Some(Value::Int(w)) => u32::try_from(*w).map_err(|_| corrupt("a bad workflow"))?,
                _ => return Err(corrupt("an entry without its workflow")),
            };
            if !module.undos.iter().any(|u| u.block == workflow) {
                return Err(corrupt("an entry names a workflow that is no undo block"));
            }
            let args = match entry.field("args") {
                Some(Value::List(args)) => args.clone(),
                _ => return Err(corrupt("an entry without its values")),
            };
            let code = module
                .workflows
                .get(workflow as usize)
                .ok_or_else(|| corrupt("an undo block of no workflow"))?;
            undos.push((code, args));
        }
        let step = d.machine.steps;
        let mut memory = BranchMemory::at(d, step);
        let mut undone = Vec::new();
        for (k, (code, args)) in undos.iter().enumerate() {
            let k = k as u64;
            let id = format!("{}.{step}.{k}", d.run);
            let mut record = self.store.run(&id)?;
            if record.is_none() {
                let input = arguments_json(&code.params, args, true);
                let by = StartedAs {
                    by: &d.record.started_by,
                    parent: Some(d.run),
                    continued_from: None,
                };
                self.start_with_id(&id, d.version, &code.name, &input, &by)?;
            }
            if memory.started <= k {
                d.pending.push(event(
                    EventKind::CompensationStarted,
                    Some(code.name.clone()),
                    None,
                    here,
                    serde_json::json!({ "undo": k, "run": id }),
                ));
                memory.started = k + 1;
                d.memory.branches = Some(memory.clone());
                self.remember(d.run, &d.memory);
                let events = std::mem::take(&mut d.pending);
                self.commit(d.run, d.version, Some(&d.machine), Change::runnable(events))?;
            }
            if record.as_ref().is_none_or(|r| !r.status.is_final()) {
                self.drive_branches(std::slice::from_ref(&id))?;
                record = self.store.run(&id)?;
            }
            let Some(record) = record.filter(|r| r.status.is_final()) else {
                // The undo waits (for a person, a timer): so does the run.
                memory.recheck_ms = CHILD_RECHECK_MS;
                d.memory.branches = Some(memory);
                self.remember(d.run, &d.memory);
                let change = Change {
                    events: std::mem::take(&mut d.pending),
                    status: RunStatus::Waiting,
                    output: None,
                    error: None,
                    waiting_on: Some(WaitingOn::Branches {
                        open: 1,
                        total: undos.len() as u64,
                    }),
                    wake_at: Some(self.clock.now() + CHILD_RECHECK_MS),
                };
                self.commit(d.run, d.version, Some(&d.machine), change)?;
                return Ok(Some(RunStatus::Waiting));
            };
            let completed = record.status == RunStatus::Completed;
            if completed {
                undone.push(Value::Str(code.name.clone()));
            }
            if memory.ended.insert(k) {
                let (kind, data) = if completed {
                    (
                        EventKind::Compensated,
                        serde_json::json!({ "undo": k, "run": record.id }),
                    )
                } else {
                    let error = record.error.clone().unwrap_or_else(|| "cancelled".into());
                    (
                        EventKind::CompensationFailed,
                        serde_json::json!({ "undo": k, "run": record.id, "error": error }),
                    )
                };
                d.pending
                    .push(event(kind, Some(code.name.clone()), None, here, data));
            }
        }
        d.memory.branches = None;
        self.remember(d.run, &d.memory);
        d.machine
            .complete(module, Value::List(undone), self.clock.now())
            .map_err(EngineError::Corrupt)?;
        let events = std::mem::take(&mut d.pending);
        self.commit(d.run, d.version, Some(&d.machine), Change::runnable(events))?;
        Ok(None)
    }
}

impl Engine {
    /// `flowrt cancel` of a run whose undo stack holds blocks: instead of ending it at once,
    /// the run is taken to its compensation (the guard around its body) with a `Cancelled`
    /// error, and driven: its undo blocks run, latest first, as after a failure, and the run
    /// then ends `cancelled`. What it started is cancelled first (its gates leave the
    /// inbox). Returns false — the caller cancels the run plainly — when there is nothing to
    /// undo, or when another process holds the run right now.
    pub(crate) fn cancel_compensating(&mut self, run: &str, by: &str) -> EngineResult<bool> {
        let Some((record, saved)) = self.store.load(run)? else {
            return Ok(false);
        };
        if record.status.is_final() {
            return Ok(false);
        }
        let module = self.module(&record.version)?;
        let mut machine = crate::vm::snapshot::decode(saved.format_version, &saved.state)
            .map_err(|why| EngineError::Corrupt(format!("run {run}: {why}")))?;
        let Some(code) = module.workflows.get(machine.workflow as usize) else {
            return Ok(false);
        };
        let on_cancel = module
            .workflow(&format!(
                "{}{}",
                code.name,
                crate::history::ON_CANCEL_SUFFIX
            ))
            .is_some();
        if !on_cancel && !module.undos.iter().any(|u| u.workflow == machine.workflow) {
            return Ok(false);
        }
        // The guard is the workflow's first handler; its code stores the error, runs the
        // `on cancel` block (if any), then loads the stack for `compensate`.
        let Some(guard) = machine.fiber.handlers.first().cloned() else {
            return Ok(false);
        };
        use flow_compiler::bytecode::Op;
        let stack = code
            .code
            .get(guard.catch as usize..)
            .unwrap_or_default()
            .windows(2)
            .find_map(|ops| match ops {
                [Op::LoadLocal(slot), Op::Compensate] => {
                    machine.fiber.locals.get(*slot as usize).cloned()
                }
                _ => None,
            });
        let undoes = matches!(stack, Some(Value::List(ref undos)) if !undos.is_empty());
        if !undoes && !on_cancel {
            return Ok(false);
        }
        let now = self.clock.now();
        if !self
            .store
            .claim(run, &self.owner, now + self.lease_ms, now)?
        {
            return Ok(false);
        }
        let result = self.take_to_compensation(run, &record, &mut machine, &guard, by);
        let released = self.release(run);
        result?;
        released?;
        // Driven here, so that a command that cancels comes back once the undo blocks that
        // can run now have run (and the parent of a run that ended is woken).
        self.drive(run)?;
        Ok(true)
    }

    fn take_to_compensation(
        &mut self,
        run: &str,
        record: &crate::store::RunRecord,
        machine: &mut crate::vm::Machine,
        guard: &crate::vm::machine::Handler,
        by: &str,
    ) -> EngineResult<()> {
        self.cancel_descendants(run, by)?;
        let mut error = crate::vm::machine::error_value(
            "Cancelled",
            format!("run {run} was cancelled by {by}"),
            "cancel",
        );
        if let Value::Record(fields) = &mut error {
            fields.insert("by".into(), Value::Str(by.to_string()));
        }
        let fiber = &mut machine.fiber;
        fiber.stack.truncate(guard.stack_depth as usize);
        fiber.deadlines.truncate(guard.timeouts as usize);
        fiber.handlers.clear();
        fiber.stack.push(error);
        fiber.pc = guard.catch;
        let mut events = Vec::new();
        if let Some(crate::history::WaitingOn::Gate { kind, name }) = record.waiting() {
            events.push(event(
                EventKind::GateWithdrawn,
                Some(name.clone()),
                None,
                None,
                serde_json::json!({ "kind": kind.word(), "gate": name, "why": "the run was cancelled" }),
            ));
        }
        events.push(event(
            EventKind::CompensationStarted,
            Some("cancel".into()),
            None,
            None,
            serde_json::json!({ "why": "cancelled", "by": by }),
        ));
        self.commit(
            &record.id,
            &record.version,
            Some(machine),
            Change::runnable(events),
        )
    }
}
