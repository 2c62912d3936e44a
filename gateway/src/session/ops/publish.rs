//! `publish {room, data}`: the owner gives the message the room's next seq;
//! the connection must have joined the room.

use bytes::Bytes;
use proto::client::ReplyBody;
use proto::internal::{self, router_reply, router_request};

use super::{call_failure, check_data, not_member, unexpected, Answer};
use crate::session::Session;

pub async fn publish(s: &mut Session, room: String, data: Bytes) -> Answer {
    if !s.rooms.contains_key(&room) {
        return not_member(&room);
    }
    check_data(&data)?;
    let kind = router_request::Kind::Publish(internal::PublishRequest { from: s.user.to_string(), data });
    match s.hub.router.call(&room, kind).await.map_err(call_failure)? {
        router_reply::Kind::Publish(p) => Ok(Some(ReplyBody::Publish { seq: p.seq })),
        other => unexpected(other),
    }
}
