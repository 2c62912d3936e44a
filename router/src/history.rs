//! A room's recent messages, kept for resume and gap filling.
//!
//! Bounded by count and by age (defaults: 100 messages, 2 minutes), so a
//! client that was away briefly resumes without loss and a long absence ends
//! in an honest `recovered: false` instead of unbounded memory.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proto::pb;

/// History bounds.
#[derive(Debug, Clone, Copy)]
pub struct HistoryConfig {
    /// Most messages kept per room.
    pub max_len: usize,
    /// Oldest message kept.
    pub max_age: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self { max_len: 100, max_age: Duration::from_secs(120) }
    }
}

/// The retained tail of one room's stream, oldest first.
#[derive(Debug, Default, Clone)]
pub struct History {
    entries: VecDeque<(Instant, pb::StoredMessage)>,
}

impl History {
    /// Appends a message (its seq must follow the last one).
    pub fn push(&mut self, msg: pb::StoredMessage, now: Instant, config: &HistoryConfig) {
        debug_assert!(self.entries.back().is_none_or(|(_, m)| m.seq < msg.seq));
        self.entries.push_back((now, msg));
        self.prune(now, config);
    }

    /// Drops what is over the bounds.
    pub fn prune(&mut self, now: Instant, config: &HistoryConfig) {
        while self.entries.len() > config.max_len {
            self.entries.pop_front();
        }
        while self.entries.front().is_some_and(|(at, _)| now.duration_since(*at) > config.max_age) {
            self.entries.pop_front();
        }
    }

    /// The messages after `since`, given that the room's latest seq is
    /// `latest`; `None` when the history no longer reaches back that far
    /// (or `since` is in the future).
    pub fn after(&self, since: u64, latest: u64) -> Option<impl Iterator<Item = &pb::StoredMessage>> {
        if since > latest {
            return None;
        }
        if since < latest && self.entries.front().is_none_or(|(_, m)| m.seq > since + 1) {
            return None;
        }
        Some(self.entries.iter().map(|(_, m)| m).filter(move |m| m.seq > since))
    }

    /// The latest `limit` messages, oldest first.
    pub fn latest(&self, limit: usize) -> impl Iterator<Item = &pb::StoredMessage> {
        let skip = self.entries.len().saturating_sub(limit);
        self.entries.iter().skip(skip).map(|(_, m)| m)
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every retained message, oldest first.
    pub fn messages(&self) -> impl DoubleEndedIterator<Item = &pb::StoredMessage> {
        self.entries.iter().map(|(_, m)| m)
    }

    /// History rebuilt from handed-off messages; ages come from their `ts`.
    pub fn restore(messages: Vec<pb::StoredMessage>, now: Instant, config: &HistoryConfig) -> Self {
        let now_ms = proto::now_ms();
        let entries = messages
            .into_iter()
            .map(|m| {
                let age = Duration::from_millis(now_ms.saturating_sub(m.ts).max(0) as u64);
                (now.checked_sub(age).unwrap_or(now), m)
            })
            .collect();
        let mut h = Self { entries };
        h.prune(now, config);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> pb::StoredMessage {
        pb::StoredMessage { seq, ..Default::default() }
    }

    fn seqs<'a>(it: impl Iterator<Item = &'a pb::StoredMessage>) -> Vec<u64> {
        it.map(|m| m.seq).collect()
    }

    #[test]
    fn bounded_by_count_and_age() {
        let config = HistoryConfig { max_len: 3, max_age: Duration::from_secs(10) };
        let t0 = Instant::now();
        let mut h = History::default();
        for seq in 1..=5 {
            h.push(msg(seq), t0, &config);
        }
        assert_eq!(seqs(h.after(2, 5).unwrap()), vec![3, 4, 5]);
        assert!(h.after(1, 5).is_none(), "seq 2 was evicted");
        assert_eq!(seqs(h.after(5, 5).unwrap()), Vec::<u64>::new());
        assert!(h.after(6, 5).is_none(), "a future position is not recoverable");
        h.prune(t0 + Duration::from_secs(11), &config);
        assert!(h.is_empty());
        assert!(h.after(4, 5).is_none());
        assert_eq!(seqs(h.after(5, 5).unwrap()), Vec::<u64>::new(), "up to date needs no history");
    }
}
