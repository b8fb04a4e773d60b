#![allow(clippy::unwrap_used)]
//! The upstream hop's HTTP/1.1 client (`proxy::upstream`, `proxy::forward`)
//! against a scripted upstream on a real socket: what it sends, how it reads
//! each framing, when it reuses a connection and when it must not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate::proxy::upstream::Upstream;
use tollgate::proxy::ProxyError;

/// One scripted answer: written in these pieces (each flushed on its own,
/// with a short pause, so the client sees them split), then the
/// connection is closed if `close`.
#[derive(Clone)]
struct Reply {
    pieces: Vec<Vec<u8>>,
    close: bool,
}

fn reply(text: &str) -> Reply {
    Reply {
        pieces: vec![text.as_bytes().to_vec()],
        close: false,
    }
}

/// A raw upstream: answers the n-th request (over all connections) with
/// `script[n]`, and records every request and how many connections came.
struct Scripted {
    base: String,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    accepted: Arc<AtomicUsize>,
}

async fn scripted(script: Vec<Reply>) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(script);
    let next = Arc::new(AtomicUsize::new(0));
    let (r, a) = (requests.clone(), accepted.clone());
    tokio::spawn(async move {
        loop {
            let (conn, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(conn, script.clone(), next.clone(), r.clone()));
        }
    });
    Scripted {
        base,
        requests,
        accepted,
    }
}

async fn serve(
    mut conn: TcpStream,
    script: Arc<Vec<Reply>>,
    next: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut buf = Vec::new();
    loop {
        // Read one request: head, then content-length bytes.
        let request = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let len: usize = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |h| {
                        std::str::from_utf8(h.value).unwrap().parse().unwrap()
                    });
                if buf.len() >= n + len {
                    break buf.drain(..n + len).collect::<Vec<u8>>();
                }
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        };
        requests.lock().unwrap().push(request);
        let n = next.fetch_add(1, Ordering::SeqCst);
        let Some(r) = script.get(n).cloned() else {
            return;
        };
        for (i, piece) in r.pieces.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if conn.write_all(piece).await.is_err() {
                return;
            }
        }
        if r.close {
            return;
        }
    }
}

fn upstream() -> Upstream {
    Upstream::new(
        Some("upstream-secret"),
        Duration::from_secs(2),
        Duration::from_secs(5),
        None,
    )
}

async fn send(
    up: &Upstream,
    base: &str,
    body: &'static str,
) -> Result<(StatusCode, HeaderMap, Bytes), ProxyError> {
    let r = up
        .send(
            base,
            None,
            "/v1/chat/completions",
            HeaderMap::new(),
            Bytes::from_static(body.as_bytes()),
        )
        .await?;
    let body = r
        .body
        .collect()
        .await
        .map_err(|_| ProxyError::Upstream)?
        .to_bytes();
    Ok((r.status, r.headers, body))
}

const OK_5: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\nhello";

#[tokio::test]
async fn keep_alive_connections_are_reused_and_requests_are_rewritten() {
    let s = scripted(vec![reply(OK_5), reply(OK_5), reply(OK_5)]).await;
    let up = upstream();
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_static("Bearer tgk_client_key"),
    );
    headers.insert("host", HeaderValue::from_static("gateway.example"));
    headers.insert(
        "connection",
        HeaderValue::from_static("keep-alive, x-private"),
    );
    headers.insert("x-private", HeaderValue::from_static("hop"));
    headers.insert("content-length", HeaderValue::from_static("999"));
    headers.insert("x-end-to-end", HeaderValue::from_static("kept"));
    let r = up
        .send(
            &s.base,
            None,
            "/v1/chat/completions",
            headers,
            Bytes::from_static(b"{\"a\":1}"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.collect().await.unwrap().to_bytes(), "hello");
    for _ in 0..2 {
        assert_eq!(send(&up, &s.base, "{}").await.unwrap().2, "hello");
    }
    assert_eq!(
        s.accepted.load(Ordering::SeqCst),
        1,
        "one connection, reused"
    );
    assert_eq!(up.idle_connections(&s.base), 1);

    let first = String::from_utf8(s.requests.lock().unwrap()[0].clone()).unwrap();
    let lower = first.to_ascii_lowercase();
    assert!(
        first.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{first}"
    );
    let authority = s.base.trim_start_matches("http://");
    assert!(
        lower.contains(&format!("\r\nhost: {authority}\r\n")),
        "{first}"
    );
    assert!(
        lower.contains("\r\nauthorization: bearer upstream-secret\r\n"),
        "{first}"
    );
    assert!(
        !first.contains("tgk_client_key"),
        "the client's key never leaves: {first}"
    );
    assert!(
        !lower.contains("x-private") && !lower.contains("connection:"),
        "{first}"
    );
    assert!(lower.contains("\r\nx-end-to-end: kept\r\n"), "{first}");
    assert!(lower.contains("\r\ncontent-length: 7\r\n"), "{first}");
    assert_eq!(lower.matches("content-length").count(), 1, "{first}");
    assert!(first.ends_with("\r\n\r\n{\"a\":1}"), "{first}");
}

#[tokio::test]
async fn a_base_url_path_prefixes_the_request_path() {
    let s = scripted(vec![reply(OK_5)]).await;
    let up = upstream();
    send(&up, &format!("{}/openai/", s.base), "{}")
        .await
        .unwrap();
    let first = String::from_utf8(s.requests.lock().unwrap()[0].clone()).unwrap();
    assert!(
        first.starts_with("POST /openai/v1/chat/completions HTTP/1.1\r\n"),
        "{first}"
    );
}

#[tokio::test]
async fn chunked_bodies_are_decoded_however_they_are_split() {
    let wire = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                5;ext=1\r\nhello\r\n1\r\n \r\nA\r\nworld, and\r\n0\r\ntrailer: x\r\n\r\n";
    // Whole, then one byte a write, then in pieces cut mid-line.
    let bytewise: Vec<Vec<u8>> = wire.bytes().map(|b| vec![b]).collect();
    let pieces: Vec<Vec<u8>> = wire.as_bytes().chunks(7).map(<[u8]>::to_vec).collect();
    let s = scripted(vec![
        reply(wire),
        Reply {
            pieces: bytewise,
            close: false,
        },
        Reply {
            pieces,
            close: false,
        },
        reply(OK_5),
    ])
    .await;
    let up = upstream();
    for _ in 0..3 {
        let (status, headers, body) = send(&up, &s.base, "{}").await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello world, and");
        assert!(headers.contains_key("transfer-encoding"));
    }
    // The chunked responses ended cleanly: the same connection goes on.
    assert_eq!(send(&up, &s.base, "{}").await.unwrap().2, "hello");
    assert_eq!(s.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connection_close_and_read_to_end_bodies_are_not_pooled() {
    let s = scripted(vec![
        Reply {
            pieces: vec![
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello".to_vec(),
            ],
            close: true,
        },
        Reply {
            pieces: vec![
                b"HTTP/1.1 200 OK\r\n\r\nuntil ".to_vec(),
                b"the end".to_vec(),
            ],
            close: true,
        },
        Reply {
            pieces: vec![b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec()],
            close: true,
        },
        reply(OK_5),
    ])
    .await;
    let up = upstream();
    assert_eq!(send(&up, &s.base, "{}").await.unwrap().2, "hello");
    assert_eq!(up.idle_connections(&s.base), 0);
    assert_eq!(send(&up, &s.base, "{}").await.unwrap().2, "until the end");
    assert_eq!(up.idle_connections(&s.base), 0);
    assert_eq!(send(&up, &s.base, "{}").await.unwrap().2, "hello");
    assert_eq!(up.idle_connections(&s.base), 0);
    assert_eq!(send(&up, &s.base, "{}").await.unwrap().2, "hello");
    assert_eq!(s.accepted.load(Ordering::SeqCst), 4);
    assert_eq!(up.idle_connections(&s.base), 1);
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_reused() {
    // The upstream closes each connection right after its answer, without
    // saying so (as an idle timeout would): the next request must not fail.
    let once = Reply {
        pieces: vec![OK_5.as_bytes().to_vec()],
        close: true,
    };
    let s = scripted(vec![once.clone(), once.clone(), once]).await;
    let up = upstream();
    for i in 1..=3 {
        assert_eq!(send(&up, &s.base, "{}").await.unwrap().2, "hello");
        assert_eq!(s.accepted.load(Ordering::SeqCst), i);
        // Wait until the close has reached this side: the pooled
        // connection is then known dead and dropped.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while up.idle_connections(&s.base) != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the close never arrived"
            );
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test]
async fn malformed_or_cut_answers_fail_and_are_not_pooled() {
    let s = scripted(vec![
        Reply {
            pieces: vec![b"NOT HTTP AT ALL\r\n\r\n".to_vec()],
            close: true,
        },
        Reply {
            pieces: vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel".to_vec()],
            close: true,
        },
        Reply {
            pieces: vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nZZ\r\n".to_vec()],
            close: false,
        },
        Reply {
            pieces: vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab".to_vec(),
            ],
            close: false,
        },
        Reply {
            pieces: vec![Vec::new()],
            close: true,
        },
        reply(OK_5),
    ])
    .await;
    let up = upstream();
    assert_eq!(
        send(&up, &s.base, "{}").await.unwrap_err(),
        ProxyError::Upstream
    );
    // The head was fine; the body is cut short.
    assert!(send(&up, &s.base, "{}").await.is_err());
    assert!(send(&up, &s.base, "{}").await.is_err());
    assert_eq!(
        send(&up, &s.base, "{}").await.unwrap_err(),
        ProxyError::Upstream
    );
    // Closed without a byte of answer.
    assert_eq!(
        send(&up, &s.base, "{}").await.unwrap_err(),
        ProxyError::Upstream
    );
    assert_eq!(up.idle_connections(&s.base), 0);
    assert_eq!(send(&up, &s.base, "{}").await.unwrap().2, "hello");
    assert_eq!(
        s.accepted.load(Ordering::SeqCst),
        6,
        "no failed connection was reused"
    );
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_its_connection() {
    let s = scripted(vec![
        Reply {
            pieces: vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello".to_vec(),
                b"world".to_vec(),
            ],
            close: false,
        },
        reply(OK_5),
    ])
    .await;
    let up = upstream();
    let r = up
        .send(
            &s.base,
            None,
            "/v1/chat/completions",
            HeaderMap::new(),
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    drop(r);
    assert_eq!(up.idle_connections(&s.base), 0);
    assert_eq!(send(&up, &s.base, "{}").await.unwrap().2, "hello");
    assert_eq!(s.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unreachable_upstream_or_a_non_http_url_is_a_bad_gateway() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let up = upstream();
    assert_eq!(
        send(&up, &dead, "{}").await.unwrap_err(),
        ProxyError::Upstream
    );
    assert_eq!(
        send(&up, "ftp://example.com", "{}").await.unwrap_err(),
        ProxyError::Upstream
    );
}

/// An upstream that refuses a large body after its head, without reading
/// the rest, is answered as soon as it says so (not after the read
/// timeout), and that connection is not reused.
#[tokio::test]
async fn an_early_answer_stops_a_large_body_being_written() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            // Read up to the end of the head, answer, and read no more.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!";
            conn.write_all(answer).await.unwrap();
            held.push(conn); // kept open, never read
        }
    });
    // Far more than the loopback socket buffers take.
    let body = Bytes::from(vec![b'x'; 64 * 1024 * 1024]);
    let up = Upstream::new(None, Duration::from_secs(2), Duration::from_secs(30), None);
    let send = up.send(&base, None, "/v1/chat/completions", HeaderMap::new(), body);
    let r = tokio::time::timeout(Duration::from_secs(20), send)
        .await
        .expect("answered before the read timeout")
        .unwrap();
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.body.collect().await.unwrap().to_bytes(), "too big!");
    assert_eq!(
        up.idle_connections(&base),
        0,
        "a cut request's connection is not pooled"
    );
}

/// A body too large to go out with the head in one write is still sent
/// whole, and its connection reused.
#[tokio::test]
async fn a_large_body_is_sent_whole() {
    let s = scripted(vec![reply(OK_5), reply(OK_5)]).await;
    let up = upstream();
    let body = Bytes::from(
        (0..3_000_000u32)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    for _ in 0..2 {
        let r = up
            .send(
                &s.base,
                None,
                "/v1/chat/completions",
                HeaderMap::new(),
                body.clone(),
            )
            .await
            .unwrap();
        assert_eq!(r.body.collect().await.unwrap().to_bytes(), "hello");
    }
    let requests = s.requests.lock().unwrap();
    for request in requests.iter() {
        assert!(request.ends_with(&body), "the whole body arrived");
    }
    assert_eq!(s.accepted.load(Ordering::SeqCst), 1);
}

/// P8: an upstream that answers `100 Continue` (and another 1xx) after the
/// head of a large body, then reads the body whole before its answer: the
/// client skips the interim answers and keeps writing (it used to stop at
/// the first byte read and wait for an answer that could not come until
/// the read timeout).
#[tokio::test]
async fn interim_answers_while_a_large_body_is_written_are_skipped() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(AtomicUsize::new(0));
    let got = received.clone();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 65536];
        let at = loop {
            let n = conn.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nx-a: 1\r\n\r\n")
            .await
            .unwrap();
        let mut body = buf.len() - at;
        while body < len {
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the body stopped at {body} of {len}");
            body += n;
        }
        got.store(body, Ordering::SeqCst);
        conn.write_all(OK_5.as_bytes()).await.unwrap();
        let mut rest = [0u8; 1];
        let _ = conn.read(&mut rest).await;
    });
    let body = Bytes::from(vec![b'x'; 16 * 1024 * 1024]);
    let up = Upstream::new(None, Duration::from_secs(2), Duration::from_secs(60), None);
    let send = up.send(&base, None, "/v1/chat/completions", HeaderMap::new(), body);
    let r = tokio::time::timeout(Duration::from_secs(30), send)
        .await
        .expect("answered before the read timeout")
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.collect().await.unwrap().to_bytes(), "hello");
    assert_eq!(received.load(Ordering::SeqCst), 16 * 1024 * 1024);
    assert_eq!(up.idle_connections(&base), 1, "a whole exchange is pooled");
}

/// P8: `Transfer-Encoding` and `Content-Length` both: the chunked coding
/// frames the body, and the connection is not reused.
#[tokio::test]
async fn transfer_encoding_wins_over_content_length_and_the_connection_is_dropped() {
    let both = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let s = scripted(vec![reply(both), reply(OK_5)]).await;
    let up = upstream();
    let (status, _, body) = send(&up, &s.base, "{}").await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
    assert_eq!(up.idle_connections(&s.base), 0);
    let (_, _, body) = send(&up, &s.base, "{}").await.unwrap();
    assert_eq!(&body[..], b"hello");
    assert_eq!(s.accepted.load(Ordering::SeqCst), 2, "a new connection");
}
