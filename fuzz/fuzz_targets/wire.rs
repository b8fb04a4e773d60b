//! Fuzz the upstream response framing (`proxy::upstream::wire`) as the
//! I/O driver uses it: bytes arrive in pieces; the head is parsed once
//! whole, then the body is decoded until its end, a call for more bytes
//! that never come, or an error. While the first pieces arrive the request
//! body is taken to be still sending (`lead`: interim heads skipped, P8).
//! Nothing may panic, a body framed by `Content-Length` never yields more
//! bytes than it announced, and a head with both `Transfer-Encoding` and
//! `Content-Length` never keeps its connection.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tollgate::proxy::upstream::wire::{
    lead, parse_head, Decoded, Framing, Lead, Parsed, MAX_HEAD,
};

fuzz_target!(|data: &[u8]| {
    let Some((&split, wire)) = data.split_first() else {
        return;
    };
    let mut pieces = wire.chunks(usize::from(split).max(1));
    let mut buf = BytesMut::new();
    // Still sending (conn.rs `write_body`): as many pieces as `split`'s
    // low bits say, or until a final head begins.
    for _ in 0..(split & 7) {
        match lead(&mut buf) {
            Lead::Interim => continue,
            Lead::Final => break,
            Lead::Partial => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return,
            },
        }
    }
    // The head, re-parsed as more arrives (conn.rs `read_head`).
    let mut head = loop {
        match parse_head(&mut buf) {
            Err(_) => return,
            Ok(Parsed::Final(head)) => break head,
            Ok(Parsed::Interim) => continue,
            Ok(Parsed::Partial) if buf.len() > MAX_HEAD => return,
            Ok(Parsed::Partial) => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return,
            },
        }
    };
    if head.headers.contains_key("transfer-encoding") && head.headers.contains_key("content-length")
    {
        assert!(!head.keep_alive, "TE and CL kept alive");
    }
    let announced = match head.framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    // The body (conn.rs `UpstreamBody::poll_next`).
    let mut got: u64 = 0;
    loop {
        match head.framing.decode(&mut buf) {
            Err(_) | Ok(Decoded::End) => break,
            Ok(Decoded::Data(d)) => {
                assert!(!d.is_empty(), "empty data");
                got += d.len() as u64;
            }
            Ok(Decoded::More) => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => {
                    let _ = head.framing.at_close();
                    break;
                }
            },
        }
        if let Some(n) = announced {
            assert!(got <= n, "more than content-length");
        }
    }
});
