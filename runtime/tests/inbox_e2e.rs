//! The web inbox end to end, in a real browser: a temporary database and `flow.toml`, the
//! real `flowrt serve` on a free port, runs started through the API (one waiting at an
//! approval gate, one at an `await input<Review>` gate), then `node e2e/inbox.mjs` drives
//! headless Chromium through the inbox (sign in, approve with a comment, fill and submit a
//! typed input form, a wrong-role reviewer who sees nothing, may not read the run and is
//! refused, a reader who sees the run but cannot decide it, no horizontal scrolling at 375px,
//! a run started from the generated form, a context shown in the order the workflow wrote
//! it, the gates of a `parallel`'s branches side by side). The server is stopped with SIGTERM
//! and must exit 0.
//!
//! Needs Node.js, Debian's Chromium (`/usr/bin/chromium`, or `CHROMIUM`) and the npm
//! packages of `e2e/` (`npm ci --prefix e2e`; `./test.sh` and `.ci/run` do it). Without them
//! the test fails and says what is missing. `E2E_SCREENSHOTS=1` also saves
//! `docs/inbox.png`, `docs/inbox-phone.png` and `docs/run.png`.
#![cfg(unix)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FLOWRT: &str = env!("CARGO_BIN_EXE_flowrt");
const INSTALL: &str =
    "run `npm ci --prefix e2e` (Node.js and npm required; ./test.sh and .ci/run do this)";

/// The workflows the browser works on. `e2e/inbox.mjs` knows their shapes: `Review` is the
/// record of the input form it fills, `Order` the input of the start form.
const WORKFLOWS: &str = r#"/// One line of an order.
type Line = { item: String, qty: Int }

/// An order waiting for its release.
type Order = { id: String, amount_eur: Int, lines: List<Line>, note: String? }

enum Priority { Low, Normal, High }

/// What a support agent answers.
type Review = {
  /// What the customer is told.
  body: String,
  escalate: Bool,
  tags: List<String>,
  /// How soon the team must look at it.
  priority: Priority,
  /// Minutes spent on the ticket so far.
  minutes: Int?,
  follow_up: Time?,
}

/// Releases an order once customs signed it off.
/// (`pin` shows that a `Secret` is asked for with a password input.)
workflow release(o: Order, pin: Secret?) -> String {
  let d = await approval "signoff" {
    approvers: role("customs"),
    prompt: "Release order ${o.id} (${o.amount_eur} EUR)?",
    context: { zeta: o.amount_eur, alpha: o.id, mid: { order: o, checked: true } },
    timeout: 48h,
    escalate: role("ops_manager") after 24h,
  }
  if !d.approved { return "held by ${d.by}: ${d.comment}" }
  "released by ${d.by}: ${d.comment}"
}

enum Payout {
  /// The refund was paid.
  Paid(by: String),
  /// A reviewer held it.
  Held(why: String),
}

/// Pays a refund out once compliance signed it off: two reviewers above 10 000 EUR (the
/// quorum comes from the data).
workflow refund(amount_eur: Int) -> Payout {
  let d = await approval "refund_signoff" {
    approvers: role("compliance_retail"),
    prompt: "Refund ${amount_eur} EUR?",
    quorum: if amount_eur > 10000 { 2 } else { 1 },
    timeout: 48h,
    escalate: role("ops_manager") after 24h,
  }
  if !d.approved { return Held(d.comment) }
  Paid(d.by)
}

/// Asks a support agent to review a reply.
/// (Its timeout is caught: the card says the workflow goes on.)
workflow triage(subject: String) -> String {
  let r = try {
    await input<Review> "review" {
      from: role("support"),
      prompt: "Review the reply to ${subject}",
      context: { subject: subject },
      timeout: 8h,
    }
  } catch e {
    return "nobody reviewed ${subject}: ${e.kind}"
  }
  "${r.body} | ${join(r.tags, ",")} | ${to_string(r.priority)} | ${to_string(r.minutes ?? 0)} | ${to_string(r.escalate)}"
}

/// Why a customer leaves.
type Cancellation = {
  /// What the customer said.
  reason: String,
  refund: Bool,
}

/// A subscription that support may cancel; billing reports renewals.
workflow subscription(customer: String) -> String
  accepts cancel: Cancellation from role("support"),
    renewed: Int from system("billing")
{
  let c = await signal cancel
  "cancelled ${customer}: ${c.reason} (refund ${to_string(c.refund)})"
}

/// Onboards a vendor once legal and finance approved, side by side: two gates at once.
workflow onboard(vendor: String) -> String {
  let r = parallel {
    legal: await approval "legal_review" {
      approvers: role("customs"),
      prompt: "Legal review of ${vendor}",
    },
    finance: await approval "finance_review" {
      approvers: role("compliance_retail"),
      prompt: "Budget for ${vendor}",
    },
  }
  "${vendor}: legal ${to_string(r.legal.approved)}, finance ${to_string(r.finance.approved)}"
}
"#;

const CONFIG: &str = r#"# ana reviews (customs, compliance_retail) and answers support tickets; bea is the second
# reviewer of refunds; ines starts runs; sam holds neither role; rita reads release runs
# (compliance) without deciding them.
[users.ana]
roles = ["customs", "support", "compliance_retail"]

[users.bea]
roles = ["compliance_retail"]

[users.ines]
roles = ["clerk"]

[users.sam]
roles = ["support_tier9"]

[users.rita]
roles = ["compliance"]

[workflows.release]
starters = ["clerk"]
readers = ["compliance"]

[workflows.triage]
starters = ["clerk"]

[workflows.refund]
starters = ["clerk"]

[workflows.subscription]
starters = ["clerk"]
readers = ["support"]

[workflows.onboard]
starters = ["clerk"]
"#;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the runtime crate is in the workspace")
        .to_path_buf()
}

/// Node.js, Chromium and playwright-core, or a failure saying which is missing.
fn prerequisites() -> (String, PathBuf) {
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_string());
    match Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{node} --version` failed: {}; the inbox test needs Node.js",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "Node.js (`{node}`) was not found ({e}): the inbox test needs it (apt-get install -y nodejs npm), then {INSTALL}"
        ),
    }
    let chromium = PathBuf::from(
        std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string()),
    );
    assert!(
        chromium.exists(),
        "Chromium is not at {}: the inbox test drives it headless; install it with \
         `apt-get install -y chromium` (.ci/run does) or set CHROMIUM to its path",
        chromium.display()
    );
    let package = root().join("e2e/node_modules/playwright-core/package.json");
    assert!(
        package.exists(),
        "the npm package playwright-core is not installed in e2e/ ({} is missing): {INSTALL}",
        package.display()
    );
    (node, chromium)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// One HTTP/1.1 request with `Connection: close`: the status and the body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to flowrt serve");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if method != "GET" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("a malformed HTTP response: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        unchunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

fn unchunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `flowrt serve` in the background; killed if the test ends before stopping it.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, db: &Path, config: &Path, flow: &Path) -> Server {
        let port = free_port();
        let log = dir.join("serve.log");
        let child = Command::new(FLOWRT)
            .arg("--db")
            .arg(db)
            .arg("--config")
            .arg(config)
            .arg("serve")
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg(flow)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("serve.out")).expect("the server's stdout file"))
            .stderr(std::fs::File::create(&log).expect("the server's log file"))
            .spawn()
            .expect("flowrt serve starts");
        let mut server = Server { child, port, log };
        server.wait_healthy();
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_healthy(&mut self) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("flowrt serve exited at start ({status}):\n{}", self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let (status, body) = http(self.port, "GET", "/health", None, None);
                assert_eq!(status, 200, "GET /health: {body}");
                assert_eq!(json(&body)["status"], "ok", "GET /health: {body}");
                return;
            }
            assert!(
                Instant::now() < until,
                "flowrt serve did not listen on port {} within 30 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status (within 20 s).
    fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill -TERM runs");
        assert!(sent.success(), "kill -TERM {} failed", self.child.id());
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for flowrt serve") {
                return status;
            }
            assert!(
                Instant::now() < until,
                "flowrt serve did not stop within 20 s of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `flowrt token create USER`: the token, printed alone on stdout.
fn token(db: &Path, config: &Path, user: &str) -> String {
    let out = Command::new(FLOWRT)
        .arg("--db")
        .arg(db)
        .arg("--config")
        .arg(config)
        .args(["token", "create", user, "--name", "inbox-e2e"])
        .output()
        .expect("flowrt token create runs");
    assert!(
        out.status.success(),
        "flowrt token create {user} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !token.is_empty() && !token.contains(char::is_whitespace),
        "flowrt token create {user} printed {token:?}"
    );
    token
}

/// Starts `workflow` as the holder of `token`; the new run's id (it must wait at its gate).
fn start(port: u16, token: &str, workflow: &str, input: serde_json::Value) -> String {
    let body = serde_json::json!({ "workflow": workflow, "input": input }).to_string();
    let (status, answer) = http(port, "POST", "/api/runs", Some(token), Some(&body));
    assert_eq!(status, 201, "POST /api/runs ({workflow}): {answer}");
    let answer = json(&answer);
    assert_eq!(
        answer["status"], "waiting",
        "{workflow} should wait at its gate: {answer}"
    );
    answer["id"].as_str().expect("the run's id").to_string()
}

#[test]
fn the_inbox_in_a_browser() {
    let (node, chromium) = prerequisites();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("flow.db");
    let config = dir.path().join("flow.toml");
    let flow = dir.path().join("inbox.flow");
    std::fs::write(&config, CONFIG).expect("write flow.toml");
    std::fs::write(&flow, WORKFLOWS).expect("write inbox.flow");

    let mut server = Server::start(dir.path(), &db, &config, &flow);
    let port = server.port;
    let ana = token(&db, &config, "ana");
    let ines = token(&db, &config, "ines");
    let sam = token(&db, &config, "sam");
    let rita = token(&db, &config, "rita");
    let bea = token(&db, &config, "bea");

    let release = start(
        port,
        &ines,
        "release",
        serde_json::json!({ "o": {
            "id": "O-1001",
            "amount_eur": 48200,
            "lines": [
                { "item": "Pallet of ceramic tiles", "qty": 12 },
                { "item": "Crate of faucets", "qty": 3 },
            ],
            "note": "Fragile: keep upright",
        } }),
    );
    let triage = start(
        port,
        &ines,
        "triage",
        serde_json::json!({ "subject": "CSV export fails with error 500" }),
    );

    let refund = start(
        port,
        &ines,
        "refund",
        serde_json::json!({ "amount_eur": 12500 }),
    );

    let subscription = start(
        port,
        &ines,
        "subscription",
        serde_json::json!({ "customer": "C-42" }),
    );

    let onboard = start(
        port,
        &ines,
        "onboard",
        serde_json::json!({ "vendor": "Acme" }),
    );

    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inbox-e2e");
    let script = root().join("e2e/inbox.mjs");
    let out = Command::new(&node)
        .arg(&script)
        .current_dir(root())
        .env("BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("REVIEWER_TOKEN", &ana)
        .env("AGENT_TOKEN", &ana)
        .env("OUTSIDER_TOKEN", &sam)
        .env("READER_TOKEN", &rita)
        .env("STARTER_TOKEN", &ines)
        .env("START_WORKFLOW", "release")
        .env("APPROVAL_RUN", &release)
        .env("INPUT_RUN", &triage)
        .env("QUORUM_RUN", &refund)
        .env("SECOND_REVIEWER_TOKEN", &bea)
        .env("SIGNAL_RUN", &subscription)
        .env("PARALLEL_RUN", &onboard)
        // The release's context as written (alphabetically it would be alpha, mid, zeta), its
        // nested record as written, and the `Order` in it as declared.
        .env(
            "CONTEXT_ORDER",
            r#"{"": ["zeta", "alpha", "mid"], "mid": ["order", "checked"],
                "mid.order": ["id", "amount_eur", "lines", "note"]}"#,
        )
        .env("CHROMIUM", &chromium)
        .env("E2E_ARTIFACTS", &artifacts)
        .stdin(Stdio::null())
        .output()
        .expect("node runs e2e/inbox.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "e2e/inbox.mjs failed ({}):\n{stdout}\n{stderr}\n--- flowrt serve's log:\n{}",
        out.status,
        server.log()
    );
    println!("{stdout}");

    // What the browser did, as the API sees it.
    for run in [&release, &triage, &refund, &subscription] {
        let (status, body) = http(port, "GET", &format!("/api/runs/{run}"), Some(&ana), None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["status"], "completed", "run {run}: {body}");
    }
    // sam's refused start (403, from the browser) is in the server's refusal log.
    let refusals = Command::new(FLOWRT)
        .arg("--db")
        .arg(&db)
        .arg("--config")
        .arg(&config)
        .args(["audit", "refusals"])
        .output()
        .expect("flowrt audit refusals runs");
    let refusals = String::from_utf8_lossy(&refusals.stdout);
    assert!(
        refusals
            .lines()
            .any(|l| l.contains("403") && l.contains("sam") && l.contains("POST /api/runs")),
        "sam's refused start is not in the refusal log:\n{refusals}"
    );
    // sam's refused reads of the release run (403, from the browser) are in its trail.
    let (_, history) = http(
        port,
        "GET",
        &format!("/api/runs/{release}/history"),
        Some(&ines),
        None,
    );
    assert!(
        json(&history)
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["kind"] == "request_refused"
                && e["data"]["by"] == "sam"
                && e["data"]["status"] == 403
                && e["data"]["request"] == format!("GET /api/runs/{release}").as_str()),
        "sam's refused read is not in the run's trail: {history}"
    );
    let (_, decisions) = http(port, "GET", "/api/decisions", Some(&ana), None);
    let left = json(&decisions);
    assert!(
        left.as_array()
            .expect("a list")
            .iter()
            .all(|d| d["run"] != release.as_str() && d["run"] != triage.as_str()),
        "the decided gates are still open: {left}"
    );

    // Both approvals of the quorum are in the refund's outcome and in the runs list.
    let (_, body) = http(
        port,
        "GET",
        &format!("/api/runs/{refund}"),
        Some(&ines),
        None,
    );
    let refunded = json(&body);
    assert_eq!(refunded["outcome"], "Paid", "the refund's outcome: {body}");
    assert_eq!(
        refunded["output"]["Paid"]["by"], "ana, bea",
        "who paid it: {body}"
    );
    let (_, body) = http(port, "GET", "/api/runs?workflow=refund", Some(&ines), None);
    assert_eq!(json(&body)[0]["outcome"], "Paid", "the runs list: {body}");
    let (_, body) = http(
        port,
        "GET",
        &format!("/api/runs/{triage}"),
        Some(&ines),
        None,
    );
    assert!(
        json(&body)["outcome"].is_null(),
        "a String result has no variant: {body}"
    );
    // The tab icon is served (browsers ask for it on every page).
    let (status, icon) = http(port, "GET", "/favicon.ico", None, None);
    assert_eq!(status, 200, "GET /favicon.ico: {icon}");
    assert!(icon.starts_with("<svg"), "GET /favicon.ico: {icon}");

    let status = server.terminate();
    assert!(
        status.success(),
        "flowrt serve exited with {status} after SIGTERM:\n{}",
        server.log()
    );
}
