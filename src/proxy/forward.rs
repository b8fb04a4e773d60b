//! Forward: the pooled HTTP/1.1 client to the upstreams, and the header
//! rules of P6 (the client's key never leaves; hop-by-hop headers stay).

use std::time::Duration;

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
        }
    }

    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// Send `body` to `base` + `path` with the client's headers, minus its
    /// key and hop-by-hop headers; waits for the response head at most the
    /// read timeout.
    pub async fn send(
        &self,
        base: &str,
        path: &str,
        client_headers: &HeaderMap,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, ProxyError> {
        let uri: Uri = format!("{base}{path}")
            .parse()
            .map_err(|_| ProxyError::Upstream)?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(Full::new(body))
            .map_err(|_| ProxyError::Upstream)?;
        let headers = req.headers_mut();
        copy_end_to_end(client_headers, headers);
        headers.remove(header::AUTHORIZATION);
        headers.remove(header::HOST);
        headers.remove(header::CONTENT_LENGTH);
        if let Some(auth) = &self.auth {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
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

/// Copy end-to-end headers: everything but hop-by-hop ones and those the
/// `Connection` header names.
pub fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    let named: Vec<&str> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for (name, value) in from {
        if HOP_BY_HOP.contains(name) || named.iter().any(|n| name.as_str().eq_ignore_ascii_case(n))
        {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}
