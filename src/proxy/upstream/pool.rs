//! The connection pool: one `Origin` per upstream `host:port`, its idle
//! keep-alive connections, and the connect (with its timeout) when none is
//! left to reuse.
//!
//! A connection comes back here only when its response was read to the end
//! with nothing left over and the upstream did not ask to close it
//! (`conn.rs` decides). A pooled connection whose far side has closed is
//! not reused: the check reads tokio's readiness state, without a system
//! call when it is alive.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::conn::Conn;
use super::H1Error;

/// One upstream origin (`host:port`) and its idle connections.
pub struct Origin {
    /// What `TcpStream::connect` is given: `host:port`.
    addr: String,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Origin {
    pub fn new(
        addr: String,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Origin {
        Origin {
            addr,
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            connect_timeout,
        }
    }

    /// Idle connections still open, after dropping those the upstream
    /// has closed (tests, diagnostics).
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map(|mut v| {
                v.retain(|i| i.conn.alive());
                v.len()
            })
            .unwrap_or(0)
    }

    /// The most recently used live idle connection, else a new one.
    pub(super) async fn checkout(&self) -> Result<Conn, H1Error> {
        if let Ok(mut idle) = self.idle.lock() {
            while let Some(i) = idle.pop() {
                if i.since.elapsed() >= self.idle_timeout {
                    // The rest were idle longer still.
                    idle.clear();
                    break;
                }
                if i.conn.alive() {
                    return Ok(i.conn);
                }
            }
        }
        let connect = TcpStream::connect(self.addr.as_str());
        let io = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => return Err(H1Error::Connect(io::ErrorKind::TimedOut.into())),
            Ok(r) => r.map_err(H1Error::Connect)?,
        };
        io.set_nodelay(true).map_err(H1Error::Connect)?;
        Ok(Conn::new(io))
    }

    pub(super) fn checkin(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(Idle {
                    conn,
                    since: Instant::now(),
                });
            }
        }
    }
}
