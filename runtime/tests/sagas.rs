//! Sagas and named errors through the real binaries on both stores: a trip whose last booking
//! fails, so the bookings made are cancelled, the latest first, each once; the same with the
//! worker killed with SIGKILL again and again during the chain of undo blocks; an undo block
//! that fails itself (recorded, the others still run); named errors raised by an `http` tool
//! against a real server on 127.0.0.1 and by a child workflow's `fail`, caught by name with
//! their fields; and programs the compiler refuses (an undo block in a branch, an unknown
//! error, an undeclared one).
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Out, Project, Store, events, for_each_store, kill9, of_kind, wait_until};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const EXIT_OK: i32 = 0;
const EXIT_FAILED: i32 = 1;
const EXIT_USAGE: i32 = 2;

/// Books `$1`: logs `booked $1 KEY` and prints the booking's id, `"$1-1"`.
const BOOK: &str = r#"#!/bin/sh
cat > /dev/null
echo "booked $1 $FLOW_IDEMPOTENCY_KEY" >> trip.log
echo "\"$1-1\""
"#;

/// Fails to book `$1`.
const NO_BOOKING: &str = r#"#!/bin/sh
cat > /dev/null
echo "no $1 left" >&2
exit 4
"#;

/// Cancels `$1`: after `$CANCEL_DELAY` seconds (if set), logs `cancelled $1 ID KEY` with the
/// id it was given. Logs `begin $1 KEY` first.
const CANCEL: &str = r#"#!/bin/sh
id=$(cat | sed 's/.*"id": *"\([^"]*\)".*/\1/')
echo "begin $1 $FLOW_IDEMPOTENCY_KEY" >> trip.log
if [ -n "$CANCEL_DELAY" ]; then sleep "$CANCEL_DELAY"; fi
echo "cancelled $1 $id $FLOW_IDEMPOTENCY_KEY" >> trip.log
echo true
"#;

/// Cannot cancel `$1`.
const NO_CANCEL: &str = r#"#!/bin/sh
cat > /dev/null
echo "begin $1 $FLOW_IDEMPOTENCY_KEY" >> trip.log
echo "the $1 desk is closed" >&2
exit 5
"#;

/// A trip of `booked` bookings whose undo blocks cancel them, then a booking that fails.
fn trip_program(booked: &[&str], failing: &str, cancel: impl Fn(&str) -> &'static str) -> String {
    let mut program = String::from("type Trip = { who: String }\n\n");
    for item in booked {
        program += &format!(
            "tool book_{item}(t: Trip) -> String via exec \"sh tools/book.sh {item}\"\n\
             tool cancel_{item}(id: String) -> Bool via exec \"sh tools/{} {item}\"\n",
            cancel(item)
        );
    }
    program += &format!(
        "tool book_{failing}(t: Trip) -> String via exec \"sh tools/no_booking.sh {failing}\"\n\n\
         workflow trip(t: Trip) -> String {{\n"
    );
    for item in booked {
        program +=
            &format!("  let {item} = book_{item}(t) undo {{\n    cancel_{item}({item})\n  }}\n");
    }
    program += &format!("  let {failing} = book_{failing}(t)\n  \"booked ${{{failing}}}\"\n}}\n");
    program
}

fn trip_project(store: &Store, program: &str) -> Project {
    let project = Project::new(store).with_env("FLOW_LEASE_MS", "150");
    project.write("tools/book.sh", BOOK);
    project.write("tools/no_booking.sh", NO_BOOKING);
    project.write("tools/cancel.sh", CANCEL);
    project.write("tools/no_cancel.sh", NO_CANCEL);
    project.write("trip.flow", program);
    project
}

/// One line of `trip.log`, split at spaces.
fn trip_log(project: &Project) -> Vec<Vec<String>> {
    std::fs::read_to_string(project.path().join("trip.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect()
}

/// The log without the idempotency keys, and without the `begin` lines.
fn plain_log(project: &Project) -> Vec<String> {
    trip_log(project)
        .iter()
        .filter(|l| l[0] != "begin")
        .map(|l| l[..l.len() - 1].join(" "))
        .collect()
}

/// The parent's events about compensation, and how it ended.
fn saga_events(history: &[Value]) -> Vec<&str> {
    events(history)
        .into_iter()
        .filter(|k| k.starts_with("compensat") || k.starts_with("run_"))
        .filter(|k| *k != "run_started")
        .collect()
}

/// The undo runs the parent's `compensation_started` events name, in order: each
/// `RUN.STEP.K`, one step for all, K counting from 0.
fn undo_runs(run: &str, history: &[Value]) -> Vec<String> {
    let ids: Vec<String> = of_kind(history, "compensation_started")
        .iter()
        .map(|e| e["data"]["run"].as_str().unwrap().to_string())
        .collect();
    let step = ids.first().map(|id| {
        id.strip_prefix(&format!("{run}."))
            .and_then(|rest| rest.split('.').next())
            .unwrap_or_else(|| panic!("{id} is not a run of {run}"))
            .to_string()
    });
    for (k, id) in ids.iter().enumerate() {
        assert_eq!(
            Some(id.clone()),
            step.as_ref().map(|s| format!("{run}.{s}.{k}")),
            "{ids:?}"
        );
    }
    ids
}

/// The parent's `compensation_*` events' `step` (the undo block's workflow) and `undo`.
fn undo_names(history: &[Value], kind: &str) -> Vec<(String, u64)> {
    of_kind(history, kind)
        .iter()
        .map(|e| {
            (
                e["step"].as_str().unwrap().to_string(),
                e["data"]["undo"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn top_run(project: &Project) -> Value {
    let runs = project.runs();
    let top: Vec<&Value> = runs.iter().filter(|r| r["parent"].is_null()).collect();
    assert_eq!(top.len(), 1, "{runs:?}");
    top[0].clone()
}

// ---------------------------------------------------------------------------------------------
// Compensation
// ---------------------------------------------------------------------------------------------

#[test]
fn a_failed_trip_cancels_the_hotel_then_the_flight_each_once() {
    for_each_store(|store| {
        let program = trip_program(&["flight", "hotel"], "car", |_| "cancel.sh");
        let project = trip_project(store, &program);
        let out = project.flowrt(&[
            "run",
            "trip.flow",
            "--input",
            r#"{"t": {"who": "ada"}}"#,
            "--json",
        ]);
        out.expect_code(EXIT_FAILED);
        let run = out.json()["id"].as_str().unwrap().to_string();
        let status = project.status(&run);
        assert_eq!(status["status"], "failed", "{status}");
        let error = status["error"].as_str().unwrap();
        assert!(
            error.starts_with("ToolError: ") && error.contains("no car left"),
            "the run fails with the car's error: {error}"
        );

        assert_eq!(
            plain_log(&project),
            [
                "booked flight",
                "booked hotel",
                "cancelled hotel hotel-1",
                "cancelled flight flight-1"
            ]
        );

        let history = project.history(&run);
        assert_eq!(
            saga_events(&history),
            [
                "compensation_started",
                "compensated",
                "compensation_started",
                "compensated",
                "run_failed"
            ],
            "{history:#?}"
        );
        assert_eq!(events(&history).last(), Some(&"run_failed"));
        let failed = of_kind(&history, "run_failed");
        assert_eq!(failed[0]["data"]["kind"], "ToolError", "{}", failed[0]);
        assert!(
            failed[0]["data"]["message"]
                .as_str()
                .unwrap()
                .contains("no car left"),
            "{}",
            failed[0]
        );
        // The hotel's undo block first, then the flight's, each as run RUN.STEP.K.
        let started = undo_names(&history, "compensation_started");
        assert_eq!(started.iter().map(|(_, k)| *k).collect::<Vec<_>>(), [0, 1]);
        assert!(started[0].0.ends_with(".undo.hotel"), "{started:?}");
        assert!(started[1].0.ends_with(".undo.flight"), "{started:?}");
        assert_eq!(undo_names(&history, "compensated"), started);
        let undos = undo_runs(&run, &history);
        for (e, id) in of_kind(&history, "compensated").iter().zip(&undos) {
            assert_eq!(e["data"]["run"], json!(id));
        }
        let children: BTreeSet<String> = project
            .runs()
            .iter()
            .filter(|r| r["parent"] == run.as_str())
            .map(|r| {
                assert_eq!(r["status"], "completed", "{r}");
                r["id"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(children, undos.iter().cloned().collect());
        // Each cancel is the undo run's own step, with its key.
        for (id, item) in undos.iter().zip(["hotel", "flight"]) {
            let undo = project.history(id);
            let completed = of_kind(&undo, "step_completed");
            assert_eq!(completed.len(), 1, "{undo:#?}");
            assert_eq!(completed[0]["step"], format!("cancel_{item}"));
            assert_eq!(completed[0]["data"]["output"], true);
            let key = format!("{id}:0");
            assert!(
                trip_log(&project)
                    .iter()
                    .any(|l| l[0] == "cancelled" && l[1] == item && l[3] == key),
                "cancel_{item} ran with key {key}: {:?}",
                trip_log(&project)
            );
        }
    });
}

/// The trip with four bookings to cancel, each cancel taking 0.3 s, driven by `flowrt start`
/// and workers killed with SIGKILL every 200–500 ms until the run is over.
///
/// What the runtime guarantees (durability.rs, and "Tool calls" in spec/statements.md): a
/// call whose result is recorded is never made again; a call in flight at a crash is made
/// again, with the same idempotency key — at-least-once delivery, exactly-once recording. The
/// killed worker's tool process is not killed with it (nothing runs after SIGKILL), so the
/// interrupted attempt may still finish by itself: a cancel may be logged twice, with the
/// same key, only when its undo run's history says its call was resumed after a crash.
#[test]
fn kills_during_the_compensation_chain_undo_each_booking_once_in_reverse_order() {
    for_each_store(|store| {
        const MOST_KILLS: usize = 12;
        let items = ["flight", "hotel", "car", "train"];
        let program = trip_program(&items, "ferry", |_| "cancel.sh");
        let project = trip_project(store, &program).with_env("CANCEL_DELAY", "0.3");
        project
            .flowrt(&["start", "trip.flow", "--input", r#"{"t": {"who": "alan"}}"#])
            .expect_code(EXIT_OK);
        let run = top_run(&project)["id"].as_str().unwrap().to_string();
        let is_final = |project: &Project| {
            let status = project.status(&run);
            ["completed", "failed", "cancelled"].contains(&status["status"].as_str().unwrap())
        };

        let mut kills = 0;
        let mut seed: u64 = 0x853c_49e6_748f_ea9b;
        let began = Instant::now();
        loop {
            let mut worker = project
                .command(&["worker"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if kills == MOST_KILLS {
                // Enough: the last worker finishes the run.
                wait_until("the run to end", Duration::from_secs(30), || {
                    is_final(&project)
                });
                kill9(&mut worker);
                break;
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(200 + seed % 300));
            kill9(&mut worker);
            kills += 1;
            if is_final(&project) {
                break;
            }
            assert!(began.elapsed() < Duration::from_secs(40), "never ended");
        }
        // A cancel the last killed worker left running ends on its own within its 0.3 s.
        std::thread::sleep(Duration::from_millis(500));

        let status = project.status(&run);
        assert_eq!(status["status"], "failed", "{status}");
        let error = status["error"].as_str().unwrap();
        assert!(
            error.starts_with("ToolError: ") && error.contains("no ferry left"),
            "the run fails with the ferry's error: {error}"
        );

        let history = project.history(&run);
        assert_eq!(
            saga_events(&history),
            [
                "compensation_started",
                "compensated",
                "compensation_started",
                "compensated",
                "compensation_started",
                "compensated",
                "compensation_started",
                "compensated",
                "run_failed"
            ],
            "{history:#?}"
        );
        assert_eq!(events(&history).last(), Some(&"run_failed"));
        assert_eq!(
            of_kind(&history, "run_failed")[0]["data"]["kind"],
            "ToolError"
        );
        // Latest first: the train, the car, the hotel, the flight.
        let compensated = undo_names(&history, "compensated");
        assert_eq!(
            compensated.iter().map(|(_, k)| *k).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        let reversed: Vec<&str> = items.iter().rev().copied().collect();
        for ((name, _), item) in compensated.iter().zip(&reversed) {
            assert!(name.ends_with(&format!(".undo.{item}")), "{compensated:?}");
        }
        assert_eq!(undo_names(&history, "compensation_started"), compensated);
        let undos = undo_runs(&run, &history);
        assert_eq!(undos.len(), 4);

        // Each undo run exists once and completed, started once and ended once.
        let runs = project.runs();
        let children: Vec<&Value> = runs
            .iter()
            .filter(|r| r["parent"] == run.as_str())
            .collect();
        assert_eq!(
            children
                .iter()
                .map(|r| r["id"].as_str().unwrap())
                .collect::<BTreeSet<_>>(),
            undos.iter().map(String::as_str).collect(),
            "{children:?}"
        );
        assert_eq!(runs.len(), 1 + undos.len(), "{runs:?}");
        let log = trip_log(&project);
        let mut resumed_cancels = 0;
        for (id, item) in undos.iter().zip(&reversed) {
            let child = children.iter().find(|r| r["id"] == id.as_str()).unwrap();
            assert_eq!(child["status"], "completed", "{child}");
            let undo = project.history(id);
            assert_eq!(of_kind(&undo, "run_started").len(), 1, "{id}: {undo:#?}");
            assert_eq!(of_kind(&undo, "run_completed").len(), 1, "{id}: {undo:#?}");
            assert_eq!(of_kind(&undo, "step_completed").len(), 1, "{id}: {undo:#?}");
            let attempts = of_kind(&undo, "step_started").len();
            let resumed = of_kind(&undo, "step_resumed").len();
            assert_eq!(attempts, 1 + resumed, "{id}: {undo:#?}");
            resumed_cancels += resumed;
            // The tool's view: every call with the undo step's key; a second one only for a
            // call in flight at a kill.
            let key = format!("{id}:0");
            let begun = log
                .iter()
                .filter(|l| l[0] == "begin" && l[1] == *item)
                .map(|l| l[2].as_str());
            let done: Vec<&Vec<String>> = log
                .iter()
                .filter(|l| l[0] == "cancelled" && l[1] == *item)
                .collect();
            for k in begun.chain(done.iter().map(|l| l[3].as_str())) {
                assert_eq!(k, key, "cancel_{item}: {log:?}");
            }
            // The id is empty when the worker died before it wrote the tool's input.
            for l in &done {
                assert!(
                    l[2] == format!("{item}-1") || l[2].is_empty(),
                    "cancel_{item} got {:?}, not its booking",
                    l[2]
                );
            }
            assert!(
                (1..=attempts).contains(&done.len()),
                "cancel_{item} logged {} times for {attempts} attempts ({resumed} after a kill): {log:?}",
                done.len()
            );
        }
        // In the log, each cancel first ended before the next one began: reverse order.
        let mut first_done: Vec<&str> = Vec::new();
        for l in log.iter().filter(|l| l[0] == "cancelled") {
            if !first_done.contains(&l[1].as_str()) {
                first_done.push(&l[1]);
            }
        }
        assert_eq!(first_done, reversed, "{log:?}");
        // Every booking was made (a booking in flight at a kill may be made twice, with its
        // key), and nothing was cancelled that was not booked.
        for item in &items {
            assert!(
                log.iter().any(|l| l[0] == "booked" && l[1] == *item),
                "{item} was booked: {log:?}"
            );
        }
        assert!(
            log.iter().all(|l| l[0] != "booked" || l[1] != "ferry"),
            "{log:?}"
        );
        assert!(kills >= 2, "only {kills} kills");
        assert!(
            resumed_cancels >= 1,
            "no kill landed during a cancel ({kills} kills): {log:?}"
        );
    });
}

#[test]
fn an_undo_that_fails_is_recorded_and_the_others_still_run() {
    for_each_store(|store| {
        let program = trip_program(&["flight", "hotel"], "car", |item| {
            if item == "hotel" {
                "no_cancel.sh"
            } else {
                "cancel.sh"
            }
        });
        let project = trip_project(store, &program);
        let out = project.flowrt(&[
            "run",
            "trip.flow",
            "--input",
            r#"{"t": {"who": "grace"}}"#,
            "--json",
        ]);
        out.expect_code(EXIT_FAILED);
        let run = out.json()["id"].as_str().unwrap().to_string();
        let status = project.status(&run);
        assert_eq!(status["status"], "failed", "{status}");
        let error = status["error"].as_str().unwrap();
        assert!(
            error.starts_with("ToolError: ")
                && error.contains("no car left")
                && !error.contains("desk"),
            "the run fails with the car's error, not the undo's: {error}"
        );
        assert_eq!(
            plain_log(&project),
            ["booked flight", "booked hotel", "cancelled flight flight-1"]
        );
        assert!(
            trip_log(&project)
                .iter()
                .any(|l| l[0] == "begin" && l[1] == "hotel"),
            "the hotel's cancel was tried"
        );

        let history = project.history(&run);
        assert_eq!(
            saga_events(&history),
            [
                "compensation_started",
                "compensation_failed",
                "compensation_started",
                "compensated",
                "run_failed"
            ],
            "{history:#?}"
        );
        let undos = undo_runs(&run, &history);
        let failed = of_kind(&history, "compensation_failed");
        assert_eq!(failed[0]["data"]["undo"], 0);
        assert_eq!(failed[0]["data"]["run"], json!(undos[0]));
        assert!(
            failed[0]["step"].as_str().unwrap().ends_with(".undo.hotel"),
            "{}",
            failed[0]
        );
        let why = failed[0]["data"]["error"].as_str().unwrap();
        assert!(
            why.contains("ToolError") && why.contains("the hotel desk is closed"),
            "{why}"
        );
        let compensated = of_kind(&history, "compensated");
        assert_eq!(compensated[0]["data"]["undo"], 1);
        assert!(
            compensated[0]["step"]
                .as_str()
                .unwrap()
                .ends_with(".undo.flight")
        );
        let run_failed = of_kind(&history, "run_failed");
        assert_eq!(run_failed[0]["data"]["kind"], "ToolError");
        assert!(
            run_failed[0]["data"]["message"]
                .as_str()
                .unwrap()
                .contains("no car left"),
            "{}",
            run_failed[0]
        );
        let hotel = project.status(&undos[0]);
        assert_eq!(hotel["status"], "failed", "{hotel}");
        assert!(
            hotel["error"].as_str().unwrap().contains("desk is closed"),
            "{hotel}"
        );
        assert_eq!(project.status(&undos[1])["status"], "completed");

        // The run needs an operator: listed, shown, counted, until someone resolves it.
        assert!(
            status["needs_attention"]
                .as_str()
                .unwrap()
                .contains("the hotel desk is closed"),
            "{status}"
        );
        let attention = |project: &Project| -> Vec<String> {
            let out = project.flowrt(&["runs", "--status", "needs_attention", "--json"]);
            out.expect_code(EXIT_OK);
            out.json()
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            attention(&project),
            std::slice::from_ref(&run),
            "only the trip, not its undo runs"
        );
        project
            .flowrt(&["runs", "--status", "needs_attention"])
            .expect_code(EXIT_OK)
            .expect_stdout("needs attention: undo `trip#");
        project
            .flowrt(&["runs", "--status", "broken"])
            .expect_code(EXIT_USAGE)
            .expect_stderr("needs_attention");
        project
            .flowrt(&["resolve", &run, "--note", "  "])
            .expect_code(EXIT_USAGE)
            .expect_stderr("needs a note");
        project
            .flowrt(&["resolve", &undos[1], "--note", "x"])
            .expect_code(EXIT_USAGE)
            .expect_stderr("needs no attention");
        project
            .flowrt(&["resolve", "nope", "--note", "x"])
            .expect_code(EXIT_USAGE)
            .expect_stderr("no run with id nope");
        assert_eq!(
            attention(&project),
            std::slice::from_ref(&run),
            "nothing changed"
        );
        project
            .flowrt(&[
                "resolve",
                &run,
                "--note",
                "hotel cancelled by phone, ticket OPS-7",
            ])
            .expect_code(EXIT_OK)
            .expect_stdout("resolved");
        assert!(attention(&project).is_empty());
        let status = project.status(&run);
        assert_eq!(status["status"], "failed");
        assert!(status.get("needs_attention").is_none(), "{status}");
        let history = project.history(&run);
        let resolved = of_kind(&history, "attention_resolved");
        assert_eq!(resolved.len(), 1, "{history:#?}");
        assert_eq!(
            resolved[0]["data"]["note"],
            "hotel cancelled by phone, ticket OPS-7"
        );
        assert!(
            resolved[0]["data"]["was"]
                .as_str()
                .unwrap()
                .contains("desk is closed")
        );
        assert!(
            resolved[0]["data"]["by"]
                .as_str()
                .is_some_and(|b| !b.is_empty())
        );
        project
            .flowrt(&["resolve", &run, "--note", "again"])
            .expect_code(EXIT_USAGE)
            .expect_stderr("needs no attention");
        project
            .flowrt(&["history", &run])
            .expect_code(EXIT_OK)
            .expect_stdout("attention_resolved")
            .expect_stdout("hotel cancelled by phone");
        project.flowrt(&["audit", "verify"]).expect_code(EXIT_OK);
    });
}

/// `compensate` in a handler runs the undo blocks registered so far and clears them: a later
/// failure nothing catches undoes only what was registered since.
#[test]
fn compensate_in_a_handler_undoes_once_and_a_later_failure_undoes_only_the_rest() {
    for_each_store(|store| {
        let program = r#"type Trip = { who: String }

tool book_flight(t: Trip) -> String via exec "sh tools/book.sh flight"
tool cancel_flight(id: String) -> Bool via exec "sh tools/cancel.sh flight"
tool book_hotel(t: Trip) -> String via exec "sh tools/book.sh hotel"
tool cancel_hotel(id: String) -> Bool via exec "sh tools/cancel.sh hotel"
tool book_car(t: Trip) -> String via exec "sh tools/no_booking.sh car"
tool book_ferry(t: Trip) -> String via exec "sh tools/no_booking.sh ferry"

workflow trip(t: Trip) -> String {
  let flight = book_flight(t) undo {
    cancel_flight(flight)
  }
  let car = try {
    book_car(t)
  } catch e {
    compensate
    "no car (${e.kind})"
  }
  let hotel = book_hotel(t) undo {
    cancel_hotel(hotel)
  }
  let ferry = book_ferry(t)
  "${car} ${hotel} ${ferry}"
}
"#;
        let project = trip_project(store, program);
        let out = project.flowrt(&[
            "run",
            "trip.flow",
            "--input",
            r#"{"t": {"who": "edsger"}}"#,
            "--json",
        ]);
        out.expect_code(EXIT_FAILED);
        let run = out.json()["id"].as_str().unwrap().to_string();
        let error = project.status(&run)["error"].as_str().unwrap().to_string();
        assert!(
            error.starts_with("ToolError: ") && error.contains("no ferry left"),
            "{error}"
        );
        assert_eq!(
            plain_log(&project),
            [
                "booked flight",
                "cancelled flight flight-1",
                "booked hotel",
                "cancelled hotel hotel-1"
            ]
        );
        let history = project.history(&run);
        assert_eq!(
            saga_events(&history),
            [
                "compensation_started",
                "compensated",
                "compensation_started",
                "compensated",
                "run_failed"
            ],
            "{history:#?}"
        );
        let names = undo_names(&history, "compensated");
        assert!(names[0].0.ends_with(".undo.flight"), "{names:?}");
        assert!(names[1].0.ends_with(".undo.hotel"), "{names:?}");
        // Two `compensate`s, at two steps: each undo run `RUN.STEP.0`, of its own step.
        let undos: Vec<&str> = of_kind(&history, "compensated")
            .iter()
            .map(|e| e["data"]["run"].as_str().unwrap())
            .collect();
        assert_ne!(undos[0], undos[1]);
        for id in &undos {
            assert!(
                id.starts_with(&format!("{run}.")) && id.ends_with(".0"),
                "{undos:?}"
            );
            assert_eq!(project.status(id)["status"], "completed");
        }
        assert_eq!(project.runs().len(), 3);
    });
}

/// An error nothing catches points at the line that raised it (statements.md, "Errors, retry
/// and try"). In a workflow with undo blocks the failure is caught by the compensation guard
/// around the body and raised again from the workflow's closing brace, so the run's error,
/// and `run_failed`'s `at` and `line`, point there instead.
#[test]
fn a_compensated_failure_points_at_the_line_that_raised_it() {
    for_each_store(|store| {
        for undo in [false, true] {
            let mut program = trip_program(&["flight"], "car", |_| "cancel.sh");
            if !undo {
                program = program.replace(" undo {\n    cancel_flight(flight)\n  }", "");
            }
            let line = 1 + program
                .lines()
                .position(|l| l.contains("let car = "))
                .unwrap();
            let project = trip_project(store, &program);
            let out = project.flowrt(&[
                "run",
                "trip.flow",
                "--input",
                r#"{"t": {"who": "barbara"}}"#,
                "--json",
            ]);
            out.expect_code(EXIT_FAILED);
            let run = out.json()["id"].as_str().unwrap().to_string();
            let history = project.history(&run);
            assert_eq!(
                of_kind(&history, "compensated").len(),
                usize::from(undo),
                "{history:#?}"
            );
            let failed = &of_kind(&history, "run_failed")[0];
            let at = failed["data"]["at"].as_str().unwrap();
            assert!(
                at.starts_with(&format!("trip.flow:{line}:")),
                "undo blocks: {undo}: the failure is at {at}, not on line {line}:\n{program}"
            );
            assert_eq!(failed["line"], line, "undo blocks: {undo}");
            let error = project.status(&run)["error"].as_str().unwrap().to_string();
            assert!(error.ends_with(&format!("(at {at})")), "{error}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Named errors
// ---------------------------------------------------------------------------------------------

/// A server on 127.0.0.1 answering the n-th request with `script[n]` (status, JSON body);
/// it reports each request's target.
fn serve(script: Vec<(u16, &'static str)>) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (seen, targets) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let (status, body) = script[n.min(script.len() - 1)];
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            if reader.read_line(&mut request).unwrap_or(0) == 0 {
                continue;
            }
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut ignored = vec![0; length];
            let _ = reader.read_exact(&mut ignored);
            let target = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let _ = seen.send(target);
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} Status\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, targets)
}

const ROOMS: &str = r#"error NotFound(id: String)
error Conflict(id: String, holder: String)

type Room = { id: String, floor: Int }

tool room(id: String) -> Room via http get "/rooms" raises NotFound on 404, Conflict on 409

workflow find(id: String) -> String {
  try {
    let r = room(id)
    "room ${r.id} on ${to_string(r.floor)}"
  } catch NotFound(e) {
    "no room ${e.id} (${e.kind}, from ${e.tool})"
  } catch Conflict(e) {
    "room ${e.id} held by ${e.holder}"
  } catch e {
    "${e.kind}: ${e.message}"
  }
}
"#;

#[test]
fn an_http_tool_raises_named_errors_with_fields_from_the_body() {
    for_each_store(|store| {
        let (url, targets) = serve(vec![
            (404, r#"{"id": "X", "note": "never built"}"#),
            (409, r#"{"id": "X"}"#),
            (409, r#"{"id": "X", "holder": "ada"}"#),
        ]);
        let project = Project::new(store);
        project.write("rooms.flow", ROOMS);
        project.write(
            "flow.toml",
            &format!("[tools.room]\nbase_url = \"{url}\"\n"),
        );
        let find = |id: &str| {
            let out = project.flowrt(&[
                "run",
                "rooms.flow",
                "--input",
                &json!({ "id": id }).to_string(),
                "--json",
            ]);
            out.expect_code(EXIT_OK);
            out
        };

        let out = find("X");
        assert_eq!(out.json()["output"], "no room X (NotFound, from room)");
        let target = targets.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            target.starts_with("/rooms?") && target.contains("id=X"),
            "{target}"
        );
        let run = out.json()["id"].as_str().unwrap().to_string();
        let failed = of_kind(&project.history(&run), "step_failed")
            .into_iter()
            .cloned()
            .collect::<Vec<_>>();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0]["data"]["status"], 404);

        // A 409 without the `holder` a Conflict needs is no Conflict: a ToolError saying why.
        let out = find("X");
        let output = out.json()["output"].as_str().unwrap().to_string();
        assert!(
            output.starts_with("ToolError: ")
                && output.contains("409")
                && output.contains("the answer is not a `Conflict`")
                && output.contains("holder"),
            "{output}"
        );

        // With its fields, it is one.
        let out = find("X");
        assert_eq!(out.json()["output"], "room X held by ada");
        assert_eq!(targets.try_iter().count(), 2);
    });
}

const RESERVE: &str = r#"error OutOfRooms(city: String, left: Int)

tool book(city: String) -> String via exec "sh tools/book.sh room"
tool cancel(id: String) -> Bool via exec "sh tools/cancel.sh room"

workflow reserve(city: String, n: Int) -> String raises OutOfRooms {
  let b = book(city) undo {
    cancel(b)
  }
  if n > 2 { fail OutOfRooms(city, 2) }
  b
}

workflow plan(city: String, n: Int) -> String {
  try {
    reserve(city, n)
  } catch OutOfRooms(e) {
    "only ${to_string(e.left)} in ${e.city} (${e.kind}: ${e.message})"
  }
}

workflow plan_or_fail(city: String, n: Int) -> String raises OutOfRooms {
  reserve(city, n)
}

error Busy(until: String)

tool hold(city: String) -> Int via exec "sh tools/busy.sh" raises Busy on exit 3

workflow hold_rooms(city: String, n: Int) -> Int {
  hold(city) + n
}

workflow ask(city: String, n: Int) -> String {
  try {
    to_string(hold_rooms(city, n))
  } catch Busy(e) {
    "busy until ${e.until} (${e.kind} from ${e.tool})"
  }
}
"#;

/// Exits 3 with the fields of a `Busy` on its standard output.
const BUSY: &str = r#"#!/bin/sh
cat > /dev/null
echo '{"until": "noon"}'
exit 3
"#;

/// A child that `fail`s with a named error (after undoing its booking): the parent catches it
/// by name with its fields; uncaught, the parent fails with it unchanged.
const PER_KIND: &str = r#"error RateLimited(retry_after: Duration)

tool fetch(id: String) -> String via http get "/items" raises RateLimited on 429

workflow patient(id: String) -> String {
  retry {
    on ToolError: 3 backoff 300ms jitter none,
    on RateLimited(r): 3 after r.retry_after,
  } {
    fetch(id)
  }
}
"#;

/// Two 503s and two 429s (`retry_after` 1 s), then the answer: each kind's policy allows 3
/// attempts, so only separate counts let the run through; each rate limit waits the second
/// the service asked for. With `flowrt worker` killed with SIGKILL again and again, the counts
/// and waits are kept with the run: it ends the same, asking again only for an answer in
/// flight at a kill.
#[test]
fn per_kind_retry_policies_count_apart_wait_as_told_and_survive_kill9() {
    for_each_store(|store| {
        let script = vec![
            (503, r#"{"error": "down"}"#),
            (429, r#"{"retry_after": "1s"}"#),
            (503, r#"{"error": "down"}"#),
            (429, r#"{"retry_after": "1s"}"#),
            (200, r#""ok""#),
        ];
        let (url, targets) = serve(script.clone());
        let project = Project::new(store).with_env("FLOW_LEASE_MS", "150");
        project.write("items.flow", PER_KIND);
        project.write(
            "flow.toml",
            &format!("[tools.fetch]\nbase_url = \"{url}\"\n"),
        );
        let began = Instant::now();
        let out = project.flowrt(&["run", "items.flow", "--input", r#"{"id": "a"}"#, "--json"]);
        out.expect_code(EXIT_OK);
        assert_eq!(out.json()["output"], "ok", "{}", out.all());
        assert!(
            began.elapsed() >= Duration::from_millis(2_900),
            "waited 0.3 s + 1 s + 0.6 s + 1 s: {:?}",
            began.elapsed()
        );
        let seen: Vec<String> = targets.try_iter().collect();
        assert_eq!(seen.len(), 5, "{seen:?}");
        let run = out.json()["id"].as_str().unwrap().to_string();
        let history = project.history(&run);
        let failed: Vec<&str> = of_kind(&history, "step_failed")
            .iter()
            .map(|e| e["data"]["kind"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            failed,
            ["ToolError", "RateLimited", "ToolError", "RateLimited"],
            "{history:#?}"
        );

        // The same under kill -9. A request in flight at a kill is made again and takes the
        // next answer of the script, so the run may see one 503 or 429 fewer: never more.
        let (url, targets) = serve(script);
        project.write(
            "flow.toml",
            &format!("[tools.fetch]\nbase_url = \"{url}\"\n"),
        );
        project
            .flowrt(&["start", "items.flow", "--input", r#"{"id": "b"}"#])
            .expect_code(EXIT_OK);
        let run = project
            .runs()
            .iter()
            .find(|r| r["id"] != json!(run))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut kills = 0;
        loop {
            let mut worker = project
                .command(&["worker"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if kills == 8 {
                wait_until("the run to end", Duration::from_secs(30), || {
                    project.status(&run)["status"] != "waiting"
                        && project.status(&run)["status"] != "runnable"
                });
                kill9(&mut worker);
                break;
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(150 + seed % 400));
            kill9(&mut worker);
            kills += 1;
        }
        let status = project.status(&run);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["output"], "ok");
        let seen = targets.try_iter().count();
        assert!(
            (1..=5 + kills).contains(&seen),
            "at most one request again per kill: {seen}"
        );
        let history = project.history(&run);
        let failed: Vec<&str> = of_kind(&history, "step_failed")
            .iter()
            .map(|e| e["data"]["kind"].as_str().unwrap_or(""))
            .collect();
        let tool_errors = failed.iter().filter(|k| **k == "ToolError").count();
        let rate_limits = failed.iter().filter(|k| **k == "RateLimited").count();
        assert!(
            tool_errors <= 2 && rate_limits <= 2 && tool_errors + rate_limits == failed.len(),
            "{failed:?}"
        );
        assert_eq!(of_kind(&history, "run_completed").len(), 1);
    });
}

#[test]
fn a_childs_named_error_reaches_the_parent_with_its_fields() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write("tools/book.sh", BOOK);
        project.write("tools/cancel.sh", CANCEL);
        project.write("tools/busy.sh", BUSY);
        project.write("reserve.flow", RESERVE);
        let run = |workflow: &str| {
            project.flowrt(&[
                "run",
                "reserve.flow",
                "--workflow",
                workflow,
                "--input",
                r#"{"city": "Oslo", "n": 5}"#,
                "--json",
            ])
        };

        let out = run("plan");
        out.expect_code(EXIT_OK);
        // Kind and fields as the child raised them; the message says which child.
        let output = out.json()["output"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            output.starts_with("only 2 in Oslo (OutOfRooms: child workflow `reserve` (")
                && output.ends_with(") failed: OutOfRooms(city: Oslo, left: 2))"),
            "{output}"
        );
        assert_eq!(
            plain_log(&project),
            ["booked room", "cancelled room room-1"],
            "the child undid its booking before failing"
        );
        let parent = out.json()["id"].as_str().unwrap().to_string();
        let children: Vec<Value> = project
            .runs()
            .into_iter()
            .filter(|r| r["parent"] == parent.as_str())
            .collect();
        assert_eq!(children.len(), 1, "{children:?}");
        let child = children[0]["id"].as_str().unwrap();
        assert_eq!(children[0]["status"], "failed");
        let child_history = project.history(child);
        assert_eq!(
            saga_events(&child_history),
            ["compensation_started", "compensated", "run_failed"],
            "{child_history:#?}"
        );
        let failed = &of_kind(&child_history, "run_failed")[0]["data"];
        assert_eq!(failed["kind"], "OutOfRooms", "{failed}");
        assert_eq!(failed["error"]["kind"], "OutOfRooms", "{failed}");
        assert_eq!(failed["error"]["city"], "Oslo", "{failed}");
        assert_eq!(failed["error"]["left"], 2, "{failed}");

        let out = run("plan_or_fail");
        out.expect_code(EXIT_FAILED);
        let id = out.json()["id"].as_str().unwrap().to_string();
        let status = project.status(&id);
        assert!(
            status["error"]
                .as_str()
                .unwrap()
                .starts_with("OutOfRooms: child workflow `reserve` ("),
            "{status}"
        );
        let history = project.history(&id);
        let failed = &of_kind(&history, "run_failed")[0]["data"];
        assert_eq!(failed["kind"], "OutOfRooms", "{failed}");
        assert_eq!(failed["error"]["kind"], "OutOfRooms", "{failed}");
        assert_eq!(failed["error"]["city"], "Oslo", "{failed}");
        assert_eq!(failed["error"]["left"], 2, "{failed}");

        // An exec tool's named error, its fields from its standard output, through a child.
        let out = run("ask");
        out.expect_code(EXIT_OK);
        assert_eq!(out.json()["output"], "busy until noon (Busy from hold)");
    });
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn programs_misusing_undo_and_named_errors_are_refused_with_their_codes() {
    for_each_store(|store| {
        let project = Project::new(store);
        for (name, program, code, why) in [
            (
                "branch_undo",
                r#"tool book(n: Int) -> String via exec "sh book.sh"
tool cancel(id: String) -> Bool via exec "sh cancel.sh"

workflow w(ns: List<Int>) -> List<String> {
  parallel for n in ns {
    let b = book(n) undo {
      cancel(b)
    }
    b
  }
}
"#,
                "E0407",
                "an `undo` block cannot stand in a `parallel` branch",
            ),
            (
                "tool_raises_unknown",
                r#"error NotFound(id: String)

tool find(id: String) -> String via http get "/x" raises Missing on 404

workflow w(id: String) -> String { find(id) }
"#,
                "E0208",
                "Unknown error `Missing`",
            ),
            (
                "workflow_raises_unknown",
                r#"workflow w(id: String) -> String raises Missing {
  id
}
"#,
                "E0208",
                "Unknown error `Missing`",
            ),
            (
                "undeclared_fail",
                r#"error OutOfStock(sku: String)

workflow w(sku: String, n: Int) -> Int {
  if n > 10 { fail OutOfStock(sku) }
  n
}
"#,
                "E0409",
                "`w` fails with `OutOfStock` without declaring it",
            ),
        ] {
            let file = format!("{name}.flow");
            project.write(&file, program);
            let started = Instant::now();
            let out: Out = project.flowrt(&["run", &file, "--input", "{}"]);
            assert!(started.elapsed() < Duration::from_secs(20), "{name}");
            out.expect_code(EXIT_USAGE)
                .expect_stderr(&format!("[{code}]"))
                .expect_stderr(why);
            assert!(
                out.stderr.contains(&format!("{file}:")),
                "{name}: the diagnostic names the file:\n{}",
                out.stderr
            );
        }
        assert!(project.runs().is_empty(), "nothing was started");
    });
}

/// A trip that booked a flight and a hotel and waits for the traveller's confirmation.
fn waiting_trip() -> String {
    let mut program = trip_program(&["flight", "hotel"], "car", |_| "cancel.sh");
    // The car is not booked: the trip waits for a confirmation instead.
    program = program.replace(
        "  let car = book_car(t)\n  \"booked ${car}\"\n",
        "  let d = await approval \"confirm\" { approvers: user(\"ada\") }\n  \"${flight} ${hotel} ${to_string(d.approved)}\"\n",
    );
    program
}

/// `flowrt cancel` of a run that took steps with undo blocks runs them (latest first) and
/// then ends the run `cancelled`, its gate withdrawn; `--no-compensate` ends it at once.
#[test]
fn cancel_runs_the_undo_blocks_first_unless_told_not_to() {
    for_each_store(|store| {
        let project = trip_project(store, &waiting_trip());
        project.write(
            "flow.toml",
            "[users.ada]\nroles = [\"traveller\"]\n\n[users.ops]\nroles = [\"ops\"]\n",
        );
        let start = |project: &Project| {
            let out = project.flowrt(&[
                "run",
                "trip.flow",
                "--as",
                "ops",
                "--input",
                r#"{"t": {"who": "ada"}}"#,
                "--json",
            ]);
            out.expect_code(10);
            out.json()["id"].as_str().unwrap().to_string()
        };

        let run = start(&project);
        let out = project.flowrt(&["cancel", &run, "--as", "ops"]);
        out.expect_code(EXIT_OK);
        assert_eq!(project.status(&run)["status"], "cancelled");
        assert_eq!(
            plain_log(&project),
            [
                "booked flight",
                "booked hotel",
                "cancelled hotel hotel-1",
                "cancelled flight flight-1"
            ]
        );
        let history = project.history(&run);
        assert_eq!(
            saga_events(&history),
            [
                "compensation_started",
                "compensation_started",
                "compensated",
                "compensation_started",
                "compensated",
                "run_cancelled"
            ],
            "{history:#?}"
        );
        assert_eq!(of_kind(&history, "gate_withdrawn").len(), 1, "{history:#?}");
        assert_eq!(of_kind(&history, "run_cancelled")[0]["data"]["by"], "ops");
        // The gate is gone: the traveller cannot confirm a cancelled trip.
        let out = project.flowrt(&["approve", &run, "confirm", "--as", "ada"]);
        assert_ne!(out.code, EXIT_OK, "{}", out.all());

        std::fs::remove_file(project.path().join("trip.log")).unwrap();
        let run = start(&project);
        project
            .flowrt(&["cancel", &run, "--as", "ops", "--no-compensate"])
            .expect_code(EXIT_OK);
        assert_eq!(project.status(&run)["status"], "cancelled");
        assert_eq!(plain_log(&project), ["booked flight", "booked hotel"]);
        assert!(of_kind(&project.history(&run), "compensated").is_empty());
    });
}

const BOOKED_AND_WAITING: &str = r#"tool book_flight(who: String) -> String via exec "echo '\"F-1\"'"
tool cancel_flight(id: String) -> Bool via exec "cat >> cancelled.log; echo >> cancelled.log; echo true"

workflow trip(who: String) -> String {
  let flight = book_flight(who) undo { cancel_flight(flight) }
  let d = await approval "confirm" { approvers: user("ada") }
  "${flight} ${to_string(d.approved)}"
}
"#;

/// Over the API: `POST /api/runs/{id}/cancel` runs the undo blocks first; with
/// `{"compensate": false}` it ends the run at once; anything else than a boolean is a 400.
#[test]
fn the_api_cancels_with_or_without_the_undo_blocks() {
    for_each_store(|store| {
        let served = common::server::Served::start(
            store,
            BOOKED_AND_WAITING,
            "[users.ada]\nroles = [\"traveller\"]\n\n[users.ops]\nroles = [\"ops\"]\n\n[workflows.trip]\nstarters = [\"ops\"]\n",
            &[],
        );
        let ops = served.token("ops", &[]);
        let start = || {
            let run = served.call(
                "POST",
                "/api/runs",
                Some(&ops),
                Some(json!({ "workflow": "trip", "input": { "who": "ada" } })),
                201,
            );
            let id = run["id"].as_str().unwrap().to_string();
            // The flight is booked (on the server's pool) before the run waits at the gate.
            wait_until(
                "the run to wait at its gate",
                Duration::from_secs(20),
                || {
                    let shown =
                        served.call("GET", &format!("/api/runs/{id}"), Some(&ops), None, 200);
                    shown["waiting_on"] == "approval confirm"
                },
            );
            id
        };
        let log =
            || std::fs::read_to_string(served.dir.path().join("cancelled.log")).unwrap_or_default();

        let run = start();
        let path = format!("/api/runs/{run}/cancel");
        served.call(
            "POST",
            &path,
            Some(&ops),
            Some(json!({ "compensate": "no" })),
            400,
        );
        assert_eq!(log(), "", "a refused cancel undoes nothing");
        served.call("POST", &path, Some(&ops), Some(json!({})), 200);
        served.wait_for_status(&ops, &run, "cancelled", Duration::from_secs(20));
        let kinds = served.history_kinds(&ops, &run);
        assert!(kinds.iter().any(|k| k == "compensated"), "{kinds:?}");
        assert!(
            log().contains("F-1"),
            "the flight was cancelled: {:?}",
            log()
        );

        let before = log();
        let run = start();
        let path = format!("/api/runs/{run}/cancel");
        served.call(
            "POST",
            &path,
            Some(&ops),
            Some(json!({ "compensate": false })),
            200,
        );
        served.wait_for_status(&ops, &run, "cancelled", Duration::from_secs(20));
        assert_eq!(log(), before, "--no-compensate undoes nothing");
        let kinds = served.history_kinds(&ops, &run);
        assert!(!kinds.iter().any(|k| k == "compensated"), "{kinds:?}");
    });
}

const CANNOT_UNDO: &str = r#"tool book_flight(who: String) -> String via exec "echo '\"F-1\"'"
tool cancel_flight(id: String) -> Bool via exec "echo 'the desk is closed' >&2; exit 5"
tool book_car(who: String) -> String via exec "echo 'no car left' >&2; exit 4"

workflow trip(who: String) -> String {
  let flight = book_flight(who) undo { cancel_flight(flight) }
  book_car(who)
}
"#;

/// Over the API: a run whose undo failed is listed by `GET /api/runs?status=needs_attention`
/// and counted in `/metrics`; only role `operator` may resolve it, with a note.
#[test]
fn the_api_lists_counts_and_resolves_runs_that_need_attention() {
    for_each_store(|store| {
        let served = common::server::Served::start(
            store,
            CANNOT_UNDO,
            "[users.ops]\nroles = [\"ops\"]\n\n[users.olga]\nroles = [\"operator\"]\n\n[workflows.trip]\nstarters = [\"ops\"]\n",
            &[],
        );
        let ops = served.token("ops", &[]);
        let olga = served.token("olga", &[]);
        let run = served.call(
            "POST",
            "/api/runs",
            Some(&ops),
            Some(json!({ "workflow": "trip", "input": { "who": "ada" } })),
            201,
        );
        let run = run["id"].as_str().unwrap().to_string();
        served.wait_for_status(&ops, &run, "failed", Duration::from_secs(20));
        let listed = served.call(
            "GET",
            "/api/runs?status=needs_attention",
            Some(&ops),
            None,
            200,
        );
        let listed = listed.as_array().unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["id"], json!(run));
        assert!(
            listed[0]["needs_attention"]
                .as_str()
                .unwrap()
                .contains("the desk is closed"),
            "{listed:?}"
        );
        served.call("GET", "/api/runs?status=sad", Some(&ops), None, 400);
        let metrics = || {
            let (_, body) = served
                .try_request("GET", "/metrics", Some(&olga), None)
                .unwrap();
            body
        };
        assert!(
            metrics().contains("flow_runs_needing_attention 1"),
            "{}",
            metrics()
        );
        let path = format!("/api/runs/{run}/resolve");
        served.call(
            "POST",
            &path,
            Some(&ops),
            Some(json!({ "note": "done" })),
            403,
        );
        served.call("POST", &path, Some(&olga), Some(json!({})), 400);
        served.call("POST", &path, Some(&olga), Some(json!({ "note": 7 })), 400);
        served.call(
            "POST",
            &path,
            Some(&olga),
            Some(json!({ "note": "refunded by hand" })),
            200,
        );
        served.call(
            "POST",
            &path,
            Some(&olga),
            Some(json!({ "note": "again" })),
            409,
        );
        assert!(
            metrics().contains("flow_runs_needing_attention 0"),
            "{}",
            metrics()
        );
        let kinds = served.history_kinds(&ops, &run);
        assert!(kinds.iter().any(|k| k == "attention_resolved"), "{kinds:?}");
        assert!(
            kinds.iter().any(|k| k == "request_refused"),
            "the refused resolve is in the trail: {kinds:?}"
        );
    });
}

/// A trip that tells the traveller when it is cancelled, whose flight's undo cancels it, and
/// that waits for a confirmation. `tell` fails when the message holds "fail".
const TELLS_WHEN_CANCELLED: &str = r#"tool book_flight(who: String) -> String via exec "echo booked >> trip.log; echo '\"F-1\"'"
tool cancel_flight(id: String) -> Bool via exec "echo cancelled flight >> trip.log; echo true"
tool tell(msg: String) -> Bool via exec "sh tools/tell.sh"

workflow trip(who: String, note: String) -> String {
  on cancel {
    tell("the trip of ${who} is cancelled ${note}")
  }
  let flight = book_flight(who) undo { cancel_flight(flight) }
  let d = await approval "confirm" { approvers: user("ada") }
  if !d.approved { fail "not confirmed" }
  flight
}
"#;

const TELL: &str = r#"#!/bin/sh
msg=$(cat)
case "$msg" in
  *fail*) echo "the phone is off" >&2; exit 3 ;;
esac
echo "told $msg" >> trip.log
echo true
"#;

/// `on cancel { … }` runs when the run is cancelled, before its undo blocks, as a child run
/// of its own; it does not run when the run fails or completes, nor with `--no-compensate`.
/// When it fails, the undo blocks run all the same and the run needs attention.
#[test]
fn on_cancel_runs_first_when_cancelled_and_only_then() {
    for_each_store(|store| {
        let project = Project::new(store);
        project.write("trip.flow", TELLS_WHEN_CANCELLED);
        project.write("tools/tell.sh", TELL);
        project.write("flow.toml", "[users.ada]\nroles = [\"traveller\"]\n");
        let log = |project: &Project| -> Vec<String> {
            std::fs::read_to_string(project.path().join("trip.log"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        };
        let start = |project: &Project, note: &str| {
            let _ = std::fs::remove_file(project.path().join("trip.log"));
            let out = project.flowrt(&[
                "run",
                "trip.flow",
                "--input",
                &json!({ "who": "ada", "note": note }).to_string(),
                "--json",
            ]);
            out.expect_code(10);
            out.json()["id"].as_str().unwrap().to_string()
        };

        let run = start(&project, "today");
        project.flowrt(&["cancel", &run]).expect_code(EXIT_OK);
        let status = project.status(&run);
        assert_eq!(status["status"], "cancelled", "{status}");
        assert!(status.get("needs_attention").is_none(), "{status}");
        assert_eq!(
            log(&project),
            [
                "booked",
                r#"told {"msg":"the trip of ada is cancelled today"}"#,
                "cancelled flight"
            ],
            "on cancel first, then the undo blocks"
        );
        let history = project.history(&run);
        let child = of_kind(&history, "child_started");
        assert_eq!(child.len(), 1, "{history:#?}");
        assert_eq!(child[0]["step"], "trip#cancel");
        assert_eq!(of_kind(&history, "child_completed").len(), 1);
        assert_eq!(of_kind(&history, "compensated").len(), 1);
        assert_eq!(of_kind(&history, "run_cancelled").len(), 1);

        // Not when the run fails or completes.
        let run = start(&project, "never");
        project
            .flowrt(&["reject", &run, "confirm", "--as", "ada", "--comment", "no"])
            .expect_code(EXIT_OK)
            .expect_stdout("now failed");
        assert_eq!(project.status(&run)["status"], "failed");
        assert_eq!(
            log(&project),
            ["booked", "cancelled flight"],
            "only the undo"
        );
        let run = start(&project, "never");
        project
            .flowrt(&["approve", &run, "confirm", "--as", "ada"])
            .expect_code(EXIT_OK);
        assert_eq!(project.status(&run)["status"], "completed");
        assert_eq!(log(&project), ["booked"]);

        // Not with --no-compensate.
        let run = start(&project, "never");
        project
            .flowrt(&["cancel", &run, "--no-compensate"])
            .expect_code(EXIT_OK);
        assert_eq!(project.status(&run)["status"], "cancelled");
        assert_eq!(log(&project), ["booked"]);

        // An `on cancel` that fails: the undo blocks run all the same, the run needs
        // attention.
        let run = start(&project, "fail");
        project.flowrt(&["cancel", &run]).expect_code(EXIT_OK);
        let status = project.status(&run);
        assert_eq!(status["status"], "cancelled", "{status}");
        assert_eq!(log(&project), ["booked", "cancelled flight"]);
        let why = status["needs_attention"].as_str().unwrap_or_default();
        assert!(
            why.contains("`on cancel` of `trip` failed") && why.contains("the phone is off"),
            "{status}"
        );
    });
}

/// Programs misusing `on cancel` are refused with their codes.
#[test]
fn on_cancel_inside_a_block_or_twice_is_refused() {
    for_each_store(|store| {
        let project = Project::new(store);
        for (program, code) in [
            (
                "tool t(x: Int) -> Int via exec \"cat\"\nworkflow w(x: Int) -> Int {\n  if x > 1 {\n    on cancel { t(x) }\n  }\n  x\n}\n",
                "E0413",
            ),
            (
                "tool t(x: Int) -> Int via exec \"cat\"\nworkflow w(x: Int) -> Int {\n  on cancel { t(x) }\n  on cancel { t(x) }\n  x\n}\n",
                "E0202",
            ),
            (
                "workflow w(x: Int) -> Int {\n  on cancel { return 1 }\n  x\n}\n",
                "E0407",
            ),
        ] {
            project.write("w.flow", program);
            project
                .flowrt(&["run", "w.flow", "--input", r#"{"x": 1}"#])
                .expect_code(EXIT_USAGE)
                .expect_stderr(code);
        }
    });
}
