//! What each fuzz target feeds its entry point and asserts about the answer,
//! for one input.
//!
//! Shared by the libFuzzer targets (`fuzz_targets/<target>.rs`) and the
//! corpus replay that `cargo test` runs on stable
//! (`gateway/tests/fuzz_corpus.rs`), so both check exactly the same thing.
//! Every function must return normally for any input: a panic is a bug.

// Each fuzz target includes this whole file and uses one function of it.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use gateway::delivery::fanout::Encoded;
use gateway::session::auth::{token_from_request, Verifier};
use gateway::websocket::reader::{FrameReader, Incoming};
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use prost::Message as _;
use proto::client::{Encoding, Event, Op, Request};
use proto::internal::{self, room_event};
use proto::pb;
use serde_json::value::RawValue;

/// The HS256 secret of the token target's verifier.
const SECRET: &[u8] = b"switchboard-fuzz-secret";
/// Longest error message a decoder may produce, whatever the input: errors
/// are sent back to the client and must not echo its input at length.
const MAX_ERROR_MESSAGE: usize = 256;
const ENCODINGS: [Encoding; 2] = [Encoding::Json, Encoding::Proto];

/// A client's JSON text frame, decoded into a request. The reader only
/// hands over valid UTF-8, so other inputs are skipped.
pub fn client_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Request::from_json(text) {
        Ok(req) => sane_op(&req.op),
        Err(e) => assert!(e.message.len() <= MAX_ERROR_MESSAGE, "error message of {} bytes", e.message.len()),
    }
}

/// A client's protobuf binary frame, decoded into a request.
pub fn client_proto(data: &[u8]) {
    match Request::from_proto(data) {
        Ok(req) => sane_op(&req.op),
        Err(e) => assert!(e.message.len() <= MAX_ERROR_MESSAGE, "error message of {} bytes", e.message.len()),
    }
}

/// What a decoded op promises the gateway, whatever the encoding.
fn sane_op(op: &Op) {
    match op {
        Op::Publish { data, .. } | Op::Send { data, .. } => {
            serde_json::from_slice::<serde::de::IgnoredAny>(data).expect("`data` is JSON");
        }
        Op::Presence { users } | Op::Watch { users } | Op::Unwatch { users } => {
            assert!(!users.is_empty() && users.len() <= proto::client::MAX_USERS_PER_REQUEST);
            assert!(users.iter().all(|u| proto::subject::valid_id(u)), "{users:?}");
        }
        _ => {}
    }
}

/// Client tokens, from where they arrive to the verifier's verdict. The
/// first byte picks what the rest is:
/// - 0: a token string given to `Verifier::verify`;
/// - 1: a `/ws` URL query, read by `token_from_request` then verified;
/// - 2: an `Authorization` header value, read the same way;
/// - 3: a claims JSON object, signed with the verifier's own secret so the
///   fuzzer gets past the signature and into the claim checks.
///
/// An accepted token must have a valid `sub` and an `exp` in the future.
pub fn token(data: &[u8]) {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    let verifier = VERIFIER.get_or_init(|| Verifier::hs256(SECRET));
    let Some((&mode, rest)) = data.split_first() else { return };
    let token = match mode % 4 {
        0 => std::str::from_utf8(rest).ok().map(str::to_owned),
        1 => std::str::from_utf8(rest).ok().and_then(|q| token_from_request(&HeaderMap::new(), Some(q))),
        2 => HeaderValue::from_bytes(rest).ok().and_then(|v| {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, v);
            token_from_request(&headers, None)
        }),
        _ => {
            let Some(claims) = std::str::from_utf8(rest).ok().and_then(|c| RawValue::from_string(c.to_owned()).ok())
            else {
                return;
            };
            let key = EncodingKey::from_secret(SECRET);
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).ok()
        }
    };
    let Some(token) = token else { return };
    if let Ok(claims) = verifier.verify(&token) {
        assert!(proto::subject::valid_id(&claims.sub), "accepted sub {:?}", claims.sub);
        assert!(claims.exp > proto::now_ms() / 1000, "accepted an expired token");
    }
}

/// Raw client bytes after the upgrade, through the gateway's frame reader.
/// The first byte picks the message cap (125 B, 1000 B or the default
/// 64 KiB), and from 3 on (mod 6) permessage-deflate, so that compressed
/// messages (RSV1) are inflated. The reader must end with an error (a close
/// code, or the end of the bytes), and every message it hands over must keep
/// its promises: text is UTF-8, data within the cap (inflated or not), pings
/// within 125 bytes, close codes valid.
pub fn frame_reader(data: &[u8]) {
    const CAPS: [usize; 3] = [125, 1000, 64 * 1024];
    let Some((&mode, stream)) = data.split_first() else { return };
    let max = CAPS[mode as usize % CAPS.len()];
    let deflate = mode % 6 >= 3;
    let mut reader = FrameReader::new(stream, Bytes::new(), max).with_deflate(deflate);
    let mut cx = Context::from_waker(Waker::noop());
    // Every message consumes at least a 2-byte frame head.
    for _ in 0..=stream.len() / 2 + 1 {
        match reader.poll_next(&mut cx) {
            Poll::Ready(Ok(msg)) => match msg {
                Incoming::Text(t) => assert!(t.len() <= max && std::str::from_utf8(&t).is_ok()),
                Incoming::Binary(b) => assert!(b.len() <= max),
                Incoming::Ping(p) => assert!(p.len() <= 125),
                Incoming::Close(Some(code)) => assert!(matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)),
                Incoming::Close(None) | Incoming::Pong => {}
                Incoming::Renew | Incoming::Orders => panic!("the reader yields only what the client sent"),
            },
            Poll::Ready(Err(_)) => return,
            Poll::Pending => panic!("an in-memory stream is never pending"),
        }
    }
    panic!("more messages than the bytes can hold");
}

/// Bus payloads, decoded the way their consumers decode them: anything on
/// NATS can publish on Switchboard's subjects. The first byte picks the
/// message; the rest is its payload:
/// - 0: `RouterRequest` on `sb.router.<id>` (the room owner);
/// - 1: `RouterReply`, as callers of an owner read it;
/// - 2: `RoomEvent` on `sb.room.<room>`, then the client frames a gateway's
///   fanout makes of it, in both encodings;
/// - 3: `RouterAnnounce` on `sb.ctl.router` (ring membership);
/// - 4: `GatewayAnnounce` on `sb.ctl.gateway` (owners);
/// - 5, 6: `DirectMessage` on `sb.gateway.<id>.direct` and
///   `PresenceChange` on `sb.presence.<user>`, then their client frames.
pub fn bus_message(data: &[u8]) {
    let Some((&kind, payload)) = data.split_first() else { return };
    match kind % 7 {
        0 => {
            if let Ok(req) = internal::RouterRequest::decode(payload) {
                let _ = proto::subject::valid_id(&req.room);
            }
        }
        1 => {
            let _ = router::client::decode_reply(payload);
        }
        2 => {
            let Ok(ev) = internal::RoomEvent::decode(payload) else { return };
            let room: Arc<str> = Arc::from("fuzz");
            for encoding in ENCODINGS {
                let _ = match &ev.kind {
                    Some(room_event::Kind::Message(m)) => {
                        Encoded::new(room.clone(), ev.epoch.as_str().into(), m.clone()).bytes(encoding)
                    }
                    Some(room_event::Kind::Joined(j)) => {
                        Event::Joined { room: &j.room, user: &j.user, info: &j.info, count: j.count }.encode(encoding)
                    }
                    Some(room_event::Kind::Left(l)) => {
                        Event::Left { room: &l.room, user: &l.user, count: l.count }.encode(encoding)
                    }
                    Some(room_event::Kind::MembersChanged(m)) => Event::MembersChanged(m).encode(encoding),
                    Some(room_event::Kind::Read(r)) => {
                        Event::Read { room: &room, user: &r.user, seq: r.seq }.encode(encoding)
                    }
                    Some(room_event::Kind::Signal(s)) => {
                        Event::Signal { room: &room, from: &s.from, data: &s.data }.encode(encoding)
                    }
                    None => Bytes::new(),
                };
            }
        }
        3 => {
            if let Some(a) = router::membership::decode_announce(payload) {
                assert!(proto::subject::valid_node_id(&a.id));
            }
        }
        4 => {
            let _ = internal::GatewayAnnounce::decode(payload);
        }
        5 => {
            let Ok(d) = internal::DirectMessage::decode(payload) else { return };
            for encoding in ENCODINGS {
                let _ = Event::Direct { from: &d.from, data: &d.data, ts: d.ts, queued: false }.encode(encoding);
            }
        }
        _ => {
            let Ok(p) = pb::PresenceChange::decode(payload) else { return };
            for encoding in ENCODINGS {
                let _ =
                    Event::Presence { user: &p.user, online: p.online, ts: p.ts, status: &p.status }.encode(encoding);
            }
        }
    }
}
