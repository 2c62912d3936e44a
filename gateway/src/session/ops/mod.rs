//! The client operations: one module per op family, each a function taking
//! the session and the op's fields and returning the reply body or the
//! design's error code.
//!
//! Room operations go to the room's owner through the router client
//! ([`join`], [`leave`], [`publish`], [`members`], [`signal`], [`read`]); direct messages go
//! to the gateways presence locates the user on ([`send`]); presence goes to the presence
//! service ([`presence`]); [`refresh`] renews the token. A policy check on an
//! op belongs in that op's module. The backend's orders reuse them: its
//! `subscribe` joins as [`join`] does, its `unsubscribe` leaves as [`leave`].

mod join;
mod leave;
mod members;
mod presence;
mod publish;
mod read;
mod refresh;
mod send;
mod signal;

use proto::client::{ErrorCode, Event, Op, ReplyBody, RequestId};
use proto::internal::router_reply;
use proto::subject;
use router::client::CallError;

use crate::session::Session;

pub(crate) use join::subscribe;
pub(crate) use leave::{leave_room, unsubscribe};

/// A failed op: the code and a message for the client.
pub type Failure = (ErrorCode, String);

/// What an op answers: a reply body, or `None` when the answer was already
/// queued (a join's reply travels with its catch-up), or a failure.
pub type Answer = Result<Option<ReplyBody>, Failure>;

fn fail<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Failure> {
    Err((code, message.into()))
}

/// The client's view of a failed call to a room owner.
fn call_failure(e: CallError) -> Failure {
    match e {
        CallError::Unavailable => (ErrorCode::Unavailable, "room owner unavailable; retry".into()),
        CallError::Refused { code, message } => (code, message),
    }
}

/// An owner's answer of the wrong kind.
fn unexpected<T>(_: router_reply::Kind) -> Result<T, Failure> {
    fail(ErrorCode::Internal, "unexpected reply from owner")
}

/// Carries out one op.
pub(crate) async fn dispatch(s: &mut Session, id: &RequestId, op: Op) -> Answer {
    match op {
        Op::Auth { .. } => fail(ErrorCode::BadRequest, "already authenticated"),
        Op::Join { room, since } => join::join(s, id, room, since).await,
        Op::Leave { room } => leave::leave(s, room).await,
        Op::Publish { room, data, idempotency_key } => publish::publish(s, room, data, idempotency_key).await,
        Op::Send { user, data } => send::send(s, user, data).await,
        Op::Members { room } => members::members(s, room).await,
        Op::Presence { users } => presence::query(s, users).await,
        Op::Watch { users } => presence::watch(s, users).await,
        Op::Unwatch { users } => presence::unwatch(s, users),
        Op::Refresh { token } => refresh::refresh(s, token).await,
        Op::Signal { room, data } => signal::signal(s, room, data).await,
        Op::Status { status } => presence::status(s, status),
        Op::Read { room, seq } => read::read(s, room, seq).await,
        Op::Ping => {
            s.send(Event::Pong);
            Ok(None)
        }
    }
}

/// A room id the token allows, or the error to answer.
fn check_room(s: &Session, room: &str) -> Result<(), Failure> {
    if !subject::valid_id(room) {
        return fail(ErrorCode::InvalidRoom, subject::INVALID_ROOM);
    }
    s.grants.rooms.check("joining", room).map_err(forbidden)
}

/// A refusal by a rule: `forbidden`, with the rule's words.
fn forbidden(why: String) -> Failure {
    (ErrorCode::Forbidden, why)
}

/// The answer to an op on a room the connection has not joined.
fn not_member<T>(room: &str) -> Result<T, Failure> {
    if !subject::valid_id(room) {
        return fail(ErrorCode::InvalidRoom, subject::INVALID_ROOM);
    }
    fail(ErrorCode::NotMember, "join the room first")
}

/// `data` within [`proto::client::MAX_DATA_BYTES`], or `too_large`.
pub(crate) fn check_data(data: &[u8]) -> Result<(), Failure> {
    if data.len() > proto::client::MAX_DATA_BYTES {
        return fail(ErrorCode::TooLarge, "data is over 64 KiB");
    }
    Ok(())
}

/// Takes a join or leave from the connection's allowance: each is an event
/// at every member.
fn take_join(s: &mut Session) -> Result<(), Failure> {
    if s.joins.take(std::time::Instant::now()) {
        return Ok(());
    }
    crate::metrics::dropped("join_rate");
    fail(ErrorCode::RateLimited, "over the join and leave rate (--join-rate)")
}
