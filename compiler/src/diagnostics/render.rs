//! Renders diagnostics for people, with ariadne: code, message, the source excerpt with the
//! primary and secondary labels, notes and a `help:` line.

use super::{Diagnostic, Severity};
use crate::sources::SourceDb;
use ariadne::{Color, Config, IndexType, Label, Report, ReportKind};

/// Renders each diagnostic as a block of text, in order. `color` adds ANSI colours.
pub fn human(diagnostics: &[Diagnostic], db: &SourceDb, color: bool) -> String {
    // One source cache for all diagnostics: ariadne splits a file into lines when it is
    // added, so a cache per diagnostic made many diagnostics in a big file quadratic.
    let mut files: Vec<_> = diagnostics
        .iter()
        .flat_map(|d| std::iter::once(d.primary.file).chain(d.secondary.iter().map(|l| l.file)))
        .collect();
    files.sort();
    files.dedup();
    let mut cache = ariadne::sources(
        files
            .into_iter()
            .map(|f| (db.display_name(f).to_string(), db.text(f).to_string())),
    );
    let mut out = Vec::new();
    for diagnostic in diagnostics {
        write_one(diagnostic, db, color, &mut cache, &mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn write_one(
    diagnostic: &Diagnostic,
    db: &SourceDb,
    color: bool,
    cache: &mut impl ariadne::Cache<String>,
    out: &mut Vec<u8>,
) {
    let path = |file| db.display_name(file).to_string();
    let (kind, primary_color) = match diagnostic.severity {
        Severity::Error => (ReportKind::Error, Color::Red),
        Severity::Warning => (ReportKind::Warning, Color::Yellow),
        Severity::Note => (ReportKind::Advice, Color::Cyan),
    };
    let primary = &diagnostic.primary;
    let mut report = Report::build(kind, (path(primary.file), primary.span.range()))
        .with_config(
            Config::new()
                .with_index_type(IndexType::Byte)
                .with_color(color),
        )
        .with_code(diagnostic.code.id)
        .with_message(&diagnostic.message);
    // ariadne draws one excerpt per run of labels in increasing line order, so order the
    // labels by position: the primary file first, then the others.
    let mut labels: Vec<(&super::Label, Color)> = std::iter::once((primary, primary_color))
        .chain(diagnostic.secondary.iter().map(|l| (l, Color::Blue)))
        .collect();
    labels.sort_by_key(|(l, _)| (l.file != primary.file, l.file, l.span.start, l.span.end));
    for (order, (label, label_color)) in labels.into_iter().enumerate() {
        report = report.with_label(
            Label::new((path(label.file), label.span.range()))
                .with_message(&label.message)
                .with_color(label_color)
                .with_order(order as i32),
        );
    }
    for note in &diagnostic.notes {
        report = report.with_note(note);
    }
    if let Some(help) = &diagnostic.help {
        report = report.with_help(help);
    }
    if report.finish().write(cache, &mut *out).is_err() {
        // ariadne only fails when a source is missing; fall back to a plain line.
        out.extend_from_slice(
            format!(
                "{}[{}]: {}\n",
                match diagnostic.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                    Severity::Note => "note",
                },
                diagnostic.code.id,
                diagnostic.message
            )
            .as_bytes(),
        );
    }
}
