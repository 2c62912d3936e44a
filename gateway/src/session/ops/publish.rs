//! `publish {room, data, idempotency_key?}`: the owner gives the message the
//! room's next seq (a repeated key, scoped to room and user, answers the
//! first one's seq and delivers nothing);
//! the connection must have joined the room, its namespace must let clients
//! publish and its token must allow the room.

use bytes::Bytes;
use proto::client::ReplyBody;
use proto::internal::{self, router_reply, router_request};

use router::namespace::Publish;

use super::{call_failure, check_data, forbidden, not_member, unexpected, Answer, Failure};
use crate::session::Session;

pub async fn publish(s: &mut Session, room: String, data: Bytes, idempotency_key: String) -> Answer {
    if !s.rooms.contains_key(&room) {
        return not_member(&room);
    }
    check_data(&data)?;
    check_publish(s, &room)?;
    let data = crate::hooks::approve::publish(s, &room, data).await?;
    let kind =
        router_request::Kind::Publish(internal::PublishRequest { from: s.user.to_string(), data, idempotency_key });
    match s.hub.router.call(&room, kind).await.map_err(call_failure)? {
        router_reply::Kind::Publish(p) => Ok(Some(ReplyBody::Publish { seq: p.seq, duplicate: p.duplicate })),
        other => unexpected(other),
    }
}

/// Whether a client may publish into `room`: the namespace's `publish` wins
/// over any claim.
pub(super) fn check_publish(s: &Session, room: &str) -> Result<(), Failure> {
    let ns = s.hub.namespaces.of(room);
    if ns.publish == Publish::None {
        return Err(forbidden(format!("{} has publish = \"none\"", ns.name())));
    }
    s.grants.publish.check("publishing to", room).map_err(forbidden)
}
