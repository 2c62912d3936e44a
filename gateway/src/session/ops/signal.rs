//! `signal {room, data}`: typing indicators, cursors and the like. The owner
//! fans a signal out to the room's members of the moment, the sending
//! connection excepted, without a seq and without storing it, so a signal
//! never takes a place in the history or a resume. The rules of `publish`
//! apply (membership, the namespace's `publish`, the token's `publish`
//! claim), with a smaller size cap; signals count toward the connection's
//! message rate like every op.

use bytes::Bytes;
use proto::client::{ErrorCode, ReplyBody};
use proto::internal::{self, router_reply, router_request};

use super::publish::check_publish;
use super::{call_failure, fail, not_member, unexpected, Answer};
use crate::session::Session;

/// Largest signal `data`, in bytes of JSON text.
pub const MAX_SIGNAL_BYTES: usize = 4096;

pub async fn signal(s: &mut Session, room: String, data: Bytes) -> Answer {
    if !s.rooms.contains_key(&room) {
        return not_member(&room);
    }
    if data.len() > MAX_SIGNAL_BYTES {
        return fail(ErrorCode::TooLarge, "signal data is over 4 KiB");
    }
    check_publish(s, &room)?;
    let sig =
        internal::SignalRequest { from: s.user.to_string(), data, gateway: s.hub.id.clone(), conn: s.conn.to_string() };
    match s.hub.router.call(&room, router_request::Kind::Signal(sig)).await.map_err(call_failure)? {
        router_reply::Kind::Ack(_) => Ok(Some(ReplyBody::Empty)),
        other => unexpected(other),
    }
}
