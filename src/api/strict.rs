//! S3: what a management body must be before any handler reads it: sent as
//! `application/json` (415 otherwise) and free of repeated member names in
//! any object at any depth (422), so no two JSON parsers read it differently.

use std::collections::HashSet;
use std::fmt;

use axum::http::{header, HeaderMap};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::ApiError;

/// `application/json`, any case, optionally with `charset=utf-8`.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut parts = value.split(';').map(str::trim);
    let essence_ok = parts
        .next()
        .is_some_and(|t| t.eq_ignore_ascii_case("application/json"));
    let params_ok = parts.all(|p| {
        p.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("charset")
                && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        })
    });
    if essence_ok && params_ok {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Refuses a body with a repeated member name in any object (422); a body
/// that is not JSON at all is left to the typed parse (its existing 400).
pub fn check_no_duplicates(bytes: &[u8]) -> Result<(), ApiError> {
    match serde_json::from_slice::<Unique>(bytes) {
        Ok(_) => Ok(()),
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            Err(ApiError::DuplicateMember(e.to_string()))
        }
        Err(_) => Ok(()),
    }
}

/// Any JSON value, read only to prove no object in it repeats a name.
struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(de::Error::custom("a member name is repeated in an object"));
            }
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_are_found_at_any_depth() {
        assert!(check_no_duplicates(br#"{"a":1,"b":[{"c":1}]}"#).is_ok());
        assert!(check_no_duplicates(br#"{"a":1,"a":2}"#).is_err());
        assert!(check_no_duplicates(br#"{"x":[{"c":1,"c":1}]}"#).is_err());
        assert!(check_no_duplicates(br#"{"x":{"y":{"z":1,"z":1}}}"#).is_err());
        // The same name escaped differently is still the same name.
        assert!(check_no_duplicates(br#"{"a":1,"\u0061":2}"#).is_err());
        assert!(check_no_duplicates(b"{not json").is_ok());
    }
}
