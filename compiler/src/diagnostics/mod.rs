//! The neutral diagnostic: what every phase (lexer, parser, resolver, type checker, safety
//! analyses) reports, and what every front end renders — the terminal ([`render`]), JSON and
//! GitHub annotations ([`formats`]), and later the language server.

pub mod codes;
pub mod formats;
pub mod render;

use crate::span::{FileId, Span};
pub use codes::Code;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub file: FileId,
    pub span: Span,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    /// One sentence; defaults to the code's title.
    pub message: String,
    /// Says what is wrong at the exact place.
    pub primary: Label,
    /// Other places that explain the error (a declaration, the path that skips a check).
    pub secondary: Vec<Label>,
    /// Facts worth knowing, e.g. "expected type: Int".
    pub notes: Vec<String>,
    /// What to do about it, in the imperative.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: Code, file: FileId, span: Span, label: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, Severity::Error, file, span, label)
    }

    pub fn warning(code: Code, file: FileId, span: Span, label: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, Severity::Warning, file, span, label)
    }

    fn new(
        code: Code,
        severity: Severity,
        file: FileId,
        span: Span,
        label: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            code,
            severity,
            message: code.title.to_string(),
            primary: Label {
                file,
                span,
                message: label.into(),
            },
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Diagnostic {
        self.message = message.into();
        self
    }

    pub fn with_label(
        mut self,
        file: FileId,
        span: Span,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.secondary.push(Label {
            file,
            span,
            message: message.into(),
        });
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn file(&self) -> FileId {
        self.primary.file
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Orders diagnostics by file, position and code, so output is stable.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (
            a.primary.file,
            a.primary.span.start,
            a.primary.span.end,
            a.code.id,
        )
            .cmp(&(
                b.primary.file,
                b.primary.span.start,
                b.primary.span.end,
                b.code.id,
            ))
    });
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b_chars: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b_chars.len()).collect();
    let mut current = vec![0; b_chars.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b_chars.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b_chars.len()]
}

/// The candidate closest to `name`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    // Short names are too easily "close" to anything: only suggest case fixes for them.
    let limit = name.chars().count() / 3;
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| {
            let distance = if c.eq_ignore_ascii_case(name) {
                0
            } else {
                edit_distance(name, c)
            };
            (distance, c)
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_pick_the_closest_plausible_name() {
        assert_eq!(
            did_you_mean("shipmnt", ["shipment", "ship", "report"]),
            Some("shipment")
        );
        assert_eq!(did_you_mean("x", ["report", "receipt"]), None);
        assert_eq!(did_you_mean("STRING", ["String", "Int"]), Some("String"));
    }

    #[test]
    fn edit_distance_counts_characters_not_bytes() {
        assert_eq!(edit_distance("café", "cafe"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
