//! Where each user is connected, for direct messages.
//!
//! A direct message goes to the gateways that hold the user's sessions
//! (`sb.gateway.<id>.direct`), one bus subscription per gateway instead of
//! one per connected user; this index answers `Locate`. When no gateway
//! takes the message it waits in the inbox, and a connection that opens
//! around that moment must still get it: the connection takes the inbox
//! right after `hello`, but its session reaches presence up to one report
//! batch later. So the index remembers users whose inbox got a message
//! lately ([`WAITING_TTL`]) and, when a session of such a user is reported,
//! notes a notice for that gateway (it takes the inbox). An enqueue that
//! finds sessions already reported notices their gateways itself
//! ([`Located::enqueued`]). Whichever comes second sends the notice, so the
//! message never waits for a connection that is already open. The same
//! covers users that move between presence replicas: their sessions arrive
//! with a snapshot, later than a message queued meanwhile.
//!
//! Pure: the time is an argument and the caller sends the notices.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::deadlines::Deadlines;

/// How long after a message was queued for a user a new session of theirs
/// still makes its gateway take the inbox: well past one report batch and
/// the snapshot of a replica change.
pub const WAITING_TTL: Duration = Duration::from_secs(30);

/// Most users remembered as waiting; past it the oldest are forgotten
/// (their messages stay queued for the next connection's own take).
pub const MAX_WAITING: usize = 65_536;

/// Sessions per gateway, by user; users with recently queued messages.
#[derive(Debug, Default)]
pub struct Located {
    /// User → the gateways holding their sessions, with how many each.
    gateways: HashMap<String, Vec<(Arc<str>, u32)>>,
    /// Users with a message queued lately → when it was.
    waiting: HashMap<String, Instant>,
    /// `waiting` in the order set, for expiry (stale entries skipped).
    waiting_order: Deadlines,
    /// (gateway, user): that gateway should take the user's inbox.
    notices: Vec<(Arc<str>, String)>,
}

impl Located {
    /// A session of `user` started on `gateway`.
    pub fn connect(&mut self, gateway: &Arc<str>, user: &str) {
        let list = self.gateways.entry(user.to_owned()).or_default();
        match list.iter_mut().find(|(g, _)| g == gateway) {
            Some((_, n)) => *n += 1,
            None => list.push((gateway.clone(), 1)),
        }
        if self.waiting.contains_key(user) {
            self.notices.push((gateway.clone(), user.to_owned()));
        }
    }

    /// A session of `user` on `gateway` ended.
    pub fn disconnect(&mut self, gateway: &str, user: &str) {
        let Some(list) = self.gateways.get_mut(user) else { return };
        if let Some(i) = list.iter().position(|(g, _)| &**g == gateway) {
            list[i].1 -= 1;
            if list[i].1 == 0 {
                list.swap_remove(i);
            }
        }
        if list.is_empty() {
            self.gateways.remove(user);
        }
    }

    /// The gateways holding a session of `user`.
    pub fn gateways(&self, user: &str) -> Vec<String> {
        self.gateways.get(user).map(|l| l.iter().map(|(g, _)| g.to_string()).collect()).unwrap_or_default()
    }

    /// A message for `user` was queued (and is stored): remembers that, and
    /// notices the gateways that already hold a session of the user.
    pub fn enqueued(&mut self, user: &str, now: Instant) {
        self.sweep(now);
        if self.waiting.insert(user.to_owned(), now).is_none() && self.waiting.len() > MAX_WAITING {
            self.forget_oldest();
        }
        let waiting = &self.waiting;
        self.waiting_order.push(now, user, waiting.len(), |at, user| waiting.get(user) == Some(at));
        for (g, _) in self.gateways.get(user).into_iter().flatten() {
            self.notices.push((g.clone(), user.to_owned()));
        }
    }

    /// The notices noted since the last call.
    pub fn take_notices(&mut self) -> Vec<(Arc<str>, String)> {
        std::mem::take(&mut self.notices)
    }

    /// Forgets users whose messages were queued longer than [`WAITING_TTL`] ago.
    pub fn sweep(&mut self, now: Instant) {
        let Some(due) = now.checked_sub(WAITING_TTL) else { return };
        while let Some((at, user)) = self.waiting_order.pop_due(due) {
            if self.waiting.get(&user) == Some(&at) {
                self.waiting.remove(&user);
            }
        }
    }

    /// Forgets every user `keep` rejects (moved to another replica).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.gateways.retain(|user, _| keep(user));
        self.waiting.retain(|user, _| keep(user));
        self.waiting_order.retain(keep);
    }

    /// Users with at least one session.
    #[cfg(test)]
    pub fn users(&self) -> usize {
        self.gateways.len()
    }

    /// Notice deadlines queued, superseded ones included.
    pub fn deadlines(&self) -> usize {
        self.waiting_order.len()
    }

    /// Users remembered as waiting for their inbox.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    fn forget_oldest(&mut self) {
        while let Some((at, user)) = self.waiting_order.pop_front() {
            if self.waiting.get(&user) == Some(&at) {
                self.waiting.remove(&user);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(id: &str) -> Arc<str> {
        Arc::from(id)
    }

    #[test]
    fn sessions_count_per_gateway() {
        let mut l = Located::default();
        l.connect(&gw("g1"), "ann");
        l.connect(&gw("g1"), "ann");
        l.connect(&gw("g2"), "ann");
        let mut g = l.gateways("ann");
        g.sort();
        assert_eq!(g, ["g1", "g2"]);
        l.disconnect("g1", "ann");
        assert_eq!(l.gateways("ann").len(), 2, "one session is left on g1");
        l.disconnect("g1", "ann");
        assert_eq!(l.gateways("ann"), ["g2"]);
        l.disconnect("g3", "ann");
        l.disconnect("g2", "bob");
        l.disconnect("g2", "ann");
        assert_eq!((l.gateways("ann"), l.users()), (vec![], 0));
    }

    /// Each row: what happens, in order; then the notices expected.
    #[test]
    fn notices_go_out_whichever_of_session_and_message_comes_second() {
        let t0 = Instant::now();
        let later = |s| t0 + Duration::from_secs(s);
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, &[(&str, u64)], &[(&str, &str)])] = &[
            ("message first, session later", &[("queue ann", 0), ("connect g1 ann", 1)], &[("g1", "ann")]),
            ("session first, message later", &[("connect g1 ann", 0), ("queue ann", 1)], &[("g1", "ann")]),
            (
                "two gateways hold the user",
                &[("connect g1 ann", 0), ("connect g2 ann", 0), ("queue ann", 1)],
                &[("g1", "ann"), ("g2", "ann")],
            ),
            ("no message, no notice", &[("connect g1 ann", 0)], &[]),
            ("another user's message", &[("queue bob", 0), ("connect g1 ann", 1)], &[]),
            ("a session long after the message", &[("queue ann", 0), ("connect g1 ann", 31)], &[]),
            (
                "requeued keeps it fresh",
                &[("queue ann", 0), ("queue ann", 20), ("connect g1 ann", 40)],
                &[("g1", "ann")],
            ),
        ];
        for (name, steps, want) in cases {
            let mut l = Located::default();
            for (step, at) in steps.iter() {
                let words: Vec<&str> = step.split(' ').collect();
                match words[..] {
                    ["queue", user] => l.enqueued(user, later(*at)),
                    ["connect", g, user] => {
                        l.sweep(later(*at));
                        l.connect(&gw(g), user)
                    }
                    _ => unreachable!(),
                }
            }
            let got: Vec<(String, String)> = l.take_notices().into_iter().map(|(g, u)| (g.to_string(), u)).collect();
            let want: Vec<(String, String)> = want.iter().map(|(g, u)| (g.to_string(), u.to_string())).collect();
            assert_eq!(got, want, "{name}");
            assert!(l.take_notices().is_empty(), "{name}: taken once");
        }
    }

    #[test]
    fn waiting_users_are_bounded_and_moved_users_forgotten() {
        let mut l = Located::default();
        let now = Instant::now();
        for i in 0..MAX_WAITING + 10 {
            l.enqueued(&format!("u{i}"), now);
        }
        assert_eq!(l.waiting(), MAX_WAITING);
        l.connect(&gw("g1"), "u0");
        assert!(l.take_notices().is_empty(), "the oldest was forgotten");
        l.connect(&gw("g1"), "u20");
        l.retain(|u| u != "u20");
        assert_eq!((l.gateways("u20"), l.waiting()), (vec![], MAX_WAITING - 1));
    }
}
