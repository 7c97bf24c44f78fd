//! The virtual machine: values ([`value`]), the interpreter ([`machine`]), pure builtins
//! ([`builtins`]) and the versioned checkpoint format ([`snapshot`]).

pub mod builtins;
pub mod machine;
pub mod snapshot;
pub mod value;

pub use machine::{Machine, Outcome, Request, RuntimeError};
pub use value::Value;
