//! URLs the client can reach: `http://host[:port]/path` and `https://…` in, an [`HttpUrl`]
//! (scheme, host, port, path) or an error naming the setting out; and the host's addresses,
//! looked up within a deadline.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Duration;

/// A parsed `http://` or `https://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// Whether the scheme is `https`: the connection is TLS.
    pub https: bool,
    /// The host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// The port: 80 (http) or 443 (https) by default.
    pub port: u16,
    /// The path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses a webhook URL; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        HttpUrl::parse_as(url, "webhook")
    }

    /// Parses a URL; `what` names it in errors (`webhook`, `base_url`, `tool `x``).
    pub fn parse_as(url: &str, what: &str) -> Result<HttpUrl, String> {
        let lower = url.to_ascii_lowercase();
        let (https, rest) = if lower.starts_with("https://") {
            (true, &url["https://".len()..])
        } else if lower.starts_with("http://") {
            (false, &url["http://".len()..])
        } else {
            return Err(format!(
                "{what} `{url}` must be an http:// or https:// URL, like https://127.0.0.1:9000/hook"
            ));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{what} `{url}`: the path must not contain spaces or control characters"
            ));
        }
        if authority.contains('@') {
            return Err(format!(
                "{what} `{url}`: user names and passwords in the URL are not supported"
            ));
        }
        let (host, port) =
            split_authority(authority).map_err(|why| format!("{what} `{url}`: {why}"))?;
        if host.is_empty() {
            return Err(format!("{what} `{url}` has no host"));
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{what} `{url}`: the host must not contain spaces"));
        }
        let port = match port {
            None if https => 443,
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    return Err(format!(
                        "{what} `{url}`: the port must be a number from 1 to 65535, not `{p}`"
                    ));
                }
            },
        };
        Ok(HttpUrl {
            https,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The port the scheme implies when the URL names none.
    fn default_port(&self) -> u16 {
        if self.https { 443 } else { 80 }
    }

    /// The `Host` header: the host (IPv6 in brackets), and the port unless it is the default.
    pub(crate) fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// `host[:port]` or `[v6][:port]`: the host and the port's text, if any.
fn split_authority(authority: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(inner) = authority.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err("missing `]` after the IPv6 host".into());
        };
        return match after {
            "" => Ok((host, None)),
            p => match p.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("unexpected `{p}` after the host")),
            },
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// The addresses of the URL's host, looked up within `timeout` (a name lookup runs on its own
/// thread, so a slow resolver cannot hold us past the deadline).
pub(crate) fn resolve(url: &HttpUrl, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = url.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, url.port)]);
    }
    let (tx, rx) = mpsc::channel();
    let (host, port) = (url.host.clone(), url.port);
    std::thread::spawn(move || {
        let result = (host.as_str(), port)
            .to_socket_addrs()
            .map(|addrs| addrs.collect::<Vec<_>>());
        let _ = tx.send(result);
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(format!("cannot resolve {}: {e}", url.host)),
        Err(_) => Err(format!(
            "cannot resolve {} within {}",
            url.host,
            super::show(timeout)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:9000/hook").expect("valid");
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (false, "127.0.0.1", 9000, "/hook")
        );
        assert_eq!(u.host_header(), "127.0.0.1:9000");
        let u = HttpUrl::parse("HTTP://example.com").expect("valid");
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert_eq!(u.host_header(), "example.com");
        let u = HttpUrl::parse("http://[::1]:8080/a/b?c=d#frag").expect("valid");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 8080, "/a/b?c=d")
        );
        assert_eq!(u.host_header(), "[::1]:8080");
        let u = HttpUrl::parse("http://h?x=1").expect("valid");
        assert_eq!(u.path, "/?x=1");
        let u = HttpUrl::parse("https://crm.example.com/api").expect("valid");
        assert_eq!(
            (u.https, u.port, u.host_header().as_str()),
            (true, 443, "crm.example.com")
        );
        let u = HttpUrl::parse("HTTPS://h:8443").expect("valid");
        assert_eq!(
            (u.https, u.port, u.host_header().as_str()),
            (true, 8443, "h:8443")
        );
        // 80 is not the default port of https, nor 443 that of http.
        assert_eq!(
            HttpUrl::parse("https://h:80/")
                .expect("valid")
                .host_header(),
            "h:80"
        );
        assert_eq!(
            HttpUrl::parse("http://h:443/")
                .expect("valid")
                .host_header(),
            "h:443"
        );
        for (bad, says) in [
            ("ftp://h/", "must be an http:// or https:// URL"),
            ("127.0.0.1:9000/hook", "must be an http:// or https:// URL"),
            ("http:///x", "has no host"),
            ("https:///x", "has no host"),
            ("http://h:0/", "port"),
            ("http://h:x/", "port"),
            ("http://u:p@h/", "not supported"),
            ("http://[::1/", "missing `]`"),
            ("http://[::1]x/", "unexpected `x`"),
            ("http://h/a b", "spaces"),
        ] {
            let e = HttpUrl::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.starts_with("webhook `"), "{bad}: {e}");
        }
    }
}
