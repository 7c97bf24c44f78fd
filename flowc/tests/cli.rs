//! Tests of the real `flowc` binary: exit statuses, the summary line, directories, the
//! output formats (human, JSON, GitHub annotations), colour, and bad input of every kind.
//!
//! Exit statuses: 0 clean, 1 errors (or warnings with `--deny-warnings`), 2 usage or I/O
//! error. Human output goes to stderr; JSON and GitHub annotations go to stdout.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

fn flowc() -> Command {
    assert_cmd::cargo::cargo_bin_cmd!("flowc")
}

/// A temporary directory to write `.flow` files into.
struct Dir(TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(TempDir::new().expect("a temporary directory"))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Writes `bytes` to `name` (creating parent directories) and returns the full path.
    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the parent directory");
        }
        std::fs::write(&path, bytes).expect("write the file");
        path
    }

    /// `flowc check <args…>` run inside this directory, so paths in output are relative.
    fn check(&self, args: &[&str]) -> Command {
        let mut cmd = flowc();
        cmd.current_dir(self.path()).arg("check").args(args);
        cmd
    }
}

fn stdout_of(cmd: &mut Command) -> String {
    String::from_utf8(cmd.output().expect("flowc runs").stdout).expect("stdout is UTF-8")
}

fn stderr_of(cmd: &mut Command) -> String {
    String::from_utf8(cmd.output().expect("flowc runs").stderr).expect("stderr is UTF-8")
}

/// The diagnostics printed by `--format json`, parsed.
fn json_diagnostics(cmd: &mut Command) -> Vec<Value> {
    let stdout = stdout_of(cmd);
    let value: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stdout}"));
    value.as_array().expect("a JSON array").clone()
}

fn codes(diagnostics: &[Value]) -> Vec<&str> {
    diagnostics
        .iter()
        .map(|d| d["code"].as_str().expect("a code"))
        .collect()
}

/// Nothing a crash would print.
fn no_crash() -> impl Predicate<str> {
    predicate::str::contains("panicked")
        .or(predicate::str::contains("internal error"))
        .or(predicate::str::contains("overflow"))
        .not()
}

const CLEAN: &str = "\
type Order = { id: String, amount: Int }

workflow total(o: Order) -> Int {
  o.amount
}
";

const ONE_ERROR: &str = "\
workflow w() -> Int {
  let count: Int = \"three\"
  count
}
";

const WARNINGS_ONLY: &str = "\
workflow w() -> Int {
  let spare = 1
  return 2
  3
}
";

/// A type mismatch on a line with accents, CJK and an emoji: columns count characters.
const UNICODE_ERROR: &str = "\
workflow vérifier() -> Int {
  let étiquette_日本: Int = \"🚢 x\"
  étiquette_日本
}
";

const THREE_SYNTAX_ERRORS: &str = "\
type Order = { id: String, amount Int }

workflow one(o: Order) -> Int {
  let x = (o.amount + 1
  x
}

workflow two() -> Int {
  let = 5
  3
}
";

// ----- exit statuses and the summary ------------------------------------------------

#[test]
fn a_clean_file_exits_0_with_a_summary_on_stderr() {
    let dir = Dir::new();
    dir.write("clean.flow", CLEAN);
    dir.check(&["clean.flow"])
        .assert()
        .code(0)
        .stdout("")
        .stderr("checked 1 file: no problems\n");
}

#[test]
fn errors_exit_1_and_are_shown_with_a_count() {
    let dir = Dir::new();
    dir.write("bad.flow", ONE_ERROR);
    dir.check(&["bad.flow"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("[E0300] Error: Type mismatch"))
        .stderr(predicate::str::contains("bad.flow:2:20"))
        .stderr(predicate::str::contains("expected `Int`, found `String`"))
        .stderr(predicate::str::ends_with(
            "checked 1 file: 1 error, 0 warnings\n",
        ));
}

#[test]
fn warnings_alone_exit_0_unless_denied() {
    let dir = Dir::new();
    dir.write("warn.flow", WARNINGS_ONLY);
    dir.check(&["warn.flow"])
        .assert()
        .code(0)
        .stderr(predicate::str::contains("[W0001]"))
        .stderr(predicate::str::contains("[W0002]"))
        .stderr(predicate::str::ends_with(
            "checked 1 file: 0 errors, 2 warnings\n",
        ));
    dir.check(&["--deny-warnings", "warn.flow"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("[W0001]"));
    // The flag works after the paths too, and with the machine formats.
    dir.check(&["warn.flow", "--deny-warnings", "--format", "json"])
        .assert()
        .code(1);
    dir.check(&["--deny-warnings", "--format", "github", "warn.flow"])
        .assert()
        .code(1)
        .stdout(predicate::str::starts_with("::warning "));
}

/// A waiver is a note: shown, counted, never a failure (not even with `--deny-warnings`).
#[test]
fn waivers_are_notes_that_never_fail_the_check() {
    let dir = Dir::new();
    dir.write(
        "waive.flow",
        "sensitive tool release(id: String) -> String via http post \"/release\"\n\n\
         workflow ship(id: String, cleared: Bool) -> String {\n  \
           if !cleared {\n    \
             let d = await approval \"ok\" { approvers: role(\"ops\") }\n    \
             if !d.approved { fail \"held\" }\n  \
           } else {\n    \
             waive approval for release because \"pre-cleared\" { id }\n  \
           }\n  \
           release(id)\n}\n",
    );
    dir.check(&["waive.flow"])
        .assert()
        .code(0)
        .stderr(predicate::str::contains("[N0001]"))
        .stderr(predicate::str::contains("waived here: \"pre-cleared\""))
        .stderr(predicate::str::ends_with(
            "checked 1 file: no problems, 1 note\n",
        ));
    dir.check(&["--deny-warnings", "waive.flow"])
        .assert()
        .code(0);
    dir.check(&["--format", "github", "waive.flow"])
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with("::notice "));
    dir.check(&["--format", "json", "waive.flow"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("\"note\""));
}

#[test]
fn deny_warnings_changes_nothing_for_a_clean_file() {
    let dir = Dir::new();
    dir.write("clean.flow", CLEAN);
    dir.check(&["--deny-warnings", "clean.flow"])
        .assert()
        .code(0);
}

#[test]
fn help_and_version_exit_0() {
    flowc()
        .arg("--help")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("check"));
    flowc()
        .args(["check", "--help"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("--deny-warnings"));
    flowc()
        .arg("--version")
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with("flowc "));
}

// ----- usage and I/O errors: exit 2 ----------------------------------------------

#[test]
fn a_missing_path_exits_2() {
    let dir = Dir::new();
    dir.check(&["nowhere.flow"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("nowhere.flow"))
        .stderr(predicate::str::contains("no such file or directory"));
}

#[test]
fn a_missing_path_among_good_ones_exits_2() {
    let dir = Dir::new();
    dir.write("clean.flow", CLEAN);
    dir.check(&["clean.flow", "nowhere.flow"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nowhere.flow"));
}

#[test]
fn no_arguments_exits_2() {
    flowc()
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Usage"));
    flowc()
        .arg("check")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("<PATHS>"));
}

#[test]
fn an_unknown_flag_exits_2() {
    let dir = Dir::new();
    dir.write("clean.flow", CLEAN);
    dir.check(&["--bogus", "clean.flow"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--bogus"));
    dir.check(&["--format", "xml", "clean.flow"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("xml"));
    flowc()
        .arg("frobnicate")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("frobnicate"));
}

#[test]
fn a_directory_without_flow_files_exits_2() {
    let dir = Dir::new();
    dir.write("empty/notes.txt", "not a flow file");
    dir.write("empty/sub/readme.md", "# nothing here");
    dir.check(&["empty"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no .flow files found in `empty`"));
}

// ----- directories -------------------------------------------------------------------

#[test]
fn directories_are_searched_recursively_for_flow_files() {
    let dir = Dir::new();
    dir.write("project/a.flow", CLEAN);
    dir.write("project/sub/b.flow", ONE_ERROR);
    dir.write("project/sub/deeper/c.flow", CLEAN);
    dir.write("project/sub/notes.txt", "this is not checked: let x = ");
    dir.check(&["project"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("project/sub/b.flow:2:20"))
        .stderr(predicate::str::ends_with(
            "checked 3 files: 1 error, 0 warnings\n",
        ));
    let diagnostics = json_diagnostics(&mut dir.check(&["--format", "json", "project"]));
    assert_eq!(codes(&diagnostics), ["E0300"]);
    assert_eq!(diagnostics[0]["file"], "project/sub/b.flow");
}

#[test]
fn files_and_directories_can_be_mixed() {
    let dir = Dir::new();
    dir.write("one.flow", CLEAN);
    dir.write("more/two.flow", CLEAN);
    dir.write("more/three.flow", CLEAN);
    dir.check(&["one.flow", "more"])
        .assert()
        .code(0)
        .stderr("checked 3 files: no problems\n");
}

// ----- output formats ------------------------------------------------------------

#[test]
fn json_lists_every_diagnostic_with_positions_in_characters() {
    let dir = Dir::new();
    dir.write("uni.flow", UNICODE_ERROR);
    let mut cmd = dir.check(&["--format", "json", "uni.flow"]);
    cmd.assert().code(1).stderr("");
    let diagnostics = json_diagnostics(&mut cmd);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    let d = &diagnostics[0];
    assert_eq!(d["file"], "uni.flow");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["code"], "E0300");
    assert_eq!(d["message"], "Type mismatch");
    // `  let étiquette_日本: Int = "🚢 x"`: the string starts at the 27th character of
    // line 2 (byte 30) and the end column is the character after its closing quote.
    assert_eq!(d["line"], 2);
    assert_eq!(d["column"], 27);
    assert_eq!(d["end_line"], 2);
    assert_eq!(d["end_column"], 32);
    let labels = d["labels"].as_array().expect("labels is an array");
    assert_eq!(labels.len(), 1);
    assert_eq!(labels[0]["primary"], true);
    assert_eq!(labels[0]["file"], "uni.flow");
    assert_eq!(labels[0]["message"], "expected `Int`, found `String`");
    assert_eq!(labels[0]["line"], 2);
    assert_eq!(labels[0]["column"], 27);
    assert!(d["notes"].is_array());
    assert_eq!(
        d["help"],
        "give a value of type `Int` here, or change the declared type"
    );
}

#[test]
fn json_has_the_same_fields_for_every_diagnostic() {
    let dir = Dir::new();
    dir.write(
        "many.flow",
        "\
type Receipt = { id: String }
tool release(c: String) -> Receipt via exec \"release.sh\" sensitive

workflow w(c: String) {
  let unused = 1
  release(c)
}
",
    );
    let diagnostics = json_diagnostics(&mut dir.check(&["--format", "json", "many.flow"]));
    assert_eq!(codes(&diagnostics), ["W0001", "E0400"]);
    for d in &diagnostics {
        for key in [
            "file",
            "severity",
            "code",
            "message",
            "line",
            "column",
            "end_line",
            "end_column",
            "labels",
            "notes",
            "help",
        ] {
            assert!(d.get(key).is_some(), "`{key}` missing in {d:#}");
        }
        for key in ["line", "column", "end_line", "end_column"] {
            assert!(d[key].as_u64().is_some_and(|n| n >= 1), "{key} in {d:#}");
        }
    }
    assert_eq!(diagnostics[0]["severity"], "warning");
    assert_eq!(diagnostics[1]["severity"], "error");
    // E0400 points at the call and explains with labels: the path and the declaration.
    let e0400 = &diagnostics[1];
    assert_eq!(
        (e0400["line"].as_u64(), e0400["column"].as_u64()),
        (Some(6), Some(3))
    );
    let labels = e0400["labels"].as_array().expect("labels");
    assert_eq!(labels.len(), 3, "{labels:#?}");
    assert_eq!(labels.iter().filter(|l| l["primary"] == true).count(), 1);
}

#[test]
fn json_prints_an_empty_array_for_a_clean_file() {
    let dir = Dir::new();
    dir.write("clean.flow", CLEAN);
    let mut cmd = dir.check(&["--format", "json", "clean.flow"]);
    cmd.assert().code(0).stderr("");
    assert!(json_diagnostics(&mut cmd).is_empty());
}

#[test]
fn github_format_prints_one_annotation_per_diagnostic() {
    let dir = Dir::new();
    dir.write("uni.flow", UNICODE_ERROR);
    dir.write("warn.flow", WARNINGS_ONLY);
    let mut cmd = dir.check(&["--format", "github", "uni.flow", "warn.flow"]);
    cmd.assert().code(1).stderr("");
    let stdout = stdout_of(&mut cmd);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with(
            "::error file=uni.flow,line=2,col=27,endLine=2,endColumn=32,title=E0300::Type mismatch: "
        ),
        "{}",
        lines[0]
    );
    // Multi-line messages are escaped so each annotation stays on one line.
    assert!(lines[0].contains("%0Ahelp: "), "{}", lines[0]);
    assert!(
        lines[1].starts_with(
            "::warning file=warn.flow,line=2,col=7,endLine=2,endColumn=12,title=W0001::"
        ),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("::warning file=warn.flow,line=4,"),
        "{}",
        lines[2]
    );
    assert!(lines[2].contains("title=W0002::"), "{}", lines[2]);
}

#[test]
fn human_output_has_no_colour_when_not_on_a_terminal() {
    let dir = Dir::new();
    dir.write("bad.flow", ONE_ERROR);
    // The test harness captures stderr, so it is not a terminal.
    dir.check(&["bad.flow"])
        .env_remove("NO_COLOR")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("E0300"))
        .stderr(predicate::str::contains("\u{1b}[").not());
    dir.check(&["bad.flow"])
        .env("NO_COLOR", "1")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("E0300"))
        .stderr(predicate::str::contains("\u{1b}[").not());
}

// ----- bad input never panics ------------------------------------------------------

#[test]
fn an_empty_file_is_clean() {
    let dir = Dir::new();
    dir.write("empty.flow", "");
    dir.write(
        "comments.flow",
        "// only a comment\n/// and a doc comment\n\n",
    );
    dir.write("blank.flow", "\n\n   \t\n");
    dir.check(&["empty.flow", "comments.flow", "blank.flow"])
        .assert()
        .code(0)
        .stderr("checked 3 files: no problems\n");
}

/// The first invalid byte, as `flowc` reports it.
fn first_bad_byte(bytes: &[u8]) -> usize {
    std::str::from_utf8(bytes)
        .expect_err("not UTF-8")
        .valid_up_to()
}

fn latin1_file() -> Vec<u8> {
    // `café` in Latin-1: 0xE9 is not valid UTF-8 here.
    b"// expenses\nworkflow caf\xe9() {}\n".to_vec()
}

/// Deterministic "random" bytes, NULs and all.
fn garbage(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    out[3] = 0;
    out[10] = 0xff;
    out
}

#[test]
fn a_non_utf8_file_is_e0106_with_the_byte_offset_in_json() {
    let dir = Dir::new();
    let bytes = latin1_file();
    dir.write("latin1.flow", &bytes);
    let mut cmd = dir.check(&["--format", "json", "latin1.flow"]);
    cmd.assert().code(1).stderr(no_crash());
    let diagnostics = json_diagnostics(&mut cmd);
    assert_eq!(codes(&diagnostics), ["E0106"]);
    let offset = first_bad_byte(&bytes);
    assert_eq!(offset, 24);
    let label = diagnostics[0]["labels"][0]["message"]
        .as_str()
        .expect("a label");
    assert!(label.contains(&format!("byte {offset}")), "{label}");
    assert_eq!(diagnostics[0]["line"], 2);
    assert_eq!(diagnostics[0]["column"], 13);
}

#[test]
fn a_non_utf8_file_is_e0106_with_the_byte_offset() {
    let dir = Dir::new();
    let bytes = latin1_file();
    dir.write("latin1.flow", &bytes);
    dir.check(&["latin1.flow"])
        .assert()
        .code(1)
        .stderr(no_crash())
        .stderr(predicate::str::contains("[E0106]"))
        .stderr(predicate::str::contains(format!(
            "byte {}",
            first_bad_byte(&bytes)
        )));
}

#[test]
fn binary_garbage_is_e0106_in_json() {
    let dir = Dir::new();
    let bytes = garbage(4096);
    dir.write("garbage.flow", &bytes);
    let mut cmd = dir.check(&["--format", "json", "garbage.flow"]);
    cmd.assert().code(1).stderr(no_crash());
    let diagnostics = json_diagnostics(&mut cmd);
    assert_eq!(codes(&diagnostics), ["E0106"]);
    let label = diagnostics[0]["labels"][0]["message"]
        .as_str()
        .expect("a label");
    assert!(
        label.contains(&format!("byte {}", first_bad_byte(&bytes))),
        "{label}"
    );
    dir.check(&["--format", "github", "garbage.flow"])
        .assert()
        .code(1)
        .stdout(predicate::str::starts_with("::error file=garbage.flow,"))
        .stdout(predicate::str::contains("title=E0106::"));
}

#[test]
fn binary_garbage_is_e0106() {
    let dir = Dir::new();
    dir.write("garbage.flow", garbage(4096));
    dir.check(&["garbage.flow"])
        .assert()
        .code(1)
        .stderr(no_crash())
        .stderr(predicate::str::contains("[E0106]"));
}

#[test]
fn control_characters_and_nul_in_valid_utf8_are_reported_not_fatal() {
    let dir = Dir::new();
    dir.write(
        "nul.flow",
        "workflow w() {}\n\u{0}\u{1}\u{7f}\nworkflow v() {}\n",
    );
    let mut cmd = dir.check(&["--format", "json", "nul.flow"]);
    cmd.assert().code(1).stderr(no_crash());
    let diagnostics = json_diagnostics(&mut cmd);
    assert_eq!(codes(&diagnostics), ["E0102"]);
    assert_eq!(diagnostics[0]["line"], 2);
    dir.check(&["nul.flow"])
        .assert()
        .code(1)
        .stderr(no_crash())
        .stderr(predicate::str::contains("[E0102]"));
}

#[test]
fn a_ten_megabyte_file_of_declarations_checks_clean() {
    let mut text = String::with_capacity(10 * 1024 * 1024 + 1024);
    let mut i = 0;
    while text.len() < 10 * 1024 * 1024 {
        text.push_str(&format!(
            "type Record{i} = {{ id: String, amount: Int, tags: List<String>, note: String? }}\n\
             enum Status{i} {{ Open, Closed(reason: String) }}\n\
             tool fetch{i}(id: String) -> Record{i} via http get \"/records/{i}\"\n\
             workflow handle{i}(id: String) -> Int {{\n  let r = fetch{i}(id)\n  if r.amount > {i} {{ return r.amount }}\n  r.amount + len(r.tags)\n}}\n"
        ));
        i += 1;
    }
    let dir = Dir::new();
    dir.write("big.flow", &text);
    dir.check(&["big.flow"])
        .assert()
        .code(0)
        .stderr("checked 1 file: no problems\n");
}

#[test]
fn a_missing_import_is_e0205() {
    let dir = Dir::new();
    dir.write(
        "main.flow",
        "import \"lib/types.flow\"\n\nworkflow w(o: Order) -> String {\n  o.id\n}\n",
    );
    let mut cmd = dir.check(&["--format", "json", "main.flow"]);
    cmd.assert().code(1);
    let diagnostics = json_diagnostics(&mut cmd);
    assert_eq!(codes(&diagnostics), ["E0205"]);
    assert_eq!(diagnostics[0]["file"], "main.flow");
    assert_eq!(
        (
            diagnostics[0]["line"].as_u64(),
            diagnostics[0]["column"].as_u64()
        ),
        (Some(1), Some(8))
    );
    dir.check(&["main.flow"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("[E0205]"))
        .stderr(predicate::str::contains("lib/types.flow"));
}

#[test]
fn an_import_of_a_directory_is_e0205() {
    let dir = Dir::new();
    dir.write("lib/types.flow", "type Order = { id: String }\n");
    dir.write("main.flow", "import \"lib\"\n\nworkflow w() {}\n");
    dir.check(&["main.flow"])
        .assert()
        .code(1)
        .stderr(no_crash())
        .stderr(predicate::str::contains("[E0205]"))
        .stderr(predicate::str::contains("directory"));
}

#[test]
fn imports_resolve_relative_to_the_importing_file() {
    let dir = Dir::new();
    dir.write("shared/types.flow", "type Order = { id: String }\n");
    dir.write(
        "app/main.flow",
        "import \"../shared/types.flow\"\n\nworkflow w(o: Order) -> String {\n  o.id\n}\n",
    );
    dir.check(&["app/main.flow"])
        .assert()
        .code(0)
        .stderr("checked 1 file: no problems\n");
}

#[test]
fn an_import_cycle_is_e0206() {
    let dir = Dir::new();
    dir.write("a.flow", "import \"b.flow\"\ntype A = { b: B? }\n");
    dir.write("b.flow", "import \"a.flow\"\ntype B = { a: A? }\n");
    dir.write(
        "main.flow",
        "import \"a.flow\"\n\nworkflow w(x: A) -> Bool {\n  true\n}\n",
    );
    let mut cmd = dir.check(&["--format", "json", "main.flow"]);
    cmd.assert().code(1).stderr(no_crash());
    let diagnostics = json_diagnostics(&mut cmd);
    assert_eq!(codes(&diagnostics), ["E0206"]);
    let message = diagnostics[0]["message"].as_str().expect("a message");
    assert!(message.contains("a.flow → b.flow → a.flow"), "{message}");
    // A file importing itself is a cycle too.
    dir.write("self.flow", "import \"self.flow\"\nworkflow s() {}\n");
    dir.check(&["self.flow"])
        .assert()
        .code(1)
        .stderr(no_crash())
        .stderr(predicate::str::contains("[E0206]"));
}

/// Checks `text` as one file and expects exactly E0103, in JSON and in the human output.
fn assert_too_deep(text: &str) {
    let dir = Dir::new();
    dir.write("deep.flow", text);
    let mut cmd = dir.check(&["--format", "json", "deep.flow"]);
    cmd.assert().code(1).stderr(no_crash());
    assert_eq!(
        codes(&json_diagnostics(&mut cmd)),
        ["E0103"],
        "{}",
        &text[..60.min(text.len())]
    );
    dir.check(&["deep.flow"])
        .assert()
        .code(1)
        .stderr(no_crash())
        .stderr(predicate::str::contains("[E0103]"));
}

#[test]
fn ten_thousand_nested_parentheses_are_e0103() {
    let n = 10_000;
    assert_too_deep(&format!(
        "workflow w() -> Int {{\n  {}1{}\n}}\n",
        "(".repeat(n),
        ")".repeat(n)
    ));
}

#[test]
fn ten_thousand_nested_blocks_are_e0103() {
    let n = 10_000;
    assert_too_deep(&format!(
        "workflow w() {{\n{}{}}}\n",
        "if true {\n".repeat(n),
        "}\n".repeat(n)
    ));
}

#[test]
fn other_deep_nesting_is_e0103_too() {
    let n = 10_000;
    let cases = [
        format!(
            "workflow w() {{\n  let x: Json = {}{}\n}}\n",
            "[".repeat(n),
            "]".repeat(n)
        ),
        format!(
            "type T = {{ a: {}Int{} }}\n",
            "List<".repeat(n),
            ">".repeat(n)
        ),
        format!("workflow w() -> Bool {{\n  {}true\n}}\n", "!".repeat(n)),
        format!(
            "workflow w(x: Json) -> Json {{\n  x{}\n}}\n",
            ".a".repeat(n)
        ),
        format!(
            "workflow w() -> String {{\n  {}1{}\n}}\n",
            "\"${".repeat(n),
            "}\"".repeat(n)
        ),
    ];
    for text in &cases {
        assert_too_deep(text);
    }
}

#[test]
fn three_independent_syntax_errors_are_each_reported() {
    let dir = Dir::new();
    dir.write("broken.flow", THREE_SYNTAX_ERRORS);
    let mut cmd = dir.check(&["--format", "json", "broken.flow"]);
    cmd.assert().code(1);
    let diagnostics = json_diagnostics(&mut cmd);
    assert_eq!(codes(&diagnostics), ["E0100", "E0100", "E0100"]);
    let positions: Vec<(u64, u64)> = diagnostics
        .iter()
        .map(|d| {
            (
                d["line"].as_u64().expect("line"),
                d["column"].as_u64().expect("column"),
            )
        })
        .collect();
    // `amount Int` (missing `:`), `(o.amount + 1` (missing `)`), `let = 5` (missing name).
    assert_eq!(positions, [(1, 35), (4, 24), (9, 7)]);
    let stderr = stderr_of(&mut dir.check(&["broken.flow"]));
    assert_eq!(stderr.matches("[E0100]").count(), 3, "{stderr}");
    assert!(
        stderr.ends_with("checked 1 file: 3 errors, 0 warnings\n"),
        "{stderr}"
    );
}

#[test]
fn errors_in_several_files_are_all_reported() {
    let dir = Dir::new();
    dir.write("a.flow", ONE_ERROR);
    dir.write("b.flow", THREE_SYNTAX_ERRORS);
    dir.write("c.flow", CLEAN);
    let mut cmd = dir.check(&["--format", "json", "a.flow", "b.flow", "c.flow"]);
    cmd.assert().code(1);
    let diagnostics = json_diagnostics(&mut cmd);
    let files: Vec<&str> = diagnostics
        .iter()
        .map(|d| d["file"].as_str().expect("a file"))
        .collect();
    assert_eq!(files, ["a.flow", "b.flow", "b.flow", "b.flow"]);
}

/// `flowc completions SHELL` prints a script the shell accepts, also into a pipe that closes
/// early; an unknown shell is a usage error.
#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = flowc()
            .args(["completions", shell])
            .output()
            .expect("flowc runs");
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = String::from_utf8(output.stdout).expect("UTF-8");
        assert!(
            script.contains("check") && script.contains("fmt"),
            "{shell}"
        );
        if shell == "bash" {
            let parsed = std::process::Command::new("bash")
                .args(["-n", "-c", &script])
                .status()
                .expect("bash runs");
            assert!(parsed.success(), "the bash script parses");
        }
    }
    // A reader that stops after one line: no panic, no error.
    let piped = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "{} completions fish | head -n 1",
                env!("CARGO_BIN_EXE_flowc")
            ),
        ])
        .output()
        .expect("sh runs");
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal error"),
        "{stderr}"
    );
    flowc().args(["completions", "tcsh-ish"]).assert().code(2);
}

// ----- what the checker says about `match` ----------------------------------------

#[test]
fn bare_variants_of_an_optional_enum_are_tested_not_bound() {
    let dir = Dir::new();
    dir.write(
        "paint.flow",
        "enum Color { Red, Green, Blue }\n\
         workflow paint(c: Color?) -> String {\n  match c {\n    Green => \"g\",\n    Blue => \"b\",\n  }\n}\n",
    );
    let mut cmd = dir.check(&["--format", "json", "paint.flow"]);
    cmd.assert().code(1);
    let diagnostics = json_diagnostics(&mut cmd);
    // Before, `Green` bound a variable: only W0001 (unused) and W0002 (unreachable `Blue`).
    assert_eq!(codes(&diagnostics), ["E0304"], "{diagnostics:#?}");
    assert_eq!(diagnostics[0]["line"], 3);
    assert_eq!(
        diagnostics[0]["help"],
        "add the arms `none => …` and `Red => …`, or a catch-all `_ => …`"
    );
    dir.write(
        "paint.flow",
        "enum Color { Red, Green, Blue }\n\
         workflow paint(c: Color?) -> String {\n  match c {\n    none => \"-\",\n    Red => \"r\",\n    Green => \"g\",\n    Blue => \"b\",\n  }\n}\n",
    );
    dir.check(&["paint.flow"])
        .assert()
        .code(0)
        .stderr("checked 1 file: no problems\n");
}

#[test]
fn a_binding_named_like_a_variant_is_an_error_with_a_help() {
    let dir = Dir::new();
    dir.write(
        "label.flow",
        "enum Color { Red, Green }\n\
         workflow label(name: String) -> String {\n  match name {\n    Green => \"g\",\n    _ => \"other\",\n  }\n}\n",
    );
    let mut cmd = dir.check(&["--format", "json", "label.flow"]);
    cmd.assert().code(1);
    let diagnostics = json_diagnostics(&mut cmd);
    assert_eq!(codes(&diagnostics), ["E0316"], "{diagnostics:#?}");
    let help = diagnostics[0]["help"].as_str().expect("a help line");
    assert!(help.contains("`green`"), "{help}");
}

#[test]
fn nested_patterns_count_towards_exhaustiveness() {
    let dir = Dir::new();
    let program = |last: &str| {
        format!(
            "enum Risk {{ Low, High(pep: Bool) }}\n\
             workflow review(r: Risk) -> String {{\n  match r {{\n    Low => \"single\",\n    High(true) => \"board\",\n{last}  }}\n}}\n"
        )
    };
    dir.write("review.flow", program("    High(false) => \"double\",\n"));
    dir.check(&["review.flow"])
        .assert()
        .code(0)
        .stderr("checked 1 file: no problems\n");
    dir.write("review.flow", program(""));
    let mut cmd = dir.check(&["--format", "json", "review.flow"]);
    let diagnostics = json_diagnostics(&mut cmd);
    assert_eq!(codes(&diagnostics), ["E0304"], "{diagnostics:#?}");
    assert_eq!(
        diagnostics[0]["message"],
        "`match` does not cover `High(false)`"
    );
}

#[test]
fn a_test_for_none_narrows_a_let_but_not_a_var() {
    let dir = Dir::new();
    dir.write(
        "narrow.flow",
        "workflow bump(start: Int?) -> Int {\n  let fixed = start\n  if fixed != none { return fixed + 1 }\n  var v = start\n  if v != none { return v + 1 }\n  v = 3\n  0\n}\n",
    );
    let mut cmd = dir.check(&["--format", "json", "narrow.flow"]);
    cmd.assert().code(1);
    let diagnostics = json_diagnostics(&mut cmd);
    // Only the `var` is refused: `fixed + 1` checks, `v + 1` does not.
    assert_eq!(codes(&diagnostics), ["E0308"], "{diagnostics:#?}");
    assert_eq!(diagnostics[0]["line"], 5);
    let help = diagnostics[0]["help"].as_str().expect("a help line");
    assert!(help.contains("copy it into a `let`"), "{help}");
}

// ----- many diagnostics ---------------------------------------------------------------

#[test]
fn at_most_200_diagnostics_per_file_with_a_note_counting_the_rest() {
    let dir = Dir::new();
    let mut program = String::from("workflow w() -> Int {\n");
    for i in 0..10_000 {
        program.push_str(&format!("  nope{i}\n"));
    }
    program.push_str("  0\n}\n");
    dir.write("many.flow", &program);
    dir.write("few.flow", "workflow v() -> Int {\n  missing\n}\n");
    let mut cmd = dir.check(&["--format", "json", "many.flow", "few.flow"]);
    cmd.assert().code(1);
    let diagnostics = json_diagnostics(&mut cmd);
    let many: Vec<&Value> = diagnostics
        .iter()
        .filter(|d| d["file"] == "many.flow")
        .collect();
    assert_eq!(many.len(), 200);
    assert!(many.iter().all(|d| d["code"] == "E0200"));
    // The first 200 in order, the count of the rest on the last one.
    assert_eq!(many[0]["line"], 2);
    assert_eq!(many[199]["line"], 201);
    assert_eq!(
        many[199]["notes"][0],
        "not shown: 9800 more errors in this file (at most 200 are reported per file); fix these and check again"
    );
    assert!(
        many[..199]
            .iter()
            .all(|d| d["notes"] == serde_json::json!([]))
    );
    // Another file keeps its own diagnostics.
    assert_eq!(diagnostics.len(), 201, "{:#?}", diagnostics.last());
    let human = stderr_of(&mut dir.check(&["many.flow"]));
    assert_eq!(human.matches("[E0200]").count(), 200);
    assert_eq!(human.matches("not shown: 9800 more errors").count(), 1);
}

// ----- diagnostics that say what to write ---------------------------------------------

/// The one diagnostic `flowc check --format json` reports for `source`.
fn only_diagnostic(source: &str) -> Value {
    let dir = Dir::new();
    dir.write("w.flow", source);
    let mut cmd = dir.check(&["--format", "json", "w.flow"]);
    cmd.assert().code(1);
    let diagnostics = json_diagnostics(&mut cmd);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    diagnostics[0].clone()
}

#[test]
fn elif_and_const_are_answered_with_what_flow_writes() {
    let elif = only_diagnostic(
        "workflow w(x: Int) -> Int {\n  if x > 0 {\n    1\n  } elif x < 0 {\n    2\n  } else {\n    3\n  }\n}\n",
    );
    assert_eq!(elif["message"], "Flow has no `elif`");
    assert_eq!(
        (elif["line"].clone(), elif["column"].clone()),
        (4.into(), 5.into())
    );
    assert!(
        elif["help"]
            .as_str()
            .is_some_and(|h| h.contains("`else if`"))
    );
    let constant = only_diagnostic("workflow w() -> Int {\n  const x = 1;\n  x\n}\n");
    assert_eq!(constant["message"], "Flow has no `const`");
    assert!(
        constant["help"]
            .as_str()
            .is_some_and(|h| h.contains("`let name = value`"))
    );
}

#[test]
fn a_missing_open_brace_is_one_error() {
    let d = only_diagnostic(
        "workflow w(x: Int) -> Int {\n  if x > 0\n    return 1\n  }\n  let y = x + 1\n  y\n}\n",
    );
    assert_eq!(d["message"], "Expected `{`, found `return`");
    assert_eq!(d["line"], 2);
}

#[test]
fn a_method_call_suggests_the_function_and_a_secret_is_not_told_to_become_text() {
    let method = only_diagnostic("workflow w(xs: List<Int>) -> Int {\n  xs.len()\n}\n");
    assert_eq!(method["code"], "E0302");
    assert!(
        method["help"]
            .as_str()
            .is_some_and(|h| h.contains("`len(xs)`")),
        "{method:#?}"
    );
    let secret = only_diagnostic(
        "tool t(name: String) -> Int via exec \"sh t.sh\"\nworkflow w(s: Secret) -> Int {\n  t(s)\n}\n",
    );
    assert_eq!(secret["code"], "E0300");
    let help = secret["help"].as_str().expect("a help line");
    assert!(!help.contains("to_string"), "{help}");
    assert!(help.contains("never becomes text"), "{help}");
}
