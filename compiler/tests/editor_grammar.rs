//! The VS Code extension's TextMate grammar (`editors/vscode/syntaxes/flow.tmLanguage.json`)
//! highlights every example, every corpus case that parses and every `flow` block of the spec
//! with no untokenized or mis-scoped character.
//!
//! The check itself is `editors/vscode/test/tokenize.js`, run with Node.js because the grammar
//! must be tokenized by the engine VS Code uses (`vscode-textmate` + `vscode-oniguruma`, npm
//! dev dependencies of the extension). CI installs them (`.ci/run`); locally run
//! `npm ci --prefix editors/vscode` once. Without Node.js or those packages this test fails
//! and says so, rather than passing without checking anything.

use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL: &str =
    "run `npm ci --prefix editors/vscode` (Node.js and npm required; CI does this in .ci/run)";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("compiler/ has a parent directory")
        .to_path_buf()
}

#[test]
fn textmate_grammar_covers_every_example() {
    let root = workspace_root();
    let extension = root.join("editors/vscode");
    let script = extension.join("test/tokenize.js");
    assert!(script.is_file(), "{} is missing", script.display());

    let node = std::env::var_os("NODE").unwrap_or_else(|| "node".into());
    match Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`node --version` failed ({}): install Node.js, then {INSTALL}",
            out.status
        ),
        Err(err) => panic!("Node.js (`node`) was not found ({err}): install it, then {INSTALL}"),
    }

    for package in ["vscode-textmate", "vscode-oniguruma"] {
        let dir = extension.join("node_modules").join(package);
        assert!(
            dir.join("package.json").is_file(),
            "{} is not installed: {INSTALL}",
            dir.display()
        );
    }

    let out = Command::new(&node)
        .arg(&script)
        .current_dir(&root)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "editors/vscode/test/tokenize.js failed ({}):\n{stdout}{stderr}",
        out.status
    );
    assert!(
        stdout.starts_with("ok: "),
        "unexpected output from tokenize.js:\n{stdout}{stderr}"
    );
}
