//! Who the routers are, as heard on `sb.ctl.router`.
//!
//! Every router announces itself every 500 ms; a router unseen for the TTL
//! (2 s) is dead. Gateways and routers run this same listener, so they build
//! the same ring from the same announcements. Draining routers are heard but
//! left out of the ring: they still answer while they hand their rooms off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::watch;

use crate::ring::{Ring, DEFAULT_VNODES};
use proto::bus::{Bus, BusError};
use proto::{pb, subject};

/// How membership is judged.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// A router unheard for this long is dead.
    pub ttl: Duration,
    /// Virtual nodes per router on the ring.
    pub vnodes: u32,
    /// The binary, for `switchboard_<service>_ring_size`.
    pub service: &'static str,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self { ttl: Duration::from_secs(2), vnodes: DEFAULT_VNODES, service: "router" }
    }
}

/// A live view of the ring; clones share it.
#[derive(Clone)]
pub struct Membership {
    ring: watch::Receiver<Arc<Ring>>,
    /// When any announcement (our own included) was last heard.
    last_heard: Arc<Mutex<Option<Instant>>>,
}

/// What is known of one router.
struct Seen {
    at: Instant,
    draining: bool,
}

impl Membership {
    /// Subscribes to announcements and keeps the ring current until every
    /// clone is dropped.
    pub async fn start(bus: &Bus, config: MembershipConfig) -> Result<Self, BusError> {
        let mut sub = bus.subscribe(subject::ROUTER_ANNOUNCE.into()).await?;
        let (tx, ring) = watch::channel(Arc::new(Ring::new(Vec::<String>::new(), config.vnodes)));
        let last_heard = Arc::new(Mutex::new(None));
        let heard = last_heard.clone();
        let ring_size = proto::telemetry::metric_name(config.service, "ring_size");
        tokio::spawn(async move {
            let mut routers: HashMap<String, Seen> = HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    msg = sub.next() => {
                        let Some(msg) = msg else { break };
                        let Ok(a) = pb::RouterAnnounce::decode(msg.payload) else { continue };
                        if !subject::valid_node_id(&a.id) {
                            continue;
                        }
                        let now = Instant::now();
                        *heard.lock().unwrap() = Some(now);
                        routers.insert(a.id, Seen { at: now, draining: a.draining });
                    }
                    _ = tick.tick() => {
                        if tx.is_closed() {
                            break;
                        }
                        let now = Instant::now();
                        routers.retain(|_, s| now.duration_since(s.at) < config.ttl);
                    }
                }
                let live = routers.iter().filter(|(_, s)| !s.draining).map(|(id, _)| id.as_str());
                let next = Ring::new(live, config.vnodes);
                if next.version() != tx.borrow().version() {
                    tracing::info!(members = ?next.members(), version = next.version(), "ring changed");
                    metrics::gauge!(ring_size).set(next.len() as f64);
                    tx.send_replace(Arc::new(next));
                }
            }
        });
        Ok(Self { ring, last_heard })
    }

    /// The current ring.
    pub fn ring(&self) -> Arc<Ring> {
        self.ring.borrow().clone()
    }

    /// Waits until the ring differs from the one last seen by this handle, or
    /// `timeout` passes. Returns the current ring either way.
    pub async fn changed(&mut self, timeout: Duration) -> Arc<Ring> {
        let _ = tokio::time::timeout(timeout, self.ring.changed()).await;
        self.ring.borrow_and_update().clone()
    }

    /// When an announcement was last heard on `sb.ctl.router`, if ever.
    pub fn last_heard(&self) -> Option<Instant> {
        *self.last_heard.lock().unwrap()
    }
}
