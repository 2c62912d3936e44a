//! One client connection's state, as the ops see it.
//!
//! [`connection`] drives a connection's life (authentication, the request
//! loop, the end); a [`Session`] is what it holds meanwhile: who the client
//! is, what its token allows, the rooms and watches it holds and what they
//! cost its IP, its rate limits, and its outbox. Requests are decoded here
//! and carried out by [`ops`], one module per op; the backend's [`orders`]
//! are carried out by the same task.

pub mod auth;
mod connection;
pub mod glob;
pub mod grants;
pub mod jwks;
pub mod key;
pub mod ops;
pub mod orders;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::client::{
    close::{self, Close},
    Encoding, ErrorCode, Event, Request, RequestId,
};

use crate::websocket::reader::Incoming;

use crate::bucket::TokenBucket;
use crate::delivery::outbox::{Out, Outbox};
use crate::delivery::rooms::RoomHandle;
use crate::node::hub::Hub;
use crate::session::grants::Grants;

pub use connection::run;

/// Window over which bad frames are counted for 4503.
const BAD_FRAME_WINDOW: Duration = Duration::from_secs(60);

/// What the handshake decided about a connection.
pub struct Accepted {
    pub encoding: Encoding,
    /// Token from the `Authorization` header or `?token=`.
    pub token: Option<String>,
    /// Close right after the upgrade so (origin, admission).
    pub refuse: Option<Close>,
    pub peer: SocketAddr,
    /// No token, but a cookie or a `--hook-headers` header: for the connect hook.
    pub hook: Option<Box<crate::hooks::connect::Presented>>,
    /// permessage-deflate was negotiated (WebSocket, `--compression`).
    pub deflate: bool,
}

/// A client's state as the ops see it; authenticated once `user` is set.
pub struct Session {
    pub(crate) hub: Arc<Hub>,
    /// The connection id ("" until authenticated).
    pub(crate) conn: Arc<str>,
    /// The token's `sub` ("" until authenticated).
    pub(crate) user: Arc<str>,
    /// The token's `info` claim (JSON text), shown to room members.
    pub(crate) info: Bytes,
    pub(crate) encoding: Encoding,
    pub(crate) outbox: Arc<Outbox>,
    /// The token's expiry (Unix seconds); `refresh` moves it.
    pub(crate) exp: i64,
    /// What the token allows.
    pub(crate) grants: Arc<Grants>,
    pub(crate) rooms: HashMap<String, RoomHandle>,
    /// Rooms the backend subscribed it to: a refreshed token keeps them.
    /// Boxed: most connections have none (8 bytes, not a set's 48).
    #[allow(clippy::box_collection)]
    pub(crate) server_rooms: Option<Box<HashSet<String>>>,
    pub(crate) watching: HashSet<String>,
    /// The client's IP, and the bytes of memberships and watches charged
    /// to it ([`crate::edge::admission::Admission::hold`]).
    ip: IpAddr,
    held: usize,
    bucket: TokenBucket,
    /// Joins and leaves: each is an event at every member.
    pub(crate) joins: TokenBucket,
    /// Frames refused by the rate limit in a row.
    refused: u32,
    /// Bad frames in the current window, and when it started.
    bad: (u32, Instant),
}

impl Session {
    /// The state of a connection the handshake accepted, before it authenticates.
    fn new(hub: Arc<Hub>, outbox: Arc<Outbox>, accepted: &Accepted) -> Self {
        let now = Instant::now();
        Self {
            bucket: TokenBucket::new(hub.limits.rate_per_sec, hub.limits.rate_burst, now),
            joins: TokenBucket::new(hub.limits.join_rate, hub.limits.join_burst, now),
            ip: accepted.peer.ip(),
            held: 0,
            grants: hub.default_grants.clone(),
            hub,
            conn: "".into(),
            user: "".into(),
            info: Bytes::new(),
            encoding: accepted.encoding,
            outbox,
            exp: 0,
            rooms: HashMap::new(),
            server_rooms: None,
            watching: HashSet::new(),
            refused: 0,
            bad: (0, now),
        }
    }

    /// Counts a frame against the rate limit; false if it must be refused.
    fn admit(&mut self) -> bool {
        if self.bucket.take(Instant::now()) {
            self.refused = 0;
            return true;
        }
        self.refused += 1;
        crate::metrics::dropped("rate_limited");
        if self.refused > self.hub.limits.flood_limit {
            self.outbox.close(Close::FLOODING);
        }
        false
    }

    async fn on_request(&mut self, decoded: Decoded) {
        if !self.admit() {
            let id = match &decoded {
                Ok(r) => r.id.clone(),
                Err(e) => e.id.clone(),
            };
            self.fail(&id, ErrorCode::RateLimited, "over the frame rate limit");
            return;
        }
        let req = match decoded {
            Ok(req) => req,
            Err(e) => {
                crate::metrics::frame_in("invalid");
                self.fail(&e.id, e.code, &e.message);
                self.count_bad_frame();
                return;
            }
        };
        let op = req.op.name();
        crate::metrics::frame_in(op);
        let started = Instant::now();
        let result = ops::dispatch(self, &req.id, req.op).await;
        match result {
            Ok(Some(body)) => self.reply(&req.id, Ok(body)),
            Ok(None) => {}
            Err((code, message)) => {
                if matches!(code, ErrorCode::BadRequest | ErrorCode::InvalidRoom) {
                    self.count_bad_frame();
                }
                self.fail(&req.id, code, &message)
            }
        }
        crate::metrics::op_duration(op, started.elapsed());
    }

    /// Carries out the backend's orders, in order, answering each.
    async fn obey(&mut self, orders: Vec<orders::Order>) {
        for order in orders {
            let outcome = match order.kind {
                orders::OrderKind::Subscribe(room) => ops::subscribe(self, room).await,
                orders::OrderKind::Unsubscribe(room) => ops::unsubscribe(self, room).await,
            };
            let _ = order.done.send(outcome);
        }
    }

    fn count_bad_frame(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.bad.1) > BAD_FRAME_WINDOW {
            self.bad = (0, now);
        }
        self.bad.0 += 1;
        if self.bad.0 > self.hub.limits.bad_frame_limit {
            self.outbox.close(Close::BAD_FRAMES);
        }
    }

    /// Queues an event for this connection.
    pub(crate) fn send(&self, event: Event) {
        self.outbox.push(Out::Data(event.encode(self.encoding)));
    }

    /// Answers a request that has an id (successes without an id are silent).
    pub(crate) fn reply(&self, id: &RequestId, result: Result<proto::client::ReplyBody, (ErrorCode, String)>) {
        match result {
            Ok(body) if id.is_some() => self.send(Event::Reply { id, body }),
            Ok(_) => {}
            Err((code, message)) => self.fail(id, code, &message),
        }
    }

    /// A failure: a `reply` with `ok:false`, or an `error` event without an id.
    pub(crate) fn fail(&self, id: &RequestId, code: ErrorCode, message: &str) {
        self.send(Event::Failure { id, code, message });
    }

    /// Charges `bytes` of state to the client's IP; false when over its bound.
    pub(crate) fn hold(&mut self, bytes: usize) -> bool {
        let ok = self.hub.admission.hold(self.ip, bytes);
        self.held += ok as usize * bytes;
        ok
    }

    /// Gives back what [`Self::hold`] charged.
    pub(crate) fn unhold(&mut self, bytes: usize) {
        self.held -= bytes;
        self.hub.admission.release(self.ip, bytes);
    }

    /// What a membership of `room` costs this connection's IP.
    pub(crate) fn room_cost(&self, room: &str) -> usize {
        512 + room.len() + 2 * self.info.len()
    }

    /// What watching `user` costs this connection's IP.
    pub(crate) fn watch_cost(user: &str) -> usize {
        128 + user.len()
    }

    /// Undoes everything the connection held.
    async fn leave_all(&mut self) {
        let rooms: Vec<(String, RoomHandle)> = self.rooms.drain().collect();
        futures::future::join_all(rooms.iter().map(|(room, handle)| ops::leave_room(self, room, handle))).await;
        for user in std::mem::take(&mut self.watching) {
            self.hub.watches.remove(&user, &self.conn);
        }
        self.hub.direct.remove(&self.user, &self.conn);
        self.hub.reporter.disconnected(&self.user, &self.conn);
        self.hub.unregister(&self.conn);
        self.unhold(self.held);
    }
}

/// Decodes a data message in the connection's encoding; `Err` means close
/// with that code (a frame of the other encoding's type).
pub(crate) fn decode(encoding: Encoding, msg: &Incoming) -> Result<Option<Decoded>, Close> {
    match (msg, encoding) {
        // The reader has validated UTF-8.
        (Incoming::Text(t), Encoding::Json) => Ok(Some(Request::from_json(std::str::from_utf8(t).unwrap_or_default()))),
        (Incoming::Binary(b), Encoding::Proto) => Ok(Some(Request::from_proto(b))),
        (Incoming::Binary(_), Encoding::Json) => {
            Err(Close::new(close::UNSUPPORTED_DATA, "binary frame on the JSON protocol"))
        }
        (Incoming::Text(_), Encoding::Proto) => {
            Err(Close::new(close::UNSUPPORTED_DATA, "text frame on the protobuf protocol"))
        }
        _ => Ok(None),
    }
}

pub(crate) type Decoded = Result<Request, proto::client::DecodeError>;
