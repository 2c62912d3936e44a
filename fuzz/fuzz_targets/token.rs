//! Client tokens, from where they arrive to the verifier's verdict.
//! The input's layout and what is asserted: `properties::token`.

#![no_main]

#[path = "../properties.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::token(data));
