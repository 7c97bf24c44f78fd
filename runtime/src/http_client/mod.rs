//! The runtime's one HTTP client, for `http` and `llm` tools, webhooks and the OTLP exporter:
//! a [`Request`] in (method, URL, headers, body, deadline, TLS files), a [`Response`] out
//! (status, headers, a body of at most [`MAX_BODY`] bytes) or a typed [`SendError`]
//! (connection, TLS, timeout, too large, protocol).
//!
//! HTTP/1.1, one request per connection (`Connection: close`), `Content-Length`, chunked or
//! close-delimited bodies, a deadline on every read and write: the runtime's calls are
//! blocking and one at a time, so an async client would bring a second runtime model, and a
//! few hundred lines give exact control over the deadline and the classification. `https://`
//! goes through rustls ([`tls`]): the system's root certificates plus a configured CA file,
//! and a client certificate for servers that ask for one. Redirects are not followed (the
//! caller sees the 3xx). Nothing here logs or keeps a header value: secrets are the caller's
//! to redact.

mod tls;
mod url;
mod wire;

pub use tls::{TlsFileError, TlsFiles, check as check_tls_files};
pub use url::HttpUrl;

use rustls::{ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The most of a response body read.
pub const MAX_BODY: usize = 16 << 20;
/// The most of a response's status line and headers read.
pub const MAX_HEAD: usize = 64 << 10;

/// One request.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Upper case: `GET`, `POST`, …
    pub method: &'a str,
    pub url: &'a HttpUrl,
    /// Sent as given, after `Host`; `Content-Length` and `Connection: close` are added.
    pub headers: &'a [(String, String)],
    pub body: Option<&'a [u8]>,
    /// Everything — resolving, connecting, the TLS handshake, sending, reading — ends by then.
    pub deadline: Instant,
    /// For `https://`: the CA file and client certificate (ignored for `http://`).
    pub tls: &'a TlsFiles,
    /// `false`: stop after the status line and headers (the body is left unread, empty).
    pub read_body: bool,
}

/// A response: its status, headers and body.
#[derive(Clone, Debug)]
pub struct Response {
    /// `HTTP/1.1`.
    pub version: String,
    pub status: u16,
    /// The status line's text after the code (`Service Unavailable`).
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// `HTTP/1.1 503 Service Unavailable`.
    pub fn status_line(&self) -> String {
        format!("{} {} {}", self.version, self.status, self.reason)
            .trim_end()
            .to_string()
    }
}

/// Why no response was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Not resolved, refused, reset, or closed before a response.
    Connection(String),
    /// The TLS handshake failed or a TLS file cannot be used: what was wrong and what to do.
    /// Trying again does not help.
    Tls(String),
    /// The deadline passed (the text says during what).
    Timeout(String),
    /// The headers or the body are larger than the client reads.
    TooLarge(String),
    /// The server answered something that is not an HTTP response, or cut it short.
    Protocol(String),
}

impl SendError {
    /// The sentence, whatever the kind.
    pub fn message(&self) -> &str {
        match self {
            SendError::Connection(why)
            | SendError::Tls(why)
            | SendError::Timeout(why)
            | SendError::TooLarge(why)
            | SendError::Protocol(why) => why,
        }
    }
}

/// `2s`, `300ms`.
pub(crate) fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Sends one request and reads the response, all before its deadline. Dropping the
/// connection on any error aborts the request.
pub fn send(request: &Request<'_>) -> Result<Response, SendError> {
    let url = request.url;
    let deadline = request.deadline;
    let stream = connect(url, deadline)?;
    let mut conn = if url.https {
        Conn::Tls(Box::new(handshake(stream, request)?))
    } else {
        Conn::Plain(stream)
    };
    let bytes = request_bytes(request);
    let left = remaining(deadline).ok_or_else(|| SendError::Timeout("while sending".into()))?;
    conn.socket()
        .set_write_timeout(Some(left))
        .map_err(|e| io_error(e, "while sending", request))?;
    conn.write_all(&bytes)
        .and_then(|()| conn.flush())
        .map_err(|e| io_error(e, "while sending the request", request))?;
    wire::read_response(conn, request)
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// A TCP connection to the first of the host's addresses that answers.
fn connect(url: &HttpUrl, deadline: Instant) -> Result<TcpStream, SendError> {
    let left = remaining(deadline).ok_or_else(|| SendError::Timeout("before connecting".into()))?;
    let addrs = url::resolve(url, left).map_err(SendError::Connection)?;
    let mut last_error = SendError::Connection(format!("cannot resolve {}: no address", url.host));
    for addr in addrs {
        let left =
            remaining(deadline).ok_or_else(|| SendError::Timeout("while connecting".into()))?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                last_error = SendError::Timeout(format!("while connecting to {addr}"));
            }
            Err(e) => last_error = SendError::Connection(format!("cannot connect to {addr}: {e}")),
        }
    }
    Err(last_error)
}

/// The TLS session over `stream`, its handshake done (the server's certificate checked for
/// the URL's host) before the deadline.
fn handshake(
    mut stream: TcpStream,
    request: &Request<'_>,
) -> Result<StreamOwned<ClientConnection, TcpStream>, SendError> {
    let url = request.url;
    let config = tls::client_config(request.tls).map_err(SendError::Tls)?;
    let name = ServerName::try_from(url.host.clone()).map_err(|e| {
        SendError::Tls(format!(
            "`{}` is not a host name TLS can check a certificate against ({e})",
            url.host
        ))
    })?;
    let mut session = ClientConnection::new(config, name)
        .map_err(|e| SendError::Tls(format!("cannot start TLS with {}: {e}", url.host)))?;
    while session.is_handshaking() {
        let left = remaining(request.deadline)
            .ok_or_else(|| SendError::Timeout("during the TLS handshake".into()))?;
        let during = "during the TLS handshake";
        stream
            .set_read_timeout(Some(left))
            .and_then(|()| stream.set_write_timeout(Some(left)))
            .map_err(|e| io_error(e, during, request))?;
        session
            .complete_io(&mut stream)
            .map_err(|e| io_error(e, during, request))?;
    }
    Ok(StreamOwned::new(session, stream))
}

/// The request's bytes: the request line, `Host`, the headers, `Content-Length`,
/// `Connection: close`, the body.
fn request_bytes(request: &Request<'_>) -> Vec<u8> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        request.method,
        request.url.path,
        request.url.host_header()
    );
    for (name, value) in request.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    if let Some(body) = request.body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(request.body.unwrap_or_default());
    bytes
}

/// An I/O failure `during` something: a time-out, a TLS failure (rustls reports those as
/// `InvalidData` with its error inside: a bad certificate, or a server's alert — which, for a
/// refused client certificate under TLS 1.3, arrives only with the response), or a
/// connection error.
fn io_error(e: std::io::Error, during: &str, request: &Request<'_>) -> SendError {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return SendError::Tls(format!(
            "the TLS handshake with {} failed: {}",
            request.url.host_header(),
            tls::describe(tls, &request.url.host, request.tls)
        ));
    }
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => SendError::Timeout(during.to_string()),
        _ => SendError::Connection(format!("connection error {during}: {e}")),
    }
}

/// A connection, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    /// The socket underneath, for its time-outs.
    fn socket(&self) -> &TcpStream {
        match self {
            Conn::Plain(stream) => stream,
            Conn::Tls(stream) => &stream.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(stream) => stream.read(buf),
            Conn::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(stream) => stream.write(buf),
            Conn::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(stream) => stream.flush(),
            Conn::Tls(stream) => stream.flush(),
        }
    }
}

#[cfg(test)]
mod tests;
