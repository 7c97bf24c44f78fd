//! Language server latency and memory, measured on the real binary over stdio.
//!
//! Run with `cargo bench -p flow-lsp --bench did_change`. It opens a generated file of about
//! 5,000 lines, times `documentSymbol` on it (the outline of every declaration), then times
//! `didChange` → `publishDiagnostics`: each edit alternately breaks and repairs one field
//! access, so every edit changes the diagnostics; after each edit, one `documentSymbol` on
//! the new version (the first request of a version builds its outline). Then it opens 49 more such files and
//! reports the server's resident memory (Linux: `VmRSS`). The figures go in the README.

use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LINES: usize = 5_000;
const EDITS: usize = 40;
const FILES: usize = 50;
const SYMBOL_REQUESTS: usize = 50;

fn main() {
    let source = generate(LINES);
    let lines = source.lines().count();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flow-lsp"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("flow-lsp starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    // Each message with the moment its last byte arrived: the latencies are the server's
    // (reading a message off the pipe), not this client's JSON parser's.
    let (sender, arrivals) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some(n) = line.strip_prefix("Content-Length: ") {
                    length = n.parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            if sender.send((Instant::now(), body)).is_err() {
                return;
            }
        }
    });
    let next = || {
        let (at, body) = arrivals
            .recv_timeout(Duration::from_secs(120))
            .expect("the server answers");
        let message: Value = serde_json::from_slice(&body).expect("the server sends JSON");
        (at, message)
    };
    let mut send = |message: Value| {
        let body = message.to_string();
        write!(stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("write");
        stdin.flush().expect("flush");
    };
    // Waits for diagnostics of `uri` whose count is `wanted`; returns when they arrived.
    let wait = |uri: &str, wanted: &dyn Fn(usize) -> bool| loop {
        let (at, message) = next();
        if message["method"] == "textDocument/publishDiagnostics"
            && message["params"]["uri"] == uri
            && wanted(
                message["params"]["diagnostics"]
                    .as_array()
                    .map_or(0, Vec::len),
            )
        {
            return at;
        }
    };
    send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"processId": null, "rootUri": null, "capabilities": {}}}));
    send(json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}));

    let uri = |n: usize| format!("file:///bench/file{n}.flow");
    let open = |send: &mut dyn FnMut(Value), n: usize| {
        send(
            json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
            "textDocument": {"uri": uri(n), "languageId": "flow", "version": 1, "text": source}}}),
        );
    };
    let started = Instant::now();
    open(&mut send, 0);
    let arrived = wait(&uri(0), &|n| n == 0);
    println!(
        "file: {lines} lines, {:.0} KB; open → first diagnostics: {:.1} ms",
        source.len() as f64 / 1000.0,
        (arrived - started).as_secs_f64() * 1000.0
    );

    // The outline, on the analysis the diagnostics came from (as an editor asks for it).
    let mut symbol_times = Vec::new();
    let mut symbols = 0;
    for request in 0..SYMBOL_REQUESTS {
        let id = 100 + request;
        let start = Instant::now();
        send(
            json!({"jsonrpc": "2.0", "id": id, "method": "textDocument/documentSymbol",
                   "params": {"textDocument": {"uri": uri(0)}}}),
        );
        let (arrived, response) = loop {
            let (at, message) = next();
            if message["id"] == id && message.get("method").is_none() {
                break (at, message);
            }
        };
        symbol_times.push(arrived - start);
        symbols = response["result"].as_array().map_or(0, Vec::len);
    }
    symbol_times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "documentSymbol ({symbols} declarations, with children) over {SYMBOL_REQUESTS} requests: median {:.1} ms, max {:.1} ms (target: at most 10 ms)",
        ms(symbol_times[SYMBOL_REQUESTS / 2]),
        ms(symbol_times[SYMBOL_REQUESTS - 1])
    );

    // The edit: `s.id` ⇄ `s.ix` on the line of the first audit.
    let at = source.find("shipment: s.id").expect("an audit line") + "shipment: s.i".len();
    let line = source[..at].matches('\n').count();
    let character = at - source[..at].rfind('\n').map_or(0, |i| i + 1);
    let range = json!({"start": {"line": line, "character": character},
                       "end": {"line": line, "character": character + 1}});
    let mut times = Vec::new();
    let mut fresh_symbol_times = Vec::new();
    for edit in 0..EDITS {
        let broken = edit % 2 == 0;
        let start = Instant::now();
        send(
            json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
            "textDocument": {"uri": uri(0), "version": edit + 2},
            "contentChanges": [{"range": range, "text": if broken { "x" } else { "d" }}]}}),
        );
        let arrived = wait(&uri(0), &|n| (n > 0) == broken);
        times.push(arrived - start);
        // The outline of the new version: the first request after an edit builds it.
        let id = 1000 + edit;
        let start = Instant::now();
        send(
            json!({"jsonrpc": "2.0", "id": id, "method": "textDocument/documentSymbol",
                   "params": {"textDocument": {"uri": uri(0)}}}),
        );
        let arrived = loop {
            let (at, message) = next();
            if message["id"] == id && message.get("method").is_none() {
                break at;
            }
        };
        fresh_symbol_times.push(arrived - start);
    }
    times.sort();
    fresh_symbol_times.sort();
    println!(
        "documentSymbol right after each edit (a new version: built, then cached): median {:.1} ms, max {:.1} ms",
        ms(fresh_symbol_times[EDITS / 2]),
        ms(fresh_symbol_times[EDITS - 1])
    );
    println!(
        "didChange → publishDiagnostics over {EDITS} edits: median {:.1} ms, p90 {:.1} ms, max {:.1} ms (target: under 30 ms)",
        ms(times[EDITS / 2]),
        ms(times[EDITS * 9 / 10]),
        ms(times[EDITS - 1])
    );

    let one = rss_kb(child.id());
    for n in 1..FILES {
        open(&mut send, n);
    }
    // The worker takes the most recently opened first: collect them in any order.
    let mut pending: std::collections::HashSet<String> = (1..FILES).map(uri).collect();
    while !pending.is_empty() {
        let (_, message) = next();
        if message["method"] == "textDocument/publishDiagnostics"
            && let Some(uri) = message["params"]["uri"].as_str()
        {
            pending.remove(uri);
        }
    }
    let all = rss_kb(child.id());
    match (one, all) {
        (Some(one), Some(all)) => println!(
            "resident memory: {:.1} MB with 1 file open, {:.1} MB with {FILES} ({:.2} MB per file)",
            one as f64 / 1024.0,
            all as f64 / 1024.0,
            (all - one) as f64 / 1024.0 / (FILES - 1) as f64
        ),
        _ => println!("resident memory: not measured (needs /proc)"),
    }
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "shutdown", "params": null}));
    send(json!({"jsonrpc": "2.0", "method": "exit", "params": null}));
    let _ = child.wait();
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A program of about `target` lines: repeated, independent units of declarations.
fn generate(target: usize) -> String {
    let mut out = String::with_capacity(target * 40);
    let mut n = 0;
    while out.lines().count() < target {
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
        n += 1;
    }
    out
}
