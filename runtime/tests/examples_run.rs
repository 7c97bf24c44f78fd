//! The examples run end to end, offline, through the real `flowrt` binary: the stand-in
//! systems and model of `examples/servers/example_systems.py` are started on a free port on
//! 127.0.0.1, `flowrt` runs each example from the repository root with the repository's
//! `flow.toml` (its ports moved to the server's), the approval and input gates are decided by
//! the users of `flow.toml`, and each run must complete with the expected output. The last
//! test runs `examples/run.sh` itself, the way the README tells people to.
//!
//! These tests need `python3` (standard library only); without it they fail and say so.
#![cfg(unix)]

mod common;

use common::{FLOWRT, Out, Store, TestDb, for_each_store};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const EXIT_OK: i32 = 0;
const EXIT_WAITING: i32 = 10;

/// The repository root: examples name their exec tools relative to it.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the runtime crate is in the workspace")
        .to_path_buf()
}

/// Fails the test with a clear message when `python3` cannot be started.
fn python3() -> Command {
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => Command::new("python3"),
        Ok(out) => panic!(
            "the examples' servers need python3, and `python3 --version` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "the examples' servers need python3 (standard library only), and it cannot be \
             started: {e}; install it (apt-get install -y python3)"
        ),
    }
}

/// `examples/servers/example_systems.py` on a free port, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let log = dir.join("server.log");
        let mut child = python3()
            .arg(root().join("examples/servers/example_systems.py"))
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("the server's log file"))
            .spawn()
            .expect("python3 starts the example server");
        let stdout = child.stdout.take().expect("the server's stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let port = line
            .trim()
            .strip_prefix("listening on http://127.0.0.1:")
            .and_then(|port| port.parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the example server did not start ({read:?}): {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Server { child, port, log }
    }

    /// What the server logged: one line per request, with its `Idempotency-Key`.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example server, a database and a copy of the repository's `flow.toml` pointing at the
/// server, in a temporary directory.
struct Examples {
    // Dropped before the directory it may live in.
    db: TestDb,
    dir: tempfile::TempDir,
    server: Server,
    /// Runs are started on a test-clock database (`flowrt clock advance` moves its time).
    test_clock: bool,
}

impl Examples {
    /// On a database whose clock `advance` moves, for what waits hours.
    fn with_test_clock(store: &Store) -> Examples {
        Examples {
            test_clock: true,
            ..Examples::new(store)
        }
    }

    fn new(store: &Store) -> Examples {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = TestDb::create(store, dir.path());
        let server = Server::start(dir.path());
        let config = std::fs::read_to_string(root().join("flow.toml")).expect("flow.toml");
        assert!(
            config.contains("127.0.0.1:8711"),
            "flow.toml points the examples' tools at 127.0.0.1:8711"
        );
        let config = config.replace("127.0.0.1:8711", &format!("127.0.0.1:{}", server.port));
        std::fs::write(dir.path().join("flow.toml"), config).expect("write flow.toml");
        Examples {
            db,
            dir,
            server,
            test_clock: false,
        }
    }

    fn advance(&self, by: &str) {
        let out = self.flowrt(&["clock", "advance", by]);
        out.expect_code(EXIT_OK);
    }

    fn flowrt(&self, args: &[&str]) -> Out {
        let mut command = Command::new(FLOWRT);
        command
            .args(args)
            .current_dir(root())
            .env("FLOW_CONFIG", self.dir.path().join("flow.toml"))
            .env("NO_COLOR", "1")
            .env("USER", "operator")
            .env_remove("FLOW_LEASE_MS")
            .stdin(Stdio::null());
        self.db.apply(&mut command);
        let output: Output = command.output().expect("flowrt starts");
        Out::from_output(args, &output)
    }

    /// Starts the workflow of an example named like its file as ines (the intake clerk),
    /// drives it as far as it goes, and returns the run id; the run must then be `completed`
    /// or waiting on `waiting_on`.
    fn start(&self, file: &str, input: serde_json::Value, waiting_on: Option<&str>) -> String {
        let input = input.to_string();
        let workflow = file.trim_end_matches(".flow");
        let clock = if self.test_clock { "--test-clock" } else { "" };
        let args = [
            clock,
            "run",
            &format!("examples/{file}"),
            "--workflow",
            workflow,
            "--as",
            "ines",
            "--input",
            &input,
            "--json",
        ];
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let out = self.flowrt(&args);
        let run = out.json()["id"].as_str().map(str::to_string);
        let Some(run) = run else {
            panic!("{file} did not start:\n{}{}", out.stdout, out.stderr);
        };
        match waiting_on {
            Some(gate) => {
                out.expect_code(EXIT_WAITING);
                let status = self.status(&run);
                assert_eq!(status["status"], "waiting", "{}", self.explain(&run));
                assert_eq!(status["waiting_on"], gate, "{}", self.explain(&run));
            }
            None => {
                out.expect_code(EXIT_OK);
            }
        }
        run
    }

    /// `flowrt approve|reject|input RUN …`, which must succeed.
    fn decide(&self, what: &str, run: &str, args: &[&str]) {
        let mut all = vec![what, run];
        all.extend_from_slice(args);
        let out = self.flowrt(&all);
        assert_eq!(
            out.code,
            EXIT_OK,
            "flowrt {all:?} failed\n{}{}\n{}",
            out.stdout,
            out.stderr,
            self.explain(run)
        );
    }

    fn status(&self, run: &str) -> serde_json::Value {
        let out = self.flowrt(&["status", run, "--json"]);
        out.expect_code(EXIT_OK);
        out.json()
    }

    fn history(&self, run: &str) -> Vec<serde_json::Value> {
        let out = self.flowrt(&["history", run, "--json"]);
        out.expect_code(EXIT_OK);
        out.json()
            .as_array()
            .cloned()
            .expect("history --json is an array")
    }

    /// The run's status, its timeline and the server's log, for a failure message.
    fn explain(&self, run: &str) -> String {
        let history = self.flowrt(&["history", run]);
        format!(
            "status: {}\nhistory:\n{}{}\nserver log:\n{}",
            self.status(run),
            history.stdout,
            history.stderr,
            self.server.log()
        )
    }

    /// The run completed, and its output is `output`.
    fn expect_output(&self, run: &str, output: serde_json::Value) {
        let status = self.status(run);
        assert_eq!(status["status"], "completed", "{}", self.explain(run));
        assert_eq!(status["output"], output, "{}", self.explain(run));
    }

    /// The run completed, and its output is `{variant: {field: text}}` with `text` starting
    /// with `prefix` (for ids derived from the run id).
    fn expect_output_prefix(&self, run: &str, variant: &str, field: &str, prefix: &str) {
        let status = self.status(run);
        assert_eq!(status["status"], "completed", "{}", self.explain(run));
        let text = status["output"][variant][field]
            .as_str()
            .unwrap_or_default();
        assert!(
            text.starts_with(prefix),
            "expected {{\"{variant}\": {{\"{field}\": \"{prefix}…\"}}}}, got {}\n{}",
            status["output"],
            self.explain(run)
        );
    }
}

/// The events of a history of the given kind, for the given step.
fn events<'a>(
    history: &'a [serde_json::Value],
    event: &str,
    step: &str,
) -> Vec<&'a serde_json::Value> {
    history
        .iter()
        .filter(|e| e["kind"] == event && e["step"] == step)
        .collect()
}

/// The `audit` event named `name`.
fn audit<'a>(history: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    history
        .iter()
        .find(|e| e["kind"] == "audit" && e["step"] == name)
        .unwrap_or_else(|| {
            panic!("no audit event {name:?} in {history:#?}");
        })
}

fn docs(kinds: &[(&str, &str)]) -> serde_json::Value {
    kinds
        .iter()
        .map(|(id, kind)| {
            serde_json::json!({
                "id": id, "kind": kind, "url": format!("https://docs.example.com/{id}.pdf"),
            })
        })
        .collect()
}

#[test]
fn refund_credits_small_amounts_and_refunds_after_finance_approves() {
    for_each_store(|store| {
        let ex = Examples::new(store);
        let run = ex.start(
            "refund.flow",
            serde_json::json!({ "request": { "order_id": "A-1001", "amount_eur": 40, "reason": "damaged" } }),
            None,
        );
        ex.expect_output_prefix(&run, "Credited", "receipt", "credit-");

        let run = ex.start(
            "refund.flow",
            serde_json::json!({ "request": { "order_id": "A-1002", "amount_eur": 90, "reason": "never arrived" } }),
            Some("approval finance_refund"),
        );
        ex.decide("approve", &run, &["finance_refund", "--as", "fatima"]);
        ex.expect_output_prefix(&run, "Refunded", "receipt", "refund-");
    });
}

#[test]
fn cargo_release_checks_documents_over_http_then_releases_or_holds() {
    for_each_store(|store| {
        let ex = Examples::new(store);

        // Complete documents: customs signs off and the container is released.
        let run = ex.start(
            "cargo_release.flow",
            serde_json::json!({ "s": {
                "id": "S-2041", "container": "MSCU4471235", "value_eur": 84000,
                "docs": docs(&[("D-1", "bill_of_lading"), ("D-2", "invoice"), ("D-3", "certificate_of_origin")]),
            } }),
            Some("approval release_signoff"),
        );
        ex.decide(
            "approve",
            &run,
            &[
                "release_signoff",
                "--as",
                "ana",
                "--comment",
                "documents complete",
            ],
        );
        ex.expect_output(
            &run,
            serde_json::json!({ "Released": { "receipt": "REL-MSCU4471235" } }),
        );
        let history = ex.history(&run);
        let checked = audit(&history, "docs_checked");
        assert_eq!(checked["data"]["ok"], true, "{checked}");
        assert_eq!(events(&history, "step_completed", "check_docs").len(), 1);
        assert_eq!(events(&history, "step_completed", "release").len(), 1);
        assert_eq!(
            events(&history, "step_completed", "notify_shipper").len(),
            1
        );
        // The http binding sent the step's idempotency key.
        let log = ex.server.log();
        assert!(
            log.contains(&format!("POST /customs/check -> 200 key={run}:")),
            "the customs check is logged with the run's idempotency key:\n{log}"
        );

        // A missing certificate: the checker reports it, customs holds the container.
        let run = ex.start(
            "cargo_release.flow",
            serde_json::json!({ "s": {
                "id": "S-2042", "container": "TGHU8812004", "value_eur": 310000,
                "docs": docs(&[("D-4", "bill_of_lading"), ("D-5", "invoice")]), "note": "urgent",
            } }),
            Some("approval release_signoff"),
        );
        ex.decide(
            "reject",
            &run,
            &[
                "release_signoff",
                "--as",
                "ana",
                "--comment",
                "certificate of origin missing",
            ],
        );
        ex.expect_output(
            &run,
            serde_json::json!({ "Held": { "reason": "certificate of origin missing" } }),
        );
        let history = ex.history(&run);
        let checked = audit(&history, "docs_checked");
        assert_eq!(checked["data"]["ok"], false, "{checked}");
        assert_eq!(
            checked["data"]["anomalies"],
            serde_json::json!(["missing certificate_of_origin"]),
            "{checked}"
        );
        assert!(events(&history, "step_started", "release").is_empty());
    });
}

#[test]
fn cargo_release_escalates_to_the_operations_manager_after_a_day() {
    for_each_store(|store| {
        let ex = Examples::with_test_clock(store);
        let run = ex.start(
            "cargo_release.flow",
            serde_json::json!({ "s": {
                "id": "S-2043", "container": "CMAU3310957", "value_eur": 52000,
                "docs": docs(&[("D-6", "bill_of_lading"), ("D-7", "invoice"), ("D-8", "certificate_of_origin")]),
            } }),
            Some("approval release_signoff"),
        );
        let refused = ex.flowrt(&["approve", &run, "release_signoff", "--as", "omar"]);
        assert_eq!(
            refused.code, 3,
            "omar may not decide yet: {}",
            refused.stderr
        );
        ex.advance("25h");
        assert_eq!(
            events(&ex.history(&run), "gate_escalated", "release_signoff").len(),
            1,
            "{}",
            ex.explain(&run)
        );
        ex.decide(
            "approve",
            &run,
            &[
                "release_signoff",
                "--as",
                "omar",
                "--comment",
                "customs is out today",
            ],
        );
        ex.expect_output(
            &run,
            serde_json::json!({ "Released": { "receipt": "REL-CMAU3310957" } }),
        );
    });
}

#[test]
fn kyc_review_extracts_with_the_model_screens_and_opens_accounts() {
    for_each_store(|store| {
        let ex = Examples::new(store);
        let upload = |id: &str, customer: &str, file: &str| {
            serde_json::json!({
                "upload": {
                    "id": id, "customer_id": customer, "department": "retail",
                    "file_url": format!("https://uploads.example.com/{file}"),
                },
                "current_year": 2026,
            })
        };

        // A passport without an address: medium risk, one compliance officer approves.
        let run = ex.start(
            "kyc_review.flow",
            upload("U-71", "C-501", "passport-lena.pdf"),
            Some("approval kyc_signoff"),
        );
        ex.decide(
            "approve",
            &run,
            &[
                "kyc_signoff",
                "--as",
                "ana",
                "--comment",
                "passport checked",
            ],
        );
        ex.expect_output(
            &run,
            serde_json::json!({ "Accepted": { "account": "DE89 3704 0044 9641 7549 00" } }),
        );
        let history = ex.history(&run);
        let extracted = events(&history, "step_completed", "extract_identity");
        assert_eq!(extracted.len(), 1, "{history:#?}");
        let scored = audit(&history, "risk_scored");
        assert_eq!(scored["data"]["city"], "unknown", "{scored}");
        assert_eq!(events(&history, "step_completed", "open_account").len(), 1);

        // A sanctions list hit: high risk (two approvals needed); one rejection closes the case.
        let run = ex.start(
            "kyc_review.flow",
            upload("U-72", "C-502", "passport-viktor.pdf"),
            Some("approval kyc_signoff"),
        );
        let history = ex.history(&run);
        let opened = events(&history, "gate_opened", "kyc_signoff");
        assert_eq!(opened.len(), 1, "{history:#?}");
        assert_eq!(opened[0]["data"]["quorum"], 2, "{}", opened[0]);
        ex.decide(
            "reject",
            &run,
            &[
                "kyc_signoff",
                "--as",
                "ben",
                "--comment",
                "confirmed sanctions list match",
            ],
        );
        ex.expect_output(
            &run,
            serde_json::json!({ "Rejected": { "reason": "confirmed sanctions list match" } }),
        );
        assert!(events(&ex.history(&run), "step_started", "open_account").is_empty());

        // A scan the model cannot read: both attempts are rejected as InvalidOutput, and the
        // customer is asked for a clearer one.
        let run = ex.start(
            "kyc_review.flow",
            upload("U-73", "C-503", "scan-blurry.jpg"),
            None,
        );
        ex.expect_output(
            &run,
            serde_json::json!({ "NeedsDocuments": { "missing": "a clearer scan of your identity document" } }),
        );
        let history = ex.history(&run);
        let failed = events(&history, "step_failed", "extract_identity");
        assert_eq!(failed.len(), 2, "two attempts: {history:#?}");
        for failure in failed {
            assert!(
                failure.to_string().contains("InvalidOutput"),
                "rejected as InvalidOutput: {failure}"
            );
        }
        let why = audit(&history, "extraction_failed");
        assert_eq!(why["data"]["kind"], "InvalidOutput", "{why}");
    });
}

#[test]
fn support_triage_classifies_drafts_and_answers_after_review() {
    for_each_store(|store| {
        let ex = Examples::new(store);

        // A broken feature of an enterprise customer: tier 2 reviews the model's draft.
        let run = ex.start(
            "support_triage.flow",
            serde_json::json!({ "t": {
                "id": "T-1001", "customer_id": "C-100", "subject": "CSV export fails",
                "body": "Exporting the March report fails with error 500.", "area": "reports",
            } }),
            Some("input review_reply"),
        );
        let history = ex.history(&run);
        let opened = events(&history, "gate_opened", "review_reply");
        assert_eq!(opened.len(), 1, "{history:#?}");
        let shown = opened[0]["data"].to_string();
        assert!(
            shown.contains("Re: CSV export fails") && shown.contains("support_tier2"),
            "the reviewer sees the model's draft, for tier 2: {shown}"
        );
        let classified = audit(&history, "classified");
        let urgency = classified["data"]["urgency"].as_str().unwrap_or_default();
        assert_eq!(urgency.trim_matches('"'), "High", "{classified}");
        ex.decide(
            "input",
            &run,
            &[
                "review_reply",
                "--as",
                "kim",
                "--value",
                r#"{"body": "We fixed the export; please try again.", "escalate": false, "tags": ["export"]}"#,
            ],
        );
        ex.expect_output(
            &run,
            serde_json::json!({ "Answered": { "message_id": "msg-T-1001" } }),
        );

        // Production is down: the on-call engineer is paged at once, nobody reviews.
        let run = ex.start(
            "support_triage.flow",
            serde_json::json!({ "t": {
                "id": "T-1002", "customer_id": "C-200", "subject": "Dashboard is down",
                "body": "Since 9:00 the dashboard is down for all our users.",
            } }),
            None,
        );
        ex.expect_output(
            &run,
            serde_json::json!({ "Escalated": { "incident": "INC-T-1002" } }),
        );
        let history = ex.history(&run);
        let paged = audit(&history, "paged");
        assert_eq!(paged["data"]["incident"], "INC-T-1002", "{paged}");

        // A customer the CRM does not know (404, not retried): the history is unavailable, the
        // ticket goes to tier 1.
        let run = ex.start(
            "support_triage.flow",
            serde_json::json!({ "t": {
                "id": "T-1003", "customer_id": "C-999", "subject": "Invoice address",
                "body": "How do I change the address on my invoices?",
            } }),
            Some("input review_reply"),
        );
        let history = ex.history(&run);
        audit(&history, "history_unavailable");
        assert_eq!(
            events(&history, "step_failed", "customer_history").len(),
            1,
            "{history:#?}"
        );
        ex.decide(
            "input",
            &run,
            &[
                "review_reply",
                "--as",
                "sam",
                "--value",
                r#"{"body": "You can change it under Settings > Billing.", "escalate": false, "tags": ["billing"]}"#,
            ],
        );
        ex.expect_output(
            &run,
            serde_json::json!({ "Answered": { "message_id": "msg-T-1003" } }),
        );
    });
}

#[test]
fn support_triage_batches_replies_to_customers_with_many_open_tickets() {
    for_each_store(|store| {
        let ex = Examples::with_test_clock(store);
        let run = ex.start(
            "support_triage.flow",
            serde_json::json!({ "t": {
                "id": "T-1004", "customer_id": "C-300", "subject": "Upgrade",
                "body": "Which plan includes single sign-on?",
            } }),
            Some("input review_reply"),
        );
        ex.decide(
            "input",
            &run,
            &[
                "review_reply",
                "--as",
                "sam",
                "--value",
                r#"{"body": "Single sign-on comes with the Team plan.", "escalate": false, "tags": ["sales"]}"#,
            ],
        );
        // Five open tickets on the starter plan: the reply waits ten minutes for the others.
        let status = ex.status(&run);
        assert_eq!(status["status"], "waiting", "{}", ex.explain(&run));
        assert_eq!(status["waiting_on"], "timer", "{}", ex.explain(&run));
        assert!(
            !ex.server.log().contains("POST /helpdesk/reply"),
            "nothing sent before the timer fires:\n{}",
            ex.server.log()
        );
        ex.advance("10m");
        ex.expect_output(
            &run,
            serde_json::json!({ "Answered": { "message_id": "msg-T-1004" } }),
        );
    });
}

#[test]
fn run_sh_runs_every_example() {
    for_each_store(|store| {
        python3();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = TestDb::create_named(store, dir.path(), "examples.db");
        let mut command = Command::new("sh");
        command
            .arg(root().join("examples/run.sh"))
            .current_dir(dir.path())
            .env("FLOWRT", FLOWRT)
            .env("FLOW_EXAMPLES_PORT", "0")
            .env_remove("FLOW_CONFIG")
            .env_remove("FLOW_LEASE_MS")
            .stdin(Stdio::null());
        db.apply(&mut command);
        let output = command.output().expect("sh starts");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(0),
            "examples/run.sh failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        for expected in [
            "every example ran as expected",
            r#"=> completed: {"Released":{"receipt":"REL-MSCU4471235"}}"#,
            r#"=> completed: {"Held":{"reason":"certificate of origin missing"}}"#,
            r#"=> completed: {"Accepted":{"account":"DE89 3704 0044 9641 7549 00"}}"#,
            r#"=> completed: {"NeedsDocuments":{"missing":"a clearer scan of your identity document"}}"#,
            r#"=> completed: {"Answered":{"message_id":"msg-T-1001"}}"#,
            r#"=> completed: {"Escalated":{"incident":"INC-T-1002"}}"#,
        ] {
            assert!(
                stdout.contains(expected),
                "examples/run.sh printed no {expected:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
        }
        assert_eq!(
            stdout.matches("=> completed:").count(),
            10,
            "ten runs completed:\n{stdout}"
        );
    });
}
