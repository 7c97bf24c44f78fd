//! The HTTP/1 connections of `flowrt serve`, bounded so that hostile or broken clients cannot
//! take the server down (spec/server.md, "Limits"). In: the listener, the router, the limits
//! and the shutdown signal; out: served connections until the signal, then a graceful stop.
//!
//! - A request's headers must arrive within the header time-out after the server starts
//!   waiting for them (on a new connection, or between requests on a kept-alive one, so this is
//!   also the idle time-out), and its body within the same time after them.
//! - Headers (with the request line) are at most [`MAX_HEADER_BYTES`]: 431 beyond.
//! - At most `max_connections` are open. One more arriving closes the open connection that
//!   has been idle longest (no request being handled) to make room; when every one is busy, the
//!   newcomer gets a 503 and is closed. The cap is lowered below the process's file-descriptor
//!   limit when that is lower, so that accepting never fails for want of descriptors.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// The most bytes of a request's line and headers.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The most bytes of a request's body.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// File descriptors kept for the engine (database files, tool processes, notifications) when
/// the cap on connections is lowered to fit the process's limit.
const RESERVED_FDS: u64 = 64;

/// How many connections, and how long to wait for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The cap on connections, lowered to leave [`RESERVED_FDS`] of the process's limit of open
    /// files (`soft_fd_limit`) free.
    pub fn fitted(self, soft_fd_limit: Option<u64>) -> Limits {
        let Some(limit) = soft_fd_limit else {
            return self;
        };
        let room = usize::try_from(limit.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX);
        Limits {
            max_connections: self.max_connections.min(room),
            ..self
        }
    }
}

/// The soft limit of open files of this process (Linux: `/proc/self/limits`), when known.
pub fn soft_fd_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One open connection, as the accept loop sees it.
struct Conn {
    /// Requests being handled on it now (their body read, their handler running).
    busy: AtomicUsize,
    /// Milliseconds since the server started when it was opened or last finished a request.
    last_active: AtomicU64,
    /// Told to close (to make room for a newcomer).
    evict: Notify,
}

/// The open connections by number.
struct Registry {
    started: Instant,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Registers a new connection, first evicting the longest idle one when `cap` are open.
    /// `None` when all are busy: the newcomer is to be turned away.
    fn admit(&self, id: u64, cap: usize) -> Option<Arc<Conn>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= cap {
            let idle = open
                .iter()
                .filter(|(_, c)| c.busy.load(Ordering::SeqCst) == 0)
                .min_by_key(|(_, c)| c.last_active.load(Ordering::SeqCst))
                .map(|(id, _)| *id)?;
            if let Some(evicted) = open.remove(&idle) {
                evicted.evict.notify_one();
            }
        }
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now()),
            evict: Notify::new(),
        });
        open.insert(id, Arc::clone(&conn));
        Some(conn)
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// Serves connections from `listener` until `shutdown` completes, then lets the requests in
/// flight finish and returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let registry = Arc::new(Registry {
        started: Instant::now(),
        open: Mutex::new(HashMap::new()),
    });
    // Dropping the sender tells the connections to finish; `done` closes when they all have.
    let (stop, stopping) = watch::channel(());
    let (done, finished) = watch::channel(());
    let mut next_id: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of descriptors or a connection reset before it was accepted: wait a
                    // moment rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        next_id += 1;
        let Some(conn) = registry.admit(next_id, limits.max_connections) else {
            tokio::spawn(turn_away(stream));
            continue;
        };
        let connection = Connection {
            id: next_id,
            conn,
            registry: Arc::clone(&registry),
            router: router.clone(),
            remote,
            limits,
        };
        tokio::spawn(connection.run(stream, stopping.clone(), finished.clone()));
    }
    drop(listener);
    drop(stop);
    drop(finished);
    done.closed().await;
}

/// A connection being served.
struct Connection {
    id: u64,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    router: Router,
    remote: SocketAddr,
    limits: Limits,
}

impl Connection {
    async fn run(
        self,
        stream: TcpStream,
        mut stopping: watch::Receiver<()>,
        _finished: watch::Receiver<()>,
    ) {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .max_header_size(MAX_HEADER_BYTES);
        let service = Handler {
            conn: Arc::clone(&self.conn),
            registry: Arc::clone(&self.registry),
            router: TowerToHyperService::new(self.router.clone()),
            remote: self.remote,
            body_timeout: self.limits.header_timeout,
        };
        let served = http.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(served);
        let mut graceful = false;
        loop {
            tokio::select! {
                result = served.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, remote = %self.remote, "connection ended");
                    }
                    break;
                }
                _ = self.conn.evict.notified() => {
                    tracing::debug!(remote = %self.remote, "closing the longest idle connection to admit another");
                    break;
                }
                _ = stopping.changed(), if !graceful => {
                    served.as_mut().graceful_shutdown();
                    graceful = true;
                }
            }
        }
        self.registry.remove(self.id);
    }
}

/// Answers a connection with a 503 when every open one is busy, and closes it.
async fn turn_away(mut stream: TcpStream) {
    let body = serde_json::json!({ "error": {
        "code": "unavailable",
        "message": "the server has as many connections as it takes, all busy; try again",
    } })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
}

/// The service of one connection: reads the body (within the time-out), marks the connection
/// busy while the router handles the request, and tells handlers the client's address.
#[derive(Clone)]
struct Handler {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    router: TowerToHyperService<Router>,
    remote: SocketAddr,
    body_timeout: Duration,
}

/// Marks a connection busy while it lives.
struct Busy {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl Busy {
    fn new(conn: &Arc<Conn>, registry: &Arc<Registry>) -> Busy {
        conn.busy.fetch_add(1, Ordering::SeqCst);
        Busy {
            conn: Arc::clone(conn),
            registry: Arc::clone(registry),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .last_active
            .store(self.registry.now(), Ordering::SeqCst);
        self.conn.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service<Request<Incoming>> for Handler {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let handler = self.clone();
        Box::pin(async move { Ok(handler.handle(request).await) })
    }
}

impl Handler {
    async fn handle(self, request: Request<Incoming>) -> Response {
        let (mut parts, body) = request.into_parts();
        if let Some(length) = parts
            .headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            && length > MAX_BODY_BYTES
        {
            return super::api::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body has {length} bytes; at most {MAX_BODY_BYTES} are taken"),
            );
        }
        let read = axum::body::to_bytes(Body::new(body), MAX_BODY_BYTES);
        let bytes: Bytes = match tokio::time::timeout(self.body_timeout, read).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(error)) => {
                return super::api::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "the body could not be read: {error} (at most {MAX_BODY_BYTES} bytes are taken)"
                    ),
                );
            }
            Err(_) => {
                let mut answer = super::api::error(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    format!(
                        "the body did not arrive within {} ms of the headers",
                        self.body_timeout.as_millis()
                    ),
                );
                answer.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
                return answer;
            }
        };
        parts.extensions.insert(ConnectInfo(self.remote));
        let _busy = Busy::new(&self.conn, &self.registry);
        match self
            .router
            .call(Request::from_parts(parts, Body::from(bytes)))
            .await
        {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}
