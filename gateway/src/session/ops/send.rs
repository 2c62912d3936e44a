//! `send {user, data}`: a direct message to every connection of a user,
//! straight onto `sb.user.<user>`, if the token's `send` allows the user.

use bytes::Bytes;
use proto::client::{ErrorCode, ReplyBody};
use proto::{internal, subject};

use super::{check_data, fail, forbidden, Answer};
use crate::session::Session;

pub async fn send(s: &mut Session, user: String, data: Bytes) -> Answer {
    if !subject::valid_id(&user) {
        return fail(ErrorCode::BadRequest, "invalid user id");
    }
    s.grants.send.check("messaging", &user).map_err(forbidden)?;
    check_data(&data)?;
    let dm = internal::DirectMessage { to: user.clone(), from: s.user.to_string(), data, ts: proto::now_ms() };
    match s.hub.bus.publish_msg(subject::user(&user), &dm).await {
        Ok(()) => Ok(Some(ReplyBody::Empty)),
        Err(_) => fail(ErrorCode::Unavailable, "message bus unavailable; retry"),
    }
}
