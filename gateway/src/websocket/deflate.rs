//! permessage-deflate (RFC 7692), with no context takeover on either side.
//!
//! Negotiated only with `--compression`, only for JSON clients that offer
//! it; every message is compressed on its own, so neither side keeps a
//! 32 KiB window per connection between messages, and a connection that
//! is not receiving a compressed message holds no inflater. Inflating stops
//! at the message cap: a small bomb that would inflate past it closes 1009.
//! Outgoing, messages under [`MIN_BYTES`] go as they are. A broadcast sends
//! the same encoded bytes to every member; without context takeover their
//! compressed form is the same too, so each thread compresses a shared
//! payload once and reuses it for the members it writes to next (the last
//! [`REMEMBERED`] payloads, at most [`REMEMBERED_BYTES`], per thread).

use std::cell::RefCell;
use std::collections::VecDeque;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Messages shorter than this are sent uncompressed.
pub const MIN_BYTES: usize = 256;

/// The fastest of zlib's levels.
const LEVEL: u32 = 1;

/// The extension as the gateway accepts it.
pub const RESPONSE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Every deflate block stream a message ends with (RFC 7692 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Whether one of the client's `Sec-WebSocket-Extensions` offers is a
/// permessage-deflate the gateway can accept: any parameters but a server
/// window smaller than 15 bits (the compressor's only one).
pub fn accepts(offers: &str) -> bool {
    offers.split(',').any(|offer| {
        let mut parts = offer.split(';').map(str::trim);
        if parts.next() != Some("permessage-deflate") {
            return false;
        }
        parts.all(|p| {
            let (name, value) =
                p.split_once('=').map_or((p, None), |(n, v)| (n.trim(), Some(v.trim().trim_matches('"'))));
            match name {
                "server_no_context_takeover" | "client_no_context_takeover" => value.is_none(),
                "client_max_window_bits" => value.is_none_or(|v| v.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b))),
                "server_max_window_bits" => value == Some("15"),
                _ => false,
            }
        })
    })
}

/// Why a compressed message was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the message cap.
    TooBig,
    /// Not a deflate stream.
    Invalid,
}

/// Inflates one message, at most `max` bytes of it.
pub fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let mut d = Decompress::new(false);
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    for (input, flush) in [(compressed, FlushDecompress::None), (&TAIL[..], FlushDecompress::Sync)] {
        let mut at = 0;
        loop {
            let (before_in, before_out) = (d.total_in(), d.total_out());
            let status = d.decompress(&input[at..], &mut chunk, flush).map_err(|_| InflateError::Invalid)?;
            let produced = (d.total_out() - before_out) as usize;
            at += (d.total_in() - before_in) as usize;
            if out.len() + produced > max {
                return Err(InflateError::TooBig);
            }
            out.extend_from_slice(&chunk[..produced]);
            // Until it can make no more progress: it may hold output back
            // even with room to spare and all input taken.
            let stuck = produced == 0 && d.total_in() == before_in;
            if matches!(status, Status::StreamEnd) || stuck {
                break;
            }
        }
    }
    Ok(out)
}

/// Payloads (with their compressed form) each thread remembers, at most, and
/// their bytes at most: a connection's batch holds several messages, and
/// the next connection's batch the same ones, so one would thrash.
const REMEMBERED: usize = 32;
const REMEMBERED_BYTES: usize = 1 << 20;

thread_local! {
    /// A compressor reused by this thread, and the payloads it compressed
    /// last (kept, so that their memory cannot be reused by others).
    static DEFLATE: RefCell<(Compress, VecDeque<(Bytes, Bytes)>)> =
        RefCell::new((Compress::new(Compression::new(LEVEL), false), VecDeque::new()));
}

/// `payload` compressed as one message (the trailing `00 00 ff ff` removed).
pub fn deflate(payload: &Bytes) -> Bytes {
    DEFLATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (compress, seen) = &mut *cell;
        if let Some((_, done)) = seen.iter().find(|(p, _)| p.as_ptr() == payload.as_ptr() && p.len() == payload.len()) {
            return done.clone();
        }
        compress.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let mut run = |input: &[u8], flush: FlushCompress, out: &mut Vec<u8>| {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(64));
            }
            let (before_in, before_out) = (compress.total_in(), compress.total_out());
            compress.compress_vec(input, out, flush).expect("deflate into a Vec");
            ((compress.total_in() - before_in) as usize, compress.total_out() - before_out)
        };
        let mut at = 0;
        while at < payload.len() {
            at += run(&payload[at..], FlushCompress::None, &mut out).0;
        }
        // Sync flushes until the output ends with the sync marker: miniz_oxide
        // may stop a flush short with room to spare (flate2's own writer, which
        // stops at the first call that leaves room, lost bytes of Autobahn's
        // 12.2 and 12.5 payloads; so did stopping when a call adds nothing).
        // A second marker is an empty stored block: still valid.
        loop {
            run(&[], FlushCompress::Sync, &mut out);
            if out.ends_with(&TAIL) {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        let done = Bytes::from(out);
        seen.push_back((payload.clone(), done.clone()));
        let held = |seen: &VecDeque<(Bytes, Bytes)>| seen.iter().map(|(p, d)| p.len() + d.len()).sum::<usize>();
        while seen.len() > REMEMBERED || (seen.len() > 1 && held(seen) > REMEMBERED_BYTES) {
            seen.pop_front();
        }
        done
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_accepted_unless_they_ask_for_a_smaller_server_window() {
        let table = [
            ("permessage-deflate", true),
            ("permessage-deflate; client_max_window_bits", true),
            ("permessage-deflate; client_max_window_bits=10; server_no_context_takeover", true),
            ("permessage-deflate; server_max_window_bits=10", false),
            ("permessage-deflate; server_max_window_bits=10, permessage-deflate", true),
            ("permessage-deflate; server_max_window_bits=15", true),
            ("permessage-deflate; mystery", false),
            ("x-webkit-deflate-frame", false),
            ("", false),
        ];
        for (offer, want) in table {
            assert_eq!(accepts(offer), want, "{offer}");
        }
    }

    #[test]
    fn messages_round_trip_and_bombs_stop_at_the_cap() {
        // Incompressible bytes too, past the 16 KiB chunk: all of it comes back.
        let noise: Vec<u8> = (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let noise = Bytes::from(noise);
        assert_eq!(inflate(&deflate(&noise), 1 << 20).unwrap(), noise);
        let text = Bytes::from(r#"{"type":"message","data":"hello hello hello hello"}"#.repeat(100));
        let packed = deflate(&text);
        assert!(packed.len() < text.len() / 10, "{} bytes", packed.len());
        assert_eq!(deflate(&text), packed, "the same payload twice: the cached form");
        assert_eq!(inflate(&packed, text.len()).unwrap(), text);
        assert_eq!(inflate(&packed, text.len() - 1), Err(InflateError::TooBig));
        let bomb = deflate(&Bytes::from(vec![b'a'; 4 << 20]));
        assert!(bomb.len() < 64 << 10, "4 MiB of one byte fits in one message: {}", bomb.len());
        assert_eq!(inflate(&bomb, 64 << 10), Err(InflateError::TooBig));
        assert_eq!(inflate(b"\xff\xff\xff\xff not deflate", 1 << 20), Err(InflateError::Invalid));
        assert_eq!(inflate(&deflate(&Bytes::new()), 10).unwrap(), b"");
    }
}
