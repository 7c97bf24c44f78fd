//! The editor analysis API ([`flow_compiler::analysis`]): hover, definition, references,
//! rename, completion, symbols, diagnostics and the approval-gate fix, on small programs.
//!
//! Positions are found by substring: `cursor(text, "s.con|tainer")` is the offset of the `|`
//! inside the first occurrence of `s.container`. Each snapshot shows the cursor's line with
//! the cursor marked (`‸`) and what the API answered.

use flow_compiler::analysis::{Analysis, Completion, CompletionKind, analyze};
use flow_compiler::sources::MemoryLoader;
use flow_compiler::span::Span;
use std::fmt::Write as _;

const TYPES: &str = r#"/// A document attached to a shipment.
type Doc = {
  /// The document's id in the store.
  id: String,
  kind: String,
}

/// A container waiting at the terminal.
type Shipment = {
  id: String,
  /// The container's number, e.g. `MSCU1234567`.
  container: String,
  docs: List<Doc>,
  note: String?,
}

/// How a release ends.
enum Verdict {
  /// The container left the terminal.
  Released(receipt: String),
  /// The container stays.
  Held(reason: String),
}
"#;

const MAIN: &str = r#"import "types.flow"

type Receipt = { id: String, gate: String }

/// Tells the terminal to let the container out.
tool release(container: String) -> Receipt via exec "tools/release.sh" sensitive

/// Checks every document.
tool check_docs(docs: List<Doc>) -> Bool via http post "/check"

/// Releases a container after a customs sign-off.
workflow cargo_release(s: Shipment) -> Verdict {
  if len(s.docs) == 0 {
    return Held("no documents for ${s.id}")
  }
  let ok = retry 3 backoff 2s on ToolError { check_docs(s.docs) }
  if !ok { return Held("documents rejected") }
  let d = await approval "release_signoff" {
    approvers: role("customs"),
    prompt: "Release ${s.container}?",
    timeout: 48h,
  }
  if !d.approved { return Held(d.comment) }
  let r = release(s.container)
  match Verdict.Released(r.id) {
    Released(receipt) => Released(receipt),
    Held(reason) => Held(reason),
  }
}
"#;

fn loader(main: &str) -> MemoryLoader {
    MemoryLoader::default()
        .with("app/main.flow", main)
        .with("app/types.flow", TYPES)
}

fn analysis(main: &str) -> Analysis {
    analyze(&["app/main.flow".to_string()], &loader(main))
}

/// The offset of `|` in `needle`, located at the first occurrence of `needle` (without the
/// `|`) in `text`.
fn cursor(text: &str, needle: &str) -> usize {
    let bar = needle
        .find('|')
        .expect("the needle marks the cursor with |");
    let plain = needle.replace('|', "");
    let at = text
        .find(&plain)
        .unwrap_or_else(|| panic!("`{plain}` is not in the text"));
    at + bar
}

/// The line holding `offset`, with `‸` at the offset.
fn marked_line(text: &str, offset: usize) -> String {
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    format!(
        "{}‸{}",
        text[start..offset].trim_start(),
        text[offset..end].trim_end()
    )
}

fn slice(text: &str, span: Span) -> &str {
    &text[span.range()]
}

fn hovers(analysis: &Analysis, text: &str, needles: &[&str]) -> String {
    let mut out = String::new();
    for needle in needles {
        let offset = cursor(text, needle);
        let _ = writeln!(out, "── {}", marked_line(text, offset));
        match analysis.hover_at("app/main.flow", offset) {
            Some(hover) => {
                let _ = writeln!(out, "[{}]\n{}\n", slice(text, hover.range), hover.markdown);
            }
            None => out.push_str("(nothing)\n\n"),
        }
    }
    out
}

#[test]
fn hover_shows_types_signatures_and_docs() {
    let analysis = analysis(MAIN);
    assert!(
        analysis.program().diagnostics.is_empty(),
        "{:?}",
        analysis.program().diagnostics
    );
    insta::assert_snapshot!(hovers(
        &analysis,
        MAIN,
        &[
            "workflow cargo_release(|s: Shipment)",
            "s: Ship|ment",
            "s.con|tainer",
            "let r = rel|ease",
            "check_d|ocs(s.docs)",
            "len|(s.docs)",
            "let |d = await",
            "!d.appr|oved",
            "app|rovers: role",
            "tim|eout: 48h",
            "on Tool|Error",
            "return He|ld(\"no",
            "Released(rece|ipt) =>",
            "import \"ty|pes.flow\"",
            "await appr|oval",
            "workflow cargo_re|lease",
        ],
    ));
}

#[test]
fn hover_works_on_non_ascii_names() {
    let text = "workflow größe(zähler: Int) -> Int {\n  let ünïcode = zähler + 1\n  ünïcode\n}\n";
    let analysis = analyze(
        &["app/main.flow".to_string()],
        &MemoryLoader::default().with("app/main.flow", text),
    );
    let offset = cursor(text, "  ünï|code\n}");
    let hover = analysis.hover_at("app/main.flow", offset).expect("a hover");
    assert_eq!(slice(text, hover.range), "ünïcode");
    assert_eq!(hover.markdown, "```flow\nlet ünïcode: Int\n```");
    // An offset inside a multi-byte character snaps back to its start.
    let inside = cursor(text, "zäh|ler + 1") - 2;
    assert!(analysis.hover_at("app/main.flow", inside).is_some());
}

fn locate(analysis: &Analysis, text: &str, needles: &[&str]) -> String {
    let mut out = String::new();
    for needle in needles {
        let offset = cursor(text, needle);
        let _ = write!(out, "{}  →  ", marked_line(text, offset));
        match analysis.definition_at("app/main.flow", offset) {
            Some(location) => {
                let target = analysis.text(&location.path).expect("a loaded file");
                let _ = writeln!(
                    out,
                    "{} `{}` ({})",
                    location.path,
                    marked_line(target, location.span.start as usize),
                    slice(target, location.span)
                );
            }
            None => out.push_str("(nothing)\n"),
        }
    }
    out
}

#[test]
fn definition_finds_types_fields_variants_tools_locals_and_imports() {
    let analysis = analysis(MAIN);
    insta::assert_snapshot!(locate(
        &analysis,
        MAIN,
        &[
            "s: Ship|ment",
            "List<D|oc>",
            "s.con|tainer",
            "s.do|cs)",
            "return He|ld(\"no",
            "Verdict.Rel|eased(r.id)",
            "Verd|ict.Released(r.id)",
            "Held(rea|son) => Held",
            "Held(reason) => Held(rea|son)",
            "let r = rel|ease",
            "release(s|.container)",
            "d.appr|oved",
            "r.i|d)",
            "import \"ty|pes.flow\"",
            "le|n(s.docs)",
        ],
    ));
}

#[test]
fn references_and_rename_cover_every_file() {
    let analysis = analysis(MAIN);
    let show = |needle: &str, include: bool| {
        let offset = cursor(MAIN, needle);
        let mut out = format!(
            "{} (declaration included: {include})\n",
            marked_line(MAIN, offset)
        );
        for location in analysis.references("app/main.flow", offset, include) {
            let text = analysis.text(&location.path).expect("loaded");
            let _ = writeln!(
                out,
                "  {}: {}",
                location.path,
                marked_line(text, location.span.start as usize)
            );
        }
        out
    };
    let mut out = String::new();
    out.push_str(&show("(|s: Shipment) -> Verdict", true));
    out.push_str(&show("s: Ship|ment", true));
    out.push_str(&show("s.con|tainer", false));
    out.push_str(&show("return He|ld(\"no", true));
    insta::assert_snapshot!(out);

    let edits = analysis
        .rename("app/main.flow", cursor(MAIN, "let |d = await"), "decision")
        .expect("a local can be renamed");
    let mut renamed = MAIN.to_string();
    let mut spans: Vec<Span> = edits.iter().map(|e| e.span).collect();
    spans.sort();
    for span in spans.iter().rev() {
        renamed.replace_range(span.range(), "decision");
    }
    assert_eq!(edits.len(), 3);
    assert!(renamed.contains("let decision = await"));
    assert!(renamed.contains("if !decision.approved { return Held(decision.comment) }"));
    let again = analyze(&["app/main.flow".to_string()], &loader(&renamed));
    assert!(again.program().diagnostics.is_empty());

    assert!(
        analysis
            .rename("app/main.flow", cursor(MAIN, "le|n(s.docs)"), "size")
            .is_err(),
        "builtins cannot be renamed"
    );
    assert!(
        analysis
            .rename("app/main.flow", cursor(MAIN, "let |d = await"), "match")
            .is_err(),
        "keywords are not names"
    );
}

fn labels(completions: &[Completion], kind: Option<CompletionKind>) -> Vec<String> {
    completions
        .iter()
        .filter(|c| kind.is_none_or(|k| c.kind == k))
        .map(|c| match &c.detail {
            Some(detail) => format!("{} — {detail}", c.label),
            None => c.label.clone(),
        })
        .collect()
}

/// `main` with `at` replaced by `with` (the text being typed), and the cursor at `|`.
fn typing(at: &str, with: &str) -> (String, usize) {
    let text = MAIN.replacen(at, &with.replace('|', ""), 1);
    let start = MAIN.find(at).expect("the place is in MAIN");
    (text, start + with.find('|').expect("a cursor"))
}

#[test]
fn completion_after_a_dot_lists_fields_even_while_the_line_is_incomplete() {
    let (text, offset) = typing("let r = release(s.container)", "let r = s.|");
    let analysis = analysis(&text);
    let completions = analysis.completions_at("app/main.flow", offset);
    insta::assert_snapshot!(labels(&completions, None).join("\n"), @r"
    id — String
    container — String
    docs — List<Doc>
    note — String?
    ");
    // A partly typed field name, and a decision's fields.
    let (text, offset) = typing("if !d.approved", "if !d.ap|");
    let analysis = self::analysis(&text);
    let completions = analysis.completions_at("app/main.flow", offset);
    assert_eq!(
        labels(&completions, None),
        [
            "approved — Bool",
            "by — String",
            "at — Time",
            "comment — String"
        ]
    );
    // `Verdict.` lists the variants.
    let (text, offset) = typing("match Verdict.Released(r.id)", "match Verdict.|");
    let analysis = self::analysis(&text);
    let completions = analysis.completions_at("app/main.flow", offset);
    assert_eq!(
        labels(&completions, None),
        [
            "Released — Verdict.Released(receipt: String)",
            "Held — Verdict.Held(reason: String)"
        ]
    );
}

#[test]
fn completion_in_a_match_offers_the_variants() {
    let (text, offset) = typing("    Held(reason) => Held(reason),\n", "    |\n");
    let analysis = analysis(&text);
    let completions = analysis.completions_at("app/main.flow", offset);
    assert_eq!(
        labels(&completions, None),
        [
            "Released — Verdict.Released(receipt: String)",
            "Held — Verdict.Held(reason: String)",
            "_ — matches anything"
        ]
    );
    // While typing the pattern's name too.
    let (text, offset) = typing("    Held(reason) => Held(reason),\n", "    He|\n");
    let analysis = self::analysis(&text);
    let completions = analysis.completions_at("app/main.flow", offset);
    assert!(labels(&completions, Some(CompletionKind::Variant)).len() == 2);
}

#[test]
fn completion_in_an_approval_block_offers_the_options_not_yet_given() {
    let (text, offset) = typing("    timeout: 48h,\n", "    |\n");
    let analysis = analysis(&text);
    let completions = analysis.completions_at("app/main.flow", offset);
    insta::assert_snapshot!(labels(&completions, None).join("\n"), @r"
    context — Any
    timeout — Duration
    escalate — Approvers after Duration
    quorum — Int
    allow_self — Bool
    remind — Duration [after Duration]
    ");
    let doc = completions
        .iter()
        .find(|c| c.label == "quorum")
        .and_then(|c| c.documentation.clone())
        .expect("documented");
    assert!(doc.contains("distinct approvers"), "{doc}");
    // After a comma on the same line, while typing a name.
    let (text, offset) = typing("    timeout: 48h,\n", "    timeout: 48h, esc|\n");
    let analysis = self::analysis(&text);
    let completions = analysis.completions_at("app/main.flow", offset);
    assert!(
        labels(&completions, None)
            .iter()
            .any(|l| l.starts_with("escalate"))
    );
    // Inside an option's value: ordinary names, not option keys.
    let offset = cursor(MAIN, "role(\"customs\")|,");
    let analysis = self::analysis(MAIN);
    let completions = analysis.completions_at("app/main.flow", offset);
    assert!(!completions.iter().any(|c| c.kind == CompletionKind::Option));
}

#[test]
fn completion_lists_names_in_scope_keywords_and_builtins() {
    let (text, offset) = typing("  let r = release(s.container)", "  let r = release(|)");
    let analysis = analysis(&text);
    let completions = analysis.completions_at("app/main.flow", offset);
    let variables = labels(&completions, Some(CompletionKind::Variable));
    assert_eq!(variables, ["d — Decision", "ok — Bool", "s — Shipment"]);
    let tools = labels(&completions, Some(CompletionKind::Tool));
    assert_eq!(
        tools,
        [
            "check_docs — tool check_docs(docs: List<Doc>) -> Bool via http post \"/check\"",
            "release — tool release(container: String) -> Receipt via exec \"tools/release.sh\" sensitive",
        ]
    );
    let functions = labels(&completions, Some(CompletionKind::Function));
    assert!(
        functions
            .iter()
            .any(|f| f == "len — len(list: List<T>) -> Int")
    );
    assert!(functions.iter().any(|f| f == "now — now() -> Time"));
    let keywords = labels(&completions, Some(CompletionKind::Keyword));
    assert!(keywords.iter().any(|k| k.starts_with("await")));
    let variants = labels(&completions, Some(CompletionKind::Variant));
    assert!(variants.iter().any(|v| v.starts_with("Held")));
    // `r` is declared by the statement being written: not visible yet.
    assert!(!variables.iter().any(|v| v.starts_with("r ")));

    // Before `d` is declared, it is not offered.
    let offset = cursor(MAIN, "let ok = |retry");
    let early = self::analysis(MAIN).completions_at("app/main.flow", offset);
    assert_eq!(
        labels(&early, Some(CompletionKind::Variable)),
        ["s — Shipment"]
    );
}

#[test]
fn completion_of_types_and_declarations() {
    let (text, offset) = typing(
        "type Receipt = { id: String, gate: String }",
        "type Receipt = { id: |, gate: String }",
    );
    let analysis = analysis(&text);
    let types = labels(&analysis.completions_at("app/main.flow", offset), None);
    assert!(types.iter().any(|t| t == "Shipment — record"), "{types:?}");
    assert!(types.iter().any(|t| t == "Verdict — enum"));
    assert!(types.iter().any(|t| t == "Int — builtin type"));
    assert!(types.iter().any(|t| t == "Decision — record"));
    // At the top level: declaration keywords.
    let (text, offset) = typing(
        "/// Checks every document.",
        "|\n/// Checks every document.",
    );
    let analysis = self::analysis(&text);
    let keywords = labels(&analysis.completions_at("app/main.flow", offset), None);
    assert!(keywords.iter().any(|k| k == "workflow — declaration"));
    // In a comment or a string: nothing.
    let analysis = self::analysis(MAIN);
    let offset = cursor(MAIN, "/// Checks ev|ery");
    assert!(analysis.completions_at("app/main.flow", offset).is_empty());
    let offset = cursor(MAIN, "\"no docu|ments");
    assert!(analysis.completions_at("app/main.flow", offset).is_empty());
    // Inside an interpolation: names again.
    let offset = cursor(MAIN, "${s|.id}");
    assert!(!analysis.completions_at("app/main.flow", offset).is_empty());
}

#[test]
fn symbols_outline_the_file() {
    let analysis = analysis(MAIN);
    let mut out = String::new();
    for symbol in analysis.symbols("app/main.flow") {
        let _ = writeln!(
            out,
            "{:?} {} — {}",
            symbol.kind,
            symbol.name,
            symbol.detail.unwrap_or_default()
        );
        for child in symbol.children {
            let _ = writeln!(
                out,
                "  {:?} {} — {}",
                child.kind,
                child.name,
                child.detail.unwrap_or_default()
            );
        }
    }
    for symbol in analysis.symbols("app/types.flow") {
        let _ = writeln!(
            out,
            "{:?} {} ({} children)",
            symbol.kind,
            symbol.name,
            symbol.children.len()
        );
    }
    insta::assert_snapshot!(out);
    let found: Vec<String> = analysis
        .workspace_symbols("rel")
        .into_iter()
        .map(|(path, s)| format!("{path}: {}", s.name))
        .collect();
    assert_eq!(
        found,
        [
            "app/main.flow: release",
            "app/main.flow: cargo_release",
            "app/types.flow: Released"
        ]
    );
}

#[test]
fn diagnostics_are_those_of_flowc_check() {
    let broken = MAIN.replace("release(s.container)", "release(s.contaner)");
    let analysis = analysis(&broken);
    let checked = flow_compiler::check_paths(&["app/main.flow".to_string()], &loader(&broken))
        .expect("loads");
    let ours: Vec<_> = analysis
        .diagnostics_for("app/main.flow")
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(ours, checked.diagnostics);
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].code.id, "E0203");
    assert!(analysis.diagnostics_for("app/types.flow").is_empty());
    assert!(analysis.diagnostics_for("nowhere.flow").is_empty());
}

#[test]
fn an_import_that_brings_errors_is_reported_with_them() {
    // main → middle → types, the errors two imports away; warnings do not count.
    let types = "type Doc = { id: Strng }\ntype Other = { kind: Knd }\n";
    let middle = "import \"types.flow\"\n\ntype Box = { doc: Doc }\n";
    let main = "import \"middle.flow\"\n\nworkflow w(b: Box) -> String {\n  b.doc.id\n}\n";
    let loader = MemoryLoader::default()
        .with("app/main.flow", main)
        .with("app/middle.flow", middle)
        .with("app/types.flow", types);
    let analysis = analyze(&["app/main.flow".to_string()], &loader);
    let errors: Vec<_> = analysis.diagnostics_for("app/types.flow");
    assert_eq!(errors.len(), 2, "{errors:?}");
    let problems = analysis.import_problems("app/main.flow");
    assert_eq!(problems.len(), 1);
    assert_eq!(slice(main, problems[0].span), "\"middle.flow\"");
    assert_eq!(problems[0].target, "app/middle.flow");
    assert_eq!(problems[0].errors, errors);
    let problems = analysis.import_problems("app/middle.flow");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].target, "app/types.flow");
    assert_eq!(problems[0].errors, errors);
    // The broken file itself imports nothing; fixed, nothing is reported anywhere.
    assert!(analysis.import_problems("app/types.flow").is_empty());
    let fixed = loader.with("app/types.flow", "type Doc = { id: String }\n");
    let analysis = analyze(&["app/main.flow".to_string()], &fixed);
    assert!(analysis.program().diagnostics.is_empty());
    assert!(analysis.import_problems("app/main.flow").is_empty());
    assert!(analysis.import_problems("nowhere.flow").is_empty());
}

#[test]
fn in_an_import_cycle_the_importers_own_errors_are_not_counted_at_its_import() {
    let a = "import \"b.flow\"\ntype A = { b: B, bad: Nope }\n";
    let b = "import \"a.flow\"\ntype B = { a: A? }\n";
    let loader = MemoryLoader::default()
        .with("app/a.flow", a)
        .with("app/b.flow", b);
    let analysis = analyze(&["app/a.flow".to_string()], &loader);
    // a's own error is not counted at a's import of b (b brings no error of its own).
    for problem in analysis.import_problems("app/a.flow") {
        assert!(
            problem
                .errors
                .iter()
                .all(|d| analysis.path(d.file()) != "app/a.flow"),
            "{problem:?}"
        );
    }
    // b imports a, which has the unknown type.
    let from_b = analysis.import_problems("app/b.flow");
    assert_eq!(from_b.len(), 1);
    assert!(from_b[0].errors.iter().any(|d| d.code.id == "E0201"));
}

#[test]
fn hover_on_an_unknown_name_shows_nothing() {
    let text = "workflow w(n: Int) -> Int {\n  missing + n\n}\n";
    let analysis = analyze(
        &["w.flow".to_string()],
        &MemoryLoader::default().with("w.flow", text),
    );
    assert_eq!(analysis.diagnostics_for("w.flow")[0].code.id, "E0200");
    assert_eq!(analysis.hover_at("w.flow", cursor(text, "miss|ing")), None);
    let known = analysis
        .hover_at("w.flow", cursor(text, "+ |n"))
        .expect("a hover");
    assert_eq!(known.markdown, "```flow\nn: Int\n```\n\n*parameter*");
}

#[test]
fn the_approval_fix_gates_an_unapproved_sensitive_call() {
    let source = "type Receipt = { id: String }\ntool release(c: String) -> Receipt via exec \"r.sh\" sensitive\n\nworkflow w(c: String) -> String {\n  let decision = 1\n  if decision > 0 {\n    let r = release(c)\n    return r.id\n  }\n  \"none\"\n}\n";
    let load = |text: &str| {
        analyze(
            &["w.flow".to_string()],
            &MemoryLoader::default().with("w.flow", text),
        )
    };
    let analysis = load(source);
    let diagnostic = analysis.diagnostics_for("w.flow")[0].clone();
    assert_eq!(diagnostic.code.id, "E0400");
    let edit = analysis
        .approval_gate_fix("w.flow", diagnostic.primary.span)
        .expect("a fix");
    let mut fixed = source.to_string();
    fixed.replace_range(edit.span.range(), &edit.text);
    insta::assert_snapshot!(fixed, @r#"
    type Receipt = { id: String }
    tool release(c: String) -> Receipt via exec "r.sh" sensitive

    workflow w(c: String) -> String {
      let decision = 1
      if decision > 0 {
        let signoff = await approval "release_approval" { approvers: role("…") }
        if !signoff.approved { fail "`release` was not approved" }
        let r = release(c)
        return r.id
      }
      "none"
    }
    "#);
    assert!(
        load(&fixed).program().diagnostics.is_empty(),
        "{:?}",
        load(&fixed).program().diagnostics
    );
}

#[test]
fn nothing_panics_on_odd_offsets_and_broken_sources() {
    let sources = [
        MAIN.to_string(),
        MAIN[..MAIN.len() / 2].to_string(),
        "workflow w( {{{ ".to_string(),
        "\u{feff}é\n\t\"${".to_string(),
        String::new(),
    ];
    for source in &sources {
        let analysis = analysis(source);
        for offset in (0..source.len() + 3).chain([usize::MAX]) {
            let _ = analysis.hover_at("app/main.flow", offset);
            let _ = analysis.definition_at("app/main.flow", offset);
            let _ = analysis.references("app/main.flow", offset, true);
            let _ = analysis.completions_at("app/main.flow", offset);
            let _ = analysis.rename("app/main.flow", offset, "x");
        }
        let _ = analysis.symbols("app/main.flow");
        assert!(analysis.hover_at("missing.flow", 0).is_none());
    }
    // A root that cannot be read: an empty analysis, not a panic.
    let empty = analyze(&["none.flow".to_string()], &MemoryLoader::default());
    assert!(empty.root_error().is_some());
    assert!(empty.completions_at("none.flow", 0).is_empty());
}

const WITH_TESTS: &str = r#"test "released after sign-off" {
  mock check_docs returns true
  mock release(container) returns { id: "R-${container}", gate: "north" }
  start cargo_release({ id: "S-1", container: "MSCU1", docs: [{ id: "d", kind: "bill" }], note: none })
  approve as "ana"
  expect result Released("R-MSCU1")
  expect called release with ("MSCU1")
}
"#;

#[test]
fn test_blocks_get_hover_definition_diagnostics_and_an_outline() {
    let text = format!("{MAIN}\n{WITH_TESTS}");
    let analysis = analysis(&text);
    assert!(
        analysis.diagnostics_for("app/main.flow").is_empty(),
        "{:?}",
        analysis.diagnostics_for("app/main.flow")
    );
    insta::assert_snapshot!(hovers(
        &analysis,
        &text,
        &[
            "mock rel|ease(container)",
            "returns { id: \"R-${conta|iner}\"",
            "start cargo_rel|ease(",
            "expect result Relea|sed(\"R-MSCU1\")",
            "{ id: \"S-1\", cont|ainer: \"MSCU1\"",
        ]
    ));
    for (needle, target) in [
        ("mock rel|ease(container)", "release(container: String)"),
        ("start cargo_rel|ease(", "cargo_release(s: Shipment)"),
        ("returns { id: \"R-${conta|iner}\"", "container) returns"),
    ] {
        let offset = cursor(&text, needle);
        let location = analysis
            .definition_at("app/main.flow", offset)
            .unwrap_or_else(|| panic!("a definition for {needle}"));
        let found = &text[location.span.range()];
        assert!(target.starts_with(found), "{needle}: went to `{found}`");
    }
    let outline = analysis.symbols("app/main.flow");
    let test = outline.last().expect("the test is in the outline");
    assert_eq!(test.name, "released after sign-off");
    // A mistake in a test is reported like any other.
    let broken = text.replace(
        "expect result Released(\"R-MSCU1\")",
        "expect result Released(3)",
    );
    let broken = self::analysis(&broken);
    let diagnostics = broken.diagnostics_for("app/main.flow");
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].code.id, "E0300");
}

#[test]
fn completion_in_test_blocks_offers_steps_tools_workflows_and_expectations() {
    let text = format!("{MAIN}\n{WITH_TESTS}");
    let complete = |at: &str, with: &str| {
        let start = text.find(at).expect("the place is in the text");
        let edited = text.replacen(at, &with.replace('|', ""), 1);
        let offset = start + with.find('|').expect("a cursor");
        let analysis = analysis(&edited);
        labels(&analysis.completions_at("app/main.flow", offset), None)
    };
    let steps = complete("  approve as \"ana\"\n", "  |\n");
    assert_eq!(
        steps,
        [
            "mock", "start", "expect", "approve", "reject", "provide", "signal", "advance"
        ]
        .map(|s| format!("{s} — test step"))
    );
    let tools = complete("mock check_docs returns true", "mock |");
    let names = |labels: Vec<String>| -> Vec<String> {
        labels
            .iter()
            .map(|l| l.split(" — ").next().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(names(tools), ["check_docs", "release"]);
    let workflows = complete("start cargo_release(", "start |(");
    assert_eq!(names(workflows), ["cargo_release"]);
    let expectations = complete("expect called release", "expect |");
    assert!(
        expectations.contains(&"escalated — expectation".to_string()),
        "{expectations:?}"
    );
    let kinds = complete("expect called release", "expect error |");
    assert!(
        kinds.contains(&"ApprovalTimeout — error kind".to_string()),
        "{kinds:?}"
    );
}

const SIGNALS: &str = r#"workflow subscription(id: String) -> String
  accepts cancel: String from role("support") or system("billing"),
    renewed: Int from system("billing")
{
  query started -> String { id }
  let months = await signal renewed
  let why = await signal cancel
  "${id}: ${months}, ${why}"
}
"#;

#[test]
fn signals_have_hover_definition_references_completion_and_an_outline() {
    let analysis = analysis(SIGNALS);
    let text = SIGNALS;
    // Hover on a use and on the declaration: the signal's type and senders.
    let hover = analysis
        .hover_at("app/main.flow", cursor(text, "signal can|cel"))
        .expect("a hover");
    assert_eq!(slice(text, hover.range), "cancel");
    assert!(
        hover
            .markdown
            .contains("signal cancel: String from role(\"support\") or system(\"billing\")"),
        "{}",
        hover.markdown
    );
    let hover = analysis
        .hover_at("app/main.flow", cursor(text, "ren|ewed: Int"))
        .expect("a hover on the declaration");
    assert!(
        hover.markdown.contains("signal renewed: Int"),
        "{}",
        hover.markdown
    );
    // Definition: from the `await` to the `accepts` clause.
    let at = analysis
        .definition_at("app/main.flow", cursor(text, "signal rene|wed"))
        .expect("a definition");
    assert_eq!(at.span.start as usize, cursor(text, "|renewed: Int"));
    // References: the declaration and the use.
    let found = analysis.references("app/main.flow", cursor(text, "signal can|cel"), true);
    assert_eq!(found.len(), 2, "{found:?}");
    // Renaming is refused with a reason: senders and runs use the name.
    let refused = analysis
        .rename("app/main.flow", cursor(text, "signal can|cel"), "stop")
        .expect_err("refused");
    assert!(refused.contains("interface"), "{refused}");
    // Completion after `await signal`: the workflow's signals, with their signatures.
    let typed = text.replace("await signal cancel", "await signal ");
    let offset = cursor(&typed, "await signal |\n");
    let analysis = analyze(&["app/main.flow".to_string()], &loader(&typed));
    let completions = analysis.completions_at("app/main.flow", offset);
    let names: Vec<&str> = completions.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(names, ["cancel", "renewed"]);
    assert_eq!(
        completions[1].detail.as_deref(),
        Some("signal renewed: Int from system(\"billing\")")
    );
    // The outline: the signals under their workflow.
    let analysis = self::analysis(SIGNALS);
    let symbols = analysis.symbols("app/main.flow");
    let children: Vec<&str> = symbols[0]
        .children
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(children, ["cancel", "renewed", "started"]);
    assert_eq!(
        symbols[0].children[2].detail.as_deref(),
        Some("query started -> String")
    );
}

#[test]
fn hover_and_definition_work_inside_parallel_branches() {
    let text = "tool size(d: String) -> Int via exec \"size\"\n\
workflow w(docs: List<String>) -> Int {\n  let bonus = 2\n  let sizes = parallel for doc in docs max 2 { size(doc) + bonus }\n  let r = parallel {\n    first: len(sizes),\n    second: { let n = bonus\n n },\n  }\n  r.first + r.second\n}\n";
    let analysis = analyze(
        &["app/main.flow".to_string()],
        &MemoryLoader::default().with("app/main.flow", text),
    );
    assert!(
        analysis.program().diagnostics.is_empty(),
        "{:?}",
        analysis.program().diagnostics
    );
    let hover = |needle: &str| {
        let hover = analysis
            .hover_at("app/main.flow", cursor(text, needle))
            .expect("a hover");
        hover.markdown
    };
    assert_eq!(
        hover("size(do|c)"),
        "```flow\nfor doc: String\n```\n\n*the item of this branch of a `parallel for`*"
    );
    assert_eq!(hover("let siz|es"), "```flow\nlet sizes: List<Int>\n```");
    assert_eq!(
        hover("let |r = parallel"),
        "```flow\nlet r: { first: Int, second: Int }\n```"
    );
    // A variable read from outside the branch is the one declared outside.
    let definition = analysis
        .definition_at("app/main.flow", cursor(text, "+ bon|us }"))
        .expect("a definition");
    assert_eq!(slice(text, definition.span), "bonus");
    assert_eq!(
        definition.span.start as usize,
        cursor(text, "let |bonus = 2")
    );
}

/// Functions (`fn`): hover shows the signature and doc, go-to-definition finds the
/// declaration (also from a recursive call inside it), completion inside a function's body
/// offers functions and the parameters, and the outline lists them.
#[test]
fn functions_have_hover_definition_completion_and_an_outline_entry() {
    let main = "/// Two to the power of `n`.\n\
                fn pow2(n: Int) -> Int {\n  if n <= 0 { return 1 }\n  2 * pow2(n - 1)\n}\n\n\
                workflow w(k: Int) -> Int {\n  pow2(k) + 1\n}\n";
    let analysis = analyze(
        &["app/main.flow".to_string()],
        &MemoryLoader::default().with("app/main.flow", main),
    );
    assert!(
        analysis.program().diagnostics.is_empty(),
        "{:?}",
        analysis.program().diagnostics
    );
    let hover = analysis
        .hover_at("app/main.flow", cursor(main, "po|w2(k)"))
        .expect("a hover on the call");
    assert!(
        hover.markdown.contains("fn pow2(n: Int) -> Int")
            && hover.markdown.contains("Two to the power"),
        "{}",
        hover.markdown
    );
    let declared = cursor(main, "fn |pow2");
    for needle in ["po|w2(k)", "2 * po|w2(n - 1)"] {
        let location = analysis
            .definition_at("app/main.flow", cursor(main, needle))
            .unwrap_or_else(|| panic!("a definition for {needle}"));
        assert_eq!(location.span.start as usize, declared, "{needle}");
    }
    let inside = cursor(main, "2 * |pow2");
    let offered = labels(&analysis.completions_at("app/main.flow", inside), None);
    assert!(
        offered.iter().any(|l| l == "pow2 — fn pow2(n: Int) -> Int"),
        "{offered:?}"
    );
    assert!(offered.iter().any(|l| l.starts_with("n ")), "{offered:?}");
    let symbols = analysis.symbols("app/main.flow");
    let names: Vec<(&str, Option<&str>)> = symbols
        .iter()
        .map(|s| (s.name.as_str(), s.detail.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            ("pow2", Some("fn pow2(n: Int) -> Int")),
            ("w", Some("workflow w(k: Int) -> Int"))
        ]
    );
}

#[test]
fn hover_shows_refined_types_as_declared() {
    let text = r#"/// How sure the model is.
type Score = Float in 0.0..1.0
type Order = { sku: String matching "^[A-Z]+$", qty: Int in 1..1000, notes: List<String> nonempty }

tool rate(order: Order) -> Score via http post "/rate"

workflow review(order: Order, limit: Int? in 1..5) -> Score {
  let s = rate(order)
  let q: Int in 0.. = order.qty + (limit ?? 1)
  if q > 10 { s } else { 0.5 }
}
"#;
    let analysis = analyze(
        &["app/main.flow".to_string()],
        &MemoryLoader::default().with("app/main.flow", text),
    );
    assert!(
        analysis.program().diagnostics.is_empty(),
        "{:?}",
        analysis.program().diagnostics
    );
    let hover = |needle: &str| {
        analysis
            .hover_at("app/main.flow", cursor(text, needle))
            .map(|h| h.markdown)
            .unwrap_or_default()
    };
    let score = hover("-> Sc|ore via");
    assert!(score.contains("type Score = Float in 0.0..1.0"), "{score}");
    assert!(score.contains("How sure the model is."), "{score}");
    let order = hover("rate(order: Ord|er)");
    assert!(
        order.contains("sku: String matching \"^[A-Z]+$\","),
        "{order}"
    );
    assert!(order.contains("qty: Int in 1..1000,"), "{order}");
    assert!(order.contains("notes: List<String> nonempty,"), "{order}");
    assert_eq!(hover("let |s = rate"), "```flow\nlet s: Score\n```");
    assert_eq!(hover("let |q: Int"), "```flow\nlet q: Int in 0..\n```");
    let limit = hover("li|mit: Int?");
    assert!(limit.contains("limit: Int? in 1..5"), "{limit}");
    let field = hover("order.q|ty +");
    assert!(field.contains("qty: Int in 1..1000"), "{field}");
}
