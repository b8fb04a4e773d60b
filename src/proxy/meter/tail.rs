//! The usage fast path: the top-level `usage` of a whole JSON response
//! read from the body's tail, without parsing the rest (`trailing_usage`,
//! and the strict little JSON `Cursor` it reads with). It answers only
//! when it is certain; otherwise `usage_of_json` asks serde.

use std::sync::LazyLock;

use super::{WireDetails, WireUsage};
use crate::pricing::Usage;

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
pub(super) fn trailing_usage(body: &[u8]) -> Option<Usage> {
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

#[cfg(test)]
mod tests {
    use super::super::{usage_of_json, WithUsage};
    use super::*;

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
            include_bytes!("../../../tests/fixtures/openai/chat_completion.json"),
            include_bytes!("../../../tests/fixtures/openai/completion.json"),
            include_bytes!("../../../tests/fixtures/openai/embeddings.json"),
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
}
