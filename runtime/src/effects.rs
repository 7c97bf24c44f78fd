//! Effects off the engine thread: tool calls to the outside world and attempts to deliver
//! notifications, performed by a small pool of threads while the engine goes on with other
//! runs and requests.
//!
//! In: an [`Invocation`] — everything one call needs (its binding resolved against the
//! configuration, its input with secrets revealed, its idempotency key and time limit), built
//! on the engine thread after the call's `step_started` is committed. Out: a [`Completion`]
//! (the raw answer and what the history records about the call), which the engine validates
//! against the tool's type, scrubs of secrets and commits like any step.
//!
//! [`perform`] is the one way a binding is called: the engine calls it inline when it has no
//! pool (`flowrt run`, `flowc test`), the pool's threads call it otherwise. Nothing here
//! touches the store: a crash while a call is in flight leaves its `step_started` as the last
//! record, and whoever resumes the run makes the call again with the same key.

use crate::clock::Clock;
use crate::config::{LlmConfig, ToolConfig};
use crate::store::Millis;
use crate::tools::{self, CallContext, Called};
use std::sync::{Arc, Mutex, mpsc};

/// One call to make, with everything resolved: a thread of the pool needs nothing else.
#[derive(Clone, Debug)]
pub(crate) enum ToolCall {
    Exec {
        command: String,
        input: String,
        timeout_ms: Option<u64>,
    },
    Http {
        method: String,
        path: String,
        config: Option<ToolConfig>,
        input: serde_json::Value,
    },
    Llm {
        model: String,
        prompt: String,
        config: Option<LlmConfig>,
        input: serde_json::Value,
        schema: serde_json::Value,
    },
}

/// Makes one call. The JSON that comes back is not yet checked against the tool's type.
pub(crate) fn perform(tool: &str, call: &ToolCall, context: &CallContext) -> Called {
    match call {
        ToolCall::Exec {
            command,
            input,
            timeout_ms,
        } => Called {
            result: tools::exec::call(tool, command, input, context, *timeout_ms).and_then(
                |text| {
                    serde_json::from_str(text.trim())
                        .map_err(|e| tools::exec::not_json(tool, &e.to_string(), &text))
                },
            ),
            record: serde_json::Map::new(),
        },
        ToolCall::Http {
            method,
            path,
            config,
            input,
        } => tools::http::call(tool, method, path, config.as_ref(), input, context),
        ToolCall::Llm {
            model,
            prompt,
            config,
            input,
            schema,
        } => tools::llm::call(tool, model, prompt, config.as_ref(), input, schema, context),
    }
}

/// What the pool does: a tool call, or one attempt to deliver a row of the notification
/// outbox to its hook.
pub(crate) enum Work {
    Call(Box<Invocation>),
    Announce(Box<Announcement>),
}

/// What comes back.
pub(crate) enum Done {
    Call(Completion),
    Announced(Announced),
}

/// One attempt at a claimed row of the outbox.
pub(crate) struct Announcement {
    pub(crate) row: crate::store::OutboxRow,
    pub(crate) hook: crate::config::NotifyHook,
    pub(crate) timeout: std::time::Duration,
}

/// The attempt made: `Ok` when the hook took the message, else why not.
pub(crate) struct Announced {
    pub(crate) row: crate::store::OutboxRow,
    pub(crate) outcome: Result<(), String>,
}

/// A call handed to the pool.
pub(crate) struct Invocation {
    pub(crate) run: String,
    /// The run's step number at the call: the completion is applied only at that step.
    pub(crate) step: u64,
    pub(crate) tool: String,
    pub(crate) call: ToolCall,
    pub(crate) context: CallContext,
    /// The call's `tool` span, opened on the engine thread inside the step's span.
    pub(crate) span: tracing::Span,
    /// The step's span, which the completion goes on in.
    pub(crate) step_span: tracing::Span,
}

/// A call the pool finished.
pub(crate) struct Completion {
    pub(crate) run: String,
    pub(crate) step: u64,
    pub(crate) called: Called,
    pub(crate) started: Millis,
    pub(crate) finished: Millis,
    pub(crate) step_span: tracing::Span,
}

/// Called on a pool thread after a completion is queued, so that whoever drives the engine
/// (the server's engine thread) can come and apply it at once.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// The pool: `threads` threads taking invocations from one queue.
pub(crate) struct Executor {
    work: mpsc::Sender<Work>,
    done: mpsc::Receiver<Done>,
    threads: usize,
}

impl Executor {
    pub(crate) fn start(
        threads: usize,
        waker: Option<Waker>,
        clock: &Clock,
    ) -> Result<Executor, String> {
        let (work, queue) = mpsc::channel::<Work>();
        let (done, finished) = mpsc::channel::<Done>();
        let queue = Arc::new(Mutex::new(queue));
        // The threads are not joined: when the engine goes, the queue closes and each thread
        // ends after the call it is in (within its time limit); what that call returns is
        // dropped, and its run resumes from its `step_started` under the next process, as
        // after a crash.
        for n in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            let done = done.clone();
            let waker = waker.clone();
            let clock = clock.clone();
            std::thread::Builder::new()
                .name(format!("flowrt-calls-{n}"))
                .spawn(move || serve_calls(&queue, &done, waker.as_deref(), &clock))
                .map_err(|e| format!("cannot start a thread for tool calls: {e}"))?;
        }
        Ok(Executor {
            work,
            done: finished,
            threads: threads.max(1),
        })
    }

    /// Queues a call. False when the pool has stopped (the call is then made by whoever
    /// resumes the run).
    pub(crate) fn submit(&self, work: Work) -> bool {
        self.work.send(work).is_ok()
    }

    /// How many calls the pool makes at once.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// What the pool finished, without waiting.
    pub(crate) fn arrived(&self) -> Vec<Done> {
        self.done.try_iter().collect()
    }

    /// Waits up to `timeout` for one thing to finish.
    pub(crate) fn wait(&self, timeout: std::time::Duration) -> Option<Done> {
        self.done.recv_timeout(timeout).ok()
    }
}

fn serve_calls(
    queue: &Mutex<mpsc::Receiver<Work>>,
    done: &mpsc::Sender<Done>,
    waker: Option<&(dyn Fn() + Send + Sync)>,
    clock: &Clock,
) {
    loop {
        let next = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let finished = match next {
            Ok(Work::Call(invocation)) => Done::Call(call(*invocation, clock)),
            Ok(Work::Announce(announcement)) => Done::Announced(Announced {
                outcome: crate::notify::attempt(
                    &announcement.hook,
                    &announcement.row.message,
                    announcement.timeout,
                ),
                row: announcement.row,
            }),
            Err(_) => return,
        };
        if done.send(finished).is_err() {
            return;
        }
        if let Some(wake) = waker {
            wake();
        }
    }
}

fn call(invocation: Invocation, clock: &Clock) -> Completion {
    let started = clock.now();
    // A call that panics (a defect) still comes back, as a failed call: otherwise its run
    // would stay claimed by this process, waiting on an answer that never comes.
    let called = invocation.span.in_scope(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            perform(&invocation.tool, &invocation.call, &invocation.context)
        }))
        .unwrap_or_else(|_| Called {
            result: Err(tools::ToolFailure::tool_error(
                format!(
                    "tool `{}`: the call failed inside flowrt (a defect; the log has details)",
                    invocation.tool
                ),
                false,
            )),
            record: serde_json::Map::new(),
        })
    });
    if let Err(failure) = &called.result {
        crate::telemetry::mark_failed(&invocation.span, failure.kind);
    }
    drop(invocation.span);
    Completion {
        run: invocation.run,
        step: invocation.step,
        called,
        started,
        finished: clock.now(),
        step_span: invocation.step_span,
    }
}
