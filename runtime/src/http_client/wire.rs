//! Reading an HTTP/1.1 response off a connection: the status line and headers (interim 1xx
//! responses skipped), then a `Content-Length`, chunked or close-delimited body, never more
//! than [`MAX_HEAD`] / [`MAX_BODY`] bytes and never past the request's deadline.

use super::{Conn, MAX_BODY, MAX_HEAD, Request, Response, SendError, io_error, remaining};
use crate::tools::truncate;
use std::io::{ErrorKind, Read};

/// The response to `request` on `conn`.
pub(super) fn read_response(conn: Conn, request: &Request<'_>) -> Result<Response, SendError> {
    let mut reader = Reader {
        conn,
        buf: Vec::new(),
        pos: 0,
        request,
    };
    // Skip interim responses (100 Continue and the like).
    let (version, status, reason, headers) = loop {
        let head = reader.head()?;
        if !(100..200).contains(&head.1) || head.1 == 101 {
            break head;
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let body = if !request.read_body || request.method == "HEAD" || status == 204 || status == 304 {
        Vec::new()
    } else if header("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        reader.chunked()?
    } else if let Some(length) = header("content-length").first() {
        let length: usize = length.trim().parse().map_err(|_| {
            SendError::Protocol(format!("the Content-Length `{length}` is not a number"))
        })?;
        if length > MAX_BODY {
            return Err(SendError::TooLarge(format!(
                "the response body is {length} bytes, more than the {MAX_BODY} flowrt reads"
            )));
        }
        reader.exactly(length)?
    } else {
        reader.until_closed()?
    };
    Ok(Response {
        version,
        status,
        reason,
        headers,
        body,
    })
}

/// A response's version, status code, reason phrase and headers.
type Head = (String, u16, String, Vec<(String, String)>);

/// Reads a response from the connection, never past the deadline.
struct Reader<'r> {
    conn: Conn,
    buf: Vec<u8>,
    pos: usize,
    request: &'r Request<'r>,
}

impl Reader<'_> {
    /// Reads more into the buffer; `false` at the end of the stream.
    fn fill(&mut self) -> Result<bool, SendError> {
        let waiting = "waiting for the response";
        let left =
            remaining(self.request.deadline).ok_or_else(|| SendError::Timeout(waiting.into()))?;
        self.conn
            .socket()
            .set_read_timeout(Some(left))
            .map_err(|e| SendError::Connection(format!("connection error: {e}")))?;
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 8192];
        loop {
            match self.conn.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A TLS server that closes without close_notify: the end, as over plain TCP
                // (a body cut short is still caught by its Content-Length or chunking).
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(SendError::Timeout(waiting.into()));
                }
                Err(e) => return Err(io_error(e, "while reading the response", self.request)),
            }
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// The version, status code, reason and headers of the next response head.
    fn head(&mut self) -> Result<Head, SendError> {
        let end = loop {
            if let Some(end) = self.pending().windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            if self.pending().len() > MAX_HEAD {
                return Err(SendError::TooLarge(format!(
                    "the response's headers are longer than {MAX_HEAD} bytes"
                )));
            }
            if !self.fill()? {
                if self.pending().is_empty() {
                    return Err(SendError::Connection(
                        "the server closed the connection without a response".into(),
                    ));
                }
                return Err(SendError::Protocol(format!(
                    "the server closed the connection in the middle of the response's headers: `{}`",
                    truncate(&String::from_utf8_lossy(self.pending()), 200)
                )));
            }
        };
        let text = String::from_utf8_lossy(&self.pending()[..end]).into_owned();
        self.pos += end + 4;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status = parts.next().and_then(|c| c.parse::<u16>().ok());
        let reason = parts.next().unwrap_or_default().trim().to_string();
        let status = match status {
            Some(code) if version.starts_with("HTTP/") && (100..600).contains(&code) => code,
            _ => {
                return Err(SendError::Protocol(format!(
                    "not an HTTP response: `{}`",
                    truncate(status_line, 200)
                )));
            }
        };
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        Ok((version.to_string(), status, reason, headers))
    }

    fn exactly(&mut self, length: usize) -> Result<Vec<u8>, SendError> {
        while self.pending().len() < length {
            if !self.fill()? {
                return Err(SendError::Protocol(format!(
                    "the server closed the connection after {} of the {length} bytes it announced",
                    self.pending().len()
                )));
            }
        }
        let body = self.pending()[..length].to_vec();
        self.pos += length;
        Ok(body)
    }

    fn until_closed(&mut self) -> Result<Vec<u8>, SendError> {
        while self.fill()? {
            if self.pending().len() > MAX_BODY {
                return Err(SendError::TooLarge(format!(
                    "the response body is longer than the {MAX_BODY} bytes flowrt reads"
                )));
            }
        }
        let body = self.pending().to_vec();
        self.pos = self.buf.len();
        Ok(body)
    }

    fn line(&mut self) -> Result<String, SendError> {
        loop {
            if let Some(end) = self.pending().windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.pending()[..end]).into_owned();
                self.pos += end + 2;
                return Ok(line);
            }
            if self.pending().len() > MAX_HEAD {
                return Err(SendError::TooLarge("a chunk header is too long".into()));
            }
            if !self.fill()? {
                return Err(SendError::Protocol(
                    "the server closed the connection in the middle of a chunked body".into(),
                ));
            }
        }
    }

    fn chunked(&mut self) -> Result<Vec<u8>, SendError> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| {
                SendError::Protocol(format!("`{}` is not a chunk size", truncate(&line, 40)))
            })?;
            if size == 0 {
                // Trailers, up to an empty line; a server that closes here is done anyway.
                while let Ok(trailer) = self.line() {
                    if trailer.is_empty() {
                        break;
                    }
                }
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(SendError::TooLarge(format!(
                    "the response body is longer than the {MAX_BODY} bytes flowrt reads"
                )));
            }
            body.extend(self.exactly(size)?);
            let end = self.line()?;
            if !end.is_empty() {
                return Err(SendError::Protocol("a chunk does not end with CRLF".into()));
            }
        }
    }
}
