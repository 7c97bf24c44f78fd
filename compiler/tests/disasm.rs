//! Bytecode goldens: the disassembly of every single-file clean corpus case and of every
//! example, snapshotted after the source, so a change in the lowering shows up in review as
//! a diff of the instructions. Every program the corpus and the examples hold without errors
//! (directory cases and warning cases too) must also lower, pass the verifier and survive an
//! encode/decode round trip.

use flow_compiler::bytecode::{self, disasm, verify};
use flow_compiler::sources::MemoryLoader;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("compiler/ has a parent directory")
        .to_path_buf()
}

/// `path` relative to the workspace root, with `/` separators.
fn relative_name(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Every `.flow` file under `dir`, recursively, keyed by its name relative to the root.
fn load_dir(root: &Path, dir: &Path, loader: &mut MemoryLoader) {
    for entry in std::fs::read_dir(dir).expect("a readable directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            load_dir(root, &path, loader);
        } else if path.extension().is_some_and(|e| e == "flow") {
            let bytes = std::fs::read(&path).expect("a readable file");
            loader.files.insert(relative_name(root, &path), bytes);
        }
    }
}

/// Checks, lowers and verifies the program rooted at `path`; returns the module.
fn compile(root: &Path, path: &Path) -> bytecode::Module {
    let mut loader = MemoryLoader::default();
    load_dir(
        root,
        path.parent().expect("a parent directory"),
        &mut loader,
    );
    let name = relative_name(root, path);
    let program = flow_compiler::check_paths(std::slice::from_ref(&name), &loader)
        .unwrap_or_else(|e| panic!("{name}: {}", e.reason));
    assert_eq!(program.errors(), 0, "{name} has errors");
    let module = flow_compiler::lower::lower(&program)
        .unwrap_or_else(|e| panic!("{name} does not lower: {e}"));
    verify::verify(&module).unwrap_or_else(|e| panic!("{name} does not verify: {e}"));
    let decoded = bytecode::decode(&bytecode::encode(&module))
        .unwrap_or_else(|e| panic!("{name} does not round-trip: {e}"));
    assert_eq!(
        decoded, module,
        "{name} changes in an encode/decode round trip"
    );
    module
}

fn snapshot(root: &Path, path: &Path) -> String {
    let module = compile(root, path);
    let source = std::fs::read_to_string(path).expect("a readable UTF-8 source");
    format!(
        "{source}\n---- flowc disasm ----\n{}",
        disasm::disassemble(&module)
    )
}

#[test]
fn disasm() {
    let root = workspace_root();
    insta::glob!("../../tests/corpus", "clean_*.flow", |path| {
        let shown = snapshot(&root, path);
        insta::with_settings!({ omit_expression => true, prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(shown);
        });
    });
}

#[test]
fn disasm_example() {
    let root = workspace_root();
    insta::glob!("../../examples", "*.flow", |path| {
        let shown = snapshot(&root, path);
        insta::with_settings!({ omit_expression => true, prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(shown);
        });
    });
}

/// Every corpus case without errors, single-file or directory, clean or with warnings.
#[test]
fn every_error_free_corpus_case_lowers_and_verifies() {
    let root = workspace_root();
    let corpus = root.join("tests/corpus");
    let mut lowered = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("tests/corpus exists")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for entry in entries {
        let path = if entry.is_dir() {
            entry.join("main.flow")
        } else {
            entry
        };
        let text = String::from_utf8_lossy(&std::fs::read(&path).expect("readable")).into_owned();
        let header = text.lines().next().unwrap_or_default();
        let has_errors = header
            .trim_start_matches("// expect:")
            .split(',')
            .any(|code| code.trim().starts_with('E'));
        if has_errors {
            continue;
        }
        compile(&root, &path);
        lowered += 1;
    }
    assert!(lowered >= 25, "only {lowered} corpus cases were lowered");
}
