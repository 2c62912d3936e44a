//! Joins, leaves and read markers of one room over one window, for
//! namespaces with `join_leave = "batched"`.
//!
//! With `all`, seating N users sends every member an event per join: O(N²)
//! frames. A batch nets a window's changes exactly (a user who joined and
//! left within it is not news, nor one who left and came back) and goes out
//! as one `members_changed` with at most [`LIMIT`] names per list, so N joins
//! cost O(N) work at the owner and O(N × windows) frames. The batch holds at
//! most one entry per user who changed, so it is bounded by the room's
//! membership, which the gateways bound.

use std::collections::HashMap;

use bytes::Bytes;
use proto::pb;

/// Most users named per list in one `members_changed`.
pub const LIMIT: usize = 100;

/// The net changes of one window, in the order users first changed.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// user → (order, info) of users who joined.
    joined: HashMap<String, (u64, Bytes)>,
    /// user → order of users who left.
    left: HashMap<String, u64>,
    /// user → (order, seq): read markers that moved, the latest per user.
    reads: HashMap<String, (u64, u64)>,
    next: u64,
}

impl Batch {
    /// Whether the window has nothing to announce.
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty() && self.reads.is_empty()
    }

    /// A user's read marker moved to `seq`.
    pub fn read(&mut self, user: &str, seq: u64) {
        self.next += 1;
        let next = self.next;
        self.reads.entry(user.to_owned()).and_modify(|r| r.1 = seq).or_insert((next, seq));
    }

    /// A user's first connection joined.
    pub fn joined(&mut self, user: &str, info: &Bytes) {
        if self.left.remove(user).is_none() {
            self.next += 1;
            self.joined.insert(user.to_owned(), (self.next, info.clone()));
        }
    }

    /// A user's last connection left.
    pub fn left(&mut self, user: &str) {
        if self.joined.remove(user).is_none() {
            self.next += 1;
            self.left.insert(user.to_owned(), self.next);
        }
    }

    /// The event for the window (none if it nets to nothing); the batch is
    /// empty afterwards. `count` is the room's users now.
    pub fn take(&mut self, room: &str, count: u32) -> Option<pb::MembersChanged> {
        if self.is_empty() {
            return None;
        }
        let batch = std::mem::take(self);
        let truncated = batch.joined.len() > LIMIT || batch.left.len() > LIMIT;
        let mut joined: Vec<_> = batch.joined.into_iter().collect();
        joined.sort_unstable_by_key(|(_, (order, _))| *order);
        let mut left: Vec<_> = batch.left.into_iter().collect();
        left.sort_unstable_by_key(|(_, order)| *order);
        let mut reads: Vec<_> = batch.reads.into_iter().collect();
        reads.sort_unstable_by_key(|(_, (order, _))| *order);
        Some(pb::MembersChanged {
            room: room.to_owned(),
            joined: joined
                .into_iter()
                .take(LIMIT)
                .map(|(user, (_, info))| pb::MemberJoined { room: String::new(), user, info, count: 0 })
                .collect(),
            left: left.into_iter().take(LIMIT).map(|(user, _)| user).collect(),
            count,
            truncated,
            reads: reads
                .into_iter()
                .take(LIMIT)
                .map(|(user, (_, seq))| pb::ReadMarker { room: String::new(), user, seq })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_nets_its_changes_exactly_and_caps_its_lists() {
        // (changes: +user joins, -user leaves; joined, left, truncated)
        type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], bool);
        let cases: &[Case] = &[
            (&[], &[], &[], false),
            (&["+a", "+b", "-c"], &["a", "b"], &["c"], false),
            (&["+a", "-a"], &[], &[], false),
            (&["-a", "+a"], &[], &[], false),
            (&["+a", "-a", "+a"], &["a"], &[], false),
            (&["-b", "+a", "+b", "-a", "-b"], &[], &["b"], false),
        ];
        for (changes, joined, left, truncated) in cases {
            let mut b = Batch::default();
            for c in *changes {
                match c.split_at(1) {
                    ("+", user) => b.joined(user, &Bytes::new()),
                    (_, user) => b.left(user),
                }
            }
            let Some(ev) = b.take("r", 9) else {
                assert!(joined.is_empty() && left.is_empty(), "{changes:?}");
                continue;
            };
            let users: Vec<&str> = ev.joined.iter().map(|j| j.user.as_str()).collect();
            let left_users: Vec<&str> = ev.left.iter().map(String::as_str).collect();
            assert_eq!(
                (&users[..], &left_users[..], ev.truncated, ev.count),
                (*joined, *left, *truncated, 9),
                "{changes:?}"
            );
            assert!(b.is_empty(), "taken");
        }
        let mut b = Batch::default();
        for i in 0..250 {
            b.joined(&format!("u{i:03}"), &Bytes::new());
        }
        b.left("gone");
        let ev = b.take("r", 250).unwrap();
        assert_eq!((ev.joined.len(), ev.left.len(), ev.truncated), (LIMIT, 1, true));
        assert_eq!(ev.joined[0].user, "u000", "in the order they came");
    }

    #[test]
    fn a_window_carries_each_users_latest_read_marker() {
        let mut b = Batch::default();
        for (user, seq) in [("a", 3), ("b", 4), ("a", 7)] {
            b.read(user, seq);
        }
        let ev = b.take("r", 2).expect("reads alone are news");
        let reads: Vec<(&str, u64)> = ev.reads.iter().map(|r| (r.user.as_str(), r.seq)).collect();
        assert_eq!(reads, [("a", 7), ("b", 4)]);
        assert!(ev.joined.is_empty() && ev.left.is_empty() && b.is_empty());
    }
}
