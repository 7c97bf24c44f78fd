//! `documentSymbol` answers written straight to their JSON text: an analysis and its file in,
//! the outline's text out, serialized once per analysis (one version of the files) and
//! spliced into the response on its way to stdout.
//!
//! Why not the protocol library's way: `tower-lsp-server` turns every answer into a
//! `serde_json::Value` and then into text. For the outline of a 5,000-line file (2,800
//! symbols, 350 KB) that was most of the answer's time (issue 15). So the handler returns
//! a placeholder, one symbol whose name is a marker with a token, and [`write_out`], which
//! sits between the library and stdout, replaces the placeholder response by the stored
//! text. The handler runs where the library runs it, so the answer still follows every
//! change sent before the request.

use flow_compiler::analysis::Analysis;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Starts the name of a placeholder symbol. No Flow name holds a NUL; a test's name is a
/// string and could, so a per-process nonce follows: a document cannot name a placeholder
/// it cannot know.
const MARKER: &str = "\u{0}flow-lsp outline ";
/// `MARKER` as serde_json writes it inside a JSON string.
const MARKER_JSON: &[u8] = b"\\u0000flow-lsp outline ";

/// An analysis (held weakly, so an old one is freed when replaced) and its outline's text.
type CachedOutline = (Weak<Mutex<Analysis>>, Arc<str>);

#[derive(Default)]
pub struct Outlines {
    nonce: u64,
    next: AtomicU64,
    /// The outline text of the last analysis asked, per path: reused while that analysis is
    /// the document's.
    cache: Mutex<HashMap<String, CachedOutline>>,
    /// Answers on their way out, by token.
    pending: Mutex<HashMap<u64, Arc<str>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Outlines {
    pub fn new() -> Outlines {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        Outlines {
            nonce,
            ..Outlines::default()
        }
    }

    /// The outline text of `path` in `analysis`, from the cache or from `build`.
    pub fn text(
        &self,
        path: &str,
        analysis: &Arc<Mutex<Analysis>>,
        build: impl FnOnce() -> Option<String>,
    ) -> Option<Arc<str>> {
        if let Some((cached, text)) = lock(&self.cache).get(path)
            && cached.upgrade().is_some_and(|a| Arc::ptr_eq(&a, analysis))
        {
            return Some(text.clone());
        }
        let text: Arc<str> = build()?.into();
        lock(&self.cache).insert(path.to_string(), (Arc::downgrade(analysis), text.clone()));
        Some(text)
    }

    /// Forgets the cached outline of a closed document.
    pub fn forget(&self, path: &str) {
        lock(&self.cache).remove(path);
    }

    /// Stores `text` for the response and returns the name of the placeholder symbol.
    pub fn placeholder(&self, text: Arc<str>) -> String {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(token, text);
        format!("{MARKER}{} {token}", self.nonce)
    }

    /// The response to write instead of `body`, when `body` is a placeholder answer.
    fn substitute(&self, body: &[u8]) -> Option<Vec<u8>> {
        if !contains(body, MARKER_JSON) {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let [symbol] = value.get("result")?.as_array()?.as_slice() else {
            return None;
        };
        let rest = symbol.get("name")?.as_str()?.strip_prefix(MARKER)?;
        let (nonce, token) = rest.split_once(' ')?;
        if nonce.parse::<u64>().ok()? != self.nonce {
            return None;
        }
        let text = lock(&self.pending).remove(&token.parse::<u64>().ok()?)?;
        let id = serde_json::to_string(value.get("id")?).ok()?;
        let mut out = Vec::with_capacity(text.len() + id.len() + 40);
        out.extend_from_slice(br#"{"jsonrpc":"2.0","result":"#);
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(br#","id":"#);
        out.extend_from_slice(id.as_bytes());
        out.push(b'}');
        Some(out)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Copies the protocol library's framed messages from `input` to `output`, placeholder
/// answers replaced by their text; each message is one write of header and body.
pub async fn write_out(
    input: impl AsyncRead + Unpin,
    mut output: impl AsyncWrite + Unpin,
    outlines: Arc<Outlines>,
) {
    let mut reader = BufReader::new(input);
    while let Some(body) = crate::framing::read_message(&mut reader).await {
        let body = outlines.substitute(&body).unwrap_or(body);
        let mut message = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        message.extend_from_slice(&body);
        if output.write_all(&message).await.is_err() || output.flush().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(name: &str, id: &str) -> Vec<u8> {
        let name = serde_json::to_string(name).expect("a string serializes");
        format!(r#"{{"jsonrpc":"2.0","result":[{{"kind":12,"name":{name}}}],"id":{id}}}"#)
            .into_bytes()
    }

    #[test]
    fn a_placeholder_answer_becomes_the_stored_text_once() {
        let outlines = Outlines::new();
        let name = outlines.placeholder(Arc::from(r#"[{"name":"w"}]"#));
        let out = outlines
            .substitute(&response(&name, "7"))
            .expect("substituted");
        let value: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            value,
            serde_json::json!({"jsonrpc": "2.0", "id": 7, "result": [{"name": "w"}]})
        );
        // The text is handed out once; a repeat is left alone.
        assert!(outlines.substitute(&response(&name, "7")).is_none());
    }

    #[test]
    fn a_look_alike_with_another_nonce_or_an_ordinary_answer_is_left_alone() {
        let outlines = Outlines::new();
        let name = outlines.placeholder(Arc::from("[]"));
        let token = name.rsplit(' ').next().expect("a token");
        let forged = format!("{MARKER}{} {token}", outlines.nonce.wrapping_add(1));
        assert!(outlines.substitute(&response(&forged, "1")).is_none());
        assert!(outlines.substitute(&response("release", "1")).is_none());
        assert!(
            outlines
                .substitute(br#"{"jsonrpc":"2.0","result":null,"id":1}"#)
                .is_none()
        );
    }
}
