//! Deadlines per user, in the order they were set, removed lazily.
//!
//! A user's deadline moves (a reconnect cancels a grace, a new offline
//! restarts the last-seen retention, a new message restarts the inbox
//! notice), and removing an entry from the middle of a queue is a scan. So a
//! superseded entry stays and is skipped when popped. Unchecked, that makes
//! the queue grow with the rate of events times the deadline's length, not
//! with the users behind it: a user going offline a thousand times in an hour
//! left a thousand entries (a 10-minute soak grew presence by a quarter). So
//! once the queue holds more than twice the live entries (plus [`SLACK`]),
//! it keeps only entries that are still current: at most one per user, and
//! the work stays amortized O(1) per push.

use std::collections::VecDeque;
use std::time::Instant;

/// Entries beyond twice the live ones before a queue is compacted.
const SLACK: usize = 1024;

/// (deadline, user) pairs in the order set; deadlines never go backwards.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    queue: VecDeque<(Instant, String)>,
}

impl Deadlines {
    /// Queues `user`'s deadline `at`. `live` is how many entries can be
    /// current at most (the table's size); `current` says whether an entry
    /// still is, for the compaction.
    pub(crate) fn push(&mut self, at: Instant, user: &str, live: usize, current: impl Fn(&Instant, &str) -> bool) {
        if self.queue.len() >= 2 * live + SLACK {
            self.queue.retain(|(at, user)| current(at, user));
            self.queue.shrink_to(2 * self.queue.len() + SLACK);
        }
        self.queue.push_back((at, user.to_owned()));
    }

    /// Pops the front entry if it is due (current or not: the caller checks).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, String)> {
        match self.queue.front() {
            Some((at, _)) if *at <= now => self.queue.pop_front(),
            _ => None,
        }
    }

    /// Pops the front entry, due or not.
    pub(crate) fn pop_front(&mut self) -> Option<(Instant, String)> {
        self.queue.pop_front()
    }

    /// Drops the entries of users `keep` rejects.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.queue.retain(|(_, user)| keep(user));
    }

    /// Entries queued, superseded ones included.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    #[test]
    fn superseded_entries_are_compacted_and_order_is_kept() {
        let t0 = Instant::now();
        let mut current: HashMap<String, Instant> = HashMap::new();
        let mut q = Deadlines::default();
        // Ten users, each moving its deadline 10,000 times.
        for i in 0..100_000u64 {
            let user = format!("u{}", i % 10);
            let at = t0 + Duration::from_millis(i);
            current.insert(user.clone(), at);
            q.push(at, &user, current.len(), |at, user| current.get(user) == Some(at));
            assert!(q.len() <= 2 * current.len() + SLACK + 1, "bounded by users, not events: {}", q.len());
        }
        let mut popped = Vec::new();
        while let Some((at, user)) = q.pop_due(t0 + Duration::from_secs(1000)) {
            if current.get(&user) == Some(&at) {
                popped.push(at);
            }
        }
        assert_eq!(popped.len(), 10, "every current deadline survives");
        assert!(popped.windows(2).all(|w| w[0] <= w[1]), "in the order set");
    }

    #[test]
    fn only_due_entries_pop() {
        let t0 = Instant::now();
        let mut q = Deadlines::default();
        q.push(t0 + Duration::from_secs(1), "a", 1, |_, _| true);
        assert!(q.pop_due(t0).is_none());
        assert_eq!(q.pop_due(t0 + Duration::from_secs(1)).map(|(_, u)| u), Some("a".to_owned()));
        assert_eq!(q.len(), 0);
    }
}
