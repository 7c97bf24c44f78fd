//! The vocabulary of durable state, defined once: the kinds of history events a run records
//! and what a waiting run waits on.
//!
//! In: the text stored in the `events.kind` and `runs.waiting_on` columns. Out: the typed
//! values the engine, the gates, the stores, the server and the CLI match on. The stored text
//! is the one `spec/runtime.md` documents and audit hashes cover, so a name here never
//! changes; a new kind is appended.

use crate::store::Millis;
use std::fmt;

/// Every kind of history event. `as_str` is the stored and exported name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    RunStarted,
    RunCompleted,
    RunFailed,
    RunCancelled,
    StepStarted,
    StepCompleted,
    StepFailed,
    /// A tool call in flight at a crash, made again with the same idempotency key.
    StepResumed,
    /// A durable point reached after the deadline of an enclosing `timeout`.
    StepTimedOut,
    TimerSet,
    TimerFired,
    ClockRead,
    Audit,
    GateOpened,
    GateEscalated,
    GateDecided,
    GateTimedOut,
    /// An open gate abandoned because the `timeout` around it expired first.
    GateWithdrawn,
    /// One approval of a quorum that needs more.
    ApprovalRecorded,
    ChildStarted,
    ChildCompleted,
    ChildFailed,
    Notified,
    NotifyFailed,
    /// A request refused by the server or the CLI (who, what, why), kept in the run's trail.
    RequestRefused,
    /// The run ended with `continue as`: its successor run and the successor's input.
    RunContinued,
    /// A signal arrived (who sent it, its number and value); queued until the run takes it.
    SignalReceived,
    /// An `await signal` took the oldest queued signal of its name.
    SignalTaken,
    /// An open gate's approvers were notified again (`remind: D`).
    GateReminded,
    /// A `parallel` began: how many branches, at most how many at once.
    ParallelStarted,
    /// A branch of a `parallel` started as a child run (its index, run and name).
    BranchStarted,
    /// A branch ended with a value.
    BranchCompleted,
    /// A branch failed (or was cancelled from outside): its error.
    BranchFailed,
    /// Branches still going were cancelled because another failed: which, and why.
    BranchesCancelled,
    /// A `parallel` ended with every branch's result.
    ParallelCompleted,
    /// An undo block began (`compensate`, or a failure nothing caught): which, as what run.
    CompensationStarted,
    /// An undo block ran to its end.
    Compensated,
    /// An undo block failed: what it should have undone was not; an operator must look.
    CompensationFailed,
    /// Someone recorded that what made the run need attention (an undo block that failed)
    /// was handled: who, and a note of how.
    AttentionResolved,
}

impl EventKind {
    pub const ALL: [EventKind; 39] = [
        EventKind::RunStarted,
        EventKind::RunCompleted,
        EventKind::RunFailed,
        EventKind::RunCancelled,
        EventKind::StepStarted,
        EventKind::StepCompleted,
        EventKind::StepFailed,
        EventKind::StepResumed,
        EventKind::StepTimedOut,
        EventKind::TimerSet,
        EventKind::TimerFired,
        EventKind::ClockRead,
        EventKind::Audit,
        EventKind::GateOpened,
        EventKind::GateEscalated,
        EventKind::GateDecided,
        EventKind::GateTimedOut,
        EventKind::GateWithdrawn,
        EventKind::ApprovalRecorded,
        EventKind::ChildStarted,
        EventKind::ChildCompleted,
        EventKind::ChildFailed,
        EventKind::Notified,
        EventKind::NotifyFailed,
        EventKind::RequestRefused,
        EventKind::RunContinued,
        EventKind::SignalReceived,
        EventKind::SignalTaken,
        EventKind::GateReminded,
        EventKind::ParallelStarted,
        EventKind::BranchStarted,
        EventKind::BranchCompleted,
        EventKind::BranchFailed,
        EventKind::BranchesCancelled,
        EventKind::ParallelCompleted,
        EventKind::CompensationStarted,
        EventKind::Compensated,
        EventKind::CompensationFailed,
        EventKind::AttentionResolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RunStarted => "run_started",
            EventKind::RunCompleted => "run_completed",
            EventKind::RunFailed => "run_failed",
            EventKind::RunCancelled => "run_cancelled",
            EventKind::StepStarted => "step_started",
            EventKind::StepCompleted => "step_completed",
            EventKind::StepFailed => "step_failed",
            EventKind::StepResumed => "step_resumed",
            EventKind::StepTimedOut => "step_timed_out",
            EventKind::TimerSet => "timer_set",
            EventKind::TimerFired => "timer_fired",
            EventKind::ClockRead => "clock_read",
            EventKind::Audit => "audit",
            EventKind::GateOpened => "gate_opened",
            EventKind::GateEscalated => "gate_escalated",
            EventKind::GateDecided => "gate_decided",
            EventKind::GateTimedOut => "gate_timed_out",
            EventKind::GateWithdrawn => "gate_withdrawn",
            EventKind::ApprovalRecorded => "approval_recorded",
            EventKind::ChildStarted => "child_started",
            EventKind::ChildCompleted => "child_completed",
            EventKind::ChildFailed => "child_failed",
            EventKind::Notified => "notified",
            EventKind::NotifyFailed => "notify_failed",
            EventKind::RequestRefused => "request_refused",
            EventKind::RunContinued => "run_continued",
            EventKind::SignalReceived => "signal_received",
            EventKind::SignalTaken => "signal_taken",
            EventKind::GateReminded => "gate_reminded",
            EventKind::ParallelStarted => "parallel_started",
            EventKind::BranchStarted => "branch_started",
            EventKind::BranchCompleted => "branch_completed",
            EventKind::BranchFailed => "branch_failed",
            EventKind::BranchesCancelled => "branches_cancelled",
            EventKind::ParallelCompleted => "parallel_completed",
            EventKind::CompensationStarted => "compensation_started",
            EventKind::Compensated => "compensated",
            EventKind::CompensationFailed => "compensation_failed",
            EventKind::AttentionResolved => "attention_resolved",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// A failure of the run or of one of its steps: a warning in logs and traces.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            EventKind::StepFailed
                | EventKind::StepTimedOut
                | EventKind::RunFailed
                | EventKind::GateTimedOut
                | EventKind::BranchFailed
                | EventKind::CompensationFailed
        )
    }
}

/// Why an operator must look at a run, from the events of one step: each undo block that
/// failed (`compensation_failed`), and its `on cancel` block if that failed (a
/// `child_failed` of its `w#cancel`), with the error. `None` when none did.
pub fn attention_of<'e>(
    events: impl IntoIterator<Item = &'e crate::store::NewEvent>,
) -> Option<String> {
    let reasons: Vec<String> = events
        .into_iter()
        .filter_map(|e| {
            let step = e.step.as_deref().unwrap_or("?");
            let what = match e.kind {
                EventKind::CompensationFailed => format!("undo `{step}`"),
                EventKind::ChildFailed if step.ends_with(ON_CANCEL_SUFFIX) => format!(
                    "`on cancel` of `{}`",
                    step.trim_end_matches(ON_CANCEL_SUFFIX)
                ),
                _ => return None,
            };
            let error = serde_json::from_str::<serde_json::Value>(&e.data)
                .ok()
                .and_then(|d| d.get("error").and_then(|v| v.as_str()).map(str::to_string))
                .unwrap_or_else(|| "it did not complete".into());
            Some(format!("{what} failed: {error}"))
        })
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

pub use flow_compiler::bytecode::ON_CANCEL_SUFFIX;

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        EventKind::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown history event kind `{text}`")))
    }
}

/// Approval or input: the two kinds of gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GateKind {
    Approval,
    Input,
}

impl GateKind {
    pub fn word(self) -> &'static str {
        match self {
            GateKind::Approval => "approval",
            GateKind::Input => "input",
        }
    }
}

/// What a waiting run waits on. Stored as text in `runs.waiting_on` (`timer`,
/// `approval NAME`, `input NAME`, `child RUN`, `tool NAME`, `signal NAME`), shown as such by
/// the API and the CLI.
///
/// A wait may also end at the deadline of an enclosing `timeout`: that deadline is part of
/// the run's checkpoint, and the run's wake-up time is the earlier of the two, so the first
/// to fire wins (see `Engine::resume_waiting`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitingOn {
    /// A `sleep`, or a `retry` back-off.
    Timer,
    /// A person: an approval or an input request, by its name.
    Gate { kind: GateKind, name: String },
    /// A child workflow's run.
    Child { run: String },
    /// A tool call being made by the engine's pool of threads (the run stays claimed by the
    /// process making it; if that process dies, its lease runs out and another resumes it).
    Tool { name: String },
    /// A signal from outside (`await signal NAME`).
    Signal { name: String },
    /// The first of a `select`'s arms: one of these signals, the time `until` (its earliest
    /// `after`), or the end of one of its `branches` still open (the gates and calls its
    /// arms wait for, each a child run), stored as
    /// `select a,b until 2026-12-31T00:00:00.000Z branches 2`.
    Select {
        signals: Vec<String>,
        until: Option<Millis>,
        branches: u64,
    },
    /// The branches of a `parallel` (child runs `RUN.STEP.0`, `RUN.STEP.1`, …): how many
    /// have not ended, of how many. Stored as `branches 3 of 10`.
    Branches { open: u64, total: u64 },
}

impl WaitingOn {
    pub fn gate(kind: GateKind, name: impl Into<String>) -> WaitingOn {
        WaitingOn::Gate {
            kind,
            name: name.into(),
        }
    }

    pub fn parse(text: &str) -> Option<WaitingOn> {
        if text == "timer" {
            return Some(WaitingOn::Timer);
        }
        let (word, rest) = text.split_once(' ')?;
        match word {
            "approval" => Some(WaitingOn::gate(GateKind::Approval, rest)),
            "input" => Some(WaitingOn::gate(GateKind::Input, rest)),
            "child" => Some(WaitingOn::Child {
                run: rest.to_string(),
            }),
            "tool" => Some(WaitingOn::Tool {
                name: rest.to_string(),
            }),
            "signal" => Some(WaitingOn::Signal {
                name: rest.to_string(),
            }),
            "select" => {
                // ` branches N` at the end (a signal may be named `branches` too).
                let suffix = rest
                    .rsplit_once(" branches ")
                    .or_else(|| rest.strip_prefix("branches ").map(|n| ("", n)))
                    .and_then(|(head, n)| Some((head, n.parse::<u64>().ok()?)));
                let (rest, branches) = suffix.unwrap_or((rest, 0));
                let (names, until) = match rest.split_once("until ") {
                    Some((names, until)) => (
                        names.trim_end(),
                        Some(flow_stdlib::time::parse_time(until)?),
                    ),
                    None => (rest, None),
                };
                let signals = names
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect();
                Some(WaitingOn::Select {
                    signals,
                    until,
                    branches,
                })
            }
            "branches" => {
                let (open, total) = rest.split_once(" of ")?;
                Some(WaitingOn::Branches {
                    open: open.parse().ok()?,
                    total: total.parse().ok()?,
                })
            }
            _ => None,
        }
    }

    /// The signals the wait would end with.
    pub fn signals(&self) -> &[String] {
        match self {
            WaitingOn::Signal { name } => std::slice::from_ref(name),
            WaitingOn::Select { signals, .. } => signals,
            _ => &[],
        }
    }

    /// The gate waited on, if the wait is for a person.
    pub fn as_gate(&self) -> Option<(GateKind, &str)> {
        match self {
            WaitingOn::Gate { kind, name } => Some((*kind, name)),
            _ => None,
        }
    }
}

impl fmt::Display for WaitingOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitingOn::Timer => f.write_str("timer"),
            WaitingOn::Gate { kind, name } => write!(f, "{} {name}", kind.word()),
            WaitingOn::Child { run } => write!(f, "child {run}"),
            WaitingOn::Tool { name } => write!(f, "tool {name}"),
            WaitingOn::Signal { name } => write!(f, "signal {name}"),
            WaitingOn::Select {
                signals,
                until,
                branches,
            } => {
                f.write_str("select")?;
                if !signals.is_empty() {
                    write!(f, " {}", signals.join(","))?;
                }
                if let Some(at) = until {
                    write!(f, " until {}", flow_stdlib::time::format_time(*at))?;
                }
                match branches {
                    0 => Ok(()),
                    n => write!(f, " branches {n}"),
                }
            }
            WaitingOn::Branches { open, total } => write!(f, "branches {open} of {total}"),
        }
    }
}

/// The earlier of two optional instants.
pub fn earliest(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_stored_name() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("step_exploded"), None);
    }

    #[test]
    fn waits_read_back_from_their_stored_text() {
        for wait in [
            WaitingOn::Timer,
            WaitingOn::gate(GateKind::Approval, "sign off"),
            WaitingOn::gate(GateKind::Input, "amount"),
            WaitingOn::Child {
                run: "r-1.4".into(),
            },
            WaitingOn::Tool {
                name: "lookup".into(),
            },
            WaitingOn::Signal {
                name: "cancel".into(),
            },
            WaitingOn::Select {
                signals: vec!["cancel".into(), "pause".into()],
                until: Some(1_767_225_600_000),
                branches: 0,
            },
            WaitingOn::Select {
                signals: vec!["cancel".into()],
                until: None,
                branches: 0,
            },
            WaitingOn::Select {
                signals: Vec::new(),
                until: Some(1_767_225_600_000),
                branches: 2,
            },
            WaitingOn::Select {
                signals: vec!["stop".into()],
                until: None,
                branches: 1,
            },
            WaitingOn::Select {
                signals: vec!["branches".into()],
                until: Some(1_767_225_600_000),
                branches: 0,
            },
            WaitingOn::Branches { open: 3, total: 10 },
            WaitingOn::Select {
                signals: vec![],
                until: Some(5),
                branches: 0,
            },
        ] {
            assert_eq!(WaitingOn::parse(&wait.to_string()), Some(wait));
        }
        assert_eq!(WaitingOn::parse("approval"), None);
        assert_eq!(WaitingOn::parse("sigil x"), None);
    }
}
