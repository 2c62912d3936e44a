//! Decoding client frames into [`Request`]s.
//!
//! A bad frame is answered, never dropped silently: the decoder keeps the
//! request id whenever it could be read, so that the error can go back as a
//! `reply` the client is waiting for rather than as a bare `error` event.

use bytes::Bytes;
use prost::Message as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ErrorCode;
use crate::pb;

/// The id a client attached to a request, echoed in its reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RequestId {
    /// No id: the request gets no reply (errors become `error` events).
    #[default]
    None,
    /// A JSON string or number, echoed verbatim.
    Json(Box<str>),
    /// A protobuf id (never 0).
    Proto(u64),
}

impl RequestId {
    /// Whether the client wants a reply.
    pub fn is_some(&self) -> bool {
        !matches!(self, Self::None)
    }
}

/// One client operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Authenticate after connecting.
    Auth { token: String },
    /// Join a room, optionally resuming after `since`.
    Join { room: String, since: Option<pb::Since> },
    /// Leave a room.
    Leave { room: String },
    /// Publish `data` (JSON text) to a joined room; a repeated
    /// `idempotency_key` (empty: none) answers the first message's seq.
    Publish { room: String, data: Bytes, idempotency_key: String },
    /// Send `data` (JSON text) to every connection of `user`.
    Send { user: String, data: Bytes },
    /// List a room's members.
    Members { room: String },
    /// Ask whether users are online.
    Presence { users: Vec<String> },
    /// Receive presence events for users.
    Watch { users: Vec<String> },
    /// Stop receiving presence events for users.
    Unwatch { users: Vec<String> },
    /// Extend the connection with a fresh token.
    Refresh { token: String },
    /// Application-level ping, answered by `pong`.
    Ping,
    /// An unsequenced, unstored event for a joined room's other members.
    Signal { room: String, data: Bytes },
    /// Set this user's status.
    Status { status: String },
    /// Mark a joined room read up to `seq`.
    Read { room: String, seq: u64 },
}

impl Op {
    /// The op's wire name; also the `op` label of metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Auth { .. } => "auth",
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::Publish { .. } => "publish",
            Self::Send { .. } => "send",
            Self::Members { .. } => "members",
            Self::Presence { .. } => "presence",
            Self::Watch { .. } => "watch",
            Self::Unwatch { .. } => "unwatch",
            Self::Refresh { .. } => "refresh",
            Self::Ping => "ping",
            Self::Signal { .. } => "signal",
            Self::Status { .. } => "status",
            Self::Read { .. } => "read",
        }
    }
}

/// A decoded client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: RequestId,
    pub op: Op,
}

/// A frame that could not be decoded, with the id to answer if one was read.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub id: RequestId,
    pub code: ErrorCode,
    pub message: String,
}

/// Longest error message a bad frame gets back, in bytes (plus an ellipsis):
/// serde's messages quote the offending value, which is client input.
const MAX_MESSAGE_BYTES: usize = 200;

impl DecodeError {
    /// An error whose message is capped, whatever client input it quotes.
    fn new(id: RequestId, code: ErrorCode, message: String) -> Self {
        let mut message = message;
        if message.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        Self { id, code, message }
    }

    fn bad(id: &RequestId, message: impl Into<String>) -> Self {
        Self::new(id.clone(), ErrorCode::BadRequest, message.into())
    }
}

/// Every field any op uses, still raw, so a mistyped field does not cost the id.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    op: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    room: Option<&'a RawValue>,
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user: Option<&'a RawValue>,
    #[serde(borrow, default)]
    users: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
    #[serde(borrow, default)]
    status: Option<&'a RawValue>,
    #[serde(borrow, default)]
    seq: Option<&'a RawValue>,
    #[serde(borrow, default)]
    idempotency_key: Option<&'a RawValue>,
}

/// `data: null` is data, not a missing field.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct JsonSince {
    epoch: String,
    seq: u64,
}

/// Longest `idempotency_key` of a publish, in bytes (the server API's too).
pub const MAX_IDEMPOTENCY_KEY: usize = 64;

fn idempotency_key(id: &RequestId, key: String) -> Result<String, DecodeError> {
    if key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(DecodeError::bad(id, format!("idempotency_key is over {MAX_IDEMPOTENCY_KEY} bytes")));
    }
    Ok(key)
}

/// Most users one presence, watch or unwatch request may name.
pub const MAX_USERS_PER_REQUEST: usize = 100;

impl Request {
    /// Decodes a JSON text frame.
    pub fn from_json(text: &str) -> Result<Self, DecodeError> {
        // serde would also read a struct from an array; a request is an object.
        if !text.trim_start().starts_with('{') {
            return Err(DecodeError::bad(&RequestId::None, "a request must be a JSON object"));
        }
        let fields: Fields = serde_json::from_str(text)
            .map_err(|e| DecodeError::bad(&RequestId::None, format!("not a JSON request object: {e}")))?;
        let id = match fields.id.map(|raw| raw.get()) {
            None | Some("null") => RequestId::None,
            Some(raw)
                if raw.starts_with('"') || raw.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) =>
            {
                RequestId::Json(raw.into())
            }
            Some(_) => return Err(DecodeError::bad(&RequestId::None, "`id` must be a string or a number")),
        };
        let Some(op) = fields.op else {
            return Err(DecodeError::bad(&id, "missing field `op`"));
        };
        let op: String = typed(&id, "op", op)?;
        let op = match op.as_str() {
            "auth" => Op::Auth { token: required(&id, "token", fields.token)? },
            "join" => Op::Join {
                room: required(&id, "room", fields.room)?,
                since: match fields.since {
                    None => None,
                    Some(raw) if raw.get() == "null" => None,
                    Some(raw) => {
                        let s: JsonSince = typed(&id, "since", raw)?;
                        Some(pb::Since { epoch: s.epoch, seq: s.seq })
                    }
                },
            },
            "leave" => Op::Leave { room: required(&id, "room", fields.room)? },
            "publish" => Op::Publish {
                room: required(&id, "room", fields.room)?,
                data: raw_data(&id, fields.data)?,
                idempotency_key: match fields.idempotency_key {
                    None => String::new(),
                    Some(raw) => idempotency_key(&id, typed(&id, "idempotency_key", raw)?)?,
                },
            },
            "send" => Op::Send { user: required(&id, "user", fields.user)?, data: raw_data(&id, fields.data)? },
            "members" => Op::Members { room: required(&id, "room", fields.room)? },
            "presence" => Op::Presence { users: users(&id, fields.users)? },
            "watch" => Op::Watch { users: users(&id, fields.users)? },
            "unwatch" => Op::Unwatch { users: users(&id, fields.users)? },
            "refresh" => Op::Refresh { token: required(&id, "token", fields.token)? },
            "ping" => Op::Ping,
            "read" => Op::Read { room: required(&id, "room", fields.room)?, seq: required(&id, "seq", fields.seq)? },
            "status" => Op::Status { status: required(&id, "status", fields.status)? },
            "signal" => Op::Signal { room: required(&id, "room", fields.room)?, data: raw_data(&id, fields.data)? },
            other => return Err(DecodeError::new(id, ErrorCode::UnknownOp, format!("unknown op {other:?}"))),
        };
        Ok(Request { id, op })
    }

    /// Decodes a protobuf binary frame.
    pub fn from_proto(bytes: &[u8]) -> Result<Self, DecodeError> {
        let frame = pb::ClientFrame::decode(bytes)
            .map_err(|e| DecodeError::bad(&RequestId::None, format!("not a ClientFrame: {e}")))?;
        let id = match frame.id {
            0 => RequestId::None,
            n => RequestId::Proto(n),
        };
        use pb::client_frame::Op as P;
        let op = match frame.op {
            None => return Err(DecodeError { id, code: ErrorCode::UnknownOp, message: "no op set".into() }),
            Some(P::Auth(a)) => Op::Auth { token: a.token },
            Some(P::Join(j)) => Op::Join { room: j.room, since: j.since },
            Some(P::Leave(l)) => Op::Leave { room: l.room },
            Some(P::Publish(p)) => Op::Publish {
                room: p.room,
                data: json_bytes(&id, p.data)?,
                idempotency_key: idempotency_key(&id, p.idempotency_key)?,
            },
            Some(P::Send(s)) => Op::Send { user: s.user, data: json_bytes(&id, s.data)? },
            Some(P::Members(m)) => Op::Members { room: m.room },
            Some(P::Presence(p)) => Op::Presence { users: user_list(&id, p.users)? },
            Some(P::Watch(w)) => Op::Watch { users: user_list(&id, w.users)? },
            Some(P::Unwatch(w)) => Op::Unwatch { users: user_list(&id, w.users)? },
            Some(P::Refresh(r)) => Op::Refresh { token: r.token },
            Some(P::Ping(_)) => Op::Ping,
            Some(P::Signal(s)) => Op::Signal { room: s.room, data: json_bytes(&id, s.data)? },
            Some(P::Status(s)) => Op::Status { status: s.status },
            Some(P::Read(r)) => Op::Read { room: r.room, seq: r.seq },
        };
        Ok(Request { id, op })
    }
}

fn typed<'a, T: Deserialize<'a>>(id: &RequestId, name: &str, raw: &'a RawValue) -> Result<T, DecodeError> {
    serde_json::from_str(raw.get()).map_err(|e| DecodeError::bad(id, format!("bad field `{name}`: {e}")))
}

fn required<'a, T: Deserialize<'a>>(id: &RequestId, name: &str, raw: Option<&'a RawValue>) -> Result<T, DecodeError> {
    match raw {
        Some(raw) if raw.get() != "null" => typed(id, name, raw),
        _ => Err(DecodeError::bad(id, format!("missing field `{name}`"))),
    }
}

fn raw_data(id: &RequestId, raw: Option<&RawValue>) -> Result<Bytes, DecodeError> {
    raw.map(|r| Bytes::copy_from_slice(r.get().as_bytes())).ok_or_else(|| DecodeError::bad(id, "missing field `data`"))
}

fn users(id: &RequestId, raw: Option<&RawValue>) -> Result<Vec<String>, DecodeError> {
    user_list(id, required(id, "users", raw)?)
}

fn user_list(id: &RequestId, users: Vec<String>) -> Result<Vec<String>, DecodeError> {
    if users.is_empty() || users.len() > MAX_USERS_PER_REQUEST {
        return Err(DecodeError::bad(id, format!("`users` must name 1 to {MAX_USERS_PER_REQUEST} users")));
    }
    if let Some(bad) = users.iter().find(|u| !crate::subject::valid_id(u)) {
        return Err(DecodeError::bad(id, format!("invalid user id {bad:?}")));
    }
    Ok(users)
}

/// Protobuf `data` must hold JSON text, so JSON clients can read it too.
fn json_bytes(id: &RequestId, data: Bytes) -> Result<Bytes, DecodeError> {
    if data.is_empty() {
        return Err(DecodeError::bad(id, "missing field `data`"));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(&data)
        .map_err(|e| DecodeError::bad(id, format!("`data` is not JSON: {e}")))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> DecodeError {
        Request::from_json(text).unwrap_err()
    }

    #[test]
    fn json_ops_decode() {
        let r = Request::from_json(r#"{"op":"join","id":7,"room":"a","since":{"epoch":"e","seq":3}}"#).unwrap();
        assert_eq!(r.id, RequestId::Json("7".into()));
        assert_eq!(r.op, Op::Join { room: "a".into(), since: Some(pb::Since { epoch: "e".into(), seq: 3 }) });
        let r = Request::from_json(r#"{"op":"publish","id":"x","room":"a","data":{"k":[1, 2]}}"#).unwrap();
        assert_eq!(r.id, RequestId::Json("\"x\"".into()));
        assert_eq!(
            r.op,
            Op::Publish {
                room: "a".into(),
                data: Bytes::from_static(b"{\"k\":[1, 2]}"),
                idempotency_key: String::new()
            }
        );
        let r = Request::from_json(r#"{"op":"send","user":"u","data":null}"#).unwrap();
        assert_eq!(r.op, Op::Send { user: "u".into(), data: Bytes::from_static(b"null") });
        assert_eq!(Request::from_json(r#"{"op":"ping"}"#).unwrap().op, Op::Ping);
        let r = Request::from_json(r#"{"op":"read","room":"a","seq":12}"#).unwrap();
        assert_eq!(r.op, Op::Read { room: "a".into(), seq: 12 });
        assert_eq!(err(r#"{"op":"read","room":"a","seq":-1,"id":1}"#).code, ErrorCode::BadRequest);
        let r = Request::from_json(r#"{"op":"signal","room":"a","data":{"typing":true}}"#).unwrap();
        assert_eq!(r.op, Op::Signal { room: "a".into(), data: Bytes::from_static(b"{\"typing\":true}") });
        assert_eq!(err(r#"{"op":"signal","room":"a","id":2}"#).code, ErrorCode::BadRequest, "data is required");
        let frame = pb::ClientFrame {
            id: 3,
            op: Some(pb::client_frame::Op::Signal(pb::SignalOp { room: "r".into(), data: Bytes::from_static(b"1") })),
        };
        let r = Request::from_proto(&frame.encode_to_vec()).unwrap();
        assert_eq!(r.op, Op::Signal { room: "r".into(), data: Bytes::from_static(b"1") });
    }

    #[test]
    fn bad_frames_keep_the_id_when_they_can() {
        let e = err("{not json");
        assert_eq!((e.id, e.code), (RequestId::None, ErrorCode::BadRequest));
        let e = err("[1,2]");
        assert_eq!((e.id, e.code), (RequestId::None, ErrorCode::BadRequest));
        let e = err(r#"{"op":"fly","id":1}"#);
        assert_eq!((e.id, e.code), (RequestId::Json("1".into()), ErrorCode::UnknownOp));
        let e = err(r#"{"op":"join","id":2}"#);
        assert_eq!((e.id, e.code), (RequestId::Json("2".into()), ErrorCode::BadRequest));
        assert!(e.message.contains("room"), "{}", e.message);
        let e = err(r#"{"op":"join","id":3,"room":5}"#);
        assert_eq!((e.id, e.code), (RequestId::Json("3".into()), ErrorCode::BadRequest));
        let e = err(r#"{"op":"publish","id":4,"room":"a"}"#);
        assert!(e.message.contains("data"));
        let e = err(r#"{"op":"presence","id":5,"users":["a.b"]}"#);
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = err(r#"{"id":{"x":1},"op":"ping"}"#);
        assert_eq!(e.id, RequestId::None);
    }

    #[test]
    fn error_messages_stay_short_whatever_the_client_sent() {
        // serde quotes the mistyped value in its message.
        let seq = "é".repeat(2000);
        let e = err(&format!(r#"{{"op":"join","id":1,"room":"a","since":{{"epoch":"e","seq":"{seq}"}}}}"#));
        assert_eq!((e.id, e.code), (RequestId::Json("1".into()), ErrorCode::BadRequest));
        assert!(e.message.starts_with("bad field `since`"), "{}", e.message);
        assert!(e.message.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8(), "{} bytes", e.message.len());
    }

    #[test]
    fn proto_ops_decode_and_data_must_be_json() {
        let frame = pb::ClientFrame {
            id: 9,
            op: Some(pb::client_frame::Op::Publish(pb::PublishOp {
                room: "r".into(),
                data: Bytes::from_static(b"[1]"),
                idempotency_key: "k".into(),
            })),
        };
        let r = Request::from_proto(&frame.encode_to_vec()).unwrap();
        assert_eq!(r.id, RequestId::Proto(9));
        assert_eq!(
            r.op,
            Op::Publish { room: "r".into(), data: Bytes::from_static(b"[1]"), idempotency_key: "k".into() }
        );
        let frame = pb::ClientFrame {
            id: 10,
            op: Some(pb::client_frame::Op::Publish(pb::PublishOp {
                room: "r".into(),
                data: Bytes::from_static(b"{oops"),
                ..Default::default()
            })),
        };
        let e = Request::from_proto(&frame.encode_to_vec()).unwrap_err();
        assert_eq!((e.id, e.code), (RequestId::Proto(10), ErrorCode::BadRequest));
        // An idempotency key over 64 bytes, in either encoding.
        let long = "k".repeat(65);
        let frame = pb::ClientFrame {
            id: 11,
            op: Some(pb::client_frame::Op::Publish(pb::PublishOp {
                room: "r".into(),
                data: Bytes::from_static(b"1"),
                idempotency_key: long.clone(),
            })),
        };
        let e = Request::from_proto(&frame.encode_to_vec()).unwrap_err();
        assert_eq!((e.id, e.code), (RequestId::Proto(11), ErrorCode::BadRequest));
        let text = format!(r#"{{"op":"publish","id":1,"room":"r","data":1,"idempotency_key":"{long}"}}"#);
        assert_eq!(Request::from_json(&text).unwrap_err().code, ErrorCode::BadRequest);
        let text = r#"{"op":"publish","id":1,"room":"r","data":1,"idempotency_key":"k1"}"#;
        let op = Request::from_json(text).unwrap().op;
        assert_eq!(op, Op::Publish { room: "r".into(), data: Bytes::from_static(b"1"), idempotency_key: "k1".into() });
        let e = Request::from_proto(&[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!((e.id, e.code), (RequestId::None, ErrorCode::BadRequest));
        let e = Request::from_proto(&pb::ClientFrame { id: 3, op: None }.encode_to_vec()).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownOp);
    }
}
