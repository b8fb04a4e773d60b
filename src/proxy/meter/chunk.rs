//! Chunk: what one JSON chunk of a stream, or one whole answer, says to the
//! meter: the bytes of generated text (M4), the `usage` member (M2) and an
//! in-band `error` (M5). Pure: no I/O.
//!
//! Read by one serde visitor that walks only the members the meter needs
//! and skips the rest (`IgnoredAny`), so it builds nothing and allocates
//! nothing in the common case (serde_json allocates only to decode a string
//! with escapes). The same visitor reads raw bytes (the SSE meter) and a
//! `serde_json::Value` (`generated_text_bytes`, for a whole answer): one
//! reading of the rule, two entry points. Rejected: a derived struct of
//! `Option<Cow<str>>` fields, which allocates a `Vec` per `choices` and
//! fails whole on one field of an unexpected type.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::usage::{lenient_numbers, lenient_others, RawUsage, UsageField};

/// What the meter learnt from one chunk (or one answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ChunkFacts {
    /// Bytes (UTF-8, decoded) of generated text in `choices` (M4).
    pub text_bytes: usize,
    /// Entries in `choices`; `None` when absent, null or not an array.
    pub choices: Option<usize>,
    /// `Some` when the `usage` member is an object (counts maybe all None).
    pub usage: Option<RawUsage>,
    /// A top-level `error` member that is not null (M5).
    pub error: bool,
}

/// Read one chunk's JSON text; `None` when it is not well-formed JSON. Any
/// well-formed value reads: a non-object says nothing.
pub(crate) fn read_chunk(data: &[u8]) -> Option<ChunkFacts> {
    serde_json::from_slice::<Facts>(data).ok().map(|f| f.0)
}

/// Bytes of generated text in a whole answer (M4), for the estimate when it
/// has no usage: per entry of `choices`, `message` (or `delta`) `content`
/// (a string, or the `text`/`refusal` of its parts), `reasoning_content`,
/// `reasoning`, `refusal`, `tool_calls[*].function.name`/`.arguments`,
/// legacy `function_call.name`/`.arguments`; and `text` (completions).
/// Decoded string bytes only: never JSON syntax, ids, or vectors. 0 for
/// anything else (embeddings generate nothing).
pub fn generated_text_bytes(v: &serde_json::Value) -> usize {
    Facts::deserialize(v).map_or(0, |f| f.0.text_bytes)
}

/// Member names the reader follows; anything else is skipped.
#[derive(Clone, Copy)]
enum Key {
    Choices,
    Usage,
    Error,
    /// `delta` (streams) or `message` (whole answers).
    Message,
    Text,
    Content,
    /// `reasoning_content`, `reasoning`, `refusal`: plain strings.
    Said,
    ToolCalls,
    /// `function` (in a tool call) or legacy `function_call`.
    Function,
    /// `name` or `arguments` of a function.
    Argument,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "choices" => Key::Choices,
                    "usage" => Key::Usage,
                    "error" => Key::Error,
                    "delta" | "message" => Key::Message,
                    "text" => Key::Text,
                    "content" => Key::Content,
                    "reasoning_content" | "reasoning" | "refusal" => Key::Said,
                    "tool_calls" => Key::ToolCalls,
                    "function" | "function_call" => Key::Function,
                    "name" | "arguments" => Key::Argument,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Where the walker stands in a chunk; it says which members count.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    /// `choices`: an array of choices.
    Choices,
    Choice,
    /// `delta` or `message`.
    Message,
    /// `content`: a string, or an array of parts.
    Content,
    Part,
    ToolCalls,
    ToolCall,
    Function,
    /// A string that counts.
    Str,
}

impl Level {
    /// The level of member `key` inside this one, if it is followed.
    fn member(self, key: Key) -> Option<Level> {
        match (self, key) {
            (Level::Choice, Key::Message) => Some(Level::Message),
            (Level::Choice, Key::Text) => Some(Level::Str),
            (Level::Message, Key::Content) => Some(Level::Content),
            (Level::Message, Key::Said) => Some(Level::Str),
            (Level::Message, Key::ToolCalls) => Some(Level::ToolCalls),
            (Level::Message | Level::ToolCall, Key::Function) => Some(Level::Function),
            (Level::Function, Key::Argument) => Some(Level::Str),
            // A part's `text`; a refusal part's `refusal`.
            (Level::Part, Key::Text | Key::Said) => Some(Level::Str),
            _ => None,
        }
    }

    /// The level of each element of an array at this level, if followed.
    fn element(self) -> Option<Level> {
        match self {
            Level::Choices => Some(Level::Choice),
            Level::Content => Some(Level::Part),
            Level::ToolCalls => Some(Level::ToolCall),
            _ => None,
        }
    }
}

/// Text bytes under a value, and its element count when it is an array.
#[derive(Default)]
struct Tally {
    bytes: usize,
    items: Option<usize>,
}

/// The walker: a `DeserializeSeed` carrying its level.
struct Walk(Level);

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = Tally;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Tally, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = Tally;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a chunk member")
    }
    lenient_numbers!();
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Tally, E> {
        Ok(Tally::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Tally, E> {
        Ok(Tally::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Tally, E> {
        Ok(Tally::default())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Tally, E> {
        let counts = matches!(self.0, Level::Str | Level::Content);
        Ok(Tally {
            bytes: if counts { s.len() } else { 0 },
            items: None,
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tally, A::Error> {
        let Some(level) = self.0.element() else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Tally::default());
        };
        let (mut bytes, mut items) = (0usize, 0usize);
        while let Some(t) = seq.next_element_seed(Walk(level))? {
            bytes = bytes.saturating_add(t.bytes);
            items = items.saturating_add(1);
        }
        Ok(Tally {
            bytes,
            items: Some(items),
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tally, A::Error> {
        let mut bytes = 0usize;
        while let Some(key) = map.next_key::<Key>()? {
            match self.0.member(key) {
                Some(level) => {
                    let t = map.next_value_seed(Walk(level))?;
                    bytes = bytes.saturating_add(t.bytes);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Tally { bytes, items: None })
    }
}

/// `error` present and not null.
struct NotNull(bool);

impl<'de> Deserialize<'de> for NotNull {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NotNull;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<NotNull, E> {
                Ok(NotNull(false))
            }
            fn visit_none<E: de::Error>(self) -> Result<NotNull, E> {
                Ok(NotNull(false))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<NotNull, E> {
                Ok(NotNull(true))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<NotNull, E> {
                Ok(NotNull(true))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<NotNull, E> {
                Ok(NotNull(true))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<NotNull, E> {
                Ok(NotNull(true))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<NotNull, E> {
                Ok(NotNull(true))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NotNull, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(NotNull(true))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NotNull, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(NotNull(true))
            }
        }
        d.deserialize_any(V)
    }
}

/// The top level of a chunk. A repeated member: the last `usage` wins (as
/// in `serde_json::Value`), text of repeated `choices` adds up.
#[derive(Default)]
struct Facts(ChunkFacts);

impl<'de> Deserialize<'de> for Facts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Facts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a chunk")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Facts, A::Error> {
                let mut f = ChunkFacts::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Choices => {
                            let t = map.next_value_seed(Walk(Level::Choices))?;
                            f.text_bytes = f.text_bytes.saturating_add(t.bytes);
                            f.choices = t.items;
                        }
                        Key::Usage => f.usage = map.next_value::<UsageField>()?.0,
                        Key::Error => f.error = map.next_value::<NotNull>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Facts(f))
            }
            lenient_others!();
            lenient_numbers!();
        }
        d.deserialize_any(V)
    }
}
