//! One room's state at its owner: epoch, seq, history and members.
//!
//! The owner is the only writer, so ordering is simply the order in which it
//! applies publishes. Members are connections (`gateway`, `conn`), but
//! `joined`/`left` are per user: a user's second tab joining is not news.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use prost::Message as _;
use proto::internal;
use proto::pb;

use crate::batch::Batch;
use crate::history::{Budget, History, HistoryConfig};
use crate::reads::Reads;

/// A room as its owner holds it.
#[derive(Debug, Clone)]
pub struct Room {
    /// Fixed when this owner created the state; a new epoch means the
    /// continuity of seqs was lost.
    pub epoch: String,
    /// The latest seq assigned (0 before the first message).
    pub seq: u64,
    history: History,
    /// (gateway, conn) → user.
    conns: HashMap<(String, String), String>,
    users: HashMap<String, UserEntry>,
    /// Joins and leaves not yet announced (`join_leave = "batched"`); never
    /// handed over: the old owner announces it first.
    pub batch: Batch,
    /// Bumped by every user's join and leave: orders `members_changed`
    /// against join answers within the epoch.
    pub members_version: u64,
    /// How far each user has read.
    pub reads: Reads,
    /// Where the durable store stands for this room (memory store: zero).
    pub fence: internal::StoreFence,
}

/// A fresh random epoch.
pub fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A user present in the room.
#[derive(Debug, Clone)]
struct UserEntry {
    /// The `info` claim of the user's first joining connection.
    info: Bytes,
    /// How many of the user's connections are in the room.
    conns: u32,
}

/// A `members` answer: a capped list and the exact count.
#[derive(Debug, Default, PartialEq)]
pub struct Members {
    pub members: Vec<pb::Member>,
    pub count: u32,
    /// The list is shorter than the count.
    pub truncated: bool,
}

/// Whether a membership change is visible as `joined`/`left`.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// The user's first connection joined.
    Joined,
    /// The user's last connection left.
    Left,
    /// Nothing others need to hear about.
    Quiet,
}

impl Room {
    /// Empty state with a fresh random epoch.
    pub fn new() -> Self {
        Self::with_epoch(new_epoch(), 0)
    }

    /// Empty state continuing an existing stream (after a handoff).
    pub fn with_epoch(epoch: String, seq: u64) -> Self {
        Self {
            epoch,
            seq,
            history: History::default(),
            conns: HashMap::new(),
            users: HashMap::new(),
            batch: Batch::default(),
            members_version: 0,
            reads: Reads::default(),
            fence: internal::StoreFence::default(),
        }
    }

    /// Whether `user` has a connection in the room.
    pub fn has_user(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Number of users in the room.
    pub fn user_count(&self) -> u32 {
        self.users.len() as u32
    }

    /// Adds a connection; joining twice is harmless.
    pub fn join(&mut self, m: &internal::MemberRef) -> Change {
        let key = (m.gateway.clone(), m.conn.clone());
        if self.conns.contains_key(&key) {
            return Change::Quiet;
        }
        self.conns.insert(key, m.user.clone());
        let entry = self.users.entry(m.user.clone()).or_insert(UserEntry { info: m.info.clone(), conns: 0 });
        entry.conns += 1;
        if entry.conns == 1 {
            self.members_version += 1;
            Change::Joined
        } else {
            Change::Quiet
        }
    }

    /// Removes a connection; returns its user and whether that user left.
    pub fn leave(&mut self, gateway: &str, conn: &str) -> Option<(String, Change)> {
        let user = self.conns.remove(&(gateway.to_owned(), conn.to_owned()))?;
        let entry = self.users.get_mut(&user).expect("every conn has a user entry");
        entry.conns -= 1;
        if entry.conns == 0 {
            self.users.remove(&user);
            self.members_version += 1;
            Some((user, Change::Left))
        } else {
            Some((user, Change::Quiet))
        }
    }

    /// Removes every connection of a gateway; returns the users who left.
    pub fn drop_gateway(&mut self, gateway: &str) -> Vec<String> {
        let conns: Vec<String> = self.conns.keys().filter(|(g, _)| g == gateway).map(|(_, c)| c.clone()).collect();
        conns
            .iter()
            .filter_map(|c| self.leave(gateway, c))
            .filter(|(_, change)| *change == Change::Left)
            .map(|(user, _)| user)
            .collect()
    }

    /// Appends `msg` (its idempotency key included) to room `id` with the
    /// next seq. The caller then brings `budget` back under its bound
    /// ([`Budget::over`]).
    pub fn publish(
        &mut self,
        id: &str,
        mut msg: internal::StoredMessage,
        now: Instant,
        config: &HistoryConfig,
        budget: &mut Budget,
    ) -> internal::StoredMessage {
        msg.seq = self.seq + 1;
        self.commit(id, msg.clone(), now, config, budget);
        msg
    }

    /// Keeps `msg`, already stored with the next seq (durable store).
    pub fn commit(
        &mut self,
        id: &str,
        msg: internal::StoredMessage,
        now: Instant,
        config: &HistoryConfig,
        budget: &mut Budget,
    ) {
        debug_assert_eq!(msg.seq, self.seq + 1);
        self.seq = msg.seq;
        self.history.push(id, msg, now, config, budget);
    }

    /// Takes the members of `old`, this room as held before a reload.
    pub fn adopt_members(&mut self, old: Room) {
        self.conns = old.conns;
        self.users = old.users;
        self.members_version = self.members_version.max(old.members_version);
    }

    /// The seq of the retained message `from` published with `key` (none
    /// for an empty key). Scans newest first: a retry follows its original
    /// closely, and history is bounded, so no index is kept.
    pub fn published(&self, from: &str, key: &str) -> Option<u64> {
        if key.is_empty() {
            return None;
        }
        self.history.messages().rev().find(|m| m.idempotency_key == key && m.from == from).map(|m| m.seq)
    }

    /// Drops the room's oldest message for the router's budget.
    pub fn evict_oldest(&mut self, id: &str, budget: &mut Budget) {
        self.history.evict_oldest(id, budget);
    }

    /// Gives the history's bytes back: the room leaves this router.
    pub fn release(&mut self, id: &str, budget: &mut Budget) {
        self.history.release(id, budget);
    }

    /// The messages after `since` if this stream still holds them all.
    pub fn recover(&self, since: &pb::Since) -> Option<impl Iterator<Item = &internal::StoredMessage>> {
        if since.epoch != self.epoch {
            return None;
        }
        self.history.after(since.seq, self.seq)
    }

    /// Members (users) in id order, at most `limit` of them and `max_bytes`
    /// of encoded entries, so a reply always fits the asker's queue.
    pub fn members(&self, limit: usize, max_bytes: usize) -> Members {
        let mut users: Vec<(&String, &UserEntry)> = self.users.iter().collect();
        users.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut list = Vec::new();
        let mut used = 0;
        for (user, e) in users.into_iter().take(limit) {
            let read_seq = self.reads.get(user);
            let m = pb::Member { user: user.clone(), info: e.info.clone(), conns: e.conns, read_seq };
            // The JSON form is at most about twice the protobuf one (escaping).
            used += 2 * m.encoded_len() + 32;
            if used > max_bytes {
                break;
            }
            list.push(m);
        }
        let count = self.user_count();
        Members { truncated: list.len() < count as usize, members: list, count }
    }

    /// Number of member connections.
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Drops expired history; true when nothing is left worth keeping.
    pub fn prune(&mut self, id: &str, now: Instant, config: &HistoryConfig, budget: &mut Budget) -> bool {
        self.history.prune(id, now, config, budget);
        self.conns.is_empty() && self.history.is_empty()
    }

    /// The room as it travels to a new owner. Read markers take at most half
    /// of `budget` bytes (NATS caps payloads), the furthest ahead first;
    /// history is trimmed, oldest first, to fit the rest.
    pub fn to_state(&self, budget: usize) -> internal::RoomState {
        let members = self.member_refs();
        let mut used: usize = members.iter().map(|m| m.encoded_len() + 4).sum::<usize>() + 64;
        let mut markers: Vec<(String, u64)> = self.reads.to_map().into_iter().collect();
        markers.sort_unstable_by_key(|m| std::cmp::Reverse(m.1));
        let mut reads = HashMap::new();
        for (user, seq) in markers {
            used += user.len() + 16;
            if used > budget / 2 {
                break;
            }
            reads.insert(user, seq);
        }
        let mut history: Vec<internal::StoredMessage> = Vec::new();
        for m in self.history.messages().rev() {
            used += m.encoded_len() + 4;
            if used > budget {
                break;
            }
            history.push(m.clone());
        }
        history.reverse();
        let (members_version, fence) = (self.members_version, Some(self.fence));
        internal::RoomState {
            epoch: self.epoch.clone(),
            seq: self.seq,
            history,
            members,
            members_version,
            reads,
            fence,
        }
    }

    /// Room `id` continuing from handed-off state: same epoch, same seqs.
    pub fn from_state(
        id: &str,
        state: internal::RoomState,
        now: Instant,
        config: &HistoryConfig,
        budget: &mut Budget,
    ) -> Self {
        let mut room = Self::with_epoch(state.epoch, state.seq);
        for m in &state.members {
            room.join(m);
        }
        room.history = History::restore(id, state.history, now, config, budget);
        room.members_version = state.members_version;
        room.reads = Reads::restore(state.reads);
        room.fence = state.fence.unwrap_or_default();
        room
    }

    /// Up to `limit` of the latest messages.
    pub fn latest(&self, limit: usize) -> impl Iterator<Item = &internal::StoredMessage> {
        self.history.latest(limit)
    }

    /// Every member connection, for handoff.
    pub fn member_refs(&self) -> Vec<internal::MemberRef> {
        self.conns
            .iter()
            .map(|((gateway, conn), user)| internal::MemberRef {
                gateway: gateway.clone(),
                conn: conn.clone(),
                user: user.clone(),
                info: self.users.get(user).map(|e| e.info.clone()).unwrap_or_default(),
            })
            .collect()
    }
}

impl Default for Room {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(gateway: &str, conn: &str, user: &str) -> internal::MemberRef {
        internal::MemberRef { gateway: gateway.into(), conn: conn.into(), user: user.into(), info: Bytes::new() }
    }

    #[test]
    fn joined_and_left_are_per_user() {
        let mut room = Room::new();
        assert_eq!(room.join(&member("g1", "c1", "alice")), Change::Joined);
        assert_eq!(room.join(&member("g2", "c2", "alice")), Change::Quiet);
        assert_eq!(room.join(&member("g2", "c2", "alice")), Change::Quiet, "idempotent");
        assert_eq!(room.join(&member("g1", "c3", "bob")), Change::Joined);
        assert_eq!(room.members(10, usize::MAX).count, 2);
        assert_eq!(room.members(1, usize::MAX).members.len(), 1);
        assert_eq!(room.leave("g1", "c1"), Some(("alice".into(), Change::Quiet)));
        assert_eq!(room.drop_gateway("g2"), vec!["alice".to_string()]);
        assert_eq!(room.leave("g1", "nope"), None);
        assert_eq!(room.members(10, usize::MAX).members[0].user, "bob");
    }

    #[test]
    fn members_are_capped_in_entries_and_bytes_with_an_exact_count() {
        let mut room = Room::new();
        for i in 0..10 {
            let mut m = member("g", &format!("c{i}"), &format!("u{i}"));
            m.info = Bytes::from(vec![b'1'; 1000]);
            room.join(&m);
        }
        let cases = [
            // (limit, max_bytes, listed)
            (100, usize::MAX, 10),
            (3, usize::MAX, 3),
            (100, 5_000, 2),
            (100, 1_000, 0),
            (100, 0, 0),
        ];
        for (limit, max_bytes, listed) in cases {
            let m = room.members(limit, max_bytes);
            assert_eq!((m.members.len(), m.count, m.truncated), (listed, 10, listed < 10), "{limit} {max_bytes}");
        }
        assert_eq!(room.members(100, usize::MAX).members[0].user, "u0", "in id order");
    }

    #[test]
    fn seqs_are_consecutive_and_recoverable_within_the_epoch() {
        let (config, mut budget) = (HistoryConfig::default(), Budget::new(usize::MAX));
        let mut room = Room::new();
        let now = Instant::now();
        for i in 1..=3 {
            let msg =
                internal::StoredMessage { from: "u".into(), data: Bytes::from_static(b"1"), ..Default::default() };
            let m = room.publish("r", msg, now, &config, &mut budget);
            assert_eq!(m.seq, i);
        }
        let since = pb::Since { epoch: room.epoch.clone(), seq: 1 };
        assert_eq!(room.recover(&since).unwrap().map(|m| m.seq).collect::<Vec<_>>(), vec![2, 3]);
        let other = pb::Since { epoch: "other".into(), seq: 1 };
        assert!(room.recover(&other).is_none());
    }

    #[test]
    fn state_survives_a_handoff_and_is_trimmed_to_its_budget() {
        let (config, mut budget) = (HistoryConfig::default(), Budget::new(usize::MAX));
        let now = Instant::now();
        let mut room = Room::new();
        room.join(&member("g1", "c1", "alice"));
        for _ in 0..10 {
            let data = Bytes::from(vec![b'1'; 100]);
            let msg = internal::StoredMessage { from: "alice".into(), data, ts: proto::now_ms(), ..Default::default() };
            room.publish("r", msg, now, &config, &mut budget);
        }
        let moved = Room::from_state("r", room.to_state(1 << 20), now, &config, &mut budget);
        assert_eq!((moved.epoch.as_str(), moved.seq), (room.epoch.as_str(), 10));
        assert_eq!(moved.members(10, usize::MAX).count, 1);
        let since = pb::Since { epoch: room.epoch.clone(), seq: 0 };
        assert_eq!(moved.recover(&since).unwrap().count(), 10);
        let small = room.to_state(600);
        assert!(!small.history.is_empty() && small.history.len() < 10);
        assert_eq!(small.history.last().unwrap().seq, 10, "the newest messages are kept");
    }
}
