//! A room's buffers at a gateway, bounded in count and bytes and counted in
//! `switchboard_gateway_room_buffer_bytes{buffer}`: recent messages (for
//! members catching up without asking the owner) and messages held behind
//! a gap while it is filled.
//!
//! Recent messages are also bounded across rooms ([`Budget`]): a gateway
//! follows every room one of its clients is in, and at a room's own bound
//! (256 messages) a gateway following 100,000 rooms of ordinary chat
//! would keep gigabytes. What they save is a call to the owner, so past
//! the budget a room keeps only its newest few.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::encoded::Encoded;

/// Bytes a buffer holds, mirrored in the gauge of its kind.
#[derive(Debug)]
pub struct Tally {
    buffer: &'static str,
    bytes: usize,
}

impl Tally {
    pub fn new(buffer: &'static str) -> Self {
        Self { buffer, bytes: 0 }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn add(&mut self, n: usize) {
        self.bytes += n;
        crate::metrics::buffer_bytes(self.buffer).increment(n as f64);
    }

    pub fn sub(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.bytes -= n;
        crate::metrics::buffer_bytes(self.buffer).decrement(n as f64);
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.sub(self.bytes);
    }
}

/// Bytes of recent messages every room of a gateway keeps, together.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

/// Recent messages a room keeps while the gateway is over its budget: the
/// ones a member whose join answer they overtook most likely lacks.
const OVER_BUDGET_KEEP: usize = 4;

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { used: AtomicUsize::new(0), limit })
    }

    fn over(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }
}

/// The latest messages delivered, oldest first, within `max_len` and
/// `max_bytes`, and within the gateway's [`Budget`]: a room pushing while
/// the gateway is over it keeps its newest [`OVER_BUDGET_KEEP`]. Rooms grow
/// past that only while the total is under the budget, so the total stays
/// within the budget plus that floor per room.
pub struct Recent {
    msgs: VecDeque<Arc<Encoded>>,
    tally: Tally,
    max_len: usize,
    max_bytes: usize,
    budget: Arc<Budget>,
}

impl Recent {
    pub fn new(max_len: usize, max_bytes: usize, budget: Arc<Budget>) -> Self {
        Self { msgs: VecDeque::new(), tally: Tally::new("recent"), max_len, max_bytes, budget }
    }

    pub fn push(&mut self, enc: Arc<Encoded>) {
        self.add(enc.size());
        self.msgs.push_back(enc);
        let keep = if self.budget.over() { OVER_BUDGET_KEEP } else { self.max_len };
        while self.msgs.len() > keep || self.tally.bytes() > self.max_bytes {
            let Some(old) = self.msgs.pop_front() else { break };
            self.sub(old.size());
        }
    }

    pub fn clear(&mut self) {
        self.msgs.clear();
        self.sub(self.tally.bytes());
    }

    fn add(&mut self, n: usize) {
        self.tally.add(n);
        self.budget.used.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&mut self, n: usize) {
        self.tally.sub(n);
        self.budget.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// The messages after `at`, if this buffer holds all of them (the
    /// caller knows there are some).
    pub fn after(&self, at: u64) -> Option<impl Iterator<Item = &Arc<Encoded>>> {
        let first = self.msgs.front()?.seq();
        let last = self.msgs.back()?.seq();
        (first <= at + 1 && last > at).then(|| self.msgs.iter().filter(move |m| m.seq() > at))
    }
}

impl Drop for Recent {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Messages that arrived after a gap, by seq, until the gap is filled.
pub struct Held {
    msgs: BTreeMap<u64, Arc<Encoded>>,
    tally: Tally,
    max_len: usize,
    max_bytes: usize,
}

impl Held {
    pub fn new(max_len: usize, max_bytes: usize) -> Self {
        Self { msgs: BTreeMap::new(), tally: Tally::new("held"), max_len, max_bytes }
    }

    /// Holds a message; false when that takes the buffer over its bounds
    /// (the gap is then given up on).
    pub fn insert(&mut self, enc: Arc<Encoded>) -> bool {
        let size = enc.size();
        if let Some(old) = self.msgs.insert(enc.seq(), enc) {
            self.tally.sub(old.size());
        }
        self.tally.add(size);
        self.msgs.len() <= self.max_len && self.tally.bytes() <= self.max_bytes
    }

    pub fn first(&self) -> Option<&Arc<Encoded>> {
        self.msgs.first_key_value().map(|(_, m)| m)
    }

    pub fn pop_first(&mut self) -> Option<Arc<Encoded>> {
        let (_, m) = self.msgs.pop_first()?;
        self.tally.sub(m.size());
        Some(m)
    }

    /// Keeps only what `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(&Encoded) -> bool) {
        let tally = &mut self.tally;
        self.msgs.retain(|_, m| {
            let kept = keep(m);
            if !kept {
                tally.sub(m.size());
            }
            kept
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::internal;

    fn msg(seq: u64, len: usize) -> Arc<Encoded> {
        let m = internal::StoredMessage { seq, data: vec![b'1'; len].into(), ..Default::default() };
        Arc::new(Encoded::new("r".into(), "e".into(), m))
    }

    #[test]
    fn recent_is_bounded_in_count_and_bytes_and_answers_only_what_it_covers() {
        let mut r = Recent::new(3, 2_000, Budget::new(usize::MAX));
        for seq in 1..=5 {
            r.push(msg(seq, 10));
        }
        let seqs = |r: &Recent, at| r.after(at).map(|i| i.map(|m| m.seq()).collect::<Vec<_>>());
        assert_eq!(seqs(&r, 2), Some(vec![3, 4, 5]));
        assert_eq!(seqs(&r, 3), Some(vec![4, 5]));
        assert!(r.after(1).is_none(), "seq 2 is gone");
        assert!(r.after(5).is_none(), "nothing after the last");
        r.push(msg(6, 950));
        assert_eq!(r.after(5).map(|i| i.count()), Some(1));
        assert!(r.after(4).is_none(), "the big one pushed the others out");
        r.clear();
        assert!(r.after(0).is_none());
    }

    #[test]
    fn rooms_over_the_gateways_budget_keep_only_their_newest() {
        let size = msg(1, 100).size();
        let budget = Budget::new(12 * size);
        let (mut a, mut b) = (Recent::new(256, 1 << 20, budget.clone()), Recent::new(256, 1 << 20, budget.clone()));
        // (room, messages it gets, then its length, the other's length)
        let steps = [
            ('a', 10, 10, 0),
            ('b', 2, 2, 10),
            // Over the budget, but b is within its floor.
            ('b', 1, 3, 10),
            // a gets one while over: it keeps its newest few.
            ('a', 1, OVER_BUDGET_KEEP, 3),
            // Under the budget again: b may grow.
            ('b', 5, 8, OVER_BUDGET_KEEP),
        ];
        let mut seq = 0;
        for (i, (room, n, mine, other)) in steps.into_iter().enumerate() {
            let (me, them) = if room == 'a' { (&mut a, &b) } else { (&mut b, &a) };
            for _ in 0..n {
                seq += 1;
                me.push(msg(seq, 100));
            }
            assert_eq!((me.msgs.len(), them.msgs.len()), (mine, other), "step {i}");
        }
        assert_eq!(budget.used.load(Ordering::Relaxed), 12 * size);
        drop(a);
        drop(b);
        assert_eq!(budget.used.load(Ordering::Relaxed), 0, "a room gives its bytes back when it ends");
    }

    #[test]
    fn held_reports_going_over_its_bounds() {
        let mut h = Held::new(2, 10_000);
        assert!(h.insert(msg(5, 10)));
        assert!(h.insert(msg(3, 10)));
        assert!(!h.insert(msg(7, 10)), "over the count");
        assert_eq!(h.pop_first().map(|m| m.seq()), Some(3));
        h.retain(|m| m.seq() > 5);
        assert_eq!(h.first().map(|m| m.seq()), Some(7));
        let mut h = Held::new(100, 1_000);
        assert!(!h.insert(msg(1, 2_000)), "over the bytes");
    }
}
