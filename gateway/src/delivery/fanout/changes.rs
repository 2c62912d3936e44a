//! A room's recent membership events at this gateway (`joined`, `left`,
//! `members_changed`), for members whose join answer they overtook.
//!
//! The owner answers a join and goes on announcing; the member attaches here
//! only when its answer arrives, so events the owner sent in between reach
//! the room first and would miss the member, leaving its count behind. Every
//! membership event carries the room's membership version after it, and the
//! join answer the version it saw: on attach the member gets exactly the
//! events after its answer. Events are kept only while a session is
//! joining ([`super::joins`]). The ring is bounded in entries and bytes (and
//! counted in `switchboard_gateway_room_buffer_bytes{buffer="changes"}`); a
//! member further behind than it reaches gets the events it still holds and
//! then one `members_changed` with empty lists, `truncated: true` and the
//! exact count: the lists are incomplete, the count is not.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use proto::client::{Encoding, Event};
use proto::pb;

use super::buffer::Tally;

/// One kept event.
struct Kept {
    version: u64,
    event: Change,
}

/// The membership events kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Joined(pb::MemberJoined),
    Left(pb::MemberLeft),
    Changed(pb::MembersChanged),
}

impl Change {
    /// The client frame.
    pub fn encode(&self, encoding: Encoding) -> Bytes {
        match self {
            Change::Joined(j) => {
                Event::Joined { room: &j.room, user: &j.user, info: &j.info, count: j.count }.encode(encoding)
            }
            Change::Left(l) => Event::Left { room: &l.room, user: &l.user, count: l.count }.encode(encoding),
            Change::Changed(c) => Event::MembersChanged(c).encode(encoding),
        }
    }

    /// The user the event is about (a member is not told of itself).
    pub fn about(&self) -> Option<&str> {
        match self {
            Change::Joined(j) => Some(&j.user),
            Change::Left(l) => Some(&l.user),
            Change::Changed(_) => None,
        }
    }

    /// Users in the room after the event.
    fn count(&self) -> u32 {
        match self {
            Change::Joined(j) => j.count,
            Change::Left(l) => l.count,
            Change::Changed(c) => c.count,
        }
    }

    fn size(&self) -> usize {
        let lists = |c: &pb::MembersChanged| {
            c.joined.iter().map(|j| j.user.len() + j.info.len()).sum::<usize>()
                + c.left.iter().map(String::len).sum::<usize>()
        };
        64 + match self {
            Change::Joined(j) => j.room.len() + j.user.len() + j.info.len(),
            Change::Left(l) => l.room.len() + l.user.len(),
            Change::Changed(c) => c.room.len() + lists(c),
        }
    }
}

/// Recent membership events of one room, oldest first.
pub struct Changes {
    epoch: Option<Arc<str>>,
    ring: VecDeque<Kept>,
    /// The newest version dropped from the ring (0: none).
    dropped: u64,
    tally: Tally,
    max_len: usize,
    max_bytes: usize,
}

impl Changes {
    pub fn new(max_len: usize, max_bytes: usize) -> Self {
        Self { epoch: None, ring: VecDeque::new(), dropped: 0, tally: Tally::new("changes"), max_len, max_bytes }
    }

    /// Keeps an event of `epoch` at membership `version`. A new epoch starts
    /// over: versions count from its start.
    pub fn push(&mut self, epoch: &str, version: u64, event: Change) {
        if self.epoch.as_deref() != Some(epoch) {
            self.clear();
            self.epoch = Some(epoch.into());
        }
        self.tally.add(event.size());
        self.ring.push_back(Kept { version, event });
        while self.ring.len() > self.max_len || self.tally.bytes() > self.max_bytes {
            let Some(old) = self.ring.pop_front() else { break };
            self.tally.sub(old.event.size());
            self.dropped = self.dropped.max(old.version);
        }
    }

    fn clear(&mut self) {
        self.ring.clear();
        self.tally.sub(self.tally.bytes());
        self.dropped = 0;
    }

    /// Forgets every kept event and frees the ring: nobody can need them.
    pub fn release(&mut self) {
        if self.ring.capacity() > 0 {
            self.clear();
            self.ring = VecDeque::new();
        }
    }

    /// Events kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// What a member answered at (`epoch`, `version`) missed, for user
    /// `user`: the kept events after its version that are not about itself,
    /// then, when the ring no longer reaches back to it, a count-only
    /// `members_changed` for `room`.
    pub fn missed(&self, room: &str, epoch: &str, version: u64, user: &str) -> Vec<Change> {
        if self.epoch.as_deref() != Some(epoch) {
            return Vec::new();
        }
        let mut out: Vec<Change> = self
            .ring
            .iter()
            .filter(|c| c.version > version && c.event.about() != Some(user))
            .map(|c| c.event.clone())
            .collect();
        if self.dropped > version {
            let count = self.ring.back().map_or(0, |c| c.event.count());
            let changed = pb::MembersChanged { room: room.to_owned(), count, truncated: true, ..Default::default() };
            out.push(Change::Changed(changed));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(user: &str, count: u32) -> Change {
        Change::Joined(pb::MemberJoined { room: "r".into(), user: user.into(), count, ..Default::default() })
    }

    fn left(user: &str, count: u32) -> Change {
        Change::Left(pb::MemberLeft { room: "r".into(), user: user.into(), count })
    }

    fn names(events: &[Change]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Change::Joined(j) => format!("+{}={}", j.user, j.count),
                Change::Left(l) => format!("-{}={}", l.user, l.count),
                Change::Changed(c) => format!("changed={}{}", c.count, if c.truncated { " truncated" } else { "" }),
            })
            .collect()
    }

    #[test]
    fn a_member_gets_what_came_after_its_answer() {
        // (ring bound, answered at (epoch, version), user) → what it missed.
        let cases: &[(usize, &str, u64, &str, &[&str])] = &[
            (10, "e", 0, "z", &["+a=1", "+b=2", "-a=1", "+c=2"]),
            (10, "e", 2, "z", &["-a=1", "+c=2"]),
            (10, "e", 4, "z", &[]),
            // Not told about itself.
            (10, "e", 1, "c", &["+b=2", "-a=1"]),
            // Another epoch's versions mean nothing here.
            (10, "old", 0, "z", &[]),
            // Behind what the ring holds: what it holds, then the count.
            (2, "e", 1, "z", &["-a=1", "+c=2", "changed=2 truncated"]),
            (2, "e", 2, "z", &["-a=1", "+c=2"]),
        ];
        for &(bound, epoch, version, user, want) in cases {
            let mut changes = Changes::new(bound, 1 << 20);
            for (v, e) in [joined("a", 1), joined("b", 2), left("a", 1), joined("c", 2)].into_iter().enumerate() {
                changes.push("e", v as u64 + 1, e);
            }
            assert_eq!(names(&changes.missed("r", epoch, version, user)), want, "{bound} {epoch} {version} {user}");
        }
    }

    #[test]
    fn batches_are_replayed_and_a_new_epoch_starts_over() {
        let mut changes = Changes::new(10, 1 << 20);
        let batch = |count| Change::Changed(pb::MembersChanged { room: "r".into(), count, ..Default::default() });
        changes.push("e", 40, batch(40));
        changes.push("e", 90, batch(80));
        assert_eq!(names(&changes.missed("r", "e", 50, "z")), ["changed=80"]);
        assert_eq!(names(&changes.missed("r", "e", 10, "z")), ["changed=40", "changed=80"]);
        changes.push("e2", 3, batch(3));
        assert_eq!(names(&changes.missed("r", "e2", 0, "z")), ["changed=3"]);
        assert!(changes.missed("r", "e", 10, "z").is_empty());
    }

    #[test]
    fn the_ring_is_bounded_in_bytes_too() {
        let mut changes = Changes::new(1000, 300);
        let big = |user: &str, count| {
            let info = bytes::Bytes::from(vec![b'x'; 100]);
            Change::Joined(pb::MemberJoined { room: "r".into(), user: user.into(), info, count })
        };
        for v in 1..=10 {
            changes.push("e", v, big(&format!("u{v}"), v as u32));
        }
        assert!(changes.tally.bytes() <= 300);
        let missed = names(&changes.missed("r", "e", 0, "z"));
        assert_eq!(missed.last().map(String::as_str), Some("changed=10 truncated"));
        assert!(missed.len() <= 3, "{missed:?}");
    }
}
