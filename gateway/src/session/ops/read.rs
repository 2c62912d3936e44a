//! `read {room, seq}`: this user has read a joined room up to `seq`. The
//! room's owner keeps the marker (only ever moving it forward, never past
//! the room's latest seq) and tells the members as the namespace's
//! `join_leave` says: a `read` event (`all`), in `members_changed`
//! (`batched`), or not at all (`off`); `members` shows every marker.

use proto::client::ReplyBody;
use proto::internal::{self, router_reply, router_request};

use super::{call_failure, not_member, unexpected, Answer};
use crate::session::Session;

pub async fn read(s: &mut Session, room: String, seq: u64) -> Answer {
    if !s.rooms.contains_key(&room) {
        return not_member(&room);
    }
    let kind = router_request::Kind::Read(internal::ReadRequest { user: s.user.to_string(), seq });
    match s.hub.router.call(&room, kind).await.map_err(call_failure)? {
        router_reply::Kind::Ack(_) => Ok(Some(ReplyBody::Empty)),
        other => unexpected(other),
    }
}
