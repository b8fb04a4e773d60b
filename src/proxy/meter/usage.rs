//! Usage: what an upstream's `usage` object says, read count by count (M2),
//! resolved into the billed `Usage` (M2, M4's prompt estimate for a
//! total-only object) and bounded by the request (M3). Pure: no I/O.
//!
//! Why field by field, not a strict serde struct: one odd count (null, a
//! negative, a float, a string, a value past u64) must not throw away the
//! others, nor wrap. The reader is a serde visitor, so the same code reads
//! a `serde_json::Value` and raw bytes, and the SSE meter reads a chunk's
//! `usage` member in place without building a `Value` (no allocation).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The counts of a `usage` object as the upstream wrote them, in tokens.
/// `None`: null, absent, or not a count (a string, a fractional number, an
/// object). A negative number reads as `Some(0)`; a number past `u64::MAX`
/// reads as `Some(u64::MAX)` (M3 clamps it later; it never wraps).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawUsage {
    /// `prompt_tokens`, else `input_tokens` (Responses API / Anthropic).
    pub prompt: Option<u64>,
    /// `completion_tokens`, else `output_tokens`.
    pub completion: Option<u64>,
    /// `total_tokens`.
    pub total: Option<u64>,
    /// `prompt_tokens_details.cached_tokens`, else
    /// `input_tokens_details.cached_tokens`.
    pub cached: Option<u64>,
}

impl RawUsage {
    /// Any count usable: M2's "a usage object with no usable count is
    /// absent" is `!has_any()`.
    pub fn has_any(&self) -> bool {
        // A cached count alone says nothing of the prompt it is part of.
        self.prompt.is_some() || self.completion.is_some() || self.total.is_some()
    }
}

pub use crate::pricing::Usage;

/// What a request could produce, in tokens (M3): the hold's output bound
/// (B5a with M6) and the model's `context_window` (or `u64::MAX` when the
/// pricing file sets none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_input: u64,
    pub max_output: u64,
}

/// Read a `usage` value (M2). `None` when it is not an object or carries no
/// usable count at all.
pub fn read_usage(v: &serde_json::Value) -> Option<RawUsage> {
    UsageField::deserialize(v).ok()?.0.filter(RawUsage::has_any)
}

/// `read_usage` over a usage value's raw JSON bytes (`{"prompt_tokens":..}`);
/// `None` also for bytes that are not one well-formed JSON value.
pub fn read_usage_bytes(b: &[u8]) -> Option<RawUsage> {
    serde_json::from_slice::<UsageField>(b)
        .ok()?
        .0
        .filter(RawUsage::has_any)
}

/// Resolve the counts into billed tokens (M2).
///
/// - prompt and completion both present: they are the bill; total ignored.
/// - total with only one of them: the other is what the total leaves
///   (saturating), except that embeddings (`generates == false`) never
///   derive output from a total.
/// - total only: on embeddings the total is the input; on generating routes
///   input = min(total, `prompt_estimate`) (M4's 4-bytes-a-token estimate of
///   the prompt, in tokens), output = the rest.
/// - otherwise a missing count is 0.
///
/// `cached` is at most the input.
pub fn resolve(raw: RawUsage, generates: bool, prompt_estimate: u64) -> Usage {
    let (input, output) = match (raw.prompt, raw.completion, raw.total) {
        (Some(p), Some(c), _) => (p, c),
        (Some(p), None, Some(t)) if generates => (p, t.saturating_sub(p)),
        (None, Some(c), Some(t)) => (t.saturating_sub(c), c),
        (None, None, Some(t)) if generates => {
            let input = t.min(prompt_estimate);
            (input, t - input)
        }
        (None, None, Some(t)) => (t, 0),
        (p, c, _) => (p.unwrap_or(0), c.unwrap_or(0)),
    };
    Usage {
        input_tokens: input,
        cached_tokens: raw.cached.unwrap_or(0).min(input),
        output_tokens: output,
    }
}

/// Bound billed counts by what the request could produce (M3): output at
/// most `max_output`, input at most `max_input`, cached at most the input.
/// The flag is true when any count was lowered (the caller logs it without
/// content and counts it in a metric).
pub fn clamp(u: Usage, b: Bounds) -> (Usage, bool) {
    let input_tokens = u.input_tokens.min(b.max_input);
    let out = Usage {
        input_tokens,
        cached_tokens: u.cached_tokens.min(input_tokens),
        output_tokens: u.output_tokens.min(b.max_output),
    };
    (out, out != u)
}

/// A `usage` member as serde reads it: `Some` for any object (its counts
/// possibly all `None`), `None` for null or any other value. Never fails on
/// a type: only malformed JSON fails. The SSE meter uses the object/not
/// distinction to recognise the usage-only chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UsageField(pub(crate) Option<RawUsage>);

impl<'de> Deserialize<'de> for UsageField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UsageVisitor)
    }
}

/// The member names this module reads. Matched on the decoded name, as
/// `serde_json::Value` keys are, so `"prompt\u005ftokens"` is
/// `prompt_tokens` on both paths.
enum Name {
    Prompt,
    Completion,
    Total,
    Input,
    Output,
    PromptDetails,
    InputDetails,
    Cached,
    Other,
}

impl Name {
    fn of(s: &str) -> Name {
        match s {
            "prompt_tokens" => Name::Prompt,
            "completion_tokens" => Name::Completion,
            "total_tokens" => Name::Total,
            "input_tokens" => Name::Input,
            "output_tokens" => Name::Output,
            "prompt_tokens_details" => Name::PromptDetails,
            "input_tokens_details" => Name::InputDetails,
            "cached_tokens" => Name::Cached,
            _ => Name::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Name, E> {
                Ok(Name::of(s))
            }
            fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Name, E> {
                Ok(std::str::from_utf8(b).map_or(Name::Other, Name::of))
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Drain a map the reader does not want.
fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Visitor methods that read everything but the expected shape as
/// `Default::default()` (nothing), draining containers: shared by the
/// lenient visitors here and in `chunk.rs`.
macro_rules! lenient_others {
    () => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

macro_rules! lenient_numbers {
    () => {
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
}
pub(crate) use {lenient_numbers, lenient_others};

/// One count, read leniently (see `RawUsage`).
#[derive(Default)]
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Count;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a token count")
    }
    lenient_others!();
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Count, E> {
        Ok(Count(Some(n)))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Count, E> {
        Ok(Count(Some(u64::try_from(n).unwrap_or(0))))
    }
    /// serde_json gives an integer past u64 as an f64: `as` saturates it to
    /// `u64::MAX`. A fraction is not a count; a negative is 0.
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Count, E> {
        Ok(Count(if x < 0.0 {
            Some(0)
        } else if x.fract() == 0.0 {
            Some(x as u64)
        } else {
            None
        }))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Count, A::Error> {
        drain_map(map).map(|()| Count(None))
    }
}

/// `*_tokens_details`: its `cached_tokens`, if any.
#[derive(Default)]
struct Details(Option<u64>);

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Details;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a details object")
            }
            lenient_others!();
            lenient_numbers!();
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Details, A::Error> {
                let mut cached = None;
                while let Some(name) = map.next_key::<Name>()? {
                    match name {
                        Name::Cached => cached = map.next_value::<Count>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Details(cached))
            }
        }
        d.deserialize_any(V)
    }
}

struct UsageVisitor;

impl<'de> Visitor<'de> for UsageVisitor {
    type Value = UsageField;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a usage object")
    }
    lenient_others!();
    lenient_numbers!();
    /// A repeated member: the last one wins, as in `serde_json::Value`.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UsageField, A::Error> {
        let [mut prompt, mut completion, mut total, mut input, mut output] = [None; 5];
        let (mut prompt_cached, mut input_cached) = (None, None);
        while let Some(name) = map.next_key::<Name>()? {
            match name {
                Name::Prompt => prompt = map.next_value::<Count>()?.0,
                Name::Completion => completion = map.next_value::<Count>()?.0,
                Name::Total => total = map.next_value::<Count>()?.0,
                Name::Input => input = map.next_value::<Count>()?.0,
                Name::Output => output = map.next_value::<Count>()?.0,
                Name::PromptDetails => prompt_cached = map.next_value::<Details>()?.0,
                Name::InputDetails => input_cached = map.next_value::<Details>()?.0,
                Name::Cached | Name::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        // The aliases stand in for an OpenAI count that is absent or not
        // usable (null, a string): a usable count is never thrown away.
        Ok(UsageField(Some(RawUsage {
            prompt: prompt.or(input),
            completion: completion.or(output),
            total,
            cached: prompt_cached.or(input_cached),
        })))
    }
}

#[cfg(test)]
mod tests;
