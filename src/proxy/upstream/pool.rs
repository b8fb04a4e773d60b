//! The connection pool: one `Origin` per upstream scheme, `host:port`,
//! its idle keep-alive connections, and the connect (with its timeout,
//! which covers the TLS handshake for `https://`, P7) when none is left to
//! reuse.
//!
//! A connection comes back here only when its response was read to the end
//! with nothing left over and the upstream did not ask to close it
//! (`conn.rs` decides). A pooled connection whose far side has closed is
//! not reused: the check reads tokio's readiness state, without a system
//! call when it is alive.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::conn::{Conn, Io};
use super::H1Error;

/// How an `https://` origin is reached: the connector (the roots) and the
/// name its certificate must carry.
pub struct Tls {
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
}

/// One upstream origin (`host:port`, plain or TLS) and its idle connections.
pub struct Origin {
    /// What `TcpStream::connect` is given: `host:port`.
    addr: String,
    tls: Option<Tls>,
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
        tls: Option<Tls>,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Origin {
        Origin {
            addr,
            tls,
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
                v.retain_mut(|i| i.conn.alive());
                v.len()
            })
            .unwrap_or(0)
    }

    /// The most recently used live idle connection, else a new one.
    pub(super) async fn checkout(&self) -> Result<Conn, H1Error> {
        if let Ok(mut idle) = self.idle.lock() {
            while let Some(mut i) = idle.pop() {
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
        match tokio::time::timeout(self.connect_timeout, self.connect()).await {
            Err(_) => Err(H1Error::Connect(io::ErrorKind::TimedOut.into())),
            Ok(r) => r.map(Conn::new).map_err(H1Error::Connect),
        }
    }

    /// A new connection, with its TLS handshake done for `https://`.
    async fn connect(&self) -> io::Result<Io> {
        let tcp = TcpStream::connect(self.addr.as_str()).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Io::Plain(tcp)),
            Some(tls) => {
                let stream = tls.connector.connect(tls.name.clone(), tcp).await?;
                Ok(Io::Tls(Box::new(stream)))
            }
        }
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
