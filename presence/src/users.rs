//! Per-user presence: online, in grace, or offline with a last-seen time.
//!
//! The [`Store`](crate::Store) tracks sessions per gateway; this table turns
//! session starts and ends into what users see. A user is online while any
//! session is live. When the last one ends the user stays online for the
//! offline grace, so a phone switching from Wi-Fi to cellular (disconnect,
//! reconnect a second later) does not flap presence for everyone watching.
//! Offline users are remembered only for [`LAST_SEEN_RETENTION`], so memory
//! follows the number of recently active users, not every user ever seen.
//!
//! An online user also has a status (`away`, `busy`, …): the one set last,
//! by its time, on any of the user's sessions, so two devices agree whatever
//! order their reports arrive in. Going offline forgets it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::deadlines::Deadlines;
use crate::Change;

/// How long an offline user's last-seen time is remembered; after that a query
/// answers `last_seen_ms = 0` (never seen).
pub const LAST_SEEN_RETENTION: Duration = Duration::from_secs(3600);

/// A status and when it was set (ms since the Unix epoch; 0: never set,
/// shown as `online`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) text: String,
    pub(crate) at_ms: i64,
}

/// What the store knows about one user.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// At least one live session.
    Online {
        /// Live sessions across all gateways.
        sessions: usize,
        status: Status,
    },
    /// No live session, but still shown online until `until`.
    Grace {
        status: Status,
        /// When the user turns offline unless a session starts first.
        until: Instant,
        /// The wall-clock time of `until`: the user's last-seen time if they
        /// do turn offline.
        offline_ms: i64,
    },
    /// Offline; kept only to answer last-seen queries.
    Offline {
        /// When the user turned offline (wall clock, ms).
        since_ms: i64,
        /// When this entry is dropped.
        forget_at: Instant,
    },
}

/// The presence of every recently seen user.
///
/// Time is passed in and must not go backwards: deadlines are kept in queues
/// in the order they were set, which is also the order they come due.
#[derive(Debug)]
pub(crate) struct Users {
    /// How long a user with no live session still counts as online.
    grace: Duration,
    /// Every user that is online, in grace, or recently offline.
    users: HashMap<String, State>,
    /// Grace deadlines in the order they were set. An entry whose user has
    /// reconnected (or re-entered grace later) since is skipped when popped.
    graces: Deadlines,
    /// When offline users are forgotten, with the same lazy skipping.
    forgets: Deadlines,
    /// Users online or in grace: kept as a count so metrics need no scan.
    online: usize,
}

impl Users {
    /// An empty table with the given offline grace.
    pub(crate) fn new(grace: Duration) -> Self {
        Self { grace, users: HashMap::new(), graces: Deadlines::default(), forgets: Deadlines::default(), online: 0 }
    }

    /// A session of `user` started, with the status set on it (if any).
    pub(crate) fn connect(&mut self, user: &str, now_ms: i64, status: Status, changes: &mut Vec<Change>) {
        if let Some(state) = self.users.get_mut(user) {
            match state {
                State::Online { sessions, .. } => {
                    *sessions += 1;
                    self.set_status(user, status, now_ms, changes);
                    return;
                }
                // Back within grace: nobody saw the user leave, so say nothing.
                State::Grace { status: kept, .. } => {
                    *state = State::Online { sessions: 1, status: std::mem::take(kept) };
                    self.set_status(user, status, now_ms, changes);
                    return;
                }
                State::Offline { .. } => {}
            }
        }
        let text = status.text.clone();
        self.users.insert(user.to_owned(), State::Online { sessions: 1, status });
        self.online += 1;
        changes.push(Change { user: user.to_owned(), online: true, ts: now_ms, status: text, status_only: false });
    }

    /// A session of an online `user` says it set `status`: it becomes the
    /// user's if it is newer than the one the user has.
    pub(crate) fn set_status(&mut self, user: &str, status: Status, now_ms: i64, changes: &mut Vec<Change>) {
        let Some(State::Online { status: current, .. } | State::Grace { status: current, .. }) =
            self.users.get_mut(user)
        else {
            return;
        };
        if status.at_ms <= current.at_ms {
            return;
        }
        let changed = status.text != current.text;
        *current = status;
        if changed {
            let status = current.text.clone();
            changes.push(Change { user: user.to_owned(), online: true, ts: now_ms, status, status_only: true });
        }
    }

    /// A session of `user` ended; the last one starts the offline grace.
    pub(crate) fn disconnect(&mut self, user: &str, now: Instant, now_ms: i64) {
        let Some(state) = self.users.get_mut(user) else {
            debug_assert!(false, "session end for unknown user {user}");
            return;
        };
        match state {
            State::Online { sessions, .. } if *sessions > 1 => *sessions -= 1,
            State::Online { status, .. } => {
                let until = now + self.grace;
                let offline_ms = now_ms.saturating_add(self.grace.as_millis() as i64);
                *state = State::Grace { until, offline_ms, status: std::mem::take(status) };
                let users = &self.users;
                self.graces.push(
                    until,
                    user,
                    users.len(),
                    |at, user| matches!(users.get(user), Some(State::Grace { until, .. }) if until == at),
                );
            }
            State::Grace { .. } | State::Offline { .. } => {
                debug_assert!(false, "session end for {user} without a live session");
            }
        }
    }

    /// Turns users whose grace ran out offline and forgets users offline for
    /// longer than [`LAST_SEEN_RETENTION`].
    pub(crate) fn sweep(&mut self, now: Instant, changes: &mut Vec<Change>) {
        while let Some((until, user)) = self.graces.pop_due(now) {
            let Some(state) = self.users.get_mut(&user) else {
                continue;
            };
            let State::Grace { until: current, offline_ms, .. } = *state else {
                continue;
            };
            if current != until {
                continue;
            }
            let forget_at = until + LAST_SEEN_RETENTION;
            *state = State::Offline { since_ms: offline_ms, forget_at };
            self.online -= 1;
            let users = &self.users;
            self.forgets.push(
                forget_at,
                &user,
                users.len(),
                |at, user| matches!(users.get(user), Some(State::Offline { forget_at, .. }) if forget_at == at),
            );
            changes.push(Change { user, online: false, ts: offline_ms, status: String::new(), status_only: false });
        }
        while let Some((at, user)) = self.forgets.pop_due(now) {
            if let Some(State::Offline { forget_at, .. }) = self.users.get(&user) {
                if *forget_at == at {
                    self.users.remove(&user);
                }
            }
        }
    }

    /// Drops every user `gone` names, whatever their state, without a
    /// change (their deadlines are skipped when popped). Returns how many.
    pub(crate) fn forget(&mut self, gone: impl Fn(&str) -> bool) -> usize {
        let before = self.users.len();
        let mut online = 0;
        self.users.retain(|user, state| {
            let drop = gone(user);
            if drop && matches!(state, State::Online { .. } | State::Grace { .. }) {
                online += 1;
            }
            !drop
        });
        self.online -= online;
        before - self.users.len()
    }

    /// Whether `user` counts as online, when they were last seen (`now_ms`
    /// while online, 0 if never or long ago), and their status while online.
    pub(crate) fn get(&self, user: &str, now_ms: i64) -> (bool, i64, &str) {
        match self.users.get(user) {
            Some(State::Online { status, .. } | State::Grace { status, .. }) => (true, now_ms, &status.text),
            Some(State::Offline { since_ms, .. }) => (false, *since_ms, ""),
            None => (false, 0, ""),
        }
    }

    /// Users online or in grace.
    pub(crate) fn online(&self) -> usize {
        self.online
    }

    /// Users remembered in any state.
    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }

    /// Grace and retention deadlines queued, superseded ones included.
    pub(crate) fn deadlines(&self) -> usize {
        self.graces.len() + self.forgets.len()
    }
}
