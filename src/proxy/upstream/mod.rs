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
//! - `pool`: the idle connections per origin, and the connect;
//! - `tls`: the rustls connector for `https://` upstreams (P7). A plain
//!   `http://` upstream keeps the bare TCP path, with no TLS layer.
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
pub mod tls;
pub mod wire;

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::{HeaderMap, HeaderValue, Uri};
use bytes::Bytes;

pub use conn::{UpstreamBody, UpstreamResponse, COALESCE_BODY};

use super::error::ProxyError;
use super::forward;
use pool::{Origin, Tls};
use tokio_rustls::TlsConnector;

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
    /// Extra PEM roots for `https://` upstreams (P7).
    ca_file: Option<PathBuf>,
    /// The TLS connector, built on the first `https://` base (`None`: it
    /// could not be, and was logged).
    tls: OnceLock<Option<TlsConnector>>,
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

/// An upstream base URL, checked (P7): `http://` or `https://`, a host,
/// no query.
pub struct Target {
    pub tls: bool,
    /// As written in the URL (an IPv6 address in brackets).
    pub host: String,
    pub port: u16,
    /// The path without its trailing `/` ("" for none).
    pub prefix: String,
}

/// Check an upstream base URL; the error says what is wrong with it.
pub fn target(text: &str) -> Result<Target, &'static str> {
    let uri: Uri = text.parse().map_err(|_| "not a URL")?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("must start with http:// or https://"),
    };
    if uri.query().is_some() {
        return Err("may not carry a query");
    }
    let authority = uri.authority().ok_or("has no host")?;
    if authority.host().is_empty() {
        return Err("has no host");
    }
    Ok(Target {
        tls,
        host: authority.host().to_string(),
        port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        prefix: uri.path().trim_end_matches('/').to_string(),
    })
}

impl Base {
    /// `None` unless `text` is a valid upstream URL (`target`) and, for
    /// `https://`, a TLS connector is there (`tls`).
    fn parse(
        text: &str,
        connect_timeout: Duration,
        tls: impl FnOnce() -> Option<TlsConnector>,
    ) -> Option<Base> {
        let t = target(text).ok()?;
        let default_port = if t.tls { 443 } else { 80 };
        // The host, and the port unless it is the default.
        let host = if t.port == default_port {
            t.host.clone()
        } else {
            format!("{}:{}", t.host, t.port)
        };
        let tls = if t.tls {
            let name = t.host.trim_start_matches('[').trim_end_matches(']');
            Some(Tls {
                connector: tls()?,
                name: rustls::pki_types::ServerName::try_from(name.to_string()).ok()?,
            })
        } else {
            None
        };
        Some(Base {
            text: text.to_string(),
            prefix: t.prefix,
            host: HeaderValue::from_str(&host).ok()?,
            origin: Arc::new(Origin::new(
                format!("{}:{}", t.host, t.port),
                tls,
                MAX_IDLE_PER_ORIGIN,
                IDLE_TIMEOUT,
                connect_timeout,
            )),
        })
    }
}

impl Upstream {
    /// `api_key`: the gateway's own upstream key (a model may name its
    /// own, `send`'s `auth`); `ca_file`: extra PEM roots for `https://`.
    pub fn new(
        api_key: Option<&str>,
        connect_timeout: Duration,
        read_timeout: Duration,
        ca_file: Option<PathBuf>,
    ) -> Upstream {
        Upstream {
            auth: api_key.and_then(bearer),
            read_timeout,
            connect_timeout,
            bases: ArcSwap::from_pointee(Vec::new()),
            ca_file,
            tls: OnceLock::new(),
        }
    }

    fn connector(&self) -> Option<TlsConnector> {
        self.tls
            .get_or_init(|| match tls::connector(self.ca_file.as_deref()) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "no TLS for https:// upstreams");
                    None
                }
            })
            .clone()
    }

    /// The parsed form of `base`, parsed on first use.
    fn base(&self, base: &str) -> Option<Arc<Base>> {
        if let Some(b) = self.bases.load().iter().find(|b| b.text == base) {
            return Some(b.clone());
        }
        let parsed = Arc::new(Base::parse(base, self.connect_timeout, || {
            self.connector()
        })?);
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
    /// (`forward::request_head`), and `auth` (the model's own upstream
    /// key, P7) or else the gateway's; waits for the response head at most
    /// the read timeout.
    pub async fn send(
        &self,
        base: &str,
        auth: Option<&HeaderValue>,
        path: &'static str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, ProxyError> {
        let Some(b) = self.base(base) else {
            tracing::warn!("the upstream URL is not usable (see the start-up checks)");
            return Err(ProxyError::Upstream);
        };
        let auth = auth.or(self.auth.as_ref());
        let head = forward::request_head(&b.prefix, path, &b.host, auth, headers, &body);
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

/// `Bearer key`, marked sensitive (never printed, never indexed by hpack).
pub fn bearer(key: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {key}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_parse_once_into_the_address_prefix_and_host_hyper_would_use() {
        let t = Duration::from_secs(1);
        let none = || None;
        let b = Base::parse("http://127.0.0.1:9000", t, none).unwrap();
        assert_eq!(
            (b.prefix.as_str(), b.host.to_str().unwrap()),
            ("", "127.0.0.1:9000")
        );
        let b = Base::parse("http://user:pw@example.com:80/", t, none).unwrap();
        assert_eq!(
            (b.prefix.as_str(), b.host.to_str().unwrap()),
            ("", "example.com")
        );
        assert_eq!(
            Base::parse("http://[::1]:81", t, none).unwrap().host,
            "[::1]:81"
        );
        let b = Base::parse("http://example.com/openai/", t, none).unwrap();
        assert_eq!(
            (b.prefix.as_str(), b.host.to_str().unwrap()),
            ("/openai", "example.com")
        );
        // https:// needs a connector; without one it is not usable.
        assert!(Base::parse("https://example.com", t, none).is_none());
        assert!(Base::parse("http://example.com/?q=1", t, none).is_none());
        assert!(Base::parse("not a url", t, none).is_none());
        let tls = || tls::connector(None).ok();
        let b = Base::parse("https://example.com:443/v", t, tls).unwrap();
        assert_eq!(
            (b.prefix.as_str(), b.host.to_str().unwrap()),
            ("/v", "example.com")
        );
        assert!(Base::parse("https://[::1]:8443", t, tls).is_some());
        for (bad, why) in [
            ("ftp://a:1", "must start with http:// or https://"),
            ("127.0.0.1:9000", "must start with http:// or https://"),
            ("http://a/?q", "may not carry a query"),
            ("http:// a", "not a URL"),
        ] {
            assert_eq!(target(bad).err(), Some(why), "{bad}");
        }
        assert_eq!(target("https://h").unwrap().port, 443);
        let up = Upstream::new(None, t, t, None);
        let first = up.base("http://a:1").unwrap();
        assert!(Arc::ptr_eq(&first, &up.base("http://a:1").unwrap()));
        assert!(up.base("ftp://a:1").is_none());
    }
}
