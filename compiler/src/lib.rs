//! The Flow compiler.
//!
//! Pipeline: [`sources`] (files, through a loader trait: the compiler does no I/O) →
//! [`syntax`] (lexer, parser with recovery) → [`program`] (imports, cycles) → [`check`]
//! (name resolution, types, the approval and reachability analyses) → [`diagnostics`]
//! (one neutral form, rendered for people, JSON or GitHub annotations) → [`lower`] (a checked
//! program to a [`bytecode`] module).

pub mod analysis;
pub mod bytecode;
pub mod check;
pub mod diagnostics;
pub mod format;
pub mod lower;
pub mod program;
pub mod sources;
pub mod span;
pub mod syntax;
pub mod testing;
pub mod types;

pub use program::{Program, RootError, check_paths, check_text};
