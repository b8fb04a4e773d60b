//! Forward: the pooled HTTP/1.1 client to the upstreams, and the header
//! rules of P6 (the client's key never leaves; hop-by-hop headers stay).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::error::ProxyError;

/// hyper-util's pooled client, not reqwest: fewer layers on the hot path,
/// and the same hyper types on both sides of the proxy.
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
    auth: Option<HeaderValue>,
    read_timeout: Duration,
    /// Upstream base URLs seen so far, parsed once (see `Base`).
    bases: ArcSwap<Vec<Arc<Base>>>,
}

/// A parsed upstream base URL (scheme and authority, no path), with the
/// `Host` header it implies. Formatting and parsing `base + path` on every
/// request, and hyper-util formatting a `Host` header from it, cost ~3,000
/// instructions a request (callgrind, BENCHMARKS.md); with this a request
/// clones two `Bytes` and validates a static path.
struct Base {
    text: String,
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
}

/// Distinct bases remembered at most (pricing reloads may add some); past
/// it, a base is parsed per request as before.
const MAX_BASES: usize = 64;

impl Base {
    /// `None` for a base that has a path or query: those are joined as text.
    fn parse(text: &str) -> Option<Base> {
        let uri: Uri = text.parse().ok()?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return None;
        }
        let scheme = uri.scheme()?.clone();
        let authority = uri.authority()?.clone();
        // As hyper-util writes it: the host, and the port unless default.
        let default_port = match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        };
        let host = match authority.port_u16() {
            Some(p) if Some(p) != default_port => format!("{}:{p}", authority.host()),
            _ => authority.host().to_string(),
        };
        Some(Base {
            text: text.to_string(),
            scheme,
            authority,
            host: HeaderValue::from_str(&host).ok()?,
        })
    }

    fn uri(&self, path: &'static str) -> Option<Uri> {
        let mut parts = axum::http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(PathAndQuery::from_static(path));
        Uri::from_parts(parts).ok()
    }
}

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

impl Upstream {
    pub fn new(
        api_key: Option<&str>,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        let auth = api_key.and_then(|k| HeaderValue::from_str(&format!("Bearer {k}")).ok());
        Upstream {
            client,
            auth: auth.map(|mut v| {
                v.set_sensitive(true);
                v
            }),
            read_timeout,
            bases: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// The parsed form of `base`, parsed on first use.
    fn base(&self, base: &str) -> Option<Arc<Base>> {
        if let Some(b) = self.bases.load().iter().find(|b| b.text == base) {
            return Some(b.clone());
        }
        let parsed = Arc::new(Base::parse(base)?);
        self.bases.rcu(|bases| {
            let mut bases = Vec::clone(bases);
            if bases.len() < MAX_BASES && !bases.iter().any(|b| b.text == base) {
                bases.push(parsed.clone());
            }
            bases
        });
        Some(parsed)
    }

    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// Send `body` to `base` + `path` with the client's headers, minus its
    /// key and hop-by-hop headers; waits for the response head at most the
    /// read timeout.
    ///
    /// Takes the client's headers by value and strips them in place: the
    /// copy into a fresh map it replaces (a clone per header, the map grown
    /// step by step) was ~4% of a request's instructions (BENCHMARKS.md).
    pub async fn send(
        &self,
        base: &str,
        path: &'static str,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, ProxyError> {
        let parsed = self.base(base);
        let uri = match parsed.as_ref().and_then(|b| b.uri(path)) {
            Some(uri) => uri,
            None => format!("{base}{path}")
                .parse()
                .map_err(|_| ProxyError::Upstream)?,
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(Full::new(body))
            .map_err(|_| ProxyError::Upstream)?;
        strip_hop_by_hop(&mut headers);
        headers.remove(header::AUTHORIZATION);
        match parsed {
            Some(b) => headers.insert(header::HOST, b.host.clone()),
            // hyper-util writes one from the URI.
            None => headers.remove(header::HOST),
        };
        headers.remove(header::CONTENT_LENGTH);
        if let Some(auth) = &self.auth {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        *req.headers_mut() = headers;
        match tokio::time::timeout(self.read_timeout, self.client.request(req)).await {
            Err(_) => Err(ProxyError::UpstreamTimeout),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "upstream request failed");
                if is_timeout(&e) {
                    Err(ProxyError::UpstreamTimeout)
                } else {
                    Err(ProxyError::Upstream)
                }
            }
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

fn is_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// Remove, in place, hop-by-hop headers and those the `Connection` header
/// names: what is left is end-to-end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_parse_once_into_the_uri_and_host_hyper_would_use() {
        let b = Base::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            b.uri("/v1/chat/completions").unwrap(),
            "http://127.0.0.1:9000/v1/chat/completions"
        );
        assert_eq!(b.host, "127.0.0.1:9000");
        let b = Base::parse("http://user:pw@example.com:80/").unwrap();
        assert_eq!(
            b.uri("/v1/embeddings").unwrap().to_string(),
            "http://user:pw@example.com:80/v1/embeddings"
        );
        assert_eq!(b.host, "example.com");
        assert_eq!(Base::parse("http://[::1]:81").unwrap().host, "[::1]:81");
        // A base with a path is joined as text, as before.
        assert!(Base::parse("http://example.com/openai").is_none());
        assert!(Base::parse("not a url").is_none());
        let up = Upstream::new(None, Duration::from_secs(1), Duration::from_secs(1));
        let first = up.base("http://a:1").unwrap();
        assert!(Arc::ptr_eq(&first, &up.base("http://a:1").unwrap()));
        assert!(up.base("http://a:1/p").is_none());
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_stripped() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Trace"),
        );
        h.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        h.append("keep-alive", HeaderValue::from_static("timeout=5"));
        h.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.append("x-trace", HeaderValue::from_static("1"));
        h.append("x-other", HeaderValue::from_static("2"));
        h.append(header::ACCEPT, HeaderValue::from_static("a"));
        h.append(header::ACCEPT, HeaderValue::from_static("b"));
        h.append(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        assert_eq!(h.len(), 3, "{names:?}");
        let accept: Vec<&HeaderValue> = h.get_all(header::ACCEPT).iter().collect();
        assert_eq!(accept, ["a", "b"]);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }
}
