//! The presence service: the [`Store`] behind a lock, with a clock and outputs.
//!
//! It owns what the pure store leaves out: the current time, the background
//! sweep that expires leases and ends offline grace, the instance id that
//! tells gateways the service restarted, input validation, metrics, and the
//! two ways changes leave the service — `sb.presence.<user>` on the bus for
//! gateways, and the gRPC `Watch` stream for backends — and the notices that
//! make a gateway take a user's inbox (`sb.gateway.<id>.direct`, see
//! [`crate::located`]).
//!
//! As one of several replicas ([`PresenceService::join_ring`]) it keeps only
//! the users the ring gives it: sessions of other users in a report are
//! ignored (the gateway's view of the ring was behind), and users the ring
//! moves elsewhere are dropped without an event, since their new replica
//! announces them. A replica outside the ring (not yet heard, or draining)
//! keeps everything it is told.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;

use crate::rpc::presence_server::{Presence, PresenceServer};
use bus::membership::Membership;
use bus::ring::Ring;
use bus::Bus;
use proto::pb;
use proto::subject;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::inbox::{InboxStore, MemoryInbox};
use crate::store::{Change, Store, StoreConfig};
use crate::watch::{self, WatchStream};

/// Most users one `Query` or `Watch` may name.
pub const MAX_USERS_PER_REQUEST: usize = 100;

/// Largest accepted gRPC request. A snapshot carries every session of a
/// gateway (~50 bytes each), so tonic's 4 MiB default would reject the
/// snapshot of a gateway holding ~80k connections.
pub const MAX_REPORT_BYTES: usize = 64 << 20;

/// How often leases and grace periods are checked; the lag of an offline
/// change behind its timestamp is at most this.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Changes waiting for the bus before new ones are dropped (the broker may be
/// reconnecting; the store must not wait for it).
const PUBLISH_QUEUE: usize = 65_536;

/// The presence gRPC service: `Report`, `Query` and `Watch` over one store.
///
/// Mount it with [`into_server`](Self::into_server), or call it in-process
/// through [`PresenceClient::Local`](crate::PresenceClient::Local).
pub struct PresenceService {
    /// All presence state; held only for synchronous updates, never across
    /// an await.
    store: Mutex<Store>,
    /// Direct messages for users who were offline (apart from the store:
    /// never used with its lock held).
    inbox: Arc<dyn InboxStore>,
    /// Random per start, so gateways can tell that the state was lost.
    instance: String,
    /// The lease TTL as sent to gateways.
    lease_ttl_ms: u32,
    /// Where changes go out, and `Watch` streams read them back.
    bus: Bus,
    /// Every change, in order, for the bus publisher task.
    publish: mpsc::Sender<pb::PresenceChange>,
    /// (gateway, user): notices for the bus publisher task.
    notices: mpsc::Sender<(Arc<str>, String)>,
    /// `user_online` and `user_offline` for the application's backend.
    webhooks: Option<shell::webhook::Webhooks>,
    /// This replica's place among others, when it has any.
    replica: OnceLock<Replica>,
}

/// A replica's id and the ring it splits users by.
struct Replica {
    id: String,
    membership: Membership,
    /// The ring version whose foreign users were last dropped.
    handed_off: AtomicU64,
}

impl Replica {
    /// Whether this replica keeps `user` on `ring`.
    fn owns(&self, ring: &Ring, user: &str) -> bool {
        ring.is_empty() || !ring.contains(&self.id) || ring.owner(user) == Some(self.id.as_str())
    }
}

impl PresenceService {
    /// Starts a service with empty state that publishes changes on `bus`.
    ///
    /// Spawns the sweeper and the bus publisher, so it must run inside a
    /// Tokio runtime; both stop once the last `Arc` is dropped.
    pub fn start(bus: Bus, config: StoreConfig) -> Arc<Self> {
        Self::start_with(bus, config, None, Arc::new(MemoryInbox::new(config.inbox)))
    }

    /// [`PresenceService::start`], telling the application's backend of
    /// users going online and offline through `webhooks`, with the inbox
    /// in `inbox`.
    pub fn start_with(
        bus: Bus,
        config: StoreConfig,
        webhooks: Option<shell::webhook::Webhooks>,
        inbox: Arc<dyn InboxStore>,
    ) -> Arc<Self> {
        let (publish, queue) = mpsc::channel(PUBLISH_QUEUE);
        let (notices, notice_queue) = mpsc::channel(PUBLISH_QUEUE);
        let service = Arc::new(Self {
            store: Mutex::new(Store::new(config)),
            inbox,
            instance: format!("{:016x}", rand::random::<u64>()),
            lease_ttl_ms: config.lease_ttl.as_millis().min(u32::MAX as u128) as u32,
            bus: bus.clone(),
            publish,
            notices,
            webhooks,
            replica: OnceLock::new(),
        });
        tokio::spawn(publish_notices(bus.clone(), notice_queue));
        tokio::spawn(publish_changes(bus, queue));
        tokio::spawn(sweep(Arc::downgrade(&service)));
        tracing::info!(instance = %service.instance, ?config, "presence service started");
        service
    }

    /// Makes this service replica `id` of the ring `membership` hears
    /// (presence replicas on `sb.ctl.presence`), from now on. Once only.
    pub fn join_ring(self: &Arc<Self>, id: String, mut membership: Membership) {
        let replica = Replica { id, membership: membership.clone(), handed_off: AtomicU64::new(0) };
        if self.replica.set(replica).is_err() {
            return;
        }
        let service = Arc::downgrade(self);
        tokio::spawn(async move {
            while membership.next_change().await {
                let Some(service) = service.upgrade() else { return };
                service.follow_ring();
            }
        });
    }

    /// Drops the users the ring gave to another replica since the last call.
    /// Returns the ring, when this is a replica.
    fn follow_ring(&self) -> Option<(&Replica, Arc<Ring>)> {
        let replica = self.replica.get()?;
        let ring = replica.membership.ring();
        if replica.handed_off.swap(ring.version(), Ordering::Relaxed) != ring.version() {
            let moved = self.store.lock().unwrap().hand_off(|user| replica.owns(&ring, user));
            if moved > 0 {
                tracing::info!(moved, members = ?ring.members(), "users moved to other presence replicas");
                metrics::counter!("switchboard_presence_handed_off_total").increment(moved as u64);
            }
        }
        Some((replica, ring))
    }

    /// This start's instance id (16 hex digits).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Users currently shown online (including those in offline grace).
    pub fn online_users(&self) -> usize {
        self.store.lock().unwrap().online_users()
    }

    /// Live sessions across all gateways.
    pub fn sessions(&self) -> usize {
        self.store.lock().unwrap().sessions()
    }

    /// The tonic server for this service behind `auth`, accepting
    /// snapshots up to [`MAX_REPORT_BYTES`].
    pub fn into_server(
        self: Arc<Self>,
        auth: shell::grpc::BearerAuth,
    ) -> InterceptedService<PresenceServer<PresenceService>, shell::grpc::BearerAuth> {
        InterceptedService::new(PresenceServer::from_arc(self).max_decoding_message_size(MAX_REPORT_BYTES), auth)
    }

    /// Runs `f` on the store at the current time and sends out its changes.
    ///
    /// Changes are queued while the lock is still held, so they leave in the
    /// order the store produced them (an offline from a sweep can never
    /// overtake the online that followed it).
    fn update(&self, f: impl FnOnce(&mut Store, Instant, i64) -> Vec<Change>) {
        let mut store = self.store.lock().unwrap();
        let changes = f(&mut store, Instant::now(), proto::now_ms());
        metrics::gauge!("switchboard_presence_users_online").set(store.online_users() as f64);
        metrics::gauge!("switchboard_presence_sessions").set(store.sessions() as f64);
        metrics::gauge!("switchboard_presence_users_known").set(store.known_users() as f64);
        metrics::gauge!("switchboard_presence_deadlines").set(store.deadlines() as f64);
        metrics::gauge!("switchboard_presence_inbox_waiting_users").set(store.waiting_users() as f64);
        for notice in store.take_notices() {
            if self.notices.try_send(notice).is_err() {
                metrics::counter!("switchboard_presence_dropped_total", "reason" => "notice_queue_full").increment(1);
            }
        }
        for change in changes {
            let online = if change.online { "true" } else { "false" };
            // A status change is news to watchers, not to the backend.
            if let (Some(webhooks), false) = (&self.webhooks, change.status_only) {
                let mut fields = serde_json::Map::new();
                fields.insert("user".into(), change.user.clone().into());
                webhooks.emit(if change.online { "user_online" } else { "user_offline" }, fields);
            }
            metrics::counter!("switchboard_presence_changes_total", "online" => online).increment(1);
            let change =
                pb::PresenceChange { user: change.user, online: change.online, ts: change.ts, status: change.status };
            if self.publish.try_send(change).is_err() {
                metrics::counter!("switchboard_presence_dropped_total", "reason" => "publish_queue_full").increment(1);
            }
        }
    }
}

#[tonic::async_trait]
impl Presence for PresenceService {
    async fn report(&self, request: Request<pb::ReportRequest>) -> Result<Response<pb::ReportReply>, Status> {
        let mut req = request.into_inner();
        if !subject::valid_node_id(&req.gateway) {
            return Err(Status::invalid_argument("invalid gateway id"));
        }
        // Drop bad sessions rather than the report: rejecting a snapshot for
        // one bad entry would make the gateway resend it forever.
        let before = req.connected.len() + req.disconnected.len();
        req.connected.retain(valid_session);
        req.disconnected.retain(valid_session);
        let dropped = before - req.connected.len() - req.disconnected.len();
        if dropped > 0 {
            tracing::warn!(gateway = %req.gateway, dropped, "ignoring sessions with invalid ids");
        }
        let mut misrouted = 0;
        if let Some((replica, ring)) = self.follow_ring() {
            let before = req.connected.len() + req.disconnected.len();
            req.connected.retain(|s| replica.owns(&ring, &s.user));
            req.disconnected.retain(|s| replica.owns(&ring, &s.user));
            misrouted = before - req.connected.len() - req.disconnected.len();
            metrics::counter!("switchboard_presence_misrouted_total").increment(misrouted as u64);
        }
        if req.leaving {
            tracing::info!(gateway = %req.gateway, "gateway left");
        } else if req.snapshot {
            tracing::info!(gateway = %req.gateway, sessions = req.connected.len(), "gateway snapshot");
        }
        metrics::counter!("switchboard_presence_reports_total").increment(1);
        self.update(|store, now, now_ms| store.report(now, now_ms, &req));
        Ok(Response::new(pb::ReportReply {
            instance: self.instance.clone(),
            lease_ttl_ms: self.lease_ttl_ms,
            misrouted: misrouted.min(u32::MAX as usize) as u32,
        }))
    }

    async fn enqueue(&self, request: Request<pb::QueuedDirect>) -> Result<Response<pb::EnqueueReply>, Status> {
        let msg = request.into_inner();
        // An empty `from` is the server (the server API's `send`).
        if !subject::valid_id(&msg.to) || !(msg.from.is_empty() || subject::valid_id(&msg.from)) {
            return Err(Status::invalid_argument("invalid user id"));
        }
        if msg.data.len() > proto::client::MAX_DATA_BYTES {
            return Err(Status::invalid_argument("data is over 64 KiB"));
        }
        let to = msg.to.clone();
        let (drops, refused) = put(&*self.inbox, msg).await.map_err(|e| Status::unavailable(format!("inbox: {e}")))?;
        if !refused {
            self.update(|store, now, _| {
                store.enqueued(&to, now);
                Vec::new()
            });
        }
        let dropped = drops as u32 - u32::from(refused);
        Ok(Response::new(pb::EnqueueReply { dropped, refused }))
    }

    async fn take_inbox(&self, request: Request<pb::TakeInboxRequest>) -> Result<Response<pb::TakeInboxReply>, Status> {
        let user = request.into_inner().user;
        check_users(std::slice::from_ref(&user))?;
        // Taken in a task of its own: a caller that gives up mid-take (its
        // deadline) would otherwise drop messages already taken; they go
        // back to the inbox for the user's next connection instead.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let taken = inbox.take(user).await;
            if let Err(Ok(messages)) = tx.send(taken) {
                metrics::counter!("switchboard_presence_inbox_returned_total").increment(messages.len() as u64);
                for m in messages {
                    if let Err(e) = put(&*inbox, m).await {
                        metrics::counter!("switchboard_presence_inbox_dropped_total", "reason" => "unavailable")
                            .increment(1);
                        tracing::warn!(error = %e, "could not return a taken direct message to the inbox");
                    }
                }
            }
        });
        let messages = rx
            .await
            .map_err(|_| Status::internal("inbox take failed"))?
            .map_err(|e| Status::unavailable(format!("inbox: {e}")))?;
        Ok(Response::new(pb::TakeInboxReply { messages }))
    }

    async fn locate(&self, request: Request<pb::LocateRequest>) -> Result<Response<pb::LocateReply>, Status> {
        let user = request.into_inner().user;
        check_users(std::slice::from_ref(&user))?;
        let gateways = self.store.lock().unwrap().locate(&user);
        Ok(Response::new(pb::LocateReply { gateways }))
    }

    async fn query(&self, request: Request<pb::QueryRequest>) -> Result<Response<pb::QueryReply>, Status> {
        let users = request.into_inner().users;
        check_users(&users)?;
        let users = self.store.lock().unwrap().query(proto::now_ms(), &users);
        Ok(Response::new(pb::QueryReply { users }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let users = request.into_inner().users;
        if users.is_empty() {
            return Err(Status::invalid_argument("no users to watch"));
        }
        check_users(&users)?;
        let users: HashSet<String> = users.into_iter().collect();
        let changes = watch::watch(&self.bus, users).await.map_err(|e| Status::unavailable(format!("bus: {e}")))?;
        Ok(Response::new(changes))
    }
}

/// Puts `msg` in `inbox`, counting what the inbox dropped to make room:
/// how many went (`msg` itself included when refused), and whether it was.
async fn put(inbox: &dyn InboxStore, msg: pb::QueuedDirect) -> Result<(usize, bool), String> {
    let (drops, refused) = inbox.put(msg).await?;
    for d in &drops {
        metrics::counter!("switchboard_presence_inbox_dropped_total", "reason" => d.as_str()).increment(1);
    }
    Ok((drops.len(), refused))
}

/// Rejects more than [`MAX_USERS_PER_REQUEST`] users or an invalid user id.
fn check_users(users: &[String]) -> Result<(), Status> {
    if users.len() > MAX_USERS_PER_REQUEST {
        return Err(Status::invalid_argument(format!("at most {MAX_USERS_PER_REQUEST} users per request")));
    }
    if let Some(bad) = users.iter().find(|u| !subject::valid_id(u)) {
        let shown: String = bad.chars().take(32).collect();
        return Err(Status::invalid_argument(format!("invalid user id {shown:?}")));
    }
    Ok(())
}

/// A session a gateway may report: a valid user id and a bounded connection id.
fn valid_session(s: &pb::Session) -> bool {
    subject::valid_id(&s.user) && !s.conn.is_empty() && s.conn.len() <= subject::MAX_ID_LEN
}

/// Expires leases and grace periods until the service is dropped.
async fn sweep(service: Weak<PresenceService>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        service.update(|store, now, now_ms| store.sweep(now, now_ms));
        let expired = service.inbox.sweep();
        metrics::counter!("switchboard_presence_inbox_dropped_total", "reason" => "expired").increment(expired as u64);
    }
}

/// Tells gateways to take a user's inbox (a `notice` on
/// `sb.gateway.<id>.direct`); ends when the service is dropped.
async fn publish_notices(bus: Bus, mut queue: mpsc::Receiver<(Arc<str>, String)>) {
    while let Some((gateway, user)) = queue.recv().await {
        let notice = proto::internal::DirectMessage { to: user, notice: true, ..Default::default() };
        if let Err(err) = bus.publish_msg(subject::gateway_direct(&gateway), &notice).await {
            metrics::counter!("switchboard_presence_dropped_total", "reason" => "publish_failed").increment(1);
            tracing::warn!(%err, "could not tell a gateway to take an inbox");
        }
    }
}

/// Publishes changes on `sb.presence.<user>`, one at a time so they stay in
/// order; ends when the service is dropped.
async fn publish_changes(bus: Bus, mut queue: mpsc::Receiver<pb::PresenceChange>) {
    while let Some(change) = queue.recv().await {
        if let Err(err) = bus.publish_msg(subject::presence(&change.user), &change).await {
            metrics::counter!("switchboard_presence_dropped_total", "reason" => "publish_failed").increment(1);
            tracing::warn!(%err, "could not publish a presence change");
        }
    }
}
