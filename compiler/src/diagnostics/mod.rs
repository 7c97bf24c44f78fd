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
    /// Neither wrong nor suspect, but for a reviewer to see (an approval waived).
    Note,
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

    pub fn note(code: Code, file: FileId, span: Span, label: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, Severity::Note, file, span, label)
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

    pub fn is_warning(&self) -> bool {
        self.severity == Severity::Warning
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

/// At most this many diagnostics are reported for one file; a note on the last one says how
/// many more there are. Past a few hundred, more diagnostics help nobody (they are mostly one
/// mistake repeated), and rendering them costs time.
pub const MAX_PER_FILE: usize = 200;

/// Keeps at most [`MAX_PER_FILE`] diagnostics per file of `diagnostics` (sorted by file, as
/// [`sort`] leaves them): errors before warnings, so a file with errors never shows only
/// warnings, then in order of position. The last one kept gets a note with the count of
/// those left out.
pub fn cap_per_file(diagnostics: &mut Vec<Diagnostic>) {
    let mut start = 0;
    let mut out: Vec<Diagnostic> = Vec::with_capacity(diagnostics.len());
    let all = std::mem::take(diagnostics);
    let mut all: Vec<Option<Diagnostic>> = all.into_iter().map(Some).collect();
    while start < all.len() {
        let file = all[start].as_ref().map(|d| d.file());
        let end = all[start..]
            .iter()
            .position(|d| d.as_ref().map(|d| d.file()) != file)
            .map_or(all.len(), |n| start + n);
        let group = &mut all[start..end];
        if group.len() <= MAX_PER_FILE {
            out.extend(group.iter_mut().filter_map(Option::take));
        } else {
            let mut order: Vec<usize> = (0..group.len()).collect();
            order.sort_by_key(|&i| group[i].as_ref().is_some_and(|d| !d.is_error()));
            let mut keep = order[..MAX_PER_FILE].to_vec();
            keep.sort_unstable();
            let mut kept: Vec<Diagnostic> = keep.iter().filter_map(|&i| group[i].take()).collect();
            let (errors, warnings) = group.iter().flatten().fold((0, 0), |(e, w), d| {
                if d.is_error() { (e + 1, w) } else { (e, w + 1) }
            });
            if let Some(last) = kept.pop() {
                kept.push(last.with_note(left_out_note(errors, warnings)));
            }
            out.extend(kept);
        }
        start = end;
    }
    *diagnostics = out;
}

fn left_out_note(errors: usize, warnings: usize) -> String {
    let count = |n: usize, what: &str| match n {
        0 => None,
        1 => Some(format!("1 more {what}")),
        n => Some(format!("{n} more {what}s")),
    };
    let parts: Vec<String> = [count(errors, "error"), count(warnings, "warning")]
        .into_iter()
        .flatten()
        .collect();
    format!(
        "not shown: {} in this file (at most {MAX_PER_FILE} are reported per file); fix these and check again",
        parts.join(" and ")
    )
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
    fn at_most_max_per_file_are_kept_errors_first_with_a_count_of_the_rest() {
        let at = |file: u32, start: usize, error: bool| {
            let span = Span::new(start, start + 1);
            if error {
                Diagnostic::error(codes::UNKNOWN_NAME, FileId(file), span, "e")
            } else {
                Diagnostic::warning(codes::UNUSED_VARIABLE, FileId(file), span, "w")
            }
        };
        // File 0: 150 warnings, then 150 errors; file 1: 3 errors (untouched).
        let mut all: Vec<Diagnostic> = (0..150)
            .map(|i| at(0, i, false))
            .chain((150..300).map(|i| at(0, i, true)))
            .chain((0..3).map(|i| at(1, i, true)))
            .collect();
        cap_per_file(&mut all);
        let first: Vec<&Diagnostic> = all.iter().filter(|d| d.file() == FileId(0)).collect();
        assert_eq!(first.len(), MAX_PER_FILE);
        assert_eq!(
            first.iter().filter(|d| d.is_error()).count(),
            150,
            "every error kept"
        );
        assert!(
            first
                .windows(2)
                .all(|w| w[0].primary.span.start < w[1].primary.span.start),
            "still in order of position"
        );
        let noted: Vec<&&Diagnostic> = first.iter().filter(|d| !d.notes.is_empty()).collect();
        assert_eq!(noted.len(), 1, "one note");
        assert_eq!(
            noted[0].notes[0],
            "not shown: 100 more warnings in this file (at most 200 are reported per file); fix these and check again"
        );
        assert_eq!(noted[0].primary.span.start, 299, "on the last one kept");
        assert_eq!(all.iter().filter(|d| d.file() == FileId(1)).count(), 3);
        assert!(
            all.iter()
                .filter(|d| d.file() == FileId(1))
                .all(|d| d.notes.is_empty())
        );
    }

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
