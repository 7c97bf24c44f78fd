//! The examples in the language reference (`spec/*.md`) are checked by the compiler.
//!
//! Convention for fenced code blocks:
//!
//! - ` ```flow ` — must check clean: no errors, no warnings.
//! - ` ```flow,error=E0300 ` (several codes comma-separated: ` ```flow,error=E0300,W0001 `) —
//!   must produce exactly that set of diagnostic codes.
//! - any other info string (` ```ebnf `, ` ```text `, …) is not checked.
//!
//! A block may hold several files: a line `// file: name.flow` starts a new file. The text
//! before the first such line is the root file `main.flow`; all files live in one directory,
//! so the root can `import "name.flow"`. Single-file blocks are checked with
//! [`flow_compiler::check_text`] under the name `spec/FILE.md:LINE.flow`.
//!
//! `spec/diagnostics.md` must document every code in [`codes::ALL`] under a heading
//! `### <id> <title>`, with at least one error example for that code in its section.
//!
//! Tables describing the standard library sit between `<!-- generated:NAME -->` and
//! `<!-- /generated -->` and must equal what [`generated`] builds from `flow_stdlib`; run
//! with `UPDATE_SPEC=1` to rewrite them.

use flow_compiler::diagnostics::codes;
use flow_compiler::sources::MemoryLoader;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Codes that no example in a UTF-8 Markdown file can produce; each is tested directly below.
const NOT_SHOWABLE: &[&str] = &["E0106"];

const FILE_MARKER: &str = "// file: ";

#[derive(Debug)]
struct Block {
    /// `spec/FILE.md`.
    file: String,
    /// 1-based line of the opening fence.
    line: usize,
    /// `None`: must check clean. `Some(codes)`: must produce exactly these codes.
    expected: Option<BTreeSet<String>>,
    code: String,
}

impl Block {
    fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the compiler crate lives inside the workspace")
        .join("spec")
}

fn spec_files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(spec_dir())
        .expect("spec/ exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| {
            let name = path.file_name().expect("a file name").to_string_lossy();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            (format!("spec/{name}"), text)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "spec/ holds no Markdown files");
    files
}

/// Extracts the ```flow blocks of one Markdown file; malformed info strings are errors.
fn blocks_of(file: &str, text: &str, problems: &mut Vec<String>) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let trimmed = line.trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            continue;
        };
        let fence_indent = line.len() - trimmed.len();
        let info = info.trim();
        let mut body = Vec::new();
        let mut closed = false;
        for (_, inner) in lines.by_ref() {
            if inner.trim() == "```" {
                closed = true;
                break;
            }
            // Blocks indented under a list item: drop the fence's indentation.
            let strip = inner
                .char_indices()
                .take_while(|(i, c)| *i < fence_indent && *c == ' ')
                .count();
            body.push(&inner[strip..]);
        }
        let location = format!("{file}:{}", index + 1);
        if !closed {
            problems.push(format!("{location}: code block is never closed"));
            continue;
        }
        if !info.starts_with("flow") {
            continue;
        }
        let expected = if info == "flow" {
            None
        } else if let Some(list) = info.strip_prefix("flow,error=") {
            let set: BTreeSet<String> = list.split(',').map(|c| c.trim().to_string()).collect();
            for code in &set {
                if codes::by_id(code).is_none() {
                    problems.push(format!("{location}: `{code}` is not a diagnostic code"));
                }
            }
            Some(set)
        } else {
            problems.push(format!(
                "{location}: unknown info string `{info}`; write ```flow or ```flow,error=E0300"
            ));
            continue;
        };
        let mut code = body.join("\n");
        code.push('\n');
        blocks.push(Block {
            file: file.to_string(),
            line: index + 1,
            expected,
            code,
        });
    }
    blocks
}

/// Splits a block at `// file: name.flow` lines: the root text, then the other files.
fn split_files(code: &str) -> (String, Vec<(String, String)>) {
    let mut root = String::new();
    let mut others: Vec<(String, String)> = Vec::new();
    for line in code.lines() {
        if let Some(name) = line.trim().strip_prefix(FILE_MARKER) {
            others.push((name.trim().to_string(), String::new()));
            continue;
        }
        let target = match others.last_mut() {
            Some((_, text)) => text,
            None => &mut root,
        };
        target.push_str(line);
        target.push('\n');
    }
    (root, others)
}

/// Every diagnostic of a block as `CODE line:col message (label)`, and the set of codes.
fn check_block(block: &Block) -> (Vec<String>, BTreeSet<String>) {
    let (root, others) = split_files(&block.code);
    let program = if others.is_empty() {
        flow_compiler::check_text(&format!("{}.flow", block.location()), &root)
    } else {
        let dir = block.location();
        let mut loader = MemoryLoader::default().with(&format!("{dir}/main.flow"), &root);
        for (name, text) in &others {
            loader = loader.with(&format!("{dir}/{name}"), text);
        }
        flow_compiler::check_paths(&[format!("{dir}/main.flow")], &loader)
            .unwrap_or_else(|e| panic!("{}: cannot load: {}", block.location(), e.reason))
    };
    let mut shown = Vec::new();
    let mut found = BTreeSet::new();
    for d in &program.diagnostics {
        let (line, col) = program.db.line_col(d.file(), d.primary.span.start as usize);
        let name = program.db.display_name(d.file());
        let name = name.rsplit('/').next().unwrap_or(name);
        shown.push(format!(
            "    {} {name} {line}:{col} {} ({})",
            d.code.id, d.message, d.primary.message
        ));
        found.insert(d.code.id.to_string());
    }
    (shown, found)
}

#[test]
fn spec_examples_check_as_annotated() {
    let mut problems = Vec::new();
    let mut count = 0;
    for (file, text) in spec_files() {
        for block in blocks_of(&file, &text, &mut problems) {
            count += 1;
            let (shown, found) = check_block(&block);
            let expected = block.expected.clone().unwrap_or_default();
            if found != expected {
                let want = if expected.is_empty() {
                    "no diagnostics".to_string()
                } else {
                    format!("exactly {expected:?}")
                };
                problems.push(format!(
                    "{}: expected {want}, found {found:?}:\n{}",
                    block.location(),
                    shown.join("\n")
                ));
            }
        }
    }
    assert!(count > 0, "no ```flow blocks found in spec/");
    assert!(
        problems.is_empty(),
        "{} problem(s) with the examples in spec/:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The sections of `spec/diagnostics.md`: heading line, heading text, section text.
fn diagnostic_sections(text: &str) -> Vec<(usize, String, String)> {
    let mut sections: Vec<(usize, String, String)> = Vec::new();
    let mut in_fence = false;
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        if !in_fence && line.starts_with('#') {
            let heading = line.trim_start_matches('#').trim().to_string();
            sections.push((index + 1, heading, String::new()));
            continue;
        }
        if let Some((_, _, body)) = sections.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    sections
}

fn looks_like_code(word: &str) -> bool {
    let mut chars = word.chars();
    matches!(chars.next(), Some('E' | 'W')) && word.len() == 5 && chars.all(|c| c.is_ascii_digit())
}

#[test]
fn every_diagnostic_code_is_documented_with_an_example() {
    let path = spec_dir().join("diagnostics.md");
    let text = std::fs::read_to_string(&path).expect("spec/diagnostics.md exists");
    let sections = diagnostic_sections(&text);
    let mut problems = Vec::new();

    for code in codes::ALL {
        let heading = format!("{} {}", code.id, code.title);
        let Some((_, _, body)) = sections.iter().find(|(_, h, _)| *h == heading) else {
            problems.push(format!(
                "spec/diagnostics.md has no heading `### {heading}`"
            ));
            continue;
        };
        if NOT_SHOWABLE.contains(&code.id) {
            continue;
        }
        let has_example = body.lines().any(|line| {
            line.trim_start()
                .strip_prefix("```flow,error=")
                .is_some_and(|list| list.split(',').any(|c| c.trim() == code.id))
        });
        if !has_example {
            problems.push(format!(
                "spec/diagnostics.md: section `{heading}` has no ```flow,error=… block producing {}",
                code.id
            ));
        }
    }

    for (line, heading, _) in &sections {
        let Some(first) = heading.split_whitespace().next() else {
            continue;
        };
        if !looks_like_code(first) {
            continue;
        }
        match codes::by_id(first) {
            None => problems.push(format!(
                "spec/diagnostics.md:{line}: heading for `{first}`, which is not a diagnostic code"
            )),
            Some(code) if *heading != format!("{} {}", code.id, code.title) => {
                problems.push(format!(
                    "spec/diagnostics.md:{line}: heading `{heading}` does not match the code's title `{}`",
                    code.title
                ))
            }
            Some(_) => {}
        }
    }

    assert!(
        problems.is_empty(),
        "spec/diagnostics.md is out of date with codes::ALL:\n{}",
        problems.join("\n")
    );
}

/// E0106 cannot be shown in a UTF-8 document, so it is checked here instead.
#[test]
fn invalid_utf8_is_reported_as_e0106() {
    let mut loader = MemoryLoader::default();
    loader
        .files
        .insert("bad.flow".to_string(), b"workflow w() {\xff}\n".to_vec());
    let program = flow_compiler::check_paths(&["bad.flow".to_string()], &loader)
        .expect("the file is in the loader");
    let found: Vec<&str> = program.diagnostics.iter().map(|d| d.code.id).collect();
    assert_eq!(found, vec!["E0106"]);
}

// ----- tables generated from the standard library ------------------------------------

const GENERATED_START: &str = "<!-- generated:";
const GENERATED_END: &str = "<!-- /generated -->";
const GENERATED_NAMES: &[&str] = &[
    "builtins",
    "decision",
    "error",
    "error-kinds",
    "approval-options",
    "input-options",
];

fn show_ty(ty: flow_stdlib::Ty) -> String {
    use flow_stdlib::Ty;
    match ty {
        Ty::Int => "Int".into(),
        Ty::Float => "Float".into(),
        Ty::Bool => "Bool".into(),
        Ty::String => "String".into(),
        Ty::Duration => "Duration".into(),
        Ty::Time => "Time".into(),
        Ty::Json => "Json".into(),
        Ty::Approvers => "Approvers".into(),
        Ty::Any => "Any".into(),
        Ty::Var => "T".into(),
        Ty::List(inner) => format!("List<{}>", show_ty(*inner)),
        Ty::Map(inner) => format!("Map<{}>", show_ty(*inner)),
        Ty::Optional(inner) => format!("{}?", show_ty(*inner)),
        Ty::Record(name) => name.into(),
    }
}

fn record_table(record: &flow_stdlib::BuiltinRecord) -> String {
    let mut out = format!(
        "{}\n\n| Field | Type | Meaning |\n|---|---|---|\n",
        record.doc
    );
    for field in record.fields {
        out.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            field.name,
            show_ty(field.ty),
            field.doc
        ));
    }
    out
}

fn options_table(options: &[flow_stdlib::GateOption]) -> String {
    let mut out = String::from("| Option | Type | Required | Meaning |\n|---|---|---|---|\n");
    for option in options {
        let ty = if option.takes_after && !option.after_required {
            format!("`{}` [`after` `Duration`]", show_ty(option.ty))
        } else if option.takes_after {
            format!("`{}` `after` `Duration`", show_ty(option.ty))
        } else {
            format!("`{}`", show_ty(option.ty))
        };
        let required = if option.required { "yes" } else { "no" };
        out.push_str(&format!(
            "| `{}` | {ty} | {required} | {} |\n",
            option.name, option.doc
        ));
    }
    out
}

/// The Markdown for one generated section.
fn generated(name: &str) -> String {
    use flow_stdlib::{Builtin, Effect};
    match name {
        "builtins" => {
            let mut out =
                String::from("| Function | Result | Effect | Description |\n|---|---|---|---|\n");
            for builtin in Builtin::ALL {
                let params: Vec<String> = builtin
                    .params()
                    .iter()
                    .map(|p| format!("{}: {}", p.name, show_ty(p.ty)))
                    .collect();
                let effect = match builtin.effect() {
                    Effect::Pure => "pure",
                    Effect::Durable => "durable",
                };
                out.push_str(&format!(
                    "| `{}({})` | `{}` | {effect} | {} |\n",
                    builtin.name(),
                    params.join(", "),
                    show_ty(builtin.returns()),
                    builtin.doc()
                ));
            }
            out
        }
        "decision" => record_table(&flow_stdlib::DECISION),
        "error" => record_table(&flow_stdlib::ERROR),
        "error-kinds" => {
            let mut out = String::from("| Kind | Raised when |\n|---|---|\n");
            for (kind, doc) in flow_stdlib::ERROR_KINDS {
                out.push_str(&format!("| `{kind}` | {doc} |\n"));
            }
            out
        }
        "approval-options" => options_table(flow_stdlib::APPROVAL_OPTIONS),
        "input-options" => options_table(flow_stdlib::INPUT_OPTIONS),
        other => panic!("no generator for `{other}`"),
    }
}

/// Replaces every generated section of `text`; returns the new text and the names seen.
fn regenerate(file: &str, text: &str, problems: &mut Vec<String>) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut seen = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(GENERATED_START) {
        let after_marker = &rest[start + GENERATED_START.len()..];
        let Some(close) = after_marker.find("-->") else {
            problems.push(format!("{file}: unclosed `{GENERATED_START}` marker"));
            break;
        };
        let name = after_marker[..close].trim().to_string();
        let body_start = start + GENERATED_START.len() + close + 3;
        let Some(end) = rest[body_start..].find(GENERATED_END) else {
            problems.push(format!(
                "{file}: `{GENERATED_START}{name} -->` has no `{GENERATED_END}`"
            ));
            break;
        };
        if !GENERATED_NAMES.contains(&name.as_str()) {
            problems.push(format!("{file}: unknown generated section `{name}`"));
        }
        out.push_str(&rest[..body_start]);
        if GENERATED_NAMES.contains(&name.as_str()) {
            out.push_str("\n\n");
            out.push_str(&generated(&name));
            out.push('\n');
        } else {
            out.push_str(&rest[body_start..body_start + end]);
        }
        out.push_str(GENERATED_END);
        rest = &rest[body_start + end + GENERATED_END.len()..];
        seen.push(name);
    }
    out.push_str(rest);
    (out, seen)
}

#[test]
fn stdlib_tables_in_the_spec_are_up_to_date() {
    let update = std::env::var_os("UPDATE_SPEC").is_some();
    let mut problems = Vec::new();
    let mut seen_all = Vec::new();
    for (file, text) in spec_files() {
        let (fresh, seen) = regenerate(&file, &text, &mut problems);
        seen_all.extend(seen);
        if fresh != text {
            if update {
                let path = spec_dir().join(file.trim_start_matches("spec/"));
                std::fs::write(&path, &fresh)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            } else {
                problems.push(format!(
                    "{file}: a table generated from the standard library is out of date; \
                     run `UPDATE_SPEC=1 cargo test -p flow-compiler --test spec_examples`"
                ));
            }
        }
    }
    for name in GENERATED_NAMES {
        if !seen_all.iter().any(|s| s == name) {
            problems.push(format!(
                "no spec file has the generated section `{GENERATED_START}{name} -->`"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
