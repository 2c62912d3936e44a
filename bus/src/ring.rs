//! The consistent-hash ring: which router owns a room, which presence
//! replica owns a user.
//!
//! Built on `hashring`, which has no virtual nodes and hashes with whatever
//! `Hash` impl it is given. So each member is added as many virtual nodes, and
//! every key reaches the ring as an xxh3 of its bytes through a pass-through
//! hasher: every process, on every build and platform, computes the same owner.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use hashring::HashRing;
use xxhash_rust::xxh3::xxh3_64;

/// Virtual nodes per member unless configured otherwise.
pub const DEFAULT_VNODES: u32 = 128;

/// An immutable ring over a set of members; rebuild it when membership changes.
#[derive(Clone)]
pub struct Ring {
    /// Member ids, sorted.
    members: Vec<Arc<str>>,
    ring: HashRing<VNode, PassThrough>,
    version: u64,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("members", &self.members).field("version", &self.version).finish()
    }
}

impl Ring {
    /// A ring over `members` with `vnodes` virtual nodes each.
    pub fn new<I, S>(members: I, vnodes: u32) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut members: Vec<Arc<str>> = members.into_iter().map(|m| Arc::from(m.as_ref())).collect();
        members.sort();
        members.dedup();
        let mut ring = HashRing::with_hasher(PassThrough);
        let nodes = members
            .iter()
            .flat_map(|m| {
                (0..vnodes).map(move |i| VNode { router: m.clone(), point: xxh3_64(format!("{m}#{i}").as_bytes()) })
            })
            .collect();
        ring.batch_add(nodes);
        let version = if members.is_empty() { 0 } else { xxh3_64(members.join("\n").as_bytes()) };
        Self { members, ring, version }
    }

    /// The member that owns `key` (a room or user id), if the ring is not empty.
    pub fn owner(&self, key: &str) -> Option<&str> {
        self.ring.get(&Point(xxh3_64(key.as_bytes()))).map(|v| &*v.router)
    }

    /// A hash of the sorted member ids: equal versions mean equal rings.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The member ids, sorted.
    pub fn members(&self) -> &[Arc<str>] {
        &self.members
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &str) -> bool {
        self.members.iter().any(|m| &**m == id)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when no member is known: nothing can be served.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// One virtual node: a point on the ring belonging to a member.
#[derive(Clone, Debug)]
struct VNode {
    router: Arc<str>,
    point: u64,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.point);
    }
}

/// A key already hashed to its point.
struct Point(u64);

impl Hash for Point {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// A hasher that returns the u64 it was given: points are already xxh3.
#[derive(Clone, Default)]
struct PassThrough;

struct PassThroughHasher(u64);

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only write_u64 is used; anything else still hashes stably.
        self.0 = xxh3_64(bytes) ^ self.0.rotate_left(5);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_stable_and_known_in_advance() {
        let ring = Ring::new(["b", "a"], DEFAULT_VNODES);
        let again = Ring::new(["a", "b"], DEFAULT_VNODES);
        for i in 0..100 {
            let room = format!("room-{i}");
            assert_eq!(ring.owner(&room), again.owner(&room));
        }
        assert_eq!(ring.version(), again.version());
        assert_ne!(ring.version(), Ring::new(["a"], DEFAULT_VNODES).version());
        assert!(Ring::new(Vec::<String>::new(), 8).owner("x").is_none());
        // Pinned: a change to hashing would silently move rooms between builds.
        assert_eq!(Ring::new(["r1", "r2", "r3"], 128).owner("lobby"), Some(PINNED_LOBBY_OWNER));
    }

    const PINNED_LOBBY_OWNER: &str = "r3";

    #[test]
    fn rooms_spread_evenly_and_move_little() {
        let two = Ring::new(["r1", "r2"], DEFAULT_VNODES);
        let r1 = (0..1000).filter(|i| two.owner(&format!("room-{i}")) == Some("r1")).count();
        assert!((350..=650).contains(&r1), "r1 owns {r1} of 1000");
        let three = Ring::new(["r1", "r2", "r3"], DEFAULT_VNODES);
        let moved = (0..1000)
            .filter(|i| {
                let room = format!("room-{i}");
                two.owner(&room) != three.owner(&room)
            })
            .count();
        // Ideal is a third; only rooms moving to r3 may move.
        assert!(moved < 450, "{moved} rooms moved");
        for i in 0..1000 {
            let room = format!("room-{i}");
            if two.owner(&room) != three.owner(&room) {
                assert_eq!(three.owner(&room), Some("r3"));
            }
        }
    }
}
