//! Announcing gates: the notification of a gate that opens or escalates, and the draining of
//! the outbox that holds it until every hook has taken it.
//!
//! In: the gate's index row and the run's machine when it opens or escalates; then the rows of
//! the outbox (`store::outbox`) as they fall due. Out: a [`Notification`] that goes into the
//! commit of the gate's event (so it exists exactly when the event does), one attempt per
//! claimed row — on the effects pool under `flowrt worker` and `flowrt serve`, inline for the
//! one-shot commands — and, once a row's outcome is known, its `notified` / `notify_failed`
//! event, committed with the row's deletion if the run still waits at that opening of the
//! gate. A failed attempt with attempts left goes back to the outbox, due after the policy's
//! backoff. A process that dies mid-attempt leaves its row claimed; the next process takes it
//! once the claim runs out and sends it again: delivery is at least once, and the message's
//! `id` is what receivers drop duplicates by.

use crate::config::NotifyHook;
use crate::effects::{Announcement, Work};
use crate::engine::{Engine, EngineResult, event, stamped};
use crate::gates::GateKind;
use crate::notify::{self, RetryPolicy};
use crate::store::{
    EventKind, GateRow, Millis, Notification, OutboxChange, OutboxRow, RunStatus, StepCommit,
};
use crate::tools::Secrets;
use crate::vm::{Machine, snapshot};

/// How often an engine with a pool looks at the outbox when it wrote nothing itself: rows
/// other processes left (after a crash) and retries fall due.
const LOOK_EVERY_MS: Millis = 100;

/// What an engine keeps about the outbox.
#[derive(Default)]
pub(crate) struct OutboxState {
    /// The notifications this engine wrote and has not seen through (the one-shot commands
    /// deliver their own before they exit).
    own: Vec<String>,
    /// When to look at the outbox next (with a pool).
    look_at: Millis,
}

/// A fresh notification id: `n` and 32 hex digits from the OS's random source.
fn notification_id() -> String {
    let mut bytes = [0u8; 16];
    // Without a random source, the time and the process make it unique enough.
    if getrandom::fill(&mut bytes).is_err() {
        let seed =
            (crate::clock::Clock::system().now() as u128) << 32 | u128::from(std::process::id());
        bytes = seed.to_le_bytes();
    }
    let hex = flow_stdlib::hex::encode(&bytes);
    format!("n{hex}")
}

impl Engine {
    /// The notification of `gate` opening or escalating (`what`), for the hooks of
    /// `flow.toml`; `None` when there are none. Its message is redacted of every secret the
    /// run holds and the configuration resolves, since it is stored.
    pub(crate) fn notification(
        &self,
        gate: &GateRow,
        what: EventKind,
        approvers: &str,
        machine: &Machine,
        now: Millis,
    ) -> Option<Notification> {
        if self.config.notify.is_empty() {
            return None;
        }
        let id = notification_id();
        let (run, name) = (&gate.run, &gate.name);
        let command = match gate.kind {
            GateKind::Approval => format!("flowrt approve {run} {name} --as USER"),
            GateKind::Input => format!("flowrt input {run} {name} --as USER --value JSON"),
        };
        let mut message = serde_json::json!({
            "id": id,
            "event": what,
            "run": run,
            "workflow": gate.workflow,
            "version": gate.version,
            "gate": name,
            "kind": gate.kind.word(),
            "prompt": gate.prompt,
            "context": gate.context,
            "approvers": approvers,
            "deadline": gate.deadline.map(crate::vm::value::format_time),
            "command": command,
        });
        self.secrets(Some(machine)).redact_json(&mut message);
        Some(Notification {
            id,
            run: run.clone(),
            gate: name.clone(),
            opened_at: gate.opened_at,
            what,
            message,
            hooks: self.config.notify.iter().map(ToString::to_string).collect(),
            created_at: now,
        })
    }

    /// What is redacted from what a notification stores and records: the secrets `machine`
    /// holds, and every secret the configuration resolves.
    fn secrets(&self, machine: Option<&Machine>) -> Secrets {
        let mut secrets = Secrets::of_config(&self.config);
        if let Some(machine) = machine {
            secrets.extend(&Secrets::held_by(machine));
        }
        secrets
    }

    /// Notes a notification this engine committed: it is due at once.
    pub(crate) fn wrote_notification(&mut self, id: String) {
        self.outbox.own.push(id);
        self.outbox.look_at = 0;
    }

    /// Delivers what the outbox holds. With a pool (`flowrt worker`, `flowrt serve`): hands
    /// every row that is due to the pool, as far as it has free threads (the outcomes are
    /// taken in [`Engine::apply_completions`]). Without one (the one-shot commands): delivers
    /// the notifications this engine wrote, inline, retries included, for at most the retry
    /// policy's worst case; what is left then is delivered by a worker.
    pub fn flush_notifications(&mut self) -> EngineResult<()> {
        if self.has_pool() {
            self.dispatch_notifications()
        } else {
            self.settle_own_notifications()
        }
    }

    /// The claim an attempt holds on its row: the run lease, and the attempt's time limit.
    fn outbox_lease(&self) -> Millis {
        self.lease_ms + RetryPolicy::default().timeout.as_millis() as Millis
    }

    fn dispatch_notifications(&mut self) -> EngineResult<()> {
        let now = self.clock.now();
        let free = self.free_threads();
        if now < self.outbox.look_at || free == 0 {
            return Ok(());
        }
        let rows = self.store.claim_notifications(
            &self.owner,
            now + self.outbox_lease(),
            now,
            free,
            None,
        )?;
        if rows.len() < free {
            self.outbox.look_at = now + LOOK_EVERY_MS;
        }
        if !rows.is_empty() {
            // What a notification announces is on disk before anyone hears of it.
            self.store.flush()?;
        }
        self.outbox.own.clear();
        for row in rows {
            let Some(hook) = self.hook_for(&row)? else {
                continue;
            };
            let timeout = RetryPolicy::default().timeout;
            let work = Work::Announce(Box::new(Announcement { row, hook, timeout }));
            // A pool that stopped: the row stays claimed, and is taken over after its lease.
            if self.submit(work) {
                self.announcing += 1;
            }
        }
        Ok(())
    }

    fn settle_own_notifications(&mut self) -> EngineResult<()> {
        if self.outbox.own.is_empty() {
            return Ok(());
        }
        self.store.flush()?;
        let policy = RetryPolicy::default();
        let give_up = self.clock.now() + policy.worst_case().as_millis() as Millis;
        loop {
            let now = self.clock.now();
            let mut claimed = Vec::new();
            for id in self.outbox.own.clone() {
                claimed.extend(self.store.claim_notifications(
                    &self.owner,
                    now + self.outbox_lease(),
                    now,
                    usize::MAX,
                    Some(&id),
                )?);
            }
            if !claimed.is_empty() {
                self.attempt_inline(claimed)?;
                continue;
            }
            // Nothing of ours is due: wait for its next retry, if it comes in time. A row
            // another process holds is that process's to deliver.
            let mut next: Option<Millis> = None;
            let mut left = Vec::new();
            for id in std::mem::take(&mut self.outbox.own) {
                if let Some(at) = self.store.next_notification(Some(&id))? {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    left.push(id);
                }
            }
            match next {
                Some(at) if at <= give_up => {
                    self.outbox.own = left;
                    let wait = (at - self.clock.now()).max(1) as u64;
                    std::thread::sleep(std::time::Duration::from_millis(wait));
                }
                _ => return Ok(()),
            }
        }
    }

    /// One attempt for each claimed row, in parallel, on this thread's time.
    fn attempt_inline(&mut self, rows: Vec<OutboxRow>) -> EngineResult<()> {
        let mut jobs = Vec::new();
        for row in rows {
            if let Some(hook) = self.hook_for(&row)? {
                jobs.push((row, hook));
            }
        }
        let outcomes = {
            let pairs: Vec<(&NotifyHook, &serde_json::Value)> = jobs
                .iter()
                .map(|(row, hook)| (hook, &row.message))
                .collect();
            notify::attempt_all(&pairs, RetryPolicy::default().timeout)
        };
        for ((row, _), outcome) in jobs.into_iter().zip(outcomes) {
            self.finish_attempt(row, outcome)?;
        }
        Ok(())
    }

    /// The hook to attempt a claimed row on, or `None` when there is nothing to attempt: a
    /// test double took the message, the gate is no longer open at that opening (the row is
    /// dropped unsent), or the hook is no longer in `flow.toml` (recorded as failed).
    fn hook_for(&mut self, row: &OutboxRow) -> EngineResult<Option<NotifyHook>> {
        if let Some(double) = &self.notify_double {
            double.announce(&row.message);
            self.store.drop_notification(&row.key())?;
            return Ok(None);
        }
        if !self.still_open(row)? {
            self.store.drop_notification(&row.key())?;
            return Ok(None);
        }
        match self
            .config
            .notify
            .iter()
            .find(|h| h.to_string() == row.hook)
        {
            Some(hook) => Ok(Some(hook.clone())),
            None => {
                let why = "the hook is no longer in flow.toml".to_string();
                self.record_delivery(row.clone(), Err(why))?;
                Ok(None)
            }
        }
    }

    /// Whether the run still waits at the opening of the gate the row announces.
    fn still_open(&mut self, row: &OutboxRow) -> EngineResult<bool> {
        Ok(self
            .store
            .gate(&row.run, &row.gate)?
            .is_some_and(|gate| gate.opened_at == row.opened_at))
    }

    /// What an attempt's outcome does to its row: a failure with attempts left is retried
    /// after the backoff; otherwise the delivery, or its failure, is recorded.
    pub(crate) fn finish_attempt(
        &mut self,
        row: OutboxRow,
        outcome: Result<(), String>,
    ) -> EngineResult<()> {
        if outcome.is_err() {
            let attempts = u32::try_from(row.attempts).unwrap_or(u32::MAX);
            if let Some(wait) = RetryPolicy::default().after_failure(attempts) {
                let at = self.clock.now() + wait.as_millis() as Millis;
                self.store.retry_notification(&row.key(), &self.owner, at)?;
                self.outbox.look_at = self.outbox.look_at.min(at);
                return Ok(());
            }
        }
        self.record_delivery(row, outcome)
    }

    /// Records how the hook took the row's message, in the commit that deletes the row, if
    /// the run still waits at that opening of the gate; else only deletes the row.
    fn record_delivery(&mut self, row: OutboxRow, outcome: Result<(), String>) -> EngineResult<()> {
        // Checked before claiming too: a run that moved on is never claimed for this (it may
        // be one this engine is driving).
        if !self.still_open(&row)? || !self.claim_patiently(&row.run)? {
            // Finished, or busy for long: nothing to record on it.
            self.store.drop_notification(&row.key())?;
            return Ok(());
        }
        let recorded = self.commit_delivery(&row, outcome);
        self.release(&row.run)?;
        recorded
    }

    fn commit_delivery(
        &mut self,
        row: &OutboxRow,
        outcome: Result<(), String>,
    ) -> EngineResult<()> {
        let record = self.store.run(&row.run)?;
        let Some(record) = record.filter(|r| r.status == RunStatus::Waiting) else {
            self.store.drop_notification(&row.key())?;
            return Ok(());
        };
        if !self.still_open(row)? {
            self.store.drop_notification(&row.key())?;
            return Ok(());
        }
        let error = match &outcome {
            Ok(()) => None,
            Err(why) => Some(self.redacted_for_run(&row.run, why)?),
        };
        let kind = if outcome.is_ok() {
            EventKind::Notified
        } else {
            EventKind::NotifyFailed
        };
        let recorded = event(
            kind,
            Some(row.gate.clone()),
            Some(row.attempts),
            None,
            serde_json::json!({
                "hook": row.hook,
                "attempts": row.attempts,
                "error": error,
                "for": row.what,
                "id": row.id,
            }),
        );
        let commit = StepCommit {
            run: row.run.clone(),
            owner: self.owner.clone(),
            checkpoint: None,
            events: stamped(vec![recorded], self.clock.now()),
            status: RunStatus::Waiting,
            output: None,
            error: None,
            waiting_on: record.waiting_on,
            wake_at: record.wake_at,
            now: self.clock.now(),
            gate: None,
            outbox: OutboxChange {
                add: None,
                done: vec![row.key()],
            },
            takes_signal: None,
        };
        self.store.commit(std::slice::from_ref(&commit))?;
        crate::telemetry::recorded(&row.run, &commit.events);
        Ok(())
    }

    /// A hook's error with every secret redacted that the run holds now (read from its
    /// checkpoint: the process that opened the gate may be gone) or the configuration
    /// resolves.
    fn redacted_for_run(&mut self, run: &str, error: &str) -> EngineResult<String> {
        let machine = match self.store.load(run)? {
            Some((_, saved)) => snapshot::decode(saved.format_version, &saved.state).ok(),
            None => None,
        };
        match machine {
            Some(machine) => Ok(self.secrets(Some(&machine)).redact(error)),
            // What it holds cannot be known: show none of what the hook said.
            None => Ok(crate::tools::REDACTED.to_string()),
        }
    }

    /// When the next row of the outbox can be claimed, if that is within `within_ms`: for
    /// `flowrt worker --once`, which ends only when what it can deliver soon is delivered.
    pub fn next_notification_within(&mut self, within_ms: Millis) -> EngineResult<Option<Millis>> {
        let now = self.clock.now();
        Ok(match self.store.next_notification(None)? {
            Some(at) if at <= now + within_ms => {
                self.outbox.look_at = self.outbox.look_at.min(at);
                Some((at - now).max(0))
            }
            _ => None,
        })
    }
}
