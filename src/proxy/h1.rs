//! The upstream hop's HTTP/1.1 client: keep-alive connections pooled per
//! upstream, driven inside the request's own task.
//!
//! Why not hyper's pooled client: it runs every connection in a task of its
//! own and hands each request across a channel to it, so one proxied call
//! woke two more tasks (often on the other thread) and paid for the pool's
//! bookkeeping; together about a fifth of the gateway's instructions per
//! request (callgrind, BENCHMARKS.md). The upstream hop needs a small part
//! of HTTP/1.1: one request with a known length, then a response framed by
//! `Content-Length`, chunked coding, or the connection's end. That part is
//! here, with `httparse` (hyper's own parser) reading the response head.
//!
//! A connection goes back to the pool only when its response was read to
//! the end with nothing left over and the upstream did not ask to close it.
//! A pooled connection whose far side has closed is not reused: the check
//! reads tokio's readiness state, without a system call when it is alive.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Response head size accepted at most, and header lines in it.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// A chunk-size or trailer line accepted at most.
const MAX_LINE: usize = 4096;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Bodies up to this size are copied after the head, for one write.
pub const COALESCE_BODY: usize = 64 * 1024;

/// Why an exchange failed. Any of these leaves the connection closed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("cannot connect to the upstream: {0}")]
    Connect(io::Error),
    #[error("upstream i/o: {0}")]
    Io(#[from] io::Error),
    #[error("the upstream closed the connection before answering")]
    Closed,
    #[error("malformed upstream response: {0}")]
    Malformed(&'static str),
}

impl H1Error {
    pub fn is_timeout(&self) -> bool {
        match self {
            H1Error::Connect(e) | H1Error::Io(e) => e.kind() == io::ErrorKind::TimedOut,
            _ => false,
        }
    }
}

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

struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
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
    async fn checkout(&self) -> Result<Conn, H1Error> {
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
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
        })
    }

    fn checkin(&self, conn: Conn) {
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

impl Conn {
    /// Nothing to read and no close seen: the upstream has not hung up.
    fn alive(&self) -> bool {
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

    /// Up to `left` body bytes, as soon as any are there; the connection
    /// ending first is an error.
    fn poll_data(&mut self, cx: &mut Context<'_>, left: &mut u64) -> Poll<io::Result<Bytes>> {
        if self.buf.is_empty() && ready!(self.poll_fill(cx))? == 0 {
            return Poll::Ready(Err(cut_short()));
        }
        let take = self
            .buf
            .len()
            .min(usize::try_from(*left).unwrap_or(usize::MAX));
        *left -= take as u64;
        Poll::Ready(Ok(self.buf.split_to(take).freeze()))
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

/// A response head, read.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

enum Parsed {
    Partial,
    /// A 1xx head, consumed.
    Interim,
    /// The final head, consumed.
    Final(Head),
}

/// Parse the head at the start of `buf`; a whole head is consumed. Header
/// values share the head's bytes instead of copying each out (an
/// allocation a header).
fn parse_head(buf: &mut BytesMut) -> Result<Parsed, H1Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(H1Error::Malformed("too many response headers"))
        }
        Err(_) => return Err(H1Error::Malformed("unparsable response head")),
    };
    let code = resp.code.ok_or(H1Error::Malformed("no status"))?;
    if code == 101 {
        return Err(H1Error::Malformed("unexpected protocol switch"));
    }
    if (100..200).contains(&code) {
        buf.advance(n);
        return Ok(Parsed::Interim);
    }
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Malformed("bad status"))?;
    let version = resp.version;
    // Names now; values as offsets into the head, taken once it is split off.
    let base = buf.as_ptr() as usize;
    let mut names = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| H1Error::Malformed("bad header name"))?;
        let at = h.value.as_ptr() as usize - base;
        names.push((name, at..at + h.value.len()));
    }
    let head = buf.split_to(n).freeze();
    let mut headers = HeaderMap::with_capacity(names.len());
    for (name, range) in names {
        let value = HeaderValue::from_maybe_shared(head.slice(range))
            .map_err(|_| H1Error::Malformed("bad header value"))?;
        headers.append(name, value);
    }
    let framing = framing(status, &headers)?;
    // A 204 or 304 that announces a body has no body by rule, but its
    // sender may still write one: such a connection is not reused.
    let bodiless_with_length = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
        && (headers.contains_key(header::TRANSFER_ENCODING)
            || headers
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0"));
    let keep_alive = version == Some(1)
        && !bodiless_with_length
        && !matches!(framing, Framing::Close)
        && !has_token(&headers, header::CONNECTION, "close");
    Ok(Parsed::Final(Head {
        status,
        headers,
        framing,
        keep_alive,
    }))
}

/// Does a comma-separated header list hold `token` (case-insensitive)?
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// How the body ends (RFC 9112 section 6.3, for a response to a POST).
fn framing(status: StatusCode, headers: &HeaderMap) -> Result<Framing, H1Error> {
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Length(0));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty());
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case("chunked") => Framing::Chunked(Chunk::Size),
            _ => Framing::Close,
        });
    }
    let mut length: Option<u64> = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let n = std::str::from_utf8(part)
                .ok()
                .map(str::trim)
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or(H1Error::Malformed("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Malformed("conflicting content-lengths"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

enum Framing {
    /// This many body bytes left.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes; the connection is not reused.
    Close,
}

#[derive(Clone, Copy)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
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

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match &mut self.framing {
                Framing::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    let data = ready!(conn.poll_data(cx, left))?;
                    return Poll::Ready(Some(Ok(data)));
                }
                Framing::Close => {
                    if conn.buf.is_empty() && ready!(conn.poll_fill(cx))? == 0 {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    let all = conn.buf.len();
                    return Poll::Ready(Some(Ok(conn.buf.split_to(all).freeze())));
                }
                Framing::Chunked(state) => match *state {
                    Chunk::Size => {
                        let Some(line) = take_line(&mut conn.buf)? else {
                            if ready!(conn.poll_fill(cx))? == 0 {
                                return Poll::Ready(Some(Err(cut_short())));
                            }
                            continue;
                        };
                        let size = chunk_size(&line)?;
                        *state = if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Chunk::Data(mut left) => {
                        let data = ready!(conn.poll_data(cx, &mut left))?;
                        *state = if left == 0 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left)
                        };
                        return Poll::Ready(Some(Ok(data)));
                    }
                    Chunk::DataEnd => match take_line(&mut conn.buf)? {
                        Some(line) if line.is_empty() => *state = Chunk::Size,
                        Some(_) => return Poll::Ready(Some(Err(malformed("chunk overran")))),
                        None => {
                            if ready!(conn.poll_fill(cx))? == 0 {
                                return Poll::Ready(Some(Err(cut_short())));
                            }
                        }
                    },
                    Chunk::Trailers => match take_line(&mut conn.buf)? {
                        // Trailers are not forwarded (nor were they before).
                        Some(line) if line.is_empty() => {
                            self.finish();
                            return Poll::Ready(None);
                        }
                        Some(_) => {}
                        None => {
                            if ready!(conn.poll_fill(cx))? == 0 {
                                return Poll::Ready(Some(Err(cut_short())));
                            }
                        }
                    },
                },
            }
        }
    }
}

fn cut_short() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "upstream body cut short")
}

fn malformed(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// The next line (without its CRLF or LF), consumed; `None` if no whole
/// line has arrived yet.
fn take_line(buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
    match memchr::memchr(b'\n', buf) {
        Some(at) => {
            let mut line = buf.split_to(at + 1);
            line.truncate(at);
            if line.last() == Some(&b'\r') {
                line.truncate(at - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(malformed("chunk line too long")),
        None => Ok(None),
    }
}

/// `1a; ext=1` -> 26.
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
    let hex = hex.trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return Err(malformed("bad chunk size"));
    }
    hex.iter().try_fold(0u64, |n, &b| {
        let d = char::from(b)
            .to_digit(16)
            .ok_or_else(|| malformed("bad chunk size"))?;
        Ok(n * 16 + u64::from(d))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_parse_with_extensions_and_refuse_junk() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"0").unwrap(), 0);
        assert_eq!(chunk_size(b"FF ; name=value").unwrap(), 255);
        for bad in [&b""[..], b"g", b"-1", b"1 2", b"1234567890abcdef0", b";x"] {
            assert!(
                chunk_size(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        let ok = StatusCode::OK;
        assert!(matches!(
            framing(ok, &h(&[("content-length", "12")])),
            Ok(Framing::Length(12))
        ));
        assert!(matches!(
            framing(ok, &h(&[("content-length", "5, 5")])),
            Ok(Framing::Length(5))
        ));
        assert!(framing(ok, &h(&[("content-length", "5"), ("content-length", "6")])).is_err());
        assert!(framing(ok, &h(&[("content-length", "+5")])).is_err());
        assert!(matches!(
            framing(
                ok,
                &h(&[
                    ("transfer-encoding", "gzip, Chunked"),
                    ("content-length", "3")
                ])
            ),
            Ok(Framing::Chunked(_))
        ));
        assert!(matches!(
            framing(ok, &h(&[("transfer-encoding", "chunked, gzip")])),
            Ok(Framing::Close)
        ));
        assert!(matches!(framing(ok, &h(&[])), Ok(Framing::Close)));
        assert!(matches!(
            framing(StatusCode::NO_CONTENT, &h(&[("content-length", "9")])),
            Ok(Framing::Length(0))
        ));
    }

    #[test]
    fn heads_parse_skip_interim_responses_and_decide_keep_alive() {
        let parse = |text: &[u8]| parse_head(&mut BytesMut::from(text));
        let mut full = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\nx-a: 2\r\n\r\nhi"[..],
        );
        assert!(matches!(parse_head(&mut full), Ok(Parsed::Interim)));
        let Parsed::Final(head) = parse_head(&mut full).unwrap() else {
            panic!("final")
        };
        assert_eq!(&full[..], b"hi");
        assert_eq!(head.status, StatusCode::OK);
        let values: Vec<&HeaderValue> = head.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(head.headers["content-length"], "2");
        assert!(head.keep_alive);
        for (text, keep) in [
            (
                &b"HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n"[..],
                false,
            ),
            (b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false),
            (b"HTTP/1.1 200 OK\r\n\r\n", false),
            (
                b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n",
                false,
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\n", true),
        ] {
            let Parsed::Final(head) = parse(text).unwrap() else {
                panic!("final")
            };
            assert_eq!(head.keep_alive, keep, "{}", String::from_utf8_lossy(text));
        }
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-len"[..]);
        assert!(matches!(parse_head(&mut partial), Ok(Parsed::Partial)));
        assert_eq!(partial.len(), 28, "a partial head is left in place");
        assert!(parse(b"HTTP/1.1 101 Switching\r\n\r\n").is_err());
        assert!(parse(b"NOT HTTP\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nx-bad: a\x7fb\r\n\r\n").is_err());
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&many), Err(H1Error::Malformed(_))));
    }
}
