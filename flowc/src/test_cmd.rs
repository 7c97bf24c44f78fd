//! `flowc test`: finds the `test` blocks of `.flow` files, compiles each file with its tests
//! and runs them on the runtime (`flow_runtime::testing`), then reports them for people
//! (a line per test, failures rendered at their step), tools (JSON) or CI systems (JUnit XML).

use flow_compiler::diagnostics::{Diagnostic, codes::Code, render};
use flow_compiler::sources::SourceLoader;
use flow_compiler::span::FileId;
use flow_runtime::config::Config;
use flow_runtime::testing::{Failure, TestResult, run_test};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Not a compiler diagnostic: how a failed test is rendered with the same renderer.
const TEST_FAILED: Code = Code {
    id: "test",
    title: "Test failed",
};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TestFormat {
    Human,
    Json,
    Junit,
}

pub struct Options<'a> {
    pub filter: Option<&'a str>,
    /// The filter is the whole name, not a part of it.
    pub exact: bool,
    pub format: TestFormat,
    pub config: Option<&'a Path>,
    pub color: bool,
}

/// One test's result with where it is.
struct Reported {
    file: String,
    line: usize,
    result: TestResult,
    /// The rendered failure (human format), with its line and column.
    rendered: Option<(String, usize, usize)>,
}

/// What happened to one file.
enum FileOutcome {
    /// The file does not compile: its diagnostics, rendered.
    Broken {
        file: String,
        diagnostics: String,
        errors: usize,
    },
    Ran(Vec<Reported>),
}

/// Runs the tests; returns the text for stdout, the text for stderr and whether all passed.
pub fn run(
    files: &[String],
    loader: &dyn SourceLoader,
    options: &Options,
) -> Result<(String, String, bool), String> {
    let started = Instant::now();
    let mut outcomes = Vec::new();
    let mut progress = String::new();
    for file in files {
        let outcome = test_file(file, loader, options)?;
        if options.format == TestFormat::Human
            && let FileOutcome::Ran(reports) = &outcome
        {
            for report in reports {
                progress.push_str(&progress_line(report));
            }
        }
        outcomes.push(outcome);
    }
    let elapsed = started.elapsed();
    let (passed, failed, broken) = count(&outcomes);
    let ok = failed == 0 && broken == 0;
    Ok(match options.format {
        TestFormat::Human => {
            let mut out = progress;
            let mut err = String::new();
            for outcome in &outcomes {
                match outcome {
                    FileOutcome::Broken {
                        file,
                        diagnostics,
                        errors,
                    } => {
                        err.push_str(diagnostics);
                        err.push_str(&format!(
                            "{file}: {errors} error(s); its tests were not run\n"
                        ));
                    }
                    FileOutcome::Ran(reports) => {
                        for report in reports {
                            if let Some((text, _, _)) = &report.rendered {
                                out.push_str(&format!(
                                    "\n--- {} › {}\n",
                                    report.file, report.result.name
                                ));
                                out.push_str(text);
                            }
                        }
                    }
                }
            }
            let mut summary = format!("\n{passed} passed, {failed} failed");
            if broken > 0 {
                summary.push_str(&format!(", {broken} file(s) did not compile"));
            }
            summary.push_str(&format!(" ({:.2}s)\n", elapsed.as_secs_f64()));
            out.push_str(&summary);
            (out, err, ok)
        }
        TestFormat::Json => (json(&outcomes, passed, failed) + "\n", String::new(), ok),
        TestFormat::Junit => (junit(&outcomes, elapsed), String::new(), ok),
    })
}

fn count(outcomes: &[FileOutcome]) -> (usize, usize, usize) {
    let mut passed = 0;
    let mut failed = 0;
    let mut broken = 0;
    for outcome in outcomes {
        match outcome {
            FileOutcome::Broken { .. } => broken += 1,
            FileOutcome::Ran(reports) => {
                for report in reports {
                    if report.result.failure.is_none() {
                        passed += 1;
                    } else {
                        failed += 1;
                    }
                }
            }
        }
    }
    (passed, failed, broken)
}

fn progress_line(report: &Reported) -> String {
    let verdict = if report.result.failure.is_none() {
        "ok"
    } else {
        "FAILED"
    };
    format!(
        "test {}:{} {} ... {verdict} ({})\n",
        report.file,
        report.line,
        report.result.name,
        millis(report.result.duration)
    )
}

fn millis(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

/// Compiles `file` (the root) with its tests and runs the tests written in it.
fn test_file(
    file: &str,
    loader: &dyn SourceLoader,
    options: &Options,
) -> Result<FileOutcome, String> {
    let program = flow_compiler::check_paths(&[file.to_string()], loader)
        .map_err(|e| format!("cannot read `{}`: {}", e.path, e.reason))?;
    let root = FileId(0);
    let cases: Vec<_> = program.trees[0]
        .tests
        .tests
        .iter()
        .filter(|case| {
            options.filter.is_none_or(|f| {
                if options.exact {
                    case.name == f
                } else {
                    case.name.contains(f)
                }
            })
        })
        .cloned()
        .collect();
    if program.errors() > 0 {
        let diagnostics = render::human(&program.diagnostics, &program.db, options.color);
        return Ok(FileOutcome::Broken {
            file: file.to_string(),
            diagnostics,
            errors: program.errors(),
        });
    }
    if cases.is_empty() {
        return Ok(FileOutcome::Ran(Vec::new()));
    }
    let module = flow_compiler::lower::lower_with_tests(&program).map_err(|e| e.to_string())?;
    let artifact = flow_compiler::bytecode::encode(&module);
    let config = load_config(file, options.config)?;
    let mut reports = Vec::new();
    for case in &cases {
        let dir = Path::new(file).parent().unwrap_or(Path::new("."));
        let result = run_test(&artifact, case, &config, dir);
        let (line, _) = program.db.line_col(root, case.span.start as usize);
        let rendered = result.failure.as_ref().map(|failure| {
            let (line, column) = program.db.line_col(root, failure.span.start as usize);
            let text = render::human(&[diagnostic(root, failure)], &program.db, options.color);
            (text, line, column)
        });
        reports.push(Reported {
            file: file.to_string(),
            line,
            result,
            rendered,
        });
    }
    Ok(FileOutcome::Ran(reports))
}

fn diagnostic(file: FileId, failure: &Failure) -> Diagnostic {
    let label = match &failure.expected {
        Some(_) => "this expectation does not hold",
        None => "the test stopped here",
    };
    let mut diagnostic =
        Diagnostic::error(TEST_FAILED, file, failure.span, label).with_message(&failure.message);
    if let (Some(expected), Some(actual)) = (&failure.expected, &failure.actual) {
        diagnostic = diagnostic.with_note(format!("expected: {expected}\n  actual: {actual}"));
    }
    if let Some(help) = &failure.help {
        diagnostic = diagnostic.with_help(help);
    }
    diagnostic
}

/// `--config`, else the nearest `flow.toml` above the test file, else none (no users: every
/// decision is refused, as `flowrt` does without a configuration).
fn load_config(file: &str, explicit: Option<&Path>) -> Result<Config, String> {
    if let Some(path) = explicit {
        return Config::load(path).map_err(|e| e.to_string());
    }
    // The path as given first (so that messages name the file as the user wrote it), then
    // the directories above it.
    let given = Path::new(file);
    let absolute = std::fs::canonicalize(file).unwrap_or_else(|_| PathBuf::from(file));
    for dir in given
        .ancestors()
        .skip(1)
        .chain(absolute.ancestors().skip(1))
    {
        let candidate = dir.join("flow.toml");
        if candidate.is_file() {
            return Config::load(&candidate).map_err(|e| e.to_string());
        }
    }
    Ok(Config::empty())
}

fn json(outcomes: &[FileOutcome], passed: usize, failed: usize) -> String {
    let mut tests = Vec::new();
    let mut broken_files = Vec::new();
    for outcome in outcomes {
        match outcome {
            FileOutcome::Broken { file, errors, .. } => {
                broken_files.push(serde_json::json!({ "file": file, "errors": errors }))
            }
            FileOutcome::Ran(reports) => {
                for report in reports {
                    let failure = report.result.failure.as_ref().map(|f| {
                        let (line, column) =
                            report.rendered.as_ref().map_or((0, 0), |r| (r.1, r.2));
                        serde_json::json!({
                            "line": line,
                            "column": column,
                            "message": f.message,
                            "expected": f.expected,
                            "actual": f.actual,
                            "help": f.help,
                        })
                    });
                    tests.push(serde_json::json!({
                        "file": report.file,
                        "line": report.line,
                        "name": report.result.name,
                        "status": if failure.is_none() { "passed" } else { "failed" },
                        "duration_ms": report.result.duration.as_millis() as u64,
                        "failure": failure,
                    }));
                }
            }
        }
    }
    serde_json::json!({
        "tests": tests,
        "passed": passed,
        "failed": failed,
        "files_not_compiled": broken_files,
        "summary": format!("{passed} passed, {failed} failed"),
        "ok": failed == 0 && broken_files.is_empty(),
    })
    .to_string()
}

/// JUnit XML: one `<testsuite>` per file, a `<testcase>` per test, `<failure>` with the
/// message, expected and actual values; a file that does not compile is a suite with one
/// `<error>`.
fn junit(outcomes: &[FileOutcome], elapsed: Duration) -> String {
    let (passed, failed, broken) = count(outcomes);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"flowc test\" tests=\"{}\" failures=\"{failed}\" errors=\"{broken}\" time=\"{:.3}\">\n",
        passed + failed + broken,
        elapsed.as_secs_f64()
    ));
    for outcome in outcomes {
        match outcome {
            FileOutcome::Broken {
                file,
                errors,
                diagnostics,
            } => {
                out.push_str(&format!(
                    "  <testsuite name=\"{}\" tests=\"1\" failures=\"0\" errors=\"1\">\n    <testcase classname=\"{0}\" name=\"compile\">\n      <error message=\"{} error(s)\">{}</error>\n    </testcase>\n  </testsuite>\n",
                    xml(file),
                    errors,
                    xml(&strip_ansi(diagnostics))
                ));
            }
            FileOutcome::Ran(reports) if reports.is_empty() => {}
            FileOutcome::Ran(reports) => {
                let failures = reports
                    .iter()
                    .filter(|r| r.result.failure.is_some())
                    .count();
                let time: f64 = reports
                    .iter()
                    .map(|r| r.result.duration.as_secs_f64())
                    .sum();
                out.push_str(&format!(
                    "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{time:.3}\">\n",
                    xml(&reports[0].file),
                    reports.len()
                ));
                for report in reports {
                    out.push_str(&format!(
                        "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                        xml(&report.file),
                        xml(&report.result.name),
                        report.result.duration.as_secs_f64()
                    ));
                    match (&report.result.failure, &report.rendered) {
                        (Some(failure), Some((text, line, _))) => {
                            out.push_str(&format!(
                                ">\n      <failure message=\"{}\" type=\"assertion\">{}:{line}\n{}</failure>\n    </testcase>\n",
                                xml(&failure.message),
                                xml(&report.file),
                                xml(&strip_ansi(text))
                            ));
                        }
                        _ => out.push_str("/>\n"),
                    }
                }
                out.push_str("  </testsuite>\n");
            }
        }
    }
    out.push_str("</testsuites>\n");
    out
}

/// Escapes text for XML content and attributes; drops characters XML 1.0 cannot hold.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
