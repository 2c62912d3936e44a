//! `members {room}`: the room's users, capped in entries and bytes, with the
//! exact count; refused where the namespace has `members = false`.

use proto::client::ReplyBody;
use proto::internal::{self, router_reply, router_request};

use super::{call_failure, check_room, forbidden, unexpected, Answer};
use crate::session::Session;

/// Most members listed in one reply.
const LIMIT: u32 = 100;

pub async fn members(s: &mut Session, room: String) -> Answer {
    check_room(s, &room)?;
    let ns = s.hub.namespaces.of(&room);
    if !ns.members {
        return Err(forbidden(format!("{} has members = false", ns.name())));
    }
    // A quarter of the queue: the reply must fit beside what the
    // connection's rooms are delivering meanwhile.
    let max_bytes = (s.hub.limits.queue_bytes / 4).min(u32::MAX as usize) as u32;
    let kind = router_request::Kind::Members(internal::MembersRequest { limit: LIMIT, max_bytes });
    match s.hub.router.call(&room, kind).await.map_err(call_failure)? {
        router_reply::Kind::Members(m) => {
            Ok(Some(ReplyBody::Members { members: m.members, count: m.count, truncated: m.truncated }))
        }
        other => unexpected(other),
    }
}
