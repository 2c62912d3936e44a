//! `join {room, since?}`, and the backend's `subscribe`: subscribe locally,
//! register with the owner, then attach to the room's fanout with the
//! answer and what a resume missed in front of anything newer.

use bytes::Bytes;
use proto::client::{ErrorCode, Event, ReplyBody, RequestId};
use proto::internal::{self, router_reply, router_request};
use proto::pb;

use super::{call_failure, check_room, fail, take_join, unexpected, Answer, Failure};
use crate::delivery::fanout::Attach;
use crate::delivery::topics::Listener;
use crate::session::orders::Outcome;
use crate::session::Session;

/// How the connection learns it is in the room.
enum Greeting<'a> {
    /// The join's reply (none without an id).
    Reply(&'a RequestId),
    /// A `subscribed` event: the backend joined it.
    Subscribed,
}

pub async fn join(s: &mut Session, id: &RequestId, room: String, since: Option<pb::Since>) -> Answer {
    check_room(s, &room)?;
    let rejoin = s.rooms.contains_key(&room);
    if !rejoin {
        check_room_limit(s)?;
    }
    take_join(s)?;
    if !rejoin {
        crate::hooks::approve::join(s, &room).await?;
    }
    enter(s, room, since, Greeting::Reply(id)).await?;
    Ok(None)
}

/// The backend's `subscribe`: its decision, so neither the token's rooms nor
/// the join hook apply; the room limit and the owner's `max_members` do.
pub async fn subscribe(s: &mut Session, room: String) -> Outcome {
    if s.rooms.contains_key(&room) {
        return Ok(false);
    }
    check_room_limit(s)?;
    enter(s, room.clone(), None, Greeting::Subscribed).await?;
    s.server_rooms.get_or_insert_default().insert(room);
    Ok(true)
}

fn check_room_limit(s: &Session) -> Result<(), Failure> {
    if s.rooms.len() >= s.hub.limits.max_rooms_per_conn {
        let message = format!("at most {} rooms per connection", s.hub.limits.max_rooms_per_conn);
        return fail(ErrorCode::TooManyRooms, message);
    }
    Ok(())
}

async fn enter(s: &mut Session, room: String, since: Option<pb::Since>, greeting: Greeting<'_>) -> Result<(), Failure> {
    let rejoin = s.rooms.contains_key(&room);
    let cost = if rejoin { 0 } else { s.room_cost(&room) };
    if !s.hold(cost) {
        return fail(ErrorCode::TooManyRooms, "this client address holds too many memberships (--max-bytes-per-ip)");
    }
    // Entered before the owner is asked: no event after its answer is missed.
    let Ok((handle, joining)) = s.hub.rooms.enter(&room).await else {
        s.unhold(cost);
        return fail(ErrorCode::Unavailable, "message bus unavailable; retry");
    };
    let member = internal::MemberRef {
        gateway: s.hub.id.clone(),
        conn: s.conn.to_string(),
        user: s.user.to_string(),
        info: s.info.clone(),
    };
    let kind = router_request::Kind::Join(internal::JoinRequest { member: Some(member), since: since.clone() });
    let join = match s.hub.router.call(&room, kind).await {
        Ok(router_reply::Kind::Join(j)) => j,
        other => {
            s.hub.rooms.exit(&room);
            s.unhold(cost);
            return other.map_err(call_failure).and_then(unexpected);
        }
    };
    let reply: Option<Bytes> = match greeting {
        Greeting::Reply(id) => id.is_some().then(|| {
            let recovered = since.as_ref().map(|_| join.recovered);
            let body = ReplyBody::Join { epoch: join.epoch.clone(), seq: join.seq, recovered, count: join.count };
            Event::Reply { id, body }.encode(s.encoding)
        }),
        Greeting::Subscribed => {
            let event = Event::Subscribed { room: &room, epoch: &join.epoch, seq: join.seq, count: join.count };
            Some(event.encode(s.encoding))
        }
    };
    // What it missed arrives paced by its queue, page by page after the first.
    let resume = since.filter(|_| join.recovered).map(|since| (since.seq, join.missed));
    handle.attach(Attach {
        conn: s.conn.clone(),
        user: s.user.clone(),
        info: s.info.clone(),
        listener: Listener { outbox: s.outbox.clone(), encoding: s.encoding },
        epoch: join.epoch,
        seq: join.seq,
        members_version: join.members_version,
        reply,
        resume,
        joining,
    });
    if rejoin {
        // Keep one reference per joined room.
        s.hub.rooms.exit(&room);
    }
    s.rooms.insert(room, handle);
    Ok(())
}
