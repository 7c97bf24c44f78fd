//! `flowc fmt [--check] PATH…` through the real binary: rewriting in place, `--check`, exit
//! statuses (0 formatted, 1 `--check` found files to change, 2 usage, I/O or syntax errors),
//! files that do not parse, directories.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

const MESSY: &str = "type A={a:Int}\nworkflow w( a:A )->Int{a.a+1}\n";
const TIDY: &str = "type A = { a: Int }\n\nworkflow w(a: A) -> Int {\n  a.a + 1\n}\n";
const BROKEN: &str = "workflow w() -> Int {\n  let x = \n}\n";

struct Dir(TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(TempDir::new().expect("a temporary directory"))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the parent directory");
        }
        std::fs::write(&path, bytes).expect("write the file");
        path
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).expect("read the file")
    }

    /// `flowc fmt <args…>` run inside this directory.
    fn fmt(&self, args: &[&str]) -> Command {
        let mut cmd = assert_cmd::cargo::cargo_bin_cmd!("flowc");
        cmd.current_dir(self.path()).arg("fmt").args(args);
        cmd
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path())
            .expect("list the directory")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

#[test]
fn rewrites_files_in_place_and_then_has_nothing_to_do() {
    let dir = Dir::new();
    dir.write("a.flow", MESSY);
    dir.fmt(&["a.flow"])
        .assert()
        .success()
        .stdout("")
        .stderr("formatted 1 file: 1 changed\n");
    assert_eq!(dir.read("a.flow"), TIDY);
    // No temporary file is left beside it.
    assert_eq!(dir.names(), vec!["a.flow"]);
    dir.fmt(&["a.flow"])
        .assert()
        .success()
        .stderr("formatted 1 file: 0 changed\n");
    assert_eq!(dir.read("a.flow"), TIDY);
}

#[test]
fn check_lists_the_files_that_would_change_and_writes_nothing() {
    let dir = Dir::new();
    dir.write("messy.flow", MESSY);
    dir.write("tidy.flow", TIDY);
    dir.fmt(&["--check", "messy.flow", "tidy.flow"])
        .assert()
        .code(1)
        .stdout("messy.flow\n")
        .stderr(predicate::str::contains(
            "checked 2 files: 1 not formatted (run `flowc fmt` on it)",
        ));
    assert_eq!(dir.read("messy.flow"), MESSY);
    dir.fmt(&["--check", "tidy.flow"])
        .assert()
        .success()
        .stdout("")
        .stderr("checked 1 file: all formatted\n");
}

#[test]
fn a_named_file_with_syntax_errors_is_left_alone_with_status_2() {
    let dir = Dir::new();
    dir.write("broken.flow", BROKEN);
    dir.write("messy.flow", MESSY);
    for check in [true, false] {
        let mut args = vec!["broken.flow", "messy.flow"];
        if check {
            args.insert(0, "--check");
        }
        dir.fmt(&args)
            .env("NO_COLOR", "1")
            .assert()
            .code(2)
            .stderr(predicate::str::contains(
                "[E0100] Error: Expected an expression",
            ))
            .stderr(predicate::str::contains("broken.flow:2:")) // the diagnostic's place
            .stderr(predicate::str::contains(
                "error: `broken.flow` has syntax errors; it was not formatted",
            ));
        assert_eq!(dir.read("broken.flow"), BROKEN);
    }
    // The other file was still formatted (without --check).
    assert_eq!(dir.read("messy.flow"), TIDY);
}

#[test]
fn directories_are_searched_and_files_that_do_not_parse_are_skipped() {
    let dir = Dir::new();
    dir.write("src/a.flow", MESSY);
    dir.write("src/nested/b.flow", TIDY);
    dir.write("src/nested/broken.flow", BROKEN);
    dir.write("src/latin1.flow", b"// caf\xe9\n");
    dir.write("src/notes.txt", "not flow");
    dir.fmt(&["--check", "src"])
        .assert()
        .code(1)
        .stdout("src/a.flow\n")
        .stderr(predicate::str::contains(
            "note: skipped `src/nested/broken.flow`: syntax error at 2:10: Expected an expression, found `}`",
        ))
        .stderr(predicate::str::contains(
            "note: skipped `src/latin1.flow`: it is not UTF-8 text",
        ))
        .stderr(predicate::str::contains(
            "checked 4 files: 1 not formatted, 2 skipped",
        ));
    dir.fmt(&["src"]).assert().success();
    assert_eq!(dir.read("src/a.flow"), TIDY);
    assert_eq!(dir.read("src/nested/broken.flow"), BROKEN);
    dir.fmt(&["--check", "src"]).assert().success().stdout("");
}

#[test]
fn usage_and_io_errors_exit_with_2() {
    let dir = Dir::new();
    dir.fmt(&[]).assert().code(2);
    dir.fmt(&["--bogus", "x.flow"]).assert().code(2);
    dir.fmt(&["missing.flow"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("missing.flow"));
    std::fs::create_dir(dir.path().join("empty")).expect("create a directory");
    dir.fmt(&["empty"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no .flow files found"));
    dir.write("latin1.flow", b"// caf\xe9\n");
    dir.fmt(&["latin1.flow"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("it is not UTF-8 text"));
}

#[cfg(unix)]
#[test]
fn rewriting_keeps_the_file_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    let path = dir.write("a.flow", MESSY);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    dir.fmt(&["a.flow"]).assert().success();
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    assert_eq!(dir.read("a.flow"), TIDY);
}
