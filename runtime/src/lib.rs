//! The Flow runtime: runs compiled workflows durably.
//!
//! - [`vm`]: the interpreter and its values; stops at every durable point.
//! - [`store`]: where versions, runs, checkpoints, history and timers live (SQLite or
//!   PostgreSQL).
//! - [`engine`]: drives runs — performs each durable effect and commits it with the new
//!   checkpoint in one transaction; claims runs so two processes never drive the same one.
//! - [`tools`]: how tool bindings are called (`exec`, `http`, `llm`); [`process`] runs the
//!   shell commands of `exec` tools and notifications.
//! - [`heartbeat`]: keeps a live process's claims alive while its engine is busy.
//! - [`announce`]: a gate's notification, written to the store's outbox with the gate's event
//!   and delivered at least once ([`notify`] makes one attempt).
//! - [`http_client`]: the one HTTP client (HTTPS through rustls) of `http` and `llm` tools,
//!   webhooks and the OTLP exporter.
//! - [`telemetry`]: spans, logs and OpenTelemetry export (one trace per run).
//! - [`ops`]: the operations `flowrt` and the API share (start, decide, cancel, list, history,
//!   audit, pending gates), returning the [`views`] both show.
//! - the `flowrt` binary (`src/bin/flowrt.rs`): the operator's command line.

pub mod announce;
pub mod audit;
pub mod clock;
mod compensation;
pub mod config;
pub mod effects;
pub mod engine;
pub mod gates;
pub mod heartbeat;
pub mod history;
pub mod http_client;
pub mod notify;
pub mod ops;
mod parallel;
pub mod process;
pub mod secrets;
pub mod server;
mod steps;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod tokens;
pub mod tools;
pub mod views;
pub mod vm;
