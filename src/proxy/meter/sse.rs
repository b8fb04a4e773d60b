//! SSE meter: frames a streamed answer by the WHATWG event-stream rules
//! (M11), forwards each event byte for byte as soon as it is complete (P2),
//! drops the usage-only chunk the gateway asked for (P2a), and reads usage
//! from whichever chunk carries it (M2), the generated text so far (M4,
//! U4a) and in-band errors (M5). Pure: no I/O, no clock.
//!
//! Framing is incremental: the framer keeps two bits between pushes, so each
//! byte is scanned once (memchr) however the upstream splits the stream,
//! and a complete event is split into lines once more when it is read.
//! Forwarding never re-frames: the client gets the upstream's bytes.
//!
//! Memory: the pending (incomplete) event is bounded only by what the
//! upstream sends before its blank line; the joined `data:` of a multi-line
//! event is kept in one scratch buffer reused from event to event.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::chunk::read_chunk;
use super::usage::RawUsage;

pub use super::chunk::generated_text_bytes;

/// Tokens in `bytes` of text by the rule of thumb (M4, U4a): 4 bytes a
/// token, rounded up (`ceil(bytes / 4)`), so any non-empty text is at least
/// one token.
pub fn estimate_tokens(bytes: usize) -> u64 {
    u64::try_from(bytes.div_ceil(4)).unwrap_or(u64::MAX)
}

/// The UTF-8 byte order mark a stream may start with (WHATWG: stripped).
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where the framer stands between two pushes. An event ends at a blank
/// line; a line ends in CRLF, LF or CR alone.
#[derive(Debug, Clone, Copy)]
struct Framer {
    /// Nothing of the current line seen yet (so a terminator here makes a
    /// blank line).
    at_line_start: bool,
    /// The last byte seen ended a line with CR: an LF next is part of that
    /// terminator (CRLF split across two pushes), not a line of its own.
    after_cr: bool,
}

impl Framer {
    const fn new() -> Framer {
        Framer {
            at_line_start: true,
            after_cr: false,
        }
    }

    /// The offset just past the blank line that ends the first event in
    /// `data` (continuing from the state), or `None` when `data` ends
    /// inside an event. A blank line ending in CR at the end of `data`
    /// ends the event there; an LF that follows in the next push belongs
    /// to it (the caller sees `after_cr` still set).
    fn next_event_end(&mut self, data: &[u8]) -> Option<usize> {
        let mut i = 0;
        if self.after_cr && !data.is_empty() {
            self.after_cr = false;
            if data.first() == Some(&b'\n') {
                i = 1;
            }
        }
        while let Some(k) = data.get(i..).and_then(|r| memchr::memchr2(b'\r', b'\n', r)) {
            let at = i + k;
            let blank = self.at_line_start && k == 0;
            i = at + 1;
            if data.get(at) == Some(&b'\r') {
                match data.get(i) {
                    Some(b'\n') => i += 1,
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            self.at_line_start = true;
            if blank {
                return Some(i);
            }
        }
        if i < data.len() {
            self.at_line_start = false;
        }
        None
    }
}

/// The lines of a complete event, without their terminators.
struct Lines<'a>(&'a [u8]);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        let Some(k) = memchr::memchr2(b'\r', b'\n', self.0) else {
            return Some(std::mem::take(&mut self.0));
        };
        let (line, rest) = self.0.split_at(k);
        let rest = match rest {
            [b'\r', b'\n', rest @ ..] | [_, rest @ ..] => rest,
            [] => rest,
        };
        self.0 = rest;
        Some(line)
    }
}

/// A line's field name and value: the value after the first colon, one
/// leading space removed; a line without a colon is all name (WHATWG).
fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b':', line) {
        Some(c) => {
            let (name, value) = line.split_at(c);
            let value = value.get(1..).unwrap_or_default();
            (name, value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[]),
    }
}

/// An event's data (its `data:` lines joined by LF) and whether it has an
/// `event: error` field. One `data:` line (the common case) is borrowed
/// from the event; more are joined in `scratch`.
fn event_data<'a>(event: &'a [u8], scratch: &'a mut Vec<u8>) -> (&'a [u8], bool) {
    let (mut first, mut joined, mut error) = (None, false, false);
    scratch.clear();
    for line in Lines(event) {
        match field(line) {
            (b"data", value) => match first {
                None => first = Some(value),
                Some(first) => {
                    if !joined {
                        scratch.extend_from_slice(first);
                        joined = true;
                    }
                    scratch.push(b'\n');
                    scratch.extend_from_slice(value);
                }
            },
            (b"event", value) => error |= value == b"error",
            _ => {}
        }
    }
    let scratch: &'a Vec<u8> = scratch;
    let data = if joined {
        scratch.as_slice()
    } else {
        first.unwrap_or_default()
    };
    (data, error)
}

/// The bytes one push hands back: a run of the incoming chunk (no copy)
/// for as long as what is forwarded is one contiguous run of it, else a
/// buffer that the runs and the completed pending event are copied into.
#[derive(Default)]
struct Out {
    buf: Option<BytesMut>,
    run: Option<Range<usize>>,
}

impl Out {
    fn run(&mut self, chunk: &[u8], r: Range<usize>) {
        match &mut self.run {
            Some(cur) if cur.end == r.start => cur.end = r.end,
            _ => {
                self.flush(chunk);
                self.run = Some(r);
            }
        }
    }

    fn copy(&mut self, chunk: &[u8], bytes: &[u8]) {
        self.flush(chunk);
        self.buf
            .get_or_insert_with(BytesMut::new)
            .extend_from_slice(bytes);
    }

    fn flush(&mut self, chunk: &[u8]) {
        if let Some(r) = self.run.take() {
            let run = chunk.get(r).unwrap_or_default();
            self.buf
                .get_or_insert_with(BytesMut::new)
                .extend_from_slice(run);
        }
    }

    fn into_bytes(mut self, chunk: &Bytes) -> Bytes {
        match (&self.buf, &self.run) {
            (None, None) => Bytes::new(),
            (None, Some(r)) if r.end <= chunk.len() && r.start <= r.end => chunk.slice(r.clone()),
            _ => {
                self.flush(chunk);
                self.buf.map(BytesMut::freeze).unwrap_or_default()
            }
        }
    }
}

/// Incremental reader of an SSE answer. Feed it the upstream's chunks with
/// `push`, forward what it hands back, then call `finish` at the end.
#[derive(Debug)]
pub struct SseMeter {
    framer: Framer,
    /// The incomplete event so far (not yet forwarded).
    pending: BytesMut,
    /// The last completed event was dropped: an LF completing its CRLF in
    /// the next push is dropped with it.
    last_hidden: bool,
    /// No event read yet (a leading BOM is skipped when reading it).
    first_event: bool,
    /// Drop the usage-only chunk (the gateway injected include_usage, P2a).
    hide_usage_chunk: bool,
    usage: Option<RawUsage>,
    text_bytes: usize,
    done: bool,
    error: bool,
    /// The joined data of a multi-line event; reused, so joining allocates
    /// only when an event is longer than any before it.
    scratch: Vec<u8>,
}

impl SseMeter {
    /// A meter; `hide_usage_chunk` when the gateway itself asked for
    /// `stream_options.include_usage` (P2a).
    pub fn new(hide_usage_chunk: bool) -> SseMeter {
        SseMeter {
            framer: Framer::new(),
            pending: BytesMut::new(),
            last_hidden: false,
            first_event: true,
            hide_usage_chunk,
            usage: None,
            text_bytes: 0,
            done: false,
            error: false,
            scratch: Vec::new(),
        }
    }

    /// The last usage object with a usable count the upstream sent (M2),
    /// counts as written; `resolve` turns it into a bill.
    pub fn usage(&self) -> Option<RawUsage> {
        self.usage
    }

    /// Bytes of generated text seen so far (M4): decoded string bytes of
    /// content, reasoning, refusal, tool-call names and arguments, `text`.
    pub fn text_bytes(&self) -> usize {
        self.text_bytes
    }

    /// `data: [DONE]` seen.
    pub fn done(&self) -> bool {
        self.done
    }

    /// An in-band error seen (M5): an event with an `event: error` field,
    /// or whose data is JSON with a top-level `error` member not null.
    pub fn error(&self) -> bool {
        self.error
    }

    /// Bytes held back: the incomplete event.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Feed bytes from the upstream; returns the bytes to send on now: the
    /// upstream's bytes of every event this chunk completes, less a hidden
    /// usage-only chunk. Incomplete events wait. When nothing is pending
    /// and nothing is hidden, the answer is a slice of `chunk` (no copy).
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        let mut out = Out::default();
        let mut pos = 0;
        if self.framer.after_cr && self.pending.is_empty() && !chunk.is_empty() {
            // The last event ended in a CR at the end of the previous
            // chunk: an LF here completes its CRLF and goes with it.
            self.framer.after_cr = false;
            if chunk.first() == Some(&b'\n') {
                if !self.last_hidden {
                    out.run(&chunk, 0..1);
                }
                pos = 1;
            }
        }
        while let Some(len) = self
            .framer
            .next_event_end(chunk.get(pos..).unwrap_or_default())
        {
            let end = pos + len;
            let tail = chunk.get(pos..end).unwrap_or_default();
            if self.pending.is_empty() {
                self.last_hidden = self.observe(tail);
                if !self.last_hidden {
                    out.run(&chunk, pos..end);
                }
            } else {
                let mut event = std::mem::take(&mut self.pending);
                event.extend_from_slice(tail);
                self.last_hidden = self.observe(&event);
                if !self.last_hidden {
                    out.copy(&chunk, &event);
                }
                event.clear();
                self.pending = event;
            }
            pos = end;
        }
        self.pending
            .extend_from_slice(chunk.get(pos..).unwrap_or_default());
        out.into_bytes(&chunk)
    }

    /// The end of the upstream: whatever is left (an unterminated event) is
    /// read and returned to forward (unless it is a hidden usage-only
    /// chunk). A client's parser discards it; the meter still bills a
    /// usage it carries, since the upstream reported it.
    pub fn finish(&mut self) -> Bytes {
        let rest = std::mem::take(&mut self.pending);
        self.framer = Framer::new();
        if rest.is_empty() || self.observe(&rest) {
            return Bytes::new();
        }
        rest.freeze()
    }

    /// Read one complete event; true if it must not be forwarded.
    fn observe(&mut self, event: &[u8]) -> bool {
        let event = if std::mem::take(&mut self.first_event) {
            event.strip_prefix(BOM).unwrap_or(event)
        } else {
            event
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let (data, error_event) = event_data(event, &mut scratch);
        self.error |= error_event;
        let hide = self.read_data(data);
        self.scratch = scratch;
        hide
    }

    /// Read an event's joined data; true if it is the usage-only chunk and
    /// that is to be hidden (P2a). Usage on a chunk with choices is read
    /// and never hidden (M2).
    fn read_data(&mut self, data: &[u8]) -> bool {
        let data = data.trim_ascii();
        if data.is_empty() {
            return false;
        }
        if data == b"[DONE]" {
            self.done = true;
            return false;
        }
        let Some(facts) = read_chunk(data) else {
            return false;
        };
        self.text_bytes = self.text_bytes.saturating_add(facts.text_bytes);
        self.error |= facts.error;
        if let Some(u) = facts.usage.filter(RawUsage::has_any) {
            self.usage = Some(u);
        }
        self.hide_usage_chunk && facts.usage.is_some() && facts.choices.unwrap_or(0) == 0
    }
}

#[cfg(test)]
mod tests;
