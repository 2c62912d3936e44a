//! One client connection, from the upgraded socket to the last byte.
//!
//! The session authenticates (token in the upgrade, or an `auth` frame
//! within the auth timeout), registers the connection, then reads and
//! answers requests one at a time — which is also what keeps one publisher's
//! messages in order. Every way out closes with the design's close code and
//! undoes what the connection held: rooms, watches, presence.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::client::{close, Encoding, ErrorCode, Event, Request, RequestId};
use tokio::net::TcpStream;

use crate::admission::Ticket;
use crate::auth::{AuthError, Claims};
use crate::bucket::TokenBucket;
use crate::glob::RoomGlobs;
use crate::hub::{Conn, Hub};
use crate::outbox::{Out, Outbox};
use crate::reader::{FrameReader, Incoming, ReadError};
use crate::rooms::RoomHandle;
use crate::topics::Listener;
use crate::writer::{self, Activity, WriterConfig};

/// How long a closing connection waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Window over which bad frames are counted for 4503.
const BAD_FRAME_WINDOW: Duration = Duration::from_secs(60);

/// What the handshake decided about a connection.
pub struct Accepted {
    pub encoding: Encoding,
    /// Token from the `Authorization` header or `?token=`.
    pub token: Option<String>,
    /// Close right after the upgrade with this code (origin, admission).
    pub refuse: Option<(u16, &'static str)>,
    /// The connection's place in the admission counts.
    pub ticket: Option<Ticket>,
    pub peer: SocketAddr,
}

/// Runs a connection to the end.
pub async fn run(hub: Arc<Hub>, stream: TcpStream, prefix: Bytes, accepted: Accepted) {
    let _ticket = accepted.ticket;
    let (rd, wr) = stream.into_split();
    let outbox = Arc::new(Outbox::new(hub.limits.queue_bytes));
    let activity = Arc::new(Activity::new());
    let config = WriterConfig {
        binary: accepted.encoding.is_binary(),
        heartbeat: hub.limits.heartbeat,
        pong_timeout: hub.limits.pong_timeout,
        write_timeout: hub.limits.write_timeout,
    };
    let writer = tokio::spawn(writer::run(wr, outbox.clone(), activity.clone(), config));
    let mut reader = FrameReader::new(rd, prefix, hub.limits.max_message_bytes);
    match accepted.refuse {
        Some((code, reason)) => outbox.close(code, reason),
        None => {
            let ctx = Ctx {
                hub: hub.clone(),
                encoding: accepted.encoding,
                outbox: outbox.clone(),
                activity,
                peer: accepted.peer,
            };
            // Boxed: the task of an idle connection should hold only the
            // state of the read it waits in, not of every step before it.
            if let Some((claims, first_id)) = Box::pin(authenticate(&ctx, &mut reader, accepted.token)).await {
                let session = Box::pin(Session::open(ctx, claims)).await;
                session.serve(&mut reader, first_id).await;
            }
        }
    }
    // However the session ended, the writer finishes (first close wins: a
    // client that just vanished gets no frame, the write simply fails).
    outbox.close(close::NORMAL, "bye");
    // Read until the client's close or EOF so our close frame is not lost
    // to a reset, but not for long.
    let _ = Box::pin(tokio::time::timeout(CLOSE_LINGER, async {
        loop {
            match reader.next().await {
                Ok(Incoming::Close(_)) | Err(ReadError::Closed) => return,
                Err(ReadError::Protocol { .. }) => return reader.discard_until_eof().await,
                Ok(_) => {}
            }
        }
    }))
    .await;
    let _ = writer.await;
    let code = outbox.closing().map_or(close::ABNORMAL, |c| c.code).to_string();
    metrics::counter!("switchboard_gateway_disconnects_total", "code" => code).increment(1);
}

/// What a connection has before it is authenticated.
struct Ctx {
    hub: Arc<Hub>,
    encoding: Encoding,
    outbox: Arc<Outbox>,
    activity: Arc<Activity>,
    peer: SocketAddr,
}

impl Ctx {
    fn send(&self, event: Event) {
        self.outbox.push(Out::Data(event.encode(self.encoding)));
    }

    fn reject_token(&self, e: &AuthError) {
        let reason = match e {
            AuthError::Expired => "token expired",
            AuthError::Invalid(_) => "unauthorized",
        };
        tracing::debug!(peer = %self.peer, error = %e, "token rejected");
        metrics::counter!("switchboard_gateway_connections_rejected_total", "reason" => "unauthorized").increment(1);
        self.outbox.close(e.close_code(), reason);
    }
}

/// Verifies the upgrade's token, or waits for an `auth` frame. Returns the
/// claims and the id of an `auth` request still to be answered.
async fn authenticate(ctx: &Ctx, reader: &mut FrameReader, token: Option<String>) -> Option<(Claims, RequestId)> {
    if let Some(token) = token {
        return match ctx.hub.verifier.verify(&token) {
            Ok(claims) => Some((claims, RequestId::None)),
            Err(e) => {
                ctx.reject_token(&e);
                None
            }
        };
    }
    let deadline = tokio::time::Instant::now() + ctx.hub.limits.auth_timeout;
    loop {
        let msg = tokio::select! {
            m = reader.next() => m,
            _ = tokio::time::sleep_until(deadline) => {
                metrics::counter!("switchboard_gateway_connections_rejected_total", "reason" => "auth_timeout").increment(1);
                ctx.outbox.close(close::UNAUTHORIZED, "auth timeout");
                return None;
            }
            _ = ctx.outbox.closed() => return None,
        };
        ctx.activity.touch();
        let msg = match msg {
            Ok(Incoming::Ping(p)) => {
                ctx.outbox.push(Out::Pong(p));
                continue;
            }
            Ok(Incoming::Pong) => continue,
            Ok(Incoming::Close(code)) => {
                ctx.outbox.close(code.unwrap_or(close::NORMAL), "bye");
                return None;
            }
            Err(ReadError::Protocol { code, reason }) => {
                ctx.outbox.close(code, reason);
                return None;
            }
            Err(ReadError::Closed) => {
                ctx.outbox.close(close::ABNORMAL, "gone");
                return None;
            }
            Ok(msg) => msg,
        };
        match decode(ctx.encoding, &msg) {
            Err((code, reason)) => ctx.outbox.close(code, reason),
            Ok(Some(Ok(Request { id, op: proto::client::Op::Auth { token } }))) => {
                match ctx.hub.verifier.verify(&token) {
                    Ok(claims) => return Some((claims, id)),
                    Err(e) => {
                        let code = ErrorCode::Unauthorized;
                        ctx.send(Event::Failure { id: &id, code, message: &e.to_string() });
                        ctx.reject_token(&e);
                    }
                }
            }
            _ => {
                ctx.send(Event::Failure {
                    id: &RequestId::None,
                    code: ErrorCode::Unauthorized,
                    message: "authenticate first",
                });
                metrics::counter!("switchboard_gateway_connections_rejected_total", "reason" => "unauthorized")
                    .increment(1);
                ctx.outbox.close(close::UNAUTHORIZED, "authenticate first");
            }
        }
        return None;
    }
}

/// An authenticated connection.
pub struct Session {
    pub(crate) hub: Arc<Hub>,
    pub(crate) conn: Arc<str>,
    pub(crate) user: Arc<str>,
    /// The token's `info` claim (JSON text), shown to room members.
    pub(crate) info: Bytes,
    pub(crate) encoding: Encoding,
    pub(crate) outbox: Arc<Outbox>,
    activity: Arc<Activity>,
    /// Rooms the token allows.
    pub(crate) globs: Arc<RoomGlobs>,
    /// Token expiry, seconds since the Unix epoch.
    pub(crate) exp: i64,
    pub(crate) rooms: HashMap<String, RoomHandle>,
    pub(crate) watching: HashSet<String>,
    bucket: TokenBucket,
    /// Frames refused by the rate limit in a row.
    refused: u32,
    /// Bad frames in the current window, and when it started.
    bad: (u32, Instant),
}

impl Session {
    /// Registers an authenticated connection and greets it.
    async fn open(ctx: Ctx, claims: Claims) -> Self {
        let hub = ctx.hub;
        let conn = hub.new_conn_id();
        let user: Arc<str> = claims.sub.clone().into();
        let globs = match &claims.rooms {
            Some(rooms) => Arc::new(RoomGlobs::new(rooms.clone())),
            None => hub.default_rooms.clone(),
        };
        let listener = Listener { outbox: ctx.outbox.clone(), encoding: ctx.encoding };
        hub.register(conn.clone(), Conn { user: user.clone(), outbox: ctx.outbox.clone() });
        if let Err(e) = hub.direct.add(&user, conn.clone(), listener).await {
            tracing::warn!(error = %e, "direct messages unavailable for this connection");
        }
        hub.reporter.connected(&user, &conn);
        metrics::counter!("switchboard_gateway_connections_accepted_total").increment(1);
        let hello = Event::Hello {
            conn: &conn,
            user: &user,
            gateway: &hub.id,
            heartbeat_ms: hub.limits.heartbeat.as_millis() as u32,
        };
        ctx.outbox.push(Out::Data(hello.encode(ctx.encoding)));
        let now = Instant::now();
        Self {
            bucket: TokenBucket::new(hub.limits.rate_per_sec, hub.limits.rate_burst, now),
            info: claims.info_bytes(),
            exp: claims.exp,
            hub,
            conn,
            user,
            encoding: ctx.encoding,
            outbox: ctx.outbox,
            activity: ctx.activity,
            globs,
            rooms: HashMap::new(),
            watching: HashSet::new(),
            refused: 0,
            bad: (0, now),
        }
    }

    /// Reads and answers requests until the connection closes, then cleans up.
    async fn serve(mut self, reader: &mut FrameReader, auth_id: RequestId) {
        if auth_id.is_some() {
            self.reply(&auth_id, Ok(Default::default()));
        }
        loop {
            let expires = expiry_instant(self.exp);
            let msg = tokio::select! {
                m = reader.next() => m,
                _ = self.outbox.closed() => break,
                _ = tokio::time::sleep_until(expires) => {
                    self.outbox.close(close::TOKEN_EXPIRED, "token expired");
                    break;
                }
            };
            self.activity.touch();
            match msg {
                Err(ReadError::Closed) => self.outbox.close(close::ABNORMAL, "gone"),
                Err(ReadError::Protocol { code, reason }) => {
                    metrics::counter!("switchboard_gateway_drops_total", "reason" => "protocol_error").increment(1);
                    self.outbox.close(code, reason);
                }
                Ok(Incoming::Close(code)) => self.outbox.close(code.unwrap_or(close::NORMAL), "bye"),
                Ok(Incoming::Pong) => {}
                Ok(Incoming::Ping(payload)) => {
                    if self.admit() {
                        self.outbox.push(Out::Pong(payload));
                    }
                }
                Ok(msg) => match decode(self.encoding, &msg) {
                    Err((code, reason)) => self.outbox.close(code, reason),
                    // Boxed: allocated only while a request is handled.
                    Ok(Some(decoded)) => Box::pin(self.on_request(decoded)).await,
                    Ok(None) => {}
                },
            }
            if self.outbox.closing().is_some() {
                break;
            }
        }
        Box::pin(self.close()).await;
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

    /// Undoes everything the connection held.
    async fn close(mut self) {
        let rooms: Vec<(String, RoomHandle)> = self.rooms.drain().collect();
        futures::future::join_all(rooms.iter().map(|(room, handle)| self.leave_room(room, handle))).await;
        for user in std::mem::take(&mut self.watching) {
            self.hub.watches.remove(&user, &self.conn);
        }
        self.hub.direct.remove(&self.user, &self.conn);
        self.hub.reporter.disconnected(&self.user, &self.conn);
        self.hub.unregister(&self.conn);
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

/// When a token with `exp` (Unix seconds) expires, as a timer instant.
fn expiry_instant(exp: i64) -> tokio::time::Instant {
    let left = exp.saturating_mul(1000).saturating_sub(proto::now_ms()).max(0) as u64;
    tokio::time::Instant::now() + Duration::from_millis(left.min(86_400_000 * 365))
}
