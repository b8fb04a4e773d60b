//! The I/O driver: one request written on a pooled connection, its
//! response head awaited, and its body read as it is polled, all inside
//! the request's own task. The framing rules are `wire.rs`'s; this file
//! only moves bytes between the socket and the buffer they decode.
//!
//! Read to the end, a body hands its connection back to the pool
//! (`pool.rs`); dropped before, or failed, it closes it.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::http::{HeaderMap, StatusCode};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::pool::Origin;
use super::wire::{parse_head, Decoded, Framing, Head, Parsed, MAX_HEAD};
use super::H1Error;

/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Bodies up to this size are copied after the head, for one write.
pub const COALESCE_BODY: usize = 64 * 1024;

/// An open connection and what has been read from it.
pub(super) struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
}

impl Conn {
    pub(super) fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// Nothing to read and no close seen: the upstream has not hung up.
    pub(super) fn alive(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Read what is available into `buf`; `Ok(0)` at the connection's end.
    ///
    /// Through `AsyncRead::poll_read`, not `try_read_buf`: tokio takes a
    /// short read as proof the socket is drained and clears its readiness,
    /// so the next response is awaited without first trying a `recvfrom`
    /// that can only fail with EAGAIN (one system call a request saved).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Write a large request body, unless the upstream starts answering
    /// first (an early 413 from a server that stops reading): then stop
    /// and say so (`false`), rather than wait on a full socket until the
    /// read timeout. A readiness that turns out stale is cleared and
    /// writing goes on.
    async fn write_body(&mut self, body: &[u8]) -> io::Result<bool> {
        let mut sent = 0;
        while sent < body.len() {
            tokio::select! {
                biased;
                ready = self.io.readable() => {
                    ready?;
                    self.buf.reserve(READ_CHUNK);
                    match self.io.try_read_buf(&mut self.buf) {
                        // An answer, or the upstream's close: either way
                        // the rest of the body is not wanted.
                        Ok(_) => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                ready = self.io.writable() => {
                    ready?;
                    match self.io.try_write(&body[sent..]) {
                        Ok(n) => sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(true)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Read up to the end of a final (non-1xx) response head.
    async fn read_head(&mut self) -> Result<Head, H1Error> {
        let mut got_any = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf)? {
                    Parsed::Interim => continue,
                    Parsed::Final(head) => return Ok(head),
                    Parsed::Partial if self.buf.len() > MAX_HEAD => {
                        return Err(H1Error::Malformed("response head too large"));
                    }
                    Parsed::Partial => {}
                }
            }
            if self.fill().await? == 0 {
                return Err(if got_any {
                    H1Error::Malformed("response head cut short")
                } else {
                    H1Error::Closed
                });
            }
            got_any = true;
        }
    }
}

/// One request on a pooled connection: `head` (the request line and
/// headers, up to the blank line) then `body`; the response head, and the
/// body to read (or stream) after it.
pub async fn exchange(
    origin: &Arc<Origin>,
    mut head: Vec<u8>,
    body: &Bytes,
) -> Result<UpstreamResponse, H1Error> {
    let mut conn = origin.checkout().await?;
    let mut request_whole = true;
    if body.len() <= COALESCE_BODY {
        head.extend_from_slice(body);
        conn.io.write_all(&head).await?;
    } else {
        conn.io.write_all(&head).await?;
        request_whole = conn.write_body(body).await?;
    }
    let mut h = conn.read_head().await?;
    // A connection whose request was cut short is out of step: not reused.
    h.keep_alive &= request_whole;
    let done = matches!(h.framing, Framing::Length(0));
    let mut body = UpstreamBody {
        conn: Some(conn),
        framing: h.framing,
        keep_alive: h.keep_alive,
        origin: origin.clone(),
        done,
    };
    if done {
        body.finish();
    }
    Ok(UpstreamResponse {
        status: h.status,
        headers: h.headers,
        body,
    })
}

/// An upstream's answer: its head, and its body still to be read.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: UpstreamBody,
}

/// The body of an upstream response, read from its connection as it is
/// polled. Read to the end, it returns the connection to the pool; dropped
/// before, it closes it.
pub struct UpstreamBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    origin: Arc<Origin>,
    done: bool,
}

impl UpstreamBody {
    fn finish(&mut self) {
        self.done = true;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                self.origin.checkin(conn);
            }
        }
    }

    /// The next piece of the body: decoded from what was read, reading
    /// more whenever the framing asks for it.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match self.framing.decode(&mut conn.buf)? {
                Decoded::Data(data) => return Poll::Ready(Some(Ok(data))),
                Decoded::End => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Decoded::More => {
                    if ready!(conn.poll_fill(cx))? == 0 {
                        self.framing.at_close()?;
                        self.finish();
                        return Poll::Ready(None);
                    }
                }
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let r = ready!(this.poll_next(cx));
        if let Some(Err(_)) = &r {
            // The connection's state is unknown: it is not reused.
            this.conn = None;
            this.done = true;
        }
        Poll::Ready(r.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
