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
        (
            "newer.flowb",
            newer,
            "upgrade flowrt, or rebuild with this flowc",
        ),
        (
            "text.flowb",
            SOURCE.as_bytes().to_vec(),
            "not a Flow bytecode file",
        ),
        ("empty.flowb", Vec::new(), "not a Flow bytecode file"),
        (
            "unverified.flowb",
            unverified(good),
            "does not pass the verifier",
        ),
    ]
}

/// `good` with an instruction taken out of its first workflow and checksummed again: every
/// byte is as an encoder wrote it, but the code no longer balances its stack.
fn unverified(good: &[u8]) -> Vec<u8> {
    let mut module = bytecode::decode(good).expect("the good artifact decodes");
    let first_pop = module.workflows[0]
        .code
        .iter()
        .position(|op| {
            bytecode::verify::stack_effect(&module, *op).is_some_and(|(pops, _)| pops > 0)
        })
        .expect("an instruction that pops");
    // The instruction that pushed what the first popping one takes.
    let pusher = first_pop.saturating_sub(1);
    module.workflows[0].code.remove(pusher);
    module.workflows[0].debug.remove(pusher);
    bytecode::encode(&module)
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
    // A folder that cannot be created: `order.flow` is a file.
    let target: &Path = &dir.path("order.flow/out.flowb");
    dir.flowc(&["build", "order.flow", "-o", &target.to_string_lossy()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot write"))
        .stderr(predicate::str::contains("Not a directory"));
}

#[test]
fn missing_output_folders_are_created() {
    let dir = Dir::new();
    let target = dir.path("out/deep/order.flowb");
    dir.flowc(&["build", "order.flow", "-o", &target.to_string_lossy()])
        .assert()
        .success();
    let written = std::fs::read(&target).expect("the artifact was written");
    assert!(bytecode::decode(&written).is_ok());
}

#[test]
fn only_regular_files_are_replaced() {
    let dir = Dir::new();
    std::fs::create_dir(dir.path("folder.flowb")).expect("a folder");
    let fifo = dir.path("pipe.flowb");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    std::os::unix::fs::symlink(dir.path("order.flow"), dir.path("link.flowb")).expect("a link");
    for (target, what) in [
        ("/dev/full".to_string(), "not a regular file"),
        ("/dev/null".to_string(), "not a regular file"),
        (
            dir.path("pipe.flowb").to_string_lossy().into_owned(),
            "not a regular file",
        ),
        (
            dir.path("folder.flowb").to_string_lossy().into_owned(),
            "a directory",
        ),
        (
            dir.path("link.flowb").to_string_lossy().into_owned(),
            "a symbolic link",
        ),
    ] {
        dir.flowc(&["build", "order.flow", "-o", &target])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(format!("cannot write `{target}`")))
            .stderr(predicate::str::contains(what))
            .stderr(no_crash());
    }
    use std::os::unix::fs::FileTypeExt;
    let full = std::fs::metadata("/dev/full").expect("/dev/full");
    assert!(
        full.file_type().is_char_device(),
        "/dev/full is still a device"
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .expect("the FIFO")
            .file_type()
            .is_fifo()
    );
    assert!(!dir.path("/dev/full.partial").exists());
}

#[test]
fn sources_that_are_not_regular_files_are_refused() {
    let dir = Dir::new();
    let fifo = dir.path("pipe.flow");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs")
            .success()
    );
    dir.write(
        "imports.flow",
        "import \"pipe.flow\"\nimport \"/dev/zero\"\n",
    );
    for args in [
        vec!["check", "pipe.flow"],
        vec!["build", "/dev/zero"],
        vec!["check", "imports.flow"],
    ] {
        let assert = dir
            .flowc(&args)
            .timeout(std::time::Duration::from_secs(20))
            .assert();
        let output = assert.get_output().clone();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            (stderr + &stdout).contains("not a regular file"),
            "{args:?}: {output:?}"
        );
        assert!(
            matches!(output.status.code(), Some(1) | Some(2)),
            "{args:?}: {output:?}"
        );
    }
}
