//! The formatter (`flowc fmt`, see `spec/format.md`).
//!
//! - `format_cases`: one snapshot per messy input in `tests/format/` (the input, then what
//!   the formatter makes of it); each case's first line says what it exercises.
//! - `corpus_and_examples_keep_their_meaning`: every file of `tests/corpus/`, `examples/`
//!   and `tests/format/` that parses is formatted; the result is formatted again (nothing changes), checked again
//!   (the same diagnostic codes, at the same tokens) and, when it has no errors, lowered again
//!   (the same instructions, apart from debug locations and the source hash).
//! - `committed_files_are_formatted`: what CI checks with `flowc fmt --check`.

use flow_compiler::format::{FormatError, format};
use flow_compiler::sources::MemoryLoader;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("compiler/ has a parent directory")
        .to_path_buf()
}

fn relative_name(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Every file under `dir`, recursively, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the directory is readable") {
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

#[test]
fn format_cases() {
    insta::glob!("../../tests/format", "*.flow", |path| {
        let input = std::fs::read_to_string(path).expect("a readable UTF-8 case");
        assert!(
            input.starts_with("// "),
            "{}: a format case starts with a `// ` line saying what it exercises",
            path.display()
        );
        let output = format(&input).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            format(&output).expect("the output formats"),
            output,
            "{}: formatting twice changes the text",
            path.display()
        );
        let shown = format!("{input}\n---- flowc fmt ----\n{output}");
        insta::with_settings!({ omit_expression => true, prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(shown);
        });
    });
}

/// The cases of a corpus: each root file with the other files of its directory case.
fn cases(dir: &Path) -> Vec<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the directory exists")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() && entry.join("main.flow").is_file() {
            let main = entry.join("main.flow");
            let mut files = vec![main.clone()];
            files.extend(
                walk(&entry)
                    .into_iter()
                    .filter(|p| *p != main && p.extension().is_some_and(|e| e == "flow")),
            );
            out.push(files);
        } else if entry.extension().is_some_and(|e| e == "flow") {
            out.push(vec![entry]);
        }
    }
    out
}

/// The text under a span with whitespace and separators left out: which tokens it covers.
fn tokens_under(text: &str, span: flow_compiler::span::Span) -> String {
    let end = (span.end as usize).min(text.len());
    let start = (span.start as usize).min(end);
    text[start..end]
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ',' && *c != ';')
        .collect()
}

/// What checking shows, independent of layout: code and the tokens under each label.
fn diagnostics_shape(program: &flow_compiler::Program) -> Vec<String> {
    program
        .diagnostics
        .iter()
        .map(|d| {
            let file = program.db.display_name(d.file());
            let text = program.db.text(d.file());
            let mut shown = format!(
                "{} {file} `{}`",
                d.code.id,
                tokens_under(text, d.primary.span)
            );
            for label in &d.secondary {
                let text = program.db.text(label.file);
                shown.push_str(&format!(" / `{}`", tokens_under(text, label.span)));
            }
            shown
        })
        .collect()
}

fn lowered(program: &flow_compiler::Program) -> Option<flow_compiler::bytecode::Module> {
    if program.errors() > 0 {
        return None;
    }
    let mut module = flow_compiler::lower::lower(program).expect("an error-free program lowers");
    module.source_hash.clear();
    for workflow in &mut module.workflows {
        workflow.debug.clear();
    }
    Some(module)
}

#[test]
fn corpus_and_examples_keep_their_meaning() {
    let root = workspace_root();
    let mut skipped = Vec::new();
    let mut failures = Vec::new();
    let all = cases(&root.join("tests/corpus"))
        .into_iter()
        .chain(cases(&root.join("examples")))
        .chain(cases(&root.join("tests/format")));
    for files in all {
        let root_name = relative_name(&root, &files[0]);
        let mut before = MemoryLoader::default();
        let mut after = MemoryLoader::default();
        for file in &files {
            let name = relative_name(&root, file);
            let bytes = std::fs::read(file).expect("a readable file");
            let Ok(text) = String::from_utf8(bytes.clone()) else {
                skipped.push(name.clone());
                before.files.insert(name.clone(), bytes.clone());
                after.files.insert(name, bytes);
                continue;
            };
            let output = match format(&text) {
                Ok(output) => output,
                Err(FormatError::Syntax { .. }) => {
                    skipped.push(name.clone());
                    text.clone()
                }
                Err(error) => {
                    failures.push(format!("{name}: {error}"));
                    text.clone()
                }
            };
            match format(&output) {
                Ok(again) if again == output => {}
                Ok(again) => failures.push(format!(
                    "{name}: formatting twice changes the text:\n---- once ----\n{output}\n---- twice ----\n{again}"
                )),
                Err(FormatError::Syntax { .. }) if output == text => {}
                Err(error) => failures.push(format!("{name}: the formatted text: {error}")),
            }
            before.files.insert(name.clone(), text.into_bytes());
            after.files.insert(name, output.into_bytes());
        }
        let check = |loader: &MemoryLoader| {
            flow_compiler::check_paths(std::slice::from_ref(&root_name), loader)
                .unwrap_or_else(|e| panic!("{root_name}: cannot load: {}", e.reason))
        };
        let (old, new) = (check(&before), check(&after));
        let (old_shape, new_shape) = (diagnostics_shape(&old), diagnostics_shape(&new));
        if old_shape != new_shape {
            failures.push(format!(
                "{root_name}: the diagnostics changed:\n  before: {old_shape:?}\n  after:  {new_shape:?}"
            ));
        }
        if lowered(&old) != lowered(&new) {
            failures.push(format!("{root_name}: the bytecode changed"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Only files whose point is a syntax error are left alone.
    for name in &skipped {
        let base = name.rsplit('/').next().unwrap_or(name);
        let case = name.split('/').nth(2).unwrap_or(base);
        assert!(
            case.starts_with("E01"),
            "{name} does not parse, but its case is not about a syntax error"
        );
    }
}

/// Every example and corpus file that parses is already formatted (CI runs
/// `flowc fmt --check examples tests/corpus` too).
#[test]
fn committed_files_are_formatted() {
    let root = workspace_root();
    let mut unformatted = Vec::new();
    for dir in ["examples", "tests/corpus"] {
        for path in walk(&root.join(dir)) {
            if path.extension().is_none_or(|e| e != "flow") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if let Ok(output) = format(&text)
                && output != text
            {
                unformatted.push(relative_name(&root, &path));
            }
        }
    }
    assert!(
        unformatted.is_empty(),
        "not formatted (run `flowc fmt examples tests/corpus`): {unformatted:?}"
    );
}

/// The example in `spec/format.md`: the `text` block under "The style" formats to the `flow`
/// block that follows it.
#[test]
fn spec_example_is_current() {
    let text = std::fs::read_to_string(workspace_root().join("spec/format.md"))
        .expect("spec/format.md exists");
    let block = |from: usize, kind: &str| {
        let fence = format!("```{kind}\n");
        let open = from + text[from..].find(&fence).expect("a fenced block") + fence.len();
        let close = open + text[open..].find("```").expect("the block is closed");
        (&text[open..close], close)
    };
    let style = text.find("## The style").expect("a section on the style");
    let (before, end) = block(style, "text");
    let (after, _) = block(end, "flow");
    assert_eq!(format(before).expect("the example formats"), after);
}
