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
//! A member is either live (it gets each new message) or catching up: a
//! joining member behind the gateway's position, a resume's missed
//! messages, or a member whose queue had no room for a gap fill. Catch-up
//! is paced by the member's queue ([`Outbox::has_room`]) and comes from the
//! recent buffer or, page by page, from the owner's history; when the
//! history no longer reaches, that member alone gets `resync`. So a member
//! is never closed for its own recovery, and never holds more than a page.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use proto::client::{Encoding, Event};
use proto::internal::{self, room_event};
use proto::pb;
use router::client::CallError;

use super::buffer::{Held, Recent, Tally};
use super::encoded::Encoded;
use crate::delivery::outbox::{Out, Outbox};
use crate::delivery::topics::Listener;

/// Buffer bounds of one room at one gateway.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub recent_len: usize,
    pub recent_bytes: usize,
    pub held_len: usize,
    pub held_bytes: usize,
    /// History pages fetched at once for catching-up members.
    pub fetches: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self { recent_len: 256, recent_bytes: 1 << 20, held_len: 10_000, held_bytes: 8 << 20, fetches: 8 }
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
    /// The join reply, queued first.
    pub reply: Option<Bytes>,
    /// A resume: the seq the member had, and the first page of what it
    /// missed (the rest is fetched as it reads).
    pub resume: Option<(u64, Vec<internal::StoredMessage>)>,
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

struct Member {
    user: Arc<str>,
    info: Bytes,
    listener: Listener,
    /// Live: deliver only messages after this seq (what it already has).
    after: u64,
    catch_up: Option<CatchUp>,
}

/// A member behind the gateway's position.
struct CatchUp {
    /// The last seq it has been given.
    at: u64,
    /// Messages to give it next, in order.
    pending: VecDeque<Arc<Encoded>>,
    tally: Tally,
    /// A page is being fetched (or queued to be).
    fetching: bool,
    /// Waiting for room in its queue.
    waiting: bool,
}

impl CatchUp {
    fn new(at: u64) -> Self {
        Self { at, pending: VecDeque::new(), tally: Tally::new("catch_up"), fetching: false, waiting: false }
    }

    fn extend(&mut self, msgs: impl IntoIterator<Item = Arc<Encoded>>) {
        for m in msgs {
            self.tally.add(m.size());
            self.pending.push_back(m);
        }
    }

    fn pop(&mut self) {
        if let Some(m) = self.pending.pop_front() {
            self.tally.sub(m.size());
        }
    }
}

/// One room's delivery state at this gateway.
pub struct Room {
    room: Arc<str>,
    gateway: Arc<str>,
    bounds: Bounds,
    /// The owner the members are registered with, as far as we know.
    owner: Option<Arc<str>>,
    members: HashMap<Arc<str>, Member>,
    /// The last delivered position, once known.
    pos: Option<(Arc<str>, u64)>,
    recent: Recent,
    held: Held,
    /// A gap fill is under way.
    filling: bool,
    /// Member fetches under way, and members waiting for a turn.
    fetches: usize,
    fetch_queue: VecDeque<Arc<str>>,
}

impl Room {
    pub fn new(room: Arc<str>, gateway: Arc<str>, owner: Option<Arc<str>>, bounds: Bounds) -> Self {
        Self {
            room,
            gateway,
            owner,
            members: HashMap::new(),
            pos: None,
            recent: Recent::new(bounds.recent_len, bounds.recent_bytes),
            held: Held::new(bounds.held_len, bounds.held_bytes),
            filling: false,
            fetches: 0,
            fetch_queue: VecDeque::new(),
            bounds,
        }
    }

    /// An event from `sb.room.<room>`.
    pub fn on_event(&mut self, ev: internal::RoomEvent, out: &mut Vec<Action>) {
        match ev.kind {
            Some(room_event::Kind::Message(m)) => {
                let enc = Arc::new(Encoded::new(self.room.clone(), ev.epoch.into(), m));
                self.on_message(enc, out);
            }
            // Whether a member's own `joined` arrives before or after its
            // attach is a race; leaving the user out makes it deterministic.
            Some(room_event::Kind::Joined(j)) => {
                self.broadcast(Some(&j.user), |e| {
                    Event::Joined { room: &j.room, user: &j.user, info: &j.info }.encode(e)
                });
            }
            Some(room_event::Kind::Left(l)) => {
                self.broadcast(Some(&l.user), |e| Event::Left { room: &l.room, user: &l.user }.encode(e));
            }
            None => {}
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
                m.catch_up = Some(CatchUp::new(seq - 1));
                behind.push(conn.clone());
                continue;
            }
            delivered += m.listener.outbox.push(Out::Data(bytes.clone())) as u64;
        }
        crate::metrics::delivered(delivered);
        self.recent.push(enc);
        for conn in behind {
            self.pump(&conn, out);
        }
    }

    /// Sends an unsequenced event to every member except those of `about`.
    fn broadcast(&self, about: Option<&str>, encode: impl Fn(Encoding) -> Bytes) {
        let (mut json, mut proto) = (None, None);
        for m in self.members.values().filter(|m| about != Some(&*m.user)) {
            let slot = match m.listener.encoding {
                Encoding::Json => &mut json,
                Encoding::Proto => &mut proto,
            };
            let bytes = slot.get_or_insert_with(|| encode(m.listener.encoding)).clone();
            m.listener.outbox.push(Out::Data(bytes));
        }
    }

    /// Tells every member continuity was lost; delivery goes on after `seq`.
    fn resync(&mut self, epoch: Arc<str>, seq: u64) {
        crate::metrics::resync();
        let room = self.room.clone();
        self.broadcast(None, |e| Event::Resync { room: &room, epoch: &epoch, seq }.encode(e));
        for m in self.members.values_mut() {
            m.after = seq;
            m.catch_up = None;
        }
        self.held.retain(|m| m.seq() > seq && m.epoch == epoch);
        self.recent.clear();
        self.pos = Some((epoch, seq));
    }

    /// Tells one member its continuity was lost: it goes on live from the
    /// gateway's position.
    fn resync_member(&mut self, conn: &str) {
        let (Some((epoch, seq)), Some(m)) = (&self.pos, self.members.get_mut(conn)) else { return };
        crate::metrics::resync();
        let frame = Event::Resync { room: &self.room, epoch, seq: *seq }.encode(m.listener.encoding);
        m.listener.outbox.push(Out::Data(frame));
        m.after = *seq;
        m.catch_up = None;
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

    /// A member joins: its reply first, then what it missed, paced, then
    /// live messages.
    pub fn attach(&mut self, a: Attach, out: &mut Vec<Action>) {
        if let Some(reply) = a.reply {
            a.listener.outbox.push(Out::Data(reply));
        }
        let epoch: Arc<str> = a.epoch.into();
        match &self.pos {
            None => self.pos = Some((epoch.clone(), a.seq)),
            // The owner is on a newer stream than we have seen events of.
            Some((e, _)) if *e != epoch => self.resync(epoch.clone(), a.seq),
            Some(_) => {}
        }
        let mut catch_up = CatchUp::new(a.seq);
        if let Some((had, missed)) = a.resume {
            catch_up.at = had;
            catch_up.extend(missed.into_iter().map(|m| Arc::new(Encoded::new(self.room.clone(), epoch.clone(), m))));
        }
        let member = Member { user: a.user, info: a.info, listener: a.listener, after: 0, catch_up: Some(catch_up) };
        self.members.insert(a.conn.clone(), member);
        self.pump(&a.conn, out);
    }

    pub fn detach(&mut self, conn: &str) {
        self.members.remove(conn);
    }

    /// A member's queue has room again.
    pub fn on_room(&mut self, conn: &str, out: &mut Vec<Action>) {
        if let Some(c) = self.members.get_mut(conn).and_then(|m| m.catch_up.as_mut()) {
            c.waiting = false;
        }
        self.pump(conn, out);
    }

    /// A page of history for a catching-up member.
    pub fn on_fetch(&mut self, conn: &str, result: Result<internal::HistoryReply, CallError>, out: &mut Vec<Action>) {
        self.fetches -= 1;
        self.next_fetch(out);
        let Some(c) = self.members.get_mut(conn).and_then(|m| m.catch_up.as_mut()) else { return };
        c.fetching = false;
        let epoch = self.pos.as_ref().map(|p| p.0.clone());
        match result {
            Ok(h) if h.recovered && epoch.as_deref() == Some(h.epoch.as_str()) && h.seq > c.at => {
                let (room, epoch) = (self.room.clone(), epoch.expect("matched"));
                let at = c.at;
                let page = h.messages.into_iter().filter(|m| m.seq > at);
                c.extend(page.map(|m| Arc::new(Encoded::new(room.clone(), epoch.clone(), m))));
                self.pump(conn, out);
            }
            Ok(_) => self.resync_member(conn),
            Err(e) => {
                tracing::debug!(error = %e, room = %self.room, "catch-up page failed");
                self.resync_member(conn);
            }
        }
    }

    /// Gives a catching-up member what it can take now: pending messages
    /// while its queue has room, then more from the recent buffer or the
    /// owner; live again once it reaches the gateway's position.
    fn pump(&mut self, conn: &str, out: &mut Vec<Action>) {
        let Some(m) = self.members.get_mut(conn) else { return };
        let Some(c) = m.catch_up.as_mut() else { return };
        if c.fetching || c.waiting || m.listener.outbox.closing().is_some() {
            return;
        }
        let Some((_, pos)) = &self.pos else { return };
        loop {
            while let Some(next) = c.pending.front() {
                if next.seq() <= c.at {
                    c.pop();
                    continue;
                }
                if next.seq() != c.at + 1 {
                    // Not the next one: fetch from where the member is.
                    while c.pending.front().is_some() {
                        c.pop();
                    }
                    break;
                }
                let bytes = next.bytes(m.listener.encoding);
                if !m.listener.outbox.has_room(bytes.len()) {
                    c.waiting = true;
                    out.push(Action::AwaitRoom(conn.into(), m.listener.outbox.clone(), bytes.len()));
                    return;
                }
                m.listener.outbox.push(Out::Data(bytes));
                c.at = next.seq();
                c.pop();
            }
            if c.at >= *pos {
                m.after = c.at;
                m.catch_up = None;
                return;
            }
            match self.recent.after(c.at) {
                Some(more) => c.extend(more.cloned()),
                None => break,
            }
        }
        c.fetching = true;
        self.fetch_queue.push_back(conn.into());
        self.next_fetch(out);
    }

    /// Starts queued member fetches, a few at a time.
    fn next_fetch(&mut self, out: &mut Vec<Action>) {
        while self.fetches < self.bounds.fetches {
            let Some(conn) = self.fetch_queue.pop_front() else { return };
            let (Some((epoch, _)), Some(c)) =
                (&self.pos, self.members.get(&conn).and_then(|m| m.catch_up.as_ref()).filter(|c| c.fetching))
            else {
                continue;
            };
            self.fetches += 1;
            out.push(Action::Fetch(conn.clone(), pb::Since { epoch: epoch.to_string(), seq: c.at }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const E: &str = "e1";

    fn message(epoch: &str, seq: u64, len: usize) -> internal::RoomEvent {
        let m =
            internal::StoredMessage { seq, from: "u".into(), data: format!("\"{}\"", "x".repeat(len)).into(), ts: 1 };
        internal::RoomEvent { room: "r".into(), epoch: epoch.into(), kind: Some(room_event::Kind::Message(m)) }
    }

    fn stored(seqs: std::ops::RangeInclusive<u64>) -> Vec<internal::StoredMessage> {
        sized(seqs, 1)
    }

    fn sized(seqs: std::ops::RangeInclusive<u64>, len: usize) -> Vec<internal::StoredMessage> {
        let data = Bytes::from(format!("\"{}\"", "x".repeat(len)));
        seqs.map(|seq| internal::StoredMessage { seq, from: "u".into(), data: data.clone(), ts: 1 }).collect()
    }

    fn history(epoch: &str, seq: u64, recovered: bool, msgs: Vec<internal::StoredMessage>) -> internal::HistoryReply {
        internal::HistoryReply { epoch: epoch.into(), seq, recovered, messages: msgs, truncated: false }
    }

    /// A room with an owner, and the outboxes of its members.
    struct Case {
        room: Room,
        outboxes: HashMap<&'static str, Arc<Outbox>>,
        actions: Vec<Action>,
    }

    impl Case {
        fn new() -> Self {
            Self::with(Bounds::default())
        }

        fn with(bounds: Bounds) -> Self {
            let room = Room::new("r".into(), "gw".into(), Some("r-1".into()), bounds);
            Self { room, outboxes: HashMap::new(), actions: Vec::new() }
        }

        /// Attaches `conn` (user of the same name) with the owner's answer
        /// (epoch, seq) and an optional resume.
        fn attach(
            &mut self,
            conn: &'static str,
            queue: usize,
            seq: u64,
            resume: Option<(u64, Vec<internal::StoredMessage>)>,
        ) {
            let outbox = Arc::new(Outbox::new(queue));
            self.outboxes.insert(conn, outbox.clone());
            let a = Attach {
                conn: conn.into(),
                user: conn.into(),
                info: Bytes::new(),
                listener: Listener { outbox, encoding: Encoding::Json },
                epoch: E.into(),
                seq,
                reply: None,
                resume,
            };
            self.room.attach(a, &mut self.actions);
        }

        fn event(&mut self, ev: internal::RoomEvent) {
            self.room.on_event(ev, &mut self.actions);
        }

        /// What `conn` was sent since last asked: message seqs, or the type.
        fn got(&self, conn: &str) -> Vec<String> {
            self.outboxes[conn]
                .take()
                .frames
                .into_iter()
                .map(|o| match o {
                    Out::Data(b) => {
                        let v: Value = serde_json::from_slice(&b).unwrap();
                        match v["type"].as_str().unwrap() {
                            "message" => v["seq"].to_string(),
                            "resync" => format!("resync@{}", v["seq"]),
                            t => t.to_owned(),
                        }
                    }
                    other => format!("{other:?}"),
                })
                .collect()
        }

        /// The actions since last asked, named.
        fn did(&mut self) -> Vec<String> {
            self.actions
                .drain(..)
                .map(|a| match a {
                    Action::Fill(s) => format!("fill@{}", s.seq),
                    Action::Sync(m) => format!("sync:{}", m.len()),
                    Action::Fetch(c, s) => format!("fetch:{c}@{}", s.seq),
                    Action::AwaitRoom(c, _, _) => format!("await:{c}"),
                })
                .collect()
        }
    }

    fn seqs(s: &[u64]) -> Vec<String> {
        s.iter().map(u64::to_string).collect()
    }

    #[test]
    fn live_messages_in_order_without_duplicates_gaps_held_until_filled() {
        // (events as seqs, then what the member got and what was asked).
        let cases: &[(&[u64], &[&str], &[&str])] = &[
            (&[1, 2, 3], &["1", "2", "3"], &[]),
            (&[1, 1, 2, 1], &["1", "2"], &[]),
            (&[1, 3, 4], &["1"], &["fill@1"]),
            (&[2], &[], &["fill@0"]),
        ];
        for (events, got, did) in cases {
            let mut c = Case::new();
            c.attach("a", 1 << 20, 0, None);
            for &seq in *events {
                c.event(message(E, seq, 1));
            }
            assert_eq!(c.got("a"), got.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{events:?}");
            assert_eq!(c.did(), did.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{events:?}");
        }
    }

    #[test]
    fn a_fill_delivers_the_gap_then_what_was_held() {
        let mut c = Case::new();
        c.attach("a", 1 << 20, 0, None);
        c.event(message(E, 1, 1));
        c.event(message(E, 4, 1));
        c.event(message(E, 5, 1));
        assert_eq!(c.did(), ["fill@1"]);
        c.event(message(E, 6, 1));
        assert!(c.did().is_empty(), "one fill at a time");
        c.room.on_fill(Ok(history(E, 5, true, stored(2..=5))), &mut c.actions);
        assert_eq!(c.got("a"), seqs(&[1, 2, 3, 4, 5, 6]));
        assert!(c.did().is_empty());
    }

    #[test]
    fn a_fill_that_cannot_reach_back_or_fails_ends_in_resync() {
        // The owner's history no longer reaches: resync at its position.
        let mut c = Case::new();
        c.attach("a", 1 << 20, 0, None);
        c.event(message(E, 1, 1));
        c.event(message(E, 9, 1));
        c.did();
        c.room.on_fill(Ok(history(E, 9, false, vec![])), &mut c.actions);
        assert_eq!(c.got("a"), ["1", "resync@9"], "9 is at the owner's position: not delivered again");
        // A failed fill: resync just before the first held message.
        let mut c = Case::new();
        c.attach("a", 1 << 20, 0, None);
        c.event(message(E, 1, 1));
        c.event(message(E, 5, 1));
        c.event(message(E, 6, 1));
        c.did();
        c.room.on_fill(Err(CallError::Unavailable), &mut c.actions);
        assert_eq!(c.got("a"), ["1", "resync@4", "5", "6"]);
    }

    #[test]
    fn a_new_epoch_or_too_much_held_ends_in_resync() {
        let mut c = Case::new();
        c.attach("a", 1 << 20, 0, None);
        c.event(message(E, 1, 1));
        c.event(message("e2", 1, 1));
        assert_eq!(c.got("a"), ["1", "resync@0", "1"]);
        let bounds = Bounds { held_len: 2, ..Bounds::default() };
        let mut c = Case::with(bounds);
        c.attach("a", 1 << 20, 0, None);
        c.event(message(E, 1, 1));
        for seq in [3, 4, 5] {
            c.event(message(E, seq, 1));
        }
        assert_eq!(c.got("a"), ["1", "resync@2", "3", "4", "5"], "given up on the gap past the held bound");
    }

    #[test]
    fn ring_changes_resync_the_members_with_the_new_owner() {
        let mut c = Case::new();
        c.room.on_ring_change(Some("r-2".into()), &mut c.actions);
        assert!(c.did().is_empty(), "no members, nothing to sync");
        c.attach("a", 1 << 20, 0, None);
        c.attach("b", 1 << 20, 0, None);
        c.room.on_ring_change(Some("r-2".into()), &mut c.actions);
        assert!(c.did().is_empty(), "the same owner");
        c.room.on_ring_change(Some("r-3".into()), &mut c.actions);
        assert_eq!(c.did(), ["sync:2"]);
        // (answer, what members get, what is asked)
        type SyncCase<'a> = (Result<(&'a str, u64), ()>, &'a [&'a str], &'a [&'a str]);
        let cases: &[SyncCase] = &[
            (Ok((E, 0)), &[], &[]),
            (Ok((E, 3)), &[], &["fill@0"]),
            (Ok(("e2", 7)), &["resync@7"], &[]),
            (Err(()), &[], &[]),
        ];
        for (answer, got, did) in cases {
            let mut c = Case::new();
            c.attach("a", 1 << 20, 0, None);
            let reply = answer
                .map(|(epoch, seq)| internal::JoinReply { epoch: epoch.into(), seq, ..Default::default() })
                .map_err(|_| CallError::Unavailable);
            c.room.on_sync(reply, &mut c.actions);
            assert_eq!(c.got("a"), got.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{answer:?}");
            assert_eq!(c.did(), did.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{answer:?}");
        }
        // After a failed sync the same owner is synced again.
        let mut c = Case::new();
        c.attach("a", 1 << 20, 0, None);
        c.room.on_sync(Err(CallError::Unavailable), &mut c.actions);
        c.room.on_ring_change(Some("r-1".into()), &mut c.actions);
        assert_eq!(c.did(), ["sync:1"]);
        // Cut off (no owner), then back to the same owner: sync again.
        c.room.on_ring_change(None, &mut c.actions);
        c.room.on_ring_change(Some("r-1".into()), &mut c.actions);
        assert_eq!(c.did(), ["sync:1"]);
    }

    #[test]
    fn joined_and_left_go_to_the_others() {
        let mut c = Case::new();
        c.attach("a", 1 << 20, 0, None);
        c.attach("b", 1 << 20, 0, None);
        let joined = pb::MemberJoined { room: "r".into(), user: "a".into(), info: Bytes::new() };
        c.event(internal::RoomEvent {
            room: "r".into(),
            epoch: E.into(),
            kind: Some(room_event::Kind::Joined(joined)),
        });
        assert_eq!((c.got("a"), c.got("b")), (vec![], vec!["joined".to_owned()]));
        c.room.detach("b");
        let left = pb::MemberLeft { room: "r".into(), user: "x".into() };
        c.event(internal::RoomEvent { room: "r".into(), epoch: E.into(), kind: Some(room_event::Kind::Left(left)) });
        assert_eq!((c.got("a"), c.got("b")), (vec!["left".to_owned()], vec![]));
    }

    #[test]
    fn a_member_attaching_behind_catches_up_from_recent_or_the_owner() {
        let mut c = Case::new();
        c.attach("a", 1 << 20, 0, None);
        for seq in 1..=5 {
            c.event(message(E, seq, 1));
        }
        // Its answer said 3: 4 and 5 come from the recent buffer.
        c.attach("b", 1 << 20, 3, None);
        assert_eq!(c.got("b"), seqs(&[4, 5]));
        assert!(c.did().is_empty());
        c.event(message(E, 6, 1));
        assert_eq!(c.got("b"), seqs(&[6]), "then live");
        // Behind what the recent buffer holds: a page from the owner.
        let bounds = Bounds { recent_len: 2, ..Bounds::default() };
        let mut c = Case::with(bounds);
        c.attach("a", 1 << 20, 0, None);
        for seq in 1..=5 {
            c.event(message(E, seq, 1));
        }
        c.attach("b", 1 << 20, 1, None);
        assert_eq!(c.did(), ["fetch:b@1"]);
        c.event(message(E, 6, 1));
        assert!(c.got("b").is_empty(), "nothing live while catching up");
        c.room.on_fetch("b", Ok(history(E, 6, true, stored(2..=6))), &mut c.actions);
        assert_eq!(c.got("b"), seqs(&[2, 3, 4, 5, 6]));
        c.event(message(E, 7, 1));
        assert_eq!(c.got("b"), seqs(&[7]));
    }

    #[test]
    fn a_resume_is_paced_by_the_members_queue() {
        let mut c = Case::new();
        c.attach("a", 1 << 20, 0, None);
        for seq in 1..=6 {
            c.event(message(E, seq, 300));
        }
        // A 1 KiB queue takes one 300-byte message at a time (half the bound).
        c.attach("b", 1024, 6, Some((0, sized(1..=4, 300))));
        assert_eq!(c.got("b"), seqs(&[1]));
        assert_eq!(c.did(), ["await:b"]);
        c.room.on_room("b", &mut c.actions);
        assert_eq!(c.got("b"), seqs(&[2]), "one more per drained queue");
        assert_eq!(c.did(), ["await:b"]);
        for _ in 0..10 {
            c.got("b");
            c.room.on_room("b", &mut c.actions);
        }
        c.event(message(E, 7, 1));
        assert_eq!(c.got("b"), seqs(&[7]), "caught up from recent (5, 6), then live");
        assert!(c.outboxes["b"].closing().is_none(), "never closed for its own recovery");
    }

    #[test]
    fn a_paced_fill_moves_a_member_without_room_to_catch_up() {
        let mut c = Case::new();
        c.attach("a", 1 << 20, 0, None);
        c.attach("small", 1024, 0, None);
        c.event(message(E, 1, 1));
        c.event(message(E, 4, 1));
        c.did();
        c.got("a");
        c.got("small");
        c.room.on_fill(Ok(history(E, 4, true, sized(2..=4, 400))), &mut c.actions);
        assert_eq!(c.got("a"), seqs(&[2, 3, 4]));
        assert_eq!(c.got("small"), seqs(&[2]), "the rest waits for its queue");
        assert_eq!(c.did(), ["await:small"]);
        c.room.on_room("small", &mut c.actions);
        assert_eq!(c.got("small"), seqs(&[3]));
        c.did();
        c.room.on_room("small", &mut c.actions);
        assert_eq!(c.got("small"), seqs(&[4]));
        c.event(message(E, 5, 1));
        assert_eq!(c.got("small"), seqs(&[5]));
    }

    #[test]
    fn a_catch_up_the_history_no_longer_covers_resyncs_that_member_alone() {
        let bounds = Bounds { recent_len: 1, fetches: 1, ..Bounds::default() };
        let mut c = Case::with(bounds);
        c.attach("a", 1 << 20, 0, None);
        for seq in 1..=5 {
            c.event(message(E, seq, 1));
        }
        c.attach("b", 1 << 20, 1, None);
        c.attach("c", 1 << 20, 2, None);
        assert_eq!(c.did(), ["fetch:b@1"], "one fetch at a time; c waits its turn");
        c.room.on_fetch("b", Ok(history(E, 5, false, vec![])), &mut c.actions);
        assert_eq!(c.got("b"), ["resync@5"]);
        assert_eq!(c.did(), ["fetch:c@2"]);
        c.room.on_fetch("c", Err(CallError::Unavailable), &mut c.actions);
        assert_eq!(c.got("c"), ["resync@5"]);
        assert!(c.got("a").len() == 5, "the others are untouched");
        c.event(message(E, 6, 1));
        for m in ["a", "b", "c"] {
            assert_eq!(c.got(m), seqs(&[6]), "{m} is live");
        }
        // A member gone before its page arrives is simply forgotten.
        c.attach("d", 1 << 20, 1, None);
        assert_eq!(c.did(), ["fetch:d@1"]);
        c.room.detach("d");
        c.room.on_fetch("d", Ok(history(E, 6, true, stored(2..=6))), &mut c.actions);
        assert!(c.did().is_empty());
    }
}
