//! `flowrt serve`: the worker and the HTTP server in one process.
//!
//! The engine (a SQLite connection, the interpreter's caches) lives on one thread of its own,
//! the *engine thread*: it drives runs, fires timers and sends notifications between requests,
//! and runs each request's work as a job sent over a channel ([`EngineHandle::call`]). Tool
//! calls are made by the engine's pool of threads (`effects.rs`), never on the engine thread:
//! a slow tool delays only its own run, and each finished call comes back as a job. HTTP
//! is served by axum on a small tokio runtime, over connections bounded by `connections`
//! (time-outs, header size, a cap); a handler never touches the database itself.
//! One writer thread is what SQLite wants anyway, and a request sees the engine exactly as
//! the CLI does — the same rules, the same code.
//!
//! Shutdown (SIGTERM or SIGINT): the listener stops accepting, requests in flight finish,
//! then the engine thread finishes the job or step it is in (each commits atomically) and
//! exits. Runs that were not finished resume under the next process, as after a crash.

pub(crate) mod access;
mod api;
mod connections;
mod openapi;

pub use connections::Limits;

use crate::engine::Engine;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Work for the engine thread. It returns the delivery of its answer, which the engine
/// thread calls once what the work committed is durable (`true`), or could not be made so.
struct Job {
    work: Box<dyn FnOnce(&mut Engine) -> Reply + Send>,
    /// Whether the work may write (a request that changes something, a finished tool call):
    /// such work is committed as a group even alone, so that its steps share one sync.
    writes: bool,
}
type Delivery = Box<dyn FnOnce(bool) + Send>;

/// What a job gives back: its delivery now, or a second part to run once the runs the group
/// started were driven together (see [`serve_group`]).
enum Reply {
    Now(Delivery),
    Later(Box<dyn FnOnce(&mut Engine) -> Delivery + Send>),
}

/// The most requests committed together (see [`engine_loop`]).
const MAX_GROUP: usize = 256;

/// How often the engine thread looks for runs to drive when no request comes (timers that
/// fell due, runs another process started or left behind).
const IDLE_POLL: Duration = Duration::from_millis(50);

/// Sends jobs to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    jobs: mpsc::Sender<Job>,
}

impl EngineHandle {
    /// Runs `work` on the engine thread and returns its result; `None` when the engine
    /// thread has stopped. `writes`: whether the work may change anything (a read is not
    /// made to wait for a sync).
    pub async fn call<R: Send + 'static>(
        &self,
        writes: bool,
        work: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> Option<R> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            work: Box::new(move |engine| {
                let result = work(engine);
                Reply::Now(Box::new(move |durable| {
                    let _ = reply.send(durable.then_some(result));
                }))
            }),
            writes,
        };
        self.jobs.send(job).ok()?;
        answer.await.ok().flatten()
    }

    /// Like [`EngineHandle::call`] in two parts: `first` runs with the other jobs of its
    /// group (a run it starts with [`Engine::defer_drive`] is driven together with the runs
    /// the others start: one transaction per round of their steps), `then` once they were
    /// driven, with what `first` returned.
    pub async fn call_then<A: Send + 'static, R: Send + 'static>(
        &self,
        first: impl FnOnce(&mut Engine) -> A + Send + 'static,
        then: impl FnOnce(&mut Engine, A) -> R + Send + 'static,
    ) -> Option<R> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            work: Box::new(move |engine| {
                let started = first(engine);
                Reply::Later(Box::new(move |engine| {
                    let result = then(engine, started);
                    Box::new(move |durable| {
                        let _ = reply.send(durable.then_some(result));
                    })
                }))
            }),
            writes: true,
        };
        self.jobs.send(job).ok()?;
        answer.await.ok().flatten()
    }
}

/// The engine thread's loop: jobs as they come, and a worker's round when idle.
///
/// Requests that queue up while one is being served are served together as one *group
/// commit*: their commits share one sync to disk ([`Store::begin_group`]), and none is
/// answered before that sync. Before any effect outside the database (a tool call, a
/// notification) the engine syncs what came before, so grouping never lets a decision be
/// acted upon before it is on disk.
///
/// [`Store::begin_group`]: crate::store::GroupCommit::begin_group
fn engine_loop(mut engine: Engine, jobs: mpsc::Receiver<Job>) {
    let mut last_round = Instant::now() - IDLE_POLL;
    loop {
        let wait = IDLE_POLL.saturating_sub(last_round.elapsed());
        match jobs.recv_timeout(wait) {
            Ok(first) => {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match jobs.try_recv() {
                        Ok(job) => group.push(job),
                        Err(_) => break,
                    }
                }
                serve_group(&mut engine, group);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if last_round.elapsed() >= IDLE_POLL {
            if let Err(error) = engine.work_once() {
                tracing::error!(%error, "driving runs failed; retrying");
            }
            last_round = Instant::now();
        }
    }
}

/// The job a finished tool call sends: record it and drive its run on.
fn apply_completions(engine: &mut Engine) -> Delivery {
    // Recording it frees a thread of the pool: runs that waited for one go on at once.
    if let Err(error) = engine.apply_completions().and_then(|_| engine.work_once()) {
        tracing::error!(%error, "recording a finished tool call failed; its run resumes later");
    }
    Box::new(|_| {})
}

fn serve_group(engine: &mut Engine, group: Vec<Job>) {
    // One request that writes is a group of its own: its steps share one sync, and it is
    // answered after it (a workflow of ten in-process steps syncs once, not ten times).
    let grouped = (group.len() > 1 || group.iter().any(|job| job.writes))
        && match engine.store().begin_group() {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "group commit unavailable; committing one by one");
                false
            }
        };
    let replies: Vec<Reply> = group.into_iter().map(|job| (job.work)(engine)).collect();
    // The runs the group started go on together: one transaction per round of their steps.
    let started = engine.take_deferred_drives();
    if !started.is_empty()
        && let Err(error) = engine.drive_batch(&started)
    {
        tracing::error!(%error, "driving the started runs together failed; driving them one by one");
    }
    let deliveries: Vec<Delivery> = replies
        .into_iter()
        .map(|reply| match reply {
            Reply::Now(delivery) => delivery,
            Reply::Later(then) => then(engine),
        })
        .collect();
    let durable = !grouped
        || match engine.store().end_group() {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "a group commit could not be made durable");
                false
            }
        };
    for deliver in deliveries {
        deliver(durable);
    }
}

/// Serves until SIGTERM or SIGINT. `open` builds the engine on the engine thread (an engine
/// is not `Send`). `ready` is told the bound address (the port when `addr` asked for 0) and the
/// limits in force (the cap on connections may be lowered to fit the file-descriptor limit).
pub fn serve(
    addr: SocketAddr,
    limits: Limits,
    call_threads: usize,
    open: impl FnOnce() -> Result<Engine, String> + Send + 'static,
    ready: impl FnOnce(SocketAddr, Limits),
) -> Result<(), String> {
    let (jobs, receiver) = mpsc::channel::<Job>();
    let (opened, opened_result) = mpsc::channel::<Result<(), String>>();
    // Tool calls run on the engine's pool of threads; each one that finishes wakes the engine
    // thread with a job that records it. The pool's way in is closed at shutdown, so that
    // the channel closes once the last request's handle is gone.
    let wakes = std::sync::Arc::new(std::sync::Mutex::new(Some(jobs.clone())));
    let waker = {
        let wakes = std::sync::Arc::clone(&wakes);
        std::sync::Arc::new(move || {
            if let Ok(wakes) = wakes.lock()
                && let Some(jobs) = wakes.as_ref()
            {
                let _ = jobs.send(Job {
                    work: Box::new(|engine| Reply::Now(apply_completions(engine))),
                    writes: true,
                });
            }
        })
    };
    let engine_thread = std::thread::Builder::new()
        .name("flowrt-engine".into())
        .spawn(move || {
            let opened_engine = open().and_then(|mut engine| {
                engine
                    .run_effects_in_pool(call_threads, Some(waker))
                    .map_err(|e| e.to_string())?;
                Ok(engine)
            });
            match opened_engine {
                Ok(engine) => {
                    let _ = opened.send(Ok(()));
                    engine_loop(engine, receiver);
                }
                Err(why) => {
                    let _ = opened.send(Err(why));
                }
            }
        })
        .map_err(|e| format!("cannot start the engine thread: {e}"))?;
    opened_result
        .recv()
        .map_err(|_| "the engine thread stopped while opening".to_string())??;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
    let handle = EngineHandle { jobs };
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let bound = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        let limits = limits.fitted(connections::soft_fd_limit());
        ready(bound, limits);
        let app = api::router(api::App::new(handle));
        connections::serve(listener, app, limits, shutdown_signal()).await;
        Ok::<(), String>(())
    });
    // The router (and with it every handle) is gone: the engine thread sees the channel
    // closed after its current job and stops.
    drop(runtime);
    if let Ok(mut wakes) = wakes.lock() {
        *wakes = None;
    }
    engine_thread
        .join()
        .map_err(|_| "the engine thread panicked".to_string())?;
    served
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down: finishing requests and the current step");
}
