//! Rooms kept in a durable store (`--history-store jetstream`): loaded on
//! their first request, and published one fenced append at a time.
//!
//! A room this owner does not hold is loaded from the store before any
//! request is served (they wait, as for a pull), so after a crash the new
//! owner continues the same epoch and seqs. A publish is queued per room;
//! the head of the queue is appended, naming the room's fence, and only
//! once the store acknowledged it does the owner assign the seq, keep the
//! message, emit the event and reply. One append in flight per room keeps
//! seqs gap-free and the fence exact (the per-room ceiling is one store
//! round trip per message).
//!
//! An append refused by the fence means the room was written since our last
//! write: by another owner (then we step down: `NotOwner` to everyone
//! waiting) or nobody (our newest message aged out of the stream). The room
//! is reloaded to tell which: same entry revision and no newer message is
//! the latter, and the room is served again with its members. An append
//! whose outcome is unknown (timeout) is answered `unavailable` and the
//! room reloaded, so the next write starts from what was kept.

use std::collections::VecDeque;
use std::time::Instant;

use bus::Message;
use proto::client::ErrorCode;
use proto::internal::{self, room_event, router_reply, StoreFence};

use super::state::{error, event, not_owner, reply, Action, Cluster, Owner};
use crate::room::Room;
use crate::store::{Append, Loaded, StoreError};

/// Publishes waiting in one room for the store, at most.
pub const MAX_QUEUED: usize = 1_000;
/// Bytes of publishes waiting in one room for the store, at most.
pub const MAX_QUEUED_BYTES: usize = 4 << 20;

/// One room's publishes waiting for the store.
#[derive(Default)]
pub(super) struct Writes {
    /// The append in flight, by id.
    busy: Option<u64>,
    queue: VecDeque<(Message, internal::PublishRequest)>,
    bytes: usize,
}

/// A room whose append was refused or lost, while it is reloaded.
pub(super) struct Reloading {
    /// The room as we held it: its members are kept across the reload.
    room: Room,
    /// Whether the fence refused us: then a newer writer means step down.
    fenced: bool,
}

impl Owner {
    /// Holds `msg` while `room` is loaded from the store.
    pub(super) fn start_load(&mut self, room: String, waiting: Vec<Message>, out: &mut Vec<Action>) {
        let limits = self.config.namespaces.of(&room).history;
        self.pulling.insert(room.clone(), waiting);
        out.push(Action::Load { room, epoch: crate::room::new_epoch(), limits });
    }

    /// The store's answer to a load.
    pub fn on_loaded(
        &mut self,
        room: String,
        result: Result<Loaded, StoreError>,
        c: &Cluster,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let reloading = self.reloading.remove(&room);
        let Some(waiting) = self.pulling.remove(&room) else { return };
        let loaded = match result {
            Ok(loaded) => loaded,
            Err(e) => {
                crate::metrics::store_load("error");
                tracing::warn!(room, error = %e, "room not loaded from the store");
                let answer = match e {
                    StoreError::Fenced => not_owner(&c.ring),
                    StoreError::Unavailable(_) => error(ErrorCode::Unavailable, "the history store is unavailable"),
                };
                out.extend(waiting.into_iter().map(|msg| Action::Reply(msg, answer.clone())));
                return;
            }
        };
        crate::metrics::store_load("ok");
        if let Some(Reloading { room: ours, fenced: true }) = &reloading {
            if loaded.fence.revision != ours.fence.revision || loaded.fence.stream_seq > ours.fence.stream_seq {
                // Another owner wrote: its ring says the room is its own.
                crate::metrics::store_stepdown();
                tracing::warn!(room, "another owner wrote this room: stepping down");
                out.extend(waiting.into_iter().map(|msg| Action::Reply(msg, not_owner(&c.ring))));
                return;
            }
        }
        if !self.rooms.contains_key(&room) {
            let state = internal::RoomState {
                epoch: loaded.epoch,
                seq: loaded.seq,
                history: loaded.history,
                reads: loaded.reads,
                fence: Some(loaded.fence),
                // Versions only grow within an epoch, across owners too.
                members_version: proto::now_ms() as u64 * 1_000,
                members: Vec::new(),
            };
            self.install(&room, state, now);
            if let (Some(r), Some(Reloading { room: ours, .. })) = (self.rooms.get_mut(&room), reloading) {
                r.adopt_members(ours);
            }
        }
        self.resume(waiting, c, now, out);
    }

    /// Queues a publish for the store; `None` when it waits.
    pub(super) fn enqueue(
        &mut self,
        room: String,
        msg: &Message,
        p: internal::PublishRequest,
        c: &Cluster,
        out: &mut Vec<Action>,
    ) -> Option<internal::RouterReply> {
        let w = self.writes.entry(room.clone()).or_default();
        if w.queue.len() >= MAX_QUEUED || w.bytes + p.data.len() > MAX_QUEUED_BYTES {
            crate::metrics::store_append("queue_full");
            return Some(error(ErrorCode::Unavailable, "too many publishes in this room are waiting for the store"));
        }
        w.bytes += p.data.len();
        crate::metrics::store_queue_bytes(p.data.len() as f64);
        w.queue.push_back((msg.clone(), p));
        self.pump(&room, c, out);
        None
    }

    /// Starts the room's next append unless one is in flight.
    fn pump(&mut self, room_id: &str, c: &Cluster, out: &mut Vec<Action>) {
        let Some(w) = self.writes.get_mut(room_id) else { return };
        if w.busy.is_some() {
            return;
        }
        while let Some((msg, p)) = w.queue.pop_front() {
            w.bytes -= p.data.len();
            crate::metrics::store_queue_bytes(-(p.data.len() as f64));
            let Some(room) = self.rooms.get(room_id) else {
                out.push(Action::Reply(msg, not_owner(&c.ring)));
                continue;
            };
            if let Some(seq) = room.published(&p.from, &p.idempotency_key) {
                let publish = internal::PublishReply { epoch: room.epoch.clone(), seq, duplicate: true };
                out.push(Action::Reply(msg, reply(router_reply::Kind::Publish(publish))));
                continue;
            }
            let stored = internal::StoredMessage {
                seq: room.seq + 1,
                from: p.from,
                data: p.data,
                ts: proto::now_ms(),
                idempotency_key: p.idempotency_key,
            };
            self.next_write += 1;
            w.busy = Some(self.next_write);
            let append = Append {
                room: room_id.to_owned(),
                epoch: room.epoch.clone(),
                msg: stored,
                ttl: self.config.namespaces.of(room_id).history.max_age,
                fence: room.fence,
            };
            out.push(Action::Append { id: self.next_write, msg, append });
            return;
        }
        self.writes.remove(room_id);
    }

    /// The store's answer to an append.
    #[allow(clippy::too_many_arguments)]
    pub fn on_appended(
        &mut self,
        id: u64,
        msg: Message,
        append: Append,
        result: Result<StoreFence, StoreError>,
        c: &Cluster,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let room_id = append.room.clone();
        if let Some(w) = self.writes.get_mut(&room_id).filter(|w| w.busy == Some(id)) {
            w.busy = None;
        }
        match result {
            Ok(fence) => {
                crate::metrics::store_append("ok");
                crate::metrics::published();
                let mut stored = append.msg;
                let (epoch, seq) = (append.epoch, stored.seq);
                match self.rooms.get_mut(&room_id).filter(|r| r.epoch == epoch && r.seq + 1 == seq) {
                    Some(room) => {
                        room.fence = fence;
                        let history = self.config.namespaces.of(&room_id).history;
                        room.commit(&room_id, stored.clone(), now, &history, &mut self.budget);
                        self.enforce_budget();
                    }
                    // Stored, but the room left us meanwhile: it is in the
                    // stream in order, and members hear it all the same.
                    None => tracing::debug!(room = room_id, seq, "stored after the room left this owner"),
                }
                stored.idempotency_key.clear();
                out.push(Action::Emit(event(&room_id, &epoch, room_event::Kind::Message(stored))));
                let publish = internal::PublishReply { epoch, seq, duplicate: false };
                out.push(Action::Reply(msg, reply(router_reply::Kind::Publish(publish))));
                self.hand_over_if_moved(&room_id, c, now, out);
                self.pump(&room_id, c, out);
            }
            Err(e) => {
                let fenced = e == StoreError::Fenced;
                crate::metrics::store_append(if fenced { "fenced" } else { "error" });
                tracing::warn!(room = room_id, error = %e, "append refused: reloading the room");
                // Not stored when fenced (the stream refused it first): it
                // waits for the reload. Unknown otherwise: the caller retries.
                let mut waiting = Vec::new();
                if fenced {
                    waiting.push(msg);
                } else {
                    out.push(Action::Reply(msg, error(ErrorCode::Unavailable, "the history store did not answer")));
                }
                if self.rooms.contains_key(&room_id) {
                    self.reload(&room_id, fenced, waiting, out);
                } else {
                    // The room left us meanwhile: its owner answers from now on.
                    out.extend(waiting.into_iter().map(|msg| Action::Reply(msg, not_owner(&c.ring))));
                    self.drop_writes(&room_id, c, out);
                }
            }
        }
    }

    /// Drops `room`'s state and loads it again; queued publishes wait.
    fn reload(&mut self, room_id: &str, fenced: bool, mut waiting: Vec<Message>, out: &mut Vec<Action>) {
        if let Some(w) = self.writes.remove(room_id) {
            crate::metrics::store_queue_bytes(-(w.bytes as f64));
            waiting.extend(w.queue.into_iter().map(|(msg, _)| msg));
        }
        if let Some(mut room) = self.rooms.remove(room_id) {
            room.release(room_id, &mut self.budget);
            self.reloading.insert(room_id.to_owned(), Reloading { room, fenced });
        }
        match self.pulling.get_mut(room_id) {
            Some(already) => already.extend(waiting),
            None => self.start_load(room_id.to_owned(), waiting, out),
        }
    }

    /// Answers every queued publish `NotOwner`: the room is gone from here.
    pub(super) fn drop_writes(&mut self, room_id: &str, c: &Cluster, out: &mut Vec<Action>) {
        if let Some(w) = self.writes.get_mut(room_id) {
            crate::metrics::store_queue_bytes(-(w.bytes as f64));
            w.bytes = 0;
            out.extend(w.queue.drain(..).map(|(msg, _)| Action::Reply(msg, not_owner(&c.ring))));
            if w.busy.is_none() {
                self.writes.remove(room_id);
            }
        }
    }

    /// Whether `room` has an append in flight (it is handed over after).
    pub(super) fn writing(&self, room_id: &str) -> bool {
        self.writes.get(room_id).is_some_and(|w| w.busy.is_some())
    }
}
