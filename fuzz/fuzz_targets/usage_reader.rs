//! Fuzz the usage reader (M2) and the resolve/clamp that follow it (M3):
//! the first two bytes seed the bounds, the rest is a `usage` value. The
//! reader must agree with itself over bytes and over `serde_json::Value`
//! and with a plain reading of M2, and no count may wrap or pass a bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tollgate::proxy::meter::fuzz_usage(data));
