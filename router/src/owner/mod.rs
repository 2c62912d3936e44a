//! The room owner: the state machine of [`state`] (with [`apply`] and
//! [`handoff`]), driven by one task that feeds it requests, gateway
//! announcements, ring changes and the answers of the calls it asks for,
//! and carries its actions out in order: replies, room events, pulls and
//! pushes of room state.

mod apply;
mod durable;
mod handoff;
mod state;
#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{Bus, BusError, Subscription};
use bytes::Bytes;
use prost::Message as _;
use proto::internal::{self, router_reply, router_request};
use proto::subject;
use tokio::sync::mpsc;

use crate::history::HistoryConfig;
use crate::membership::Membership;
use crate::namespace::Namespaces;
use crate::store::{Append, Loaded, Store, StoreError};
pub use state::{Action, Cluster, Notice, Owner, Pull};

/// Waiting for a push the previous owner says is under way.
const PUSH_WAIT: Duration = Duration::from_secs(1);
/// Bound on one handoff exchange.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(2);

/// Default of [`OwnerConfig::history_budget`]: 512 MiB.
pub const DEFAULT_HISTORY_BUDGET: usize = 512 << 20;

/// How the owner keeps rooms.
#[derive(Debug, Clone)]
pub struct OwnerConfig {
    /// Policy per room prefix: history bounds, join/leave events, the member cap.
    pub namespaces: Arc<Namespaces>,
    /// Bytes of history all rooms may hold together; past it the oldest
    /// message of all is evicted.
    pub history_budget: usize,
    /// Longest `members` list returned (the count is always exact).
    pub members_limit: usize,
    /// Most message bytes in one reply; the rest is paged with `history`.
    pub reply_bytes: usize,
    /// Members of a gateway unheard for this long are dropped.
    pub gateway_ttl: Duration,
    /// Virtual nodes per router (to rebuild rings of the other routers).
    pub vnodes: u32,
    /// Where membership events go for the application's backend.
    pub webhooks: Option<shell::webhook::Webhooks>,
    /// Where rooms' streams are kept beyond this process.
    pub store: Arc<dyn Store>,
}

impl Default for OwnerConfig {
    fn default() -> Self {
        Self {
            namespaces: Arc::new(Namespaces::default_only(HistoryConfig::default())),
            history_budget: DEFAULT_HISTORY_BUDGET,
            members_limit: 100,
            reply_bytes: 512 * 1024,
            gateway_ttl: Duration::from_secs(5),
            vnodes: crate::ring::DEFAULT_VNODES,
            webhooks: None,
            store: Arc::new(crate::store::MemoryStore),
        }
    }
}

/// Counts other tasks can read (the server API, drain).
#[derive(Debug, Default)]
pub struct OwnerStats {
    /// Rooms held.
    pub rooms: AtomicUsize,
    /// Member connections over all rooms.
    pub members: AtomicUsize,
    /// Handoffs sent and not yet acknowledged.
    pub pushing: AtomicUsize,
}

/// Answers of background work, fed back to the machine.
enum Done {
    Pulled(Pull, Result<internal::PullReply, BusError>),
    Pushed { room: String, refused: Option<internal::RoomState> },
    PushOverdue(String),
    Flush(String),
    Loaded(String, Result<Loaded, StoreError>),
    Appended { id: u64, msg: bus::Message, append: Append, result: Result<internal::StoreFence, StoreError> },
}

/// Subscribes to `sb.router.<id>` and gateway announcements, then serves
/// requests until the bus closes.
pub async fn spawn(
    id: String,
    bus: Bus,
    membership: Membership,
    config: OwnerConfig,
) -> Result<(tokio::task::JoinHandle<()>, Arc<OwnerStats>), BusError> {
    let requests = bus.subscribe(subject::router(&id)).await?;
    let gateways = bus.subscribe(subject::GATEWAY_ANNOUNCE.into()).await?;
    let stats = Arc::new(OwnerStats::default());
    let (webhooks, store) = (config.webhooks.clone(), config.store.clone());
    let owner = Owner::new(id.clone(), config, membership.incarnation(), stats.clone(), Instant::now());
    let task = Task { id, bus, membership, webhooks, store, done: mpsc::unbounded_channel() };
    Ok((tokio::spawn(task.run(owner, requests, gateways)), stats))
}

struct Task {
    id: String,
    bus: Bus,
    membership: Membership,
    webhooks: Option<shell::webhook::Webhooks>,
    store: Arc<dyn Store>,
    done: (mpsc::UnboundedSender<Done>, mpsc::UnboundedReceiver<Done>),
}

impl Task {
    /// The cluster as the membership sees it now.
    fn cluster(&self) -> Cluster {
        let m = &self.membership;
        Cluster {
            ring: m.ring(),
            cut_off: m.is_cut_off(),
            incarnation: m.incarnation(),
            trusted: m.is_fresh() && m.is_settled(),
        }
    }

    async fn run(mut self, mut owner: Owner, mut requests: Subscription, mut gateways: Subscription) {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        let mut view = self.membership.clone();
        let mut out = Vec::new();
        owner.on_view_change(&self.membership.view().alive, &self.cluster(), Instant::now(), &mut out);
        self.carry_out(&mut out).await;
        loop {
            tokio::select! {
                msg = requests.next() => {
                    let Some(msg) = msg else { break };
                    let started = Instant::now();
                    let kind = owner.on_request(msg, &self.cluster(), started, &mut out);
                    self.carry_out(&mut out).await;
                    crate::metrics::request(kind, started.elapsed());
                }
                msg = gateways.next() => {
                    let Some(msg) = msg else { break };
                    if let Ok(a) = internal::GatewayAnnounce::decode(msg.payload) {
                        owner.on_gateway(a.id, Instant::now());
                    }
                }
                Some(done) = self.done.1.recv() => {
                    let (c, now) = (self.cluster(), Instant::now());
                    match done {
                        Done::Pulled(pull, result) => owner.on_pulled(pull, result, &c, now, &mut out),
                        Done::Pushed { room, refused } => owner.on_pushed(room, refused, now),
                        Done::PushOverdue(room) => owner.on_push_overdue(room, &c, now, &mut out),
                        Done::Flush(room) => owner.on_flush(&room, &mut out),
                        Done::Loaded(room, result) => owner.on_loaded(room, result, &c, now, &mut out),
                        Done::Appended { id, msg, append, result } => {
                            owner.on_appended(id, msg, append, result, &c, now, &mut out)
                        }
                    }
                    self.carry_out(&mut out).await;
                }
                alive = view.next_change() => {
                    if !alive {
                        break;
                    }
                    owner.on_view_change(&self.membership.view().alive, &self.cluster(), Instant::now(), &mut out);
                    self.carry_out(&mut out).await;
                }
                _ = sweep.tick() => {
                    owner.sweep(&self.cluster(), Instant::now(), &mut out);
                    self.carry_out(&mut out).await;
                }
            }
        }
    }

    /// Carries out the machine's actions, in order.
    async fn carry_out(&self, out: &mut Vec<Action>) {
        for action in out.drain(..) {
            match action {
                Action::Reply(msg, reply) => {
                    if let Err(e) = self.bus.respond(&msg, Bytes::from(reply.encode_to_vec())).await {
                        tracing::warn!(error = %e, "reply not sent");
                    }
                }
                // A lost event is recovered by gateways as a gap.
                Action::Emit(event) => {
                    if let Err(e) = self.bus.publish_msg(subject::room(&event.room), &event).await {
                        crate::metrics::event_lost();
                        tracing::warn!(error = %e, room = event.room, "room event not published");
                    }
                }
                Action::Pull(pull) => self.pull(pull),
                Action::Push { room, to, state } => self.push(room, to, state),
                Action::PushOverdue(room) => self.later(PUSH_WAIT, Done::PushOverdue(room)),
                Action::Flush { room, after } => self.later(after, Done::Flush(room)),
                Action::Notify(notice) => self.notify(notice),
                Action::Load { room, epoch, limits } => self.load(room, epoch, limits),
                Action::Append { id, msg, append } => self.append(id, msg, append),
                Action::SaveRead { msg, room, user, seq } => self.save_read(msg, room, user, seq),
            }
        }
    }

    /// Queues a webhook event for `notice`.
    fn notify(&self, notice: Notice) {
        let Some(webhooks) = &self.webhooks else { return };
        let (ty, room, user) = match notice {
            Notice::Occupied { room } => ("room_occupied", room, None),
            Notice::Vacated { room } => ("room_vacated", room, None),
            Notice::Joined { room, user } => ("member_joined", room, Some(user)),
            Notice::Left { room, user } => ("member_left", room, Some(user)),
        };
        let mut fields = serde_json::Map::new();
        fields.insert("room".into(), room.into());
        if let Some(user) = user {
            fields.insert("user".into(), user.into());
        }
        webhooks.emit(ty, fields);
    }

    /// Feeds `done` back to the machine after `after`.
    fn later(&self, after: Duration, done: Done) {
        let tx = self.done.0.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(done);
        });
    }

    /// Loads a room from the store in the background.
    fn load(&self, room: String, epoch: String, limits: HistoryConfig) {
        let (store, done) = (self.store.clone(), self.done.0.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let result = store.load(room.clone(), epoch, limits).await;
            crate::metrics::store_duration("load", started.elapsed());
            let _ = done.send(Done::Loaded(room, result));
        });
    }

    /// Stores a message in the background (one per room at a time).
    fn append(&self, id: u64, msg: bus::Message, append: Append) {
        let (store, done) = (self.store.clone(), self.done.0.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let result = store.append(append.clone()).await;
            crate::metrics::store_duration("append", started.elapsed());
            let _ = done.send(Done::Appended { id, msg, append, result });
        });
    }

    /// Stores a read marker, then acknowledges it.
    fn save_read(&self, msg: bus::Message, room: String, user: String, seq: u64) {
        let (store, bus) = (self.store.clone(), self.bus.clone());
        tokio::spawn(async move {
            let answer = match store.save_read(room, user, seq).await {
                Ok(()) => state::reply(router_reply::Kind::Ack(internal::Ack {})),
                Err(e) => state::error(proto::client::ErrorCode::Unavailable, e.to_string()),
            };
            if let Err(e) = bus.respond(&msg, Bytes::from(answer.encode_to_vec())).await {
                tracing::warn!(error = %e, "reply not sent");
            }
        });
    }

    /// Asks a router for a room's state in the background.
    fn pull(&self, pull: Pull) {
        let req = internal::RouterRequest {
            ring_version: 0,
            room: pull.room.clone(),
            kind: Some(router_request::Kind::Pull(internal::PullRequest { to: self.id.clone() })),
        };
        let (bus, done) = (self.bus.clone(), self.done.0.clone());
        tokio::spawn(async move {
            let result = bus
                .request(subject::router(&pull.from), Bytes::from(req.encode_to_vec()), HANDOFF_TIMEOUT)
                .await
                .and_then(|b| match crate::client::decode_reply(&b) {
                    Some(router_reply::Kind::Pull(p)) => Ok(p),
                    _ => Err(BusError::Broker("unexpected answer to a pull".into())),
                });
            let _ = done.send(Done::Pulled(pull, result));
        });
    }

    /// Hands `room` to `to` in the background, three tries.
    fn push(&self, room: String, to: String, state: internal::RoomState) {
        let handoff = internal::HandoffRequest { from: self.id.clone(), state: Some(state.clone()) };
        let req = internal::RouterRequest {
            ring_version: 0,
            room: room.clone(),
            kind: Some(router_request::Kind::Handoff(handoff)),
        };
        let (bus, done) = (self.bus.clone(), self.done.0.clone());
        tokio::spawn(async move {
            let payload = Bytes::from(req.encode_to_vec());
            for _ in 0..3 {
                let answer = bus.request(subject::router(&to), payload.clone(), HANDOFF_TIMEOUT).await;
                if let Ok(Some(router_reply::Kind::Ack(_))) = answer.map(|b| crate::client::decode_reply(&b)) {
                    let _ = done.send(Done::Pushed { room, refused: None });
                    return;
                }
            }
            let _ = done.send(Done::Pushed { room, refused: Some(state) });
        });
    }
}
