//! `flowc check` throughput on a large generated program.
//!
//! Run with `cargo bench -p flow-compiler --bench check_throughput`. It generates a program
//! of realistic declarations and workflow bodies (records, enums, tools, approvals, loops,
//! matches, string interpolation), checks it several times on one thread, and prints lines
//! per second for the whole pipeline and for each phase. The figure goes in the README.

use flow_compiler::span::FileId;
use flow_compiler::syntax::{lexer, parser};
use std::fmt::Write;
use std::time::{Duration, Instant};

const TARGET_LINES: usize = 200_000;
const RUNS: usize = 5;

fn main() {
    let source = generate(TARGET_LINES);
    let lines = source.lines().count();
    let megabytes = source.len() as f64 / 1_000_000.0;
    println!("generated program: {lines} lines, {megabytes:.1} MB");

    // Sanity: the generated program is valid, so the benchmark measures the happy path.
    let program = flow_compiler::check_text("bench.flow", &source);
    if !program.diagnostics.is_empty() {
        let shown = &program.diagnostics[..program.diagnostics.len().min(3)];
        eprint!(
            "{}",
            flow_compiler::diagnostics::render::human(shown, &program.db, false)
        );
        panic!(
            "the generated program has {} diagnostics",
            program.diagnostics.len()
        );
    }

    let lex = best_of(|| lexer::lex(FileId(0), &source));
    let parse = best_of(|| parser::parse(FileId(0), &source));
    let total = best_of(|| flow_compiler::check_text("bench.flow", &source));

    report("lex", lex, lines, megabytes);
    report(
        "lex + parse (the parser pulls the tokens)",
        parse,
        lines,
        megabytes,
    );
    report(
        "check (lex + parse + resolve + types + safety)",
        total,
        lines,
        megabytes,
    );

    // The brief's own `cargo_release` sketch repeated: approval-heavy code, where the
    // approval analysis, records and interpolation dominate.
    let approvals = generate_cargo_release(APPROVAL_LINES);
    let lines = approvals.lines().count();
    let megabytes = approvals.len() as f64 / 1_000_000.0;
    let program = flow_compiler::check_text("cargo_release.flow", &approvals);
    assert!(
        program.diagnostics.is_empty(),
        "the cargo_release program has {} diagnostics",
        program.diagnostics.len()
    );
    println!("cargo_release sketch repeated: {lines} lines, {megabytes:.1} MB");
    let total = best_of(|| flow_compiler::check_text("cargo_release.flow", &approvals));
    report(
        "check of the approval-heavy program",
        total,
        lines,
        megabytes,
    );
    if let Ok(path) = std::env::var("FLOW_BENCH_WRITE") {
        // For measuring the real binary's peak memory: `/usr/bin/time -v flowc check PATH`.
        std::fs::write(&path, &approvals).expect("write the generated program");
        println!("wrote {path}");
    }
}

/// The size of the approval-heavy program (as measured in issue reports: 108,000 lines).
const APPROVAL_LINES: usize = 108_000;

/// The brief's `cargo_release` workflow, with its types and tools, `n` times over with
/// distinct names, up to `target` lines.
fn generate_cargo_release(target: usize) -> String {
    let mut out = String::with_capacity(target * 46);
    let mut n = 0;
    let mut lines = 0;
    while lines < target {
        let before = out.len();
        let _ = write!(
            out,
            r#"type Shipment{n} = {{ id: String, container: String, value_eur: Int, docs: List<Doc{n}>, note: String? }}
type Doc{n} = {{ name: String, url: String }}
type DocReport{n} = {{ anomalies: List<String>, ok: Bool }}
type Receipt{n} = {{ id: String }}
enum Verdict{n} {{ Released(receipt: String), Held(reason: String) }}

tool check_docs{n}(docs: List<Doc{n}>) -> DocReport{n} via http post "/check"
tool release{n}(container: String) -> Receipt{n} via exec "tools/release.sh" sensitive

workflow cargo_release{n}(s: Shipment{n}) -> Verdict{n} {{
  let report = retry 3 backoff 2s {{ check_docs{n}(s.docs) }}
  audit "docs_checked" {{ shipment: s.id, anomalies: report.anomalies }}
  let d = await approval "release_signoff" {{
    approvers: role("customs"), prompt: "Release ${{s.container}}?", context: report,
    timeout: 48h, escalate: role("ops_manager") after 24h,
  }}
  if !d.approved {{ return Held(d.comment) }}
  let r = release{n}(s.container)
  audit "released" {{ receipt: r.id, by: d.by }}
  Released(r.id)
}}

"#
        );
        lines += out[before..].lines().count();
        n += 1;
    }
    out
}

/// The fastest of several runs. `run` returns its result so that freeing it is not timed:
/// `flowc` exits without freeing its trees.
fn best_of<T>(mut run: impl FnMut() -> T) -> Duration {
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let result = std::hint::black_box(run());
            let elapsed = start.elapsed();
            drop(result);
            elapsed
        })
        .min()
        .unwrap_or_default()
}

fn report(phase: &str, time: Duration, lines: usize, megabytes: f64) {
    let seconds = time.as_secs_f64();
    println!(
        "{phase:<48} {:>8.1} ms  {:>12.0} lines/s  {:>7.1} MB/s",
        seconds * 1000.0,
        lines as f64 / seconds,
        megabytes / seconds
    );
}

/// A program of `target` lines made of repeated, independent modules of declarations.
fn generate(target: usize) -> String {
    let mut out = String::with_capacity(target * 40);
    let mut unit = 0;
    let mut lines = 0;
    while lines < target {
        let before = out.len();
        write_unit(&mut out, unit);
        lines += out[before..].lines().count();
        unit += 1;
    }
    out
}

fn write_unit(out: &mut String, n: usize) {
    let _ = write!(
        out,
        r#"/// A shipment, number {n}.
type Shipment{n} = {{ id: String, container: String, value_eur: Int, docs: List<Doc{n}>, note: String? }}
type Doc{n} = {{ kind: String, url: String, pages: Int }}
type Report{n} = {{ anomalies: List<String>, score: Float }}
type Receipt{n} = {{ id: String }}
enum Verdict{n} {{ Released{n}(receipt: String), Held{n}(reason: String), Pending{n} }}

tool check_docs_{n}(docs: List<Doc{n}>) -> Report{n} via http post "/check"
tool release_{n}(container: String) -> Receipt{n} via exec "tools/release.sh" sensitive

workflow release_{n}_flow(s: Shipment{n}) -> Verdict{n} {{
  let report = retry 3 backoff 2s {{ check_docs_{n}(s.docs) }}
  audit "docs_checked" {{ shipment: s.id, anomalies: report.anomalies }}
  var pages = 0
  for doc in s.docs {{
    if doc.pages > 100 {{
      continue
    }}
    pages = pages + doc.pages
  }}
  let note = s.note ?? "none"
  let label = "Release ${{s.container}} (${{pages}} pages, ${{note}})?"
  let d = await approval "release_signoff" {{
    approvers: role("customs"), prompt: label, context: report,
    timeout: 48h, escalate: role("ops_manager") after 24h,
  }}
  if !d.approved {{
    return Held{n}(d.comment)
  }}
  let r = release_{n}(s.container)
  audit "released" {{ receipt: r.id, by: d.by }}
  let verdict = Released{n}(r.id)
  match verdict {{
    Released{n}(receipt) => Released{n}(receipt),
    Held{n}(reason) => Held{n}(reason),
    Pending{n} => Pending{n},
  }}
}}

"#
    );
}

// The same allocator as the `flowc` binary, so the figure is what users get.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
