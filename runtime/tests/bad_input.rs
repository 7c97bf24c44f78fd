//! Bad input to `flowrt`, through the real binary: every read is bounded and every refusal
//! names the place — `--input @FILE` of a device, a FIFO or a huge file; JSON that names a key
//! twice; negative durations; an artifact that is checksummed but does not pass the verifier.
//! Nothing is recorded for a refused start.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::{Project, for_each_store};
use std::time::{Duration, Instant};

const WAIT: &str = r#"type Request = { order_id: String, amount: Int, grace: Duration }

workflow take(request: Request) -> Duration {
  request.grace
}
"#;

fn project(store: &common::Store) -> Project {
    let project = Project::new(store);
    project.write("take.flow", WAIT);
    project
}

/// `flowrt ARGS` must refuse with exit status 2, quickly, with `needle` in its message.
fn refused(project: &Project, args: &[&str], needle: &str) {
    let started = Instant::now();
    let out = project.flowrt(args);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{args:?} took {:?}",
        started.elapsed()
    );
    out.expect_code(2).expect_stderr(needle);
}

#[test]
fn input_files_are_bounded_and_must_be_regular_files() {
    for_each_store(|store| {
        let project = project(store);
        let fifo = project.path().join("input.fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let huge = project.path().join("huge.json");
        let file = std::fs::File::create(&huge).unwrap();
        file.set_len(17 << 20).unwrap(); // sparse: 17 MiB of zeros without writing them
        for (input, needle) in [
            ("@/dev/zero", "not a regular file"),
            ("@input.fifo", "not a regular file"),
            ("@huge.json", "longer than the 16 MiB"),
            ("@missing.json", "no such file or directory"),
            ("@.", "it is a directory"),
        ] {
            refused(
                &project,
                &["run", "take.flow", "--input", input],
                &format!("--input: cannot read {}", &input[1..]),
            );
            refused(&project, &["run", "take.flow", "--input", input], needle);
        }
        assert!(project.runs().is_empty(), "nothing was started");
    });
}

#[test]
fn a_key_given_twice_and_a_negative_duration_are_refused_with_their_path() {
    for_each_store(|store| {
        let project = project(store);
        refused(
            &project,
            &[
                "run",
                "take.flow",
                "--input",
                r#"{"request": {"order_id": "A", "amount": 1, "amount": 90, "grace": "5s"}}"#,
            ],
            "$.request.amount: the key `amount` appears twice",
        );
        project.write(
            "dup.json",
            r#"{"request": {"order_id": "A", "amount": 1, "grace": "5s"}, "request": {}}"#,
        );
        refused(
            &project,
            &["run", "take.flow", "--input", "@dup.json"],
            "$.request: the key `request` appears twice",
        );
        for grace in ["-5000", r#""-5s""#] {
            let input =
                format!(r#"{{"request": {{"order_id": "A", "amount": 1, "grace": {grace}}}}}"#);
            let out = project.flowrt(&["run", "take.flow", "--input", &input]);
            assert_ne!(out.code, 0, "{grace}: {}", out.all());
            out.expect_stderr("$.request.grace");
        }
        assert!(project.runs().is_empty(), "nothing was started");
        // The same value, once and not negative, is taken.
        project
            .flowrt(&[
                "run",
                "take.flow",
                "--input",
                r#"{"request": {"order_id": "A", "amount": 1, "grace": 5000}}"#,
            ])
            .expect_code(0)
            .expect_stdout("5s");
    });
}

#[test]
fn an_artifact_that_fails_the_verifier_is_not_deployed() {
    use flow_compiler::bytecode;
    for_each_store(|store| {
        let project = project(store);
        // Compile in process (as flowc build does), then damage one instruction's operand and
        // checksum the result again, as a careless or hostile tool would.
        let program = flow_compiler::check_paths(
            &[project
                .path()
                .join("take.flow")
                .to_string_lossy()
                .into_owned()],
            &flow_compiler::sources::FsLoader,
        )
        .unwrap();
        let mut module = flow_compiler::lower::lower(&program).unwrap();
        module.workflows[0].locals = 0;
        project.write_bytes("take.flowb", &bytecode::encode(&module));
        refused(
            &project,
            &[
                "run",
                "take.flowb",
                "--input",
                r#"{"request": {"order_id": "A", "amount": 1, "grace": "1s"}}"#,
            ],
            "does not pass the verifier",
        );
        refused(
            &project,
            &["deploy", "take.flowb"],
            "does not pass the verifier",
        );
        assert!(project.runs().is_empty());
    });
}
