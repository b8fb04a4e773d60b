//! The upstream seam: `Upstream::send` is the one call the proxy makes to
//! send a request upstream; it returns the response head and a body that
//! streams from the connection as it is polled (`UpstreamBody`). A
//! concrete type, not a trait object: the hot path pays no dynamic
//! dispatch for it.
//!
//! Behind it, a small HTTP/1.1 client of its own, keep-alive connections
//! pooled per upstream and driven inside the request's own task:
//! - `wire`: the response framing, pure (head, length, chunked, close);
//! - `conn`: the I/O driver, one exchange on one connection;
//! - `pool`: the idle connections per origin, and the connect.
//!
//! Why not hyper's pooled client: it runs every connection in a task of its
//! own and hands each request across a channel to it, so one proxied call
//! woke two more tasks (often on the other thread) and paid for the pool's
//! bookkeeping; together about a fifth of the gateway's instructions per
//! request (callgrind, BENCHMARKS.md). The upstream hop needs a small part
//! of HTTP/1.1: one request with a known length, then a response framed by
//! `Content-Length`, chunked coding, or the connection's end. That part is
//! here, with `httparse` (hyper's own parser) reading the response head.

mod conn;
mod pool;
pub mod wire;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::{HeaderMap, HeaderValue, Uri};
use bytes::Bytes;

pub use conn::{UpstreamBody, UpstreamResponse, COALESCE_BODY};

use super::error::ProxyError;
use super::forward;
use pool::Origin;

/// Why an exchange failed. Any of these leaves the connection closed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("cannot connect to the upstream: {0}")]
    Connect(io::Error),
    #[error("upstream i/o: {0}")]
    Io(#[from] io::Error),
    #[error("the upstream closed the connection before answering")]
    Closed,
    #[error("malformed upstream response: {0}")]
    Malformed(&'static str),
}

impl H1Error {
    pub fn is_timeout(&self) -> bool {
        match self {
            H1Error::Connect(e) | H1Error::Io(e) => e.kind() == io::ErrorKind::TimedOut,
            _ => false,
        }
    }
}

/// Idle upstream connections kept per origin, and for how long: under the
/// 5 s keep-alive of uvicorn (the server of vLLM and SGLang) and nginx's
/// 75 s, so an upstream rarely closes a connection just as it is reused (a
/// close that crosses a request fails it with 502; a POST is not retried,
/// since the upstream may have acted on it). A pooled connection whose
/// close has already arrived is noticed and not used.
const MAX_IDLE_PER_ORIGIN: usize = 1024;
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The upstream side of the proxy: upstream URLs parsed once, each with
/// its pool of keep-alive connections, and the gateway's own upstream key.
pub struct Upstream {
    auth: Option<HeaderValue>,
    read_timeout: Duration,
    connect_timeout: Duration,
    /// Upstream base URLs seen so far, parsed once (see `Base`).
    bases: ArcSwap<Vec<Arc<Base>>>,
}

/// A parsed upstream base URL: where to connect, the path prefix, and the
/// `Host` header, with the origin's connection pool.
struct Base {
    text: String,
    /// The base URL's path without its trailing `/` ("" for none).
    prefix: String,
    host: HeaderValue,
    origin: Arc<Origin>,
}

/// Distinct bases remembered at most (pricing reloads may add some); past
/// it, a base is parsed per request and its connections are not pooled.
const MAX_BASES: usize = 64;

impl Base {
    /// `None` unless `text` is a plain `http://` URL without a query.
    fn parse(text: &str, connect_timeout: Duration) -> Option<Base> {
        let uri: Uri = text.parse().ok()?;
        if uri.scheme_str() != Some("http") || uri.query().is_some() {
            return None;
        }
        let authority = uri.authority()?;
        let host_name = authority.host();
        let port = authority.port_u16().unwrap_or(80);
        // The host, and the port unless it is the default.
        let host = match authority.port_u16() {
            Some(p) if p != 80 => format!("{host_name}:{p}"),
            _ => host_name.to_string(),
        };
        Some(Base {
            text: text.to_string(),
            prefix: uri.path().trim_end_matches('/').to_string(),
            host: HeaderValue::from_str(&host).ok()?,
            origin: Arc::new(Origin::new(
                format!("{host_name}:{port}"),
                MAX_IDLE_PER_ORIGIN,
                IDLE_TIMEOUT,
                connect_timeout,
            )),
        })
    }
}

impl Upstream {
    pub fn new(
        api_key: Option<&str>,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Upstream {
        let auth = api_key.and_then(|k| HeaderValue::from_str(&format!("Bearer {k}")).ok());
        Upstream {
            auth: auth.map(|mut v| {
                v.set_sensitive(true);
                v
            }),
            read_timeout,
            connect_timeout,
            bases: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// The parsed form of `base`, parsed on first use.
    fn base(&self, base: &str) -> Option<Arc<Base>> {
        if let Some(b) = self.bases.load().iter().find(|b| b.text == base) {
            return Some(b.clone());
        }
        let parsed = Arc::new(Base::parse(base, self.connect_timeout)?);
        self.bases.rcu(|bases| {
            let mut bases = Vec::clone(bases);
            if bases.len() < MAX_BASES && !bases.iter().any(|b| b.text == base) {
                bases.push(parsed.clone());
            }
            bases
        });
        // Another task may have won the race: use the remembered one.
        self.bases
            .load()
            .iter()
            .find(|b| b.text == base)
            .cloned()
            .or(Some(parsed))
    }

    /// Idle pooled connections to `base` (tests).
    pub fn idle_connections(&self, base: &str) -> usize {
        self.base(base).map_or(0, |b| b.origin.idle_count())
    }

    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// Send `body` to `base` + `path` with the client's headers, minus its
    /// key, `Host`, `Content-Length`, `Expect` and hop-by-hop headers
    /// (`forward::request_head`); waits for the response head at most the
    /// read timeout.
    pub async fn send(
        &self,
        base: &str,
        path: &'static str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, ProxyError> {
        let Some(b) = self.base(base) else {
            tracing::warn!("the upstream URL is not a plain http:// URL");
            return Err(ProxyError::Upstream);
        };
        let head =
            forward::request_head(&b.prefix, path, &b.host, self.auth.as_ref(), headers, &body);
        match tokio::time::timeout(self.read_timeout, conn::exchange(&b.origin, head, &body)).await
        {
            Err(_) => Err(ProxyError::UpstreamTimeout),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "upstream request failed");
                if e.is_timeout() {
                    Err(ProxyError::UpstreamTimeout)
                } else {
                    Err(ProxyError::Upstream)
                }
            }
            Ok(Ok(response)) => Ok(response),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_parse_once_into_the_address_prefix_and_host_hyper_would_use() {
        let t = Duration::from_secs(1);
        let b = Base::parse("http://127.0.0.1:9000", t).unwrap();
        assert_eq!(
            (b.prefix.as_str(), b.host.to_str().unwrap()),
            ("", "127.0.0.1:9000")
        );
        let b = Base::parse("http://user:pw@example.com:80/", t).unwrap();
        assert_eq!(
            (b.prefix.as_str(), b.host.to_str().unwrap()),
            ("", "example.com")
        );
        assert_eq!(Base::parse("http://[::1]:81", t).unwrap().host, "[::1]:81");
        let b = Base::parse("http://example.com/openai/", t).unwrap();
        assert_eq!(
            (b.prefix.as_str(), b.host.to_str().unwrap()),
            ("/openai", "example.com")
        );
        assert!(Base::parse("https://example.com", t).is_none());
        assert!(Base::parse("http://example.com/?q=1", t).is_none());
        assert!(Base::parse("not a url", t).is_none());
        let up = Upstream::new(None, t, t);
        let first = up.base("http://a:1").unwrap();
        assert!(Arc::ptr_eq(&first, &up.base("http://a:1").unwrap()));
        assert!(up.base("ftp://a:1").is_none());
    }
}
