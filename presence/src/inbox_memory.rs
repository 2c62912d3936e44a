//! The memory inbox: kept in this process, so a restart of the service
//! loses it (gateways count restarts in
//! `switchboard_gateway_presence_restarts_total`).
//!
//! Bounded three ways, each counted in
//! `switchboard_presence_inbox_dropped_total{reason}`: messages per user
//! (the oldest goes: `full`), age (`expired`), and bytes over all users (the
//! oldest of the user being added to goes, else the message is refused:
//! `budget`). A take empties the user's whole queue under the lock, so of
//! two connections opening together each message reaches exactly one.
//! [`Inbox`] is synchronous, with time passed in, so every rule is a table
//! test; [`MemoryInbox`] puts it behind a lock with the clock and gauges.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use prost::Message as _;
use proto::pb;

use crate::inbox::{Dropped, InboxConfig, InboxStore};

/// [`Inbox`] as an [`InboxStore`].
pub struct MemoryInbox(Mutex<Inbox>);

impl MemoryInbox {
    pub fn new(config: InboxConfig) -> Self {
        Self(Mutex::new(Inbox::new(config)))
    }

    /// Runs `f` on the inbox and updates its gauges.
    fn with<T>(&self, f: impl FnOnce(&mut Inbox) -> T) -> T {
        let mut inbox = self.0.lock().unwrap();
        let out = f(&mut inbox);
        metrics::gauge!("switchboard_presence_inbox_messages").set(inbox.messages() as f64);
        metrics::gauge!("switchboard_presence_inbox_bytes").set(inbox.bytes() as f64);
        out
    }
}

impl InboxStore for MemoryInbox {
    fn put(&self, msg: pb::QueuedDirect) -> bus::BoxFuture<'_, Result<(Vec<Dropped>, bool), String>> {
        let out = self.with(|inbox| inbox.put(Instant::now(), msg));
        Box::pin(async move { Ok(out) })
    }

    fn take(&self, user: String) -> bus::BoxFuture<'_, Result<Vec<pb::QueuedDirect>, String>> {
        let out = self.with(|inbox| inbox.take(Instant::now(), &user));
        Box::pin(async move { Ok(out) })
    }

    fn sweep(&self) -> usize {
        self.with(|inbox| inbox.sweep(Instant::now()))
    }
}

struct Queued {
    msg: pb::QueuedDirect,
    size: usize,
    expires: Instant,
}

/// Every user's waiting messages, oldest first.
pub struct Inbox {
    config: InboxConfig,
    users: HashMap<String, VecDeque<Queued>>,
    /// Expiry times in the order messages were added (which is their
    /// expiry order); entries for messages gone already are skipped.
    expiries: VecDeque<(Instant, String)>,
    bytes: usize,
    messages: usize,
}

impl Inbox {
    pub fn new(config: InboxConfig) -> Self {
        Self { config, users: HashMap::new(), expiries: VecDeque::new(), bytes: 0, messages: 0 }
    }

    /// Queues `msg` for `msg.to`. Returns the messages that had to go, by
    /// reason, and whether `msg` itself was refused (always for `budget`).
    pub fn put(&mut self, now: Instant, msg: pb::QueuedDirect) -> (Vec<Dropped>, bool) {
        let mut dropped = Vec::new();
        let size = msg.encoded_len() + 64;
        if size > self.config.bytes {
            dropped.push(Dropped::Budget);
            return (dropped, true);
        }
        let to = msg.to.clone();
        let queue = self.users.entry(to.clone()).or_default();
        while queue.len() >= self.config.size.max(1) {
            let old = queue.pop_front().expect("a full queue has a front");
            self.bytes -= old.size;
            self.messages -= 1;
            dropped.push(Dropped::Full);
        }
        // Over the budget: this user's oldest go first; if that is not
        // enough (others hold the bytes), the new message is refused.
        let mut refused = false;
        while self.bytes + size > self.config.bytes {
            let Some(old) = queue.pop_front() else {
                refused = true;
                break;
            };
            self.bytes -= old.size;
            self.messages -= 1;
            dropped.push(Dropped::Budget);
        }
        if refused {
            if self.users.get(&to).is_some_and(VecDeque::is_empty) {
                self.users.remove(&to);
            }
            dropped.push(Dropped::Budget);
            return (dropped, true);
        }
        let expires = now + self.config.ttl;
        queue.push_back(Queued { msg, size, expires });
        self.bytes += size;
        self.messages += 1;
        self.expiries.push_back((expires, to));
        (dropped, false)
    }

    /// Takes `user`'s waiting messages, oldest first, leaving none.
    pub fn take(&mut self, now: Instant, user: &str) -> Vec<pb::QueuedDirect> {
        let Some(queue) = self.users.remove(user) else { return Vec::new() };
        let mut out = Vec::with_capacity(queue.len());
        for q in queue {
            self.bytes -= q.size;
            self.messages -= 1;
            if q.expires > now {
                out.push(q.msg);
            }
        }
        out
    }

    /// Drops messages past their TTL; returns how many.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while let Some((at, _)) = self.expiries.front() {
            if *at > now {
                break;
            }
            let (_, user) = self.expiries.pop_front().expect("a front");
            let Some(queue) = self.users.get_mut(&user) else { continue };
            while queue.front().is_some_and(|q| q.expires <= now) {
                let old = queue.pop_front().expect("a front");
                self.bytes -= old.size;
                self.messages -= 1;
                expired += 1;
            }
            if queue.is_empty() {
                self.users.remove(&user);
            }
        }
        expired
    }

    pub fn messages(&self) -> usize {
        self.messages
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn dm(to: &str, n: u32, len: usize) -> pb::QueuedDirect {
        pb::QueuedDirect { to: to.into(), from: format!("f{n}"), data: "x".repeat(len).into(), ts: n as i64 }
    }

    fn froms(msgs: &[pb::QueuedDirect]) -> Vec<String> {
        msgs.iter().map(|m| m.from.clone()).collect()
    }

    #[test]
    fn messages_wait_in_order_and_are_taken_once() {
        let t0 = Instant::now();
        let mut inbox = Inbox::new(InboxConfig::default());
        for n in 1..=3 {
            assert_eq!(inbox.put(t0, dm("bob", n, 1)), (vec![], false));
        }
        inbox.put(t0, dm("carol", 9, 1));
        assert_eq!(froms(&inbox.take(t0, "bob")), ["f1", "f2", "f3"]);
        assert!(inbox.take(t0, "bob").is_empty(), "never twice");
        assert_eq!(inbox.messages(), 1);
        assert_eq!(froms(&inbox.take(t0, "carol")), ["f9"]);
        assert_eq!((inbox.messages(), inbox.bytes()), (0, 0));
    }

    #[test]
    fn bounds_drop_the_oldest_and_say_why() {
        let t0 = Instant::now();
        let size = dm("bob", 1, 100).encoded_len() + 64;
        // (config, messages put for bob (n, len)) → drops, what bob gets.
        type Case = (InboxConfig, &'static [(u32, usize)], &'static [Dropped], &'static [&'static str]);
        let cfg = |size, bytes| InboxConfig { size, ttl: Duration::from_secs(60), bytes };
        let cases: Vec<Case> = vec![
            (cfg(2, 1 << 20), &[(1, 100), (2, 100), (3, 100)], &[Dropped::Full], &["f2", "f3"]),
            (cfg(10, size * 2), &[(1, 100), (2, 100), (3, 100)], &[Dropped::Budget], &["f2", "f3"]),
            // One message bigger than the whole budget is refused.
            (cfg(10, size), &[(1, 100), (2, 5000)], &[Dropped::Budget], &["f1"]),
        ];
        for (config, puts, want_drops, want) in cases {
            let mut inbox = Inbox::new(config);
            let drops: Vec<Dropped> = puts.iter().flat_map(|&(n, len)| inbox.put(t0, dm("bob", n, len)).0).collect();
            assert_eq!(drops, want_drops, "{config:?}");
            assert_eq!(froms(&inbox.take(t0, "bob")), want, "{config:?}");
        }
    }

    #[test]
    fn messages_expire() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut inbox = Inbox::new(InboxConfig { ttl, ..InboxConfig::default() });
        inbox.put(t0, dm("bob", 1, 1));
        inbox.put(t0 + Duration::from_secs(5), dm("bob", 2, 1));
        assert_eq!(inbox.sweep(t0 + Duration::from_secs(9)), 0);
        assert_eq!(inbox.sweep(t0 + ttl), 1);
        assert_eq!(froms(&inbox.take(t0 + ttl, "bob")), ["f2"]);
        // Expired but not swept yet: take leaves it out too.
        inbox.put(t0, dm("carol", 3, 1));
        assert!(inbox.take(t0 + ttl, "carol").is_empty());
        assert_eq!((inbox.messages(), inbox.bytes()), (0, 0));
    }
}
