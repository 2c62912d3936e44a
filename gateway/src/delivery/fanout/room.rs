//! One room's delivery to its local members, as a state machine: inputs in,
//! frames pushed to members' outboxes, and [`Action`]s out for the task to
//! carry out (calls to the owner, waits for a member's queue). No I/O here.
//!
//! The machine tracks the room's position (epoch, seq) as this gateway has
//! delivered it. An event that skips ahead is held while the gap is filled
//! from the owner's history; if the history no longer reaches, or the epoch
//! changed (a new owner), members get `resync` and delivery goes on from
//! the new position. When the ring gives the room to another router, the
//! members are re-registered with the new owner (`sync`).
//!
//! An epoch the room has left is retired: a late event of it (an old owner
//! paused mid-publish and resumed, its buffered events flushed) is dropped,
//! or members would flap back to the old stream and forth again.
//!
//! A member is either live (it gets each new message) or catching up: a
//! joining member behind the gateway's position, a resume's missed
//! messages, or a member whose queue had no room for a gap fill. Catch-up
//! is paced by the member's queue ([`Outbox::has_room`]) and comes from the
//! recent buffer or, page by page, from the owner's history
//! ([`super::catch_up`]); when the
//! history no longer reaches, that member alone gets `resync`. So a member
//! is never closed for its own recovery, and never holds more than a page.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use proto::client::{Encoding, Event};
use proto::internal::{self, room_event};
use proto::pb;
use router::client::CallError;

use super::buffer::{Budget, Held, Recent};
use super::catch_up::CatchUp;
use super::changes::{Change, Changes};
use super::encoded::Encoded;
use super::joins::{Joining, Joins};
use crate::delivery::outbox::{Out, Outbox, Pushed};
use crate::delivery::topics::Listener;

/// Buffer bounds of one room at one gateway.
#[derive(Debug, Clone)]
pub struct Bounds {
    pub recent_len: usize,
    pub recent_bytes: usize,
    pub held_len: usize,
    pub held_bytes: usize,
    /// Recent membership events kept for members attaching behind them.
    pub changes_len: usize,
    pub changes_bytes: usize,
    /// History pages fetched at once for catching-up members.
    pub fetches: usize,
    /// What all the gateway's rooms keep of recent messages, together.
    pub recent_budget: Arc<Budget>,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            recent_len: 256,
            recent_bytes: 1 << 20,
            held_len: 10_000,
            held_bytes: 8 << 20,
            changes_len: 128,
            changes_bytes: 64 << 10,
            fetches: 8,
            recent_budget: Budget::new(crate::config::DEFAULT_RECENT_BYTES),
        }
    }
}

/// A member joining, with what the owner answered.
pub struct Attach {
    pub conn: Arc<str>,
    /// The member's user: `joined`/`left` about themselves are not news to them.
    pub user: Arc<str>,
    /// The member's `info` claim, for re-registering with a new owner.
    pub info: Bytes,
    pub listener: Listener,
    /// The room's epoch and latest seq in the owner's answer.
    pub epoch: String,
    pub seq: u64,
    /// The room's membership version in the owner's answer.
    pub members_version: u64,
    /// The join reply, queued first.
    pub reply: Option<Bytes>,
    /// A resume: the seq the member had, and the first page of what it
    /// missed (the rest is fetched as it reads).
    pub resume: Option<(u64, Vec<internal::StoredMessage>)>,
    /// The session counted as joining since before it asked the owner.
    pub joining: Joining,
}

/// What the task must do for the machine.
pub enum Action {
    /// Fetch the owner's history after this position, for the gateway's gap;
    /// answer with [`Room::on_fill`].
    Fill(pb::Since),
    /// Re-register these members with the room's owner (cancelling any sync
    /// under way); answer with [`Room::on_sync`].
    Sync(Vec<internal::MemberRef>),
    /// Fetch a page of history after this position for one member; answer
    /// with [`Room::on_fetch`].
    Fetch(Arc<str>, pb::Since),
    /// Call [`Room::on_room`] once this outbox has room for `len` bytes.
    AwaitRoom(Arc<str>, Arc<Outbox>, usize),
}

pub(super) struct Member {
    pub(super) user: Arc<str>,
    pub(super) info: Bytes,
    pub(super) listener: Listener,
    /// Live: deliver only messages after this seq (what it already has).
    pub(super) after: u64,
    pub(super) catch_up: Option<Box<CatchUp>>,
}

/// One room's delivery state at this gateway.
pub struct Room {
    pub(super) room: Arc<str>,
    pub(super) gateway: Arc<str>,
    pub(super) bounds: Bounds,
    /// The owner the members are registered with, as far as we know.
    pub(super) owner: Option<Arc<str>>,
    pub(super) members: HashMap<Arc<str>, Member>,
    /// The last delivered position, once known.
    pub(super) pos: Option<(Arc<str>, u64)>,
    pub(super) recent: Recent,
    pub(super) held: Held,
    /// A gap fill is under way.
    pub(super) filling: bool,
    /// Member fetches under way, and members waiting for a turn.
    pub(super) fetches: usize,
    pub(super) fetch_queue: VecDeque<Arc<str>>,
    /// Recent membership events, for members whose join answer they
    /// overtook: kept only while a session is joining.
    pub(super) changes: Changes,
    pub(super) joins: Joins,
    /// Epochs the room left, newest last: their late events are dropped.
    retired: VecDeque<Arc<str>>,
    /// Writers with messages queued since their last wake-up: woken by
    /// [`Room::wake_writers`] once the task has taken its burst.
    unwoken: Vec<Arc<Outbox>>,
}

/// Retired epochs remembered per room (16 bytes each).
const RETIRED: usize = 4;

impl Room {
    pub fn new(room: Arc<str>, gateway: Arc<str>, owner: Option<Arc<str>>, bounds: Bounds, joins: Joins) -> Self {
        Self {
            room,
            gateway,
            owner,
            members: HashMap::new(),
            pos: None,
            recent: Recent::new(bounds.recent_len, bounds.recent_bytes, bounds.recent_budget.clone()),
            held: Held::new(bounds.held_len, bounds.held_bytes),
            filling: false,
            fetches: 0,
            fetch_queue: VecDeque::new(),
            changes: Changes::new(bounds.changes_len, bounds.changes_bytes),
            joins,
            retired: VecDeque::new(),
            unwoken: Vec::new(),
            bounds,
        }
    }

    /// An event from `sb.room.<room>`.
    pub fn on_event(&mut self, ev: internal::RoomEvent, out: &mut Vec<Action>) {
        if self.retired.iter().any(|e| **e == *ev.epoch) {
            crate::metrics::stale_event();
            return;
        }
        match ev.kind {
            Some(room_event::Kind::Message(m)) => {
                let enc = Arc::new(Encoded::new(self.room.clone(), ev.epoch.into(), m));
                self.on_message(enc, out);
            }
            // Whether a member's own `joined` arrives before or after its
            // attach is a race; leaving the user out makes it deterministic.
            Some(room_event::Kind::Joined(j)) => self.on_change(&ev.epoch, ev.members_version, Change::Joined(j)),
            Some(room_event::Kind::Left(l)) => self.on_change(&ev.epoch, ev.members_version, Change::Left(l)),
            Some(room_event::Kind::MembersChanged(m)) => {
                self.on_change(&ev.epoch, ev.members_version, Change::Changed(m))
            }
            // Unsequenced and never kept: `members` has every marker.
            Some(room_event::Kind::Read(r)) => {
                let event = Event::Read { room: &self.room, user: &r.user, seq: r.seq };
                self.broadcast(|_, _| false, |e| event.encode(e));
            }
            // Best effort and never kept: members attaching later miss it.
            Some(room_event::Kind::Signal(s)) => {
                let sender = (s.gateway == *self.gateway).then_some(s.conn.as_str());
                let event = Event::Signal { room: &self.room, from: &s.from, data: &s.data };
                self.broadcast(|conn, _| Some(conn) == sender, |e| event.encode(e));
            }
            None => {}
        }
    }

    fn on_change(&mut self, epoch: &str, version: u64, change: Change) {
        let about = change.about();
        self.broadcast(|_, m| about == Some(&*m.user), |e| change.encode(e));
        if self.joins.any() {
            self.changes.push(epoch, version, change);
        } else {
            self.changes.release();
        }
    }

    fn on_message(&mut self, enc: Arc<Encoded>, out: &mut Vec<Action>) {
        let seq = enc.seq();
        match &self.pos {
            None => self.deliver(enc, false, out),
            Some((epoch, _)) if **epoch != *enc.epoch => {
                // A new owner started a new stream: continuity is lost.
                self.resync(enc.epoch.clone(), seq.saturating_sub(1));
                self.deliver(enc, false, out);
            }
            Some((_, at)) if seq <= *at => {}
            Some((_, at)) if seq == at + 1 => {
                self.deliver(enc, false, out);
                self.drain_held(out);
            }
            Some(_) => {
                if self.held.insert(enc) {
                    self.start_fill(out);
                } else {
                    self.give_up_on_gap(out);
                }
            }
        }
    }

    /// Delivers the next message to every live member that lacks it. Live
    /// traffic is pushed as it comes (a full queue closes with 4000); a
    /// `paced` one (a gap fill) moves a member without room to catch-up.
    fn deliver(&mut self, enc: Arc<Encoded>, paced: bool, out: &mut Vec<Action>) {
        let seq = enc.seq();
        self.pos = Some((enc.epoch.clone(), seq));
        let (mut json, mut proto) = (None, None);
        let mut delivered = 0u64;
        let mut behind = Vec::new();
        for (conn, m) in self.members.iter_mut().filter(|(_, m)| m.catch_up.is_none() && seq > m.after) {
            let slot = match m.listener.encoding {
                Encoding::Json => &mut json,
                Encoding::Proto => &mut proto,
            };
            let bytes: &Bytes = slot.get_or_insert_with(|| enc.bytes(m.listener.encoding));
            if paced && !m.listener.outbox.has_room(bytes.len()) {
                m.catch_up = Some(Box::new(CatchUp::new(seq - 1)));
                behind.push(conn.clone());
                continue;
            }
            match m.listener.outbox.push_quiet(Out::Data(bytes.clone())) {
                Pushed::Woken => delivered += 1,
                Pushed::Wake => {
                    delivered += 1;
                    self.unwoken.push(m.listener.outbox.clone());
                }
                Pushed::Refused => {}
            }
        }
        crate::metrics::delivered(delivered);
        self.recent.push(enc);
        for conn in behind {
            self.pump(&conn, out);
        }
    }

    /// Wakes the writers of the messages delivered since the last call.
    pub fn wake_writers(&mut self) {
        for outbox in self.unwoken.drain(..) {
            outbox.wake();
        }
    }

    /// Sends an unsequenced event to every member but those `skip` names
    /// (by connection and member).
    fn broadcast(&self, skip: impl Fn(&str, &Member) -> bool, encode: impl Fn(Encoding) -> Bytes) {
        let (mut json, mut proto) = (None, None);
        for (_, m) in self.members.iter().filter(|(conn, m)| !skip(conn, m)) {
            let slot = match m.listener.encoding {
                Encoding::Json => &mut json,
                Encoding::Proto => &mut proto,
            };
            let bytes = slot.get_or_insert_with(|| encode(m.listener.encoding)).clone();
            m.listener.outbox.push(Out::Data(bytes));
        }
    }

    /// Tells every member continuity was lost; delivery goes on after `seq`.
    pub(super) fn resync(&mut self, epoch: Arc<str>, seq: u64) {
        crate::metrics::resync();
        let room = self.room.clone();
        self.broadcast(|_, _| false, |e| Event::Resync { room: &room, epoch: &epoch, seq }.encode(e));
        for m in self.members.values_mut() {
            m.after = seq;
            m.catch_up = None;
        }
        self.held.retain(|m| m.seq() > seq && m.epoch == epoch);
        self.recent.clear();
        self.retired.retain(|e| *e != epoch);
        if let Some((old, _)) = self.pos.take().filter(|(old, _)| *old != epoch) {
            if self.retired.len() == RETIRED {
                self.retired.pop_front();
            }
            self.retired.push_back(old);
        }
        self.pos = Some((epoch, seq));
    }

    fn drain_held(&mut self, out: &mut Vec<Action>) {
        while let Some(seq) = self.held.first().map(|m| m.seq()) {
            let at = self.pos.as_ref().map_or(0, |p| p.1);
            if seq <= at {
                self.held.pop_first();
            } else if seq == at + 1 {
                let enc = self.held.pop_first().expect("present");
                self.deliver(enc, true, out);
            } else {
                self.start_fill(out);
                return;
            }
        }
    }

    /// Asks the owner for what this gateway missed.
    fn start_fill(&mut self, out: &mut Vec<Action>) {
        if self.filling {
            return;
        }
        let Some((epoch, seq)) = &self.pos else { return };
        crate::metrics::gap_fill();
        self.filling = true;
        out.push(Action::Fill(pb::Since { epoch: epoch.to_string(), seq: *seq }));
    }

    /// The owner's answer to a gap fill.
    pub fn on_fill(&mut self, result: Result<internal::HistoryReply, CallError>, out: &mut Vec<Action>) {
        self.filling = false;
        match result {
            Ok(h) if h.recovered && self.pos.as_ref().is_some_and(|(e, _)| **e == *h.epoch) => {
                let epoch: Arc<str> = h.epoch.into();
                for m in h.messages {
                    if self.pos.as_ref().is_some_and(|(_, at)| m.seq == at + 1) {
                        self.deliver(Arc::new(Encoded::new(self.room.clone(), epoch.clone(), m)), true, out);
                    }
                }
                self.drain_held(out);
            }
            Ok(h) => {
                // The owner's history no longer reaches back: start over at its position.
                self.resync(h.epoch.into(), h.seq);
                self.drain_held(out);
            }
            Err(e) => {
                tracing::warn!(error = %e, room = %self.room, "gap fill failed");
                self.give_up_on_gap(out);
            }
        }
    }

    /// Continuity cannot be restored: resync at the first held message.
    fn give_up_on_gap(&mut self, out: &mut Vec<Action>) {
        let Some(first) = self.held.first() else { return };
        let (epoch, seq) = (first.epoch.clone(), first.seq());
        self.resync(epoch, seq - 1);
        self.drain_held(out);
    }

    /// A member leaves.
    pub fn detach(&mut self, conn: &str) {
        self.members.remove(conn);
    }

    /// The ring changed; `owner` is the room's owner now.
    pub fn on_ring_change(&mut self, owner: Option<Arc<str>>, out: &mut Vec<Action>) {
        if owner.is_none() {
            // Cut off from the routers for longer than their TTL: they have
            // likely dropped our members too. Whoever owns the room when the
            // ring is back gets them again, even the same router.
            self.owner = None;
            return;
        }
        if owner == self.owner {
            return;
        }
        self.owner = owner;
        if self.members.is_empty() {
            return;
        }
        let members = self
            .members
            .iter()
            .map(|(conn, m)| internal::MemberRef {
                gateway: self.gateway.to_string(),
                conn: conn.to_string(),
                user: m.user.to_string(),
                info: m.info.clone(),
            })
            .collect();
        crate::metrics::room_sync();
        out.push(Action::Sync(members));
    }

    /// The new owner's position: carry on, fill the gap, or resync.
    pub fn on_sync(&mut self, result: Result<internal::JoinReply, CallError>, out: &mut Vec<Action>) {
        match result {
            Ok(j) => match &self.pos {
                None => self.pos = Some((j.epoch.into(), j.seq)),
                Some((epoch, _)) if **epoch != *j.epoch => {
                    tracing::info!(room = %self.room, "room owner changed epoch: members resync");
                    self.resync(j.epoch.into(), j.seq);
                }
                Some((_, at)) if j.seq > *at => self.start_fill(out),
                Some(_) => {}
            },
            Err(e) => {
                // The next ring change tries again.
                tracing::warn!(room = %self.room, error = %e, "re-registering with the new owner failed");
                self.owner = None;
            }
        }
    }
}

#[cfg(test)]
#[path = "room_tests.rs"]
mod tests;
