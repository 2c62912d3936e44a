//! A client's JSON text frame, as the gateway decodes it into a request.
//! The input's layout and what is asserted: `properties::client_json`.

#![no_main]

#[path = "../properties.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::client_json(data));
