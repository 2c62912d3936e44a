//! A room's buffers at a gateway, bounded in count and bytes and counted in
//! `switchboard_gateway_room_buffer_bytes{buffer}`: recent messages (for
//! members catching up without asking the owner) and messages held behind
//! a gap while it is filled.

use std::collections::{BTreeMap, VecDeque};
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

/// The latest messages delivered, oldest first, within `max_len` and
/// `max_bytes`.
pub struct Recent {
    msgs: VecDeque<Arc<Encoded>>,
    tally: Tally,
    max_len: usize,
    max_bytes: usize,
}

impl Recent {
    pub fn new(max_len: usize, max_bytes: usize) -> Self {
        Self { msgs: VecDeque::new(), tally: Tally::new("recent"), max_len, max_bytes }
    }

    pub fn push(&mut self, enc: Arc<Encoded>) {
        self.tally.add(enc.size());
        self.msgs.push_back(enc);
        while self.msgs.len() > self.max_len || self.tally.bytes() > self.max_bytes {
            let Some(old) = self.msgs.pop_front() else { break };
            self.tally.sub(old.size());
        }
    }

    pub fn clear(&mut self) {
        self.msgs.clear();
        self.tally.sub(self.tally.bytes());
    }

    /// The messages after `at`, if this buffer holds all of them (the
    /// caller knows there are some).
    pub fn after(&self, at: u64) -> Option<impl Iterator<Item = &Arc<Encoded>>> {
        let first = self.msgs.front()?.seq();
        let last = self.msgs.back()?.seq();
        (first <= at + 1 && last > at).then(|| self.msgs.iter().filter(move |m| m.seq() > at))
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
        let mut r = Recent::new(3, 2_000);
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
