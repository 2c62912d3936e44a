//! Rooms moving between owners: pushed by the old owner when the ring
//! moves them, pulled by the new one when a request comes first, and
//! started afresh only when neither can find the state.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bus::BusError;
use proto::client::ErrorCode;
use proto::internal::{self, router_reply};

use super::state::{error, flush, reply, Action, Cluster, Moved, Owner, Pull};
use crate::room::Room;

/// Room state sent in one bus message (NATS's default payload cap is 1 MiB).
pub const HANDOFF_BYTES: usize = 768 * 1024;

impl Owner {
    /// Installs a room pushed by its previous owner; requests that waited
    /// for it are served after the acknowledgement.
    pub(super) fn accept(
        &mut self,
        room: String,
        h: internal::HandoffRequest,
        c: &Cluster,
        now: Instant,
    ) -> internal::RouterReply {
        let Some(state) = h.state else { return error(ErrorCode::BadRequest, "handoff without state") };
        if self.rooms.contains_key(&room) {
            // We started serving it already (its push came too late): keep ours.
            tracing::warn!(room, from = h.from, "handoff for a room already served here: keeping ours");
        } else {
            tracing::debug!(room, from = h.from, epoch = state.epoch, seq = state.seq, "room handed over");
            crate::metrics::handoff("in");
            self.install(&room, state, now);
            self.moved.remove(&room);
        }
        if let Some(waiting) = self.pulling.remove(&room) {
            let mut later = Vec::new();
            self.resume(waiting, c, now, &mut later);
            // After the acknowledgement, which the caller queues first.
            self.deferred.extend(later);
        }
        reply(router_reply::Kind::Ack(internal::Ack {}))
    }

    /// Hands a room's state to `to`, which now owns it and asks for it.
    pub(super) fn give_away(
        &mut self,
        room: String,
        to: String,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> internal::RouterReply {
        let pull = match self.hand_over(&room, out) {
            Some(state) => {
                self.moved.insert(room, Moved { to, at: now, state: None });
                internal::PullReply { state: Some(state), moved_to: String::new() }
            }
            None => match self.moved.get(&room) {
                // Pushed but not yet acknowledged: the same state, now.
                Some(Moved { to: moved_to, state: Some(state), .. }) if *moved_to == to => {
                    internal::PullReply { state: Some(state.clone()), moved_to: String::new() }
                }
                Some(m) => internal::PullReply { state: None, moved_to: m.to.clone() },
                None => internal::PullReply::default(),
            },
        };
        reply(router_reply::Kind::Pull(pull))
    }

    pub(super) fn install(&mut self, room: &str, state: internal::RoomState, now: Instant) {
        for m in &state.members {
            self.gateways.entry(m.gateway.clone()).or_insert(now);
        }
        let history = self.config.namespaces.of(room).history;
        let installed = Room::from_state(room, state, now, &history, &mut self.budget);
        self.rooms.insert(room.to_owned(), installed);
        self.enforce_budget();
    }

    /// Evicts the oldest messages of all rooms while over the budget.
    pub(super) fn enforce_budget(&mut self) {
        while let Some(id) = self.budget.over().map(str::to_owned) {
            let Some(room) = self.rooms.get_mut(&id) else {
                tracing::error!(room = id, "history budget names a room not held here");
                return;
            };
            room.evict_oldest(&id, &mut self.budget);
        }
    }

    /// The answer to a pull of `room` from `from`.
    pub fn on_pulled(
        &mut self,
        pull: Pull,
        result: Result<internal::PullReply, BusError>,
        c: &Cluster,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Pull { room, from, hops } = pull;
        if !self.pulling.contains_key(&room) {
            return; // its push arrived first
        }
        match result {
            Ok(internal::PullReply { state: Some(state), .. }) => {
                tracing::debug!(room, from, "room pulled from its previous owner");
                crate::metrics::handoff("in");
                if !self.rooms.contains_key(&room) {
                    self.install(&room, state, now);
                }
            }
            // Its push to us is under way: give it a moment.
            Ok(internal::PullReply { moved_to, .. }) if moved_to == self.id => {
                out.push(Action::PushOverdue(room));
                return;
            }
            Ok(internal::PullReply { moved_to, .. }) if !moved_to.is_empty() && hops < 2 => {
                out.push(Action::Pull(Pull { room, from: moved_to, hops: hops + 1 }));
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(room, from, error = %e, "pull failed: starting the room afresh"),
        }
        self.start_afresh(&room, c, now, out);
    }

    /// The push we were told to expect did not come.
    pub fn on_push_overdue(&mut self, room: String, c: &Cluster, now: Instant, out: &mut Vec<Action>) {
        if self.pulling.contains_key(&room) {
            tracing::warn!(room, "expected handoff never came: starting the room afresh");
            self.start_afresh(&room, c, now, out);
        }
    }

    /// Ends a pull: the room is served from here on, with what arrived or
    /// from a fresh start, and its waiting requests go first.
    fn start_afresh(&mut self, room: &str, c: &Cluster, now: Instant, out: &mut Vec<Action>) {
        self.rooms.entry(room.to_owned()).or_default();
        let waiting = self.pulling.remove(room).unwrap_or_default();
        self.resume(waiting, c, now, out);
    }

    /// The answer to a push: acknowledged, or not (then the room is taken
    /// back for another try, unless it came back meanwhile).
    pub fn on_pushed(&mut self, room: String, refused: Option<internal::RoomState>, now: Instant) {
        self.stats.pushing.fetch_sub(1, Ordering::Relaxed);
        match refused {
            None => {
                if let Some(m) = self.moved.get_mut(&room) {
                    m.state = None;
                }
            }
            Some(state) if !self.rooms.contains_key(&room) => {
                tracing::warn!(room, "handoff not acknowledged: keeping the room for another try");
                self.moved.remove(&room);
                self.install(&room, state, now);
            }
            Some(_) => {}
        }
    }

    /// Pushes every room the ring now gives to another router. A room with
    /// an append in flight goes once it is answered, so its state carries
    /// the store's fence after it.
    pub(super) fn push_moved(&mut self, c: &Cluster, now: Instant, out: &mut Vec<Action>) {
        let moving: Vec<(String, String)> = self
            .rooms
            .keys()
            .filter(|r| !self.writing(r))
            .filter_map(|r| match c.ring.owner(r) {
                Some(o) if o != self.id => Some((r.clone(), o.to_owned())),
                _ => None,
            })
            .collect();
        for (room, to) in moving {
            self.push(room, to, c, now, out);
        }
    }

    /// Pushes `room` if the ring gave it to another router meanwhile.
    pub(super) fn hand_over_if_moved(&mut self, room: &str, c: &Cluster, now: Instant, out: &mut Vec<Action>) {
        match c.ring.owner(room) {
            Some(to) if to != self.id && self.rooms.contains_key(room) => {
                self.push(room.to_owned(), to.to_owned(), c, now, out)
            }
            _ => {}
        }
    }

    fn push(&mut self, room: String, to: String, c: &Cluster, now: Instant, out: &mut Vec<Action>) {
        let state = self.hand_over(&room, out).expect("held");
        self.drop_writes(&room, c, out);
        self.moved.insert(room.clone(), Moved { to: to.clone(), at: now, state: Some(state.clone()) });
        self.stats.pushing.fetch_add(1, Ordering::Relaxed);
        out.push(Action::Push { room, to, state });
    }

    /// Takes a room out for its new owner: the joins and leaves of its
    /// current window are announced first (a batch never travels).
    fn hand_over(&mut self, room: &str, out: &mut Vec<Action>) -> Option<internal::RoomState> {
        let mut held = self.rooms.remove(room)?;
        flush(room, &mut held, out);
        crate::metrics::handoff("out");
        let state = held.to_state(HANDOFF_BYTES);
        held.release(room, &mut self.budget);
        Some(state)
    }
}
