//! Bus payloads, decoded the way their consumers decode them.
//! The input's layout and what is asserted: `properties::bus_message`.

#![no_main]

#[path = "../properties.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::bus_message(data));
