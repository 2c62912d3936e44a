//! Who the members of a ring are, as heard on their announcement subject:
//! routers on `sb.ctl.router` (rooms), presence replicas on `sb.ctl.presence`
//! (users).
//!
//! Every member announces itself every 500 ms; one unseen for the TTL (2 s)
//! is dead. Everyone who routes to a kind of member runs this same listener,
//! so they build the same ring from the same announcements. Draining members
//! are heard but left out of the ring: they still answer while they hand
//! their keys off.
//!
//! A listener that heard nothing at all for longer than the TTL (paused,
//! partitioned, or NATS was down) forgets everything it knew, counts a new
//! incarnation, and is unsettled until it has listened for a while again:
//! a router must not serve rooms from a ring it pieced together in the first
//! few announcements.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::watch;

use crate::ring::{Ring, DEFAULT_VNODES};
use crate::{Bus, BusError};
use proto::internal;
use proto::subject;

/// How membership is judged, and of what.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// A member unheard for this long is dead.
    pub ttl: Duration,
    /// Virtual nodes per member on the ring.
    pub vnodes: u32,
    /// How long to listen after a start or a gap before the ring is trusted.
    pub settle: Duration,
    /// Where the members announce themselves.
    pub subject: &'static str,
    /// Reads one announcement; `None` for anything else.
    pub decode: fn(&[u8]) -> Option<Member>,
    /// The gauge that shows the ring's size.
    pub gauge: &'static str,
}

/// The routers' ring, as routers see it.
impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(2),
            vnodes: DEFAULT_VNODES,
            settle: Duration::from_millis(1500),
            subject: subject::ROUTER_ANNOUNCE,
            decode: |payload| decode_announce(payload).map(|a| Member { id: a.id, draining: a.draining, addr: None }),
            gauge: "switchboard_router_ring_size",
        }
    }
}

impl MembershipConfig {
    /// The presence replicas' ring, its size shown in `gauge`.
    pub fn presence(gauge: &'static str) -> Self {
        Self {
            subject: subject::PRESENCE_ANNOUNCE,
            decode: |payload| {
                let a = internal::PresenceAnnounce::decode(payload).ok()?;
                // The address becomes a URL: a host and a port, nothing else.
                let addr_ok = !a.addr.is_empty()
                    && a.addr.len() <= 255
                    && a.addr.bytes().all(|b| b.is_ascii_graphic() && !b"/@?#".contains(&b));
                (subject::valid_node_id(&a.id) && addr_ok).then_some(Member {
                    id: a.id,
                    draining: a.draining,
                    addr: Some(a.addr),
                })
            },
            gauge,
            ..Self::default()
        }
    }
}

/// One announcement, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its node id.
    pub id: String,
    /// Heard, but out of the ring.
    pub draining: bool,
    /// Where it is reached directly (presence replicas: `host:port`).
    pub addr: Option<String>,
}

/// A router's announce as the ring listener reads it from `sb.ctl.router`:
/// `None` for a payload that is not a `RouterAnnounce` or whose id could not
/// be a node id (it would end up in a subject). Never panics, whatever the
/// bytes: anyone on the bus can publish there.
pub fn decode_announce(payload: &[u8]) -> Option<internal::RouterAnnounce> {
    internal::RouterAnnounce::decode(payload).ok().filter(|a| subject::valid_node_id(&a.id))
}

/// What the listener knows at one moment.
#[derive(Debug, Clone)]
pub struct View {
    /// The ring over live, non-draining members.
    pub ring: Arc<Ring>,
    /// Every live member, draining ones included, sorted.
    pub alive: Vec<String>,
    /// Where each live member with an address is reached.
    pub addrs: Arc<HashMap<String, String>>,
}

/// A live view of the ring; clones share it.
#[derive(Clone)]
pub struct Membership {
    view: watch::Receiver<View>,
    clock: Arc<Mutex<Clock>>,
    config: MembershipConfig,
}

/// When things were heard.
#[derive(Debug)]
struct Clock {
    /// The last announcement (our own included).
    last_heard: Option<Instant>,
    /// Bumped each time a silence longer than the TTL ends.
    incarnation: u64,
    /// The ring is trusted from this moment on.
    settled_at: Instant,
}

/// What is known of one member.
struct Seen {
    at: Instant,
    draining: bool,
    addr: Option<String>,
}

impl Membership {
    /// Subscribes to announcements and keeps the view current until every
    /// clone is dropped.
    pub async fn start(bus: &Bus, config: MembershipConfig) -> Result<Self, BusError> {
        let mut sub = bus.subscribe(config.subject.into()).await?;
        let empty = View {
            ring: Arc::new(Ring::new(Vec::<String>::new(), config.vnodes)),
            alive: Vec::new(),
            addrs: Arc::default(),
        };
        let (tx, view) = watch::channel(empty);
        let clock = Arc::new(Mutex::new(Clock {
            last_heard: None,
            incarnation: 0,
            settled_at: Instant::now() + config.settle,
        }));
        let (heard, cfg) = (clock.clone(), config.clone());
        let ring_size = config.gauge;
        tokio::spawn(async move {
            let mut members: HashMap<String, Seen> = HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    msg = sub.next() => {
                        let Some(msg) = msg else { break };
                        let Some(a) = (cfg.decode)(&msg.payload) else { continue };
                        let now = Instant::now();
                        let mut clock = heard.lock().unwrap();
                        if clock.last_heard.is_some_and(|t| now.duration_since(t) > cfg.ttl) {
                            // A gap: whatever we knew before it is stale.
                            tracing::warn!(subject = cfg.subject, "nobody heard for longer than the TTL: rebuilding the ring");
                            members.clear();
                            clock.incarnation += 1;
                            clock.settled_at = now + cfg.settle;
                        }
                        clock.last_heard = Some(now);
                        drop(clock);
                        members.insert(a.id, Seen { at: now, draining: a.draining, addr: a.addr });
                    }
                    _ = tick.tick() => {
                        if tx.is_closed() {
                            break;
                        }
                        let now = Instant::now();
                        members.retain(|_, s| now.duration_since(s.at) < cfg.ttl);
                    }
                }
                let mut alive: Vec<String> = members.keys().cloned().collect();
                alive.sort();
                let live = members.iter().filter(|(_, s)| !s.draining).map(|(id, _)| id.as_str());
                let ring = Ring::new(live, cfg.vnodes);
                let addrs: HashMap<String, String> =
                    members.iter().filter_map(|(id, s)| Some((id.clone(), s.addr.clone()?))).collect();
                let changed = {
                    let old = tx.borrow();
                    ring.version() != old.ring.version() || alive != old.alive || *old.addrs != addrs
                };
                if changed {
                    if ring.version() != tx.borrow().ring.version() {
                        tracing::info!(subject = cfg.subject, members = ?ring.members(), version = ring.version(), "ring changed");
                    }
                    metrics::gauge!(ring_size).set(ring.len() as f64);
                    tx.send_replace(View { ring: Arc::new(ring), alive, addrs: Arc::new(addrs) });
                }
            }
        });
        Ok(Self { view, clock, config })
    }

    /// The current ring.
    pub fn ring(&self) -> Arc<Ring> {
        self.view.borrow().ring.clone()
    }

    /// The current view.
    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// Waits until the view differs from the one last seen by this handle, or
    /// `timeout` passes. Returns the current ring either way.
    pub async fn changed(&mut self, timeout: Duration) -> Arc<Ring> {
        let _ = tokio::time::timeout(timeout, self.view.changed()).await;
        self.view.borrow_and_update().ring.clone()
    }

    /// Waits for the next change of the view (cancel-safe). Returns false
    /// once the listener has stopped.
    pub async fn next_change(&mut self) -> bool {
        self.view.changed().await.is_ok()
    }

    /// Whether an announcement was heard within the TTL.
    pub fn is_fresh(&self) -> bool {
        self.clock.lock().unwrap().last_heard.is_some_and(|t| t.elapsed() <= self.config.ttl)
    }

    /// Whether announcements were heard once and then not for longer than
    /// the TTL: this process was paused or cut off. (Never having heard one
    /// is just starting up.)
    pub fn is_cut_off(&self) -> bool {
        self.clock.lock().unwrap().last_heard.is_some_and(|t| t.elapsed() > self.config.ttl)
    }

    /// Counts the silences longer than the TTL that have ended.
    pub fn incarnation(&self) -> u64 {
        self.clock.lock().unwrap().incarnation
    }

    /// Whether the view has been listened to long enough to be trusted.
    pub fn is_settled(&self) -> bool {
        Instant::now() >= self.clock.lock().unwrap().settled_at
    }

    /// The TTL this membership judges by.
    pub fn ttl(&self) -> Duration {
        self.config.ttl
    }
}
