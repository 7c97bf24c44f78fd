//! The Flow language server (`flow-lsp`): a thin adapter from the Language Server Protocol
//! to the compiler's analysis API ([`flow_compiler::analysis`]), over stdio.
//!
//! - [`position`]: byte offsets ⇄ LSP positions (UTF-16), the one place they are converted.
//! - [`documents`]: open buffers, their analyses and when those go stale, and the loader
//!   that reads open buffers before the disk.
//! - [`framing`]: a guard that keeps malformed input from reaching the protocol library.
//! - [`outline`]: `documentSymbol` answers serialized once per analysis, written directly.
//! - [`server`]: the LSP handlers and the diagnostics worker.

pub mod documents;
pub mod framing;
pub mod outline;
pub mod position;
pub mod server;
