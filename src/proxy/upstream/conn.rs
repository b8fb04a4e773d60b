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
use std::task::{ready, Context, Poll, Waker};

use axum::http::{HeaderMap, StatusCode};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::pool::Origin;
use super::wire::{lead, parse_head, Decoded, Framing, Head, Lead, Parsed, MAX_HEAD};
use super::H1Error;

/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Bodies up to this size are copied after the head, for one write.
pub const COALESCE_BODY: usize = 64 * 1024;

/// The byte stream under a connection: plain TCP (the fast path, no
/// extra layer) or TLS over TCP (P7, `https://` upstreams).
pub(super) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An open connection and what has been read from it.
pub(super) struct Conn {
    io: Io,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
}

impl Conn {
    pub(super) fn new(io: Io) -> Conn {
        Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// Nothing to read and no close seen: the upstream has not hung up.
    /// Over TLS, one poll with a no-op waker: records that carry no data
    /// (a TLS 1.3 session ticket) are absorbed; data, a close or an error
    /// mean the connection is not reused.
    pub(super) fn alive(&mut self) -> bool {
        match &mut self.io {
            Io::Plain(tcp) => {
                let mut probe = [0u8; 1];
                matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Io::Tls(tls) => {
                let mut probe = [0u8; 1];
                let mut rb = ReadBuf::new(&mut probe);
                let mut cx = Context::from_waker(Waker::noop());
                Pin::new(tls.as_mut())
                    .poll_read(&mut cx, &mut rb)
                    .is_pending()
            }
        }
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

    /// Write the request head (with a small body appended), all of it.
    async fn write_head(&mut self, head: &[u8]) -> io::Result<()> {
        self.io.write_all(head).await?;
        if let Io::Tls(_) = self.io {
            // rustls keeps what it could not send yet; plain TCP has no
            // buffer to flush.
            self.io.flush().await?;
        }
        Ok(())
    }

    /// Write a large request body while reading what the upstream sends
    /// meanwhile (P8): interim answers (`100 Continue`) are skipped and
    /// writing goes on; a final answer begun first (an early 413 from a
    /// server that stops reading), or the upstream's close, stops it and
    /// says so (`false`), rather than wait on a full socket until the read
    /// timeout.
    async fn write_body(&mut self, body: &[u8]) -> Result<bool, H1Error> {
        let mut sent = 0;
        poll_fn(|cx| loop {
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(false)),
                Poll::Ready(Ok(_)) => {
                    while lead(&mut self.buf) == Lead::Interim {}
                    if !self.buf.is_empty() && lead(&mut self.buf) == Lead::Final {
                        return Poll::Ready(Ok(false));
                    }
                    // Empty, or a head still partial: read again.
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {}
            }
            if sent == body.len() {
                return Pin::new(&mut self.io)
                    .poll_flush(cx)
                    .map(|r| r.map(|()| true).map_err(H1Error::from));
            }
            match ready!(Pin::new(&mut self.io).poll_write(cx, &body[sent..])) {
                Ok(0) => return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into())),
                Ok(n) => sent += n,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        })
        .await
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
        conn.write_head(&head).await?;
    } else {
        conn.write_head(&head).await?;
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
