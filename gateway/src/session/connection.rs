//! A connection's life: the transport (a WebSocket, or an SSE stream)
//! beside the session, from the first byte to the last.
//!
//! The connection authenticates (a token in the upgrade, or an `auth` frame
//! within the auth timeout) and is admitted, registers, then reads and
//! answers requests one at a time, which keeps one publisher's messages in
//! order. While the session handles a request the transport keeps writing and
//! its clocks running ([`Transport::tend`]). Every way out closes with the
//! design's close code and undoes what the connection held.

use std::net::SocketAddr;
use std::sync::Arc;

use proto::client::{
    close::{self, Close},
    Encoding, ErrorCode, Event, Request, RequestId, SseHello,
};

use super::auth::{AuthError, Claims};
use super::grants::Grants;
use super::{decode, Accepted, Session};
use crate::delivery::outbox::Out;
use crate::delivery::topics::Listener;
use crate::hooks::connect::{Presented, Renewal};

/// How soon a refresh hook that did not answer is asked again.
const RENEW_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
use crate::delivery::outbox::Outbox;
use crate::node::hub::{Conn, Hub};
use crate::transport::Transport;
use crate::websocket::reader::{Incoming, ReadError};

/// Runs a connection to the end. The session is moved into the future once
/// and lived through a reference: an `async fn` taking it by value would
/// hold a second copy of it (its argument and its binding).
pub fn run(
    hub: Arc<Hub>,
    transport: Transport,
    outbox: Arc<Outbox>,
    accepted: Accepted,
) -> impl std::future::Future<Output = ()> + Send {
    let mut connection = Connection::new(hub, transport, outbox, accepted);
    async move { connection.live().await }
}

/// A client connection: its transport, and the session the ops act on. Kept
/// apart so the transport can keep writing while the session handles a request.
struct Connection {
    transport: Transport,
    session: Session,
    /// What the handshake decided, until used. Boxed: the connection holds
    /// the field for life, and uses it once.
    accepted: Option<Box<Accepted>>,
    /// The token expiry the transport's clock was last given.
    exp: i64,
    /// What the connect hook was shown, to renew through the refresh hook.
    renewal: Option<Box<Presented>>,
}

impl Connection {
    fn new(hub: Arc<Hub>, transport: Transport, outbox: Arc<Outbox>, accepted: Accepted) -> Self {
        let session = Session::new(hub, outbox, &accepted);
        Self { transport, session, accepted: Some(Box::new(accepted)), exp: 0, renewal: None }
    }

    /// The whole connection: start, serve, clean up, close. Each step but
    /// the serving is boxed, so an idle connection's task holds only what
    /// serving needs; and boxed in a statement of its own, as a temporary in
    /// an awaited expression keeps its space for good.
    async fn live(&mut self) {
        let start = Box::pin(self.start());
        if start.await {
            self.serve().await;
            let close = Box::pin(self.session.leave_all());
            close.await;
        }
        let finish = Box::pin(self.transport.finish(Close::BYE));
        let code = finish.await;
        crate::metrics::disconnected(code);
    }

    /// Everything before serving: a refusal, the conformance echo, or
    /// authenticating and opening. Whether to serve. A step of its own,
    /// boxed by the caller and freed before serving, so its parts need no
    /// boxes of their own: what the handshake decided, used only here,
    /// would otherwise stay in the connection's future for life.
    async fn start(&mut self) -> bool {
        let Accepted { refuse, token, hook, peer, .. } = *self.accepted.take().expect("set by new");
        if let Some(refuse) = refuse {
            self.session.outbox.close(refuse);
            return false;
        }
        if let (true, Transport::WebSocket(socket)) = (self.session.hub.conformance_echo, &mut self.transport) {
            crate::websocket::echo::serve(socket, &self.session.outbox).await;
            return false;
        }
        let Some((claims, auth_id)) = self.authenticate(token, hook, peer).await else { return false };
        self.open(claims).await;
        if auth_id.is_some() {
            self.session.reply(&auth_id, Ok(Default::default()));
        }
        true
    }

    /// Verifies the upgrade's token, or waits for an `auth` frame, and
    /// admits the connection. Returns the claims and the id of an `auth`
    /// request still to be answered.
    async fn authenticate(
        &mut self,
        token: Option<String>,
        hook: Option<Box<Presented>>,
        peer: SocketAddr,
    ) -> Option<(Claims, RequestId)> {
        let (claims, id) = Box::pin(self.credentials(token, hook, peer)).await?;
        // Only a verified token is charged to the handshake rate.
        if let Err(refusal) = self.session.hub.admission.handshake() {
            refusal.count();
            if id.is_some() {
                self.session.fail(&id, ErrorCode::Unavailable, "try again later");
            }
            self.session.outbox.close(Close::TRY_AGAIN_LATER);
            return None;
        }
        Some((claims, id))
    }

    /// The verified claims of the upgrade's token, of the backend's connect
    /// hook, or of an `auth` frame.
    async fn credentials(
        &mut self,
        token: Option<String>,
        hook: Option<Box<Presented>>,
        peer: SocketAddr,
    ) -> Option<(Claims, RequestId)> {
        if let (Some(presented), Some(hooks)) = (hook, self.session.hub.hooks.clone()) {
            return match crate::hooks::connect::connect(&hooks, &presented).await {
                Ok(claims) => {
                    self.renewal = Some(presented);
                    Some((claims, RequestId::None))
                }
                Err(close) if close.code == close::TRY_AGAIN_LATER => {
                    self.session.outbox.close(close);
                    None
                }
                Err(close) => {
                    refuse_auth(&self.session, close, peer);
                    None
                }
            };
        }
        if let Some(token) = token {
            return match self.session.hub.verifier.check(&token).await {
                Ok(claims) => Some((claims, RequestId::None)),
                Err(e) => {
                    reject_token(&self.session, &e, peer);
                    None
                }
            };
        }
        let deadline = tokio::time::Instant::now() + self.session.hub.limits.auth_timeout;
        self.transport.clocks().end_at(deadline, Close::AUTH_TIMEOUT);
        loop {
            let msg = match self.transport.next().await {
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
                Ok(Incoming::Pong | Incoming::Renew | Incoming::Orders) => continue,
                Ok(Incoming::Close(code)) => {
                    self.session.outbox.close(Close::new(code.unwrap_or(close::NORMAL), "bye"));
                    return None;
                }
                Err(ReadError::Protocol(c)) => {
                    self.session.outbox.close(c);
                    return None;
                }
                Err(ReadError::Closed) => {
                    if self.session.outbox.closing() == Some(Close::AUTH_TIMEOUT) {
                        crate::metrics::rejected("auth_timeout");
                    }
                    self.session.outbox.close(Close::GONE);
                    return None;
                }
                Ok(msg) => msg,
            };
            match decode(self.session.encoding, &msg) {
                Err(c) => self.session.outbox.close(c),
                Ok(Some(Ok(Request { id, op: proto::client::Op::Auth { token } }))) => {
                    match self.session.hub.verifier.check(&token).await {
                        Ok(claims) => return Some((claims, id)),
                        Err(e) => {
                            self.session.fail(&id, ErrorCode::Unauthorized, &e.to_string());
                            reject_token(&self.session, &e, peer);
                        }
                    }
                }
                _ => {
                    self.session.fail(&RequestId::None, ErrorCode::Unauthorized, "authenticate first");
                    refuse_auth(&self.session, Close::new(close::UNAUTHORIZED, "authenticate first"), peer);
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
        self.session.grants = Grants::of(&claims, &hub.defaults, &hub.default_grants);
        // The hello is queued first: whatever reaches the connection from
        // the moment it is registered (a direct message that waited for the
        // user, handed over when presence hears of the session) comes after
        // it. Nothing is written before this returns, so the client still
        // reads the hello only once presence knows the session: a direct
        // message sent to a user who saw it finds this connection.
        let (conn, user) = (&self.session.conn, &self.session.user);
        let secret = self.transport.opened(conn, user, |post_secret| {
            hello(&self.session, Some(SseHello { post_secret, resumed: true })).encode(Encoding::Json)
        });
        let sse = secret.as_deref().map(|post_secret| SseHello { post_secret, resumed: false });
        self.session.send(hello(&self.session, sse));
        let listener = Listener { outbox: self.session.outbox.clone(), encoding: self.session.encoding };
        hub.register(
            self.session.conn.clone(),
            Conn { user: self.session.user.clone(), outbox: self.session.outbox.clone() },
        );
        hub.direct.add(&self.session.user, self.session.conn.clone(), listener.clone());
        let connect = hub.reporter.connected(&self.session.user, &self.session.conn);
        hub.reporter.reported(connect).await;
        self.session.exp = claims.exp;
        self.sync_expiry();
        crate::metrics::accepted();
        // Direct messages that waited for this user follow the hello.
        let user = self.session.user.clone();
        tokio::spawn(async move { crate::delivery::direct::hand_over(&hub, &user, Some(listener)).await });
    }

    /// Moves the transport's expiry clock to the session's token expiry (and,
    /// for a hook-authenticated connection, its renewal before that).
    fn sync_expiry(&mut self) {
        if self.exp != self.session.exp {
            self.exp = self.session.exp;
            let now = tokio::time::Instant::now();
            self.transport.clocks().expire_at(self.exp, now);
            if self.renewal.is_some() {
                self.transport.clocks().renew_at(Some(crate::hooks::connect::renew_at(self.exp, proto::now_ms(), now)));
            }
        }
    }

    /// Asks the refresh hook to extend a hook-authenticated connection.
    async fn renew(&mut self) {
        let (Some(presented), Some(hooks)) = (self.renewal.clone(), self.session.hub.hooks.clone()) else { return };
        let (user, conn) = (self.session.user.clone(), self.session.conn.clone());
        let call = crate::hooks::connect::refresh(&hooks, &presented, &user, &conn);
        match self.transport.tend(call).await {
            Ok(claims) => {
                self.session.exp = claims.exp;
                self.sync_expiry();
            }
            Err(Renewal::Refused) => self.session.outbox.close(Close::new(close::TOKEN_EXPIRED, "refresh refused")),
            // The old expiry still stands; ask again in a while.
            Err(Renewal::Unavailable) => {
                self.transport.clocks().renew_at(Some(tokio::time::Instant::now() + RENEW_RETRY));
            }
        }
    }

    /// Reads and answers requests until the connection closes; a request's
    /// answer may wait, but writes and clocks never do.
    async fn serve(&mut self) {
        loop {
            match self.transport.next().await {
                // The client vanished, or our close went out.
                Err(ReadError::Closed) => self.session.outbox.close(Close::GONE),
                Err(ReadError::Protocol(c)) => {
                    crate::metrics::dropped("protocol_error");
                    self.session.outbox.close(c);
                }
                Ok(Incoming::Close(code)) => {
                    self.session.outbox.close(Close::new(code.unwrap_or(close::NORMAL), "bye"))
                }
                Ok(Incoming::Pong) => {}
                Ok(Incoming::Renew) => {
                    let renew = Box::pin(self.renew());
                    renew.await;
                }
                Ok(Incoming::Orders) => {
                    let orders = self.session.outbox.take_orders();
                    let obey = Box::pin(self.transport.tend(self.session.obey(orders)));
                    obey.await;
                }
                Ok(Incoming::Ping(payload)) => {
                    if self.session.admit() {
                        self.session.outbox.push(Out::Pong(payload));
                    }
                }
                Ok(msg) => match decode(self.session.encoding, &msg) {
                    Err(c) => self.session.outbox.close(c),
                    // Boxed: allocated only while a request is handled.
                    Ok(Some(decoded)) => {
                        let handle = Box::pin(self.transport.tend(self.session.on_request(decoded)));
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

/// The first event of a connection (`sse`: on an SSE stream).
fn hello<'a>(s: &'a Session, sse: Option<SseHello<'a>>) -> Event<'a> {
    let heartbeat_ms = s.hub.limits.heartbeat.as_millis() as u32;
    Event::Hello { conn: &s.conn, user: &s.user, gateway: &s.hub.id, heartbeat_ms, sse }
}

fn reject_token(s: &Session, e: &AuthError, peer: SocketAddr) {
    tracing::debug!(%peer, error = %e, "token rejected");
    refuse_auth_for(s, e.close(), e.reason(), peer);
}

/// Closes a connection that failed to authenticate: with its code while
/// failures are within their budget, else with 1013.
fn refuse_auth(s: &Session, close: Close, peer: SocketAddr) {
    refuse_auth_for(s, close, "unauthorized", peer)
}

/// [`refuse_auth`], counted under `reason`.
fn refuse_auth_for(s: &Session, close: Close, reason: &'static str, peer: SocketAddr) {
    match s.hub.admission.failure(peer.ip()) {
        Ok(()) => {
            crate::metrics::rejected(reason);
            s.outbox.close(close);
        }
        Err(refusal) => {
            refusal.count();
            s.outbox.close(Close::TRY_AGAIN_LATER);
        }
    }
}

#[cfg(test)]
mod tests {
    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, D, F: std::future::Future>(_: fn(A, B, C, D) -> F) -> usize {
        size_of::<F>()
    }

    /// Every connection holds its session's future for life: only what
    /// serving needs belongs in it (the one-off steps are boxed).
    #[test]
    fn a_session_future_holds_what_serving_needs() {
        let size = future_size(super::run);
        assert!(size <= 1152, "the session future is {size} B");
    }
}
