//! A scripted upstream for the metering tests: it records each request's
//! exact bytes and answers with exact bytes (`Bytes`: a clone is a
//! reference, never a copy, so a large answer is held once).
#![allow(dead_code)] // each test binary uses its own part of it

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes to send, as one step.
pub fn send(bytes: impl Into<Bytes>) -> Step {
    Step::Send(bytes.into())
}

/// One step of a scripted answer.
#[derive(Clone)]
pub enum Step {
    Send(Bytes),
    Sleep(Duration),
    /// Keep the connection open without a word (until the test ends).
    Hang,
}

/// A scripted upstream: every connection gets the same steps, and every
/// request's raw bytes (head and body) are kept.
pub struct Stub {
    pub url: String,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Stub {
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request's body.
    pub fn last_body(&self) -> Vec<u8> {
        let r = self.requests().pop().expect("a request reached the stub");
        let at = find(&r, b"\r\n\r\n").unwrap() + 4;
        r[at..].to_vec()
    }

    /// The last request's head, lower-cased.
    pub fn last_head(&self) -> String {
        let r = self.requests().pop().expect("a request reached the stub");
        let at = find(&r, b"\r\n\r\n").unwrap();
        String::from_utf8_lossy(&r[..at]).to_ascii_lowercase()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub async fn stub(steps: Vec<Step>) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (steps, kept) = (steps.clone(), kept.clone());
            tokio::spawn(answer(tcp, steps, kept));
        }
    });
    Stub { url, seen }
}

async fn answer(mut tcp: TcpStream, steps: Vec<Step>, seen: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut req = Vec::new();
    let mut buf = [0u8; 16384];
    let body_len = loop {
        let n = tcp.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        req.extend_from_slice(&buf[..n]);
        if let Some(at) = find(&req, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&req[..at]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            break at + 4 + len;
        }
    };
    while req.len() < body_len {
        let n = tcp.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        req.extend_from_slice(&buf[..n]);
    }
    seen.lock().unwrap().push(req);
    for step in steps {
        match step {
            Step::Send(bytes) => {
                if tcp.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Step::Sleep(d) => tokio::time::sleep(d).await,
            Step::Hang => std::future::pending::<()>().await,
        }
    }
    let _ = tcp.shutdown().await;
}
