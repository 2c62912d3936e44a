//! Presence replicas as their callers see them: users split over a ring.
//!
//! Replicas started with `--advertise` announce `{id, addr}` on
//! `sb.ctl.presence`; a gateway or router keeps the ring from what it hears
//! ([`Membership`]) and sends each user's calls to the replica that owns the
//! user. `--presence-url` is only the first contact: it answers everything
//! while no replica has been heard (a single presence without
//! `--advertise` never is). The gateway's [`Reporter`](crate::Reporter)
//! keeps one lease per [`Target`] and sends each target a snapshot of its
//! users whenever the ring changes, so a replica's users reach their new
//! owner within one report after everyone hears of the change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bus::membership::{Membership, MembershipConfig};
use bus::ring::Ring;
use bus::Bus;

use crate::client::{Dial, PresenceClient};

/// Where one user's calls go: a replica (or the first contact, id `""`).
#[derive(Clone, Debug)]
pub struct Target {
    /// The replica's id; empty for the first contact.
    pub id: Arc<str>,
    /// A client for that replica alone.
    pub client: PresenceClient,
}

/// The replicas' ring and one client per replica.
pub struct Replicas {
    /// `--presence-url`, used while the ring is empty.
    first: PresenceClient,
    /// The replicas heard on `sb.ctl.presence`.
    membership: Membership,
    /// How each replica is called (`--presence-token`, `--tls-ca`).
    dial: Dial,
    /// Clients by address; only addresses in the current view are kept.
    clients: Mutex<HashMap<String, PresenceClient>>,
}

impl Replicas {
    /// Listens for replicas on `bus` (the ring's size in the gauge `gauge`),
    /// with `first` as the first contact.
    pub async fn start(bus: &Bus, first: PresenceClient, dial: Dial, gauge: &'static str) -> anyhow::Result<Self> {
        let membership = Membership::start(bus, MembershipConfig::presence(gauge)).await?;
        Ok(Self { first, membership, dial, clients: Mutex::default() })
    }

    /// The replicas' ring now.
    pub fn ring(&self) -> Arc<Ring> {
        self.membership.ring()
    }

    /// Where `user`'s calls go now.
    pub fn route(&self, user: &str) -> Target {
        let view = self.membership.view();
        let found = view.ring.owner(user).and_then(|id| Some((id, view.addrs.get(id)?)));
        match found {
            Some((id, addr)) => Target { id: Arc::from(id), client: self.client(addr) },
            None => self.first(),
        }
    }

    /// Every replica in the ring (or the first contact alone).
    pub fn targets(&self) -> Vec<Target> {
        let view = self.membership.view();
        let targets: Vec<Target> = view
            .ring
            .members()
            .iter()
            .filter_map(|id| Some(Target { id: id.clone(), client: self.client(view.addrs.get(&**id)?) }))
            .collect();
        // Forget clients of replicas that left.
        self.clients.lock().unwrap().retain(|addr, _| view.addrs.values().any(|a| a == addr));
        if targets.is_empty() {
            return vec![self.first()];
        }
        targets
    }

    fn first(&self) -> Target {
        Target { id: Arc::from(""), client: self.first.clone() }
    }

    /// The client for `addr`, made on first use (connecting lazily).
    fn client(&self, addr: &str) -> PresenceClient {
        let mut clients = self.clients.lock().unwrap();
        if let Some(client) = clients.get(addr) {
            return client.clone();
        }
        // The address was checked when heard (host:port, no path).
        let client = PresenceClient::connect_lazy(addr, &self.dial).unwrap_or_else(|e| {
            tracing::warn!(addr, error = %e, "unusable presence replica address; using --presence-url");
            self.first.clone()
        });
        clients.insert(addr.to_owned(), client.clone());
        client
    }
}
