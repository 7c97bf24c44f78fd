//! Tests of `flowc build` and `flowc disasm` through the real binary: a build writes an
//! artifact that decodes to the same program the source lowers to; the listing of a source
//! file and of its artifact are the same; a program with errors writes nothing; and every
//! kind of bad artifact is refused with exit status 2 and a message that says what is wrong.

use assert_cmd::Command;
use flow_compiler::bytecode;
use predicates::prelude::*;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

fn flowc() -> Command {
    assert_cmd::cargo::cargo_bin_cmd!("flowc")
}

const SOURCE: &str = "\
type Order = { id: String, amount: Int }
tool charge(order: Order) -> Bool via http post \"/charge\"

workflow bill(order: Order) -> Bool {
  let ok = retry 3 backoff 1s { charge(order) }
  audit \"billed\" { id: order.id, ok }
  ok
}

workflow twice(order: Order) {
  bill(order)
  bill(order)
}
";

/// A temporary directory holding `order.flow`.
struct Dir(TempDir);

impl Dir {
    fn new() -> Dir {
        let dir = Dir(TempDir::new().expect("a temporary directory"));
        dir.write("order.flow", SOURCE);
        dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).expect("write the file");
        path
    }

    /// `flowc <args…>` run inside this directory.
    fn flowc(&self, args: &[&str]) -> Command {
        let mut cmd = flowc();
        cmd.current_dir(self.0.path()).args(args);
        cmd
    }

    /// Builds `order.flow` to `order.flowb` and returns the artifact's bytes.
    fn built(&self) -> Vec<u8> {
        self.flowc(&["build", "order.flow"]).assert().success();
        std::fs::read(self.path("order.flowb")).expect("the artifact was written")
    }
}

fn stdout(cmd: &mut Command) -> String {
    let output = cmd.output().expect("flowc runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// Nothing a crash would print.
fn no_crash() -> impl Predicate<str> {
    predicate::str::contains("panicked")
        .or(predicate::str::contains("internal error"))
        .not()
}

#[test]
fn build_writes_an_artifact_that_decodes_to_the_lowered_program() {
    let dir = Dir::new();
    let hash_of = |bytes: &[u8]| bytecode::encoding::artifact_hash(bytes);
    let output = dir
        .flowc(&["build", "order.flow"])
        .output()
        .expect("flowc runs");
    assert!(output.status.success(), "{output:?}");
    let bytes = std::fs::read(dir.path("order.flowb")).expect("written");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(
        stderr,
        format!(
            "wrote order.flowb (2 workflows, sha256 {})\n",
            hash_of(&bytes)
        )
    );
    assert!(output.stdout.is_empty());

    let module = bytecode::decode(&bytes).expect("the artifact decodes");
    let program = flow_compiler::check_text("order.flow", SOURCE);
    assert_eq!(
        module,
        flow_compiler::lower::lower(&program).expect("lowers")
    );
    bytecode::verify::verify(&module).expect("verifies");
    let names: Vec<&str> = module.workflows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["bill", "twice"]);
    // No temporary file is left behind.
    let mut files: Vec<String> = std::fs::read_dir(dir.0.path())
        .expect("readable")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["order.flow", "order.flowb"]);
}

#[test]
fn build_is_deterministic_and_honours_the_output_flag() {
    let dir = Dir::new();
    let first = dir.built();
    dir.flowc(&["build", "order.flow", "-o", "again.flowb"])
        .assert()
        .success()
        .stderr(predicate::str::starts_with(
            "wrote again.flowb (2 workflows",
        ));
    let second = std::fs::read(dir.path("again.flowb")).expect("written");
    assert_eq!(first, second);
    dir.flowc(&["build", "order.flow", "--output", "third.flowb"])
        .assert()
        .success();
    assert!(dir.path("third.flowb").exists());
}

#[test]
fn disasm_of_the_source_and_of_the_artifact_agree() {
    let dir = Dir::new();
    dir.built();
    let from_source = stdout(&mut dir.flowc(&["disasm", "order.flow"]));
    let from_artifact = stdout(&mut dir.flowc(&["disasm", "order.flowb"]));
    assert_eq!(from_source, from_artifact);
    assert!(from_source.contains("workflow bill(order: Order) -> Bool"));
    assert!(from_source.contains("call_tool charge"));
    assert!(from_source.contains("; order.flow:5:"), "{from_source}");
}

#[test]
fn a_program_with_errors_builds_nothing() {
    let dir = Dir::new();
    dir.write("bad.flow", "workflow w() -> Int {\n  \"text\"\n}\n");
    let check = dir.flowc(&["check", "bad.flow"]).output().expect("runs");
    dir.flowc(&["build", "bad.flow"])
        .assert()
        .code(1)
        .stderr(predicate::eq(
            String::from_utf8(check.stderr).expect("UTF-8").as_str(),
        ));
    assert!(!dir.path("bad.flowb").exists());
    dir.flowc(&["disasm", "bad.flow"])
        .assert()
        .code(1)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains("E0300"));
}

#[test]
fn warnings_are_shown_but_do_not_stop_the_build() {
    let dir = Dir::new();
    dir.write("warn.flow", "workflow w() {\n  let unused = 1\n}\n");
    dir.flowc(&["build", "warn.flow"])
        .assert()
        .success()
        .stderr(
            predicate::str::contains("W0001").and(predicate::str::contains("wrote warn.flowb")),
        );
    assert!(dir.path("warn.flowb").exists());
}

/// Each bad artifact: its bytes and a phrase the message must contain.
fn bad_artifacts(good: &[u8]) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut flipped = good.to_vec();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    let mut newer = good.to_vec();
    newer[8] = newer[8].wrapping_add(1);
    vec![
        (
            "truncated.flowb",
            good[..good.len() - 10].to_vec(),
            "truncated",
        ),
        ("flipped.flowb", flipped, "checksum does not match"),
        ("newer.flowb", newer, "bytecode format 2"),
        (
            "text.flowb",
            SOURCE.as_bytes().to_vec(),
            "not a Flow bytecode file",
        ),
        ("empty.flowb", Vec::new(), "not a Flow bytecode file"),
    ]
}

#[test]
fn bad_artifacts_are_refused_with_a_clear_message() {
    let dir = Dir::new();
    let good = dir.built();
    for (name, bytes, phrase) in bad_artifacts(&good) {
        dir.write(name, bytes);
        dir.flowc(&["disasm", name])
            .assert()
            .code(2)
            .stdout(predicate::str::is_empty())
            .stderr(predicate::str::starts_with(format!(
                "error: cannot read `{name}`: "
            )))
            .stderr(predicate::str::contains(phrase))
            .stderr(no_crash());
    }
}

#[test]
fn missing_files_are_usage_errors() {
    let dir = Dir::new();
    for args in [
        ["disasm", "missing.flowb"],
        ["disasm", "missing.flow"],
        ["build", "missing.flow"],
    ] {
        dir.flowc(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("cannot read `missing.flow"))
            .stderr(predicate::str::contains("no such file or directory"));
    }
    assert!(!dir.path("missing.flowb").exists());
}

#[test]
fn an_unwritable_output_is_a_usage_error() {
    let dir = Dir::new();
    let target: &Path = &dir.path("no/such/dir/out.flowb");
    dir.flowc(&["build", "order.flow", "-o", &target.to_string_lossy()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot write"));
}
