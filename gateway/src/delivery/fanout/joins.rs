//! The sessions between entering a room and attaching to it.
//!
//! A membership event matters to a session that is not yet a member only
//! if the owner sent it after answering that session's join and it reached
//! the room first ([`super::changes`]). A session counts itself here before
//! it asks the owner, so an event the room handles while nobody is counted
//! was sent before every answer still to come: it is news to the members
//! already attached and to nobody else, and the room keeps no copy of it.
//! Between join storms a room keeps no membership events (with rooms of 100
//! spread over six gateways, keeping the last 128 cost each gateway ~1 KiB
//! per connection).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A room's count of sessions joining it.
#[derive(Clone, Default)]
pub struct Joins(Arc<AtomicUsize>);

/// One session joining: counted until dropped (once attached, or given up).
pub struct Joining(Arc<AtomicUsize>);

impl Joins {
    /// Counts a session that is about to ask the owner to join.
    pub fn start(&self) -> Joining {
        self.0.fetch_add(1, Ordering::SeqCst);
        Joining(self.0.clone())
    }

    /// Whether any session is joining.
    pub fn any(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
}

impl Drop for Joining {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_counts_until_dropped() {
        let joins = Joins::default();
        assert!(!joins.any());
        let (a, b) = (joins.start(), joins.clone().start());
        drop(a);
        assert!(joins.any(), "b still joins");
        drop(b);
        assert!(!joins.any());
    }
}
