//! The SSE meter: a streamed response's events passed on as they
//! complete, each read on the way for the usage chunk, the generated
//! text's length and `[DONE]`; the usage-only chunk hidden when the
//! gateway asked for it.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use super::WireUsage;
use crate::pricing::Usage;

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    /// Completions stream `text` instead of `delta.content`.
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
}

/// Incremental reader of an SSE response.
#[derive(Default)]
pub struct SseMeter {
    buf: BytesMut,
    /// Drop the usage-only chunk (the gateway injected include_usage).
    hide_usage_chunk: bool,
    usage: Option<Usage>,
    text_bytes: usize,
    done: bool,
}

impl SseMeter {
    pub fn new(hide_usage_chunk: bool) -> SseMeter {
        SseMeter {
            hide_usage_chunk,
            ..SseMeter::default()
        }
    }

    /// The usage the upstream reported, if it has yet.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Bytes of generated text seen so far.
    pub fn text_bytes(&self) -> usize {
        self.text_bytes
    }

    /// `data: [DONE]` seen.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Feed bytes from the upstream; returns the bytes to send on now
    /// (every event completed by this chunk). Incomplete events wait.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.buf.is_empty() && !self.hide_usage_chunk {
            // Common case: scan in place, forward what is complete, no copy.
            let complete = self.scan(&chunk);
            self.buf.extend_from_slice(&chunk[complete..]);
            return chunk.slice(..complete);
        }
        self.buf.extend_from_slice(&chunk);
        let mut out = BytesMut::with_capacity(self.buf.len());
        let data = std::mem::take(&mut self.buf);
        let mut start = 0;
        while let Some(len) = event_len(&data[start..]) {
            let event = &data[start..start + len];
            if !self.observe(event) {
                out.extend_from_slice(event);
            }
            start += len;
        }
        self.buf.extend_from_slice(&data[start..]);
        out.freeze()
    }

    /// Whatever is left when the upstream ends (an unterminated event).
    pub fn finish(&mut self) -> Bytes {
        let rest = std::mem::take(&mut self.buf);
        if !rest.is_empty() {
            self.observe(&rest);
        }
        rest.freeze()
    }

    /// Observe every complete event at the start of `data`; returns how
    /// many bytes they span. Used when nothing needs hiding.
    fn scan(&mut self, data: &[u8]) -> usize {
        let mut start = 0;
        while let Some(len) = event_len(&data[start..]) {
            self.observe(&data[start..start + len]);
            start += len;
        }
        start
    }

    /// Read one event; true if it must not be forwarded.
    fn observe(&mut self, event: &[u8]) -> bool {
        let mut hide = false;
        for line in event.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(payload) = line.strip_prefix(b"data:") else {
                continue;
            };
            let payload = payload.strip_prefix(b" ").unwrap_or(payload);
            if payload == b"[DONE]" {
                self.done = true;
                continue;
            }
            let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(payload) else {
                continue;
            };
            let choices = chunk.choices.unwrap_or_default();
            for c in &choices {
                let text = c
                    .delta
                    .as_ref()
                    .and_then(|d| d.content.as_ref())
                    .or(c.text.as_ref());
                self.text_bytes += text.map_or(0, |t| t.len());
            }
            if let Some(u) = chunk.usage {
                self.usage = Some(u.into());
                hide |= self.hide_usage_chunk && choices.is_empty();
            }
        }
        hide
    }
}

/// Length of the first complete event in `data` (through its blank line).
fn event_len(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\n' {
            if data.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if data.get(i + 1) == Some(&b'\r') && data.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSE: &str =
        include_str!("../../../tests/fixtures/openai/chat_completion_stream_with_usage.sse");

    #[test]
    fn sse_passes_through_unchanged_in_any_chunking() {
        for size in [1, 2, 7, 64, 4096] {
            let mut m = SseMeter::new(false);
            let mut out = Vec::new();
            for piece in SSE.as_bytes().chunks(size) {
                out.extend_from_slice(&m.push(Bytes::copy_from_slice(piece)));
            }
            out.extend_from_slice(&m.finish());
            assert_eq!(String::from_utf8(out).unwrap(), SSE, "chunk size {size}");
            let u = m.usage().unwrap();
            assert!(u.input_tokens > 0 && u.output_tokens > 0);
            assert!(m.done());
            assert_eq!(m.text_bytes(), "Hello! How can I help?".len());
        }
    }

    #[test]
    fn injected_usage_chunk_is_hidden_and_still_read() {
        let mut m = SseMeter::new(true);
        let mut out = Vec::new();
        for piece in SSE.as_bytes().chunks(5) {
            out.extend_from_slice(&m.push(Bytes::copy_from_slice(piece)));
        }
        out.extend_from_slice(&m.finish());
        let out = String::from_utf8(out).unwrap();
        assert!(m.usage().is_some());
        assert!(!out.contains("\"choices\":[]"));
        assert!(out.ends_with("data: [DONE]\n\n"));
        assert_eq!(
            out.matches("data:").count(),
            SSE.matches("data:").count() - 1
        );
    }

    #[test]
    fn crlf_events_are_framed() {
        let mut m = SseMeter::new(false);
        let text =
            "data: {\"choices\":[{\"delta\":{\"content\":\"abcd\"}}]}\r\n\r\ndata: [DONE]\r\n\r\n";
        let out = m.push(Bytes::from_static(text.as_bytes()));
        assert_eq!(out.len(), text.len());
        assert_eq!(m.text_bytes(), 4);
        assert!(m.done());
    }
}
