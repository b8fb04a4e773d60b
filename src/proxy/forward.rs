//! Forward: the header rules of P6 for the upstream hop. The client's key
//! never leaves (the gateway's own upstream key, if any, is sent instead);
//! hop-by-hop headers stay on their side of the gateway, both ways. The
//! request head is written here; `upstream` sends it.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

use super::upstream::COALESCE_BODY;

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

/// The request head for `POST prefix + path`: `host`, the gateway's
/// `auth`, the client's headers minus its key (P6, P6b: the caller has
/// removed `api-key`, `x-api-key` and any other header carrying it),
/// `Host`, `Content-Length`, `Expect`, `Accept-Encoding` and hop-by-hop
/// headers, `Accept-Encoding: identity` (M1: the meter reads plain
/// bytes), and the body's length. Sized so that
/// a small `body` can be appended to it for one write.
pub fn request_head(
    prefix: &str,
    path: &str,
    host: &HeaderValue,
    auth: Option<&HeaderValue>,
    mut headers: HeaderMap,
    body: &[u8],
) -> Vec<u8> {
    strip_hop_by_hop(&mut headers);
    let mut head = Vec::with_capacity(512 + body.len().min(COALESCE_BODY));
    head.extend_from_slice(b"POST ");
    head.extend_from_slice(prefix.as_bytes());
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(host.as_bytes());
    head.extend_from_slice(b"\r\n");
    if let Some(auth) = auth {
        push_header(&mut head, header::AUTHORIZATION.as_str(), auth.as_bytes());
    }
    head.extend_from_slice(b"accept-encoding: identity\r\n");
    for (name, value) in &headers {
        if matches!(
            *name,
            header::AUTHORIZATION
                | header::HOST
                | header::CONTENT_LENGTH
                | header::EXPECT
                | header::ACCEPT_ENCODING
        ) {
            continue;
        }
        push_header(&mut head, name.as_str(), value.as_bytes());
    }
    head.extend_from_slice(b"content-length: ");
    head.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    head
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
