//! Meter: reads token usage from responses as they pass (P2, U1, U4).
//! Pure, no I/O: `usage_of_json` reads a whole JSON body; `SseMeter` is fed
//! a stream's bytes chunk by chunk, hands back the bytes to forward (whole
//! events, as soon as each is complete), and remembers the usage chunk and
//! how much text went by, for a stream cut short.
//!
//! When the gateway itself asked for `stream_options.include_usage`, the
//! usage-only chunk (`"choices": []`) is the gateway's business and is not
//! forwarded: the client gets the shape it asked for.

use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use crate::pricing::Usage;

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<WireDetails>,
}

#[derive(Deserialize)]
struct WireDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(w: WireUsage) -> Usage {
        let cached = w
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(w.prompt_tokens);
        Usage {
            input_tokens: w.prompt_tokens,
            cached_tokens: cached,
            output_tokens: w.completion_tokens,
        }
    }
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// The `usage` of a non-streamed response (chat, completions, embeddings).
pub fn usage_of_json(body: &[u8]) -> Option<Usage> {
    if let Some(u) = trailing_usage(body) {
        return Some(u);
    }
    serde_json::from_slice::<WithUsage>(body)
        .ok()
        .and_then(|w| w.usage)
        .map(Usage::from)
}

/// Searchers built once: building one per call costs more than the search.
static EARLIER_KEY: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
static UNICODE_ESCAPE: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"\\u"));

/// Fast path of `usage_of_json`. OpenAI-compatible servers write `usage`
/// near the end of the body (after `choices`, before at most a few short
/// members such as `system_fingerprint`). Reading the whole body with serde
/// costs ~20 instructions a byte, most of the meter's share of a request
/// (callgrind, BENCHMARKS.md) and growing with the completion; this reads
/// only the tail: the last `"usage"` key, its value, and what follows.
///
/// It answers only when the match is certainly the top-level `usage`: an
/// unescaped `"usage"` followed by `:` is a key token; if everything after
/// its value is a flat run of `, "name": value` members closed by the last
/// `}` of the body, that key sits at the top level. Anything else (no
/// match, nested `usage`, `null`, another shape) falls back to the full
/// parse, which decides as before.
///
/// serde decodes escapes in names and refuses a repeated field, so the fast
/// path also stands aside when a name it reads has a `\`, when `"usage"`
/// appears earlier, or when the text before it has a `\u` escape (which
/// could spell `usage`). What it does not check is that the text before
/// the match is well-formed: a malformed body with a well-formed tail is
/// billed by the usage it reports, where serde would refuse the body and
/// the bill would be an estimate.
fn trailing_usage(body: &[u8]) -> Option<Usage> {
    const KEY: &[u8] = b"\"usage\"";
    // The last `"usage"`, from the end: memchr's two-way `rfind` builds a
    // searcher per call, dearer than stepping back over the few quotes
    // that follow `usage` in a response.
    let at = memchr::memrchr_iter(b'"', body).find(|&i| body[i..].starts_with(KEY))?;
    let before = &body[..at];
    if EARLIER_KEY.find(before).is_some() || UNICODE_ESCAPE.find(before).is_some() {
        return None;
    }
    // An odd run of backslashes escapes the quote: we are inside a string.
    let escapes = before.iter().rev().take_while(|&&b| b == b'\\').count();
    if escapes % 2 == 1 {
        return None;
    }
    let mut c = Cursor {
        b: body,
        i: at + KEY.len(),
    };
    c.eat(b':')?;
    let usage = c.usage()?;
    loop {
        match c.peek()? {
            b'}' => {
                c.i += 1;
                return (c.peek().is_none()).then(|| usage.into());
            }
            b',' => {
                c.i += 1;
                c.name()?;
                c.eat(b':')?;
                c.skip_value(0)?;
            }
            _ => return None,
        }
    }
}

/// A strict little JSON reader for the fast path: it reads only what it
/// needs, without building anything, and answers `None` to anything it does
/// not expect (the caller then asks serde). Hand-written because serde's
/// streaming deserializer cost ~5,000 instructions for a `usage` object of
/// ~300 bytes (callgrind, BENCHMARKS.md); this costs a few a byte.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

/// Nesting skipped at most; deeper values fall back to serde.
const MAX_DEPTH: usize = 32;

impl<'a> Cursor<'a> {
    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.i += 1)
    }

    /// A string token; its raw bytes, escapes left as they are.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(&self.b[start..self.i - 1]);
                }
                b'\\' => self.i += 2,
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
    }

    /// A member name, refused if it has an escape: serde would decode it
    /// (`"prompt\u005ftokens"` is `prompt_tokens` to serde).
    fn name(&mut self) -> Option<&'a [u8]> {
        let name = self.string()?;
        (!name.contains(&b'\\')).then_some(name)
    }

    /// A non-negative integer that fits a u64, and nothing else (no sign,
    /// fraction or exponent: serde would refuse those for a u64 too).
    fn uint(&mut self) -> Option<u64> {
        self.peek()?;
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.b.get(self.i) {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let len = self.i - start;
        let leading_zero = len > 1 && self.b[start] == b'0';
        let ends = !matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E' | b'-' | b'+'));
        (len > 0 && !leading_zero && ends).then_some(n)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    /// `null`, consumed; false (nothing consumed) for anything else.
    fn null(&mut self) -> Option<bool> {
        Some(self.peek()? == b'n' && self.literal(b"null").is_some())
    }

    /// Skip a number by JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)?
    /// ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        let digits = |c: &mut Self| {
            let start = c.i;
            while let Some(b'0'..=b'9') = c.b.get(c.i) {
                c.i += 1;
            }
            c.i - start
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let first = *self.b.get(self.i)?;
        let int = digits(self);
        if int == 0 || (first == b'0' && int > 1) {
            return None;
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            (digits(self) > 0).then_some(())?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            (digits(self) > 0).then_some(())?;
        }
        Some(())
    }

    /// Skip one well-formed value.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            open @ (b'{' | b'[') if depth < MAX_DEPTH => {
                self.i += 1;
                let close = if open == b'{' { b'}' } else { b']' };
                if self.peek()? == close {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    if open == b'{' {
                        self.string()?;
                        self.eat(b':')?;
                    }
                    self.skip_value(depth + 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        c if c == close => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }

    /// Visit each member of an object: `f` gets the raw key and reads the
    /// value (or answers `None` to give up).
    fn object(&mut self, mut f: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.name()?;
            self.eat(b':')?;
            f(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The `usage` object, as serde would read it into `WireUsage`; a
    /// repeated field gives up, as serde refuses one.
    fn usage(&mut self) -> Option<WireUsage> {
        fn once<T>(slot: &mut Option<T>, v: T) -> Option<()> {
            slot.is_none().then(|| *slot = Some(v))
        }
        let (mut prompt, mut completion, mut details) = (None, None, None);
        self.object(|c, key| match key {
            b"prompt_tokens" => once(&mut prompt, c.uint()?),
            b"completion_tokens" => once(&mut completion, c.uint()?),
            b"prompt_tokens_details" => {
                let d = if c.null()? {
                    None
                } else {
                    let mut cached = None;
                    c.object(|c, key| match key {
                        b"cached_tokens" => {
                            let v = if c.null()? { None } else { Some(c.uint()?) };
                            once(&mut cached, v)
                        }
                        _ => c.skip_value(1),
                    })?;
                    Some(WireDetails {
                        cached_tokens: cached.flatten(),
                    })
                };
                once(&mut details, d)
            }
            _ => c.skip_value(1),
        })?;
        Some(WireUsage {
            prompt_tokens: prompt.unwrap_or(0),
            completion_tokens: completion.unwrap_or(0),
            prompt_tokens_details: details.flatten(),
        })
    }
}

/// Tokens in a text by the usual rule of thumb (4 bytes a token), at least
/// one for any non-empty text. Used only when the upstream never reported
/// usage (a cancelled stream, U4).
pub fn estimate_tokens(bytes: usize) -> u64 {
    bytes.div_ceil(4) as u64
}

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
        include_str!("../../tests/fixtures/openai/chat_completion_stream_with_usage.sse");

    #[test]
    fn reads_usage_and_cached_tokens_from_json() {
        let body = include_bytes!("../../tests/fixtures/openai/chat_completion.json");
        let u = usage_of_json(body).unwrap();
        assert_eq!(
            (u.input_tokens, u.cached_tokens, u.output_tokens),
            (1219, 1024, 10)
        );
        let e = include_bytes!("../../tests/fixtures/openai/embeddings.json");
        assert_eq!(usage_of_json(e).unwrap().output_tokens, 0);
        assert_eq!(usage_of_json(b"{\"id\":1}"), None);
    }

    /// The tail-first fast path agrees with the full parse, or stands
    /// aside for it.
    #[test]
    fn usage_fast_path_agrees_with_the_full_parse() {
        let full = |b: &[u8]| {
            serde_json::from_slice::<WithUsage>(b)
                .ok()
                .and_then(|w| w.usage)
                .map(Usage::from)
        };
        let fixtures: [&[u8]; 3] = [
            include_bytes!("../../tests/fixtures/openai/chat_completion.json"),
            include_bytes!("../../tests/fixtures/openai/completion.json"),
            include_bytes!("../../tests/fixtures/openai/embeddings.json"),
        ];
        for f in fixtures {
            assert!(
                trailing_usage(f).is_some(),
                "{}",
                String::from_utf8_lossy(f)
            );
            assert_eq!(trailing_usage(f), full(f));
        }
        let u = r#"{"prompt_tokens":3,"completion_tokens":4}"#;
        let answered = [
            format!(r#"{{"a":1,"usage":{u}}}"#),
            format!(r#"{{"usage" : {u} , "x" : [1,{{"y":"}}"}}], "z": null }}  "#),
            format!(r#"{{"a":"\\","usage":{u},"fp":"fp_1"}}"#),
            r#"{"usage":{"prompt_tokens":9,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":4}}}"#.to_string(),
            r#"{"usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":null}},"n":-1.5e3}"#.to_string(),
            r#"{"usage":{"prompt_tokens":9,"x":[0,-0,0.5,1E+2,2e-3,-12.25E9]}}"#.to_string(),
            r#"{"usage":{"prompt_tokens":9,"prompt_tokens_details":null,"x":[true,false,{}]}}"#.to_string(),
            r#"{"usage":{"prompt_tokens":0,"completion_tokens":18446744073709551615}}"#.to_string(),
            r#"{"usage":{}}"#.to_string(),
        ];
        for b in &answered {
            assert_eq!(trailing_usage(b.as_bytes()), full(b.as_bytes()), "{b}");
            assert!(trailing_usage(b.as_bytes()).is_some(), "{b}");
        }
        // Not certainly top level, not an object, or not there: the full
        // parse decides.
        let declined = [
            format!(r#"{{"choices":[{{"usage":{u}}}]}}"#),
            format!(r#"{{"a":{{"usage":{u}}},"b":1}}"#),
            r#"{"a":"{\"usage\":{\"prompt_tokens\":3}}"}"#.to_string(),
            format!(r#"{{"\"usage":{u}}}"#),
            format!(r#"{{"usage":{u},"x":{{"y":1}}}}}}"#),
            r#"{"usage":null}"#.to_string(),
            r#"{"usage":{"prompt_tokens":"3"}}"#.to_string(),
            // What serde refuses for a u64 field, or refuses outright.
            r#"{"usage":{"prompt_tokens":3,"prompt_tokens":4}}"#.to_string(),
            r#"{"usage":{"prompt_tokens":3.0}}"#.to_string(),
            r#"{"usage":{"prompt_tokens":03}}"#.to_string(),
            r#"{"usage":{"prompt_tokens":-3}}"#.to_string(),
            r#"{"usage":{"prompt_tokens":18446744073709551616}}"#.to_string(),
            r#"{"usage":{"prompt_tokens":null}}"#.to_string(),
            r#"{"usage":{"prompt_tokens":3},"x":tru}"#.to_string(),
            r#"{"usage":{"prompt_tokens":3},"x":[1,]}"#.to_string(),
            // Names serde decodes, or a field serde sees twice.
            r#"{"usage":{"prompt\u005ftokens":100,"completion_tokens":5}}"#.to_string(),
            r#"{"usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached\u005ftokens":4}}}"#
                .to_string(),
            r#"{"usage":null,"usage":{"prompt_tokens":5}}"#.to_string(),
            r#"{"\u0075sage":null,"usage":{"prompt_tokens":5}}"#.to_string(),
            r#"{"usage":{"prompt_tokens":5},"\u0075sage":null}"#.to_string(),
            r#"{"usage":{"prompt_tokens":3},"x":01}"#.to_string(),
            r#"{"usage":{"prompt_tokens":3},"x":1.}"#.to_string(),
            r#"{"usage":{"prompt_tokens":3},"x":-}"#.to_string(),
            r#"{"usage":{"prompt_tokens":3},"x":1e}"#.to_string(),
            r#"{"usage":{"prompt_tokens":3},"x":.5}"#.to_string(),
            r#"{"usage":{"prompt_tokens":3},"x":"a
b"}"#
                .to_string(),
            r#"{"id":1}"#.to_string(),
            String::new(),
        ];
        for b in &declined {
            assert_eq!(trailing_usage(b.as_bytes()), None, "{b}");
            assert_eq!(usage_of_json(b.as_bytes()), full(b.as_bytes()), "{b}");
        }
        assert_eq!(usage_of_json(declined[0].as_bytes()), None);
        assert_eq!(usage_of_json(declined[1].as_bytes()), None);
        assert_eq!(usage_of_json(declined[2].as_bytes()), None);
        assert_eq!(usage_of_json(declined[3].as_bytes()), None);
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::{json, Value};
        let key = prop::sample::select(vec!["usage", "a", "choices", "\"usage", "usage\\"]);
        let leaf = prop_oneof![
            Just(Value::Null),
            (0u64..5000).prop_map(Value::from),
            prop::sample::select(vec!["usage", "\"usage\":{}", "}", "x\\"]).prop_map(Value::from),
            (0u64..50, 0u64..50)
                .prop_map(|(p, c)| json!({"prompt_tokens": p, "completion_tokens": c})),
            (0u64..50, prop::option::of(0u64..80)).prop_map(|(p, c)| {
                json!({"prompt_tokens": p, "prompt_tokens_details": {"cached_tokens": c, "audio_tokens": 0}})
            }),
            prop::sample::select(vec![-1.5f64, 2.0, 1e300]).prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec((key.clone(), inner), 0..4).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    proptest::proptest! {
        /// On any object, compact or pretty, the fast path answers what the
        /// full parse answers, or nothing.
        #[test]
        fn usage_fast_path_never_disagrees(v in json_value()) {
            let full = |b: &[u8]| {
                serde_json::from_slice::<WithUsage>(b).ok().and_then(|w| w.usage).map(Usage::from)
            };
            for text in [serde_json::to_vec(&v).unwrap(), serde_json::to_vec_pretty(&v).unwrap()] {
                let fast = trailing_usage(&text);
                proptest::prop_assert!(fast.is_none() || fast == full(&text), "{}", String::from_utf8_lossy(&text));
                proptest::prop_assert_eq!(usage_of_json(&text), full(&text));
            }
        }
    }

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
