//! Forward: the pooled HTTP/1.1 client to the upstreams, and the header
//! rules of P6 (the client's key never leaves; hop-by-hop headers stay).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Uri};
use bytes::Bytes;

use super::error::ProxyError;
use super::h1::{self, Origin, UpstreamResponse};

/// Idle upstream connections kept per origin, and for how long: under the
/// 5 s keep-alive of uvicorn (the server of vLLM and SGLang) and nginx's
/// 75 s, so an upstream rarely closes a connection just as it is reused (a
/// close that crosses a request fails it with 502; a POST is not retried,
/// since the upstream may have acted on it). A pooled connection whose
/// close has already arrived is noticed and not used.
const MAX_IDLE_PER_ORIGIN: usize = 1024;
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The upstream side of the proxy: upstream URLs parsed once, each with
/// its pool of keep-alive connections (`h1`), and the header rules of P6.
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
    /// key, `Host`, `Content-Length`, `Expect` and hop-by-hop headers;
    /// waits for the response head at most the read timeout.
    pub async fn send(
        &self,
        base: &str,
        path: &'static str,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, ProxyError> {
        let Some(b) = self.base(base) else {
            tracing::warn!("the upstream URL is not a plain http:// URL");
            return Err(ProxyError::Upstream);
        };
        strip_hop_by_hop(&mut headers);
        // The head; `exchange` appends a small body to it for one write.
        let mut head = Vec::with_capacity(512 + body.len().min(h1::COALESCE_BODY));
        head.extend_from_slice(b"POST ");
        head.extend_from_slice(b.prefix.as_bytes());
        head.extend_from_slice(path.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        head.extend_from_slice(b.host.as_bytes());
        head.extend_from_slice(b"\r\n");
        if let Some(auth) = &self.auth {
            push_header(&mut head, header::AUTHORIZATION.as_str(), auth.as_bytes());
        }
        for (name, value) in &headers {
            if matches!(
                *name,
                header::AUTHORIZATION | header::HOST | header::CONTENT_LENGTH | header::EXPECT
            ) {
                continue;
            }
            push_header(&mut head, name.as_str(), value.as_bytes());
        }
        head.extend_from_slice(b"content-length: ");
        head.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        head.extend_from_slice(b"\r\n\r\n");
        match tokio::time::timeout(self.read_timeout, h1::exchange(&b.origin, head, &body)).await {
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

fn push_header(head: &mut Vec<u8>, name: &str, value: &[u8]) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// Remove, in place, hop-by-hop headers and those the `Connection` header
/// names: what is left is end-to-end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Usually there are none: one pass over the few names present is
    // cheaper than eight hashed removals (~900 instructions a call).
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
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
