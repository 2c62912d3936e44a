//! Encoding server frames from [`Event`]s, in either encoding.

use bytes::Bytes;
use prost::Message as _;

use super::json::Obj;
use super::{Encoding, ErrorCode, RequestId};
use crate::pb;
use crate::pb::server_frame::Kind;

/// What an SSE stream's `hello` adds.
#[derive(Debug, Clone, Copy)]
pub struct SseHello<'a> {
    /// The Bearer secret for `POST /sse/<conn>`.
    pub post_secret: &'a str,
    /// The stream took up the connection it had (`Last-Event-ID`).
    pub resumed: bool,
}

/// One server → client frame.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// First frame after authentication. `sse`: on an SSE stream, the
    /// secret its POSTs present and whether it resumed a connection.
    Hello { conn: &'a str, user: &'a str, gateway: &'a str, heartbeat_ms: u32, sse: Option<SseHello<'a>> },
    /// A message in a joined room.
    Message { room: &'a str, seq: u64, epoch: &'a str, from: &'a str, data: &'a [u8], ts: i64 },
    /// A user joined a room (their first connection in it); `count`: the
    /// room's users after it.
    Joined { room: &'a str, user: &'a str, info: &'a [u8], count: u32 },
    /// A user left a room (their last connection in it).
    Left { room: &'a str, user: &'a str, count: u32 },
    /// A direct message to this user.
    Direct { from: &'a str, data: &'a [u8], ts: i64, queued: bool },
    /// A watched user went online or offline, or changed status (`status`:
    /// while online, the user's status; empty when offline).
    Presence { user: &'a str, online: bool, ts: i64, status: &'a str },
    /// Continuity in a room was lost; refetch state. Messages continue after `seq`.
    Resync { room: &'a str, epoch: &'a str, seq: u64 },
    /// The successful answer to a request.
    Reply { id: &'a RequestId, body: ReplyBody },
    /// A failed request: a `reply` with `ok:false`, or an `error` event when
    /// the request had no usable id.
    Failure { id: &'a RequestId, code: ErrorCode, message: &'a str },
    /// Answer to the `ping` op.
    Pong,
    /// The connection no longer is in `room` (`reason`: `token` or `server`).
    Removed { room: &'a str, reason: &'a str },
    /// The application's backend joined the connection to `room`.
    Subscribed { room: &'a str, epoch: &'a str, seq: u64, count: u32 },
    /// A batch of joins and leaves (namespaces with `join_leave = "batched"`).
    MembersChanged(&'a pb::MembersChanged),
    /// Another member's signal (typing, cursors): no seq, never stored.
    Signal { room: &'a str, from: &'a str, data: &'a [u8] },
    /// A user's read marker in a room moved to `seq`.
    Read { room: &'a str, user: &'a str, seq: u64 },
}

/// What a successful reply carries besides `id` and `ok`.
#[derive(Debug, Clone, Default)]
pub enum ReplyBody {
    /// Nothing more.
    #[default]
    Empty,
    /// `join`: the room's epoch and latest seq, its users; `recovered` only
    /// with `since`.
    Join { epoch: String, seq: u64, recovered: Option<bool>, count: u32 },
    /// `publish`: the message's seq.
    /// `duplicate`: an earlier publish had the same idempotency key.
    Publish { seq: u64, duplicate: bool },
    /// `members`: a list capped in entries and bytes, the exact count, and
    /// whether the list is shorter than the count.
    Members { members: Vec<pb::Member>, count: u32, truncated: bool },
    /// `presence` and `watch`: the users' current state; `degraded` when
    /// presence could not be asked and the gateway answered from its own
    /// connections alone.
    Presence { users: Vec<pb::UserPresence>, degraded: bool },
    /// `refresh`: the connection's new expiry (seconds since the Unix epoch).
    Refresh { exp: i64 },
    /// `send`: whether a connection of the user got it (else it waits).
    Send { delivered: bool },
}

impl Event<'_> {
    /// The frame payload in `encoding`.
    pub fn encode(&self, encoding: Encoding) -> Bytes {
        match encoding {
            Encoding::Json => self.to_json(),
            Encoding::Proto => Bytes::from(self.to_proto().encode_to_vec()),
        }
    }

    fn to_json(&self) -> Bytes {
        match *self {
            Event::Hello { conn, user, gateway, heartbeat_ms, sse } => {
                let mut o = Obj::typed("hello");
                o.str("conn", conn).str("user", user).str("gateway", gateway);
                o.num("heartbeat_ms", heartbeat_ms);
                if let Some(sse) = sse {
                    o.str("post_secret", sse.post_secret).bool("resumed", sse.resumed);
                }
                o.bytes()
            }
            Event::Message { room, seq, epoch, from, data, ts } => {
                // Kept in rooms' buffers for catch-up: sized to fit.
                let mut o = Obj::typed_sized("message", room.len() + epoch.len() + from.len() + data.len());
                o.str("room", room).num("seq", seq).str("epoch", epoch).str("from", from);
                o.raw("data", data).num("ts", ts);
                o.bytes()
            }
            Event::Joined { room, user, info, count } => {
                let mut o = Obj::typed("joined");
                o.str("room", room).str("user", user).raw("info", info).num("count", count);
                o.bytes()
            }
            Event::Left { room, user, count } => {
                let mut o = Obj::typed("left");
                o.str("room", room).str("user", user).num("count", count);
                o.bytes()
            }
            Event::Direct { from, data, ts, queued } => {
                let mut o = Obj::typed("direct");
                o.str("from", from).raw("data", data).num("ts", ts);
                if queued {
                    o.bool("queued", true);
                }
                o.bytes()
            }
            Event::Presence { user, online, ts, status } => {
                let mut o = Obj::typed("presence");
                o.str("user", user).bool("online", online).num("ts", ts);
                if online {
                    o.str("status", status_or_online(status));
                }
                o.bytes()
            }
            Event::Resync { room, epoch, seq } => {
                let mut o = Obj::typed("resync");
                o.str("room", room).str("epoch", epoch).num("seq", seq);
                o.bytes()
            }
            Event::Reply { id, ref body } => {
                let mut o = reply_head(id, true);
                body_json(&mut o, body);
                o.bytes()
            }
            Event::Failure { id, code, message } => {
                let mut o = match id {
                    RequestId::None => Obj::typed("error"),
                    id => reply_head(id, false),
                };
                o.with("error", |buf| {
                    let mut e = Obj::bare();
                    e.str("code", code.as_str()).str("message", message);
                    buf.extend_from_slice(&e.finish());
                });
                o.bytes()
            }
            Event::Pong => Obj::typed("pong").bytes(),
            Event::Removed { room, reason } => {
                let mut o = Obj::typed("removed");
                o.str("room", room).str("reason", reason);
                o.bytes()
            }
            Event::Subscribed { room, epoch, seq, count } => {
                let mut o = Obj::typed("subscribed");
                o.str("room", room).str("epoch", epoch).num("seq", seq).num("count", count);
                o.bytes()
            }
            Event::MembersChanged(m) => {
                let mut o = Obj::typed("members_changed");
                o.str("room", &m.room);
                o.with("joined", |buf| {
                    json_array(buf, &m.joined, |j| {
                        let mut e = Obj::bare();
                        e.str("user", &j.user).raw("info", &j.info);
                        e.finish()
                    })
                });
                o.with("left", |buf| {
                    json_array(buf, &m.left, |user| serde_json::to_vec(user).expect("a string always serializes"))
                });
                o.num("count", m.count).bool("truncated", m.truncated);
                if !m.reads.is_empty() {
                    o.with("reads", |buf| {
                        json_array(buf, &m.reads, |r| {
                            let mut e = Obj::bare();
                            e.str("user", &r.user).num("seq", r.seq);
                            e.finish()
                        })
                    });
                }
                o.bytes()
            }
            Event::Signal { room, from, data } => {
                let mut o = Obj::typed("signal");
                o.str("room", room).str("from", from).raw("data", data);
                o.bytes()
            }
            Event::Read { room, user, seq } => {
                let mut o = Obj::typed("read");
                o.str("room", room).str("user", user).num("seq", seq);
                o.bytes()
            }
        }
    }

    fn to_proto(&self) -> pb::ServerFrame {
        let kind = match *self {
            Event::Hello { conn, user, gateway, heartbeat_ms, sse: _ } => {
                Kind::Hello(pb::Hello { conn: conn.into(), user: user.into(), gateway: gateway.into(), heartbeat_ms })
            }
            Event::Message { room, seq, epoch, from, data, ts } => Kind::Message(pb::RoomMessage {
                room: room.into(),
                seq,
                epoch: epoch.into(),
                from: from.into(),
                data: Bytes::copy_from_slice(data),
                ts,
            }),
            Event::Joined { room, user, info, count } => Kind::Joined(pb::MemberJoined {
                room: room.into(),
                user: user.into(),
                info: Bytes::copy_from_slice(info),
                count,
            }),
            Event::Left { room, user, count } => {
                Kind::Left(pb::MemberLeft { room: room.into(), user: user.into(), count })
            }
            Event::Direct { from, data, ts, queued } => {
                Kind::Direct(pb::Direct { from: from.into(), data: Bytes::copy_from_slice(data), ts, queued })
            }
            Event::Presence { user, online, ts, status } => {
                let status = if online { status_or_online(status).into() } else { String::new() };
                Kind::Presence(pb::PresenceChange { user: user.into(), online, ts, status })
            }
            Event::Resync { room, epoch, seq } => {
                Kind::Resync(pb::Resync { room: room.into(), epoch: epoch.into(), seq })
            }
            Event::Reply { id, ref body } => {
                Kind::Reply(pb::Reply { id: proto_id(id), ok: true, error: None, result: body_proto(body) })
            }
            Event::Failure { id: RequestId::None, code, message } => Kind::Error(pb::ErrorEvent {
                error: Some(pb::Error { code: code.as_str().into(), message: message.into() }),
            }),
            Event::Failure { id, code, message } => Kind::Reply(pb::Reply {
                id: proto_id(id),
                ok: false,
                error: Some(pb::Error { code: code.as_str().into(), message: message.into() }),
                result: None,
            }),
            Event::Pong => Kind::Pong(pb::Pong {}),
            Event::Removed { room, reason } => Kind::Removed(pb::Removed { room: room.into(), reason: reason.into() }),
            Event::Subscribed { room, epoch, seq, count } => {
                Kind::Subscribed(pb::Subscribed { room: room.into(), epoch: epoch.into(), seq, count })
            }
            Event::MembersChanged(m) => Kind::MembersChanged(m.clone()),
            Event::Signal { room, from, data } => {
                Kind::Signal(pb::Signal { room: room.into(), from: from.into(), data: Bytes::copy_from_slice(data) })
            }
            Event::Read { room, user, seq } => Kind::Read(pb::ReadMarker { room: room.into(), user: user.into(), seq }),
        };
        pb::ServerFrame { kind: Some(kind) }
    }
}

/// A status as clients see it: an online user who set none is `online`.
pub fn status_or_online(status: &str) -> &str {
    if status.is_empty() {
        "online"
    } else {
        status
    }
}

fn proto_id(id: &RequestId) -> u64 {
    match id {
        RequestId::Proto(n) => *n,
        _ => 0,
    }
}

fn reply_head(id: &RequestId, ok: bool) -> Obj {
    let mut o = Obj::typed("reply");
    if let RequestId::Json(raw) = id {
        o.raw("id", raw.as_bytes());
    }
    o.bool("ok", ok);
    o
}

fn body_json(o: &mut Obj, body: &ReplyBody) {
    match body {
        ReplyBody::Empty => {}
        ReplyBody::Join { epoch, seq, recovered, count } => {
            o.str("epoch", epoch).num("seq", *seq);
            if let Some(r) = recovered {
                o.bool("recovered", *r);
            }
            o.num("count", *count);
        }
        ReplyBody::Publish { seq, duplicate } => {
            o.num("seq", *seq);
            if *duplicate {
                o.bool("duplicate", true);
            }
        }
        ReplyBody::Members { members, count, truncated } => {
            o.with("members", |buf| {
                json_array(buf, members, |m| {
                    let mut e = Obj::bare();
                    e.str("user", &m.user).raw("info", &m.info).num("conns", m.conns).num("read_seq", m.read_seq);
                    e.finish()
                })
            });
            o.num("count", *count).bool("truncated", *truncated);
        }
        ReplyBody::Presence { users, degraded } => {
            if *degraded {
                o.bool("degraded", true);
            }
            o.with("users", |buf| {
                json_array(buf, users, |u| {
                    let mut e = Obj::bare();
                    e.str("user", &u.user).bool("online", u.online).num("last_seen_ms", u.last_seen_ms);
                    if u.online {
                        e.str("status", status_or_online(&u.status));
                    }
                    e.finish()
                })
            });
        }
        ReplyBody::Refresh { exp } => {
            o.num("exp", *exp);
        }
        ReplyBody::Send { delivered } => {
            o.bool("delivered", *delivered);
        }
    }
}

fn json_array<T>(buf: &mut Vec<u8>, items: &[T], f: impl Fn(&T) -> Vec<u8>) {
    buf.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(&f(item));
    }
    buf.push(b']');
}

fn body_proto(body: &ReplyBody) -> Option<pb::reply::Result> {
    use pb::reply::Result as R;
    Some(match body {
        ReplyBody::Empty => return None,
        ReplyBody::Join { epoch, seq, recovered, count } => R::Join(pb::JoinResult {
            epoch: epoch.clone(),
            seq: *seq,
            recovered: recovered.unwrap_or(false),
            count: *count,
        }),
        ReplyBody::Publish { seq, duplicate } => R::Publish(pb::PublishResult { seq: *seq, duplicate: *duplicate }),
        ReplyBody::Members { members, count, truncated } => {
            R::Members(pb::MembersResult { members: members.clone(), count: *count, truncated: *truncated })
        }
        ReplyBody::Presence { users, degraded } => {
            R::Presence(pb::PresenceResult { users: users.clone(), degraded: *degraded })
        }
        ReplyBody::Refresh { exp } => R::Refresh(pb::RefreshResult { exp: *exp }),
        ReplyBody::Send { delivered } => R::Send(pb::SendResult { delivered: *delivered }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn json_of(e: Event) -> Value {
        serde_json::from_slice(&e.encode(Encoding::Json)).unwrap()
    }

    #[test]
    fn json_events_have_the_documented_shape() {
        let data = br#"{"text":"hi \"you\""}"#;
        assert_eq!(
            json_of(Event::Message { room: "r", seq: 4, epoch: "e", from: "u\"", data, ts: 5 }),
            json!({"type":"message","room":"r","seq":4,"epoch":"e","from":"u\"","data":{"text":"hi \"you\""},"ts":5})
        );
        assert_eq!(
            json_of(Event::Joined { room: "r", user: "u", info: b"", count: 3 }),
            json!({"type":"joined","room":"r","user":"u","info":null,"count":3})
        );
        assert_eq!(
            json_of(Event::Signal { room: "r", from: "u", data: br#"{"typing":true}"# }),
            json!({"type":"signal","room":"r","from":"u","data":{"typing":true}})
        );
        assert_eq!(
            json_of(Event::Removed { room: "r", reason: "token" }),
            json!({"type":"removed","room":"r","reason":"token"})
        );
        assert_eq!(
            json_of(Event::Subscribed { room: "r", epoch: "e", seq: 4, count: 2 }),
            json!({"type":"subscribed","room":"r","epoch":"e","seq":4,"count":2})
        );
        let id = RequestId::Json("\"a\"".into());
        assert_eq!(
            json_of(Event::Reply {
                id: &id,
                body: ReplyBody::Join { epoch: "e".into(), seq: 2, recovered: Some(true), count: 3 }
            }),
            json!({"type":"reply","id":"a","ok":true,"epoch":"e","seq":2,"recovered":true,"count":3})
        );
        let changed = pb::MembersChanged {
            room: "r".into(),
            joined: vec![pb::MemberJoined {
                room: String::new(),
                user: "a\"".into(),
                info: Bytes::from_static(b"{}"),
                count: 0,
            }],
            left: vec!["b".into(), "c\\".into()],
            count: 7,
            truncated: true,
            reads: vec![pb::ReadMarker { room: String::new(), user: "d".into(), seq: 4 }],
        };
        assert_eq!(
            json_of(Event::MembersChanged(&changed)),
            json!({"type":"members_changed","room":"r","joined":[{"user":"a\"","info":{}}],"left":["b","c\\"],"count":7,"truncated":true,"reads":[{"user":"d","seq":4}]})
        );
        assert_eq!(
            json_of(Event::Read { room: "r", user: "u", seq: 9 }),
            json!({"type":"read","room":"r","user":"u","seq":9})
        );
        assert_eq!(
            json_of(Event::Failure { id: &RequestId::None, code: ErrorCode::BadRequest, message: "m" }),
            json!({"type":"error","error":{"code":"bad_request","message":"m"}})
        );
        let id = RequestId::Json("3".into());
        assert_eq!(
            json_of(Event::Reply {
                id: &id,
                body: ReplyBody::Members {
                    members: vec![pb::Member {
                        user: "u".into(),
                        info: Bytes::from_static(b"{\"n\":1}"),
                        conns: 2,
                        read_seq: 5,
                    }],
                    count: 2,
                    truncated: true,
                }
            }),
            json!({"type":"reply","id":3,"ok":true,"members":[{"user":"u","info":{"n":1},"conns":2,"read_seq":5}],"count":2,"truncated":true})
        );
    }

    #[test]
    fn proto_replies_carry_the_id_and_error() {
        let id = RequestId::Proto(12);
        let bytes = Event::Failure { id: &id, code: ErrorCode::NotMember, message: "x" }.encode(Encoding::Proto);
        let frame = pb::ServerFrame::decode(bytes).unwrap();
        let Some(Kind::Reply(r)) = frame.kind else { panic!() };
        assert_eq!((r.id, r.ok, r.error.unwrap().code.as_str()), (12, false, "not_member"));
    }
}
