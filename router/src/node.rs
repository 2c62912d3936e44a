//! A router node: announcer, membership, and owner, started together.
//!
//! `gateway --standalone` embeds one of these on the in-process bus; the
//! `router` binary runs one on NATS.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bus::{Bus, BusError};
use bytes::Bytes;
use prost::Message as _;
use proto::internal;
use proto::subject;

use crate::announce::{self, Announcer};
use crate::membership::{Membership, MembershipConfig};
use crate::owner::{self, OwnerConfig, OwnerStats};

/// How often a router announces itself.
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(500);

/// Everything a router node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This router's id (`[A-Za-z0-9_-]`).
    pub id: String,
    pub membership: MembershipConfig,
    pub owner: OwnerConfig,
}

/// A running router node; dropping it stops announcing.
pub struct Node {
    /// This router's id.
    pub id: String,
    /// The ring as this router sees it.
    pub membership: Membership,
    /// Counts kept by the owner.
    pub stats: Arc<OwnerStats>,
    draining: Arc<AtomicBool>,
    _announcer: Announcer,
    owner: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Starts membership, the owner and announcements, in that order, so the
    /// router can answer before anyone routes to it.
    pub async fn start(bus: Bus, config: NodeConfig) -> Result<Self, BusError> {
        let membership = Membership::start(&bus, config.membership.clone()).await?;
        let (owner, stats) =
            owner::spawn(config.id.clone(), bus.clone(), membership.clone(), config.owner.clone()).await?;
        let draining = Arc::new(AtomicBool::new(false));
        let (id, flag) = (config.id.clone(), draining.clone());
        let announcer = announce::spawn(bus, subject::ROUTER_ANNOUNCE, ANNOUNCE_EVERY, move || {
            let a = internal::RouterAnnounce { id: id.clone(), draining: flag.load(Ordering::Relaxed) };
            Bytes::from(a.encode_to_vec())
        });
        Ok(Self { id: config.id, membership, stats, draining, _announcer: announcer, owner })
    }

    /// Marks the router draining: it leaves the ring at its next
    /// announcement, and hands its rooms to their new owners.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Drains, then waits until every room has been handed off (or
    /// `timeout` passes). Returns the rooms still held.
    pub async fn hand_off_all(&self, timeout: Duration) -> usize {
        self.drain();
        let deadline = tokio::time::Instant::now() + timeout;
        // Let the draining announcement reach everyone, our own listener too.
        tokio::time::sleep(ANNOUNCE_EVERY * 2).await;
        loop {
            let held = self.stats.rooms.load(Ordering::Relaxed) + self.stats.pushing.load(Ordering::Relaxed);
            if held == 0 || tokio::time::Instant::now() >= deadline {
                return held;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.owner.abort();
    }
}
