//! Fuzz the WHATWG event-stream framer and meter (M11, P2): the first two
//! bytes seed the chunking, the rest is a stream. Without hiding, the bytes
//! forwarded are the bytes received; with or without, any chunking gives
//! the output and readings of one push; the usage read from the stream's
//! bytes goes through the same checks as `usage_reader`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tollgate::proxy::meter::fuzz_sse(data));
