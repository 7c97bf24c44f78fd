//! `flowrt … --json` and the HTTP API show the same views: on one database, served by a real
//! `flowrt serve` on 127.0.0.1, the JSON of `flowrt approvals --as U`, `history RUN`,
//! `status RUN`, `runs` and `audit RUN` equals that of `GET /api/decisions` as U,
//! `GET /api/runs/RUN/history`, `GET /api/runs/RUN`, `GET /api/runs` and
//! `GET /api/runs/RUN/audit`; and both sides apply the same rules (who may cancel, a decision
//! bound to the view hash either shows).
#![cfg(unix)]

mod common;

use common::server::Served;
use common::{Out, for_each_store};
use serde_json::{Value, json};

const USERS: &str = r#"[users.ines]
roles = ["clerk"]

[users.alice]
roles = ["customs"]

[users.bob]
roles = ["customs"]

[users.dave]
roles = ["auditor"]

[users.vera]
roles = ["visitor"]

[workflows.release]
starters = ["clerk", "customs"]
"#;

const PROGRAM: &str = r#"type Shipment = { id: String, value: Int }
type Review = { ok: Bool, notes: List<String> }

tool ship(id: String) -> String via exec "flowrt:echo"

workflow release(s: Shipment) -> String {
  let d = await approval "release_signoff" {
    approvers: role("customs"),
    prompt: "Release ${s.id} worth ${s.value}?",
    context: s,
    quorum: if s.value > 1000 { 2 } else { 1 },
    timeout: 48h,
    escalate: role("auditor") after 24h,
  }
  if !d.approved { return "held by ${d.by}: ${d.comment}" }
  ship(s.id)
}

workflow intake(id: String) -> String {
  let r = await input<Review> "review" { from: role("customs"), prompt: "Review ${id}" }
  if r.ok { "accepted ${id}" } else { "declined ${id}" }
}
"#;

/// `flowrt ARGS` on the served database.
fn flowrt(server: &Served, args: &[&str]) -> Out {
    let output = server.flowrt().args(args).output().expect("flowrt runs");
    Out::from_output(args, &output)
}

fn start(server: &Served, token: &str, workflow: &str, input: Value) -> String {
    let started = server.call(
        "POST",
        "/api/runs",
        Some(token),
        Some(json!({ "workflow": workflow, "input": input })),
        201,
    );
    started["id"].as_str().expect("an id").to_string()
}

#[test]
fn cli_json_and_api_show_the_same_views() {
    for_each_store(|store| {
        let server = Served::start(store, PROGRAM, USERS, &[]);
        let ines = server.token("ines", &[]);
        let alice = server.token("alice", &[]);
        let bob = server.token("bob", &[]);
        let dave = server.token("dave", &[]);

        // A quorum gate with one approval recorded, a small release decided, an input.
        let big = start(
            &server,
            &ines,
            "release",
            json!({ "s": { "id": "S-9", "value": 5000 } }),
        );
        let small = start(
            &server,
            &ines,
            "release",
            json!({ "s": { "id": "S-1", "value": 10 } }),
        );
        let intake = start(&server, &ines, "intake", json!({ "id": "I-1" }));
        server.call(
            "POST",
            &format!("/api/runs/{big}/gates/release_signoff/approve"),
            Some(&alice),
            Some(json!({ "comment": "papers ok" })),
            200,
        );
        server.call(
            "POST",
            &format!("/api/runs/{small}/gates/release_signoff/approve"),
            Some(&alice),
            Some(json!({})),
            200,
        );
        // Its tool call is made off the engine thread: wait until the run is done, so that
        // nothing changes between the reads below.
        server.wait_for_status(
            &dave,
            &small,
            "completed",
            std::time::Duration::from_secs(30),
        );

        // The gates waiting for bob: the quorum's second approval, with alice's first shown.
        let listed = flowrt(&server, &["approvals", "--as", "bob", "--json"]);
        listed.expect_code(0);
        let cli = listed.json();
        let api = server.call("GET", "/api/decisions", Some(&bob), None, 200);
        assert_eq!(
            cli, api,
            "flowrt approvals --as bob --json and GET /api/decisions"
        );
        let gates = api.as_array().expect("a list");
        assert_eq!(gates.len(), 2, "{api}");
        let gate = gates
            .iter()
            .find(|g| g["run"] == big.as_str())
            .expect("the quorum gate");
        assert_eq!(gate["decisions"][0]["by"], "alice", "{gate}");
        assert_eq!(gate["remaining"], 1, "{gate}");
        assert!(gate["opened_at"].is_i64(), "{gate}");
        assert!(gate["deadline"].is_i64(), "{gate}");
        assert!(gate["at_deadline"].is_string(), "{gate}");
        assert_eq!(gate["escalation"]["fired"], false, "{gate}");
        assert_eq!(gate["view_hash"].as_str().map(str::len), Some(64), "{gate}");
        let input = gates
            .iter()
            .find(|g| g["run"] == intake.as_str())
            .expect("the input");
        assert!(input["input_schema"].is_object(), "{input}");
        // The same for alice, for whom only the input waits.
        let cli = flowrt(&server, &["approvals", "--as", "alice", "--json"]).json();
        let api = server.call("GET", "/api/decisions", Some(&alice), None, 200);
        assert_eq!(cli, api);
        assert_eq!(api.as_array().map(Vec::len), Some(1), "{api}");

        for run in [&big, &small, &intake] {
            let cli = flowrt(&server, &["history", run, "--json"]);
            cli.expect_code(0);
            let api = server.call(
                "GET",
                &format!("/api/runs/{run}/history"),
                Some(&dave),
                None,
                200,
            );
            assert_eq!(cli.json(), api, "the history of {run}");
            assert_eq!(api[0]["kind"], "run_started", "{api}");
            assert!(api[0]["at"].is_i64(), "{api}");

            let cli = flowrt(&server, &["status", run, "--json"]).json();
            let api = server.call("GET", &format!("/api/runs/{run}"), Some(&dave), None, 200);
            assert_eq!(cli, api, "the run {run}");

            // The audit trail: its records, one a line, are the API's.
            let cli = flowrt(&server, &["audit", run, "--json"]);
            let api = server.call(
                "GET",
                &format!("/api/runs/{run}/audit"),
                Some(&dave),
                None,
                200,
            );
            let lines: Vec<Value> = cli
                .stdout
                .lines()
                .map(|l| serde_json::from_str(l).expect("one JSON record a line"))
                .collect();
            assert_eq!(Value::Array(lines), api["records"], "the trail of {run}");
            assert_eq!(api["verified"], true, "{api}");
        }
        let small_run = server.call("GET", &format!("/api/runs/{small}"), Some(&dave), None, 200);
        assert_eq!(small_run["status"], "completed", "{small_run}");
        assert_eq!(small_run["gate"], Value::Null);
        let big_run = server.call("GET", &format!("/api/runs/{big}"), Some(&dave), None, 200);
        assert_eq!(big_run["gate"]["run"], big.as_str(), "{big_run}");
        assert_eq!(big_run["input"]["s"]["id"], "S-9", "{big_run}");

        // The operator reads every run; so does the auditor through the API.
        let cli = flowrt(&server, &["runs", "--json"]).json();
        let api = server.call("GET", "/api/runs", Some(&dave), None, 200);
        assert_eq!(cli, api, "flowrt runs --json and GET /api/runs");
        assert_eq!(api.as_array().map(Vec::len), Some(3), "{api}");
        let cli = flowrt(
            &server,
            &[
                "runs",
                "--status",
                "waiting",
                "--workflow",
                "release",
                "--json",
            ],
        )
        .json();
        let api = server.call(
            "GET",
            "/api/runs?status=waiting&workflow=release",
            Some(&dave),
            None,
            200,
        );
        assert_eq!(cli, api);
        assert_eq!(api.as_array().map(Vec::len), Some(1), "{api}");
    });
}

#[test]
fn cli_and_api_apply_the_same_rules() {
    for_each_store(|store| {
        let server = Served::start(store, PROGRAM, USERS, &[]);
        let ines = server.token("ines", &[]);
        let bob = server.token("bob", &[]);
        let vera = server.token("vera", &[]);
        let run = start(
            &server,
            &ines,
            "release",
            json!({ "s": { "id": "S-2", "value": 20 } }),
        );

        // vera neither started the run nor may start `release`: refused on both sides, in the
        // same words, each refusal recorded in the run's trail.
        let api = server.call(
            "POST",
            &format!("/api/runs/{run}/cancel"),
            Some(&vera),
            None,
            403,
        );
        let why = api["error"]["message"].as_str().expect("a message");
        assert!(why.contains("may cancel it"), "{why}");
        let cli = flowrt(&server, &["cancel", &run, "--as", "vera"]);
        cli.expect_code(3).expect_stderr(&format!("refused: {why}"));
        let history = flowrt(&server, &["history", &run, "--json"]).json();
        let refusals: Vec<&Value> = history
            .as_array()
            .expect("a list")
            .iter()
            .filter(|e| e["kind"] == "request_refused")
            .collect();
        assert_eq!(refusals.len(), 2, "{history}");
        assert_eq!(
            refusals[0]["data"]["request"],
            format!("POST /api/runs/{run}/cancel")
        );
        assert_eq!(
            refusals[1]["data"]["request"],
            format!("flowrt cancel {run}")
        );
        for refusal in &refusals {
            assert_eq!(refusal["data"]["reason"], why, "{refusal}");
            assert_eq!(refusal["data"]["status"], 403, "{refusal}");
            assert_eq!(refusal["data"]["by"], "vera", "{refusal}");
        }

        // A rejection needs a comment on both sides.
        let api = server.call(
            "POST",
            &format!("/api/runs/{run}/gates/release_signoff/reject"),
            Some(&bob),
            Some(json!({ "comment": "  " })),
            400,
        );
        assert!(
            api["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("`comment`")),
            "{api}"
        );
        flowrt(&server, &["reject", &run, "release_signoff", "--as", "bob"])
            .expect_code(2)
            .expect_stderr("reject needs --comment saying why");

        // The view hash the API shows binds a decision made through flowrt.
        let gate = &server.call("GET", "/api/decisions", Some(&bob), None, 200)[0];
        let hash = gate["view_hash"].as_str().expect("a view hash").to_string();
        let stale = "0".repeat(64);
        flowrt(
            &server,
            &[
                "approve",
                &run,
                "release_signoff",
                "--as",
                "bob",
                "--expect-hash",
                &stale,
            ],
        )
        .expect_code(3)
        .expect_stderr("refused:");
        flowrt(
            &server,
            &[
                "approve",
                &run,
                "release_signoff",
                "--as",
                "bob",
                "--expect-hash",
                &hash,
            ],
        )
        .expect_code(0)
        .expect_stdout(&format!("decided; run {run} is now completed"));

        // A finished run: 409 from the API, "nothing to cancel" from flowrt.
        server.call(
            "POST",
            &format!("/api/runs/{run}/cancel"),
            Some(&ines),
            None,
            409,
        );
        flowrt(&server, &["cancel", &run, "--as", "ines"])
            .expect_code(2)
            .expect_stderr("has already finished; nothing to cancel");
    });
}
