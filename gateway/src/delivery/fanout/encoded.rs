//! A room message encoded once per encoding, shared by every member.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use prost::Message as _;
use proto::client::{Encoding, Event};
use proto::internal;

/// A room message, encoded lazily once per encoding.
pub struct Encoded {
    pub room: Arc<str>,
    pub epoch: Arc<str>,
    msg: internal::StoredMessage,
    json: OnceLock<Bytes>,
    proto: OnceLock<Bytes>,
}

impl Encoded {
    pub fn new(room: Arc<str>, epoch: Arc<str>, mut msg: internal::StoredMessage) -> Self {
        // Decoding sliced the payload out of the bus's buffer, which a kept
        // slice would keep whole (with everything else it holds).
        msg.data = Bytes::copy_from_slice(&msg.data);
        Self { room, epoch, msg, json: OnceLock::new(), proto: OnceLock::new() }
    }

    /// The `message` frame in `encoding`.
    pub fn bytes(&self, encoding: Encoding) -> Bytes {
        let slot = match encoding {
            Encoding::Json => &self.json,
            Encoding::Proto => &self.proto,
        };
        slot.get_or_init(|| {
            let m = &self.msg;
            Event::Message { room: &self.room, seq: m.seq, epoch: &self.epoch, from: &m.from, data: &m.data, ts: m.ts }
                .encode(encoding)
        })
        .clone()
    }

    pub fn seq(&self) -> u64 {
        self.msg.seq
    }

    /// Bytes it holds, counted against buffer bounds: the message and one
    /// encoding of it (a second encoding, when members use both, is not
    /// counted). An estimate that stays fixed for the message's life; in
    /// RSS a small message costs about 2.5 times this (benchmarks.md).
    pub fn size(&self) -> usize {
        2 * self.msg.encoded_len() + 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_message_holds_none_of_the_buffer_it_was_decoded_from() {
        let stored = internal::StoredMessage {
            seq: 1,
            from: "u".into(),
            data: Bytes::from_static(b"\"hi\""),
            ts: 1,
            ..Default::default()
        };
        let buffer = Bytes::from(stored.encode_to_vec());
        let decoded = internal::StoredMessage::decode(buffer.clone()).unwrap();
        assert!(!buffer.is_unique(), "decoding slices the buffer");
        let kept = Encoded::new("r".into(), "e".into(), decoded);
        assert!(buffer.is_unique(), "the kept message copied its data out");
        assert_eq!(
            &kept.bytes(Encoding::Json)[..],
            br#"{"type":"message","room":"r","seq":1,"epoch":"e","from":"u","data":"hi","ts":1}"#
        );
    }
}
