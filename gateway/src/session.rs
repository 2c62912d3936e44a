//! One client connection, from the upgraded socket to the last byte.
//!
//! The session authenticates (token in the upgrade, or an `auth` frame
//! within the auth timeout), registers the connection, then reads and
//! answers requests one at a time — which is also what keeps one publisher's
//! messages in order. Every way out closes with the design's close code and
//! undoes what the connection held: rooms, watches, presence.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::client::{close, Encoding, ErrorCode, Event, Request, RequestId};
use tokio::net::TcpStream;

use crate::auth::{AuthError, Claims};
use crate::bucket::TokenBucket;
use crate::glob::RoomGlobs;
use crate::hub::{Conn, Hub};
use crate::outbox::{Out, Outbox};
use crate::reader::{Incoming, ReadError};
use crate::rooms::RoomHandle;
use crate::socket::{Socket, SocketConfig};
use crate::topics::Listener;

/// Window over which bad frames are counted for 4503.
const BAD_FRAME_WINDOW: Duration = Duration::from_secs(60);

/// What the handshake decided about a connection.
pub struct Accepted {
    pub encoding: Encoding,
    /// Token from the `Authorization` header or `?token=`.
    pub token: Option<String>,
    /// Close right after the upgrade with this code (origin, admission).
    pub refuse: Option<(u16, &'static str)>,
    pub peer: SocketAddr,
}

/// Runs a connection to the end. The session is moved into the future once
/// and lived through a reference: an `async fn` taking it by value would
/// hold a second copy of it (its argument and its binding).
pub fn run(
    hub: Arc<Hub>,
    stream: TcpStream,
    prefix: Bytes,
    accepted: Accepted,
) -> impl std::future::Future<Output = ()> + Send {
    let mut connection = Connection::new(hub, stream, prefix, accepted);
    async move { connection.live().await }
}

/// A client connection: its socket, and the session the ops act on. Kept
/// apart so the socket can keep writing while the session handles a request.
struct Connection {
    socket: Socket,
    session: Session,
    /// What the handshake decided, until used.
    accepted: Option<Accepted>,
    /// The token expiry the socket's clock was last given.
    exp: i64,
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
    /// Rooms the token allows.
    pub(crate) globs: Arc<RoomGlobs>,
    pub(crate) rooms: HashMap<String, RoomHandle>,
    pub(crate) watching: HashSet<String>,
    /// The client's IP, and the bytes of memberships and watches charged
    /// to it ([`crate::admission::Admission::hold`]).
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

impl Connection {
    fn new(hub: Arc<Hub>, stream: TcpStream, prefix: Bytes, accepted: Accepted) -> Self {
        let outbox = Arc::new(Outbox::new(hub.limits.queue_bytes));
        let config = SocketConfig {
            binary: accepted.encoding.is_binary(),
            max_message: hub.limits.max_message_bytes,
            heartbeat: hub.limits.heartbeat,
            pong_timeout: hub.limits.pong_timeout,
            write_timeout: hub.limits.write_timeout,
        };
        let now = Instant::now();
        let session = Session {
            bucket: TokenBucket::new(hub.limits.rate_per_sec, hub.limits.rate_burst, now),
            joins: TokenBucket::new(hub.limits.join_rate, hub.limits.join_burst, now),
            ip: accepted.peer.ip(),
            held: 0,
            globs: hub.default_rooms.clone(),
            hub,
            conn: "".into(),
            user: "".into(),
            info: Bytes::new(),
            encoding: accepted.encoding,
            outbox: outbox.clone(),
            exp: 0,
            rooms: HashMap::new(),
            watching: HashSet::new(),
            refused: 0,
            bad: (0, now),
        };
        Self { socket: Socket::new(stream, prefix, outbox, config), session, accepted: Some(accepted), exp: 0 }
    }

    /// The whole connection: authenticate, serve, clean up, close. Each step
    /// but the serving is boxed, so an idle connection's task holds only
    /// what serving needs; and boxed in a statement of its own, as a
    /// temporary in an awaited expression keeps its space for good.
    async fn live(&mut self) {
        let accepted = self.accepted.take().expect("set by new");
        if let Some((code, reason)) = accepted.refuse {
            self.session.outbox.close(code, reason);
        } else if self.session.hub.conformance_echo {
            let echo = Box::pin(crate::echo::serve(&mut self.socket, &self.session.outbox));
            echo.await;
        } else {
            let auth = Box::pin(self.authenticate(accepted.token, accepted.peer));
            if let Some((claims, auth_id)) = auth.await {
                let open = Box::pin(self.open(claims));
                open.await;
                if auth_id.is_some() {
                    self.session.reply(&auth_id, Ok(Default::default()));
                }
                self.serve().await;
                let close = Box::pin(self.session.leave_all());
                close.await;
            }
        }
        let finish = Box::pin(self.socket.finish(close::NORMAL, "bye"));
        let code = finish.await;
        metrics::counter!("switchboard_gateway_disconnects_total", "code" => code.to_string()).increment(1);
    }

    /// Verifies the upgrade's token, or waits for an `auth` frame, and
    /// admits the connection. Returns the claims and the id of an `auth`
    /// request still to be answered.
    async fn authenticate(&mut self, token: Option<String>, peer: SocketAddr) -> Option<(Claims, RequestId)> {
        let (claims, id) = Box::pin(self.credentials(token, peer)).await?;
        // Only a verified token is charged to the handshake rate.
        if let Err(refusal) = self.session.hub.admission.handshake() {
            refusal.count();
            if id.is_some() {
                self.session.fail(&id, ErrorCode::Unavailable, "try again later");
            }
            self.session.outbox.close(close::TRY_AGAIN_LATER, "try again later");
            return None;
        }
        Some((claims, id))
    }

    /// The verified claims of the upgrade's token or of an `auth` frame.
    async fn credentials(&mut self, token: Option<String>, peer: SocketAddr) -> Option<(Claims, RequestId)> {
        if let Some(token) = token {
            return match self.session.hub.verifier.verify(&token) {
                Ok(claims) => Some((claims, RequestId::None)),
                Err(e) => {
                    self.session.reject_token(&e, peer);
                    None
                }
            };
        }
        let deadline = tokio::time::Instant::now() + self.session.hub.limits.auth_timeout;
        self.socket.clocks.end_at(deadline, close::UNAUTHORIZED, "auth timeout");
        loop {
            let msg = match self.socket.next().await {
                Ok(Incoming::Ping(p)) => {
                    // Rate-limited as after auth: a ping flood while the auth
                    // frame is awaited ends in 4002 too.
                    if self.session.admit() {
                        self.session.outbox.push(Out::Pong(p));
                    } else if self.session.outbox.closing().is_some() {
                        return None;
                    }
                    continue;
                }
                Ok(Incoming::Pong) => continue,
                Ok(Incoming::Close(code)) => {
                    self.session.outbox.close(code.unwrap_or(close::NORMAL), "bye");
                    return None;
                }
                Err(ReadError::Protocol { code, reason }) => {
                    self.session.outbox.close(code, reason);
                    return None;
                }
                Err(ReadError::Closed) => {
                    if self.session.outbox.closing().is_some_and(|c| c.reason == "auth timeout") {
                        metrics::counter!("switchboard_gateway_connections_rejected_total", "reason" => "auth_timeout")
                            .increment(1);
                    }
                    self.session.outbox.close(close::ABNORMAL, "gone");
                    return None;
                }
                Ok(msg) => msg,
            };
            match decode(self.session.encoding, &msg) {
                Err((code, reason)) => self.session.outbox.close(code, reason),
                Ok(Some(Ok(Request { id, op: proto::client::Op::Auth { token } }))) => {
                    match self.session.hub.verifier.verify(&token) {
                        Ok(claims) => return Some((claims, id)),
                        Err(e) => {
                            self.session.fail(&id, ErrorCode::Unauthorized, &e.to_string());
                            self.session.reject_token(&e, peer);
                        }
                    }
                }
                _ => {
                    self.session.fail(&RequestId::None, ErrorCode::Unauthorized, "authenticate first");
                    self.session.refuse_auth(close::UNAUTHORIZED, "authenticate first", peer);
                }
            }
            return None;
        }
    }

    /// Registers an authenticated connection and greets it.
    async fn open(&mut self, claims: Claims) {
        let hub = self.session.hub.clone();
        self.session.conn = hub.new_conn_id();
        self.session.user = claims.sub.clone().into();
        self.session.info = claims.info_bytes();
        if let Some(rooms) = &claims.rooms {
            self.session.globs = Arc::new(RoomGlobs::new(rooms.clone()));
        }
        let listener = Listener { outbox: self.session.outbox.clone(), encoding: self.session.encoding };
        hub.register(
            self.session.conn.clone(),
            Conn { user: self.session.user.clone(), outbox: self.session.outbox.clone() },
        );
        if let Err(e) = hub.direct.add(&self.session.user, self.session.conn.clone(), listener).await {
            tracing::warn!(error = %e, "direct messages unavailable for this connection");
        }
        hub.reporter.connected(&self.session.user, &self.session.conn);
        self.session.exp = claims.exp;
        self.sync_expiry();
        metrics::counter!("switchboard_gateway_connections_accepted_total").increment(1);
        self.session.send(Event::Hello {
            conn: &self.session.conn,
            user: &self.session.user,
            gateway: &hub.id,
            heartbeat_ms: hub.limits.heartbeat.as_millis() as u32,
        });
    }

    /// Moves the socket's expiry clock to the session's token expiry.
    fn sync_expiry(&mut self) {
        if self.exp != self.session.exp {
            self.exp = self.session.exp;
            self.socket.clocks.expire_at(self.exp, close::TOKEN_EXPIRED, tokio::time::Instant::now());
        }
    }

    /// Reads and answers requests until the connection closes; a request's
    /// answer may wait, but writes and clocks never do.
    async fn serve(&mut self) {
        loop {
            match self.socket.next().await {
                // The client vanished, or our close went out.
                Err(ReadError::Closed) => self.session.outbox.close(close::ABNORMAL, "gone"),
                Err(ReadError::Protocol { code, reason }) => {
                    metrics::counter!("switchboard_gateway_drops_total", "reason" => "protocol_error").increment(1);
                    self.session.outbox.close(code, reason);
                }
                Ok(Incoming::Close(code)) => self.session.outbox.close(code.unwrap_or(close::NORMAL), "bye"),
                Ok(Incoming::Pong) => {}
                Ok(Incoming::Ping(payload)) => {
                    if self.session.admit() {
                        self.session.outbox.push(Out::Pong(payload));
                    }
                }
                Ok(msg) => match decode(self.session.encoding, &msg) {
                    Err((code, reason)) => self.session.outbox.close(code, reason),
                    // Boxed: allocated only while a request is handled.
                    Ok(Some(decoded)) => {
                        let handle = Box::pin(self.socket.tend(self.session.on_request(decoded)));
                        handle.await;
                        self.sync_expiry();
                    }
                    Ok(None) => {}
                },
            }
            if self.session.outbox.closing().is_some() {
                return;
            }
        }
    }
}

impl Session {
    fn reject_token(&self, e: &AuthError, peer: SocketAddr) {
        let reason = match e {
            AuthError::Expired => "token expired",
            AuthError::Invalid(_) => "unauthorized",
            AuthError::InfoTooLarge { .. } => "info claim too large",
        };
        tracing::debug!(%peer, error = %e, "token rejected");
        self.refuse_auth(e.close_code(), reason, peer);
    }

    /// Closes a connection that failed to authenticate: with its code while
    /// failures are within their budget, else with 1013.
    fn refuse_auth(&self, code: u16, reason: &'static str, peer: SocketAddr) {
        match self.hub.admission.failure(peer.ip()) {
            Ok(()) => {
                metrics::counter!("switchboard_gateway_connections_rejected_total", "reason" => "unauthorized")
                    .increment(1);
                self.outbox.close(code, reason);
            }
            Err(refusal) => {
                refusal.count();
                self.outbox.close(close::TRY_AGAIN_LATER, "try again later");
            }
        }
    }

    /// Counts a frame against the rate limit; false if it must be refused.
    fn admit(&mut self) -> bool {
        if self.bucket.take(Instant::now()) {
            self.refused = 0;
            return true;
        }
        self.refused += 1;
        metrics::counter!("switchboard_gateway_drops_total", "reason" => "rate_limited").increment(1);
        if self.refused > self.hub.limits.flood_limit {
            self.outbox.close(close::FLOODING, "flooding");
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
                metrics::counter!("switchboard_gateway_frames_in_total", "op" => "invalid").increment(1);
                self.fail(&e.id, e.code, &e.message);
                self.count_bad_frame();
                return;
            }
        };
        let op = req.op.name();
        metrics::counter!("switchboard_gateway_frames_in_total", "op" => op).increment(1);
        let started = Instant::now();
        let result = self.dispatch(&req.id, req.op).await;
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
        metrics::histogram!("switchboard_gateway_op_duration_seconds", "op" => op)
            .record(started.elapsed().as_secs_f64());
    }

    fn count_bad_frame(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.bad.1) > BAD_FRAME_WINDOW {
            self.bad = (0, now);
        }
        self.bad.0 += 1;
        if self.bad.0 > self.hub.limits.bad_frame_limit {
            self.outbox.close(close::BAD_FRAMES, "repeated bad frames");
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
        futures::future::join_all(rooms.iter().map(|(room, handle)| self.leave_room(room, handle))).await;
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
fn decode(encoding: Encoding, msg: &Incoming) -> Result<Option<Decoded>, (u16, &'static str)> {
    match (msg, encoding) {
        // The reader has validated UTF-8.
        (Incoming::Text(t), Encoding::Json) => Ok(Some(Request::from_json(std::str::from_utf8(t).unwrap_or_default()))),
        (Incoming::Binary(b), Encoding::Proto) => Ok(Some(Request::from_proto(b))),
        (Incoming::Binary(_), Encoding::Json) => Err((close::UNSUPPORTED_DATA, "binary frame on the JSON protocol")),
        (Incoming::Text(_), Encoding::Proto) => Err((close::UNSUPPORTED_DATA, "text frame on the protobuf protocol")),
        _ => Ok(None),
    }
}

type Decoded = Result<Request, proto::client::DecodeError>;
