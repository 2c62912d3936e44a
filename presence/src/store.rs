//! The TTL presence store: sessions per gateway, held by one lease each.
//!
//! Gateways report session deltas; every report renews the gateway's lease,
//! and a gateway that stops reporting (crashed, partitioned) loses all its
//! sessions when the lease lapses. Heartbeat volume is therefore per gateway,
//! not per connection. The store is synchronous and takes the time as an
//! argument, so every rule here is unit-tested without sleeping; the
//! [`PresenceService`](crate::PresenceService) supplies the clock and the
//! locking.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::pb;

use crate::located::Located;
use crate::users::{Status, Users};

/// Timing of the presence rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// How long a gateway's sessions outlive its last report.
    pub lease_ttl: Duration,
    /// How long a user whose last session ended still counts as online.
    pub offline_grace: Duration,
    /// Bounds of the offline users' direct-message inbox.
    pub inbox: crate::InboxConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(15),
            offline_grace: Duration::from_secs(5),
            inbox: crate::InboxConfig::default(),
        }
    }
}

/// A user turned online or offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The user id.
    pub user: String,
    /// The new state.
    pub online: bool,
    /// When it happened (ms since the Unix epoch): the report that brought
    /// the first session or the status, or the end of the offline grace.
    pub ts: i64,
    /// While online, the user's status ("" until one is set: `online`).
    pub status: String,
    /// Only the status changed (the user was and is online).
    pub status_only: bool,
}

/// One gateway's lease and the sessions it holds.
#[derive(Debug)]
struct Gateway {
    /// Its id, shared by the [`Located`] entries of its users.
    id: Arc<str>,
    /// When the sessions expire unless the gateway reports again.
    expires: Instant,
    /// Live sessions: connection id → user id.
    sessions: HashMap<String, String>,
}

/// Who is online, derived from the sessions gateways report.
#[derive(Debug)]
pub struct Store {
    /// The lease and grace durations.
    config: StoreConfig,
    /// Every gateway with a live lease.
    gateways: HashMap<String, Gateway>,
    /// What users see: online, in grace, or offline since when.
    users: Users,
    /// Which gateways hold each user's sessions.
    located: Located,
}

impl Store {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Self { config, gateways: HashMap::new(), users: Users::new(config.offline_grace), located: Located::default() }
    }

    /// The timing this store applies.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Applies one gateway report and renews its lease.
    ///
    /// `connected` is applied before `disconnected`. With `snapshot`,
    /// `connected` is the gateway's whole session set and `disconnected` is
    /// ignored. With `leaving`, the gateway's sessions end now and its lease
    /// is forgotten. Disconnects of unknown sessions are ignored and repeated
    /// connects are idempotent, so a gateway may safely resend.
    pub fn report(&mut self, now: Instant, now_ms: i64, req: &pb::ReportRequest) -> Vec<Change> {
        let mut changes = Vec::new();
        if req.leaving {
            self.drop_gateway(&req.gateway, now, now_ms);
            return changes;
        }
        let gateway = self.gateways.entry(req.gateway.clone()).or_insert_with(|| Gateway {
            id: req.gateway.as_str().into(),
            expires: now,
            sessions: HashMap::new(),
        });
        gateway.expires = now + self.config.lease_ttl;
        let id = gateway.id.clone();

        if req.snapshot {
            let new: HashMap<String, String> = req.connected.iter().map(|s| (s.conn.clone(), s.user.clone())).collect();
            // Starts before ends, so a user who merely moved to another
            // connection never passes through grace.
            for s in &req.connected {
                if gateway.sessions.get(&s.conn) != Some(&s.user) {
                    self.users.connect(&s.user, now_ms, status(s), &mut changes);
                    self.located.connect(&id, &s.user);
                } else {
                    self.users.set_status(&s.user, status(s), now_ms, &mut changes);
                }
            }
            for (conn, user) in &gateway.sessions {
                if new.get(conn) != Some(user) {
                    self.users.disconnect(user, now, now_ms);
                    self.located.disconnect(&id, user);
                }
            }
            gateway.sessions = new;
            return changes;
        }

        for s in &req.connected {
            match gateway.sessions.insert(s.conn.clone(), s.user.clone()) {
                // Sent again: its status changed.
                Some(previous) if previous == s.user => self.users.set_status(&s.user, status(s), now_ms, &mut changes),
                Some(previous) => {
                    // A reused connection id now belongs to someone else.
                    self.users.connect(&s.user, now_ms, status(s), &mut changes);
                    self.located.connect(&id, &s.user);
                    self.users.disconnect(&previous, now, now_ms);
                    self.located.disconnect(&id, &previous);
                }
                None => {
                    self.users.connect(&s.user, now_ms, status(s), &mut changes);
                    self.located.connect(&id, &s.user);
                }
            }
        }
        for s in &req.disconnected {
            if gateway.sessions.get(&s.conn) == Some(&s.user) {
                gateway.sessions.remove(&s.conn);
                self.users.disconnect(&s.user, now, now_ms);
                self.located.disconnect(&id, &s.user);
            }
        }
        changes
    }

    /// Expires gateways whose lease lapsed (their sessions end now) and turns
    /// users whose offline grace ran out offline.
    pub fn sweep(&mut self, now: Instant, now_ms: i64) -> Vec<Change> {
        let expired: Vec<String> =
            self.gateways.iter().filter(|(_, g)| g.expires <= now).map(|(id, _)| id.clone()).collect();
        for id in expired {
            let sessions = self.gateways.get(&id).map_or(0, |g| g.sessions.len());
            tracing::warn!(gateway = %id, sessions, "gateway lease expired, dropping its sessions");
            self.drop_gateway(&id, now, now_ms);
        }
        let mut changes = Vec::new();
        self.users.sweep(now, &mut changes);
        self.located.sweep(now);
        changes
    }

    /// The presence of each of `users`, in order.
    pub fn query(&self, now_ms: i64, users: &[String]) -> Vec<pb::UserPresence> {
        users
            .iter()
            .map(|user| {
                let (online, last_seen_ms, status) = self.users.get(user, now_ms);
                pb::UserPresence { user: user.clone(), online, last_seen_ms, status: status.to_owned() }
            })
            .collect()
    }

    /// Forgets, without a change, every user `keep` rejects, their sessions
    /// on every gateway included: they moved to another presence replica,
    /// which announces them from now on. Returns how many users went.
    pub fn hand_off(&mut self, keep: impl Fn(&str) -> bool) -> usize {
        for gateway in self.gateways.values_mut() {
            gateway.sessions.retain(|_, user| keep(user));
        }
        self.located.retain(&keep);
        self.users.forget(|user| !keep(user))
    }

    /// Users currently shown online (including those in grace).
    pub fn online_users(&self) -> usize {
        self.users.online()
    }

    /// Live sessions across all gateways.
    pub fn sessions(&self) -> usize {
        self.gateways.values().map(|g| g.sessions.len()).sum()
    }

    /// The gateways holding a live session of `user`.
    pub fn locate(&self, user: &str) -> Vec<String> {
        self.located.gateways(user)
    }

    /// A message for `user` is now in the inbox: the gateways holding the
    /// user's sessions, now or within a while, must take it
    /// ([`take_notices`](Self::take_notices)).
    pub fn enqueued(&mut self, user: &str, now: Instant) {
        self.located.enqueued(user, now);
    }

    /// (gateway, user) pairs whose gateway should take the user's inbox,
    /// noted since the last call.
    pub fn take_notices(&mut self) -> Vec<(Arc<str>, String)> {
        self.located.take_notices()
    }

    /// Users remembered as having a message queued lately.
    pub fn waiting_users(&self) -> usize {
        self.located.waiting()
    }

    /// Users remembered: online, in grace, or offline with a last-seen time.
    pub fn known_users(&self) -> usize {
        self.users.len()
    }

    /// Deadlines queued (grace, last-seen retention, inbox notices),
    /// superseded ones included: at most about twice the users.
    pub fn deadlines(&self) -> usize {
        self.users.deadlines() + self.located.deadlines()
    }

    /// Gateways holding a live lease.
    pub fn gateways(&self) -> usize {
        self.gateways.len()
    }

    /// Ends every session of a gateway and forgets its lease.
    fn drop_gateway(&mut self, id: &str, now: Instant, now_ms: i64) {
        if let Some(gateway) = self.gateways.remove(id) {
            for user in gateway.sessions.values() {
                self.users.disconnect(user, now, now_ms);
                self.located.disconnect(id, user);
            }
        }
    }
}

/// The status a reported session carries.
fn status(s: &pb::Session) -> Status {
    Status { text: s.status.clone(), at_ms: s.status_ms }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
