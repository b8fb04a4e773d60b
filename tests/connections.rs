//! S2 through real sockets: a request head must arrive within
//! `client_header_timeout`, an idle keep-alive connection closes after
//! `client_idle_timeout` (and not after the header timeout), and at most
//! `max_connections` are open at once: past it, a new one waits until one
//! closes, then is served.

// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{spawn_gateway_with, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n";

/// Read until a whole `/healthz` answer ("ok") has arrived; false if the
/// connection ended first.
async fn answered(tcp: &mut TcpStream) -> bool {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !(got.starts_with(b"HTTP/1.1 200") && got.ends_with(b"ok")) {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// Wait (at most 10 s: a bound for a failing test, far above the
/// timeouts set here) for the server to close `tcp`; true if it did.
async fn closed_by_server(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_to_end)
        .await
        .is_ok()
}

#[tokio::test]
async fn a_half_sent_head_or_a_silent_connection_is_closed_at_the_header_timeout() {
    let g = spawn_gateway_with(|c| c.client_header_timeout = Duration::from_millis(200)).await;
    let mut half = TcpStream::connect(g.running.addr).await.unwrap();
    half.write_all(b"POST /api/sessions HTTP/1.1\r\nhost: t\r\ncontent-")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(g.running.addr).await.unwrap();
    assert!(closed_by_server(&mut half).await, "a half head stays open");
    assert!(closed_by_server(&mut silent).await, "a silent client stays");
    // The gateway still serves.
    let r = g
        .http
        .get(format!("{}/healthz", g.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout_until_the_idle_one() {
    let g = spawn_gateway_with(|c| {
        c.client_header_timeout = Duration::from_millis(100);
        c.client_idle_timeout = Duration::from_millis(1500);
    })
    .await;
    let mut tcp = TcpStream::connect(g.running.addr).await.unwrap();
    tcp.write_all(HEALTH).await.unwrap();
    assert!(answered(&mut tcp).await);
    // Idle for several header timeouts, well inside the idle one: a new
    // request on it is still served.
    tokio::time::sleep(Duration::from_millis(400)).await;
    tcp.write_all(HEALTH).await.unwrap();
    assert!(answered(&mut tcp).await, "closed before the idle timeout");
    // Left idle, it is closed.
    assert!(closed_by_server(&mut tcp).await);
}

#[tokio::test]
async fn past_max_connections_a_new_one_waits_until_one_closes() {
    let g = spawn_gateway_with(|c| c.max_connections = 5).await;
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut tcp = TcpStream::connect(g.running.addr).await.unwrap();
        tcp.write_all(HEALTH).await.unwrap();
        assert!(answered(&mut tcp).await);
        open.push(tcp);
    }
    // The sixth is connected by the kernel (the backlog) but not served.
    let mut sixth = TcpStream::connect(g.running.addr).await.unwrap();
    sixth.write_all(HEALTH).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), answered(&mut sixth)).await;
    assert!(early.is_err(), "served past max_connections");
    drop(open.pop());
    let served = tokio::time::timeout(Duration::from_secs(10), answered(&mut sixth)).await;
    assert_eq!(served.ok(), Some(true), "served once a connection closed");
}

#[tokio::test]
async fn with_50_allowed_and_80_idle_a_fresh_client_is_served_once_idle_ones_time_out() {
    let g = spawn_gateway_with(|c| {
        c.max_connections = 50;
        c.client_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let addr = g.running.addr;
    let connected = Arc::new(AtomicUsize::new(0));
    let mut idle = Vec::new();
    for _ in 0..80 {
        let connected = connected.clone();
        idle.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(HEALTH).await.unwrap();
            connected.fetch_add(1, Ordering::SeqCst);
            let served = answered(&mut tcp).await;
            // Then idle, until the server closes it.
            (served, closed_by_server(&mut tcp).await)
        }));
    }
    // The fresh client comes after the 80 (30 of them still queued).
    wait_until("80 connected", || async {
        connected.load(Ordering::SeqCst) == 80
    })
    .await;
    let fresh = reqwest::Client::new();
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        fresh.get(format!("{}/healthz", g.url)).send(),
    )
    .await
    .expect("the fresh client was served")
    .unwrap();
    assert_eq!(r.status(), 200);
    for c in idle {
        assert_eq!(c.await.unwrap(), (true, true), "served, then closed idle");
    }
}
