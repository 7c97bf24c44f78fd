//! The client against real servers on 127.0.0.1: HTTPS with a CA made in the test (valid,
//! expired, wrong host, untrusted, mutual TLS), a server that never finishes the handshake,
//! and the checks of the TLS files.

use super::*;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

#[path = "../../tests/common/pki.rs"]
mod pki;

use pki::{Ca, TlsServer, write};

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";

fn get(port: u16, host: &str, tls: &TlsFiles) -> Result<Response, SendError> {
    let url = HttpUrl::parse_as(&format!("https://{host}:{port}/x?y=1"), "test").expect("url");
    send(&Request {
        method: "POST",
        url: &url,
        headers: &[("X-Test".to_string(), "1".to_string())],
        body: Some(b"{}"),
        deadline: Instant::now() + Duration::from_secs(10),
        tls,
        read_body: true,
    })
}

fn ca_file(dir: &Path, ca: &Ca) -> TlsFiles {
    TlsFiles {
        ca_file: Some(write(dir, "ca.pem", &ca.pem())),
        ..TlsFiles::NONE
    }
}

fn tls_error(sent: Result<Response, SendError>) -> String {
    match sent {
        Err(SendError::Tls(why)) => why,
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[test]
fn a_certificate_from_the_configured_ca_is_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Flow test CA");
    let server = TlsServer::start(&ca.server(&["127.0.0.1", "localhost"], false), None, OK);
    let files = ca_file(dir.path(), &ca);
    for host in ["127.0.0.1", "localhost"] {
        let response = get(server.port, host, &files).expect("a response");
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"{\"ok\":true}"[..])
        );
        let seen = server.next().expect("a request");
        assert!(seen.starts_with("POST /x?y=1 HTTP/1.1\r\n"), "{seen}");
        assert!(
            seen.contains(&format!("Host: {host}:{}\r\n", server.port)),
            "{seen}"
        );
        assert!(
            seen.contains("X-Test: 1\r\n") && seen.ends_with("{}"),
            "{seen}"
        );
    }
}

#[test]
fn without_the_ca_file_the_certificate_is_untrusted() {
    let ca = Ca::new("Flow test CA");
    let server = TlsServer::start(&ca.server(&["127.0.0.1"], false), None, OK);
    let why = tls_error(get(server.port, "127.0.0.1", &TlsFiles::NONE));
    assert!(
        why.starts_with(&format!(
            "the TLS handshake with 127.0.0.1:{} failed",
            server.port
        )) && why.contains("not signed by a certificate authority flowrt trusts")
            && why.contains("no ca_file is configured")
            && why.contains("set ca_file"),
        "{why}"
    );
    // Another CA's file does not help, and the message names it.
    let dir = tempfile::tempdir().expect("tempdir");
    let other = ca_file(dir.path(), &Ca::new("Another CA"));
    let why = tls_error(get(server.port, "127.0.0.1", &other));
    assert!(
        why.contains("the system's roots and ca_file `") && why.contains("ca.pem`"),
        "{why}"
    );
}

#[test]
fn an_expired_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Flow test CA");
    let server = TlsServer::start(&ca.server(&["127.0.0.1"], true), None, OK);
    let why = tls_error(get(server.port, "127.0.0.1", &ca_file(dir.path(), &ca)));
    assert!(
        why.contains("the server's certificate has expired: it was valid until 2020-12-31T00:00:00.000Z, and it is 20"),
        "{why}"
    );
}

#[test]
fn a_certificate_for_another_host_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Flow test CA");
    let server = TlsServer::start(&ca.server(&["crm.example.com"], false), None, OK);
    let why = tls_error(get(server.port, "127.0.0.1", &ca_file(dir.path(), &ca)));
    assert!(
        why.contains("is not valid for the host name `127.0.0.1`")
            && why.contains("crm.example.com"),
        "{why}"
    );
}

#[test]
fn mutual_tls_presents_the_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Flow test CA");
    let clients = Ca::new("Flow clients CA");
    let server = TlsServer::start(&ca.server(&["127.0.0.1"], false), Some(&clients.pem()), OK);

    // Without a client certificate the server ends the handshake.
    let files = ca_file(dir.path(), &ca);
    let why = tls_error(get(server.port, "127.0.0.1", &files));
    assert!(
        why.contains("the server refused the TLS handshake")
            && why.contains("set client_cert and client_key"),
        "{why}"
    );
    assert!(server.next().is_err());

    // With one from the CA the server trusts, the request goes through.
    let client = clients.client("flowrt");
    let files = TlsFiles {
        client_cert: Some(write(dir.path(), "client.pem", &client.cert)),
        client_key: Some(write(dir.path(), "client.key", &client.key)),
        ..files
    };
    let response = get(server.port, "127.0.0.1", &files).expect("a response");
    assert_eq!(response.status, 200);
    assert!(server.next().expect("a request").starts_with("POST /x"));

    // One from another CA is refused, and the message says the certificate may be the cause.
    let stranger = ca.client("flowrt");
    let files = TlsFiles {
        client_cert: Some(write(dir.path(), "stranger.pem", &stranger.cert)),
        client_key: Some(write(dir.path(), "stranger.key", &stranger.key)),
        ..files
    };
    let why = tls_error(get(server.port, "127.0.0.1", &files));
    assert!(
        why.contains("refused the TLS handshake") && why.contains("client_cert"),
        "{why}"
    );
}

#[test]
fn a_renewed_ca_file_is_read_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = Ca::new("Old CA");
    let new = Ca::new("New CA");
    let server = TlsServer::start(&new.server(&["127.0.0.1"], false), None, OK);
    let files = ca_file(dir.path(), &old);
    tls_error(get(server.port, "127.0.0.1", &files));
    // Same path, new content (and a later modification time).
    let path = files.ca_file.clone().expect("path");
    let later = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime")
        + Duration::from_secs(5);
    std::fs::write(&path, new.pem()).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(later))
        .expect("set mtime");
    assert_eq!(
        get(server.port, "127.0.0.1", &files)
            .expect("a response")
            .status,
        200
    );
}

#[test]
fn a_server_that_never_finishes_the_handshake_is_a_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let url = HttpUrl::parse_as(&format!("https://127.0.0.1:{port}/"), "test").expect("url");
    let sent = send(&Request {
        method: "GET",
        url: &url,
        headers: &[],
        body: None,
        deadline: Instant::now() + Duration::from_millis(200),
        tls: &TlsFiles::NONE,
        read_body: true,
    });
    assert_eq!(
        sent.expect_err("times out"),
        SendError::Timeout("during the TLS handshake".into())
    );
    drop(listener);
}

#[test]
fn https_to_a_plain_http_server_is_a_tls_error() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let why = tls_error(get(port, "127.0.0.1", &TlsFiles::NONE));
    assert!(why.contains("TLS error"), "{why}");
}

#[test]
fn tls_files_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Flow test CA");
    let client = ca.client("flowrt");
    let other = ca.client("other");
    let cert = write(dir.path(), "client.pem", &client.cert);
    let key = write(dir.path(), "client.key", &client.key);
    let other_key = write(dir.path(), "other.key", &other.key);
    let garbage = write(
        dir.path(),
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\n!!!\n",
    );
    let missing = dir.path().join("missing.pem");
    let files =
        |ca_file: Option<&PathBuf>, cert: Option<&PathBuf>, key: Option<&PathBuf>| TlsFiles {
            ca_file: ca_file.cloned(),
            client_cert: cert.cloned(),
            client_key: key.cloned(),
        };
    assert_eq!(check_tls_files(&TlsFiles::NONE), Ok(()));
    let ca_pem = write(dir.path(), "ca.pem", &ca.pem());
    assert_eq!(
        check_tls_files(&files(Some(&ca_pem), Some(&cert), Some(&key))),
        Ok(())
    );
    for (files, key_name, says) in [
        (
            files(Some(&missing), None, None),
            "ca_file",
            "cannot read it",
        ),
        (
            files(Some(&garbage), None, None),
            "ca_file",
            "is not valid PEM",
        ),
        (
            files(Some(&key), None, None),
            "ca_file",
            "holds no certificate",
        ),
        (
            files(Some(dir.path().to_path_buf()).as_ref(), None, None),
            "ca_file",
            "directory",
        ),
        (
            files(None, Some(&cert), None),
            "client_cert",
            "needs its private key too (client_key)",
        ),
        (
            files(None, None, Some(&key)),
            "client_key",
            "needs its certificate too (client_cert)",
        ),
        (
            files(None, Some(&key), Some(&key)),
            "client_cert",
            "holds no certificate",
        ),
        (
            files(None, Some(&cert), Some(&cert)),
            "client_key",
            "holds no private key",
        ),
        (
            files(None, Some(&cert), Some(&other_key)),
            "client_key",
            "does not belong to the certificate",
        ),
    ] {
        let e = check_tls_files(&files).expect_err(says);
        assert_eq!(e.key, key_name, "{says}: {}", e.message);
        assert!(
            e.message.starts_with(&format!("{key_name} `")),
            "{}",
            e.message
        );
        assert!(e.message.contains(says), "{says}: {}", e.message);
    }
}
