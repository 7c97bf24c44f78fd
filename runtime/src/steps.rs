//! One handler per kind of durable point, for the engine's drive loop
//! ([`Engine::drive_claimed`]).
//!
//! In: a [`Driving`] run — its record, its program, its machine stopped at a durable
//! instruction, the events not yet committed — and the instruction's [`Request`]. Out: the
//! events and the run's new state, committed through [`Engine::commit`] (one transaction per
//! durable point), and whether the drive goes on (`None`) or stops with a status. The waits a
//! woken run meets first (a fired timer, a gate's clock, the deadline of a `timeout` around
//! the wait) are handled by [`Engine::wake`] before the machine runs again.
//!
//! Tool calls have their own handler (`Engine::tool_step`, with the call memory and the
//! effects pool), gates theirs (`crate::gates`), and `continue as` its own
//! (`Engine::continue_as`).

use crate::engine::{
    CHILD_RECHECK_MS, Change, Driving, Engine, EngineError, EngineResult, StartedAs, ToolStep,
    arguments_json, event, expired_deadline, line, step_name, successor_of, timer_name,
};
use crate::gates::{GateClock, GateKind, OpenedAt};
use crate::history::{EventKind, WaitingOn};
use crate::parallel::MAX_RECHECK_MS;
use crate::store::{Millis, NewEvent, RunStatus};
use crate::vm::machine::error_value;
use crate::vm::value::from_json;
use crate::vm::{Outcome, Request, Value};

/// The signal a `select` arm waits for (`None` for an `after` arm).
fn arm_signal(
    module: &flow_compiler::bytecode::Module,
    signal: Option<u32>,
) -> EngineResult<Option<&flow_compiler::bytecode::SignalInfo>> {
    match signal {
        None => Ok(None),
        Some(index) => module
            .signals
            .get(index as usize)
            .map(Some)
            .ok_or_else(|| EngineError::Corrupt(format!("no signal #{index}"))),
    }
}

/// The value of a queued signal, as its declared type.
fn queued_value(
    module: &flow_compiler::bytecode::Module,
    run: &str,
    info: &flow_compiler::bytecode::SignalInfo,
    queued: &crate::store::SignalRecord,
) -> EngineResult<Value> {
    let json: serde_json::Value = serde_json::from_str(&queued.value).map_err(|e| {
        EngineError::Corrupt(format!(
            "signal #{} of run {run} is not JSON: {e}",
            queued.number
        ))
    })?;
    // Validated against the type when it was sent; a value that no longer fits (a corrupt
    // row) stops the run with a clear error instead of a wrong value.
    from_json(module, info.ty, &json, "$").map_err(|e| {
        EngineError::Corrupt(format!(
            "signal #{} `{}` of run {run} does not fit its type: {e}",
            queued.number, info.name
        ))
    })
}

/// What ended a `select`'s wait.
pub(crate) enum Happened {
    Signal(crate::store::SignalRecord),
    After(Millis),
    /// The branch of a wait arm (a gate, a call) ended.
    Branch(crate::store::RunRecord),
}

/// What a handler tells the drive loop: go on (`None`), or stop with this status.
pub(crate) type Step = EngineResult<Option<RunStatus>>;

impl Driving<'_> {
    fn take_pending(&mut self) -> Vec<NewEvent> {
        std::mem::take(&mut self.pending)
    }
}

impl Engine {
    /// A run that waited: whether what it waited for has come (a timer fired, a gate's clock
    /// ran out, a child ended, a call came back), recorded in `d.pending`. `Some(status)`:
    /// it has not, and the run stays as it is (or it failed there).
    pub(crate) fn wake(&mut self, d: &mut Driving<'_>) -> Step {
        if d.record.status != RunStatus::Waiting {
            return Ok(None);
        }
        let (module, record) = (d.module, d.record);
        match record.waiting() {
            Some(WaitingOn::Gate { kind, name }) => {
                let due = record.wake_at.is_some_and(|at| at <= self.clock.now());
                if !due {
                    return Ok(Some(RunStatus::Waiting));
                }
                // The `timeout` around the gate expired first: the gate is withdrawn (from the
                // inbox too) and the `timeout` raises when the machine goes on.
                if let Some(deadline) = expired_deadline(module, &d.machine, self.clock.now()) {
                    d.pending.push(event(
                        EventKind::GateWithdrawn,
                        Some(name.clone()),
                        None,
                        line(module, &d.machine),
                        serde_json::json!({
                            "kind": kind.word(),
                            "gate": name,
                            "why": "the `timeout` around it expired",
                            "deadline": crate::vm::value::format_time(deadline),
                        }),
                    ));
                    return Ok(None);
                }
                match self.gate_clock(record, module, &mut d.machine)? {
                    GateClock::StillWaiting => Ok(Some(RunStatus::Waiting)),
                    GateClock::TimedOut(events) => {
                        d.pending.extend(events);
                        Ok(None)
                    }
                    GateClock::Failed(error, events) => self
                        .fail_run(d.run, d.version, module, &error, events)
                        .map(Some),
                }
            }
            Some(WaitingOn::Timer) => {
                let due = record.wake_at.unwrap_or(0);
                if due > self.clock.now() {
                    return Ok(Some(RunStatus::Waiting));
                }
                d.pending.push(event(
                    EventKind::TimerFired,
                    None,
                    None,
                    line(module, &d.machine),
                    serde_json::json!({ "due": due }),
                ));
                // The timer firing is the run's last durable point: the code after the `sleep`
                // sees the time it woke at, not the time it went to sleep (a `timeout` right
                // after it would otherwise start already expired).
                d.machine.clock = self.clock.now();
                Ok(None)
            }
            // The handler looks at the child (or the branches) again.
            Some(WaitingOn::Child { .. } | WaitingOn::Branches { .. }) => Ok(None),
            // A `select` with branches open looks again (one may have ended).
            Some(WaitingOn::Select { branches, .. }) if branches > 0 => Ok(None),
            // Woken by a signal (or the deadline of a `timeout` around the wait): the
            // machine goes back to the `await signal`, which takes it (or times out).
            Some(WaitingOn::Signal { .. } | WaitingOn::Select { .. }) => {
                let due = record.wake_at.is_some_and(|at| at <= self.clock.now());
                Ok((!due).then_some(RunStatus::Waiting))
            }
            // A call in this engine's pool goes on when its completion is applied; one left by
            // a process that died is made again (its lease ran out).
            Some(WaitingOn::Tool { .. }) => {
                if self.in_flight.contains(d.run) && !self.arrived.contains_key(d.run) {
                    return Ok(Some(RunStatus::Waiting));
                }
                Ok(None)
            }
            _ => Ok(Some(RunStatus::Waiting)),
        }
    }

    /// The machine stopped at a durable point: performs it with the handler of its kind.
    pub(crate) fn durable_step(
        &mut self,
        d: &mut Driving<'_>,
        request: Request,
        deadline: Option<Millis>,
    ) -> Step {
        let now = self.clock.now();
        // A call that completed is recorded as it came back, even if the deadline passed in
        // the meantime (the call itself was bounded by it).
        if let Some(deadline) = deadline
            && deadline <= now
            && !self.has_arrived(d.run, d.machine.steps)
        {
            return self.deadline_passed(d, &request, now);
        }
        let module = d.module;
        let here = line(module, &d.machine);
        // A completed call goes on in the span its step opened.
        let step_span = match self.arrived.get(d.run) {
            Some(done) if done.step == d.machine.steps => done.step_span.clone(),
            _ => crate::telemetry::step_span(module, &request, here),
        };
        let _step = step_span.entered();
        match request {
            Request::Now => self.now_step(d, here, now),
            // Nothing to record: the same id on every resume.
            Request::RunId => {
                // Nor does it move the run's clock: a replay sees the same time.
                let clock = d.machine.clock;
                d.machine
                    .complete(module, Value::Str(d.run.to_string()), clock)
                    .map_err(EngineError::Corrupt)?;
                Ok(None)
            }
            Request::Audit { event, fields } => self.audit_step(d, event, &fields, here, now),
            Request::Sleep { duration_ms } => self.sleep_step(d, duration_ms, deadline, here, now),
            Request::Approval { gate, options } => {
                let name = module.gates.get(gate as usize).cloned().unwrap_or_default();
                self.gate_step(d, GateKind::Approval, &name, &options, deadline, here)
            }
            Request::Input { request, options } => {
                let name = module
                    .input_requests
                    .get(request as usize)
                    .map(|r| r.name.clone())
                    .unwrap_or_default();
                self.gate_step(d, GateKind::Input, &name, &options, deadline, here)
            }
            Request::Tool { tool, args } => {
                let call = ToolStep {
                    run: d.run,
                    version: d.version,
                    module,
                    tool,
                    args,
                    here,
                    deadline,
                };
                self.tool_step(call, &mut d.machine, &mut d.memory, &mut d.pending)
            }
            Request::Workflow { workflow, args } => {
                self.child_step(d, workflow, &args, here, deadline)
            }
            Request::ContinueAs { workflow, args } => {
                self.continue_as(d, workflow, &args, here).map(Some)
            }
            Request::Signal { signal } => self.signal_step(d, signal, deadline, here, now),
            Request::Select {
                select,
                deadlines,
                captures,
            } => self.select_step(d, (select, &deadlines, captures), deadline, here, now),
            Request::Parallel { parallel, args } => {
                self.parallel_step(d, parallel, args, here, deadline)
            }
            Request::Compensate { stack } => self.compensate_step(d, &stack, here),
        }
    }

    /// `select { … }`: the arm that happened first. A signal arm whose signal is queued wins
    /// (the oldest such signal, whichever arm it is for); else an `after` whose deadline has
    /// passed (the earliest); else the run waits for any of them (and for the deadline of a
    /// `timeout` around the `select`), and is woken by whichever comes first.
    fn select_step(
        &mut self,
        d: &mut Driving<'_>,
        (select, deadlines, captures): (u32, &[Millis], Vec<Value>),
        deadline: Option<Millis>,
        here: Option<i64>,
        now: Millis,
    ) -> Step {
        let module = d.module;
        let info = module
            .selects
            .get(select as usize)
            .ok_or_else(|| EngineError::Corrupt(format!("no select #{select}")))?;
        // The gates and calls its arms wait for, each a branch run started when it first
        // waits; an arm whose branch ended is one that happened, at the time it ended.
        let waits = self.select_waits(d, info, captures, here)?;
        let mut first: Option<(Millis, usize, Happened)> = None;
        let mut consider = |at: Millis, arm: usize, happened: Happened| {
            if first.as_ref().is_none_or(|(t, a, _)| (at, arm) < (*t, *a)) {
                first = Some((at, arm, happened));
            }
        };
        for (arm, record) in &waits {
            if record.status.is_final() {
                consider(record.updated_at, *arm, Happened::Branch(record.clone()));
            }
        }
        // The oldest queued signal among the arms' signals.
        let mut taken: Option<(usize, crate::store::SignalRecord)> = None;
        for (arm, signal) in info.arms.iter().enumerate() {
            let Some(signal) = arm_signal(module, signal.signal)? else {
                continue;
            };
            if let Some(queued) = self.store.next_signal(d.run, &signal.name)?
                && taken.as_ref().is_none_or(|(_, t)| queued.number < t.number)
            {
                taken = Some((arm, queued));
            }
        }
        if let Some((arm, queued)) = taken {
            consider(queued.sent_at, arm, Happened::Signal(queued));
        }
        // The earliest `after` (the first of them on a tie), and whether it has come.
        let afters = info
            .arms
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_after())
            .map(|(arm, _)| arm);
        let earliest = afters
            .zip(deadlines.iter().copied())
            .min_by_key(|(_, at)| *at);
        if let Some((arm, due)) = earliest
            && due <= now
        {
            consider(due, arm, Happened::After(due));
        }
        let open = waits.iter().filter(|(_, r)| !r.status.is_final()).count() as u64;
        let Some((_, arm, happened)) = first else {
            let signals = info
                .arms
                .iter()
                .filter_map(|a| arm_signal(module, a.signal).ok().flatten())
                .map(|s| s.name.clone())
                .collect();
            let until = earliest.map(|(_, due)| due);
            let mut wake_at = crate::history::earliest(until, deadline);
            if open > 0 {
                let recheck = self.select_recheck(d);
                wake_at = crate::history::earliest(wake_at, Some(recheck));
            }
            let waiting_on = WaitingOn::Select {
                signals,
                until,
                branches: open,
            };
            return self.commit_waiting(d, waiting_on, wake_at);
        };
        // The other arms lost: the branches still open are cancelled (their gates leave
        // the inbox) — and those a pass that crashed before its commit cancelled already
        // are recorded.
        let cancelled = if !waits.is_empty() {
            let why = format!("arm {arm} of the `select` happened first");
            self.cancel_branches(d.run, d.machine.steps, "select", &why)?
        } else {
            Vec::new()
        };
        d.memory.branches = None;
        self.remember(d.run, &d.memory);
        match happened {
            Happened::Branch(record) => {
                return self.select_branch_ended(d, info, (arm, &record), cancelled, here, now);
            }
            Happened::Signal(_) | Happened::After(_) => d.pending.extend(cancelled),
        }
        match happened {
            Happened::Signal(queued) => {
                let signal = arm_signal(module, info.arms[arm].signal)?
                    .ok_or_else(|| EngineError::Corrupt("a select arm lost its signal".into()))?;
                self.take_signal(d, signal, &queued, Some(arm), here, now)
            }
            Happened::After(due) => {
                d.machine
                    .complete_arm(module, arm, Value::None, now)
                    .map_err(EngineError::Corrupt)?;
                d.pending.push(event(
                    EventKind::TimerFired,
                    Some("select".into()),
                    None,
                    here,
                    serde_json::json!({ "due": due, "select_arm": arm }),
                ));
                self.commit_going_on(d)
            }
            Happened::Branch(_) => Ok(None),
        }
    }

    /// Commits what is pending with the run waiting on `waiting_on`, due at `wake_at` (the
    /// store wakes it sooner for what it waits on: a signal, a decision).
    fn commit_waiting(
        &mut self,
        d: &mut Driving<'_>,
        waiting_on: WaitingOn,
        wake_at: Option<Millis>,
    ) -> Step {
        let change = Change {
            events: d.take_pending(),
            status: RunStatus::Waiting,
            output: None,
            error: None,
            waiting_on: Some(waiting_on),
            wake_at,
        };
        self.commit(d.run, d.version, Some(&d.machine), change)?;
        Ok(Some(RunStatus::Waiting))
    }

    /// `await signal NAME`: the oldest signal of that name the run received and has not
    /// taken, or a wait for the next one (until the deadline of a `timeout` around it). The
    /// commit that starts the wait wakes the run at once when a signal came in meanwhile
    /// (`store::signals`), so none is missed between this read and that commit.
    fn signal_step(
        &mut self,
        d: &mut Driving<'_>,
        signal: u32,
        deadline: Option<Millis>,
        here: Option<i64>,
        now: Millis,
    ) -> Step {
        let module = d.module;
        let Some(info) = module.signals.get(signal as usize) else {
            return Err(EngineError::Corrupt(format!("no signal #{signal}")));
        };
        let Some(queued) = self.store.next_signal(d.run, &info.name)? else {
            let waiting_on = WaitingOn::Signal {
                name: info.name.clone(),
            };
            return self.commit_waiting(d, waiting_on, deadline);
        };
        self.take_signal(d, info, &queued, None, here, now)
    }

    /// Takes the queued signal: its value is the `await signal`'s (or, with `arm`, that
    /// `select` arm's), recorded as `signal_taken` in the commit that marks it taken.
    fn take_signal(
        &mut self,
        d: &mut Driving<'_>,
        signal: &flow_compiler::bytecode::SignalInfo,
        queued: &crate::store::SignalRecord,
        arm: Option<usize>,
        here: Option<i64>,
        now: Millis,
    ) -> Step {
        let module = d.module;
        let value = queued_value(module, d.run, signal, queued)?;
        let completed = match arm {
            Some(arm) => d.machine.complete_arm(module, arm, value, now),
            None => d.machine.complete(module, value, now),
        };
        completed.map_err(EngineError::Corrupt)?;
        let mut data = serde_json::json!({ "signal": signal.name, "number": queued.number, "by": queued.sender });
        if let Some(arm) = arm {
            data["select_arm"] = arm.into();
        }
        d.pending.push(event(
            EventKind::SignalTaken,
            Some(signal.name.clone()),
            None,
            here,
            data,
        ));
        let events = d.take_pending();
        self.commit_taking_signal(
            d.run,
            d.version,
            &d.machine,
            Change::runnable(events),
            queued.number,
        )?;
        Ok(None)
    }

    /// A durable point reached after the deadline of the `timeout` around it: it is not
    /// performed, and the `timeout` raises `Timeout` there.
    fn deadline_passed(&mut self, d: &mut Driving<'_>, request: &Request, now: Millis) -> Step {
        let module = d.module;
        let step = step_name(module, request);
        let here = line(module, &d.machine);
        // A tool call that was in flight at a crash is not made again once its time limit has
        // passed; the history says it was resumed and timed out under its key, and a `retry`
        // around it keeps that key.
        let resumed_key = match (request, d.memory.in_flight_key.take()) {
            (Request::Tool { .. }, Some(key)) => Some(key),
            _ => None,
        };
        let message = match resumed_key {
            Some(_) => {
                format!("the time limit of `{step}` passed while it was in flight at a crash")
            }
            None if d.woke_from_wait => {
                format!("the `timeout` around `{step}` expired while the run waited there")
            }
            None => format!("the time limit passed before `{step}` could start"),
        };
        let error = error_value("Timeout", message, &step);
        if matches!(request, Request::Parallel { .. } | Request::Select { .. }) {
            let why = "the `timeout` around it expired";
            let events = self.cancel_branches(d.run, d.machine.steps, &step, why)?;
            d.pending.extend(events);
        }
        let steps = d.machine.steps;
        let mut data = serde_json::json!({ "step_number": steps });
        if let Some(key) = resumed_key {
            d.memory.attempt_after_crash = false;
            d.pending.push(event(EventKind::StepResumed, Some(step.clone()), None, here, serde_json::json!({ "step_number": steps, "idempotency_key": key, "why": "the step was in flight when the previous flowrt stopped; its time limit has passed, so it is not made again" })));
            let site = (step.clone(), here);
            if let Some(call) = d.memory.started.remove(&site) {
                d.memory.failed_calls.insert(site.clone(), call);
            }
            *d.memory.failures.entry(site).or_default() += 1;
            d.memory.ended();
            self.remember(d.run, &d.memory);
            data["idempotency_key"] = serde_json::Value::String(key);
        }
        d.pending
            .push(event(EventKind::StepTimedOut, Some(step), None, here, data));
        if let Some(Outcome::Failed(failed)) = d.machine.fail_step(module, error, now) {
            let events = d.take_pending();
            return self
                .fail_run(d.run, d.version, module, &failed, events)
                .map(Some);
        }
        Ok(None)
    }

    /// `now()`: the time, recorded, so that a resumed run reads the same one.
    fn now_step(&mut self, d: &mut Driving<'_>, here: Option<i64>, now: Millis) -> Step {
        d.machine
            .complete(d.module, Value::Time(now), now)
            .map_err(EngineError::Corrupt)?;
        d.pending.push(event(
            EventKind::ClockRead,
            Some("now".into()),
            None,
            here,
            serde_json::json!({ "time": Value::Time(now).to_json() }),
        ));
        self.commit_going_on(d)
    }

    /// `audit "e" { … }`: the record, appended to the run's trail.
    fn audit_step(
        &mut self,
        d: &mut Driving<'_>,
        index: u32,
        fields: &Value,
        here: Option<i64>,
        now: Millis,
    ) -> Step {
        let name = d
            .module
            .events
            .get(index as usize)
            .cloned()
            .unwrap_or_default();
        d.machine
            .complete(d.module, Value::None, now)
            .map_err(EngineError::Corrupt)?;
        d.pending.push(event(
            EventKind::Audit,
            Some(name),
            None,
            here,
            fields.to_json(),
        ));
        self.commit_going_on(d)
    }

    /// `sleep d`: a durable timer. A sleep longer than the `timeout` around it ends at the
    /// deadline, and there the `timeout` raises: the checkpoint stays *at* the sleep, so that
    /// the woken run meets its deadline there.
    fn sleep_step(
        &mut self,
        d: &mut Driving<'_>,
        duration_ms: i64,
        deadline: Option<Millis>,
        here: Option<i64>,
        now: Millis,
    ) -> Step {
        let timer = timer_name(d.module, &d.machine);
        let wanted = now + duration_ms.max(0);
        let cut_short = deadline.filter(|d| *d < wanted);
        let until = cut_short.unwrap_or(wanted);
        if cut_short.is_none() {
            d.machine
                .complete(d.module, Value::None, now)
                .map_err(EngineError::Corrupt)?;
        }
        let mut data = serde_json::json!({ "until": Value::Time(until).to_json(), "duration": Value::Duration(duration_ms).to_json() });
        if cut_short.is_some() {
            data["cut_short_by"] = "timeout".into();
        }
        d.pending.push(event(
            EventKind::TimerSet,
            Some(timer.into()),
            None,
            here,
            data,
        ));
        if until <= now {
            return self.commit_going_on(d);
        }
        self.commit_waiting(d, WaitingOn::Timer, Some(until))
    }

    /// `await approval` / `await input`: the gate opens (see `crate::gates`) and the run
    /// waits for a person.
    fn gate_step(
        &mut self,
        d: &mut Driving<'_>,
        kind: GateKind,
        name: &str,
        options: &Value,
        deadline: Option<Millis>,
        here: Option<i64>,
    ) -> Step {
        let at = OpenedAt {
            module: d.module,
            machine: &d.machine,
            kind,
            name,
            options,
            deadline,
        };
        let events = std::mem::take(&mut d.pending);
        self.open_gate(d.record, &at, here, events).map(Some)
    }

    /// A child workflow call: the child run (id `RUN.STEP`) is started once, driven here
    /// when it can go on, and waited for otherwise; its result or failure is the call's. A
    /// child that continued as a new run is followed to the run that goes on.
    fn child_step(
        &mut self,
        d: &mut Driving<'_>,
        workflow: u32,
        args: &[Value],
        here: Option<i64>,
        deadline: Option<Millis>,
    ) -> Step {
        let (run, version, module) = (d.run, d.version, d.module);
        let code = module
            .workflows
            .get(workflow as usize)
            .cloned()
            .ok_or_else(|| EngineError::Corrupt("unknown workflow".into()))?;
        let first = format!("{run}.{}", d.machine.steps);
        if self.store.run(&first)?.is_none() {
            let input = arguments_json(&code.params, args, true);
            let started = StartedAs {
                by: "workflow",
                parent: Some(run),
                continued_from: None,
            };
            self.start_with_id(&first, version, &code.name, &input, &started)?;
            d.pending.push(event(
                EventKind::ChildStarted,
                Some(code.name.clone()),
                None,
                here,
                serde_json::json!({ "run": first }),
            ));
            self.commit_going_on(d)?;
        }
        let mut child = first;
        let status = loop {
            let status = match self.store.run(&child)? {
                Some(record) if record.status.is_final() => record.status,
                _ => match self.drive_alone(&child) {
                    Ok(status) => status,
                    Err(EngineError::Claimed(_)) => RunStatus::Waiting,
                    Err(e) => return Err(e),
                },
            };
            if status != RunStatus::Continued {
                break status;
            }
            child = successor_of(&child);
        };
        let record = self
            .store
            .run(&child)?
            .ok_or_else(|| EngineError::NoSuchRun(child.clone()))?;
        let now = self.clock.now();
        match status {
            RunStatus::Completed => {
                let json: serde_json::Value =
                    serde_json::from_str(record.output.as_deref().unwrap_or("null"))
                        .unwrap_or_default();
                let value = from_json(module, code.ret, &json, "$")
                    .map_err(|e| EngineError::Corrupt(format!("child run {child}: {e}")))?;
                d.machine
                    .complete(module, value, now)
                    .map_err(EngineError::Corrupt)?;
                d.pending.push(event(
                    EventKind::ChildCompleted,
                    Some(code.name.clone()),
                    None,
                    here,
                    serde_json::json!({ "run": child, "output": json }),
                ));
                self.commit_going_on(d)
            }
            RunStatus::Failed | RunStatus::Cancelled => {
                let why = match &record.error {
                    Some(error) => format!("failed: {error}"),
                    None => "was cancelled".to_string(),
                };
                // The child's own error, unchanged (a named error keeps its fields); a
                // cancelled child (or one an older flowrt failed) fails the call plainly.
                let error = match self.failure_of(module, &record)? {
                    // Its kind and fields as they are; the message says which child.
                    Some(Value::Record(mut fields)) => {
                        let message = match fields.get("message") {
                            Some(Value::Str(m)) => m.clone(),
                            _ => String::new(),
                        };
                        let message =
                            format!("child workflow `{}` ({child}) failed: {message}", code.name);
                        fields.insert("message".into(), Value::Str(message));
                        Value::Record(fields)
                    }
                    Some(other) => other,
                    None => error_value(
                        "Failed",
                        format!("child workflow `{}` ({child}) {why}", code.name),
                        &code.name,
                    ),
                };
                d.pending.push(event(
                    EventKind::ChildFailed,
                    Some(code.name.clone()),
                    None,
                    here,
                    serde_json::json!({ "run": child, "error": why }),
                ));
                if let Some(Outcome::Failed(failed)) = d.machine.fail_step(module, error, now) {
                    let events = d.take_pending();
                    return self
                        .fail_run(run, version, module, &failed, events)
                        .map(Some);
                }
                self.commit_going_on(d)
            }
            // (`Continued` does not come out of the loop above.)
            RunStatus::Waiting | RunStatus::Runnable | RunStatus::Continued => {
                let change = Change {
                    events: d.take_pending(),
                    status: RunStatus::Waiting,
                    output: None,
                    error: None,
                    waiting_on: Some(WaitingOn::Child { run: child }),
                    // The child's end wakes the parent at once; this later check covers a
                    // process that died between the two — the longer the child has been
                    // going, the later (a child that waits days for people does not wake
                    // its parent every few seconds).
                    wake_at: crate::history::earliest(
                        Some(
                            now + (now - record.created_at).clamp(CHILD_RECHECK_MS, MAX_RECHECK_MS),
                        ),
                        deadline,
                    ),
                };
                self.commit(run, version, Some(&d.machine), change)?;
                Ok(Some(RunStatus::Waiting))
            }
        }
    }

    /// Commits what is pending with the machine past the durable point; the run goes on.
    fn commit_going_on(&mut self, d: &mut Driving<'_>) -> Step {
        let events = d.take_pending();
        self.commit(d.run, d.version, Some(&d.machine), Change::runnable(events))?;
        Ok(None)
    }
}
