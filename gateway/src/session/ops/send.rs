//! `send {user, data}`: a direct message to every connection of a user, if
//! the token's `send` allows the user; queued in the user's inbox when they
//! have no live connection ([`presence::direct`]).

use bytes::Bytes;
use proto::client::{ErrorCode, ReplyBody};
use proto::subject;

use super::{check_data, fail, forbidden, Answer};
use crate::session::Session;

pub async fn send(s: &mut Session, user: String, data: Bytes) -> Answer {
    if !subject::valid_id(&user) {
        return fail(ErrorCode::BadRequest, "invalid user id");
    }
    s.grants.send.check("messaging", &user).map_err(forbidden)?;
    check_data(&data)?;
    match presence::direct::send(&s.hub.bus, Some(&s.hub.presence), &user, &s.user, data).await {
        Ok(delivered) => Ok(Some(ReplyBody::Send { delivered })),
        Err(e) => fail(ErrorCode::Unavailable, e.to_string()),
    }
}
