//! Machine-readable diagnostics for CI: a JSON array, and GitHub workflow annotations.

use super::{Diagnostic, Label, Severity};
use crate::sources::SourceDb;
use serde::Serialize;

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    file: &'a str,
    severity: Severity,
    code: &'a str,
    message: &'a str,
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
    labels: Vec<JsonLabel<'a>>,
    notes: &'a [String],
    help: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonLabel<'a> {
    file: &'a str,
    primary: bool,
    message: &'a str,
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
}

/// Start and end as 1-based (line, column) pairs; columns count characters.
fn position(db: &SourceDb, label: &Label) -> ((usize, usize), (usize, usize)) {
    (
        db.line_col(label.file, label.span.start as usize),
        db.line_col(label.file, label.span.end as usize),
    )
}

fn json_label<'a>(db: &'a SourceDb, label: &'a Label, primary: bool) -> JsonLabel<'a> {
    let ((line, column), (end_line, end_column)) = position(db, label);
    JsonLabel {
        file: db.display_name(label.file),
        primary,
        message: &label.message,
        line,
        column,
        end_line,
        end_column,
    }
}

/// One JSON array holding every diagnostic.
pub fn json(diagnostics: &[Diagnostic], db: &SourceDb) -> String {
    let items: Vec<JsonDiagnostic> = diagnostics
        .iter()
        .map(|d| {
            let ((line, column), (end_line, end_column)) = position(db, &d.primary);
            let labels = std::iter::once(json_label(db, &d.primary, true))
                .chain(d.secondary.iter().map(|l| json_label(db, l, false)))
                .collect();
            JsonDiagnostic {
                file: db.display_name(d.file()),
                severity: d.severity,
                code: d.code.id,
                message: &d.message,
                line,
                column,
                end_line,
                end_column,
                labels,
                notes: &d.notes,
                help: d.help.as_deref(),
            }
        })
        .collect();
    serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".to_string())
}

/// One `::error …::message` (or `::warning`) line per diagnostic.
pub fn github(diagnostics: &[Diagnostic], db: &SourceDb) -> String {
    let mut out = String::new();
    for d in diagnostics {
        let ((line, column), (end_line, end_column)) = position(db, &d.primary);
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "notice",
        };
        let mut message = format!("{}: {}", d.message, d.primary.message);
        if let Some(help) = &d.help {
            message.push_str("\nhelp: ");
            message.push_str(help);
        }
        out.push_str(&format!(
            "::{level} file={},line={line},col={column},endLine={end_line},endColumn={end_column},title={}::{}\n",
            escape_property(db.display_name(d.file())),
            escape_property(d.code.id),
            escape_data(&message),
        ));
    }
    out
}

fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_escaping_keeps_annotations_on_one_line() {
        assert_eq!(escape_data("a%b\nc"), "a%25b%0Ac");
        assert_eq!(escape_property("C:\\x,y"), "C%3A\\x%2Cy");
    }
}
