//! `send {user, data}`: a direct message to every connection of a user, if
//! the token's `send` allows the user.
//!
//! It is a request on `sb.user.<user>`: each gateway holding a connection of
//! the user delivers it and answers, and NATS answers at once when no
//! gateway does. Then the user has no live connection, and the message waits
//! in the user's inbox at presence (`delivered: false`) until their next
//! connection takes it; a `notice` on the same subject makes a connection
//! that opened meanwhile take it now.

use std::time::Duration;

use bus::BusError;
use bytes::Bytes;
use proto::client::{ErrorCode, ReplyBody};
use proto::{internal, pb, subject};

use super::{check_data, fail, forbidden, Answer};
use crate::session::Session;

/// How long the gateways holding the user's connections have to answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn send(s: &mut Session, user: String, data: Bytes) -> Answer {
    if !subject::valid_id(&user) {
        return fail(ErrorCode::BadRequest, "invalid user id");
    }
    s.grants.send.check("messaging", &user).map_err(forbidden)?;
    check_data(&data)?;
    let ts = proto::now_ms();
    let dm = internal::DirectMessage { to: user.clone(), from: s.user.to_string(), data, ts, notice: false };
    let payload = Bytes::from(prost::Message::encode_to_vec(&dm));
    match s.hub.bus.request(subject::user(&user), payload, DELIVERY_TIMEOUT).await {
        Ok(_) => return Ok(Some(ReplyBody::Send { delivered: true })),
        // Nobody holds a connection of the user (or none took it in time).
        Err(BusError::NoResponders | BusError::Timeout) => {}
        Err(_) => return fail(ErrorCode::Unavailable, "message bus unavailable; retry"),
    }
    let queued = pb::QueuedDirect { to: user.clone(), from: dm.from, data: dm.data, ts };
    match s.hub.presence.enqueue(queued).await {
        Ok(reply) if reply.refused => return fail(ErrorCode::Unavailable, "the inbox is full; retry later"),
        Ok(_) => {}
        Err(_) => return fail(ErrorCode::Unavailable, "the user is offline and the inbox is unavailable; retry"),
    }
    let notice = internal::DirectMessage { to: user.clone(), notice: true, ..Default::default() };
    let _ = s.hub.bus.publish_msg(subject::user(&user), &notice).await;
    Ok(Some(ReplyBody::Send { delivered: false }))
}
