//! The outgoing side of webhooks (N1): one HTTP client that cannot be
//! turned into a way into the operator's network. A 10 s timeout per
//! attempt, no redirect followed, at most `MAX_RESPONSE_READ` bytes of an
//! answer read, and hosts that are, or resolve to, loopback, private,
//! link-local, shared or unspecified addresses refused unless the
//! operator allows them (`webhook_allow_private`). The check is made on
//! the addresses the connection will use (a resolver of ours), so a name
//! that resolves differently on a second lookup cannot slip past it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// One attempt's time limit (N1).
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an answer is read (and thrown away): 64 KiB.
pub const MAX_RESPONSE_READ: usize = 64 * 1024;

/// What one attempt got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered with this status.
    Status(u16),
    /// No answer: why, in a few words.
    Error(String),
}

/// Whether `ip` is somewhere a webhook must not reach by default.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                // 100.64.0.0/10, carrier-grade NAT; 0.0.0.0/8.
                || (o[0] == 100 && (o[1] & 0xC0) == 64)
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xFE00) == 0xFC00
                || (s[0] & 0xFFC0) == 0xFE80
        }
    }
}

/// The system resolver, with private answers dropped (when not allowed).
struct Guarded {
    allow_private: bool,
}

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let host = format!("{}:0", name.as_str());
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host)
                .await?
                .filter(|a| allow || !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    "the host resolves only to private addresses (webhook_allow_private is off)"
                        .into(),
                );
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    allow_private: bool,
}

impl WebhookClient {
    pub fn new(allow_private: bool) -> WebhookClient {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(Guarded { allow_private }))
            .user_agent(concat!("tollgate-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        WebhookClient {
            http,
            allow_private,
        }
    }

    /// Whether `url` may be used at all: http(s), a host, and not an
    /// address literal in a private range (names are checked when
    /// resolved).
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, &'static str> {
        let u = reqwest::Url::parse(url).map_err(|_| "not a URL")?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err("the URL must be http:// or https://");
        }
        let host = u.host_str().ok_or("the URL has no host")?;
        let ip: Option<IpAddr> = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok();
        if !self.allow_private && ip.is_some_and(is_private) {
            return Err("the URL points at a private address (webhook_allow_private is off)");
        }
        Ok(u)
    }

    /// POST one signed delivery; never longer than `TIMEOUT`.
    pub async fn post(
        &self,
        url: &str,
        headers: [(&'static str, String); 3],
        body: String,
    ) -> Outcome {
        let u = match self.check_url(url) {
            Ok(u) => u,
            Err(e) => return Outcome::Error(e.into()),
        };
        let mut req = self
            .http
            .post(u)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let attempt = async {
            let resp = req.send().await.map_err(|e| describe(&e))?;
            let status = resp.status().as_u16();
            // Read a bounded prefix of the answer, then hang up.
            let mut stream = resp.bytes_stream();
            let mut read = 0usize;
            while let Some(Ok(chunk)) = stream.next().await {
                read += chunk.len();
                if read >= MAX_RESPONSE_READ {
                    break;
                }
            }
            Ok::<u16, String>(status)
        };
        match tokio::time::timeout(TIMEOUT, attempt).await {
            Ok(Ok(status)) => Outcome::Status(status),
            Ok(Err(e)) => Outcome::Error(e),
            Err(_) => Outcome::Error("timed out".into()),
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
        let mut text = String::from("connection failed");
        while let Some(s) = src {
            if s.to_string().contains("private addresses") {
                text = s.to_string();
            }
            src = s.source();
        }
        text
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
        let c = WebhookClient::new(false);
        assert!(c.check_url("http://127.0.0.1:9/x").is_err());
        assert!(c.check_url("http://[::1]/").is_err());
        assert!(c.check_url("ftp://example.com/").is_err());
        assert!(c.check_url("example.com").is_err());
        assert!(c.check_url("https://example.com/hook").is_ok());
        assert!(WebhookClient::new(true)
            .check_url("http://127.0.0.1:9/x")
            .is_ok());
    }
}
