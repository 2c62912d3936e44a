//! Rooms' recent messages, kept for resume and gap filling.
//!
//! Each room's history is bounded by count, age and bytes (defaults: 100
//! messages, 2 minutes, 4 MiB), so a client that was away briefly resumes
//! without loss and a long absence ends in an honest `recovered: false`
//! instead of unbounded memory. All rooms of a router share a [`Budget`]
//! in bytes (default 512 MiB): past it, the oldest message of all is
//! evicted first, so no member, however many rooms it publishes to, can
//! make a router hold more.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use prost::Message as _;
use proto::internal;

/// History bounds of one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Most messages kept per room.
    pub max_len: usize,
    /// Oldest message kept.
    pub max_age: Duration,
    /// Most bytes kept per room.
    pub max_bytes: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self { max_len: 100, max_age: Duration::from_secs(120), max_bytes: 4 << 20 }
    }
}

/// The history flags of every binary that owns rooms (routers, and the
/// standalone gateway's embedded router).
#[derive(clap::Args, Debug, Clone)]
pub struct HistoryFlags {
    /// Messages of history kept per room.
    #[arg(long, env = "SB_HISTORY_SIZE", default_value_t = 100)]
    pub history_size: usize,

    /// Age of the oldest history message kept.
    #[arg(long, env = "SB_HISTORY_TTL", default_value = "2m", value_parser = shell::cli::duration)]
    pub history_ttl: Duration,

    /// Bytes of history kept per room.
    #[arg(long, env = "SB_HISTORY_BYTES", default_value_t = HistoryConfig::default().max_bytes)]
    pub history_bytes: usize,

    /// Bytes of history all rooms of this router keep together; past it the
    /// oldest message of all is evicted.
    #[arg(long, env = "SB_HISTORY_BUDGET", default_value_t = crate::owner::DEFAULT_HISTORY_BUDGET)]
    pub history_budget: usize,
}

impl HistoryFlags {
    pub fn config(&self) -> HistoryConfig {
        HistoryConfig { max_len: self.history_size, max_age: self.history_ttl, max_bytes: self.history_bytes }
    }
}

/// Bytes a retained message counts for: its encoding plus bookkeeping.
fn size(msg: &internal::StoredMessage) -> usize {
    msg.encoded_len() + 64
}

/// Every room's history on one router, in bytes, and which room holds the
/// oldest message.
#[derive(Debug)]
pub struct Budget {
    max_bytes: usize,
    used: usize,
    /// Each non-empty history's oldest message, by age order → room.
    fronts: BTreeMap<u64, String>,
    next: u64,
}

impl Budget {
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, used: 0, fronts: BTreeMap::new(), next: 0 }
    }

    /// Bytes held by every room's history.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The room to evict from (its oldest message is the oldest of all),
    /// while over the budget.
    pub fn over(&self) -> Option<&str> {
        (self.used > self.max_bytes).then(|| self.fronts.values().next().map(String::as_str)).flatten()
    }

    /// Applies a change of `room`'s history: its oldest message was
    /// `before` and is `after`; `grown` bytes were added, `shrunk` freed.
    fn note(&mut self, room: &str, before: Option<u64>, after: Option<u64>, grown: usize, shrunk: usize) {
        if before != after {
            if let Some(b) = before {
                self.fronts.remove(&b);
            }
            if let Some(a) = after {
                self.fronts.insert(a, room.to_owned());
            }
        }
        self.used = self.used + grown - shrunk;
        metrics::gauge!("switchboard_router_history_bytes").set(self.used as f64);
    }
}

/// One room's retained stream, oldest first.
#[derive(Debug, Default, Clone)]
pub struct History {
    entries: VecDeque<Entry>,
    bytes: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    at: Instant,
    /// Age order across all rooms (the budget's key).
    order: u64,
    msg: internal::StoredMessage,
}

impl History {
    fn front(&self) -> Option<u64> {
        self.entries.front().map(|e| e.order)
    }

    /// Appends a message (its seq must follow the last one) and drops what
    /// is over the room's bounds.
    pub fn push(
        &mut self,
        room: &str,
        msg: internal::StoredMessage,
        now: Instant,
        config: &HistoryConfig,
        budget: &mut Budget,
    ) {
        debug_assert!(self.entries.back().is_none_or(|e| e.msg.seq < msg.seq));
        let before = self.front();
        let order = budget.next;
        budget.next += 1;
        let grown = size(&msg);
        self.bytes += grown;
        self.entries.push_back(Entry { at: now, order, msg });
        let shrunk = self.trim(now, config);
        budget.note(room, before, self.front(), grown, shrunk);
    }

    /// Drops what is over the room's bounds.
    pub fn prune(&mut self, room: &str, now: Instant, config: &HistoryConfig, budget: &mut Budget) {
        let before = self.front();
        let shrunk = self.trim(now, config);
        budget.note(room, before, self.front(), 0, shrunk);
    }

    /// Drops messages past the count, bytes and age bounds; returns the bytes freed.
    fn trim(&mut self, now: Instant, config: &HistoryConfig) -> usize {
        let mut freed = 0;
        while self.entries.len() > config.max_len
            || self.bytes > config.max_bytes
            || self.entries.front().is_some_and(|e| now.duration_since(e.at) > config.max_age)
        {
            let Some(e) = self.entries.pop_front() else { break };
            let s = size(&e.msg);
            self.bytes -= s;
            freed += s;
        }
        freed
    }

    /// Drops the oldest message: the router is over its budget.
    pub fn evict_oldest(&mut self, room: &str, budget: &mut Budget) {
        let before = self.front();
        let Some(e) = self.entries.pop_front() else { return };
        let s = size(&e.msg);
        self.bytes -= s;
        metrics::counter!("switchboard_router_history_evicted_total").increment(1);
        budget.note(room, before, self.front(), 0, s);
    }

    /// Gives everything back to the budget: the room is leaving this router.
    pub fn release(&mut self, room: &str, budget: &mut Budget) {
        let before = self.front();
        self.entries.clear();
        budget.note(room, before, None, 0, std::mem::take(&mut self.bytes));
    }

    /// The messages after `since`, given that the room's latest seq is
    /// `latest`; `None` when the history no longer reaches back that far
    /// (or `since` is in the future).
    pub fn after(&self, since: u64, latest: u64) -> Option<impl Iterator<Item = &internal::StoredMessage>> {
        if since > latest {
            return None;
        }
        if since < latest && self.entries.front().is_none_or(|e| e.msg.seq > since + 1) {
            return None;
        }
        Some(self.entries.iter().map(|e| &e.msg).filter(move |m| m.seq > since))
    }

    /// The latest `limit` messages, oldest first.
    pub fn latest(&self, limit: usize) -> impl Iterator<Item = &internal::StoredMessage> {
        let skip = self.entries.len().saturating_sub(limit);
        self.entries.iter().skip(skip).map(|e| &e.msg)
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every retained message, oldest first.
    pub fn messages(&self) -> impl DoubleEndedIterator<Item = &internal::StoredMessage> {
        self.entries.iter().map(|e| &e.msg)
    }

    /// History rebuilt from handed-off messages; ages come from their `ts`.
    pub fn restore(
        room: &str,
        messages: Vec<internal::StoredMessage>,
        now: Instant,
        config: &HistoryConfig,
        budget: &mut Budget,
    ) -> Self {
        let now_ms = proto::now_ms();
        let mut h = Self::default();
        for m in messages {
            let age = Duration::from_millis(now_ms.saturating_sub(m.ts).max(0) as u64);
            h.push(room, m, now.checked_sub(age).unwrap_or(now), config, budget);
        }
        h.prune(room, now, config, budget);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> internal::StoredMessage {
        internal::StoredMessage { seq, ..Default::default() }
    }

    fn sized(seq: u64, len: usize) -> internal::StoredMessage {
        internal::StoredMessage { seq, data: vec![b'1'; len].into(), ..Default::default() }
    }

    fn seqs<'a>(it: impl Iterator<Item = &'a internal::StoredMessage>) -> Vec<u64> {
        it.map(|m| m.seq).collect()
    }

    fn unlimited() -> Budget {
        Budget::new(usize::MAX)
    }

    #[test]
    fn bounded_by_count_and_age() {
        let config = HistoryConfig { max_len: 3, max_age: Duration::from_secs(10), ..HistoryConfig::default() };
        let t0 = Instant::now();
        let (mut h, mut b) = (History::default(), unlimited());
        for seq in 1..=5 {
            h.push("r", msg(seq), t0, &config, &mut b);
        }
        assert_eq!(seqs(h.after(2, 5).unwrap()), vec![3, 4, 5]);
        assert!(h.after(1, 5).is_none(), "seq 2 was evicted");
        assert_eq!(seqs(h.after(5, 5).unwrap()), Vec::<u64>::new());
        assert!(h.after(6, 5).is_none(), "a future position is not recoverable");
        h.prune("r", t0 + Duration::from_secs(11), &config, &mut b);
        assert!(h.is_empty());
        assert_eq!(b.used(), 0, "the budget got every byte back");
        assert!(h.after(4, 5).is_none());
        assert_eq!(seqs(h.after(5, 5).unwrap()), Vec::<u64>::new(), "up to date needs no history");
    }

    #[test]
    fn bounded_by_bytes_per_room() {
        let config = HistoryConfig { max_bytes: 3_000, ..HistoryConfig::default() };
        let (mut h, mut b) = (History::default(), unlimited());
        let now = Instant::now();
        for seq in 1..=5 {
            h.push("r", sized(seq, 1_000), now, &config, &mut b);
        }
        assert_eq!(seqs(h.messages()), vec![4, 5], "1 KB messages in 3 KB (with bookkeeping)");
        assert!(b.used() <= 3_000);
    }

    #[test]
    fn the_budget_evicts_the_oldest_message_of_all_rooms_first() {
        let config = HistoryConfig::default();
        let now = Instant::now();
        let mut b = Budget::new(5 * size(&sized(1, 1_000)));
        let mut rooms: BTreeMap<&str, History> = BTreeMap::new();
        // (room, seq) in publish order; the budget holds five messages.
        let order = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2), ("c", 2), ("a", 3)];
        for (room, seq) in order {
            rooms.entry(room).or_default().push(room, sized(seq, 1_000), now, &config, &mut b);
            while let Some(r) = b.over().map(str::to_owned) {
                rooms.get_mut(r.as_str()).unwrap().evict_oldest(&r, &mut b);
            }
        }
        let kept: Vec<(&str, Vec<u64>)> = rooms.iter().map(|(r, h)| (*r, seqs(h.messages()))).collect();
        assert_eq!(kept, [("a", vec![2, 3]), ("b", vec![2]), ("c", vec![1, 2])], "a1 and b1 went first");
        // A room leaving gives its bytes back.
        let used = b.used();
        rooms.get_mut("c").unwrap().release("c", &mut b);
        assert_eq!(b.used(), used - 2 * size(&sized(1, 1_000)));
        assert_eq!(b.over(), None);
    }

    #[test]
    fn restored_history_keeps_its_ages() {
        let config = HistoryConfig { max_age: Duration::from_secs(60), ..HistoryConfig::default() };
        let now_ms = proto::now_ms();
        let old = internal::StoredMessage { seq: 1, ts: now_ms - 120_000, ..Default::default() };
        let new = internal::StoredMessage { seq: 2, ts: now_ms, ..Default::default() };
        let (mut b, kept) = (unlimited(), size(&new));
        let h = History::restore("r", vec![old, new], Instant::now(), &config, &mut b);
        assert_eq!(seqs(h.messages()), vec![2], "older than the TTL when it arrived");
        assert_eq!(b.used(), kept);
    }
}
