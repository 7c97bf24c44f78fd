//! End-to-end tests of the real `flow-lsp` binary: each test starts it, speaks LSP over its
//! stdin and stdout (Content-Length framing written here, not borrowed from a library), and
//! checks what a client would see.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

struct Lsp {
    child: Child,
    stdin: ChildStdin,
    messages: Receiver<Value>,
    /// Messages read while waiting for something else.
    backlog: Vec<Value>,
    next_id: i64,
}

/// Reads framed messages from the server; malformed output fails the test.
fn read_messages(stdout: impl Read, sender: mpsc::Sender<Value>) {
    let mut reader = BufReader::new(stdout);
    loop {
        let mut length = None;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(value) = line.strip_prefix("Content-Length: ") {
                length = value.parse::<usize>().ok();
            }
        }
        let length = length.expect("the server sends Content-Length");
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let message: Value = serde_json::from_slice(&body).expect("the server sends JSON");
        if sender.send(message).is_err() {
            return;
        }
    }
}

impl Lsp {
    fn start() -> Lsp {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flow-lsp"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("FLOW_LSP_STDERR").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("flow-lsp starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, messages) = mpsc::channel();
        std::thread::spawn(move || read_messages(stdout, sender));
        let mut lsp = Lsp {
            child,
            stdin,
            messages,
            backlog: Vec::new(),
            next_id: 1,
        };
        let init = lsp.request(
            "initialize",
            json!({"processId": null, "rootUri": null, "capabilities": {}}),
        );
        let capabilities = &init["result"]["capabilities"];
        assert_eq!(
            capabilities["textDocumentSync"]["change"], 2,
            "incremental sync"
        );
        lsp.notify("initialized", json!({}));
        lsp
    }

    fn send_bytes(&mut self, body: &[u8]) {
        let header = format!("Content-Length: {}\r\n\r\n", body.len());
        self.stdin
            .write_all(header.as_bytes())
            .and_then(|_| self.stdin.write_all(body))
            .and_then(|_| self.stdin.flush())
            .expect("the server reads its input");
    }

    fn send(&mut self, message: &Value) {
        self.send_bytes(message.to_string().as_bytes());
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    fn next_message(&mut self, deadline: Instant) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        self.messages
            .recv_timeout(left)
            .expect("the server answers in time (and is still running)")
    }

    /// Sends a request and waits for its response (the whole message: `result` or `error`).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.response(id)
    }

    fn response(&mut self, id: i64) -> Value {
        if let Some(index) = self
            .backlog
            .iter()
            .position(|m| m["id"] == id && m.get("method").is_none())
        {
            return self.backlog.remove(index);
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let message = self.next_message(deadline);
            if message["id"] == id && message.get("method").is_none() {
                return message;
            }
            self.backlog.push(message);
        }
    }

    /// Waits for diagnostics of `uri` that satisfy `wanted`; returns them.
    fn diagnostics_until(&mut self, uri: &str, wanted: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let matches = |m: &Value| {
            m["method"] == "textDocument/publishDiagnostics" && m["params"]["uri"] == uri
        };
        let mut last = None;
        for message in std::mem::take(&mut self.backlog) {
            if matches(&message) {
                last = Some(message);
            } else {
                self.backlog.push(message);
            }
        }
        if let Some(message) = last {
            let diagnostics = message["params"]["diagnostics"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if wanted(&diagnostics) {
                return diagnostics;
            }
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let message = self.next_message(deadline);
            if matches(&message) {
                let diagnostics = message["params"]["diagnostics"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if wanted(&diagnostics) {
                    return diagnostics;
                }
            } else {
                self.backlog.push(message);
            }
        }
    }

    fn open(&mut self, uri: &str, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "flow", "version": 1, "text": text}}),
        );
    }

    fn change(&mut self, uri: &str, version: i64, changes: Value) {
        self.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": version}, "contentChanges": changes}),
        );
    }

    fn at(&mut self, method: &str, uri: &str, (line, character): (usize, usize)) -> Value {
        let mut params = json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character}});
        if method == "textDocument/references" {
            params["context"] = json!({"includeDeclaration": true});
        }
        self.request(method, params)
    }

    /// `shutdown` then `exit`: the process ends with status 0.
    fn stop(mut self) {
        let response = self.request("shutdown", Value::Null);
        assert!(response.get("error").is_none(), "{response}");
        self.notify("exit", Value::Null);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "flow-lsp exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "flow-lsp did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lsp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (line, UTF-16 column) of the `|` in `needle` within `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let bar = needle.find('|').expect("a | marks the position");
    let plain = needle.replace('|', "");
    let offset = text
        .find(&plain)
        .unwrap_or_else(|| panic!("`{plain}` not in the text"))
        + bar;
    let before = &text[..offset];
    let line = before.matches('\n').count();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].encode_utf16().count())
}

fn uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

const TYPES: &str = "/// A container waiting at the terminal.\ntype Shipment = {\n  id: String,\n  /// The container's number.\n  container: String,\n}\n\nenum Verdict {\n  Released(receipt: String),\n  Held(reason: String),\n}\n";

const MAIN: &str = "import \"types.flow\"\n\n/// Releases a container.\ntool release(container: String) -> String via exec \"release.sh\" sensitive\n\nworkflow ship(s: Shipment) -> Verdict {\n  let d = await approval \"signoff\" { approvers: role(\"customs\") }\n  if !d.approved { return Held(d.comment) }\n  let receipt = release(s.contaner)\n  Released(receipt)\n}\n";

fn project() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("types.flow"), TYPES).expect("write");
    std::fs::write(dir.path().join("main.flow"), MAIN).expect("write");
    let main = uri(&dir.path().join("main.flow"));
    let types = uri(&dir.path().join("types.flow"));
    (dir, main, types)
}

#[test]
fn a_session_diagnostics_hover_definition_completion_symbols_and_more() {
    let (_dir, main, types) = project();
    let mut lsp = Lsp::start();
    lsp.open(&main, MAIN);

    // The diagnostic flowc check reports: unknown field, at `contaner`.
    let diagnostics = lsp.diagnostics_until(&main, |d| !d.is_empty());
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let d = &diagnostics[0];
    assert_eq!(d["code"], "E0203");
    assert_eq!(d["severity"], 1);
    let (line, character) = position(MAIN, "s.|contaner");
    assert_eq!(
        d["range"]["start"],
        json!({"line": line, "character": character})
    );
    assert_eq!(
        d["range"]["end"],
        json!({"line": line, "character": character + 8})
    );
    assert!(
        d["message"]
            .as_str()
            .expect("text")
            .starts_with("Unknown field `contaner`"),
        "{d}"
    );
    assert!(
        d["message"]
            .as_str()
            .expect("text")
            .contains("help: did you mean `container`?")
    );
    let related = &d["relatedInformation"][0];
    assert_eq!(
        related["location"]["uri"],
        types.as_str(),
        "the declaration, in the imported file"
    );

    // Fix it with an incremental edit: the diagnostics go away.
    let (line, character) = position(MAIN, "s.|contaner");
    lsp.change(
        &main,
        2,
        json!([{"range": {"start": {"line": line, "character": character},
                          "end": {"line": line, "character": character + 8}},
                "text": "container"}]),
    );
    lsp.diagnostics_until(&main, |d| d.is_empty());
    let text = MAIN.replace("s.contaner", "s.container");

    // Hover: the field's type and its doc; a tool's signature.
    let hover = lsp.at("textDocument/hover", &main, position(&text, "s.cont|ainer"));
    let value = hover["result"]["contents"]["value"]
        .as_str()
        .expect("markdown");
    assert!(value.contains("Shipment.container: String"), "{value}");
    assert!(value.contains("The container's number."), "{value}");
    let hover = lsp.at("textDocument/hover", &main, position(&text, "rel|ease(s"));
    let value = hover["result"]["contents"]["value"]
        .as_str()
        .expect("markdown");
    assert!(
        value.contains("tool release(container: String) -> String via exec"),
        "{value}"
    );
    assert!(value.contains("Releases a container."), "{value}");
    let hover = lsp.at("textDocument/hover", &main, position(&text, "appr|overs:"));
    let value = hover["result"]["contents"]["value"]
        .as_str()
        .expect("markdown");
    assert!(value.contains("Who may decide"), "{value}");

    // Definition: the type, in the imported file.
    let definition = lsp.at(
        "textDocument/definition",
        &main,
        position(&text, "s: Ship|ment"),
    );
    assert_eq!(definition["result"]["uri"], types.as_str());
    let (line, character) = position(TYPES, "type |Shipment");
    assert_eq!(
        definition["result"]["range"]["start"],
        json!({"line": line, "character": character})
    );

    // References of `d`: its declaration and two uses.
    let references = lsp.at(
        "textDocument/references",
        &main,
        position(&text, "let |d ="),
    );
    assert_eq!(
        references["result"].as_array().map(Vec::len),
        Some(3),
        "{references}"
    );

    // Rename `receipt`.
    let rename = lsp.request(
        "textDocument/rename",
        json!({"textDocument": {"uri": main}, "position": position_json(&text, "let |receipt"), "newName": "r"}),
    );
    assert_eq!(
        rename["result"]["changes"][&main].as_array().map(Vec::len),
        Some(2),
        "{rename}"
    );

    // Completion after `.`, typed into the buffer.
    let (line, character) = position(&text, "  Released(receipt)|");
    lsp.change(
        &main,
        3,
        json!([{"range": {"start": {"line": line, "character": character},
                          "end": {"line": line, "character": character}},
                "text": "\n  s."}]),
    );
    let completion = lsp.at("textDocument/completion", &main, (line + 1, 4));
    let labels: Vec<&str> = completion["result"]
        .as_array()
        .unwrap_or_else(|| panic!("items: {completion}"))
        .iter()
        .filter_map(|i| i["label"].as_str())
        .collect();
    assert_eq!(labels, ["id", "container"]);

    // Completion of the options still missing inside `await approval { … }`.
    let (line, character) = position(&text, "role(\"customs\")| }");
    lsp.change(
        &main,
        4,
        json!([{"range": {"start": {"line": line, "character": character},
                          "end": {"line": line, "character": character}},
                "text": ", "}]),
    );
    let completion = lsp.at("textDocument/completion", &main, (line, character + 2));
    let items = completion["result"].as_array().expect("items");
    let labels: Vec<&str> = items.iter().filter_map(|i| i["label"].as_str()).collect();
    assert_eq!(
        labels,
        [
            "prompt",
            "context",
            "timeout",
            "escalate",
            "quorum",
            "allow_self",
            "remind"
        ]
    );
    assert!(
        items[0]["documentation"]["value"]
            .as_str()
            .is_some_and(|d| d.contains("What the reviewer is asked"))
    );

    // Document symbols.
    let symbols = lsp.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": main}}),
    );
    let names: Vec<&str> = symbols["result"]
        .as_array()
        .expect("symbols")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["release", "ship"]);
    lsp.stop();
}

fn position_json(text: &str, needle: &str) -> Value {
    let (line, character) = position(text, needle);
    json!({"line": line, "character": character})
}

#[test]
fn editing_an_imported_file_updates_the_files_that_import_it() {
    let (_dir, main, types) = project();
    let fixed = MAIN.replace("s.contaner", "s.container");
    let mut lsp = Lsp::start();
    lsp.open(&types, TYPES);
    lsp.open(&main, &fixed);
    lsp.diagnostics_until(&main, |d| d.is_empty());
    // Rename the field in types.flow (not saved): main.flow now uses a missing field.
    let renamed = TYPES.replace("container: String", "box: String");
    lsp.change(&types, 2, json!([{"text": renamed}]));
    // A request right away analyses main.flow itself; its diagnostics are still published.
    let hover = lsp.at(
        "textDocument/hover",
        &main,
        position(&fixed, "s.cont|ainer"),
    );
    assert!(hover.get("error").is_none(), "{hover}");
    let diagnostics = lsp.diagnostics_until(&main, |d| !d.is_empty());
    assert_eq!(diagnostics[0]["code"], "E0203");
    // From types.flow, references and rename reach the open files that import it.
    let references = lsp.at(
        "textDocument/references",
        &types,
        position(&renamed, "type Ship|ment"),
    );
    let uris: Vec<&str> = references["result"]
        .as_array()
        .expect("locations")
        .iter()
        .filter_map(|l| l["uri"].as_str())
        .collect();
    assert_eq!(uris, [types.as_str(), main.as_str()], "{references}");
    let rename = lsp.request(
        "textDocument/rename",
        json!({"textDocument": {"uri": types}, "position": position_json(&renamed, "type Ship|ment"), "newName": "Cargo"}),
    );
    assert_eq!(
        rename["result"]["changes"][&types].as_array().map(Vec::len),
        Some(1),
        "{rename}"
    );
    assert_eq!(
        rename["result"]["changes"][&main].as_array().map(Vec::len),
        Some(1),
        "{rename}"
    );
    // Closing types.flow goes back to the file on disk, which has the field.
    lsp.notify(
        "textDocument/didClose",
        json!({"textDocument": {"uri": types}}),
    );
    lsp.diagnostics_until(&main, |d| d.is_empty());
    lsp.stop();
}

#[test]
fn formatting_and_the_approval_code_action() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("w.flow");
    let text = "tool pay(n: Int) -> Int via exec \"pay.sh\" sensitive\nworkflow w(n: Int) -> Int {\n    let x = pay(n)\n  x\n}\n";
    std::fs::write(&path, text).expect("write");
    let uri = uri(&path);
    let mut lsp = Lsp::start();
    lsp.open(&uri, text);
    let diagnostics = lsp.diagnostics_until(&uri, |d| !d.is_empty());
    assert_eq!(diagnostics[0]["code"], "E0400");

    let actions = lsp.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": uri}, "range": diagnostics[0]["range"],
               "context": {"diagnostics": diagnostics}}),
    );
    let action = &actions["result"][0];
    assert_eq!(action["kind"], "quickfix");
    let edit = &action["edit"]["changes"][&uri][0];
    assert!(
        edit["newText"]
            .as_str()
            .expect("text")
            .starts_with("let decision = await approval \"pay_approval\""),
        "{edit}"
    );
    assert_eq!(edit["range"]["start"], json!({"line": 2, "character": 4}));

    let formatted = lsp.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    let edits = formatted["result"].as_array().expect("edits");
    assert_eq!(edits.len(), 1);
    let new_text = edits[0]["newText"].as_str().expect("text");
    assert_eq!(
        new_text,
        flow_compiler::format::format(text).expect("formats")
    );
    assert!(new_text.contains("\n  let x = pay(n)\n"));
    lsp.stop();
}

#[test]
fn test_blocks_get_diagnostics_and_a_run_test_lens() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("w_test.flow");
    let text = "tool check(n: Int) -> Bool via http post \"/check\"\nworkflow w(n: Int) -> Bool {\n  check(n)\n}\n\ntest \"checks \\\"one\\\"\" {\n  mock check returns 1\n  start w(1)\n}\n";
    std::fs::write(&path, text).expect("write");
    let uri = uri(&path);
    let mut lsp = Lsp::start();
    lsp.open(&uri, text);
    // The mock's answer has the tool's result type: a mistake in a test is a diagnostic.
    let diagnostics = lsp.diagnostics_until(&uri, |d| !d.is_empty());
    assert_eq!(diagnostics[0]["code"], "E0300", "{diagnostics:?}");
    assert_eq!(
        diagnostics[0]["range"]["start"],
        json!({"line": 6, "character": 21})
    );
    let lenses = lsp.request(
        "textDocument/codeLens",
        json!({"textDocument": {"uri": uri}}),
    );
    let lens = &lenses["result"][0];
    assert_eq!(lens["range"]["start"], json!({"line": 5, "character": 5}));
    assert_eq!(lens["command"]["command"], "flow.runTest");
    assert_eq!(lens["command"]["arguments"][1], "checks \"one\"");
    let file = lens["command"]["arguments"][0].as_str().expect("a path");
    assert!(file.ends_with("w_test.flow"), "{file}");
    lsp.stop();
}

#[test]
fn bad_input_never_brings_it_down() {
    let (_dir, main, _types) = project();
    let mut lsp = Lsp::start();
    // Malformed JSON, a body that is not UTF-8, a message that is not JSON-RPC.
    lsp.send_bytes(b"{\"jsonrpc\": \"2.0\", \"id\": 99, \"method\": ");
    lsp.send_bytes(&[0xff, 0xfe, b'{', 0x80]);
    lsp.send_bytes(b"[1, 2, 3]");
    // An unknown request gets an error; an unknown notification is ignored.
    let unknown = lsp.request("flow/unknownMethod", json!({}));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    lsp.notify("flow/unknownNotification", json!({"x": 1}));
    // Requests about documents that are not open, or at positions out of range.
    let hover = lsp.at("textDocument/hover", "file:///nowhere/missing.flow", (0, 0));
    assert!(hover.get("error").is_none(), "{hover}");
    lsp.open(&main, MAIN);
    for method in [
        "textDocument/hover",
        "textDocument/definition",
        "textDocument/completion",
        "textDocument/references",
    ] {
        for at in [
            (9999, 0),
            (0, 9999),
            (u32::MAX as usize, u32::MAX as usize),
            (8, 17),
        ] {
            let answer = lsp.at(method, &main, at);
            assert!(
                answer.get("error").is_none(),
                "{method} at {at:?}: {answer}"
            );
        }
    }
    // Wrong parameters are an error response, not a crash.
    let wrong = lsp.request("textDocument/hover", json!({"textDocument": 3}));
    assert!(wrong.get("error").is_some(), "{wrong}");
    // A change to a document that is not open, and an edit with a range past the end.
    lsp.change("file:///nowhere/else.flow", 2, json!([{"text": "x"}]));
    lsp.change(&main, 2, json!([{"range": {"start": {"line": 500, "character": 3}, "end": {"line": 2, "character": 0}}, "text": "\n// end\n"}]));

    // A thousand rapid edits, typing a character at a time, then deleting them again.
    let (line, character) = position(MAIN, "  Released(receipt)|");
    let mut version = 3;
    for i in 0..500 {
        version += 1;
        let at = json!({"line": line, "character": character + i});
        lsp.change(
            &main,
            version,
            json!([{"range": {"start": at, "end": at}, "text": "é"}]),
        );
    }
    for i in (0..500).rev() {
        version += 1;
        let start = json!({"line": line, "character": character + i});
        let end = json!({"line": line, "character": character + i + 1});
        lsp.change(
            &main,
            version,
            json!([{"range": {"start": start, "end": end}, "text": ""}]),
        );
    }
    // The text is back to MAIN (plus the comment at the end): one diagnostic again.
    let (line, character) = position(MAIN, "s.|contaner");
    let diagnostics = lsp.diagnostics_until(&main, |d| {
        d.len() == 1 && d[0]["range"]["start"] == json!({"line": line, "character": character})
    });
    assert_eq!(diagnostics[0]["code"], "E0203");
    let hover = lsp.at("textDocument/hover", &main, position(MAIN, "rel|ease(s"));
    assert!(
        hover["result"]["contents"]["value"]
            .as_str()
            .is_some_and(|v| v.contains("tool release"))
    );
    // Closing the document clears its diagnostics.
    lsp.notify(
        "textDocument/didClose",
        json!({"textDocument": {"uri": main}}),
    );
    lsp.diagnostics_until(&main, |d| d.is_empty());
    lsp.stop();
}

#[test]
fn a_huge_file_is_checked() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let uri = uri(&dir.path().join("huge.flow"));
    // A 2 MB line, then 2,000 small workflows, the last with an error.
    let mut text = format!("// {}\n", "x".repeat(2_000_000));
    for n in 0..2_000 {
        text.push_str(&format!("workflow w{n}(a: Int) -> Int {{\n  a + {n}\n}}\n"));
    }
    text.push_str("workflow last() -> Int {\n  \"not a number\"\n}\n");
    let mut lsp = Lsp::start();
    lsp.open(&uri, &text);
    let diagnostics = lsp.diagnostics_until(&uri, |d| !d.is_empty());
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0]["code"], "E0300");
    let line = text.lines().count() - 2;
    assert_eq!(
        diagnostics[0]["range"]["start"],
        json!({"line": line, "character": 2})
    );
    let hover = lsp.at("textDocument/hover", &uri, (0, 1_500_000));
    assert!(hover.get("error").is_none());
    lsp.stop();
}

#[test]
fn positions_on_non_ascii_lines_are_utf16() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Clients percent-encode URIs: `ü.flow`.
    let uri = format!("{}/%C3%BC.flow", uri(dir.path()));
    let text = "workflow größe() -> String {\n  let 名前 = \"😀😀\"; missing_name\n}\n";
    let mut lsp = Lsp::start();
    lsp.open(&uri, text);
    let diagnostics = lsp.diagnostics_until(&uri, |d| d.iter().any(|d| d["code"] == "E0200"));
    let unknown = diagnostics
        .iter()
        .find(|d| d["code"] == "E0200")
        .expect("E0200");
    let (line, character) = position(text, "; |missing_name");
    assert_eq!(
        unknown["range"]["start"],
        json!({"line": line, "character": character})
    );
    assert_eq!(
        unknown["range"]["end"],
        json!({"line": line, "character": character + 12})
    );
    // Hover on the non-ASCII local, by its UTF-16 position.
    let hover = lsp.at("textDocument/hover", &uri, position(text, "let 名|前"));
    let value = hover["result"]["contents"]["value"]
        .as_str()
        .expect("markdown");
    assert!(value.contains("let 名前: String"), "{value}");
    lsp.stop();
}

/// (line, UTF-16 column) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count(),
        before[line_start..].encode_utf16().count(),
    )
}

/// What `flowc check ROOT` reports (the same library call) for the file at `path`:
/// code, start position and message, in order.
fn flowc_check(root: &Path, path: &Path) -> Vec<(String, (usize, usize), String)> {
    let root = root.display().to_string();
    let program = flow_compiler::check_paths(&[root], &flow_compiler::sources::FsLoader)
        .expect("the root can be read");
    let wanted = path.display().to_string();
    let Some(file) = program.db.find(&wanted) else {
        return Vec::new();
    };
    let text = program.db.text(file);
    program
        .diagnostics
        .iter()
        .filter(|d| d.file() == file)
        .map(|d| {
            (
                d.code.id.to_string(),
                line_column(text, d.primary.span.start as usize),
                d.message.clone(),
            )
        })
        .collect()
}

/// The published diagnostics that carry a code (all but the mark at a broken import), in
/// the form of [`flowc_check`].
fn coded(diagnostics: &[Value]) -> Vec<(String, (usize, usize), String)> {
    diagnostics
        .iter()
        .filter(|d| d["code"].is_string())
        .map(|d| {
            let start = &d["range"]["start"];
            let message = d["message"].as_str().expect("a message");
            (
                d["code"].as_str().expect("a code").to_string(),
                (
                    start["line"].as_u64().expect("line") as usize,
                    start["character"].as_u64().expect("character") as usize,
                ),
                message.lines().next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The marks at `import` lines (the diagnostics without a code).
fn import_marks(diagnostics: &[Value]) -> Vec<&Value> {
    diagnostics.iter().filter(|d| d["code"].is_null()).collect()
}

const BROKEN_TYPES: &str = "type Shipment = {\n  id: Strng,\n  box: Contaner,\n}\n\nenum Verdict { Held(reason: String) }\n";
const IMPORTING: &str =
    "import \"types.flow\"\n\nworkflow ship(s: Shipment) -> Verdict {\n  Held(s.id)\n}\n";

#[test]
fn errors_in_imported_files_are_published_under_their_uri_and_marked_at_the_import() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (main_path, types_path) = (dir.path().join("main.flow"), dir.path().join("types.flow"));
    std::fs::write(&types_path, BROKEN_TYPES).expect("write");
    std::fs::write(&main_path, IMPORTING).expect("write");
    let (main, types) = (uri(&main_path), uri(&types_path));
    let expected_types = flowc_check(&main_path, &types_path);
    assert_eq!(expected_types.len(), 2, "{expected_types:?}");
    let mut lsp = Lsp::start();
    lsp.open(&main, IMPORTING);

    // types.flow is not open: it gets what `flowc check main.flow` reports in it.
    let published = lsp.diagnostics_until(&types, |d| !d.is_empty());
    assert_eq!(coded(&published), expected_types);
    assert_eq!(published[0]["code"], "E0201");
    assert_eq!(
        published[0]["range"]["start"],
        position_json(BROKEN_TYPES, "id: |Strng")
    );
    // main.flow: its own diagnostics (none, as `flowc check` says), and the mark at the
    // import, pointing at each error.
    let in_main = lsp.diagnostics_until(&main, |d| !d.is_empty());
    assert_eq!(coded(&in_main), flowc_check(&main_path, &main_path));
    let marks = import_marks(&in_main);
    assert_eq!(marks.len(), 1, "{in_main:?}");
    let mark = marks[0];
    assert_eq!(mark["severity"], 1);
    assert_eq!(
        mark["range"]["start"],
        position_json(IMPORTING, "import |\"types")
    );
    assert_eq!(
        mark["range"]["end"],
        position_json(IMPORTING, "types.flow\"|")
    );
    let message = mark["message"].as_str().expect("a message");
    assert!(
        message.starts_with("imported file \"types.flow\" has 2 errors"),
        "{message}"
    );
    let related = mark["relatedInformation"].as_array().expect("related");
    assert_eq!(related.len(), 2, "{mark}");
    assert_eq!(related[0]["location"]["uri"], types.as_str());
    assert_eq!(
        related[0]["location"]["range"]["start"],
        position_json(BROKEN_TYPES, "id: |Strng")
    );
    assert!(
        related[1]["message"]
            .as_str()
            .expect("text")
            .starts_with("E0201: Unknown type `Contaner`"),
        "{mark}"
    );

    // Opening types.flow: it is checked as its own root, with the same errors.
    lsp.open(&types, BROKEN_TYPES);
    let own = lsp.diagnostics_until(&types, |d| coded(d).len() == 2);
    assert_eq!(coded(&own), flowc_check(&types_path, &types_path));
    // Fixing it (unsaved) clears both files.
    let fixed = BROKEN_TYPES
        .replace("Strng", "String")
        .replace("Contaner", "String");
    lsp.change(&types, 2, json!([{"text": fixed}]));
    lsp.diagnostics_until(&types, |d| d.is_empty());
    lsp.diagnostics_until(&main, |d| d.is_empty());
    // Closing it without saving: main.flow reads the broken file on disk again, so both
    // come back (types.flow's from main.flow's program, as `flowc check main.flow` says).
    lsp.notify(
        "textDocument/didClose",
        json!({"textDocument": {"uri": types}}),
    );
    let again = lsp.diagnostics_until(&types, |d| !d.is_empty());
    assert_eq!(coded(&again), expected_types);
    let in_main = lsp.diagnostics_until(&main, |d| import_marks(d).len() == 1);
    assert_eq!(coded(&in_main), Vec::new());

    // main.flow stops importing it: nothing open loads types.flow, so it is cleared.
    let alone = "workflow ship(id: String) -> String {\n  id\n}\n";
    lsp.change(&main, 2, json!([{"text": alone}]));
    lsp.diagnostics_until(&main, |d| d.is_empty());
    lsp.diagnostics_until(&types, |d| d.is_empty());
    // Importing it again brings them back; closing main.flow clears both.
    lsp.change(&main, 3, json!([{"text": IMPORTING}]));
    lsp.diagnostics_until(&types, |d| !d.is_empty());
    lsp.diagnostics_until(&main, |d| !d.is_empty());
    lsp.notify(
        "textDocument/didClose",
        json!({"textDocument": {"uri": main}}),
    );
    lsp.diagnostics_until(&main, |d| d.is_empty());
    lsp.diagnostics_until(&types, |d| d.is_empty());
    lsp.stop();
}

#[test]
fn errors_two_imports_away_are_shown_at_each_import_on_the_way() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let paths = ["main.flow", "middle.flow", "types.flow"].map(|f| dir.path().join(f));
    let middle = "import \"types.flow\"\n\ntype Box = { s: Shipment }\n";
    std::fs::write(&paths[2], BROKEN_TYPES).expect("write");
    std::fs::write(&paths[1], middle).expect("write");
    let main_text = "import \"middle.flow\"\n\nworkflow open(b: Box) -> String {\n  b.s.id\n}\n";
    std::fs::write(&paths[0], main_text).expect("write");
    let uris = paths.clone().map(|p| uri(&p));
    let mut lsp = Lsp::start();
    lsp.open(&uris[0], main_text);
    // Every file the open document loads gets `flowc check main.flow`'s diagnostics, and
    // each import on the way to the errors is marked.
    let mut published = Vec::new();
    for (path, uri) in paths.iter().zip(&uris) {
        let expected = flowc_check(&paths[0], path);
        let marked = usize::from(path != &paths[2]);
        published.push(lsp.diagnostics_until(uri, |d| {
            !d.is_empty() && coded(d) == expected && import_marks(d).len() == marked
        }));
    }
    assert_eq!(coded(&published[2]).len(), 2, "{:?}", published[2]);
    let message = import_marks(&published[0])[0]["message"]
        .as_str()
        .expect("a message");
    assert!(
        message.starts_with(
            "imported file \"middle.flow\" has 2 errors (2 of them in files it imports)"
        ),
        "{message}"
    );
    let message = import_marks(&published[1])[0]["message"]
        .as_str()
        .expect("a message");
    assert!(
        message.starts_with("imported file \"types.flow\" has 2 errors\n"),
        "{message}"
    );
    lsp.stop();
}

#[test]
fn hover_on_an_unknown_name_answers_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let uri = uri(&dir.path().join("w.flow"));
    let text = "workflow w(n: Int) -> Int {\n  missing + n\n}\n";
    let mut lsp = Lsp::start();
    lsp.open(&uri, text);
    lsp.diagnostics_until(&uri, |d| d.iter().any(|d| d["code"] == "E0200"));
    let hover = lsp.at("textDocument/hover", &uri, position(text, "miss|ing"));
    assert!(hover.get("error").is_none(), "{hover}");
    assert_eq!(hover["result"], Value::Null, "{hover}");
    // A known name next to it still has its type.
    let hover = lsp.at("textDocument/hover", &uri, position(text, "+ |n"));
    let value = hover["result"]["contents"]["value"]
        .as_str()
        .expect("markdown");
    assert!(value.contains("n: Int"), "{value}");
    lsp.stop();
}

/// The range of the first `needle` in `text`, as LSP writes it.
fn range_json(text: &str, needle: &str) -> Value {
    let start = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in the text"));
    let at = |offset: usize| {
        let before = &text[..offset];
        let line = before.matches('\n').count();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        json!({"line": line, "character": before[line_start..].encode_utf16().count()})
    };
    json!({"start": at(start), "end": at(start + needle.len())})
}

const OUTLINED: &str = "type Doc = { name: String, pages: Int }\n\nenum Verdict { Ok, Held(reason: String) }\n\ntool check(d: Doc) -> Verdict via http post \"/check\"\n\nworkflow review(d: Doc) -> Verdict {\n  check(d)\n}\n";

/// The outline `documentSymbol` answers for `OUTLINED`: declarations in order, a record's
/// fields and an enum's variants as children, signatures as details.
fn expected_outline(text: &str, workflow: &str) -> Value {
    let symbol =
        |name: &str, kind: u32, detail: Option<&str>, whole: &str, children: Vec<Value>| {
            let mut symbol = json!({
                "name": name,
                "kind": kind,
                "range": range_json(text, whole),
                "selectionRange": range_json(text, name),
            });
            if let Some(detail) = detail {
                symbol["detail"] = json!(detail);
            }
            if !children.is_empty() {
                symbol["children"] = json!(children);
            }
            symbol
        };
    let (record, field, en, member, method, function) = (23, 8, 10, 22, 6, 12);
    json!([
        symbol(
            "Doc",
            record,
            None,
            "type Doc = { name: String, pages: Int }",
            vec![
                symbol("name", field, Some("String"), "name: String", vec![]),
                symbol("pages", field, Some("Int"), "pages: Int", vec![]),
            ]
        ),
        symbol(
            "Verdict",
            en,
            None,
            "enum Verdict { Ok, Held(reason: String) }",
            vec![
                symbol("Ok", member, None, "Ok", vec![]),
                symbol("Held", member, None, "Held(reason: String)", vec![]),
            ]
        ),
        symbol(
            "check",
            method,
            Some("tool check(d: Doc) -> Verdict via http post \"/check\""),
            "tool check(d: Doc) -> Verdict via http post \"/check\"",
            vec![]
        ),
        symbol(
            workflow,
            function,
            Some(&format!("workflow {workflow}(d: Doc) -> Verdict")),
            &format!("workflow {workflow}(d: Doc) -> Verdict {{\n  check(d)\n}}"),
            vec![]
        ),
    ])
}

#[test]
fn document_symbols_are_the_declaration_hierarchy_and_follow_edits() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = format!("{}/outline.flow", uri(dir.path()));
    let mut lsp = Lsp::start();
    lsp.open(&file, OUTLINED);
    let params = json!({"textDocument": {"uri": file}});
    let first = lsp.request("textDocument/documentSymbol", params.clone());
    assert_eq!(
        first["result"],
        expected_outline(OUTLINED, "review"),
        "{first}"
    );
    // Asked again on the same version: the same answer (from the cache).
    let again = lsp.request("textDocument/documentSymbol", params.clone());
    assert_eq!(again["result"], first["result"]);
    // After an edit the outline is the new text's, even when asked right away.
    let edited = OUTLINED.replace("review", "approve_review");
    lsp.change(&file, 2, json!([{"text": edited}]));
    let after = lsp.request("textDocument/documentSymbol", params);
    let expected = expected_outline(&edited, "approve_review");
    assert_eq!(after["result"], expected, "{after}");
    lsp.stop();
}

#[test]
fn signals_get_hover_completion_and_outline_over_the_protocol() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("sub.flow");
    let text = "workflow sub(id: String) -> String\n  accepts cancel: String from role(\"support\"),\n    renewed: Int from system(\"billing\")\n{\n  let months = await signal renewed\n  let why = await signal cancel\n  \"${months} ${why}\"\n}\n";
    std::fs::write(&path, text).expect("write");
    let uri = uri(&path);
    let mut lsp = Lsp::start();
    lsp.open(&uri, text);
    let hover = lsp.at("textDocument/hover", &uri, position(text, "signal can|cel"));
    let value = hover["result"]["contents"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("a hover: {hover}"));
    assert!(
        value.contains("signal cancel: String from role(\"support\")"),
        "{value}"
    );
    let symbols = lsp.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": uri}}),
    );
    let children = &symbols["result"][0]["children"];
    assert_eq!(children[0]["name"], "cancel", "{symbols}");
    assert_eq!(children[1]["name"], "renewed", "{symbols}");
    // While typing the name after `await signal`: the signals the workflow accepts.
    let typing = text.replace("await signal cancel", "await signal ");
    lsp.change(&uri, 2, json!([{"text": typing}]));
    let (line, character) = position(&typing, "await signal |\n");
    let completion = lsp.at("textDocument/completion", &uri, (line, character));
    let labels: Vec<&str> = completion["result"]
        .as_array()
        .unwrap_or_else(|| panic!("items: {completion}"))
        .iter()
        .filter_map(|item| item["label"].as_str())
        .collect();
    assert_eq!(labels, ["cancel", "renewed"], "{completion}");
    lsp.stop();
}
