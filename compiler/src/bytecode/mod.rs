//! The bytecode: the one definition shared by the compiler (which writes it) and the runtime
//! (which runs it). It imports nothing from the syntax tree or the checker.
//!
//! - [`ops`]: the instruction set of the stack machine.
//! - [`module`]: a compiled program — workflows' code with debug locations, constants, type
//!   descriptions (so the runtime can validate JSON without the source), tools, gates.
//! - [`encoding`]: the `.flowb` artifact: magic, format version, payload, checksum.
//! - [`disasm`]: a readable listing.
//! - [`verify`]: a structural check (operands, jump targets, stack depths, regions).
//! - [`refine`]: refinements of types (`Int in 1..10`) and how a value is tested against one.
//! - [`schema`]: the JSON Schema of a declared type (the response format of `llm` tools).

pub mod disasm;
pub mod encoding;
pub mod module;
pub mod ops;
pub mod refine;
pub mod schema;
pub mod verify;

pub use encoding::{ArtifactError, FORMAT_VERSION, decode, encode};
pub use module::*;
pub use ops::Op;
pub use refine::{Refinement, Subject};
