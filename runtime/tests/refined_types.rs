//! Refined types at the edges of a run, through the real `flowrt` (and `flowrt serve`): a run's
//! input that breaks a rule is refused with the path and the rule and nothing starts; a tool's
//! result that breaks one is an `InvalidOutput` that `retry` asks again for and `catch` sees; a
//! value a person supplies that breaks one is refused and the gate stays open; over the API,
//! both are 422 with the problems, and the inbox's form schema carries the rules.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::server::Served;
use common::{Project, for_each_store, of_kind};
use serde_json::json;

const EXIT_OK: i32 = 0;
const EXIT_USAGE: i32 = 2;
const EXIT_REFUSED: i32 = 3;
const EXIT_WAITING: i32 = 10;

const PROGRAM: &str = r#"type Score = Float in 0.0..1.0
type Sku = String matching "^[A-Z]{2}[0-9]+$"
type Order = { sku: Sku, qty: Int in 1..1000, notes: List<String> nonempty }
type Rated = { sku: Sku, score: Score }

tool rate(sku: String) -> Score via exec "sh rate.sh"
tool lookup(sku: String) -> Rated via exec "sh lookup.sh"

workflow place(order: Order) -> Int {
  order.qty * 2
}

workflow review(sku: Sku) -> Score {
  retry 3 on InvalidOutput { rate(sku) }
}

workflow check(sku: Sku) -> String {
  try { lookup(sku).sku } catch e { "${e.kind}: ${e.message}" }
}

workflow ask(sku: Sku) -> Int {
  let qty = await input<Int in 1..1000> "quantity" { from: role("ops"), prompt: "How many ${sku}?" }
  qty * 2
}
"#;

const CONFIG: &str = "[users.ana]\nroles = [\"ops\"]\n\n[workflows.place]\nstarters = [\"ops\"]\n\n[workflows.ask]\nstarters = [\"ops\"]\n";

fn project(store: &common::Store) -> Project {
    let project = Project::new(store);
    project.write("flow.toml", CONFIG);
    project.write("shop.flow", PROGRAM);
    // The first answer is out of range, the next ones are fine.
    project.write(
        "rate.sh",
        "cat > /dev/null; if [ -e rated ]; then echo 0.25; else touch rated; echo 1.5; fi\n",
    );
    project.write(
        "lookup.sh",
        "cat > /dev/null; echo '{\"sku\": \"ab-1\", \"score\": 0.5}'\n",
    );
    project
}

fn only_run(project: &Project) -> String {
    let runs = project.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0]["id"].as_str().unwrap().to_string()
}

#[test]
fn run_input_that_breaks_a_rule_is_refused_with_the_path_and_the_rule() {
    for_each_store(|store| {
        let project = project(store);
        let start = |input: serde_json::Value| {
            project.flowrt(&[
                "run",
                "shop.flow",
                "--workflow",
                "place",
                "--as",
                "ana",
                "--input",
                &input.to_string(),
            ])
        };
        start(json!({ "order": { "sku": "AB12", "qty": 0, "notes": ["gift"] } }))
            .expect_code(EXIT_USAGE)
            .expect_stderr("$.order.qty: expected Int in 1..1000, found 0");
        start(json!({ "order": { "sku": "ab12", "qty": 5, "notes": ["gift"] } }))
            .expect_code(EXIT_USAGE)
            .expect_stderr(r#"$.order.sku: expected a Sku (String matching "^[A-Z]{2}[0-9]+$"), found the string "ab12""#);
        start(json!({ "order": { "sku": "AB12", "qty": 5, "notes": [] } }))
            .expect_code(EXIT_USAGE)
            .expect_stderr("$.order.notes: expected List<String> nonempty, found an empty list");
        assert!(project.runs().is_empty(), "nothing was started");
        let done = start(json!({ "order": { "sku": "AB12", "qty": 1000, "notes": ["gift"] } }));
        done.expect_code(EXIT_OK).expect_stdout("2000");
    });
}

#[test]
fn a_tool_result_that_breaks_a_rule_is_invalid_output_for_retry_and_catch() {
    for_each_store(|store| {
        let project = project(store);
        project
            .flowrt(&[
                "run",
                "shop.flow",
                "--workflow",
                "review",
                "--input",
                r#"{"sku": "AB12"}"#,
            ])
            .expect_code(EXIT_OK)
            .expect_stdout("0.25");
        let run = only_run(&project);
        let history = project.history(&run);
        let failed = of_kind(&history, "step_failed");
        assert_eq!(failed.len(), 1, "{history:?}");
        assert_eq!(failed[0]["data"]["kind"], "InvalidOutput");
        let message = failed[0]["data"]["message"].as_str().unwrap();
        assert!(
            message.contains("expected a Score (Float in 0.0..1.0), found 1.5"),
            "{message}"
        );
        assert_eq!(of_kind(&history, "step_completed").len(), 1, "{history:?}");

        // A field of a record result: the path names it, and `catch` gets the error.
        let out = project.flowrt(&[
            "run",
            "shop.flow",
            "--workflow",
            "check",
            "--json",
            "--input",
            r#"{"sku": "AB12"}"#,
        ]);
        out.expect_code(EXIT_OK);
        let output = out.json()["output"].as_str().unwrap().to_string();
        assert!(output.starts_with("InvalidOutput: "), "{output}");
        assert!(
            output.contains(r#"$.sku: expected a Sku (String matching "^[A-Z]{2}[0-9]+$"), found the string "ab-1""#),
            "{output}"
        );
    });
}

#[test]
fn an_input_that_breaks_a_rule_is_refused_and_the_gate_stays_open() {
    for_each_store(|store| {
        let project = project(store);
        project
            .flowrt(&[
                "run",
                "shop.flow",
                "--workflow",
                "ask",
                "--as",
                "ana",
                "--input",
                r#"{"sku": "AB12"}"#,
            ])
            .expect_code(EXIT_WAITING);
        let run = only_run(&project);
        for (value, needle) in [
            ("0", "expected Int in 1..1000, found 0"),
            ("1001", "expected Int in 1..1000, found 1001"),
        ] {
            project
                .flowrt(&["input", &run, "quantity", "--as", "ana", "--value", value])
                .expect_code(EXIT_REFUSED)
                .expect_stderr(needle);
        }
        let history = project.history(&run);
        assert!(of_kind(&history, "gate_decided").is_empty(), "{history:?}");
        project
            .flowrt(&["input", &run, "quantity", "--as", "ana", "--value", "12"])
            .expect_code(EXIT_OK);
        let status = project.status(&run);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["output"], 24, "{status}");
    });
}

#[test]
fn over_the_api_broken_rules_are_422_and_the_form_schema_carries_them() {
    for_each_store(|store| {
        let server = Served::start(store, PROGRAM, CONFIG, &[]);
        let ana = server.token("ana", &[]);
        let body = server.call(
            "POST",
            "/api/runs",
            Some(&ana),
            Some(json!({ "workflow": "place", "input": { "order": { "sku": "AB12", "qty": 5000, "notes": ["x"] } } })),
            422,
        );
        let problem = &body["error"]["problems"][0];
        assert_eq!(problem["path"], "$.order.qty", "{body}");
        assert!(
            problem["message"]
                .as_str()
                .unwrap()
                .contains("Int in 1..1000"),
            "{body}"
        );

        let started = server.call(
            "POST",
            "/api/runs",
            Some(&ana),
            Some(json!({ "workflow": "ask", "input": { "sku": "AB12" } })),
            201,
        );
        let run = started["id"].as_str().unwrap().to_string();
        let decisions = server.call("GET", "/api/decisions", Some(&ana), None, 200);
        let offered = decisions
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["run"] == run.as_str())
            .expect("the input is offered");
        assert_eq!(offered["input_schema"]["minimum"], 1, "{offered}");
        assert_eq!(offered["input_schema"]["maximum"], 1000, "{offered}");
        let body = server.call(
            "POST",
            &format!("/api/runs/{run}/gates/quantity/input"),
            Some(&ana),
            Some(json!({ "value": 0 })),
            422,
        );
        assert!(
            body["error"]["problems"][0]["message"]
                .as_str()
                .unwrap()
                .contains("Int in 1..1000"),
            "{body}"
        );
        let decided = server.call(
            "POST",
            &format!("/api/runs/{run}/gates/quantity/input"),
            Some(&ana),
            Some(json!({ "value": 7 })),
            200,
        );
        assert_eq!(decided["run_status"], "completed", "{decided}");
    });
}
