//! Request: what the gateway reads from a client's request and the one
//! change it makes to its body. The key comes from `Authorization: Bearer`,
//! `api-key` or `x-api-key` (P6b). The body is read bounded (P4) and
//! probed for the few members the gateway needs (`Probe`); the rest passes
//! through untouched. Adding `stream_options.include_usage` is an
//! insertion into the client's bytes, never a re-serialisation (M10: a
//! parser would reorder members, respell numbers and undo escapes, and
//! member order changes what constrained decoders generate). Whether the
//! request carries non-text input decides how its input is bounded (M7).

use std::borrow::Cow;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use super::ProxyError;

/// The headers a client may carry its API key in (P6b): OpenAI's bearer
/// token, Azure OpenAI's `api-key`, and `x-api-key`. None is forwarded.
pub const KEY_HEADERS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-api-key"),
];

/// The client's API key (P6b): `Authorization: Bearer <key>` (scheme
/// case-insensitive), else `api-key`, else `x-api-key`.
pub fn client_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, key) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| key.trim())
            .filter(|k| !k.is_empty());
    }
    KEY_HEADERS[1..]
        .iter()
        .find_map(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// P6b: remove every header that carries the client's key (the three
/// `KEY_HEADERS`, and any other whose value contains the key) before the
/// request goes upstream. Usually only `Authorization` does: one pass.
pub fn strip_client_key(headers: &mut HeaderMap) {
    let Some(key) = client_key(headers).map(str::as_bytes) else {
        return;
    };
    // `Authorization` is never written upstream (`forward::request_head`);
    // the others are found in one pass and, when there are none (the usual
    // case), nothing is allocated.
    // A value shorter than the key cannot carry it: most headers are
    // skipped without a search.
    let carriers: Vec<HeaderName> = headers
        .iter()
        .filter(|(name, value)| {
            **name != header::AUTHORIZATION
                && (KEY_HEADERS.contains(name)
                    || (value.len() >= key.len()
                        && memchr::memmem::find(value.as_bytes(), key).is_some()))
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in &carriers {
        headers.remove(name);
    }
}

/// The parts of an OpenAI request the gateway reads; the rest passes
/// through untouched.
#[derive(Deserialize)]
pub struct Probe<'a> {
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    best_of: Option<u64>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

impl<'a> Probe<'a> {
    /// The request body read as an object of the OpenAI API (P4a).
    pub fn of(body: &'a [u8]) -> Result<Probe<'a>, ProxyError> {
        // An object, not any JSON: serde would fill `Probe` from an array too.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ProxyError::InvalidRequest(
                "The request body must be a JSON object of the OpenAI API.",
            ));
        }
        serde_json::from_slice(body).map_err(|_| {
            ProxyError::InvalidRequest("The request body must be a JSON object of the OpenAI API.")
        })
    }

    /// Output tokens the request may generate, over all its choices (B5a,
    /// M6): its own limit clamped to the model's `max_output_tokens`, else
    /// the model's, else the gateway's default. The request itself is
    /// forwarded unchanged; only the hold is bounded.
    /// A limit of 0 counts as unset (SGLang and vLLM read it so and
    /// generate unbounded), and with both set the larger bounds the hold.
    pub fn max_output(&self, model_max: Option<u64>, default: u64) -> u64 {
        let set = |v: Option<u64>| v.filter(|&n| n > 0);
        let asked = match (set(self.max_completion_tokens), set(self.max_tokens)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let per_choice = match (asked, model_max) {
            (Some(a), Some(m)) => a.min(m),
            (Some(a), None) => a,
            (None, m) => m.unwrap_or(default),
        };
        per_choice.saturating_mul(self.n.max(self.best_of).unwrap_or(1).max(1))
    }

    /// The client asked for a stream (`stream: true`).
    pub fn streams(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// A stream whose client did not ask for usage: the gateway asks for
    /// it (P2), and hides the usage chunk from the client again.
    pub fn needs_usage_asked(&self) -> bool {
        let streaming = self.streams();
        let client_wants_usage = self
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        streaming && !client_wants_usage
    }
}

/// The request body, refused past `limit` bytes before it is read whole
/// (P4: 413).
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::TooLarge);
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ProxyError::TooLarge),
        Err(_) => Err(ProxyError::InvalidRequest(
            "The request body could not be read.",
        )),
    }
}

/// Bytes of prompt text in an OpenAI request (M4): message contents
/// (strings, or the text of their parts), `prompt` or `input`; never JSON
/// syntax, roles, image URLs or token arrays.
pub fn prompt_bytes(body: &[u8]) -> usize {
    fn text_len(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::String(s) => s.len(),
            serde_json::Value::Array(a) => a.iter().map(text_len).sum(),
            serde_json::Value::Object(o) => o
                .get("content")
                .or_else(|| o.get("text"))
                .map_or(0, text_len),
            _ => 0,
        }
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.len();
    };
    ["messages", "prompt", "input"]
        .iter()
        .filter_map(|k| v.get(*k))
        .map(text_len)
        .sum()
}
/// A lenient scanner over a body serde has already accepted as a JSON
/// object: it finds where members and values start and end. Iterative, so
/// nesting depth costs nothing (serde allows 128 levels; a JSON schema in
/// `response_format` can be deep).
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.i += 1)
    }

    /// A string token at the cursor; its raw contents (escapes as sent).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            let at = self.i + memchr::memchr2(b'"', b'\\', self.b.get(self.i..)?)?;
            if self.b[at] == b'\\' {
                self.i = at + 2;
            } else {
                self.i = at + 1;
                return Some(&self.b[start..at]);
            }
        }
    }

    /// Skip one value; the cursor ends just after it.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *self.b.get(self.i)? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                // A number or a literal: up to the next delimiter.
                let rest = self.b.get(self.i..)?;
                let len = rest
                    .iter()
                    .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                    .unwrap_or(rest.len());
                (len > 0).then(|| self.i += len)
            }
        }
    }

    /// The members of the object at the cursor, as (name, value start,
    /// value end); returns the index of its closing `}`.
    fn members(&mut self, mut f: impl FnMut(&'a [u8], usize, usize)) -> Option<usize> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            return Some(self.i);
        }
        loop {
            let name = self.string()?;
            self.eat(b':')?;
            let start = self.peek().map(|_| self.i)?;
            self.skip_value()?;
            f(name, start, self.i);
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => return Some(self.i),
                _ => return None,
            }
        }
    }
}

/// Whether a raw member name means `want`: compared as sent, or decoded
/// when it has escapes (`"stream\u005foptions"` is `stream_options` to the
/// upstream's parser).
fn name_is(raw: &[u8], want: &str) -> bool {
    if !raw.contains(&b'\\') {
        return raw == want.as_bytes();
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted).is_ok_and(|s| s == want)
}

/// An edit: replace `at..end` by `text`.
struct Splice {
    at: usize,
    end: usize,
    text: &'static [u8],
}

/// The object at `start` has members (something between its braces).
fn has_members(body: &[u8], open: usize, close: usize) -> bool {
    body.get(open + 1..close)
        .is_some_and(|inner| inner.iter().any(|c| !c.is_ascii_whitespace()))
}

/// M10: `body` (a JSON object serde has accepted) with
/// `stream_options.include_usage` set to `true`, every other byte as the
/// client sent it. `None` if the body is not an object this scanner can
/// follow (the caller refuses the request rather than re-encode it).
pub fn with_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    let mut s = Scan { b: body, i: 0 };
    let open = s.peek().map(|_| s.i)?;
    let mut options = None;
    let close = s.members(|name, start, end| {
        if name_is(name, "stream_options") {
            // serde refuses a repeated known field, so there is one.
            options = Some((start, end));
        }
    })?;
    let splice = match options {
        None if has_members(body, open, close) => Splice {
            at: close,
            end: close,
            text: b",\"stream_options\":{\"include_usage\":true}",
        },
        None => Splice {
            at: close,
            end: close,
            text: b"\"stream_options\":{\"include_usage\":true}",
        },
        Some((start, _)) if body[start] == b'{' => {
            let mut o = Scan { b: body, i: start };
            let mut flag = None;
            let o_close = o.members(|name, vs, ve| {
                if name_is(name, "include_usage") {
                    flag = Some((vs, ve));
                }
            })?;
            match flag {
                Some((vs, ve)) => Splice {
                    at: vs,
                    end: ve,
                    text: b"true",
                },
                None if has_members(body, start, o_close) => Splice {
                    at: o_close,
                    end: o_close,
                    text: b",\"include_usage\":true",
                },
                None => Splice {
                    at: o_close,
                    end: o_close,
                    text: b"\"include_usage\":true",
                },
            }
        }
        Some((start, end)) => Splice {
            at: start,
            end,
            text: b"{\"include_usage\":true}",
        },
    };
    let mut out = Vec::with_capacity(body.len() + splice.text.len());
    out.extend_from_slice(body.get(..splice.at)?);
    out.extend_from_slice(splice.text);
    out.extend_from_slice(body.get(splice.end..)?);
    Some(out)
}

/// Part types that are text (Chat Completions, Responses).
const TEXT_PARTS: [&str; 3] = ["text", "input_text", "output_text"];
/// Members that carry non-text input in a part.
const MEDIA_MEMBERS: [&str; 7] = [
    "image_url",
    "input_audio",
    "file",
    "video_url",
    "image",
    "audio",
    "input_file",
];
/// The JSON strings every non-text part or member spells, as a member
/// name or as a part's `type` (`"input_image"` among them).
const MEDIA_STRINGS: [&[u8]; 8] = [
    b"\"image_url\"",
    b"\"input_audio\"",
    b"\"file\"",
    b"\"video_url\"",
    b"\"image\"",
    b"\"audio\"",
    b"\"input_image\"",
    b"\"input_file\"",
];

/// Searchers built once: building one per call costs more than the search
/// (~650 instructions each, callgrind).
static MEDIA_FINDERS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 8]> =
    std::sync::LazyLock::new(|| MEDIA_STRINGS.map(memchr::memmem::Finder::new));

/// M7: whether the request has any non-text input (image, audio, file or
/// video) in `messages[*].content`, a message's `audio` (a previous audio
/// answer), or `input`. Such input is not bounded by the body's size (an
/// image URL is a few bytes, its tokens are many), so the hold bounds it
/// by the context window.
pub fn has_non_text_input(body: &[u8]) -> bool {
    // Every non-text part spells one of these strings; a request without
    // any (nearly all text requests, tools included) costs a few scans and
    // no allocation.
    if !MEDIA_FINDERS.iter().any(|f| f.find(body).is_some()) {
        return false;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let messages = v.get("messages").and_then(|m| m.as_array());
    let audio_turn = messages
        .into_iter()
        .flatten()
        .any(|m| m.get("audio").is_some_and(|a| !a.is_null()));
    let contents = messages
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content"));
    let input = v.get("input").into_iter();
    audio_turn
        || contents.chain(input).any(|c| {
            c.as_array().is_some_and(|parts| {
                parts.iter().any(|p| {
                    is_media_part(p)
                        || p.get("content")
                            .and_then(|c| c.as_array())
                            .is_some_and(|inner| inner.iter().any(is_media_part))
                })
            })
        })
}

fn is_media_part(p: &serde_json::Value) -> bool {
    let Some(o) = p.as_object() else {
        return false;
    };
    let typed_media = o
        .get("type")
        .and_then(|t| t.as_str())
        .is_some_and(|t| !TEXT_PARTS.contains(&t) && t != "message");
    typed_media || MEDIA_MEMBERS.iter().any(|m| o.contains_key(*m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(body: &str) -> String {
        String::from_utf8(with_include_usage(body.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn member_order_and_spelling_are_kept() {
        let body = r#"{"model":"m","stream":true,"response_format":{"type":"json_schema","json_schema":{"schema":{"properties":{"zebra":{"type":"number"},"apple":{"type":"string"},"mango":{"type":"integer"}}}}},"temperature":1.0e0,"x":"\u00e9"}"#;
        let out = edit(body);
        assert_eq!(
            out,
            format!(
                "{},\"stream_options\":{{\"include_usage\":true}}}}",
                &body[..body.len() - 1]
            )
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn existing_options_are_edited_in_place() {
        assert_eq!(
            edit(r#"{"stream_options":{"include_usage":false},"a":1}"#),
            r#"{"stream_options":{"include_usage":true},"a":1}"#
        );
        assert_eq!(
            edit(r#"{"stream_options":{"x":1} ,"a":1}"#),
            r#"{"stream_options":{"x":1,"include_usage":true} ,"a":1}"#
        );
        assert_eq!(
            edit(r#"{"stream_options": { } }"#),
            r#"{"stream_options": { "include_usage":true} }"#
        );
        assert_eq!(
            edit(r#"{"stream_options":null,"a":[1,{"b":"}"}]}"#),
            r#"{"stream_options":{"include_usage":true},"a":[1,{"b":"}"}]}"#
        );
        assert_eq!(
            edit(r#"{"stream\u005foptions":{"include_usage":null}}"#),
            r#"{"stream\u005foptions":{"include_usage":true}}"#
        );
        assert_eq!(
            edit(" { } "),
            r#" { "stream_options":{"include_usage":true}} "#
        );
    }

    #[test]
    fn nested_stream_options_are_not_the_top_level_one() {
        let out =
            edit(r#"{"a":{"stream_options":{"include_usage":false}},"s":"\"stream_options\""}"#);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["a"]["stream_options"]["include_usage"], false);
    }

    #[test]
    fn deep_nesting_is_followed() {
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(120), "]".repeat(120));
        let out = edit(&deep);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn non_text_parts_are_found() {
        let text = r#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"tools":[{"type":"function"}]}"#;
        assert!(!has_non_text_input(text.as_bytes()));
        assert!(!has_non_text_input(
            br#"{"messages":[{"role":"user","content":"a \"file\""}]}"#
        ));
        for part in [
            r#"{"type":"image_url","image_url":{"url":"https://x/y.png"}}"#,
            r#"{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}"#,
            r#"{"type":"file","file":{"file_id":"f"}}"#,
            r#"{"image_url":{"url":"u"}}"#,
        ] {
            let body = format!(
                r#"{{"messages":[{{"role":"user","content":[{{"type":"text","text":"a"}},{part}]}}]}}"#
            );
            assert!(has_non_text_input(body.as_bytes()), "{body}");
        }
        assert!(has_non_text_input(
            br#"{"input":[{"role":"user","content":[{"type":"input_image","image_url":"u"}]}]}"#
        ));
    }

    proptest::proptest! {
        /// Whatever the object, the edit parses, sets the flag, and keeps
        /// every other member as the client wrote it.
        #[test]
        fn the_edit_only_inserts(v in proptest::collection::btree_map("[a-z_]{1,8}", proptest::prelude::any::<i32>(), 0..6), pretty in proptest::prelude::any::<bool>()) {
            let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { serde_json::to_string(&v).unwrap() };
            let out = with_include_usage(text.as_bytes()).unwrap();
            let mut parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out).unwrap();
            let opts = parsed.remove("stream_options");
            if !v.contains_key("stream_options") {
                proptest::prop_assert_eq!(opts, Some(serde_json::json!({"include_usage": true})));
                const ADDED: &str = ",\"stream_options\":{\"include_usage\":true}";
                let added = if v.is_empty() { &ADDED[1..] } else { ADDED };
                let back = String::from_utf8(out.clone()).unwrap().replacen(added, "", 1);
                proptest::prop_assert_eq!(back, text);
            }
        }
    }
}
