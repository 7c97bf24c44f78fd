//! Tests of `flowc test` through the binary: the corpus in `tests/workflow_tests/` (each file
//! says how many of its tests pass and fail; the report is a reviewed snapshot), the JSON
//! and JUnit reports, `--filter`, and bad input.

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

fn flowc() -> Command {
    assert_cmd::cargo::cargo_bin_cmd!("flowc")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Runs `flowc test ARGS…` from the workspace root: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let output = flowc()
        .current_dir(root())
        .arg("test")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("flowc runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Timings change from run to run; everything else in a report is fixed.
fn without_timings(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = match (
            line.rfind(" ("),
            line.ends_with(" ms)"),
            line.ends_with("s)"),
        ) {
            (Some(at), true, _) => format!("{} (… ms)", &line[..at]),
            (Some(at), false, true) if line.contains(" passed, ") => {
                format!("{} (…s)", &line[..at])
            }
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The `// expect: N passed, M failed` header of a corpus file.
fn expected_summary(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("the corpus file reads");
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("// expect: "))
        .unwrap_or_else(|| {
            panic!(
                "{} must start with `// expect: N passed, M failed`",
                path.display()
            )
        })
        .to_string()
}

/// The passing and failing tests the corpus's headers announce, summed over its files.
fn corpus_totals() -> (usize, usize) {
    let mut totals = (0, 0);
    let dir = root().join("tests/workflow_tests");
    for entry in std::fs::read_dir(dir).expect("the corpus directory reads") {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|e| e != "flow") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("reads");
        if !text.starts_with("// expect: ") {
            continue;
        }
        let summary = expected_summary(&path);
        let count = |word: &str| -> usize {
            let words: Vec<&str> = summary.split([' ', ',']).collect();
            let at = words
                .iter()
                .position(|w| *w == word)
                .expect("N passed, M failed");
            words[at - 1].parse().expect("a count")
        };
        totals.0 += count("passed");
        totals.1 += count("failed");
    }
    totals
}

#[test]
fn corpus_reports_match_their_headers_and_snapshots() {
    insta::glob!("../../tests/workflow_tests", "*.flow", |path| {
        let text = std::fs::read_to_string(path).expect("reads");
        if !text.starts_with("// expect: ") {
            return; // a workflow the tests import
        }
        let relative = path.strip_prefix(root()).expect("inside the workspace");
        let relative = relative.to_str().expect("UTF-8 path");
        let (code, stdout, stderr) = run(&[relative]);
        let summary = expected_summary(path);
        assert!(
            stdout.contains(&format!("\n{summary} (")),
            "{relative}: expected the summary `{summary}`, got:\n{stdout}\n{stderr}"
        );
        let expected_code = if summary.contains(" 0 failed") { 0 } else { 1 };
        assert_eq!(
            code, expected_code,
            "{relative}: exit status\n{stdout}\n{stderr}"
        );
        insta::assert_snapshot!(without_timings(&stdout));
    });
}

#[test]
fn junit_report_is_valid_xml_with_a_case_per_test() {
    let (code, stdout, _) = run(&["tests/workflow_tests/", "--format", "junit"]);
    assert_eq!(code, 1, "the corpus holds failing tests");
    let document = roxmltree::Document::parse(&stdout).expect("valid XML");
    let suites = document.root_element();
    assert_eq!(suites.tag_name().name(), "testsuites");
    let cases: Vec<_> = suites
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let failures: Vec<_> = suites
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .collect();
    let (passed, failed) = corpus_totals();
    assert_eq!(
        cases.len(),
        passed + failed,
        "{passed} passing and {failed} failing tests"
    );
    assert_eq!(failures.len(), failed);
    assert_eq!(
        suites.attribute("failures"),
        Some(failed.to_string().as_str())
    );
    let wrong_result = cases
        .iter()
        .find(|c| c.attribute("name") == Some("wrong result"))
        .expect("the case is listed by name");
    let failure = wrong_result
        .children()
        .find(|n| n.has_tag_name("failure"))
        .expect("it failed");
    assert_eq!(failure.attribute("message"), Some("the result differs"));
    let body = failure.text().unwrap_or_default();
    assert!(body.contains("expected: Released(_)"), "{body}");
    assert!(!body.contains('\u{1b}'), "no terminal colours in XML");
}

#[test]
fn json_report_lists_each_test_with_its_failure() {
    let (code, stdout, _) = run(&["tests/workflow_tests/failing.flow", "--format", "json"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["passed"], 0);
    assert_eq!(report["failed"], 13);
    assert_eq!(report["summary"], "0 passed, 13 failed");
    let unmocked = report["tests"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["name"] == "a tool that is not mocked")
        .expect("listed");
    assert_eq!(unmocked["status"], "failed");
    assert_eq!(unmocked["failure"]["line"], 12);
    let message = unmocked["failure"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("`check_docs` was called"), "{message}");
}

#[test]
fn filter_runs_only_matching_tests() {
    let (code, stdout, _) = run(&["tests/workflow_tests/passing.flow", "--filter", "escalat"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("\n2 passed, 0 failed ("), "{stdout}");
    assert!(
        stdout.contains("escalation then time-out ... ok"),
        "{stdout}"
    );
    assert!(!stdout.contains("released after approval"), "{stdout}");
    // `--exact` (what the editor's "Run test" lens uses): the whole name only.
    let (code, stdout, _) = run(&[
        "tests/workflow_tests/passing.flow",
        "--filter",
        "escalation then time-out",
        "--exact",
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("\n1 passed, 0 failed ("), "{stdout}");
    let (_, stdout, _) = run(&[
        "tests/workflow_tests/passing.flow",
        "--filter",
        "escalat",
        "--exact",
    ]);
    assert!(stdout.contains("\n0 passed, 0 failed ("), "{stdout}");
}

#[test]
fn advance_reaches_the_escalation_and_then_the_time_out() {
    let (code, stdout, _) = run(&["tests/workflow_tests/passing.flow", "--filter", "time-out"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("escalation then time-out ... ok"),
        "{stdout}"
    );
}

/// Writes `text` as a test file in a fresh directory (with the corpus users beside it).
fn project(text: &str) -> (TempDir, String) {
    let dir = TempDir::new().expect("a temporary directory");
    std::fs::copy(
        root().join("tests/workflow_tests/flow.toml"),
        dir.path().join("flow.toml"),
    )
    .expect("copies flow.toml");
    std::fs::copy(
        root().join("tests/workflow_tests/release.flow"),
        dir.path().join("release.flow"),
    )
    .expect("copies release.flow");
    let file = dir.path().join("case_test.flow");
    std::fs::write(&file, text).expect("writes");
    let path = file.to_str().expect("UTF-8").to_string();
    (dir, path)
}

#[test]
fn a_test_file_that_does_not_compile_reports_its_errors_and_runs_nothing() {
    let (_dir, file) = project(
        "import \"release.flow\"\n\ntest \"t\" {\n  mock check_dox returns { ok: true, missing: [] }\n  start ship({ id: 1, docs: [], note: none })\n}\n",
    );
    let (code, stdout, stderr) = run(&[&file]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("[E0200] Error: Unknown tool `check_dox`"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `check_docs`?"), "{stderr}");
    assert!(stderr.contains("[E0300] Error: Type mismatch"), "{stderr}");
    assert!(stderr.contains("its tests were not run"), "{stderr}");
    assert!(
        stdout.contains("0 passed, 0 failed, 1 file(s) did not compile"),
        "{stdout}"
    );
}

#[test]
fn the_nearest_flow_toml_supplies_the_users() {
    let (dir, file) = project(
        "import \"release.flow\"\n\ntest \"t\" {\n  mock check_docs returns { ok: true, missing: [] }\n  mock classify returns Low\n  mock release returns \"R\"\n  start ship({ id: \"S\", docs: [\"a\"], note: none })\n  approve as \"alice\"\n  expect result Released(\"R\")\n}\n",
    );
    let (code, stdout, _) = run(&[&file]);
    assert_eq!(code, 0, "{stdout}");
    // Without a configuration nobody may decide.
    std::fs::remove_file(dir.path().join("flow.toml")).expect("removes");
    let (code, stdout, _) = run(&[&file]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("alice"), "{stdout}");
}

#[test]
fn bad_arguments_and_missing_files_are_usage_errors() {
    let (code, _, stderr) = run(&["tests/workflow_tests/nope.flow"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("nope.flow"), "{stderr}");
    let (code, _, stderr) = run(&["tests/workflow_tests/", "--format", "xml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("xml"), "{stderr}");
    let (code, _, stderr) = run(&[
        "tests/workflow_tests/passing.flow",
        "--config",
        "no/such/flow.toml",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no/such/flow.toml"), "{stderr}");
}

#[test]
fn a_malformed_config_is_reported_at_its_line() {
    let (dir, file) = project(
        "import \"release.flow\"\n\ntest \"t\" {\n  start ship({ id: \"S\", docs: [], note: none })\n}\n",
    );
    std::fs::write(dir.path().join("flow.toml"), "[users.alice]\nroles = 3\n").expect("writes");
    let (code, _, stderr) = run(&[&file]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("flow.toml:2"), "{stderr}");
}

#[test]
fn files_without_tests_pass_with_nothing_to_run() {
    let (code, stdout, _) = run(&["tests/workflow_tests/release.flow"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("0 passed, 0 failed"), "{stdout}");
}

/// Tests are hermetic: a gate's announcement is recorded for `expect notified`, and neither
/// a `[[notify]]` command nor a webhook (a real listener on 127.0.0.1) is ever reached.
#[test]
fn notification_hooks_are_recorded_and_never_fired() {
    let (dir, file) = project(
        "import \"release.flow\"\n\ntest \"t\" {\n  mock check_docs returns { ok: true, missing: [] }\n  mock classify returns Low\n  mock release returns \"R\"\n  start ship({ id: \"S\", docs: [\"a\"], note: none })\n  expect notified \"release_signoff\" with { event: \"gate_opened\", prompt: \"Release S? Low\", approvers: \"role release\" }\n  advance 25h\n  expect notified \"release_signoff\" with { event: \"gate_escalated\" }\n  approve as \"carol\"\n  expect result Released(\"R\")\n}\n",
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    listener.set_nonblocking(true).expect("non-blocking");
    let port = listener.local_addr().expect("an address").port();
    let fired = dir.path().join("fired.txt");
    let corpus = std::fs::read_to_string(dir.path().join("flow.toml")).expect("reads");
    // The corpus's users, without its own hook.
    let users = corpus
        .split("[[notify]]")
        .next()
        .unwrap_or_default()
        .to_string();
    std::fs::write(
        dir.path().join("flow.toml"),
        format!(
            "{users}\n[[notify]]\ncommand = \"cat >> '{}'\"\n\n[[notify]]\nwebhook = \"http://127.0.0.1:{port}/hook\"\n",
            fired.display()
        ),
    )
    .expect("writes flow.toml");
    let (code, stdout, stderr) = run(&[&file]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
    assert!(!fired.exists(), "the command hook ran");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok(_) => panic!("the webhook was called"),
        Err(e) => panic!("accept: {e}"),
    }
    // Without hooks nothing is announced, and the failure says why.
    std::fs::write(dir.path().join("flow.toml"), users).expect("writes flow.toml");
    let (code, stdout, _) = run(&[&file]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("has no [[notify]] hooks"), "{stdout}");
}

/// A failure shows what a tool received and what a run returned with every `Secret`
/// redacted, in every report format: CI logs are read by more people than the vault.
#[test]
fn secrets_never_appear_in_clear_in_a_report() {
    for format in ["human", "json", "junit"] {
        let (code, stdout, stderr) =
            run(&["tests/workflow_tests/secrets.flow", "--format", format]);
        assert_eq!(code, 1, "{stdout}\n{stderr}");
        let report = format!("{stdout}{stderr}");
        // Each of these is only written in a `start` step, which no failure quotes.
        for secret in ["hunter2-called", "hunter2-times", "hunter2-not"] {
            assert!(
                !report.contains(secret),
                "{format}: {secret} shown:\n{report}"
            );
        }
        assert!(report.contains("[redacted]"), "{format}:\n{report}");
    }
}
