//! `parallel`: the handler of the `parallel` instruction, for the engine's drive loop.
//!
//! In: a [`Driving`] run stopped at a `parallel` and the instruction's values (the items and
//! the limit of a `parallel for`, then the values its branches capture). Out: its branches
//! started as child runs `RUN.STEP.0`, `RUN.STEP.1`, … (in order, at most `max` open at
//! once), driven here while they can go on (in-process steps of many branches committed
//! together), waited for otherwise (the run waits on `branches N of M` and each branch's end
//! wakes it), and the instruction completed with their results in order — or, without
//! `collect`, the first failure raised at the `parallel` once the branches still open are
//! cancelled (their open gates withdrawn with them).
//!
//! Each branch is a run of its own, so everything durable works in it as in any run (tool
//! calls on the pool, gates in the inbox, sleeps, children, audit), and a crash anywhere
//! repeats no completed step of any branch: a branch's id is derived from the parent's step,
//! so starting it again after a crash finds it started. What the parent's history already
//! says about its branches is kept with its checkpoint ([`BranchMemory`]), so a crash
//! between two commits records no branch twice and leaves none out.

use crate::engine::{
    CHILD_RECHECK_MS, Change, Driving, Engine, EngineError, EngineResult, StartedAs,
    arguments_json, event,
};
use crate::history::{EventKind, WaitingOn};
use crate::steps::Step;
use crate::store::{Millis, NewEvent, RunRecord, RunStatus};
use crate::vm::machine::error_value;
use crate::vm::value::from_json;
use crate::vm::{Outcome, Value};
use flow_compiler::bytecode::{Module, ParallelInfo, SelectInfo};
use std::collections::BTreeSet;

/// What the parent's history records of the branches of the `parallel` it is at, kept with
/// its checkpoint (in the call memory).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct BranchMemory {
    /// The step number of the `parallel`.
    pub(crate) step: u64,
    /// Whether `parallel_started` is recorded.
    pub(crate) announced: bool,
    /// Branches `0..started` are recorded as started (branches start in order).
    pub(crate) started: u64,
    /// The branches whose end is recorded.
    pub(crate) ended: BTreeSet<u64>,
    /// How long after the last look the run looks again when no branch's end woke it:
    /// doubled each time nothing changed, so a `parallel` that waits days for people does
    /// not wake every few seconds.
    #[serde(default)]
    pub(crate) recheck_ms: i64,
}

impl BranchMemory {
    /// What the run's checkpoint says of the branches of the instruction at `step` (none
    /// yet: a fresh memory).
    pub(crate) fn at(d: &Driving<'_>, step: u64) -> BranchMemory {
        d.memory
            .branches
            .clone()
            .filter(|m| m.step == step)
            .unwrap_or(BranchMemory {
                step,
                ..BranchMemory::default()
            })
    }
}

/// The longest wait between two looks at branches that did not wake their run.
pub(crate) const MAX_RECHECK_MS: i64 = 3_600_000;

/// The branches of one `parallel` at one step of a run.
struct Plan<'m> {
    module: &'m Module,
    info: ParallelInfo,
    /// A `parallel for`'s items; empty for a record of branches.
    items: Vec<Value>,
    captures: Vec<Value>,
    /// The most branches open at once (`count` for no limit).
    max: u64,
    count: u64,
    /// `RUN.STEP`: branch `i` is the run `RUN.STEP.i`.
    prefix: String,
}

impl<'m> Plan<'m> {
    fn new(
        module: &'m Module,
        parallel: u32,
        mut args: Vec<Value>,
        prefix: String,
    ) -> EngineResult<Plan<'m>> {
        let corrupt = |why: &str| EngineError::Corrupt(format!("parallel #{parallel}: {why}"));
        let info = module
            .parallels
            .get(parallel as usize)
            .cloned()
            .ok_or_else(|| corrupt("no such parallel"))?;
        let (items, max, captures) = if info.fields.is_none() {
            let captures = args.split_off(2.min(args.len()));
            let mut head = args.into_iter();
            let items = match head.next() {
                Some(Value::List(items)) => items,
                _ => return Err(corrupt("its items are not a list")),
            };
            let max = match head.next() {
                Some(Value::Int(n)) => n,
                _ => return Err(corrupt("its limit is not an Int")),
            };
            (items, max, captures)
        } else {
            (Vec::new(), 0, args)
        };
        let count = match info.fields {
            None => items.len() as u64,
            Some(_) => info.branches.len() as u64,
        };
        let max = if max <= 0 { count } else { max as u64 };
        Ok(Plan {
            module,
            info,
            items,
            captures,
            max,
            count,
            prefix,
        })
    }

    fn id(&self, branch: u64) -> String {
        format!("{}.{branch}", self.prefix)
    }

    /// The branch's index from its run's id, if the run is one of this `parallel`'s.
    fn index_of(&self, id: &str) -> Option<u64> {
        let index = id.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        index.parse().ok().filter(|i| *i < self.count)
    }

    /// The workflow branch `i` runs (an index into the module's workflows).
    fn workflow(&self, branch: u64) -> u32 {
        match self.info.fields {
            None => self.info.branches[0],
            Some(_) => self.info.branches[branch as usize],
        }
    }

    /// A record of branches: branch `i`'s field name.
    fn field(&self, branch: u64) -> Option<&str> {
        let list = self.module.field_lists.get(self.info.fields? as usize)?;
        self.module.string(*list.get(branch as usize)?)
    }

    fn arguments(&self, branch: u64) -> Vec<Value> {
        let item = self.items.get(branch as usize).cloned();
        item.into_iter()
            .chain(self.captures.iter().cloned())
            .collect()
    }

    /// How the history names branch `i`: its index, its run, and its field for a record.
    fn describe(&self, branch: u64, run: &str) -> serde_json::Value {
        let mut data = serde_json::json!({ "branch": branch, "run": run });
        if let Some(field) = self.field(branch) {
            data["name"] = serde_json::Value::String(field.to_string());
        }
        data
    }
}

/// A failed or cancelled branch as the `Error` record the workflow sees: the error that
/// ended the branch (a named error with its fields), its message saying which branch.
fn branch_error(failure: Option<Value>, record: &RunRecord, branch: u64) -> Value {
    branch_error_as(
        failure,
        record,
        &format!("branch {branch} of the `parallel`"),
    )
}

/// [`branch_error`] of `what` (a `parallel`'s branch, a `select`'s arm).
fn branch_error_as(failure: Option<Value>, record: &RunRecord, what: &str) -> Value {
    let prefix = format!("{what} failed: ");
    if let Some(Value::Record(mut fields)) = failure {
        let message = match fields.get("message") {
            Some(Value::Str(m)) => m.clone(),
            _ => String::new(),
        };
        fields.insert("message".into(), Value::Str(format!("{prefix}{message}")));
        return Value::Record(fields);
    }
    let (kind, message) = match (&record.status, record.error.as_deref()) {
        (RunStatus::Failed, Some(text)) => {
            let text = text.rsplit_once(" (at ").map_or(text, |(t, _)| t);
            match text.split_once(": ") {
                Some((kind, message)) => (kind.to_string(), message.to_string()),
                None => ("Failed".to_string(), text.to_string()),
            }
        }
        _ => ("Cancelled".to_string(), "it was cancelled".to_string()),
    };
    error_value(&kind, format!("{prefix}{message}"), "parallel")
}

impl Engine {
    /// The `parallel` the machine stopped at: starts what may start, drives it, and
    /// completes, raises or waits. Safe to run again at any point: it reads the branches'
    /// runs and what the memory says is recorded, and does only what is left.
    pub(crate) fn parallel_step(
        &mut self,
        d: &mut Driving<'_>,
        parallel: u32,
        args: Vec<Value>,
        here: Option<i64>,
        deadline: Option<Millis>,
    ) -> Step {
        let module = d.module;
        let step = d.machine.steps;
        let plan = Plan::new(module, parallel, args, format!("{}.{step}", d.run))?;
        let mut memory = BranchMemory::at(d, step);
        if !memory.announced {
            memory.announced = true;
            d.pending.push(event(
                EventKind::ParallelStarted,
                Some("parallel".into()),
                None,
                here,
                serde_json::json!({
                    "step_number": step,
                    "branches": plan.count,
                    "max": plan.max,
                    "collect": plan.info.collect,
                }),
            ));
        }
        let seen = (memory.started, memory.ended.len());
        loop {
            let runs = self.branch_runs(d.run, &plan)?;
            let started = runs.iter().take_while(|r| r.is_some()).count() as u64;
            let mut open = 0;
            // The branch whose failure is raised: the first that failed, else (a branch
            // cancelled from outside) the first cancelled. A sibling this `parallel`
            // cancelled before a crash is never the one raised.
            let mut failed = None;
            let mut cancelled = None;
            // Ends first, then the starts a crash kept from being recorded: the history never
            // shows more branches open than there were.
            for (branch, record) in runs.iter().enumerate() {
                let branch = branch as u64;
                let Some(record) = record else { continue };
                if !record.status.is_final() {
                    if branch >= memory.started {
                        continue;
                    }
                    open += 1;
                    continue;
                }
                match record.status {
                    RunStatus::Failed if failed.is_none() => failed = Some(branch),
                    RunStatus::Cancelled if cancelled.is_none() => cancelled = Some(branch),
                    _ => {}
                }
                if branch < memory.started && memory.ended.insert(branch) {
                    self.note_ended(d, &plan, branch, record, here);
                }
            }
            // A crash between starting a branch and recording it: record it now.
            for branch in memory.started..started {
                self.note_started(d, &plan, branch, here);
                match &runs[branch as usize] {
                    Some(record) if record.status.is_final() => {
                        if memory.ended.insert(branch) {
                            self.note_ended(d, &plan, branch, record, here);
                        }
                    }
                    _ => open += 1,
                }
            }
            memory.started = memory.started.max(started);
            let failed = failed.or(cancelled);
            if let Some(branch) = failed.filter(|_| !plan.info.collect) {
                d.memory.branches = None;
                self.remember(d.run, &d.memory);
                return self.fail_fast(d, &runs, branch);
            }
            if started == plan.count && open == 0 {
                let result = self.parallel_results(&plan, &runs)?;
                d.pending.push(event(
                    EventKind::ParallelCompleted,
                    Some("parallel".into()),
                    None,
                    here,
                    serde_json::json!({ "step_number": step, "branches": plan.count }),
                ));
                d.memory.branches = None;
                self.remember(d.run, &d.memory);
                d.machine
                    .complete(module, result, self.clock.now())
                    .map_err(EngineError::Corrupt)?;
                let events = std::mem::take(&mut d.pending);
                self.commit(d.run, d.version, Some(&d.machine), Change::runnable(events))?;
                return Ok(None);
            }
            let room = plan.max.saturating_sub(open);
            if room == 0 || started == plan.count {
                memory.recheck_ms = if (memory.started, memory.ended.len()) == seen {
                    (memory.recheck_ms * 2).clamp(CHILD_RECHECK_MS, MAX_RECHECK_MS)
                } else {
                    CHILD_RECHECK_MS
                };
                let recheck = memory.recheck_ms;
                d.memory.branches = Some(memory);
                self.remember(d.run, &d.memory);
                let change = Change {
                    events: std::mem::take(&mut d.pending),
                    status: RunStatus::Waiting,
                    output: None,
                    error: None,
                    waiting_on: Some(WaitingOn::Branches {
                        open,
                        total: plan.count,
                    }),
                    // Each branch's end wakes the run at once; this later look covers a
                    // process that died between the two.
                    wake_at: crate::history::earliest(Some(self.clock.now() + recheck), deadline),
                };
                self.commit(d.run, d.version, Some(&d.machine), change)?;
                return Ok(Some(RunStatus::Waiting));
            }
            let next: Vec<u64> = (started..plan.count.min(started + room)).collect();
            for &branch in &next {
                self.start_branch(d, &plan, branch)?;
                self.note_started(d, &plan, branch, here);
                memory.started = branch + 1;
            }
            // Recorded before the branches take a step, so the parent's history says they
            // started before anything they did.
            d.memory.branches = Some(memory.clone());
            self.remember(d.run, &d.memory);
            let events = std::mem::take(&mut d.pending);
            self.commit(d.run, d.version, Some(&d.machine), Change::runnable(events))?;
            let ids: Vec<String> = next.iter().map(|&b| plan.id(b)).collect();
            self.drive_branches(&ids)?;
        }
    }

    /// Branch `i`'s run where it exists, for every branch of the plan.
    fn branch_runs(&mut self, run: &str, plan: &Plan<'_>) -> EngineResult<Vec<Option<RunRecord>>> {
        let mut runs = vec![None; plan.count as usize];
        for child in self.store.children(run)? {
            if let Some(branch) = plan.index_of(&child.id) {
                runs[branch as usize] = Some(child);
            }
        }
        Ok(runs)
    }

    fn start_branch(&mut self, d: &Driving<'_>, plan: &Plan<'_>, branch: u64) -> EngineResult<()> {
        let code = plan
            .module
            .workflows
            .get(plan.workflow(branch) as usize)
            .ok_or_else(|| EngineError::Corrupt("a branch of an unknown workflow".into()))?;
        let input = arguments_json(&code.params, &plan.arguments(branch), true);
        // A branch is part of its run: whoever started the run started it (so the rule
        // that a run's starter may not decide its gates holds in its branches too).
        let started = StartedAs {
            by: &d.record.started_by,
            parent: Some(d.run),
            continued_from: None,
        };
        self.start_with_id(&plan.id(branch), d.version, &code.name, &input, &started)
    }

    fn note_started(&self, d: &mut Driving<'_>, plan: &Plan<'_>, branch: u64, here: Option<i64>) {
        let name = branch_name(plan, branch);
        d.pending.push(event(
            EventKind::BranchStarted,
            Some(name),
            None,
            here,
            plan.describe(branch, &plan.id(branch)),
        ));
    }

    fn note_ended(
        &self,
        d: &mut Driving<'_>,
        plan: &Plan<'_>,
        branch: u64,
        record: &RunRecord,
        here: Option<i64>,
    ) {
        let mut data = plan.describe(branch, &record.id);
        let kind = if record.status == RunStatus::Completed {
            let output = record.output.as_deref().unwrap_or("null");
            data["output"] = serde_json::from_str(output).unwrap_or_default();
            EventKind::BranchCompleted
        } else {
            data["error"] = match &record.error {
                Some(error) => serde_json::Value::String(error.clone()),
                None => serde_json::Value::String("cancelled".into()),
            };
            EventKind::BranchFailed
        };
        d.pending.push(event(
            kind,
            Some(branch_name(plan, branch)),
            None,
            here,
            data,
        ));
    }

    /// Cancels the branches of the `parallel` (or `select`) at `step` of `run` that are still
    /// open (their gates leave the inbox with them): the `branches_cancelled` event to record,
    /// if any. Safe to run again: a branch an earlier pass cancelled, whose run crashed before
    /// it recorded that, is named again (and what it started is cancelled if it is not yet).
    pub(crate) fn cancel_branches(
        &mut self,
        run: &str,
        step: u64,
        what: &str,
        why: &str,
    ) -> EngineResult<Vec<NewEvent>> {
        let prefix = format!("{run}.{step}.");
        let by = format!("{what} in {run}");
        let mut cancelled = Vec::new();
        for child in self.store.children(run)? {
            if !child.id.starts_with(&prefix) {
                continue;
            }
            let ours = if child.status.is_final() {
                // Cancelled here by a pass that stopped (a crash) before its run recorded it,
                // and maybe before what the branch started was cancelled: both done now.
                child.status == RunStatus::Cancelled
                    && self.cancelled_by(&child.id)?.as_deref() == Some(by.as_str())
                    && {
                        self.cancel_descendants(&child.id, &by)?;
                        true
                    }
            } else {
                self.cancel_tree(&child.id, &by)?
            };
            if ours {
                cancelled.push(serde_json::Value::String(child.id));
            }
        }
        if cancelled.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![event(
            EventKind::BranchesCancelled,
            Some(what.into()),
            None,
            None,
            serde_json::json!({ "runs": cancelled, "why": why }),
        )])
    }

    /// Who cancelled `run`, as its history records it.
    fn cancelled_by(&mut self, run: &str) -> EngineResult<Option<String>> {
        let history = self.store.history(run)?;
        Ok(history
            .iter()
            .rev()
            .find(|e| e.kind == EventKind::RunCancelled)
            .and_then(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
            .and_then(|data| data["by"].as_str().map(str::to_string)))
    }

    /// Cancels `run` and every run it started that has not finished (a branch that called a
    /// child workflow leaves no child waiting at a gate of its own); true if `run` was
    /// still going.
    fn cancel_tree(&mut self, run: &str, by: &str) -> EngineResult<bool> {
        let cancelled = self.cancel_quietly(run, by)?;
        self.cancel_descendants(run, by)?;
        Ok(cancelled)
    }

    /// The first failure of a `parallel` without `collect`: the branches still open are
    /// cancelled (their gates withdrawn; a call one of them has in flight finishes, and
    /// its answer is recorded in that branch and goes nowhere), and the failure is raised
    /// at the `parallel`.
    fn fail_fast(&mut self, d: &mut Driving<'_>, runs: &[Option<RunRecord>], branch: u64) -> Step {
        let why = format!("branch {branch} failed");
        let events = self.cancel_branches(d.run, d.machine.steps, "parallel", &why)?;
        d.pending.extend(events);
        let failed = runs[branch as usize]
            .as_ref()
            .ok_or_else(|| EngineError::Corrupt("a failed branch without a run".into()))?;
        let error = branch_error(self.failure_of(d.module, failed)?, failed, branch);
        let now = self.clock.now();
        if let Some(Outcome::Failed(failure)) = d.machine.fail_step(d.module, error, now) {
            let events = std::mem::take(&mut d.pending);
            return self
                .fail_run(d.run, d.version, d.module, &failure, events)
                .map(Some);
        }
        let events = std::mem::take(&mut d.pending);
        self.commit(d.run, d.version, Some(&d.machine), Change::runnable(events))?;
        Ok(None)
    }
}

impl Engine {
    /// The branches of a `select`'s wait arms (a gate, a call), as `(arm, run)`: started
    /// (and recorded) the first time the `select` waits, and driven then; each is the run
    /// `RUN.STEP.ARM`.
    pub(crate) fn select_waits(
        &mut self,
        d: &mut Driving<'_>,
        info: &SelectInfo,
        captures: Vec<Value>,
        here: Option<i64>,
    ) -> EngineResult<Vec<(usize, RunRecord)>> {
        let arms: Vec<(usize, u32)> = info
            .arms
            .iter()
            .enumerate()
            .filter_map(|(arm, a)| Some((arm, a.wait?)))
            .collect();
        if arms.is_empty() {
            return Ok(Vec::new());
        }
        let step = d.machine.steps;
        let prefix = format!("{}.{step}", d.run);
        let announced = d
            .memory
            .branches
            .as_ref()
            .is_some_and(|m| m.step == step && m.announced);
        if !announced {
            let mut values = captures.into_iter();
            let mut started = Vec::new();
            for &(arm, workflow) in &arms {
                let code =
                    d.module.workflows.get(workflow as usize).ok_or_else(|| {
                        EngineError::Corrupt("a select arm of no workflow".into())
                    })?;
                let args: Vec<Value> = values.by_ref().take(code.params.len()).collect();
                let id = format!("{prefix}.{arm}");
                if self.store.run(&id)?.is_none() {
                    let input = arguments_json(&code.params, &args, true);
                    let by = StartedAs {
                        by: &d.record.started_by,
                        parent: Some(d.run),
                        continued_from: None,
                    };
                    self.start_with_id(&id, d.version, &code.name, &input, &by)?;
                }
                d.pending.push(event(
                    EventKind::BranchStarted,
                    Some(code.name.clone()),
                    None,
                    here,
                    serde_json::json!({ "branch": arm, "run": id, "select_arm": arm }),
                ));
                started.push(id);
            }
            d.memory.branches = Some(BranchMemory {
                step,
                announced: true,
                started: arms.len() as u64,
                ..BranchMemory::default()
            });
            self.remember(d.run, &d.memory);
            let events = std::mem::take(&mut d.pending);
            self.commit(d.run, d.version, Some(&d.machine), Change::runnable(events))?;
            self.drive_branches(&started)?;
        }
        let mut runs = Vec::with_capacity(arms.len());
        for child in self.store.children(d.run)? {
            let arm = child
                .id
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|n| n.parse::<usize>().ok());
            if let Some(arm) = arm.filter(|a| arms.iter().any(|(w, _)| w == a)) {
                runs.push((arm, child));
            }
        }
        runs.sort_by_key(|(arm, _)| *arm);
        Ok(runs)
    }

    /// The `select` arm whose branch ended first: its value is the arm's (or its failure is
    /// raised at the `select`).
    pub(crate) fn select_branch_ended(
        &mut self,
        d: &mut Driving<'_>,
        info: &SelectInfo,
        (arm, record): (usize, &RunRecord),
        cancelled: Vec<NewEvent>,
        here: Option<i64>,
        now: Millis,
    ) -> Step {
        let module = d.module;
        let workflow = info.arms[arm]
            .wait
            .and_then(|w| module.workflows.get(w as usize))
            .ok_or_else(|| EngineError::Corrupt("a select arm of no workflow".into()))?;
        let mut data = serde_json::json!({ "branch": arm, "run": record.id, "select_arm": arm });
        if record.status != RunStatus::Completed {
            data["error"] = serde_json::Value::String(
                record.error.clone().unwrap_or_else(|| "cancelled".into()),
            );
            d.pending.push(event(
                EventKind::BranchFailed,
                Some(workflow.name.clone()),
                None,
                here,
                data,
            ));
            d.pending.extend(cancelled);
            let failure = self.failure_of(module, record)?;
            let error = branch_error_as(failure, record, &format!("arm {arm} of the `select`"));
            if let Some(Outcome::Failed(failure)) = d.machine.fail_step(module, error, now) {
                let events = std::mem::take(&mut d.pending);
                return self
                    .fail_run(d.run, d.version, module, &failure, events)
                    .map(Some);
            }
        } else {
            let json: serde_json::Value =
                serde_json::from_str(record.output.as_deref().unwrap_or("null"))
                    .unwrap_or_default();
            let value = from_json(module, workflow.ret, &json, "$")
                .map_err(|e| EngineError::Corrupt(format!("branch run {}: {e}", record.id)))?;
            data["output"] = json;
            d.pending.push(event(
                EventKind::BranchCompleted,
                Some(workflow.name.clone()),
                None,
                here,
                data,
            ));
            d.pending.extend(cancelled);
            d.machine
                .complete_arm(module, arm, value, now)
                .map_err(EngineError::Corrupt)?;
        }
        let events = std::mem::take(&mut d.pending);
        self.commit(d.run, d.version, Some(&d.machine), Change::runnable(events))?;
        Ok(None)
    }

    /// When a run whose `select` has branches open looks at them again unwoken (a process
    /// that died between a branch's end and waking the run): later each time.
    pub(crate) fn select_recheck(&mut self, d: &mut Driving<'_>) -> Millis {
        let memory = d.memory.branches.get_or_insert_with(BranchMemory::default);
        memory.recheck_ms = (memory.recheck_ms * 2).clamp(CHILD_RECHECK_MS, MAX_RECHECK_MS);
        let recheck = memory.recheck_ms;
        self.remember(d.run, &d.memory);
        self.clock.now() + recheck
    }
}

/// How the history names branch `i`: `triage#1[2]`, or `triage#1.docs` for a field.
fn branch_name(plan: &Plan<'_>, branch: u64) -> String {
    let workflow = plan
        .module
        .workflows
        .get(plan.workflow(branch) as usize)
        .map(|w| w.name.as_str())
        .unwrap_or("?");
    match plan.field(branch) {
        Some(_) => workflow.to_string(),
        None => format!("{workflow}[{branch}]"),
    }
}

/// The `parallel`'s value once every branch has ended: a list in the items' order, or a
/// record with a field per branch; with `collect`, each a `{value, error}` record.
impl Engine {
    fn parallel_results(
        &mut self,
        plan: &Plan<'_>,
        runs: &[Option<RunRecord>],
    ) -> EngineResult<Value> {
        let mut values = Vec::with_capacity(runs.len());
        for (branch, record) in runs.iter().enumerate() {
            let record = record
                .as_ref()
                .ok_or_else(|| EngineError::Corrupt("a branch that never started".into()))?;
            let value = if record.status == RunStatus::Completed {
                let code = &plan.module.workflows[plan.workflow(branch as u64) as usize];
                let json: serde_json::Value =
                    serde_json::from_str(record.output.as_deref().unwrap_or("null"))
                        .unwrap_or_default();
                let value = from_json(plan.module, code.ret, &json, "$")
                    .map_err(|e| EngineError::Corrupt(format!("branch run {}: {e}", record.id)))?;
                if plan.info.collect {
                    Value::record([("value", value), ("error", Value::None)])
                } else {
                    value
                }
            } else {
                Value::record([
                    ("value", Value::None),
                    (
                        "error",
                        branch_error(self.failure_of(plan.module, record)?, record, branch as u64),
                    ),
                ])
            };
            values.push(value);
        }
        Ok(match plan.info.fields {
            None => Value::List(values),
            Some(_) => Value::Record(
                (0..plan.count)
                    .map(|b| plan.field(b).unwrap_or("?").to_string())
                    .zip(values)
                    .collect(),
            ),
        })
    }
}
