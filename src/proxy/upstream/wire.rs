//! The upstream response's framing, pure: the head (status line and
//! headers, read with `httparse`, hyper's own parser), and the body's end
//! by `Content-Length`, chunked coding (extensions skipped, trailers read
//! and dropped) or the connection's close (RFC 9112).
//!
//! No I/O here: everything works on the bytes read so far, in a `BytesMut`
//! the caller fills (`conn.rs`), so it can be tested, and fuzzed, alone.
//! What is decoded is consumed from the buffer; what is not yet whole
//! stays there for the next call.

use std::io;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::{Buf, Bytes, BytesMut};

use super::H1Error;

/// Response head size accepted at most, and header lines in it.
pub const MAX_HEAD: usize = 64 * 1024;
pub const MAX_HEADERS: usize = 100;
/// A chunk-size or trailer line accepted at most.
const MAX_LINE: usize = 4096;

/// A response head, read.
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: Framing,
    pub keep_alive: bool,
}

pub enum Parsed {
    Partial,
    /// A 1xx head, consumed.
    Interim,
    /// The final head, consumed.
    Final(Head),
}

/// Parse the head at the start of `buf`; a whole head is consumed. Header
/// values share the head's bytes instead of copying each out (an
/// allocation a header).
pub fn parse_head(buf: &mut BytesMut) -> Result<Parsed, H1Error> {
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
    // P8: with both, `Transfer-Encoding` frames the body (`framing`), but
    // the two disagree on where it ends, so the connection is not reused
    // (RFC 9112 6.1: a smuggling attempt, or a broken intermediary).
    let both_lengths = headers.contains_key(header::TRANSFER_ENCODING)
        && headers.contains_key(header::CONTENT_LENGTH);
    let keep_alive = version == Some(1)
        && !both_lengths
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

/// What starts a buffer read while the request body is still being sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Lead {
    /// Nothing, or not yet a whole head: keep sending.
    Partial,
    /// A whole 1xx head (`100 Continue` among them), consumed: keep
    /// sending (P8).
    Interim,
    /// A final head (left in place for `parse_head`), or bytes that are
    /// no head: stop sending, the answer has begun.
    Final,
}

/// Look at the start of `buf` while the request body is being written:
/// interim answers are consumed, a final one is left for `parse_head`.
pub fn lead(buf: &mut BytesMut) -> Lead {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => Lead::Partial,
        Ok(httparse::Status::Complete(n)) => match resp.code {
            Some(code) if code != 101 && (100..200).contains(&code) => {
                buf.advance(n);
                Lead::Interim
            }
            _ => Lead::Final,
        },
        // Malformed or too large: `parse_head` will say so.
        _ => Lead::Final,
    }
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
pub fn framing(status: StatusCode, headers: &HeaderMap) -> Result<Framing, H1Error> {
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

/// How a body ends, and how far it has been read.
pub enum Framing {
    /// This many body bytes left.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes; the connection is not reused.
    Close,
}

#[derive(Clone, Copy)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

/// What one `Framing::decode` step found in the buffer.
pub enum Decoded {
    /// Body bytes, consumed from the buffer.
    Data(Bytes),
    /// The body has ended; the buffer holds what came after it.
    End,
    /// Nothing more can be decoded until more bytes are read.
    More,
}

impl Framing {
    /// Decode what `buf` holds: the next body bytes, the body's end, or a
    /// call for more. Chunk-size lines, the CRLF after each chunk's data,
    /// and trailers are consumed on the way.
    #[inline]
    pub fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Decoded> {
        loop {
            match self {
                Framing::Length(0) => return Ok(Decoded::End),
                Framing::Length(left) => return Ok(take_data(buf, left)),
                Framing::Close if buf.is_empty() => return Ok(Decoded::More),
                Framing::Close => {
                    let all = buf.len();
                    return Ok(Decoded::Data(buf.split_to(all).freeze()));
                }
                Framing::Chunked(state) => match *state {
                    Chunk::Size => {
                        let Some(line) = take_line(buf)? else {
                            return Ok(Decoded::More);
                        };
                        let size = chunk_size(&line)?;
                        *state = if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Chunk::Data(mut left) => {
                        let data = take_data(buf, &mut left);
                        if let Decoded::Data(_) = data {
                            *state = if left == 0 {
                                Chunk::DataEnd
                            } else {
                                Chunk::Data(left)
                            };
                        }
                        return Ok(data);
                    }
                    Chunk::DataEnd => match take_line(buf)? {
                        Some(line) if line.is_empty() => *state = Chunk::Size,
                        Some(_) => return Err(malformed("chunk overran")),
                        None => return Ok(Decoded::More),
                    },
                    Chunk::Trailers => match take_line(buf)? {
                        // Trailers are not forwarded (nor were they before).
                        Some(line) if line.is_empty() => return Ok(Decoded::End),
                        Some(_) => {}
                        None => return Ok(Decoded::More),
                    },
                },
            }
        }
    }

    /// The connection has ended where `decode` asked for more: the end of
    /// a body read to the close, else a body cut short.
    pub fn at_close(&self) -> io::Result<()> {
        match self {
            Framing::Close => Ok(()),
            _ => Err(cut_short()),
        }
    }
}

/// Up to `left` body bytes of what `buf` holds, or a call for more.
#[inline]
fn take_data(buf: &mut BytesMut, left: &mut u64) -> Decoded {
    if buf.is_empty() {
        return Decoded::More;
    }
    let take = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
    *left -= take as u64;
    Decoded::Data(buf.split_to(take).freeze())
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
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                true,
            ),
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

    #[test]
    fn interim_heads_are_consumed_while_sending_and_a_final_one_is_kept() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nx: 1\r\n\r\nHTTP/1.1 41"[..],
        );
        assert_eq!(lead(&mut buf), Lead::Interim);
        assert_eq!(lead(&mut buf), Lead::Interim);
        assert_eq!(lead(&mut buf), Lead::Partial);
        assert_eq!(&buf[..], b"HTTP/1.1 41");
        buf.extend_from_slice(b"3 Too Large\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(lead(&mut buf), Lead::Final);
        assert!(matches!(parse_head(&mut buf), Ok(Parsed::Final(h)) if h.status == 413));
        assert_eq!(
            lead(&mut BytesMut::from(&b"garbage\r\n\r\n"[..])),
            Lead::Final
        );
        assert_eq!(
            lead(&mut BytesMut::from(&b"HTTP/1.1 101 Up\r\n\r\n"[..])),
            Lead::Final
        );
        assert_eq!(lead(&mut BytesMut::new()), Lead::Partial);
    }

    /// Feed `wire` to `framing` in pieces of `size` bytes, as a connection
    /// would; the body decoded, and what came after its end (read into the
    /// buffer or not).
    fn decode_in_pieces(
        mut framing: Framing,
        wire: &[u8],
        size: usize,
    ) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let mut buf = BytesMut::new();
        let mut pieces = wire.chunks(size);
        let mut body = Vec::new();
        loop {
            match framing.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::End => {
                    let mut rest = buf.to_vec();
                    rest.extend(pieces.flatten());
                    return Ok((body, rest));
                }
                Decoded::More => match pieces.next() {
                    Some(p) => buf.extend_from_slice(p),
                    None => {
                        framing.at_close()?;
                        return Ok((body, buf.to_vec()));
                    }
                },
            }
        }
    }

    #[test]
    fn bodies_decode_alike_in_any_split() {
        let chunked = b"5;ext=1\r\nhello\r\n1\nx\r\n0\r\ntrailer: 1\r\n\r\nNEXT";
        for size in [1, 2, 3, 7, 64] {
            let got = decode_in_pieces(Framing::Chunked(Chunk::Size), chunked, size).unwrap();
            assert_eq!(got, (b"hellox".to_vec(), b"NEXT".to_vec()), "{size}");
            let got = decode_in_pieces(Framing::Length(4), b"abcdNEXT", size).unwrap();
            assert_eq!(got, (b"abcd".to_vec(), b"NEXT".to_vec()), "{size}");
            let got = decode_in_pieces(Framing::Close, b"to the end", size).unwrap();
            assert_eq!(got, (b"to the end".to_vec(), Vec::new()), "{size}");
        }
        let cut = |f: Framing, wire: &[u8]| decode_in_pieces(f, wire, 3).unwrap_err().kind();
        assert_eq!(
            cut(Framing::Length(9), b"abc"),
            io::ErrorKind::UnexpectedEof
        );
        let half = b"5\r\nhel";
        assert_eq!(
            cut(Framing::Chunked(Chunk::Size), half),
            io::ErrorKind::UnexpectedEof
        );
        let overrun = b"1\r\nxy\r\n0\r\n\r\n";
        assert_eq!(
            cut(Framing::Chunked(Chunk::Size), overrun),
            io::ErrorKind::InvalidData
        );
        let long = vec![b'1'; MAX_LINE + 1];
        assert_eq!(
            cut(Framing::Chunked(Chunk::Size), &long),
            io::ErrorKind::InvalidData
        );
    }
}
