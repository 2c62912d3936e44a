//! `leave {room}`, and leaving rooms for other reasons (a refreshed token
//! that no longer allows them, the connection's end).

use proto::client::{Event, ReplyBody};
use proto::internal::{self, router_request};

use super::{not_member, take_join, Answer};
use crate::delivery::rooms::RoomHandle;
use crate::session::Session;

pub async fn leave(s: &mut Session, room: String) -> Answer {
    if !s.rooms.contains_key(&room) {
        return not_member(&room);
    }
    take_join(s)?;
    let handle = s.rooms.remove(&room).expect("checked");
    leave_room(s, &room, &handle).await;
    s.unhold(s.room_cost(&room));
    Ok(Some(ReplyBody::Empty))
}

/// Leaves the joined rooms the token no longer allows, telling the client
/// with `removed` (before the refresh reply).
pub async fn leave_revoked(s: &mut Session) {
    let revoked: Vec<String> = s.rooms.keys().filter(|r| !s.grants.rooms.allows(r)).cloned().collect();
    for room in revoked {
        if let Some(handle) = s.rooms.remove(&room) {
            leave_room(s, &room, &handle).await;
            s.unhold(s.room_cost(&room));
            s.send(Event::Removed { room: &room, reason: "token" });
        }
    }
}

/// Stops delivery, drops the local reference, and tells the owner.
pub async fn leave_room(s: &Session, room: &str, handle: &RoomHandle) {
    handle.detach(s.conn.clone());
    s.hub.rooms.exit(room);
    let leave = internal::LeaveRequest { gateway: s.hub.id.clone(), conn: s.conn.to_string() };
    if let Err(e) = s.hub.router.call(room, router_request::Kind::Leave(leave)).await {
        tracing::warn!(error = %e, room, "leave not acknowledged by the owner");
    }
}
