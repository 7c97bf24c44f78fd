//! A guard in front of the protocol library's reader.
//!
//! `tower-lsp-server` 0.23 stops reading its input for good after the first message it
//! cannot decode (its framed reader ends on the first error), which would end the server
//! on one malformed message. So the server reads stdin here first: each Content-Length
//! framed message whose body is a valid JSON-RPC request, notification or response goes
//! through unchanged; anything else (not UTF-8, not JSON, a batch, headers without a
//! length, an absurd length) is replaced by a `$/flow/malformedMessage` notification that
//! the server reports to the client's log.

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tower_lsp_server::jsonrpc::{Request, Response};

/// The method of the notification that stands for a message that could not be read.
pub const MALFORMED: &str = "$/flow/malformedMessage";

/// Larger bodies are skipped, not buffered.
const MAX_BODY: usize = 256 * 1024 * 1024;

/// Copies framed messages from `input` to `output` until `input` ends, replacing the ones
/// the protocol library could not decode.
pub async fn sanitize(input: impl AsyncRead + Unpin, mut output: impl AsyncWrite + Unpin) {
    let mut reader = BufReader::new(input);
    loop {
        let length = match read_headers(&mut reader).await {
            Headers::End => return,
            Headers::Length(length) => length,
            Headers::Missing => {
                if forward(&mut output, &malformed("a message without Content-Length")).await {
                    continue;
                }
                return;
            }
        };
        let body = if length > MAX_BODY {
            let skipped = tokio::io::copy(
                &mut (&mut reader).take(length as u64),
                &mut tokio::io::sink(),
            )
            .await;
            if skipped.map_or(true, |n| n < length as u64) {
                return;
            }
            malformed(&format!("a message of {length} bytes, more than the limit"))
        } else {
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).await.is_err() {
                return;
            }
            match check(&body) {
                Ok(()) => body,
                Err(reason) => malformed(&reason),
            }
        };
        if !forward(&mut output, &body).await {
            return;
        }
    }
}

/// One framed message's body from a well-formed stream (the protocol library's output);
/// `None` when it ends.
pub async fn read_message(reader: &mut (impl AsyncBufReadExt + Unpin)) -> Option<Vec<u8>> {
    let Headers::Length(length) = read_headers(reader).await else {
        return None;
    };
    let mut body = vec![0; length.min(MAX_BODY)];
    reader.read_exact(&mut body).await.ok()?;
    Some(body)
}

enum Headers {
    Length(usize),
    Missing,
    End,
}

/// Reads header lines up to the blank line that ends them.
async fn read_headers(reader: &mut (impl AsyncBufReadExt + Unpin)) -> Headers {
    let mut length = None;
    let mut any = false;
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return Headers::End,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim();
        if line.is_empty() {
            if !any {
                // Stray blank lines between messages.
                continue;
            }
            return match length {
                Some(length) => Headers::Length(length),
                None => Headers::Missing,
            };
        }
        any = true;
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
}

/// Whether the protocol library can decode `body`; why not otherwise.
fn check(body: &[u8]) -> Result<(), String> {
    let text =
        std::str::from_utf8(body).map_err(|e| format!("a message that is not UTF-8 ({e})"))?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("a message that is not JSON ({e})"))?;
    let decodes = serde_json::from_value::<Request>(value.clone()).is_ok()
        || serde_json::from_value::<Response>(value).is_ok();
    if decodes {
        Ok(())
    } else {
        Err("a JSON value that is not a JSON-RPC 2.0 message".to_string())
    }
}

fn malformed(reason: &str) -> Vec<u8> {
    serde_json::json!({"jsonrpc": "2.0", "method": MALFORMED, "params": {"reason": reason}})
        .to_string()
        .into_bytes()
}

async fn forward(output: &mut (impl AsyncWrite + Unpin), body: &[u8]) -> bool {
    let header = format!("Content-Length: {}\r\n\r\n", body.len());
    let written = async {
        output.write_all(header.as_bytes()).await?;
        output.write_all(body).await?;
        output.flush().await
    };
    written.await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(input: &[u8]) -> String {
        let mut out = Vec::new();
        sanitize(input, &mut out).await;
        String::from_utf8(out).expect("the output is UTF-8")
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        out.extend_from_slice(body);
        out
    }

    #[tokio::test(flavor = "current_thread")]
    async fn valid_messages_pass_and_bad_ones_are_replaced() {
        let valid = br#"{"jsonrpc":"2.0","id":1,"method":"shutdown"}"#;
        let mut input = framed(valid);
        input.extend(framed(b"{\"jsonrpc\": "));
        input.extend(framed(&[0xff, 0xfe]));
        input.extend(framed(b"[1,2]"));
        input.extend(b"X-Other: 1\r\n\r\n");
        input.extend(framed(valid));
        let out = run(&input).await;
        let bodies: Vec<&str> = out.split("Content-Length: ").skip(1).collect();
        assert_eq!(bodies.len(), 6, "{out}");
        assert!(bodies[0].ends_with(std::str::from_utf8(valid).expect("utf-8")));
        for (body, why) in bodies[1..5].iter().zip([
            "not JSON",
            "not UTF-8",
            "not a JSON-RPC",
            "without Content-Length",
        ]) {
            assert!(body.contains(MALFORMED) && body.contains(why), "{body}");
        }
        assert!(bodies[5].ends_with(std::str::from_utf8(valid).expect("utf-8")));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_truncated_message_ends_the_input() {
        let out = run(b"Content-Length: 50\r\n\r\n{\"jsonrpc\"").await;
        assert_eq!(out, "");
    }
}
