//! Raw client bytes after the upgrade, through the gateway's frame reader.
//! The input's layout and what is asserted: `properties::frame_reader`.

#![no_main]

#[path = "../properties.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::frame_reader(data));
