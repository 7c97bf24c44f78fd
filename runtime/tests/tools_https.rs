//! HTTPS through the real `flowrt` binary, against TLS servers on 127.0.0.1 that present
//! certificates of a CA made in the test (`common/pki.rs`): an `http` tool whose `flow.toml`
//! names the CA file; an expired certificate, one for another host, one from an authority
//! flowrt does not trust, a server that requires a client certificate — each a clear
//! `ToolError` that is not retried; mutual TLS with `client_cert` and `client_key`, for an
//! `http` tool and for the `[llm]` endpoint; a webhook
//! over HTTPS with the project's CA (and without it: recorded as failed); OTLP export to an
//! HTTPS collector; and TLS files that cannot be used, refused at their line of `flow.toml`.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/pki.rs"]
mod pki;

use common::{Out, Project, Store, for_each_store, of_kind};
use pki::{Ca, Pem, TlsServer};

const EXIT_COMPLETED: i32 = 0;
const EXIT_FAILED: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_WAITING: i32 = 10;

const REPORT: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n{\"ok\": true, \"anomalies\": []}\n";

const PROGRAM: &str = r#"type Report = { ok: Bool, anomalies: List<String> }

tool check(id: String) -> Report via http post "/customs/check"

workflow release(id: String) -> Report {
  retry 3 { check(id) }
}

tool read_report(id: String) -> Report via llm "flow-test-model" prompt "Report on ${id}"

workflow ask(id: String) -> Report {
  read_report(id)
}

workflow signoff(id: String) -> Bool {
  let d = await approval "release_signoff" { approvers: role("customs"), prompt: "Release ${id}?" }
  d.approved
}
"#;

/// A project with `PROGRAM`, the CA's certificate in `certs/ca.pem` and `flow.toml`.
fn project(store: &Store, ca: &Ca, config: &str) -> Project {
    let project = Project::new(store);
    project.write("prog.flow", PROGRAM);
    project.write("certs/ca.pem", &ca.pem());
    project.write("flow.toml", config);
    project
}

fn tool_config(port: u16, host: &str, extra: &str) -> String {
    format!(
        "[users.alice]\nroles = [\"customs\"]\n\n[tools.check]\nbase_url = \"https://{host}:{port}\"\n\
         headers = {{ X-Api-Key = \"${{env:FLOW_TEST_HTTPS_KEY}}\" }}\n{extra}"
    )
}

fn release(project: &Project) -> Out {
    project.flowrt(&[
        "run",
        "prog.flow",
        "--json",
        "--workflow",
        "release",
        "--input",
        r#"{"id": "S1"}"#,
    ])
}

#[test]
fn an_https_tool_trusts_the_ca_file_of_flow_toml() {
    for_each_store(|store| {
        let ca = Ca::new("Flow test CA");
        let server = TlsServer::start(&ca.server(&["127.0.0.1"], false), None, REPORT);
        let config = tool_config(server.port, "127.0.0.1", "ca_file = \"certs/ca.pem\"\n");
        let project = project(store, &ca, &config).with_env("FLOW_TEST_HTTPS_KEY", "k-7f3a9c2e51");
        let out = release(&project);
        out.expect_code(EXIT_COMPLETED);
        assert_eq!(
            out.json()["output"],
            serde_json::json!({ "ok": true, "anomalies": [] })
        );
        let seen = server.next().expect("the request arrived over TLS");
        assert!(
            seen.starts_with("POST /customs/check HTTP/1.1\r\n"),
            "{seen}"
        );
        assert!(seen.contains("X-Api-Key: k-7f3a9c2e51\r\n"), "{seen}");
        assert!(seen.contains("Idempotency-Key: "), "{seen}");
        assert!(seen.ends_with(r#"{"id":"S1"}"#), "{seen}");
        let run = out.json()["id"].as_str().unwrap().to_string();
        let history = project.history(&run);
        let done = of_kind(&history, "step_completed");
        assert_eq!(
            done[0]["data"]["request"]["url"],
            format!("https://127.0.0.1:{}/customs/check", server.port)
        );
        assert_eq!(done[0]["data"]["status"], 200);
        let text = project.flowrt(&["history", &run, "--json"]).stdout;
        assert!(
            !text.contains("k-7f3a9c2e51"),
            "the key is not recorded: {text}"
        );
    });
}

/// One failing case: the server's certificate, the TLS lines of `flow.toml`, and what the
/// error must say.
struct Refused {
    identity: Pem,
    client_ca: Option<String>,
    host: &'static str,
    extra: &'static str,
    says: &'static [&'static str],
}

#[test]
fn tls_failures_are_clear_tool_errors_that_are_not_retried() {
    let ca = Ca::new("Flow test CA");
    let clients = Ca::new("Flow clients CA");
    let with_ca = "ca_file = \"certs/ca.pem\"\n";
    let cases = [
        Refused {
            identity: ca.server(&["127.0.0.1"], true),
            client_ca: None,
            host: "127.0.0.1",
            extra: with_ca,
            says: &["the server's certificate has expired"],
        },
        Refused {
            identity: ca.server(&["crm.example.com"], false),
            client_ca: None,
            host: "127.0.0.1",
            extra: with_ca,
            says: &[
                "is not valid for the host name `127.0.0.1`",
                "crm.example.com",
            ],
        },
        Refused {
            identity: ca.server(&["127.0.0.1"], false),
            client_ca: None,
            host: "127.0.0.1",
            extra: "",
            says: &[
                "not signed by a certificate authority flowrt trusts",
                "no ca_file is configured",
            ],
        },
        Refused {
            identity: ca.server(&["localhost"], false),
            client_ca: Some(clients.pem()),
            host: "localhost",
            extra: with_ca,
            says: &[
                "the server refused the TLS handshake",
                "set client_cert and client_key",
            ],
        },
    ];
    for_each_store(|store| {
        for case in &cases {
            let server = TlsServer::start(&case.identity, case.client_ca.as_deref(), REPORT);
            let config = tool_config(server.port, case.host, case.extra);
            let project = project(store, &ca, &config).with_env("FLOW_TEST_HTTPS_KEY", "k-1");
            let out = release(&project);
            out.expect_code(EXIT_FAILED);
            let message = out.json()["error"].as_str().unwrap().to_string();
            let request = format!(
                "ToolError: tool `check`: POST https://{host}:{port}/customs/check failed: the TLS handshake with {host}:{port} failed: ",
                host = case.host,
                port = server.port
            );
            assert!(message.starts_with(&request), "{message}");
            for part in case.says {
                assert!(message.contains(part), "{part}: {message}");
            }
            assert!(message.contains("not retryable"), "{message}");
            assert!(server.next().is_err(), "no request got through");
            // `retry 3` does not try again: one attempt, one failure.
            let run = out.json()["id"].as_str().unwrap().to_string();
            let failed = of_kind(&project.history(&run), "step_failed")
                .into_iter()
                .cloned()
                .collect::<Vec<_>>();
            assert_eq!(failed.len(), 1, "{failed:?}");
            assert_eq!(failed[0]["data"]["retryable"], false);
        }
    });
}

#[test]
fn an_llm_endpoint_over_https_with_mutual_tls() {
    for_each_store(|store| {
        let ca = Ca::new("Flow test CA");
        let clients = Ca::new("Flow clients CA");
        let completion = serde_json::json!({
            "choices": [{ "index": 0, "message": { "role": "assistant",
                "content": "{\"ok\": false, \"anomalies\": [\"seal\"]}" } }],
        })
        .to_string();
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{completion}",
            completion.len()
        );
        let server = TlsServer::start(
            &ca.server(&["localhost"], false),
            Some(&clients.pem()),
            &answer,
        );
        let config = format!(
            "[llm]\nbase_url = \"https://localhost:{}/v1\"\napi_key = \"${{env:FLOW_TEST_LLM_KEY}}\"\n\
             ca_file = \"certs/ca.pem\"\nclient_cert = \"certs/flowrt.pem\"\nclient_key = \"certs/flowrt.key\"\n",
            server.port
        );
        let project = project(store, &ca, &config).with_env("FLOW_TEST_LLM_KEY", "sk-9c1e77b04d");
        let identity = clients.client("flowrt");
        project.write("certs/flowrt.pem", &identity.cert);
        project.write("certs/flowrt.key", &identity.key);
        let out = project.flowrt(&[
            "run",
            "prog.flow",
            "--json",
            "--workflow",
            "ask",
            "--input",
            r#"{"id": "S3"}"#,
        ]);
        out.expect_code(EXIT_COMPLETED);
        assert_eq!(
            out.json()["output"],
            serde_json::json!({ "ok": false, "anomalies": ["seal"] })
        );
        let seen = server
            .next()
            .expect("the completion request arrived over TLS");
        assert!(
            seen.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
            "{seen}"
        );
        assert!(
            seen.contains("Authorization: Bearer sk-9c1e77b04d\r\n"),
            "{seen}"
        );
        assert!(seen.contains("Report on S3"), "{seen}");
    });
}

#[test]
fn mutual_tls_presents_the_configured_client_certificate() {
    for_each_store(|store| {
        let ca = Ca::new("Flow test CA");
        let clients = Ca::new("Flow clients CA");
        let server = TlsServer::start(
            &ca.server(&["127.0.0.1"], false),
            Some(&clients.pem()),
            REPORT,
        );
        let config = tool_config(
            server.port,
            "127.0.0.1",
            "ca_file = \"certs/ca.pem\"\nclient_cert = \"certs/flowrt.pem\"\nclient_key = \"certs/flowrt.key\"\n",
        );
        let project = project(store, &ca, &config).with_env("FLOW_TEST_HTTPS_KEY", "k-1");
        let identity = clients.client("flowrt");
        project.write("certs/flowrt.pem", &identity.cert);
        project.write("certs/flowrt.key", &identity.key);
        release(&project).expect_code(EXIT_COMPLETED);
        assert!(
            server
                .next()
                .expect("a request")
                .starts_with("POST /customs/check")
        );
    });
}

#[test]
fn a_webhook_over_https_uses_the_ca_file_of_its_entry() {
    for_each_store(|store| {
        let ca = Ca::new("Flow test CA");
        let hook = TlsServer::start(
            &ca.server(&["127.0.0.1"], false),
            None,
            "HTTP/1.1 204 No Content\r\n\r\n",
        );
        let config = format!(
            "[users.alice]\nroles = [\"customs\"]\n\n[[notify]]\nwebhook = \"https://127.0.0.1:{}/hook\"\nca_file = \"certs/ca.pem\"\n",
            hook.port
        );
        let project = project(store, &ca, &config);
        let signoff = |project: &Project| {
            let out = project.flowrt(&[
                "run",
                "prog.flow",
                "--json",
                "--workflow",
                "signoff",
                "--input",
                r#"{"id": "S7"}"#,
            ]);
            out.expect_code(EXIT_WAITING);
            out.json()["id"].as_str().unwrap().to_string()
        };
        let run = signoff(&project);
        let seen = hook
            .next()
            .expect("the webhook received the message over TLS");
        assert!(seen.starts_with("POST /hook HTTP/1.1\r\n"), "{seen}");
        let body = &seen[seen.find("\r\n\r\n").unwrap() + 4..];
        let message: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(message["run"], run.as_str());
        assert_eq!(message["prompt"], "Release S7?");
        assert_eq!(of_kind(&project.history(&run), "notified").len(), 1);

        // Without the CA file the delivery fails, is retried and recorded with the reason.
        project.write(
            "flow.toml",
            &format!(
                "[users.alice]\nroles = [\"customs\"]\n\n[[notify]]\nwebhook = \"https://127.0.0.1:{}/hook\"\n",
                hook.port
            ),
        );
        let run = signoff(&project);
        let history = project.history(&run);
        let failed = of_kind(&history, "notify_failed");
        assert_eq!(failed.len(), 1, "{history:?}");
        let error = failed[0]["data"]["error"].as_str().unwrap();
        assert!(
            error.contains("not signed by a certificate authority flowrt trusts"),
            "{error}"
        );
        assert!(hook.next().is_err());
    });
}

#[test]
fn spans_are_exported_to_an_https_collector() {
    let ca = Ca::new("Flow test CA");
    let collector = TlsServer::start(
        &ca.server(&["127.0.0.1"], false),
        None,
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
    );
    let project = project(&Store::Sqlite, &ca, "");
    let project = project
        .with_env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("https://127.0.0.1:{}", collector.port),
        )
        .with_env("OTEL_EXPORTER_OTLP_CERTIFICATE", "certs/ca.pem");
    project
        .flowrt(&[
            "run",
            "prog.flow",
            "--workflow",
            "signoff",
            "--input",
            r#"{"id": "S1"}"#,
        ])
        .expect_code(EXIT_WAITING);
    let seen = collector.next().expect("the spans arrived over TLS");
    assert!(seen.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{seen}");
    assert!(
        seen.to_ascii_lowercase()
            .contains("content-type: application/x-protobuf"),
        "{seen}"
    );

    // A CA file that is not there stops the command before it does anything.
    let out = project
        .command(&["runs"])
        .env("OTEL_EXPORTER_OTLP_CERTIFICATE", "certs/nope.pem")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_USAGE));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("OTEL_EXPORTER_OTLP_CERTIFICATE: the file `certs/nope.pem`: cannot read it"),
        "{stderr}"
    );
}

#[test]
fn unusable_tls_files_stop_flowrt_at_their_line() {
    for_each_store(|store| {
        let ca = Ca::new("Flow test CA");
        let config = tool_config(9, "127.0.0.1", "ca_file = \"certs/missing.pem\"\n");
        let project = project(store, &ca, &config);
        // `config check` finds a problem (exit 1); a command that acts on runs refuses to
        // start (exit 2).
        for (args, code) in [
            (vec!["config", "check"], EXIT_FAILED),
            (
                vec![
                    "run",
                    "prog.flow",
                    "--workflow",
                    "release",
                    "--input",
                    r#"{"id": "S1"}"#,
                ],
                EXIT_USAGE,
            ),
        ] {
            let out = project.flowrt(&args);
            out.expect_code(code);
            out.expect_stderr("flow.toml:7:11: [tools.check] ca_file `")
                .expect_stderr("missing.pem`: cannot read it");
        }
        let identity = ca.client("flowrt");
        project.write("certs/flowrt.pem", &identity.cert);
        project.write(
            "flow.toml",
            &tool_config(9, "127.0.0.1", "client_cert = \"certs/flowrt.pem\"\n"),
        );
        project
            .flowrt(&["config", "check"])
            .expect_code(EXIT_FAILED)
            .expect_stderr("flow.toml:7:15: [tools.check] client_cert `")
            .expect_stderr("needs its private key too (client_key)");
        project.write(
            "certs/flowrt.key",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        );
        project.write(
            "flow.toml",
            &tool_config(
                9,
                "127.0.0.1",
                "client_cert = \"certs/flowrt.pem\"\nclient_key = \"certs/flowrt.key\"\n",
            ),
        );
        project
            .flowrt(&["config", "check"])
            .expect_code(EXIT_FAILED)
            .expect_stderr("flow.toml:8:14: [tools.check] client_key `");
    });
}
