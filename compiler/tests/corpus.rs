//! The corpus: one snapshot test per case under `tests/corpus/` (see `tests/README.md`).
//!
//! A case is a `.flow` file directly in `tests/corpus/`, or a directory there whose
//! `main.flow` is the root (the other files in it are only imported). The root's first line
//! states the expected diagnostic codes: `// expect: clean` or `// expect: E0300, W0001`.
//! The test checks that exactly those codes are reported, then snapshots the source followed
//! by the diagnostics exactly as `flowc check` prints them for people (without colour).

use flow_compiler::diagnostics::{codes, render};
use flow_compiler::sources::MemoryLoader;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The workspace root (the parent of `compiler/`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("compiler/ has a parent directory")
        .to_path_buf()
}

/// `path` relative to the workspace root, with `/` separators: the name diagnostics show.
fn relative_name(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The codes announced by the first line of a case, or an explanation of what is wrong.
fn expected_codes(text: &str) -> Result<BTreeSet<String>, String> {
    let first = text.lines().next().unwrap_or_default().trim();
    let Some(rest) = first.strip_prefix("// expect:") else {
        return Err(format!(
            "the first line must be `// expect: clean` or `// expect: E0300, W0001`, found `{first}`"
        ));
    };
    let rest = rest.trim();
    if rest == "clean" {
        return Ok(BTreeSet::new());
    }
    let mut expected = BTreeSet::new();
    for code in rest.split(',').map(str::trim) {
        if codes::by_id(code).is_none() {
            return Err(format!("`{code}` in the header is not a diagnostic code"));
        }
        expected.insert(code.to_string());
    }
    Ok(expected)
}

/// Every file under `dir`, recursively, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the corpus directory is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The files of a case: the root first, then the other `.flow` files of its directory.
fn case_files(root_file: &Path) -> Vec<PathBuf> {
    let mut files = vec![root_file.to_path_buf()];
    if root_file.file_name().is_some_and(|n| n == "main.flow") {
        let dir = root_file.parent().expect("a case file has a directory");
        files.extend(
            walk(dir)
                .into_iter()
                .filter(|p| p != root_file && p.extension().is_some_and(|e| e == "flow")),
        );
    }
    files
}

#[test]
fn corpus() {
    let root = workspace_root();
    let mut wrong_codes: Vec<String> = Vec::new();
    insta::glob!("../../tests/corpus", "{*.flow,*/main.flow}", |path| {
        let files = case_files(path);
        let mut loader = MemoryLoader::default();
        let mut shown = String::new();
        for file in &files {
            let name = relative_name(&root, file);
            let bytes = std::fs::read(file).expect("a corpus file is readable");
            if files.len() > 1 {
                writeln!(shown, "==> {name} <==").expect("writing to a String");
            }
            shown.push_str(&String::from_utf8_lossy(&bytes));
            if !shown.ends_with('\n') {
                shown.push('\n');
            }
            loader.files.insert(name, bytes);
        }
        let root_name = relative_name(&root, path);
        let root_text = String::from_utf8_lossy(&loader.files[&root_name]).into_owned();
        let expected = expected_codes(&root_text).unwrap_or_else(|p| panic!("{root_name}: {p}"));

        let program = flow_compiler::check_paths(std::slice::from_ref(&root_name), &loader)
            .unwrap_or_else(|e| panic!("{root_name}: cannot load the case: {}", e.reason));
        let rendered = render::human(&program.diagnostics, &program.db, false);
        let found: BTreeSet<String> = program
            .diagnostics
            .iter()
            .map(|d| d.code.id.to_string())
            .collect();
        if found != expected {
            wrong_codes.push(format!(
                "{root_name}: the header expects {expected:?} but the compiler reported \
                 {found:?}; the diagnostics were:\n{rendered}"
            ));
        }

        let rendered = if rendered.is_empty() {
            "(no diagnostics)\n".to_string()
        } else {
            rendered
        };
        let snapshot = format!("{shown}\n---- flowc check ----\n{rendered}");
        insta::with_settings!({ omit_expression => true, prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(snapshot);
        });
    });
    assert!(
        wrong_codes.is_empty(),
        "{} corpus case(s) report other codes than their header says:\n\n{}",
        wrong_codes.len(),
        wrong_codes.join("\n")
    );
}

/// Codes that cannot have a corpus case yet, each with the reason. Keep this empty: a code
/// listed here must be covered by another test (see `cli.rs`) until its case can be added.
const NOT_IN_CORPUS: &[(&str, &str)] = &[];

/// Every diagnostic code is shown by at least one case.
#[test]
fn every_code_has_a_corpus_case() {
    let corpus = workspace_root().join("tests/corpus");
    let mut covered = BTreeSet::new();
    for path in walk(&corpus) {
        let is_root = path.extension().is_some_and(|e| e == "flow")
            && (path.parent() == Some(corpus.as_path())
                || path.file_name().is_some_and(|n| n == "main.flow"));
        if is_root {
            let text =
                String::from_utf8_lossy(&std::fs::read(&path).expect("readable")).into_owned();
            covered.extend(expected_codes(&text).unwrap_or_default());
        }
    }
    let missing: Vec<&str> = codes::ALL
        .iter()
        .map(|c| c.id)
        .filter(|id| !covered.contains(*id))
        .filter(|id| !NOT_IN_CORPUS.iter().any(|(code, _)| code == id))
        .collect();
    assert!(
        missing.is_empty(),
        "no corpus case expects these codes: {missing:?}; add a case for each to tests/corpus/"
    );
}
