//! Fuzz the streaming JSON meter of non-streamed answers (M8): the first
//! byte seeds the chunking, the rest is an answer. Its state stays bounded,
//! its facts do not depend on the chunking, and it agrees with serde_json
//! on what is a well-formed object and on `usage`, `choices` and `data`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tollgate::proxy::meter::fuzz_json(data));
