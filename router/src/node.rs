//! A router node: announcer, membership, and owner, started together.
//!
//! `gateway --standalone` embeds one of these on the in-process bus; the
//! `router` binary runs one on NATS.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use proto::bus::{Bus, BusError};
use proto::{pb, subject};

use crate::announce::{self, Announcer};
use crate::membership::{Membership, MembershipConfig};
use crate::owner::{Owner, OwnerConfig};

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
    draining: Arc<AtomicBool>,
    _announcer: Announcer,
    owner: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Starts membership, the owner and announcements, in that order, so the
    /// router can answer before anyone routes to it.
    pub async fn start(bus: Bus, config: NodeConfig) -> Result<Self, BusError> {
        let membership = Membership::start(&bus, config.membership.clone()).await?;
        let owner = Owner::spawn(config.id.clone(), bus.clone(), membership.clone(), config.owner.clone()).await?;
        let draining = Arc::new(AtomicBool::new(false));
        let (id, flag) = (config.id.clone(), draining.clone());
        let announcer = announce::spawn(bus, subject::ROUTER_ANNOUNCE, ANNOUNCE_EVERY, move || {
            let a = pb::RouterAnnounce { id: id.clone(), draining: flag.load(Ordering::Relaxed) };
            Bytes::from(a.encode_to_vec())
        });
        Ok(Self { id: config.id, membership, draining, _announcer: announcer, owner })
    }

    /// Marks the router draining: it leaves the ring at its next announcement.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.owner.abort();
    }
}
