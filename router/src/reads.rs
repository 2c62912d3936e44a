//! Read markers of one room: the highest seq each user marked read.
//!
//! Markers only move forward, so a late or repeated `read` never undoes a
//! newer one. They outlive membership (a user who comes back later sees what
//! is unread), so they are bounded on their own: at most [`MAX_MARKERS`]
//! users per room; past that the marker furthest behind goes, as the one
//! least likely to matter. They travel with the room on handoff.

use std::collections::{BTreeSet, HashMap};

/// Most users with a marker in one room.
pub const MAX_MARKERS: usize = 10_000;

#[derive(Debug, Default, Clone)]
pub struct Reads {
    by_user: HashMap<String, u64>,
    /// (seq, user), to find the marker furthest behind.
    order: BTreeSet<(u64, String)>,
}

impl Reads {
    /// Moves `user`'s marker to `seq` if that is forward; true if it moved.
    pub fn mark(&mut self, user: &str, seq: u64) -> bool {
        let old = self.get(user);
        if seq <= old {
            return false;
        }
        if old > 0 {
            self.order.remove(&(old, user.to_owned()));
        }
        self.by_user.insert(user.to_owned(), seq);
        self.order.insert((seq, user.to_owned()));
        while self.by_user.len() > MAX_MARKERS {
            let Some((_, behind)) = self.order.pop_first() else { break };
            self.by_user.remove(&behind);
        }
        true
    }

    /// `user`'s marker (0: none).
    pub fn get(&self, user: &str) -> u64 {
        self.by_user.get(user).copied().unwrap_or(0)
    }

    /// Every marker, for a handoff.
    pub fn to_map(&self) -> HashMap<String, u64> {
        self.by_user.clone()
    }

    /// The markers a handoff brought.
    pub fn restore(map: HashMap<String, u64>) -> Self {
        let mut reads = Self::default();
        for (user, seq) in map {
            reads.mark(&user, seq);
        }
        reads
    }

    pub fn len(&self) -> usize {
        self.by_user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_only_move_forward() {
        // (user, seq marked) → moved, the user's marker after.
        let cases = [("a", 5, true, 5), ("a", 3, false, 5), ("a", 5, false, 5), ("a", 9, true, 9), ("b", 0, false, 0)];
        let mut reads = Reads::default();
        for (user, seq, moved, after) in cases {
            assert_eq!((reads.mark(user, seq), reads.get(user)), (moved, after), "{user} {seq}");
        }
        let back = Reads::restore(reads.to_map());
        assert_eq!((back.get("a"), back.len()), (9, 1));
    }

    #[test]
    fn the_marker_furthest_behind_goes_past_the_bound() {
        let mut reads = Reads::default();
        for i in 0..MAX_MARKERS as u64 {
            reads.mark(&format!("u{i}"), i + 10);
        }
        reads.mark("u0", 50_000); // u0 moves ahead: u1 is now the furthest behind
        reads.mark("late", 20_000);
        assert_eq!(reads.len(), MAX_MARKERS);
        assert_eq!((reads.get("u1"), reads.get("u0"), reads.get("late")), (0, 50_000, 20_000));
    }
}
