//! Members catching up: a resume's missed messages, a join answered
//! behind the gateway's position, a member without room for a gap fill.
//! Catch-up is paced by the member's queue ([`Outbox::has_room`]) and comes
//! from the room's recent buffer or, a page at a time, from the owner's
//! history; a member it cannot cover any more gets `resync` alone.

use std::collections::VecDeque;
use std::sync::Arc;

use proto::client::Event;
use proto::internal;
use proto::pb;
use router::client::CallError;

use super::buffer::Tally;
use super::encoded::Encoded;
use super::room::{Action, Attach, Member, Room};
use crate::delivery::outbox::Out;

/// A member behind the gateway's position.
pub(super) struct CatchUp {
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
    pub(super) fn new(at: u64) -> Self {
        Self { at, pending: VecDeque::new(), tally: Tally::new("catch_up"), fetching: false, waiting: false }
    }

    pub(super) fn extend(&mut self, msgs: impl IntoIterator<Item = Arc<Encoded>>) {
        for m in msgs {
            self.tally.add(m.size());
            self.pending.push_back(m);
        }
    }

    pub(super) fn pop(&mut self) {
        if let Some(m) = self.pending.pop_front() {
            self.tally.sub(m.size());
        }
    }
}

impl Room {
    /// Tells one member its continuity was lost: it goes on live from the
    /// gateway's position.
    pub(super) fn resync_member(&mut self, conn: &str) {
        let (Some((epoch, seq)), Some(m)) = (&self.pos, self.members.get_mut(conn)) else { return };
        crate::metrics::resync();
        let frame = Event::Resync { room: &self.room, epoch, seq: *seq }.encode(m.listener.encoding);
        m.listener.outbox.push(Out::Data(frame));
        m.after = *seq;
        m.catch_up = None;
    }

    /// A member joins: its reply first, then what it missed, paced, then
    /// live messages.
    pub fn attach(&mut self, a: Attach, out: &mut Vec<Action>) {
        if let Some(reply) = a.reply {
            a.listener.outbox.push(Out::Data(reply));
        }
        // Joins and leaves that reached us before this member did, but after
        // its owner answered: without them its count would stay behind.
        for change in self.changes.missed(&self.room, &a.epoch, a.members_version, &a.user) {
            a.listener.outbox.push(Out::Data(change.encode(a.listener.encoding)));
        }
        drop(a.joining);
        if !self.joins.any() {
            self.changes.release();
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
        let catch_up = Some(Box::new(catch_up));
        let member = Member { user: a.user, info: a.info, listener: a.listener, after: 0, catch_up };
        self.members.insert(a.conn.clone(), member);
        self.pump(&a.conn, out);
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
    pub(super) fn pump(&mut self, conn: &str, out: &mut Vec<Action>) {
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
    pub(super) fn next_fetch(&mut self, out: &mut Vec<Action>) {
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
