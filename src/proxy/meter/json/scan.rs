//! The JSON meter's inner loops (M8's cost): strings (memchr to the next
//! quote or backslash, then one pass that checks UTF-8 and control bytes)
//! and numbers (in arrays, whole `number,` groups read 8 bytes a step with
//! SWAR in 32-byte windows, so an embeddings vector stays in one loop).
//! Every fast path is a shortcut of the byte-at-a-time path beside it, with
//! the same outcome whatever the chunking: fuzzed for that in `json/fuzz.rs`.

use memchr::memchr2;

use super::{Esc, JsonMeter, Num, Role, State};

/// The first index at or after `i` that is not JSON whitespace.
pub(super) fn skip_ws(chunk: &[u8], i: usize) -> usize {
    let rest = chunk.get(i..).unwrap_or(&[]);
    i + rest
        .iter()
        .take_while(|&&b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
        .count()
}

/// SWAR: the top bit of each byte of the result is set where `word` has a
/// byte that is not an ASCII digit. Digits become 0..=9 by the xor; with the
/// top bit cleared (no carry between bytes), adding 0x76 reaches 0x80 for
/// 10 and up; a byte with its top bit set is flagged by the `| x`.
#[inline(always)]
fn non_digits(word: [u8; 8]) -> u64 {
    const LO: u64 = 0x3030_3030_3030_3030;
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    const ADD: u64 = 0x7676_7676_7676_7676;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let x = u64::from_le_bytes(word) ^ LO;
    ((x & LOW7).wrapping_add(ADD) | x) & HIGH
}

/// The first index at or after `i` that is not an ASCII digit: 8 bytes a
/// step (SWAR) while 8 remain, then byte by byte. A float's digits are one
/// or two steps.
fn skip_digits(chunk: &[u8], mut i: usize) -> usize {
    while let Some(word) = chunk.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let flags = non_digits(*word);
        if flags != 0 {
            return i + (flags.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    let rest = chunk.get(i..).unwrap_or(&[]);
    i + rest.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// The longest prefix of `span` (which holds no `"` or `\`) made of whole,
/// valid UTF-8 characters and no control bytes: what the byte path would
/// accept unchanged. Bytes.
fn clean_prefix(span: &[u8]) -> usize {
    // Branch-free test first (vectorises); find the place only if needed.
    let has_control = span.iter().fold(false, |acc, &b| acc | (b < 0x20));
    let limit = if has_control {
        span.iter().position(|&b| b < 0x20).unwrap_or(span.len())
    } else {
        span.len()
    };
    let head = span.get(..limit).unwrap_or(&[]);
    match std::str::from_utf8(head) {
        Ok(_) => limit,
        Err(e) => e.valid_up_to(),
    }
}

fn hex(b: u8) -> Option<u16> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u16::try_from(d).ok())
}

impl JsonMeter {
    /// Inside a string from `i`; returns where to go on.
    pub(super) fn string(&mut self, chunk: &[u8], mut i: usize) -> usize {
        while self.state == State::Str {
            if self.text.esc == Esc::None && self.text.need == 0 {
                let rest = chunk.get(i..).unwrap_or(&[]);
                let end = memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
                let span = rest.get(..end).unwrap_or(&[]);
                let clean = clean_prefix(span);
                self.accept_run(span.get(..clean).unwrap_or(&[]));
                i += clean;
            }
            let Some(&b) = chunk.get(i) else {
                break;
            };
            self.string_byte(chunk, i, b);
            i += 1;
        }
        i
    }

    /// Bytes of string content taken as they are (no escapes).
    fn accept_run(&mut self, run: &[u8]) {
        match self.text.role {
            Role::Counted => self.generated += run.len() as u64,
            Role::Key => self.key.extend(run),
            Role::PlainKey | Role::Plain => {}
        }
    }

    /// One decoded byte of string content.
    fn accept_byte(&mut self, b: u8) {
        match self.text.role {
            Role::Counted => self.generated += 1,
            Role::Key => self.key.push(b),
            Role::PlainKey | Role::Plain => {}
        }
    }

    /// One decoded character from a `\u` escape: its UTF-8 length counts.
    fn accept_char(&mut self, c: u32) {
        if let Ok(b) = u8::try_from(c) {
            if b.is_ascii() {
                return self.accept_byte(b);
            }
        }
        let len = match c {
            0..0x800 => 2,
            0x800..0x1_0000 => 3,
            _ => 4,
        };
        match self.text.role {
            Role::Counted => self.generated += len,
            Role::Key => self.key.push(0xFF),
            Role::PlainKey | Role::Plain => {}
        }
    }

    /// One byte of a string, the slow and exact way.
    fn string_byte(&mut self, chunk: &[u8], i: usize, b: u8) {
        if self.text.need > 0 {
            if b < self.text.lo || b > self.text.hi {
                return self.fail();
            }
            self.text.need -= 1;
            self.text.lo = 0x80;
            self.text.hi = 0xBF;
            return self.accept_byte(b);
        }
        match self.text.esc {
            Esc::None => self.plain_byte(chunk, i, b),
            Esc::Backslash => self.escape(b),
            Esc::Hex { acc, left, high } => match hex(b) {
                Some(d) if left > 1 => {
                    self.text.esc = Esc::Hex {
                        acc: acc << 4 | d,
                        left: left - 1,
                        high,
                    }
                }
                Some(d) => self.unicode(acc << 4 | d, high),
                None => self.fail(),
            },
            Esc::PairBackslash(h) if b == b'\\' => self.text.esc = Esc::PairU(h),
            Esc::PairU(h) if b == b'u' => {
                self.text.esc = Esc::Hex {
                    acc: 0,
                    left: 4,
                    high: Some(h),
                }
            }
            Esc::PairBackslash(_) | Esc::PairU(_) => self.fail(),
        }
    }

    /// A byte outside any escape or UTF-8 sequence. UTF-8 by RFC 3629:
    /// no overlong forms, surrogates or code points over U+10FFFF.
    fn plain_byte(&mut self, chunk: &[u8], i: usize, b: u8) {
        let (need, lo, hi) = match b {
            b'"' => return self.end_string(chunk, i + 1),
            b'\\' => {
                self.text.esc = Esc::Backslash;
                return;
            }
            0x20..=0x7F => return self.accept_byte(b),
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE | 0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return self.fail(),
        };
        self.text.need = need;
        self.text.lo = lo;
        self.text.hi = hi;
        self.accept_byte(b);
    }

    /// The byte after `\`.
    fn escape(&mut self, b: u8) {
        let decoded = match b {
            b'"' | b'\\' | b'/' => b,
            b'b' => 0x08,
            b'f' => 0x0C,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                self.text.esc = Esc::Hex {
                    acc: 0,
                    left: 4,
                    high: None,
                };
                return;
            }
            _ => return self.fail(),
        };
        self.text.esc = Esc::None;
        self.accept_byte(decoded);
    }

    /// A complete `\uXXXX`. Surrogates must pair, high then low, as
    /// serde_json requires for a string; a pair is one 4-byte character.
    fn unicode(&mut self, n: u16, high: Option<u16>) {
        self.text.esc = Esc::None;
        match (high, n) {
            (None, 0xD800..=0xDBFF) => self.text.esc = Esc::PairBackslash(n),
            (None, 0xDC00..=0xDFFF) => self.fail(),
            (None, _) => self.accept_char(u32::from(n)),
            (Some(_), 0xDC00..=0xDFFF) => self.accept_char(0x1_0000),
            (Some(_), _) => self.fail(),
        }
    }

    /// Inside a number from `i`, in grammar state `n`, a byte at a time:
    /// numbers split between chunks and numbers in objects.
    pub(super) fn number(&mut self, chunk: &[u8], mut i: usize, mut n: Num) -> usize {
        loop {
            let Some(&b) = chunk.get(i) else {
                self.state = State::Num(n);
                return i;
            };
            n = match (n, b) {
                (Num::Int | Num::Frac | Num::ExpInt, b'0'..=b'9') => {
                    i = skip_digits(chunk, i + 1);
                    continue;
                }
                (Num::Minus, b'0') => Num::Zero,
                (Num::Minus, b'1'..=b'9') => Num::Int,
                (Num::Zero | Num::Int, b'.') => Num::Dot,
                (Num::Dot, b'0'..=b'9') => Num::Frac,
                (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::Exp,
                (Num::Exp, b'+' | b'-') => Num::ExpSign,
                (Num::Exp | Num::ExpSign, b'0'..=b'9') => Num::ExpInt,
                (Num::Zero | Num::Int | Num::Frac | Num::ExpInt, _) => {
                    // The number ended before `b`.
                    self.state = State::After;
                    self.value_done(chunk, i);
                    return i;
                }
                _ => {
                    self.fail();
                    return chunk.len();
                }
            };
            i += 1;
        }
    }

    /// A number starts at `i` in an array: the embeddings path. Reads whole
    /// numbers and the `,` between them in one loop while each number ends
    /// inside this chunk; leaves the state as a byte at a time would, and
    /// hands anything else (a number cut by the chunk's end, a bad one, `]`)
    /// to the main loop. Values in arrays are never the `usage` value
    /// itself, so `value_done` has nothing to do here.
    pub(super) fn numbers(&mut self, chunk: &[u8], mut i: usize) -> usize {
        let at = |k: usize| chunk.get(k).copied().unwrap_or(0);
        loop {
            i = number_run(chunk, i);
            let Some(end) = whole_number(chunk, i) else {
                // Let the byte path take this number (it starts at `i`).
                let first = at(i);
                self.begin_value(i, first);
                return i + 1;
            };
            let mut p = end;
            if matches!(at(p), b' ' | b'\n' | b'\r' | b'\t') {
                p = skip_ws(chunk, p);
            }
            if at(p) != b',' {
                self.state = State::After;
                return p;
            }
            p += 1;
            if matches!(at(p), b' ' | b'\n' | b'\r' | b'\t') {
                p = skip_ws(chunk, p);
            }
            if !matches!(at(p), b'-' | b'0'..=b'9') {
                self.state = State::Value;
                return p;
            }
            i = p;
        }
    }
}

/// How many bytes the usual embedding float at the start of `w` spans
/// (`-?D+(.D+)?`, under 16 bytes): two SWAR words, no loop, no bounds
/// checks. `None`: not that shape (not necessarily invalid: exponents,
/// long numbers); the caller takes the general path. The byte after it is
/// unchecked.
/// `w[k]`, the index masked into range: it cannot panic, and no bounds
/// check is emitted (`get(..).unwrap_or` cost 1.5M instructions more on the
/// 2.4 MB embeddings body, callgrind).
#[inline(always)]
#[allow(clippy::indexing_slicing)]
fn at8(w: &[u8; 8], k: usize) -> u8 {
    w[k & 7]
}

#[inline(always)]
#[allow(clippy::indexing_slicing)]
fn at32(w: &[u8; 32], k: usize) -> u8 {
    w[k & 31]
}

#[inline(always)]
fn short_number(w: &[u8; 32]) -> Option<usize> {
    let (a, rest) = w.split_first_chunk::<8>()?;
    let flags = non_digits(*a);
    let sign = usize::from(a[0] == b'-');
    // Flags from the integer part on (the sign byte is not a digit).
    let int_flags = flags & (u64::MAX << (8 * sign));
    let int_end = (int_flags.trailing_zeros() / 8) as usize;
    // At least one digit, no leading zero (`0` alone is fine), and the
    // integer part ends in this word (`int_flags == 0` gives 8).
    if int_end == sign || int_end == 8 || (int_end > sign + 1 && at8(a, sign) == b'0') {
        return None;
    }
    if at8(a, int_end) != b'.' {
        return Some(int_end);
    }
    let from = int_end + 1;
    let frac_flags = if from < 8 {
        flags & (u64::MAX << (8 * from))
    } else {
        0
    };
    let end = if frac_flags != 0 {
        (frac_flags.trailing_zeros() / 8) as usize
    } else {
        let b = non_digits(*rest.first_chunk::<8>()?);
        if b == 0 {
            return None;
        }
        8 + (b.trailing_zeros() / 8) as usize
    };
    (end > from).then_some(end)
}

/// From `i`, at the start of a number in an array: the index of the first
/// number not taken by the fast loop, which takes each `number ,` (with
/// any whitespace after the comma) that a number follows, within 32-byte
/// windows. All it takes is valid JSON; the rest is the callers'.
#[inline(always)]
fn number_run(chunk: &[u8], mut i: usize) -> usize {
    let ws = |b: u8| matches!(b, b' ' | b'\n' | b'\r' | b'\t');
    while let Some(w) = chunk.get(i..).and_then(<[u8]>::first_chunk::<32>) {
        let Some(len) = short_number(w) else {
            break;
        };
        if at32(w, len) != b',' {
            break;
        }
        let mut next = len + 1;
        while next < 32 && ws(at32(w, next)) {
            next += 1;
        }
        if next >= 32 || !matches!(at32(w, next), b'-' | b'0'..=b'9') {
            break;
        }
        i += next;
    }
    i
}

/// The end (exclusive) of the valid number starting at `i`, if it ends
/// inside `chunk` (a byte follows it); `None` if it is cut by the chunk's
/// end or is not a number, for the byte path to decide. A `0` followed by a
/// digit ends after the `0`, as in the byte path (the digit then fails).
#[inline(always)]
fn whole_number(chunk: &[u8], mut p: usize) -> Option<usize> {
    let at = |k: usize| chunk.get(k).copied().unwrap_or(0);
    if at(p) == b'-' {
        p += 1;
    }
    match at(p) {
        b'0' => p += 1,
        b'1'..=b'9' => p = skip_digits(chunk, p + 1),
        _ => return None,
    }
    if at(p) == b'.' {
        let q = skip_digits(chunk, p + 1);
        if q == p + 1 {
            return None;
        }
        p = q;
    }
    if at(p) | 0x20 == b'e' {
        p += 1;
        if matches!(at(p), b'+' | b'-') {
            p += 1;
        }
        let q = skip_digits(chunk, p);
        if q == p {
            return None;
        }
        p = q;
    }
    (p < chunk.len()).then_some(p)
}
