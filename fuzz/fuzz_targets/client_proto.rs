//! A client's protobuf binary frame, as the gateway decodes it into a request.
//! The input's layout and what is asserted: `properties::client_proto`.

#![no_main]

#[path = "../properties.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::client_proto(data));
