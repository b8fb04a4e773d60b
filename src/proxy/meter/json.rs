//! JSON meter: reads a non-streamed JSON answer chunk by chunk as the proxy
//! relays it (M8), in bounded state, and keeps what billing needs: the raw
//! top-level `usage` value (M2 reads it), the bytes of generated text for the
//! estimate when usage is absent (M4), and whether the body is an in-band
//! error (M5). Pure: no I/O, no allocation per byte; the only heap is the
//! `usage` capture, at most [`MAX_USAGE_BYTES`].
//!
//! It is a validating byte-level JSON state machine (strings, escapes,
//! UTF-8, numbers, literals, nesting), so `well_formed` means what serde_json
//! means by it, save one thing: numbers are checked by grammar, not range
//! (serde_json refuses `1e400`; this meter accepts it). The string and number
//! scanners live in `json/scan.rs`; the fuzz entry and its oracle in
//! `json/fuzz.rs`.

mod fuzz;
#[cfg(test)]
mod proptests;
mod scan;
#[cfg(test)]
mod tests;

pub use fuzz::fuzz_entry;

/// A `usage` value longer than this is dropped (`usage: None`): real ones
/// are a few hundred bytes. Bytes.
pub const MAX_USAGE_BYTES: usize = 64 * 1024;

/// Containers open at once, at most; deeper is not well-formed. serde_json's
/// own limit (it refuses the 128th level), so the two agree on what parses.
const MAX_DEPTH: u8 = 127;

/// Depths whose path is remembered; `choices[*].message.tool_calls[*].function`
/// is depth 7, the deepest that matters. Deeper containers are `Ctx::Other`.
const TRACKED: usize = 8;

/// What the meter learnt from a whole body (M2, M4, M5).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JsonFacts {
    /// Raw bytes of the top-level `usage` member's value (`{...}`, `null`,
    /// anything), exactly as sent, without surrounding whitespace. `None` if
    /// there was none, if it did not end, or if it was over
    /// [`MAX_USAGE_BYTES`]. Repeated: the last one wins (as in
    /// `serde_json::Value`), even if that one is dropped.
    pub usage: Option<Vec<u8>>,
    /// A top-level `error` member with a value other than `null` (some
    /// servers send `"error": null` on success).
    pub has_error: bool,
    /// A top-level `choices` member (any value).
    pub has_choices: bool,
    /// A top-level `data` member (any value).
    pub has_data: bool,
    /// Bytes of generated text (M4), decoded (escapes resolved, counted as
    /// UTF-8; a surrogate pair is 4): the string values, within top-level
    /// `choices[*]`, of `text` and of `message.` `content` (or the `text` of
    /// each object in a `content` array), `reasoning_content`, `reasoning`,
    /// `refusal`, `tool_calls[*].function.name` and `.arguments`, and
    /// `function_call.name` and `.arguments`. A repeated member counts each
    /// time. Never JSON syntax, ids or vectors. Bytes, not tokens.
    pub generated_text_bytes: u64,
    /// The body was one JSON object and nothing else (whitespace aside):
    /// false when truncated, garbage, or nested over 127 levels.
    pub well_formed: bool,
}

impl JsonFacts {
    /// M5: a (200) JSON body that is an error object, without `choices` or
    /// `data`: an upstream failure, not billed. Holds for a truncated error
    /// body too; the caller may also require `well_formed`.
    pub fn is_error_body(&self) -> bool {
        self.has_error && !self.has_choices && !self.has_data
    }
}

/// The lexer's place in the grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the top-level `{`.
    Start,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After `[`: a value or `]`.
    ValueOrEnd,
    /// After `:`, or `,` in an array: a value.
    Value,
    /// After a value: `,` or the container's close.
    After,
    /// Inside a string; see `JsonMeter::text`.
    Str,
    /// Inside a number.
    Num(Num),
    /// Inside `true`, `false` or `null`: the bytes still expected.
    Lit(&'static [u8]),
    /// After the top-level object: whitespace only.
    Done,
    /// Not JSON: everything after is ignored.
    Failed,
}

/// Number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpInt,
}

/// What a container is on the paths that matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    Other,
    Top,
    Choices,
    Choice,
    Message,
    Parts,
    Part,
    ToolCalls,
    ToolCall,
    Function,
}

/// What the value about to start is, from its key (in an object) or its
/// array. Keys are classified only where they matter (see `classify`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Other,
    Usage,
    Error,
    Choices,
    Data,
    Choice,
    Message,
    /// Counted if a string: `text`, `reasoning*`, `refusal`, `name`, ...
    Text,
    /// `message.content`: counted if a string, parts if an array.
    Content,
    Part,
    ToolCalls,
    ToolCall,
    /// `tool_calls[*].function` or `message.function_call`.
    Function,
}

/// Longest key that matters: `reasoning_content`.
const KEY_CAP: usize = 17;
/// `KeyBuf::len` once the key can match nothing (too long, non-ASCII).
const NO_MATCH: u8 = u8::MAX;

/// The decoded key being read at a tracked object, without allocation.
#[derive(Clone, Copy, Debug)]
struct KeyBuf {
    bytes: [u8; KEY_CAP],
    len: u8,
}

impl KeyBuf {
    fn push(&mut self, b: u8) {
        match self.bytes.get_mut(usize::from(self.len)) {
            Some(slot) if b.is_ascii() => {
                *slot = b;
                self.len += 1;
            }
            _ => self.len = NO_MATCH,
        }
    }

    /// A run of raw key bytes at once (a hostile megabyte key costs one
    /// comparison, not a loop).
    fn extend(&mut self, s: &[u8]) {
        let start = usize::from(self.len);
        let end = start.saturating_add(s.len());
        match (self.bytes.get_mut(start..end), u8::try_from(end)) {
            (Some(dst), Ok(len)) if s.is_ascii() => {
                dst.copy_from_slice(s);
                self.len = len;
            }
            _ => self.len = NO_MATCH,
        }
    }

    fn get(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// What the string being read is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A key of a tracked object: decoded into `JsonMeter::key`.
    Key,
    /// A key of any other object.
    PlainKey,
    /// Generated text: its decoded bytes are counted.
    Counted,
    /// Any other string value.
    Plain,
}

/// Escape sequence state inside a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Esc {
    None,
    /// After `\`.
    Backslash,
    /// In `\uXXXX`: value so far, digits left, and the high surrogate this
    /// escape must complete, if any.
    Hex {
        acc: u16,
        left: u8,
        high: Option<u16>,
    },
    /// After a high surrogate: `\` must follow (serde_json refuses a lone one).
    PairBackslash(u16),
    /// After a high surrogate and `\`: `u` must follow.
    PairU(u16),
}

/// The string being read: role, escape, and the UTF-8 sequence in progress
/// (continuation bytes still needed and the range the next one must be in).
#[derive(Clone, Copy, Debug)]
struct Text {
    role: Role,
    esc: Esc,
    need: u8,
    lo: u8,
    hi: u8,
}

/// The `usage` value being copied, bounded by [`MAX_USAGE_BYTES`].
#[derive(Debug, Default)]
struct Capture {
    active: bool,
    /// Where in the current chunk the uncopied part of the value begins.
    from: usize,
    overflow: bool,
    buf: Vec<u8>,
    done: Option<Vec<u8>>,
}

impl Capture {
    fn start(&mut self, at: usize) {
        self.active = true;
        self.from = at;
        self.overflow = false;
        self.buf.clear();
        self.done = None;
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.overflow || bytes.is_empty() {
            return;
        }
        let len = self.buf.len() + bytes.len();
        if len > MAX_USAGE_BYTES {
            self.overflow = true;
            self.buf = Vec::new();
            return;
        }
        if len > self.buf.capacity() {
            // Exact growth, so the capacity too stays within the bound.
            let want = (2 * self.buf.capacity()).clamp(len, MAX_USAGE_BYTES);
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The value ended at `end` (exclusive) in `chunk`.
    fn finish(&mut self, chunk: &[u8], end: usize) {
        self.append(chunk.get(self.from..end).unwrap_or(&[]));
        self.active = false;
        if !self.overflow {
            self.done = Some(std::mem::take(&mut self.buf));
        }
    }
}

/// Incremental meter of one non-streamed JSON answer (M8). Feed every chunk
/// with [`push`](JsonMeter::push) as it is relayed, then call
/// [`finish`](JsonMeter::finish). State: ~100 bytes plus the `usage` copy.
///
/// Cost, validating every byte: ~7 instructions a byte on an embeddings
/// answer (6.8 compact, 7.9 pretty-printed; callgrind), 6-9x the speed of
/// `serde_json::from_slice::<Value>` on it
/// (`cargo run --release --example throughput`); memchr through strings.
#[derive(Debug)]
pub struct JsonMeter {
    state: State,
    /// Open containers.
    depth: u8,
    /// Bit `d - 1` set: the container at depth `d` is an object.
    objects: u128,
    /// The innermost open container is an object (bit `depth - 1`, cached:
    /// a u128 shift costs more than this load on the number path).
    object: bool,
    /// Path class of the container at each depth (index 0 unused).
    ctx: [Ctx; TRACKED + 1],
    /// What the current member's value is (innermost object).
    member: Slot,
    key: KeyBuf,
    text: Text,
    capture: Capture,
    has_error: bool,
    has_choices: bool,
    has_data: bool,
    generated: u64,
}

impl Default for JsonMeter {
    fn default() -> JsonMeter {
        JsonMeter::new()
    }
}

impl JsonMeter {
    pub fn new() -> JsonMeter {
        JsonMeter {
            state: State::Start,
            depth: 0,
            objects: 0,
            object: false,
            ctx: [Ctx::Other; TRACKED + 1],
            member: Slot::Other,
            key: KeyBuf {
                bytes: [0; KEY_CAP],
                len: 0,
            },
            text: Text {
                role: Role::Plain,
                esc: Esc::None,
                need: 0,
                lo: 0x80,
                hi: 0xBF,
            },
            capture: Capture::default(),
            has_error: false,
            has_choices: false,
            has_data: false,
            generated: 0,
        }
    }

    /// Feed the next chunk of the body, split anywhere (mid-token, mid-UTF-8).
    pub fn push(&mut self, chunk: &[u8]) {
        self.capture.from = 0;
        let mut i = 0;
        while i < chunk.len() {
            i = match self.state {
                State::Str => self.string(chunk, i),
                State::Num(n) => self.number(chunk, i, n),
                State::Failed => chunk.len(),
                _ => self.structural(chunk, i),
            };
        }
        if self.capture.active {
            let rest = chunk.get(self.capture.from..).unwrap_or(&[]);
            self.capture.append(rest);
        }
    }

    /// The facts, after the last chunk.
    pub fn finish(self) -> JsonFacts {
        JsonFacts {
            usage: self.capture.done,
            has_error: self.has_error,
            has_choices: self.has_choices,
            has_data: self.has_data,
            generated_text_bytes: self.generated,
            well_formed: self.state == State::Done,
        }
    }

    /// Heap bytes held (the `usage` copy): at most [`MAX_USAGE_BYTES`] plus
    /// one finished copy. For the fuzz entry's bound check.
    #[doc(hidden)]
    pub fn heap_bytes(&self) -> usize {
        self.capture.buf.capacity() + self.capture.done.as_ref().map_or(0, Vec::capacity)
    }

    fn fail(&mut self) {
        self.state = State::Failed;
        self.capture.active = false;
    }

    fn ctx(&self) -> Ctx {
        self.ctx
            .get(usize::from(self.depth))
            .copied()
            .unwrap_or(Ctx::Other)
    }

    fn in_object(&self) -> bool {
        self.object
    }

    /// One byte outside strings and numbers (whitespace runs at once).
    fn structural(&mut self, chunk: &[u8], i: usize) -> usize {
        let Some(&b) = chunk.get(i) else {
            return chunk.len();
        };
        if let State::Lit(rest) = self.state {
            match rest.split_first() {
                Some((&want, [])) if want == b => {
                    self.state = State::After;
                    self.value_done(chunk, i + 1);
                }
                Some((&want, more)) if want == b => self.state = State::Lit(more),
                _ => self.fail(),
            }
            return i + 1;
        }
        if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            return scan::skip_ws(chunk, i);
        }
        match (self.state, b) {
            (State::Start, b'{') => self.open(true, Ctx::Top),
            (State::KeyOrEnd, b'}') | (State::After, b'}') => self.close(true, chunk, i),
            (State::ValueOrEnd, b']') | (State::After, b']') => self.close(false, chunk, i),
            (State::KeyOrEnd | State::Key, b'"') => self.begin_key(),
            (State::Colon, b':') => self.state = State::Value,
            (State::Value | State::ValueOrEnd, b'-' | b'0'..=b'9') if !self.object => {
                return self.numbers(chunk, i);
            }
            (State::Value | State::ValueOrEnd, _) => self.begin_value(i, b),
            (State::After, b',') if self.in_object() => self.state = State::Key,
            (State::After, b',') => self.state = State::Value,
            _ => self.fail(),
        }
        i + 1
    }

    fn open(&mut self, object: bool, ctx: Ctx) {
        if self.depth >= MAX_DEPTH {
            return self.fail();
        }
        let bit = 1u128 << self.depth;
        self.depth += 1;
        self.object = object;
        if object {
            self.objects |= bit;
            self.state = State::KeyOrEnd;
        } else {
            self.objects &= !bit;
            self.state = State::ValueOrEnd;
        }
        if let Some(slot) = self.ctx.get_mut(usize::from(self.depth)) {
            *slot = ctx;
        }
    }

    /// `}` or `]` at `i`.
    fn close(&mut self, object: bool, chunk: &[u8], i: usize) {
        if self.depth == 0 || self.in_object() != object {
            return self.fail();
        }
        self.depth -= 1;
        self.object = self.depth > 0 && (self.objects >> (self.depth - 1)) & 1 == 1;
        if self.depth == 0 {
            self.state = State::Done;
        } else {
            self.state = State::After;
            self.value_done(chunk, i + 1);
        }
    }

    fn begin_key(&mut self) {
        let role = if self.ctx() == Ctx::Other {
            Role::PlainKey
        } else {
            self.key.len = 0;
            Role::Key
        };
        self.begin_string(role);
    }

    fn begin_string(&mut self, role: Role) {
        self.state = State::Str;
        self.text.role = role;
        self.text.esc = Esc::None;
        self.text.need = 0;
    }

    /// The value starting with `b` at `i`: what it is on the path (M4's
    /// members, M5's flags, the `usage` capture), then its first byte.
    fn begin_value(&mut self, i: usize, b: u8) {
        let slot = if self.in_object() {
            self.member
        } else {
            match self.ctx() {
                Ctx::Choices => Slot::Choice,
                Ctx::Parts => Slot::Part,
                Ctx::ToolCalls => Slot::ToolCall,
                _ => Slot::Other,
            }
        };
        match slot {
            Slot::Usage => self.capture.start(i),
            Slot::Error => self.has_error |= b != b'n',
            // A null `choices` / `data` (a Go nil slice) is not an answer;
            // a repeated member: the last one decides, as in serde.
            Slot::Choices => self.has_choices = b != b'n',
            Slot::Data => self.has_data = b != b'n',
            _ => {}
        }
        match b {
            b'"' if matches!(slot, Slot::Text | Slot::Content) => self.begin_string(Role::Counted),
            b'"' => self.begin_string(Role::Plain),
            b'{' => self.open(true, object_ctx(slot)),
            b'[' => self.open(false, array_ctx(slot)),
            b'-' => self.state = State::Num(Num::Minus),
            b'0' => self.state = State::Num(Num::Zero),
            b'1'..=b'9' => self.state = State::Num(Num::Int),
            b't' => self.state = State::Lit(b"rue"),
            b'f' => self.state = State::Lit(b"alse"),
            b'n' => self.state = State::Lit(b"ull"),
            _ => self.fail(),
        }
    }

    /// A value ended at `end` (exclusive) in `chunk`: if it was the
    /// top-level `usage` value, its copy is complete.
    fn value_done(&mut self, chunk: &[u8], end: usize) {
        if self.capture.active && self.depth == 1 {
            self.capture.finish(chunk, end);
        }
    }

    /// A string ended at `end` (exclusive; the closing quote is before it).
    fn end_string(&mut self, chunk: &[u8], end: usize) {
        match self.text.role {
            Role::Key => {
                self.member = classify(self.ctx(), self.key.get());
                self.state = State::Colon;
            }
            Role::PlainKey => {
                self.member = Slot::Other;
                self.state = State::Colon;
            }
            Role::Counted | Role::Plain => {
                self.state = State::After;
                self.value_done(chunk, end);
            }
        }
    }
}

/// The container a `{` opens in `slot`.
fn object_ctx(slot: Slot) -> Ctx {
    match slot {
        Slot::Choice => Ctx::Choice,
        Slot::Message => Ctx::Message,
        Slot::Part => Ctx::Part,
        Slot::ToolCall => Ctx::ToolCall,
        Slot::Function => Ctx::Function,
        _ => Ctx::Other,
    }
}

/// The container a `[` opens in `slot`.
fn array_ctx(slot: Slot) -> Ctx {
    match slot {
        Slot::Choices => Ctx::Choices,
        Slot::Content => Ctx::Parts,
        Slot::ToolCalls => Ctx::ToolCalls,
        _ => Ctx::Other,
    }
}

/// What a member's value is, from the (decoded) key and the object it is
/// in: only the fixed set of keys M2, M4 and M5 name, each where it counts.
/// Keys are compared decoded, as serde_json reads them (`"\u0075sage"` is
/// `usage`).
fn classify(ctx: Ctx, key: &[u8]) -> Slot {
    match (ctx, key) {
        (Ctx::Top, b"usage") => Slot::Usage,
        (Ctx::Top, b"error") => Slot::Error,
        (Ctx::Top, b"choices") => Slot::Choices,
        (Ctx::Top, b"data") => Slot::Data,
        (Ctx::Choice, b"message") => Slot::Message,
        (Ctx::Choice | Ctx::Part, b"text") => Slot::Text,
        (Ctx::Message, b"content") => Slot::Content,
        (Ctx::Message, b"reasoning_content" | b"reasoning" | b"refusal") => Slot::Text,
        (Ctx::Message, b"tool_calls") => Slot::ToolCalls,
        (Ctx::Message, b"function_call") | (Ctx::ToolCall, b"function") => Slot::Function,
        (Ctx::Function, b"name" | b"arguments") => Slot::Text,
        _ => Slot::Other,
    }
}
