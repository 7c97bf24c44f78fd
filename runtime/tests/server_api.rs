//! `flowrt serve` over real HTTP on 127.0.0.1: every endpoint, every refusal (no token,
//! unknown, expired and revoked tokens, wrong role, four-eyes, not a starter, stale view hash,
//! double decision, bad input, bad JSON), refusals recorded, a quorum gate's earlier decisions
//! and evaluated options (checked against the OpenAPI document), the OpenAPI document reaching
//! every operation, and a graceful stop on SIGTERM that leaves nothing half-written.
#![cfg(unix)]

mod common;

use common::server::Served;
use common::{Store, for_each_store};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

const USERS: &str = r#"[users.ines]
roles = ["clerk"]

[users.alice]
roles = ["customs"]

[users.bob]
roles = ["customs"]

[users.dave]
roles = ["auditor"]

[workflows.release]
starters = ["clerk", "customs"]
"#;

const PROGRAM: &str = r#"type Shipment = { id: String, value: Int }
type Review = { ok: Bool, notes: List<String>, priority: Int? }

tool ship(id: String) -> String via exec "flowrt:echo"

workflow release(s: Shipment) -> String {
  let d = await approval "release_signoff" {
    approvers: role("customs"),
    prompt: "Release ${s.id} worth ${s.value}?",
    context: s,
    quorum: if s.value > 1000 { 2 } else { 1 },
  }
  if !d.approved { return "held by ${d.by}: ${d.comment}" }
  ship(s.id)
}

workflow intake(id: String) -> String {
  let r = await input<Review> "review" { from: role("customs"), prompt: "Review ${id}" }
  if r.ok { "accepted ${id} with ${len(r.notes)} note(s)" } else { "declined ${id}" }
}
"#;

/// `flowrt serve` of the program above with the users above; killed when dropped.
type Server = Served;

fn serve(store: &Store) -> Server {
    Served::start(store, PROGRAM, USERS, &[])
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

fn start_release(server: &Server, token: &str, id: &str, value: i64) -> String {
    let started = server.call(
        "POST",
        "/api/runs",
        Some(token),
        Some(json!({ "workflow": "release", "input": { "s": { "id": id, "value": value } } })),
        201,
    );
    assert_eq!(started["status"], "waiting");
    started["id"].as_str().expect("an id").to_string()
}

#[test]
fn every_endpoint_works_for_an_authorized_user() {
    for_each_store(|store| {
        let server = serve(store);
        let ines = server.token("ines", &["--name", "intake"]);
        let alice = server.token("alice", &[]);

        assert_eq!(
            server.call("GET", "/health", None, None, 200)["status"],
            "ok"
        );
        let me = server.call("GET", "/api/me", Some(&alice), None, 200);
        assert_eq!(me, json!({ "user": "alice", "roles": ["customs"] }));

        let workflows = server.call("GET", "/api/workflows", Some(&ines), None, 200);
        let release = workflows
            .as_array()
            .expect("a list")
            .iter()
            .find(|w| w["name"] == "release")
            .expect("release is listed");
        assert_eq!(release["may_start"], true);
        assert_eq!(
            release["input_schema"]["properties"]["s"]["properties"]["value"]["type"],
            "integer"
        );

        let run = start_release(&server, &ines, "S-1", 10);
        let listed = server.call(
            "GET",
            "/api/runs?status=waiting&workflow=release",
            Some(&alice),
            None,
            200,
        );
        assert!(
            listed
                .as_array()
                .expect("a list")
                .iter()
                .any(|r| r["id"] == run.as_str())
        );
        assert_eq!(
            server.call("GET", "/api/runs?status=completed", Some(&alice), None, 200),
            json!([])
        );

        let decisions = server.call("GET", "/api/decisions", Some(&alice), None, 200);
        let gate = &decisions[0];
        assert_eq!(gate["run"], run.as_str());
        assert_eq!(gate["gate"], "release_signoff");
        assert_eq!(gate["kind"], "approval");
        assert_eq!(gate["prompt"], "Release S-1 worth 10?");
        assert_eq!(gate["context"], json!({ "id": "S-1", "value": 10 }));
        let status = server.call("GET", &format!("/api/runs/{run}"), Some(&alice), None, 200);
        assert_eq!(status["gate"]["view_hash"], gate["view_hash"]);
        assert_eq!(
            status["input"],
            json!({ "s": { "id": "S-1", "value": 10 } })
        );

        let decided = server.call(
            "POST",
            &format!("/api/runs/{run}/gates/release_signoff/approve"),
            Some(&alice),
            Some(json!({ "comment": "papers in order", "view_hash": gate["view_hash"] })),
            200,
        );
        assert_eq!(
            decided,
            json!({ "decision": "closed", "remaining": 0, "run_status": "completed" })
        );
        let status = server.call("GET", &format!("/api/runs/{run}"), Some(&ines), None, 200);
        assert_eq!(status["status"], "completed");
        assert_eq!(status["output"], "S-1");

        let history = server.call(
            "GET",
            &format!("/api/runs/{run}/history"),
            Some(&ines),
            None,
            200,
        );
        let kinds: Vec<&str> = history
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        assert!(
            kinds.contains(&"gate_opened") && kinds.contains(&"run_completed"),
            "{kinds:?}"
        );
        let audit = server.call(
            "GET",
            &format!("/api/runs/{run}/audit"),
            Some(&ines),
            None,
            200,
        );
        assert_eq!(audit["verified"], true);
        assert_eq!(audit["records"].as_array().map(Vec::len), Some(kinds.len()));

        // An input gate with a record value.
        let started = server.call(
            "POST",
            "/api/runs",
            Some(&alice),
            Some(json!({ "workflow": "intake", "input": { "id": "I-1" } })),
            201,
        );
        let intake = started["id"].as_str().expect("an id").to_string();
        let decisions = server.call("GET", "/api/decisions", Some(&alice), None, 200);
        let review = decisions
            .as_array()
            .expect("a list")
            .iter()
            .find(|g| g["run"] == intake.as_str())
            .expect("the input is offered");
        assert_eq!(review["kind"], "input");
        assert_eq!(
            review["input_schema"]["properties"]["notes"]["type"],
            "array"
        );
        let decided = server.call(
            "POST",
            &format!("/api/runs/{intake}/gates/review/input"),
            Some(&alice),
            Some(json!({ "value": { "ok": true, "notes": ["a", "b"] } })),
            200,
        );
        assert_eq!(decided["run_status"], "completed");
        let status = server.call(
            "GET",
            &format!("/api/runs/{intake}"),
            Some(&alice),
            None,
            200,
        );
        assert_eq!(status["output"], "accepted I-1 with 2 note(s)");

        // A rejection, and a cancel.
        let run = start_release(&server, &ines, "S-2", 10);
        let decided = server.call(
            "POST",
            &format!("/api/runs/{run}/gates/release_signoff/reject"),
            Some(&alice),
            Some(json!({ "comment": "seal broken" })),
            200,
        );
        assert_eq!(decided["run_status"], "completed");
        let status = server.call("GET", &format!("/api/runs/{run}"), Some(&alice), None, 200);
        assert_eq!(status["output"], "held by alice: seal broken");
        let run = start_release(&server, &ines, "S-3", 10);
        assert_eq!(
            server.call(
                "POST",
                &format!("/api/runs/{run}/cancel"),
                Some(&ines),
                None,
                200
            ),
            json!({ "cancelled": true })
        );

        let dave = server.token("dave", &[]);
        let metrics = server.call("GET", "/metrics", Some(&dave), None, 200);
        let text = metrics.as_str().expect("text");
        assert!(
            text.contains("flow_runs{workflow=\"release\",status=\"completed\"} 2")
                && text.contains("flow_runs{workflow=\"intake\",status=\"completed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("flow_runs{workflow=\"release\",status=\"cancelled\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("flow_runs{workflow=\"release\",status=\"failed\"} 0"),
            "a series per status, zeros too: {text}"
        );
        assert!(
            text.contains("flow_open_gates{kind=\"approval\"} 0"),
            "{text}"
        );
        assert!(text.contains("flow_oldest_open_gate_age_seconds"), "{text}");
        assert!(text.contains("flow_steps_per_second"), "{text}");
        assert!(
            text.contains("flow_notification_failures_total 0"),
            "{text}"
        );
    });
}

#[test]
fn every_refusal_is_an_error_with_a_status_and_is_recorded() {
    for_each_store(|store| {
        let mut server = serve(store);
        let ines = server.token("ines", &[]);
        let alice = server.token("alice", &[]);
        let bob = server.token("bob", &[]);
        let dave = server.token("dave", &[]);

        // Tokens: none, unknown, revoked, expired. Only /health needs none.
        let body = server.call("GET", "/api/decisions", None, None, 401);
        assert_eq!(error_code(&body), "unauthorized");
        server.call("GET", "/openapi.json", None, None, 401);
        server.call("GET", "/metrics", None, None, 401);
        server.call("GET", "/api/me", Some("flow_0000"), None, 401);
        let revoked = server.token("bob", &["--name", "old"]);
        let list = server
            .flowrt()
            .args(["token", "list", "--json"])
            .output()
            .expect("lists");
        let tokens: Value = serde_json::from_slice(&list.stdout).expect("JSON");
        let old = tokens
            .as_array()
            .expect("a list")
            .iter()
            .find(|t| t["name"] == "old")
            .expect("the token is listed");
        assert!(
            !String::from_utf8_lossy(&list.stdout).contains(&revoked),
            "tokens are never shown again"
        );
        let status = server
            .flowrt()
            .args(["token", "revoke", old["id"].as_str().expect("an id")])
            .status()
            .expect("revokes");
        assert!(status.success());
        let body = server.call("GET", "/api/me", Some(&revoked), None, 401);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("revoked"),
            "{body}"
        );
        let expiring = server.token("bob", &["--expires", "1s"]);
        server.call("GET", "/api/me", Some(&expiring), None, 200);
        std::thread::sleep(Duration::from_millis(1_100));
        let body = server.call("GET", "/api/me", Some(&expiring), None, 401);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("expired"),
            "{body}"
        );

        // Starting: not a starter (403), unknown workflow (404), bad input (422), bad JSON (400).
        let body = server.call(
            "POST",
            "/api/runs",
            Some(&dave),
            Some(json!({ "workflow": "release", "input": { "s": { "id": "S", "value": 1 } } })),
            403,
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("needs role clerk or customs"),
            "{body}"
        );
        server.call(
            "POST",
            "/api/runs",
            Some(&ines),
            Some(json!({ "workflow": "nope" })),
            404,
        );
        let body = server.call(
            "POST",
            "/api/runs",
            Some(&ines),
            Some(json!({ "workflow": "release", "input": { "s": { "id": "S", "value": "ten" } } })),
            422,
        );
        assert_eq!(error_code(&body), "invalid_input");
        assert_eq!(body["error"]["problems"][0]["path"], "$.s.value");
        let (status, _) = server
            .try_request("POST", "/api/runs", Some(&ines), Some("{not json"))
            .expect("answers");
        assert_eq!(status, 400);

        // Deciding: wrong role, four-eyes, stale view, double decision, reject without comment,
        // a value that does not fit, an unknown run.
        let run = start_release(&server, &alice, "S-4", 5_000);
        let approve = format!("/api/runs/{run}/gates/release_signoff/approve");
        let body = server.call("POST", &approve, Some(&dave), Some(json!({})), 403);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("needs role customs"),
            "{body}"
        );
        let body = server.call("POST", &approve, Some(&alice), Some(json!({})), 403);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("four-eyes"),
            "{body}"
        );
        let body = server.call(
            "POST",
            &approve,
            Some(&bob),
            Some(json!({ "view_hash": "0000" })),
            409,
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("changed since you looked"),
            "{body}"
        );
        let decided = server.call(
            "POST",
            &approve,
            Some(&bob),
            Some(json!({ "comment": "one" })),
            200,
        );
        assert_eq!(
            decided,
            json!({ "decision": "recorded", "remaining": 1, "run_status": "waiting" })
        );
        let body = server.call("POST", &approve, Some(&bob), Some(json!({})), 409);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("already approved"),
            "{body}"
        );
        server.call(
            "POST",
            &format!("/api/runs/{run}/gates/release_signoff/reject"),
            Some(&bob),
            Some(json!({ "comment": "  " })),
            400,
        );
        let intake = server.call(
            "POST",
            "/api/runs",
            Some(&ines),
            Some(json!({ "workflow": "intake", "input": { "id": "I-2" } })),
            201,
        )["id"]
            .as_str()
            .expect("an id")
            .to_string();
        let body = server.call(
            "POST",
            &format!("/api/runs/{intake}/gates/review/input"),
            Some(&alice),
            Some(json!({ "value": { "ok": "yes", "notes": [] } })),
            422,
        );
        assert_eq!(body["error"]["problems"][0]["path"], "$.ok", "{body}");
        server.call(
            "POST",
            "/api/runs/r-nope/gates/release_signoff/approve",
            Some(&bob),
            Some(json!({})),
            404,
        );
        server.call("GET", "/api/runs/r-nope", Some(&bob), None, 404);
        server.call(
            "POST",
            &format!("/api/runs/{run}/cancel"),
            Some(&dave),
            None,
            403,
        );

        // A wrong-role reviewer does not see the gate.
        let seen = server.call("GET", "/api/decisions", Some(&dave), None, 200);
        assert_eq!(seen, json!([]));

        // Refusals that concern a run are in its audit trail; the others in the refusal log.
        let history = server.call(
            "GET",
            &format!("/api/runs/{run}/history"),
            Some(&bob),
            None,
            200,
        );
        let refusals: Vec<&Value> = history
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["kind"] == "request_refused")
            .collect();
        assert_eq!(refusals.len(), 5, "{refusals:?}");
        assert_eq!(refusals[0]["data"]["by"], "dave");
        assert_eq!(refusals[0]["data"]["status"], 403);
        let audit = server.call(
            "GET",
            &format!("/api/runs/{run}/audit"),
            Some(&bob),
            None,
            200,
        );
        assert_eq!(audit["verified"], true, "refusals keep the chain intact");

        assert!(server.stop().success());
        let log = server
            .flowrt()
            .args(["audit", "refusals"])
            .output()
            .expect("lists");
        let log = String::from_utf8_lossy(&log.stdout);
        assert!(log.contains("401 no token GET /api/decisions"), "{log}");
        assert!(log.contains("401 unknown token GET /api/me"), "{log}");
        assert!(log.contains("revoked"), "{log}");
        assert!(log.contains("403 dave POST /api/runs"), "{log}");
    });
}

#[test]
fn the_openapi_document_reaches_every_operation() {
    for_each_store(|store| {
        let server = serve(store);
        let token = server.token("alice", &[]);
        let document = server.call("GET", "/openapi.json", Some(&token), None, 200);
        assert_eq!(document["openapi"], "3.0.3");
        let paths = document["paths"].as_object().expect("paths");
        assert!(paths.len() >= 14, "{}", paths.len());
        for (path, operations) in paths {
            let concrete = path.replace("{id}", "r-none").replace("{gate}", "g");
            for method in operations.as_object().expect("operations").keys() {
                let (status, body) = server
                    .try_request(&method.to_uppercase(), &concrete, Some(&token), Some("{}"))
                    .expect("answers");
                assert!(status < 500, "{method} {path}: {status} {body}");
                assert!(
                    !body.contains("no such endpoint"),
                    "{method} {path} is documented but not served"
                );
                let documented = operations[method]["responses"]
                    .as_object()
                    .expect("responses");
                assert!(
                    documented.contains_key(&status.to_string()),
                    "{method} {path} answered {status}, which is not documented: {body}"
                );
            }
        }
        let body = server.call("GET", "/api/nothing-here", Some(&token), None, 404);
        assert_eq!(body["error"]["message"], "no such endpoint");
    });
}

#[test]
fn sigterm_stops_after_the_step_in_progress_and_nothing_is_half_written() {
    for_each_store(|store| {
        let mut server = serve(store);
        let ines = server.token("ines", &[]);
        let alice = server.token("alice", &[]);
        let mut runs = Vec::new();
        for i in 0..20 {
            runs.push(start_release(&server, &ines, &format!("S-{i}"), 1));
        }
        // Decide them from another thread while the server is told to stop.
        let addr = server.addr;
        let paths: Vec<String> = runs
            .iter()
            .map(|r| format!("/api/runs/{r}/gates/release_signoff/approve"))
            .collect();
        let deciding = std::thread::spawn(move || {
            let mut answered = 0;
            for path in paths {
                let Ok(mut stream) = TcpStream::connect(addr) else {
                    break;
                };
                let request = format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                );
                if stream.write_all(request.as_bytes()).is_err() {
                    break;
                }
                let mut text = String::new();
                let _ = stream.read_to_string(&mut text);
                if text.starts_with("HTTP/1.1 200") {
                    answered += 1;
                }
            }
            answered
        });
        std::thread::sleep(Duration::from_millis(30));
        let status = server.stop();
        assert!(
            status.success(),
            "flowrt serve exits 0 on SIGTERM: {status:?}"
        );
        let answered = deciding.join().expect("the client thread");
        // Every decision that was answered 200 is recorded and its run completed; the others
        // still wait, intact; the audit trail verifies.
        let verify = server
            .flowrt()
            .args(["audit", "verify"])
            .output()
            .expect("verifies");
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stdout)
        );
        let listing = server
            .flowrt()
            .args(["runs", "--json"])
            .output()
            .expect("lists");
        let listed: Value = serde_json::from_slice(&listing.stdout).expect("JSON");
        let completed = listed
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| r["status"] == "completed")
            .count();
        let waiting = listed
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| r["status"] == "waiting")
            .count();
        assert_eq!(completed + waiting, 20, "{listed}");
        assert!(
            completed >= answered,
            "{completed} completed, {answered} answered"
        );
        // The next process takes over where this one stopped.
        server.spawn();
        let decisions = server.call(
            "GET",
            "/api/decisions",
            Some(&server.token("bob", &[])),
            None,
            200,
        );
        assert_eq!(decisions.as_array().map(Vec::len), Some(waiting));
    });
}

/// A client no one here wrote, generating requests from the OpenAPI document: no request
/// may get a 5xx. `schemathesis` comes from PyPI (`.ci/run` and `./test.sh` install it).
#[test]
fn schemathesis_finds_no_server_error() {
    for_each_store(|store| {
        let version = Command::new("schemathesis").arg("--version").output();
        let Ok(version) = version else {
            panic!(
                "schemathesis is needed: python3 -m pip install schemathesis (./test.sh does it)"
            );
        };
        assert!(version.status.success(), "schemathesis --version failed");
        let server = serve(store);
        let ines = server.token("ines", &[]);
        let alice = server.token("alice", &[]);
        // Something to find: a waiting run and a finished one.
        let run = start_release(&server, &ines, "S-1", 10);
        server.call(
            "POST",
            &format!("/api/runs/{run}/gates/release_signoff/approve"),
            Some(&alice),
            Some(json!({})),
            200,
        );
        start_release(&server, &ines, "S-2", 10);
        let output = Command::new("schemathesis")
            .args(["run", &format!("http://{}/openapi.json", server.addr)])
            .args(["--header", &format!("Authorization: Bearer {alice}")])
            .args(["--checks", "not_a_server_error"])
            .args(["--max-examples", "20", "--request-timeout", "30"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .env("NO_COLOR", "1")
            .output()
            .expect("schemathesis runs");
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "schemathesis found problems:\n{report}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

const ORDERED_PROGRAM: &str = r#"type Party = { name: String, country: String, id: Int }

workflow check(p: Party) -> Bool {
  let d = await approval "check" {
    approvers: role("customs"),
    prompt: "Check ${p.name}?",
    context: { zeta: p.id, alpha: p.name, mid: { party: p, parties: [p], note: "n" } },
  }
  d.approved
}

workflow bare(id: String) -> String {
  let v = await input<Int> "count" { from: role("customs"), prompt: "How many for ${id}?" }
  "${id}: ${v}"
}
"#;

/// A gate's context comes with its schema, over HTTP: the fields in the order the workflow
/// wrote them (`x-order`), nested records in the order written or declared, in
/// `GET /api/decisions` and in the run's gate; a gate without a context has none. The context
/// itself, and the view hash of what the reviewer saw (prompt and context only), are as they
/// always were.
#[test]
fn a_gate_shows_the_schema_of_its_context_in_the_order_written() {
    use sha2::{Digest, Sha256};
    for_each_store(|store| {
        let server = Served::start(store, ORDERED_PROGRAM, USERS, &[]);
        let ines = server.token("ines", &[]);
        let alice = server.token("alice", &[]);
        let doc = server.call("GET", "/openapi.json", Some(&ines), None, 200);
        let party = json!({ "name": "Acme", "country": "NL", "id": 7 });
        let started = server.call(
            "POST",
            "/api/runs",
            Some(&ines),
            Some(json!({ "workflow": "check", "input": { "p": party } })),
            201,
        );
        let run = started["id"].as_str().expect("an id").to_string();
        let decisions = server.call("GET", "/api/decisions", Some(&alice), None, 200);
        let gate = decisions
            .as_array()
            .expect("a list")
            .iter()
            .find(|g| g["run"] == run.as_str())
            .unwrap_or_else(|| panic!("the gate is offered: {decisions}"))
            .clone();
        conforms(&doc, "Decision", &gate);
        let schema = &gate["context_schema"];
        assert_eq!(
            schema["x-order"],
            json!(["zeta", "alpha", "mid"]),
            "{schema}"
        );
        let mid = &schema["properties"]["mid"];
        assert_eq!(
            mid["x-order"],
            json!(["party", "parties", "note"]),
            "{schema}"
        );
        let declared = json!(["name", "country", "id"]);
        assert_eq!(mid["properties"]["party"]["x-order"], declared, "{schema}");
        assert_eq!(mid["properties"]["party"]["title"], "Party", "{schema}");
        assert_eq!(
            mid["properties"]["parties"]["items"]["x-order"], declared,
            "{schema}"
        );
        // The context is the value as before, and the hash covers the prompt and it alone.
        let context = json!({ "zeta": 7, "alpha": "Acme", "mid": { "party": party, "parties": [party], "note": "n" } });
        assert_eq!(gate["context"], context);
        let shown = json!({ "prompt": "Check Acme?", "context": context }).to_string();
        let hash: String = Sha256::digest(shown.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(gate["view_hash"], hash.as_str());
        let status = server.call("GET", &format!("/api/runs/{run}"), Some(&ines), None, 200);
        conforms(&doc, "Decision", &status["gate"]);
        assert_eq!(status["gate"]["context_schema"], gate["context_schema"]);

        // An input without a context: no schema of one (the input's own schema is there).
        let started = server.call(
            "POST",
            "/api/runs",
            Some(&alice),
            Some(json!({ "workflow": "bare", "input": { "id": "B-1" } })),
            201,
        );
        let bare = started["id"].as_str().expect("an id").to_string();
        let status = server.call("GET", &format!("/api/runs/{bare}"), Some(&alice), None, 200);
        conforms(&doc, "Decision", &status["gate"]);
        assert!(status["gate"]["context_schema"].is_null(), "{status}");
        assert_eq!(
            status["gate"]["input_schema"]["type"], "integer",
            "{status}"
        );
    });
}

/// Every key of `object` is a property of the OpenAPI component `name`, and every property
/// the component requires is there: the document describes what the server sends.
fn conforms(doc: &Value, name: &str, object: &Value) {
    let schema = &doc["components"]["schemas"][name];
    let properties = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("the component {name} has no properties: {schema}"));
    let object = object
        .as_object()
        .unwrap_or_else(|| panic!("{name}: not an object: {object}"));
    for key in object.keys() {
        assert!(
            properties.contains_key(key),
            "{name}: the server sends `{key}`, which /openapi.json does not describe"
        );
    }
    for key in schema["required"].as_array().into_iter().flatten() {
        let key = key.as_str().unwrap_or_default();
        assert!(
            object.contains_key(key),
            "{name}: /openapi.json requires `{key}`, which the server does not send: {object:?}"
        );
    }
}

#[test]
fn a_quorum_gate_shows_earlier_decisions_its_plan_and_its_options() {
    for_each_store(|store| {
        let server = serve(store);
        let ines = server.token("ines", &[]);
        let alice = server.token("alice", &[]);
        let bob = server.token("bob", &[]);
        let doc = server.call("GET", "/openapi.json", Some(&ines), None, 200);
        // Worth more than 1000: the workflow computes a quorum of two.
        let run = start_release(&server, &ines, "S-Q", 5000);
        let decided = server.call(
            "POST",
            &format!("/api/runs/{run}/gates/release_signoff/approve"),
            Some(&alice),
            Some(json!({ "comment": "papers match" })),
            200,
        );
        assert_eq!(decided["decision"], "recorded");
        assert_eq!(decided["remaining"], 1);

        // alice may not approve again, so the gate leaves her list.
        let hers = server.call("GET", "/api/decisions", Some(&alice), None, 200);
        assert!(
            hers.as_array()
                .expect("a list")
                .iter()
                .all(|d| d["run"] != run.as_str()),
            "alice still has the gate she approved: {hers}"
        );
        // bob sees who approved, when and why, and the evaluated quorum.
        let his = server.call("GET", "/api/decisions", Some(&bob), None, 200);
        let gate = his
            .as_array()
            .expect("a list")
            .iter()
            .find(|d| d["run"] == run.as_str())
            .unwrap_or_else(|| panic!("bob does not see the gate: {his}"))
            .clone();
        conforms(&doc, "Decision", &gate);
        assert_eq!(gate["quorum"], 2, "{gate}");
        assert_eq!(gate["remaining"], 1, "{gate}");
        assert_eq!(gate["options"]["quorum"], 2, "{gate}");
        assert_eq!(gate["options"]["approvers"], "role customs", "{gate}");
        assert_eq!(gate["options"]["allow_self"], false, "{gate}");
        let earlier = gate["decisions"].as_array().expect("decisions");
        assert_eq!(earlier.len(), 1, "{gate}");
        assert_eq!(earlier[0]["by"], "alice");
        assert_eq!(earlier[0]["comment"], "papers match");
        assert!(
            earlier[0]["at"]
                .as_i64()
                .is_some_and(|at| at >= gate["opened_at"].as_i64().unwrap_or(i64::MAX)),
            "the decision's time is not after the gate opened: {gate}"
        );
        // No escalation and no timeout in this workflow: nothing planned, nothing at a deadline.
        assert!(
            gate["escalation"].is_null() && gate["at_deadline"].is_null(),
            "{gate}"
        );

        // The run's page shows the same gate to its starter, who may read but not decide it.
        let status = server.call("GET", &format!("/api/runs/{run}"), Some(&ines), None, 200);
        conforms(&doc, "Decision", &status["gate"]);
        assert_eq!(status["gate"]["decisions"], gate["decisions"], "{status}");
        assert!(
            status["outcome"].is_null(),
            "a waiting run has no outcome: {status}"
        );

        server.call(
            "POST",
            &format!("/api/runs/{run}/gates/release_signoff/approve"),
            Some(&bob),
            Some(json!({})),
            200,
        );
        let done = server.call("GET", &format!("/api/runs/{run}"), Some(&ines), None, 200);
        assert_eq!(done["status"], "completed", "{done}");
        assert!(done["gate"].is_null(), "{done}");
        let listed = server.call("GET", "/api/runs?workflow=release", Some(&ines), None, 200);
        for row in listed.as_array().expect("a list") {
            conforms(&doc, "Run", row);
        }
    });
}

/// A scrape token (`flowrt token create --scrape`) reads /metrics and /openapi.json, and is
/// refused (403, recorded) everywhere else; no user of flow.toml may be called `@…`.
#[test]
fn a_scrape_token_reads_metrics_and_nothing_else() {
    for_each_store(|store| {
        let server = serve(store);
        let scrape = server.create_token(&["--scrape", "--name", "prometheus"]);
        let metrics = server.call("GET", "/metrics", Some(&scrape), None, 200);
        assert!(metrics.as_str().is_some_and(|t| t.contains("flow_runs")));
        server.call("GET", "/openapi.json", Some(&scrape), None, 200);
        for (method, path) in [
            ("GET", "/api/runs"),
            ("GET", "/api/decisions"),
            ("GET", "/api/workflows"),
        ] {
            let refused = server.call(method, path, Some(&scrape), None, 403);
            assert_eq!(error_code(&refused), "forbidden", "{refused}");
        }
        let log = server
            .flowrt()
            .args(["audit", "refusals"])
            .output()
            .expect("flowrt runs");
        let log = String::from_utf8_lossy(&log.stdout);
        assert!(
            log.contains("(scrape)") && log.contains("GET /api/runs"),
            "{log}"
        );
        // Neither a user nor --scrape: a usage error; both: refused by the parser.
        for args in [
            vec!["token", "create"],
            vec!["token", "create", "ines", "--scrape"],
        ] {
            let out = server.flowrt().args(&args).output().expect("flowrt runs");
            assert_eq!(out.status.code(), Some(2), "{args:?}");
        }
    });
}
