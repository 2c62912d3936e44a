//! `leave {room}`, and leaving rooms for other reasons (the backend's
//! `unsubscribe`, a refreshed token that no longer allows them, the
//! connection's end).

use proto::client::{Event, ReplyBody};
use proto::internal::{self, router_request};

use super::{not_member, take_join, Answer};
use crate::delivery::rooms::RoomHandle;
use crate::session::orders::Outcome;
use crate::session::Session;

pub async fn leave(s: &mut Session, room: String) -> Answer {
    if !s.rooms.contains_key(&room) {
        return not_member(&room);
    }
    take_join(s)?;
    forget(s, &room).await;
    Ok(Some(ReplyBody::Empty))
}

/// The backend's `unsubscribe`: leaves the room if joined, telling the
/// client with `removed` (reason `server`).
pub async fn unsubscribe(s: &mut Session, room: String) -> Outcome {
    if !s.rooms.contains_key(&room) {
        return Ok(false);
    }
    forget(s, &room).await;
    s.send(Event::Removed { room: &room, reason: "server" });
    Ok(true)
}

/// Leaves the joined rooms the token no longer allows (but not those the
/// backend subscribed it to), telling the client with `removed` (before the
/// refresh reply).
pub async fn leave_revoked(s: &mut Session) {
    let server = s.server_rooms.as_deref();
    let revoked: Vec<String> = s
        .rooms
        .keys()
        .filter(|r| !s.grants.rooms.allows(r) && !server.is_some_and(|set| set.contains(*r)))
        .cloned()
        .collect();
    for room in revoked {
        forget(s, &room).await;
        s.send(Event::Removed { room: &room, reason: "token" });
    }
}

/// Leaves a joined room and gives back what it held.
async fn forget(s: &mut Session, room: &str) {
    if let Some(handle) = s.rooms.remove(room) {
        leave_room(s, room, &handle).await;
        s.unhold(s.room_cost(room));
    }
    if let Some(set) = &mut s.server_rooms {
        set.remove(room);
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
