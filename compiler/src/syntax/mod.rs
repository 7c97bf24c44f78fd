//! Syntax: lexing (`lexer`, `token`), the tree (`ast`) and parsing (`parser`).

pub mod ast;
pub mod lexer;
pub mod name;
pub mod parser;
pub mod token;

use crate::diagnostics::Diagnostic;
use crate::span::{FileId, Span};

/// A parsed file: its tree, its doc comments and its syntax diagnostics.
pub struct SyntaxTree {
    pub module: ast::Module,
    pub doc_comments: Vec<Span>,
    pub comments: Vec<Span>,
    pub diagnostics: Vec<Diagnostic>,
    /// The file's `test` blocks as the runner follows them, with their helper workflows.
    pub tests: crate::testing::Desugared,
}

pub fn parse_file(file: FileId, text: &str) -> SyntaxTree {
    let parsed = parser::parse(file, text);
    let mut diagnostics = parsed.lex_diagnostics;
    diagnostics.extend(parsed.diagnostics);
    let mut tests = crate::testing::desugar(file, &parsed.module, text);
    diagnostics.append(&mut tests.diagnostics);
    SyntaxTree {
        tests,
        module: parsed.module,
        doc_comments: parsed.doc_comments,
        comments: parsed.comments,
        diagnostics,
    }
}
