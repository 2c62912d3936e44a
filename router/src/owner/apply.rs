//! Applying a room operation at its owner: join, leave, publish, history,
//! members, sync. Events go out before the reply: a publish is acknowledged
//! only after its event was emitted. Joins and leaves are announced as the
//! room's namespace says ([`announce`]); a join past its `max_members` is
//! refused with `room_full` (a gateway's `Sync` re-registers members that
//! were admitted already, so it is never refused).

use std::time::Instant;

use prost::Message as _;
use proto::client::ErrorCode;
use proto::internal::{self, room_event, router_reply, router_request};

use super::state::{error, event, reply, Action, Notice, Owner};
use crate::namespace::{JoinLeave, Namespace};
use crate::room::{Change, Members, Room};

/// A user whose first connection joined, or whose last one left.
pub(super) enum Membership {
    Joined { user: String, info: bytes::Bytes },
    Left { user: String },
}

/// Tells the room's members of a join or leave, as its namespace says:
/// now (`all`), in the window's batch (`batched`: the first change of a
/// window schedules its flush), or not at all (`off`).
pub(super) fn announce(ns: &Namespace, room_id: &str, room: &mut Room, change: Membership, out: &mut Vec<Action>) {
    notify(room_id, room, &change, out);
    match ns.join_leave {
        JoinLeave::Off => {}
        JoinLeave::All => {
            let (room_name, count) = (room_id.to_owned(), room.user_count());
            let kind = match change {
                Membership::Joined { user, info } => {
                    room_event::Kind::Joined(proto::pb::MemberJoined { room: room_name, user, info, count })
                }
                Membership::Left { user } => {
                    room_event::Kind::Left(proto::pb::MemberLeft { room: room_name, user, count })
                }
            };
            let mut ev = event(room_id, &room.epoch, kind);
            ev.members_version = room.members_version;
            out.push(Action::Emit(ev));
        }
        JoinLeave::Batched => {
            open_window(ns, room_id, room, out);
            match change {
                Membership::Joined { user, info } => room.batch.joined(&user, &info),
                Membership::Left { user } => room.batch.left(&user),
            }
        }
    }
}

/// Schedules the flush of `room`'s batch when this change opens its window.
fn open_window(ns: &Namespace, room_id: &str, room: &Room, out: &mut Vec<Action>) {
    if room.batch.is_empty() {
        out.push(Action::Flush { room: room_id.to_owned(), after: ns.join_leave_window });
    }
}

/// The webhook events of a user's join or leave, whatever the namespace
/// announces to members.
fn notify(room_id: &str, room: &Room, change: &Membership, out: &mut Vec<Action>) {
    let room_name = room_id.to_owned();
    match change {
        Membership::Joined { user, .. } => {
            if room.user_count() == 1 {
                out.push(Action::Notify(Notice::Occupied { room: room_name.clone() }));
            }
            out.push(Action::Notify(Notice::Joined { room: room_name, user: user.clone() }));
        }
        Membership::Left { user } => {
            out.push(Action::Notify(Notice::Left { room: room_name.clone(), user: user.clone() }));
            if room.user_count() == 0 {
                out.push(Action::Notify(Notice::Vacated { room: room_name }));
            }
        }
    }
}

/// Takes messages until `budget` bytes; true if some were left.
fn page<'a>(
    msgs: impl Iterator<Item = &'a internal::StoredMessage>,
    budget: usize,
) -> (Vec<internal::StoredMessage>, bool) {
    let mut out = Vec::new();
    let mut used = 0;
    for m in msgs {
        let size = m.encoded_len() + 8;
        if !out.is_empty() && used + size > budget {
            return (out, true);
        }
        used += size;
        out.push(m.clone());
    }
    (out, false)
}

impl Owner {
    /// The server API's `rooms` page of this router: owned rooms after
    /// `after` that start with `prefix`, in id order. The `limit` smallest
    /// are kept in a bounded heap, O(rooms × log limit), so paging through
    /// a router's rooms never sorts them all.
    pub(super) fn list(&self, l: &internal::ListRequest) -> internal::RouterReply {
        let limit = l.limit.min(1000) as usize;
        let mut smallest = std::collections::BinaryHeap::with_capacity(limit + 1);
        let mut more = false;
        for id in self.rooms.keys() {
            if id.as_str() > l.after.as_str() && id.starts_with(&l.prefix) {
                smallest.push(id.as_str());
                if smallest.len() > limit {
                    smallest.pop();
                    more = true;
                }
            }
        }
        let rooms = smallest
            .into_sorted_vec()
            .into_iter()
            .map(|id| {
                let room = &self.rooms[id];
                proto::pb::RoomInfo { room: id.to_owned(), users: room.user_count(), seq: room.seq }
            })
            .collect();
        let total_members = self.rooms.values().map(Room::conn_count).sum::<usize>() as u64;
        let total_rooms = self.rooms.len() as u64;
        reply(router_reply::Kind::List(internal::RoomList { rooms, more, total_rooms, total_members }))
    }

    /// Applies a room operation; the room's state is here (or starts now).
    pub(super) fn apply(
        &mut self,
        room_id: String,
        kind: Option<router_request::Kind>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> internal::RouterReply {
        match kind {
            None => error(ErrorCode::BadRequest, "empty request"),
            Some(router_request::Kind::Join(j)) => {
                let Some(member) = j.member else { return error(ErrorCode::BadRequest, "join without member") };
                self.gateways.entry(member.gateway.clone()).or_insert(now);
                let ns = self.config.namespaces.of(&room_id).clone();
                let room = self.rooms.entry(room_id.clone()).or_default();
                let cap = ns.max_members;
                if cap > 0 && room.user_count() >= cap && !room.has_user(&member.user) {
                    crate::metrics::room_full();
                    let message = format!("the room is full: {} has max_members = {cap}", ns.name());
                    return error(ErrorCode::RoomFull, message);
                }
                let change = room.join(&member);
                let (epoch, seq, count) = (room.epoch.clone(), room.seq, room.user_count());
                let (recovered, missed, truncated) = match j.since.as_ref().and_then(|s| room.recover(s)) {
                    None => (false, Vec::new(), false),
                    Some(msgs) => {
                        let (missed, truncated) = page(msgs, self.config.reply_bytes);
                        (true, missed, truncated)
                    }
                };
                if change == Change::Joined {
                    let change = Membership::Joined { user: member.user, info: member.info };
                    announce(&ns, &room_id, room, change, out);
                }
                let members_version = room.members_version;
                let join = internal::JoinReply { epoch, seq, recovered, missed, truncated, count, members_version };
                reply(router_reply::Kind::Join(join))
            }
            Some(router_request::Kind::Leave(l)) => {
                if let Some(room) = self.rooms.get_mut(&room_id) {
                    if let Some((user, Change::Left)) = room.leave(&l.gateway, &l.conn) {
                        announce(self.config.namespaces.of(&room_id), &room_id, room, Membership::Left { user }, out);
                    }
                }
                reply(router_reply::Kind::Ack(internal::Ack {}))
            }
            Some(router_request::Kind::Publish(p)) => {
                let room = self.rooms.entry(room_id.clone()).or_default();
                if let Some(seq) = room.published(&p.from, &p.idempotency_key) {
                    let epoch = room.epoch.clone();
                    return reply(router_reply::Kind::Publish(internal::PublishReply { epoch, seq, duplicate: true }));
                }
                let (from, data, idempotency_key) = (p.from, p.data, p.idempotency_key);
                let msg = internal::StoredMessage { from, data, ts: proto::now_ms(), idempotency_key, seq: 0 };
                let history = self.config.namespaces.of(&room_id).history;
                let mut msg = room.publish(&room_id, msg, now, &history, &mut self.budget);
                let (epoch, seq) = (room.epoch.clone(), msg.seq);
                crate::metrics::published();
                // The key stays with the owner (and travels with handoffs).
                msg.idempotency_key.clear();
                out.push(Action::Emit(event(&room_id, &epoch, room_event::Kind::Message(msg))));
                self.enforce_budget();
                reply(router_reply::Kind::Publish(internal::PublishReply { epoch, seq, duplicate: false }))
            }
            Some(router_request::Kind::History(h)) => {
                let room = self.rooms.entry(room_id).or_default();
                let limit = if h.limit == 0 { usize::MAX } else { h.limit as usize };
                let found = match &h.since {
                    Some(since) => room.recover(since).map(|m| page(m.take(limit), self.config.reply_bytes)),
                    None => Some(page(room.latest(limit), self.config.reply_bytes)),
                };
                let (recovered, (messages, truncated)) = match found {
                    Some(p) => (true, p),
                    None => (false, (Vec::new(), false)),
                };
                let (epoch, seq) = (room.epoch.clone(), room.seq);
                reply(router_reply::Kind::History(internal::HistoryReply {
                    epoch,
                    seq,
                    recovered,
                    messages,
                    truncated,
                }))
            }
            Some(router_request::Kind::Members(m)) => {
                let limit = (m.limit as usize).clamp(1, self.config.members_limit);
                let budget = self.config.reply_bytes;
                let max_bytes = if m.max_bytes == 0 { budget } else { (m.max_bytes as usize).min(budget) };
                let found = self.rooms.get(&room_id).map(|r| r.members(limit, max_bytes)).unwrap_or_default();
                let Members { members, count, truncated } = found;
                reply(router_reply::Kind::Members(internal::MembersReply { members, count, truncated }))
            }
            Some(router_request::Kind::Sync(s)) => {
                self.gateways.insert(s.gateway.clone(), now);
                let room = self.rooms.entry(room_id).or_default();
                for m in s.members.iter().filter(|m| m.gateway == s.gateway) {
                    room.join(m);
                }
                let (epoch, seq, count) = (room.epoch.clone(), room.seq, room.user_count());
                reply(router_reply::Kind::Join(internal::JoinReply { epoch, seq, count, ..Default::default() }))
            }
            Some(router_request::Kind::Read(r)) => {
                let ns = self.config.namespaces.of(&room_id);
                let Some(room) = self.rooms.get_mut(&room_id) else {
                    return error(ErrorCode::NotMember, "join the room first");
                };
                // Nothing past the room's latest message can have been read.
                let seq = r.seq.min(room.seq);
                if room.reads.mark(&r.user, seq) {
                    crate::metrics::read();
                    match ns.join_leave {
                        JoinLeave::All => {
                            let marker = proto::pb::ReadMarker { room: room_id.clone(), user: r.user, seq };
                            out.push(Action::Emit(event(&room_id, &room.epoch, room_event::Kind::Read(marker))));
                        }
                        JoinLeave::Batched => {
                            open_window(ns, &room_id, room, out);
                            room.batch.read(&r.user, seq);
                        }
                        JoinLeave::Off => {}
                    }
                }
                reply(router_reply::Kind::Ack(internal::Ack {}))
            }
            Some(router_request::Kind::Signal(sig)) => {
                // Nothing stored, no seq: the members present now hear it.
                if let Some(room) = self.rooms.get(&room_id) {
                    crate::metrics::signal();
                    out.push(Action::Emit(event(&room_id, &room.epoch, room_event::Kind::Signal(sig))));
                }
                reply(router_reply::Kind::Ack(internal::Ack {}))
            }
            Some(router_request::Kind::Handoff(_) | router_request::Kind::Pull(_) | router_request::Kind::List(_)) => {
                unreachable!("handled before ownership checks")
            }
        }
    }
}
