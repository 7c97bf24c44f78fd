//! Pure functions (`fn`, spec/statements.md, "Functions") through the real binaries on both
//! stores: recursive and mutually recursive functions compute a run's values; a call is not a
//! step (nothing of it is in the history) and a run that waits after computing with them
//! resumes with the same values; an error inside a function — an index out of range, a
//! `fail`, recursion deeper than 1,000 calls, an endless loop — reaches the caller's `catch`,
//! and uncaught fails the run pointing at the line in the function; an artifact whose function
//! code holds a durable instruction is refused by the verifier.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, events, for_each_store};

const PROGRAM: &str = r#"type Claim = { id: String, amount: Int }

/// Two to the power of `n`.
fn pow2(n: Int) -> Int {
  if n <= 0 { return 1 }
  return 2 * pow2(n - 1)
}

fn fib(n: Int) -> Int {
  if n < 2 { return n }
  fib(n - 1) + fib(n - 2)
}

fn is_even(n: Int) -> Bool {
  if n == 0 { return true }
  is_odd(n - 1)
}

fn is_odd(n: Int) -> Bool {
  if n == 0 { return false }
  is_even(n - 1)
}

fn nth(claims: List<Claim>, i: Int) -> Claim { claims[i] }

fn checked(c: Claim) -> Int {
  if c.amount < 0 { fail "negative amount in ${c.id}" }
  c.amount
}

fn spin(n: Int) -> Int {
  var i = 0
  while true { i = i + n }
  i
}

workflow compute(n: Int) -> String {
  "${pow2(n)} ${fib(n)} ${is_even(n)} ${is_odd(n)}"
}

workflow guarded(claims: List<Claim>, i: Int, depth: Int) -> String {
  let picked = try { "${checked(nth(claims, i))}" } catch e { "caught ${e.kind}: ${e.message}" }
  let deep = try { "${pow2(depth)}" } catch e { "caught ${e.message}" }
  let looped = try { "${spin(1)}" } catch e { "caught ${e.message}" }
  "${picked} | ${deep} | ${looped}"
}

workflow unguarded(claims: List<Claim>, i: Int) -> Int {
  checked(nth(claims, i))
}

workflow waits(n: Int) -> Int {
  let before = fib(n)
  let d = await approval "go" { approvers: role("ops") }
  if !d.approved { return 0 }
  before + pow2(n)
}
"#;

const CONFIG: &str = "[users.ops]\nroles = [\"ops\"]\n";

fn project(store: &common::Store) -> Project {
    let project = Project::new(store);
    project.write("flow.toml", CONFIG);
    project.write("fns.flow", PROGRAM);
    project
}

#[test]
fn recursive_functions_compute_a_runs_result_without_a_step() {
    for_each_store(|store| {
        let project = project(store);
        let out = project.flowrt(&[
            "run",
            "fns.flow",
            "--workflow",
            "compute",
            "--input",
            r#"{"n": 20}"#,
            "--json",
        ]);
        out.expect_code(0);
        let view = out.json();
        assert_eq!(view["output"], "1048576 6765 true false", "{view}");
        let run = project.runs()[0]["id"].as_str().unwrap().to_string();
        let history = project.history(&run);
        // A function call is not a step: the run started and completed, nothing between.
        assert_eq!(
            events(&history),
            ["run_started", "run_completed"],
            "{history:#?}"
        );
    });
}

#[test]
fn a_run_that_waits_after_calling_functions_resumes_with_their_values() {
    for_each_store(|store| {
        let project = project(store);
        project
            .flowrt(&[
                "run",
                "fns.flow",
                "--workflow",
                "waits",
                "--input",
                r#"{"n": 10}"#,
            ])
            .expect_code(10);
        let run = project.runs()[0]["id"].as_str().unwrap().to_string();
        project
            .flowrt(&["approve", &run, "go", "--as", "ops"])
            .expect_code(0);
        project.flowrt(&["worker", "--once"]).expect_code(0);
        let status = project.status(&run);
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["output"], 55 + 1024, "{status}");
    });
}

#[test]
fn errors_inside_functions_reach_the_callers_catch() {
    for_each_store(|store| {
        let project = project(store);
        let claims = r#"[{"id": "A", "amount": 5}, {"id": "B", "amount": -1}]"#;
        let run = |i: i64, depth: i64| {
            let input = format!(r#"{{"claims": {claims}, "i": {i}, "depth": {depth}}}"#);
            let out = project.flowrt(&[
                "run",
                "fns.flow",
                "--workflow",
                "guarded",
                "--input",
                &input,
                "--json",
            ]);
            out.expect_code(0);
            out.json()["output"].as_str().unwrap().to_string()
        };
        let loop_caught =
            "caught function `spin` ran more than 10000000 instructions without returning";
        let fine = run(0, 62);
        assert!(fine.starts_with("5 | 4611686018427387904 | "), "{fine}");
        assert!(fine.contains(loop_caught), "{fine}");
        let failed = run(1, 3);
        assert!(
            failed.starts_with("caught Failed: negative amount in B | 8 | "),
            "{failed}"
        );
        let out_of_range = run(7, 1000);
        assert!(
            out_of_range.starts_with(
                "caught Failed: index 7 is out of range for a list of 2 item(s) | caught function `pow2` was called more than 1000 calls deep"
            ),
            "{out_of_range}"
        );
    });
}

#[test]
fn an_uncaught_error_in_a_function_fails_the_run_at_the_functions_line() {
    for_each_store(|store| {
        let project = project(store);
        let out = project.flowrt(&[
            "run",
            "fns.flow",
            "--workflow",
            "unguarded",
            "--input",
            r#"{"claims": [{"id": "A", "amount": -3}], "i": 0}"#,
        ]);
        out.expect_code(1)
            .expect_stderr("negative amount in A")
            // `fail` inside `checked`, not the call in the workflow.
            .expect_stderr("fns.flow:27:");
    });
}

#[test]
fn an_artifact_whose_function_takes_a_durable_step_is_refused() {
    use flow_compiler::bytecode::{self, Op};
    for_each_store(|store| {
        let project = project(store);
        let program = flow_compiler::check_paths(
            &[project
                .path()
                .join("fns.flow")
                .to_string_lossy()
                .into_owned()],
            &flow_compiler::sources::FsLoader,
        )
        .unwrap();
        let mut module = flow_compiler::lower::lower(&program).unwrap();
        // `checked` fails with its message; make that an audit (a durable point) instead,
        // checksummed again as a careless or hostile tool would.
        let (index, _) = module.function("checked").unwrap();
        let function = &mut module.functions[index];
        let at = function.code.iter().position(|op| *op == Op::Fail).unwrap();
        module.events.push("sneaky".into());
        let event = (module.events.len() - 1) as u32;
        let function = &mut module.functions[index];
        function.code[at] = Op::Audit { event };
        project.write_bytes("fns.flowb", &bytecode::encode(&module));
        for args in [
            &[
                "run",
                "fns.flowb",
                "--workflow",
                "compute",
                "--input",
                r#"{"n": 1}"#,
            ][..],
            &["deploy", "fns.flowb"][..],
        ] {
            project
                .flowrt(args)
                .expect_code(2)
                .expect_stderr("does not pass the verifier")
                .expect_stderr("function `checked`")
                .expect_stderr("is a durable point; a function has none");
        }
        assert!(project.runs().is_empty());
    });
}
