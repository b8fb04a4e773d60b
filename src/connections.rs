//! Client connections (S2): the accept loop of the public listener, with
//! at most `max_connections` open at once (past it, new connections wait
//! in the listen backlog until one closes), and two deadlines on each:
//! - a request head must arrive whole within `client_header_timeout`,
//!   counted from the connection's start or the head's first byte;
//! - a connection with no request being handled and no byte moving either
//!   way for `client_idle_timeout` is closed (an idle keep-alive one, or a
//!   stream to a client that stopped reading).
//!
//! Why not hyper's `header_read_timeout`: its clock starts whenever hyper
//! waits for a head, so between keep-alive requests too; it would close
//! every idle connection after the header timeout, never the idle one.
//! Both deadlines live here instead, in `Guarded`, a wrapper of the socket
//! that knows (from `ConnState`, which the service updates) whether a
//! request is being handled. No allocation per request: one `Sleep` per
//! connection, re-armed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use crate::server::Front;

/// The S2 settings, from the config.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn of(config: &crate::config::Config) -> Limits {
        Limits {
            header_timeout: config.client_header_timeout,
            idle_timeout: config.client_idle_timeout,
            max_connections: config.max_connections,
        }
    }
}

/// What the service tells the socket wrapper: a request is being handled
/// (`busy`), and how many heads have been read whole (`heads`).
#[derive(Default)]
pub struct ConnState {
    busy: AtomicUsize,
    heads: AtomicUsize,
    /// Woken when a handler ends.
    handler_done: AtomicWaker,
}

/// Held while a request's handler runs: no deadline applies meanwhile
/// (the upstream's own timeouts bound it).
pub struct Busy(Arc<ConnState>);

impl Busy {
    pub fn start(state: &Arc<ConnState>) -> Busy {
        state.heads.fetch_add(1, Relaxed);
        state.busy.fetch_add(1, Relaxed);
        Busy(state.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Relaxed);
        self.0.handler_done.wake();
    }
}

/// A client socket with the header and idle deadlines. A deadline passed
/// is a `TimedOut` read error: hyper closes the connection.
pub struct Guarded {
    io: TcpStream,
    state: Arc<ConnState>,
    limits: Limits,
    /// When the head being read began (its first byte, or the connection's
    /// start for the first one); `None` between requests.
    head_since: Option<Instant>,
    /// `state.heads` when last looked at: a change means a head was read.
    heads_seen: usize,
    /// The last byte read or written.
    last_io: Instant,
    sleep: Pin<Box<Sleep>>,
    armed: Instant,
}

impl Guarded {
    pub fn new(io: TcpStream, state: Arc<ConnState>, limits: Limits) -> Guarded {
        let now = Instant::now();
        let first = now + limits.header_timeout;
        Guarded {
            io,
            state,
            limits,
            head_since: Some(now),
            heads_seen: 0,
            last_io: now,
            sleep: Box::pin(tokio::time::sleep_until(first)),
            armed: first,
        }
    }

    /// A head read since the last look ends its header deadline.
    fn catch_up(&mut self) {
        let heads = self.state.heads.load(Relaxed);
        if heads != self.heads_seen {
            self.heads_seen = heads;
            self.head_since = None;
        }
    }

    fn on_read(&mut self) {
        let now = Instant::now();
        self.last_io = now;
        self.catch_up();
        if self.head_since.is_none() && self.state.busy.load(Relaxed) == 0 {
            // The first byte of the next head.
            self.head_since = Some(now);
        }
    }

    /// Nothing to read: has this connection's deadline passed?
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.busy.load(Relaxed) > 0 {
            // hyper may not read again once the answer is out: the end of
            // the handler wakes the connection so its deadline is armed.
            self.state.handler_done.register(cx.waker());
            if self.state.busy.load(Relaxed) > 0 {
                return Poll::Pending;
            }
        }
        self.catch_up();
        let (deadline, what) = match self.head_since {
            Some(t) => (t + self.limits.header_timeout, "request head"),
            None => (self.last_io + self.limits.idle_timeout, "idle connection"),
        };
        if deadline != self.armed {
            self.sleep.as_mut().reset(deadline);
            self.armed = deadline;
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("client {what} timed out"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.on_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx),
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last_io = Instant::now();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last_io = Instant::now();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// One connection's service: the front, the peer's address (S1's
/// per-address throttle reads it), and the state its socket watches.
struct PerConn {
    front: Front,
    peer: SocketAddr,
    state: Arc<ConnState>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for PerConn {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let busy = Busy::start(&self.state);
        self.front
            .serve_one(req.map(axum::body::Body::new), Some(self.peer), busy)
    }
}

/// Serve `front` on `listener` under `limits` until `shutdown` resolves;
/// then stop accepting, ask every open connection to finish its request
/// and close, and wait for them.
pub async fn serve(
    listener: TcpListener,
    front: Front,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true).header_read_timeout(None);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // rather than spin (what axum::serve did too).
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let state = Arc::new(ConnState::default());
        let io = TokioIo::new(Guarded::new(tcp, state.clone(), limits));
        let service = PerConn {
            front: front.clone(),
            peer,
            state,
        };
        let conn = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "client connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
