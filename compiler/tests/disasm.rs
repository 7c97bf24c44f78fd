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

/// The fenced block of kind `kind` (`flow`, `text`) that follows `after` in `text`.
fn block_after<'t>(text: &'t str, after: &str, kind: &str) -> &'t str {
    let start = text.find(after).expect("the marker is in the text") + after.len();
    let fence = format!("```{kind}\n");
    let open = start + text[start..].find(&fence).expect("a fenced block follows") + fence.len();
    let close = open + text[open..].find("```").expect("the block is closed");
    &text[open..close]
}

/// The example listing in `spec/bytecode.md` is what `flowc disasm` prints for its source.
#[test]
fn spec_example_listing_is_current() {
    let path = workspace_root().join("spec/bytecode.md");
    let text = std::fs::read_to_string(&path).expect("spec/bytecode.md exists");
    let source = block_after(&text, "## An example", "flow");
    let listing = block_after(&text, "is listed by", "text");
    let program = flow_compiler::check_text("example.flow", source);
    assert_eq!(program.errors(), 0, "the example has errors");
    let module = flow_compiler::lower::lower(&program).expect("the example lowers");
    let actual = disasm::disassemble(&module);
    assert_eq!(
        listing, actual,
        "spec/bytecode.md: the example listing is out of date; replace it with the listing above"
    );
}

/// The instruction table in `spec/bytecode.md` lists every instruction with its number.
#[test]
fn spec_instruction_table_is_complete() {
    use bytecode::Op;
    let ops = [
        Op::Const(0),
        Op::Pop,
        Op::Dup,
        Op::LoadLocal(0),
        Op::StoreLocal(0),
        Op::MakeList(0),
        Op::MakeRecord(0),
        Op::MakeVariant { ty: 0, variant: 0 },
        Op::GetField(0),
        Op::GetFieldOptional(0),
        Op::Index,
        Op::IsVariant(0),
        Op::VariantField(0),
        Op::IsNone,
        Op::Not,
        Op::Neg,
        Op::Add,
        Op::Sub,
        Op::Mul,
        Op::Div,
        Op::Rem,
        Op::Eq,
        Op::NotEq,
        Op::Lt,
        Op::LtEq,
        Op::Gt,
        Op::GtEq,
        Op::ToText,
        Op::Concat(0),
        Op::Jump(0),
        Op::JumpIfFalse(0),
        Op::JumpIfTrue(0),
        Op::JumpIfNotNone(0),
        Op::CallBuiltin { id: 0, args: 0 },
        Op::CallTool { tool: 0 },
        Op::CallWorkflow { workflow: 0 },
        Op::AwaitApproval { gate: 0 },
        Op::AwaitInput { request: 0 },
        Op::Sleep,
        Op::Audit { event: 0 },
        Op::Fail,
        Op::Raise,
        Op::PushHandler { catch: 0, kinds: 0 },
        Op::PopHandler,
        Op::EnterTimeout,
        Op::ExitTimeout,
        Op::Return,
        Op::SetField(0),
        Op::Jitter,
        Op::Conform(0),
        Op::ContinueAs { workflow: 0 },
        Op::AwaitSignal { signal: 0 },
        Op::Select(0),
        Op::Parallel(0),
        Op::Compensate,
        Op::CallFunction { function: 0 },
    ];
    // The list above is every instruction: the next number does not decode.
    assert!(
        postcard::from_bytes::<Op>(&[ops.len() as u8, 0, 0, 0]).is_err(),
        "a new instruction was added: list it here and in spec/bytecode.md"
    );
    let text = std::fs::read_to_string(workspace_root().join("spec/bytecode.md"))
        .expect("spec/bytecode.md exists");
    let mut missing = Vec::new();
    for (number, op) in ops.iter().enumerate() {
        let encoded = postcard::to_stdvec(op).expect("encodes");
        assert_eq!(
            usize::from(encoded[0]),
            number,
            "{op:?} is not number {number}"
        );
        // The listing's name of the instruction: `JumpIfFalse(0)` → `jump_if_false`.
        let debug = format!("{op:?}");
        let name: String = debug
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or_default()
            .chars()
            .enumerate()
            .flat_map(|(i, c)| {
                let lower = c.to_ascii_lowercase();
                if c.is_uppercase() && i > 0 {
                    vec!['_', lower]
                } else {
                    vec![lower]
                }
            })
            .collect();
        let name = if name == "get_field_optional" {
            "get_field?".to_string()
        } else {
            name
        };
        if !text.contains(&format!("| {number} | `{name}` |")) {
            missing.push(format!("| {number} | `{name}` |"));
        }
    }
    assert!(
        missing.is_empty(),
        "spec/bytecode.md lacks these rows of the instruction table: {missing:?}"
    );
}
