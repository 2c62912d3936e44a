//! The room owner: applies every request for the rooms this router owns.
//!
//! One task holds all room state and handles requests in arrival order, so a
//! room's seqs follow the order its publishes reached the owner, and one
//! publisher's messages keep their order. For each accepted publish the owner
//! appends to history, fans the event out on `sb.room.<room>`, and only then
//! acknowledges. Requests for rooms the ring gives to someone else are
//! answered `NotOwner` so the sender can refresh its ring and retry.
//!
//! Rooms move without losing their stream. When the ring changes, an owner
//! pushes each room it no longer owns to the new owner (epoch, seq, history,
//! members). A new owner that is asked about a room it holds no state for,
//! shortly after a ring change, first pulls the room from whoever held it
//! before, holding the request until the state arrives; so nobody serves a
//! room before its state has arrived, whichever of push or request comes
//! first. An owner that was cut off from the cluster for longer than the TTL
//! drops everything it held: the rooms come back to it only through handoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{Bus, BusError, Message, Subscription};
use bytes::Bytes;
use prost::Message as _;
use proto::client::ErrorCode;
use proto::internal::{self, room_event, router_reply, router_request};
use proto::pb;
use proto::subject;
use tokio::sync::mpsc;

use crate::history::{Budget, HistoryConfig};
use crate::membership::Membership;
use crate::ring::Ring;
use crate::room::{Change, Members, Room};

/// After a ring change, how long a new owner asks the previous one before
/// starting a room afresh.
const PULL_WINDOW: Duration = Duration::from_secs(10);
/// How long a moved room's new owner is remembered.
const MOVED_TTL: Duration = Duration::from_secs(30);
/// Waiting for a push the previous owner says is under way.
const PUSH_WAIT: Duration = Duration::from_secs(1);
/// Bound on one handoff exchange.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(2);
/// Room state sent in one bus message (NATS's default payload cap is 1 MiB).
const HANDOFF_BYTES: usize = 768 * 1024;

/// Default of [`OwnerConfig::history_budget`]: 512 MiB.
pub const DEFAULT_HISTORY_BUDGET: usize = 512 << 20;

/// How the owner keeps rooms.
#[derive(Debug, Clone)]
pub struct OwnerConfig {
    /// History bounds per room.
    pub history: HistoryConfig,
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
}

impl Default for OwnerConfig {
    fn default() -> Self {
        Self {
            history: HistoryConfig::default(),
            history_budget: DEFAULT_HISTORY_BUDGET,
            members_limit: 100,
            reply_bytes: 512 * 1024,
            gateway_ttl: Duration::from_secs(5),
            vnodes: crate::ring::DEFAULT_VNODES,
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

/// Whether the owner can trust its view of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// Settled and hearing announcements: serve rooms.
    Serving,
    /// Just started (or back after a gap) and still listening: accept
    /// handoffs, but serve no room yet.
    Starting,
    /// Heard nothing for longer than the TTL: hold nothing.
    CutOff,
}

/// A room this router handed away.
struct Moved {
    /// Its new owner.
    to: String,
    at: Instant,
    /// The state while its push is unacknowledged: a pull from the new
    /// owner is answered with it rather than making it wait for the push.
    state: Option<internal::RoomState>,
}

/// Results of background work, fed back into the owner's task.
enum Internal {
    /// A pull of `room` from `from` finished.
    Pulled { room: String, from: String, hops: u8, result: Result<internal::PullReply, BusError> },
    /// A pushed room was accepted.
    PushAcked { room: String },
    /// A pushed room was not accepted: take it back.
    PushFailed { room: String, state: internal::RoomState },
    /// The push we were told to expect for `room` did not come.
    PushOverdue { room: String },
    /// Requests that waited for a room's state, to serve now.
    Resume(Vec<Message>),
}

/// The state of every room this router owns.
pub struct Owner {
    id: String,
    bus: Bus,
    membership: Membership,
    config: OwnerConfig,
    rooms: HashMap<String, Room>,
    /// Every room's history, in bytes.
    budget: Budget,
    /// Gateway id → when it was last heard (announcement or request).
    gateways: HashMap<String, Instant>,
    /// Rooms handed away recently.
    moved: HashMap<String, Moved>,
    /// Rooms being pulled from their previous owner, with waiting requests.
    pulling: HashMap<String, Vec<Message>>,
    /// The ring of every other live router: who held a room before us.
    others: Ring,
    last_change: Instant,
    incarnation: u64,
    internal: mpsc::UnboundedSender<Internal>,
    stats: Arc<OwnerStats>,
}

impl Owner {
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
        let (internal, internal_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(OwnerStats::default());
        let owner = Owner {
            others: Ring::new(Vec::<String>::new(), config.vnodes),
            budget: Budget::new(config.history_budget),
            incarnation: membership.incarnation(),
            id,
            bus,
            membership,
            config,
            rooms: HashMap::new(),
            gateways: HashMap::new(),
            moved: HashMap::new(),
            pulling: HashMap::new(),
            last_change: Instant::now(),
            internal,
            stats: stats.clone(),
        };
        Ok((tokio::spawn(owner.run(requests, gateways, internal_rx)), stats))
    }

    async fn run(
        mut self,
        mut requests: Subscription,
        mut gateways: Subscription,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        let mut view = self.membership.clone();
        self.on_view_change();
        loop {
            tokio::select! {
                msg = requests.next() => {
                    let Some(msg) = msg else { break };
                    self.serve(msg).await;
                }
                msg = gateways.next() => {
                    let Some(msg) = msg else { break };
                    if let Ok(a) = internal::GatewayAnnounce::decode(msg.payload) {
                        self.gateways.insert(a.id, Instant::now());
                    }
                }
                Some(event) = internal.recv() => self.on_internal(event).await,
                alive = view.next_change() => {
                    if !alive {
                        break;
                    }
                    self.on_view_change();
                }
                _ = sweep.tick() => self.sweep().await,
            }
        }
    }

    async fn serve(&mut self, msg: Message) {
        let started = Instant::now();
        let (kind, reply) = match internal::RouterRequest::decode(msg.payload.clone()) {
            Ok(req) => (kind_name(&req.kind), self.handle(req, &msg).await),
            Err(e) => ("invalid", Some(error(ErrorCode::BadRequest, format!("undecodable request: {e}")))),
        };
        if let Some(reply) = reply {
            self.respond(&msg, &reply).await;
        }
        metrics::counter!("switchboard_router_requests_total", "kind" => kind).increment(1);
        metrics::histogram!("switchboard_router_request_duration_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
    }

    async fn respond(&self, msg: &Message, reply: &internal::RouterReply) {
        if let Err(e) = self.bus.respond(msg, Bytes::from(reply.encode_to_vec())).await {
            tracing::warn!(error = %e, "reply not sent");
        }
    }

    /// The answer to a request, or `None` when it waits for the room's state.
    async fn handle(&mut self, req: internal::RouterRequest, msg: &Message) -> Option<internal::RouterReply> {
        if !subject::valid_id(&req.room) {
            return Some(error(ErrorCode::InvalidRoom, "invalid room id"));
        }
        let room = req.room;
        let health = self.health().await;
        match req.kind {
            Some(router_request::Kind::Handoff(_)) if health == Health::CutOff => {
                // The pusher keeps it and tries again; we would drop it.
                return Some(error(ErrorCode::Unavailable, "cut off from the cluster"));
            }
            Some(router_request::Kind::Handoff(h)) => return Some(self.accept(room, h)),
            Some(router_request::Kind::Pull(p)) => return Some(self.give_away(room, p.to)),
            _ => {}
        }
        let ring = self.membership.ring();
        if health != Health::Serving || ring.owner(&room) != Some(self.id.as_str()) {
            return Some(reply(router_reply::Kind::NotOwner(internal::NotOwner { ring_version: ring.version() })));
        }
        if !self.rooms.contains_key(&room) {
            if let Some(waiting) = self.pulling.get_mut(&room) {
                waiting.push(msg.clone());
                return None;
            }
            if let Some(moved) = self.moved.get(&room) {
                if moved.at >= self.last_change {
                    // Its new owner took it since our ring last changed: our
                    // ring is the stale one. Never start it again here.
                    return Some(reply(router_reply::Kind::NotOwner(internal::NotOwner {
                        ring_version: ring.version(),
                    })));
                }
                // The ring gave it back to us: fetch it from where it went.
                let to = moved.to.clone();
                self.moved.remove(&room);
                self.pulling.insert(room.clone(), vec![msg.clone()]);
                self.pull(room, to, 0);
                return None;
            }
            if self.last_change.elapsed() < PULL_WINDOW {
                if let Some(previous) = self.others.owner(&room).map(str::to_owned) {
                    self.pulling.insert(room.clone(), vec![msg.clone()]);
                    self.pull(room, previous, 0);
                    return None;
                }
            }
        }
        Some(self.apply(room, req.kind).await)
    }

    /// Applies a room operation; the room's state is here (or starts now).
    async fn apply(&mut self, room_id: String, kind: Option<router_request::Kind>) -> internal::RouterReply {
        let now = Instant::now();
        match kind {
            None => error(ErrorCode::BadRequest, "empty request"),
            Some(router_request::Kind::Join(j)) => {
                let Some(member) = j.member else { return error(ErrorCode::BadRequest, "join without member") };
                self.gateways.entry(member.gateway.clone()).or_insert(now);
                let room = self.rooms.entry(room_id.clone()).or_default();
                let change = room.join(&member);
                let (epoch, seq) = (room.epoch.clone(), room.seq);
                let (recovered, missed, truncated) = match &j.since {
                    None => (false, Vec::new(), false),
                    Some(since) => match room.recover(since) {
                        None => (false, Vec::new(), false),
                        Some(msgs) => {
                            let (page, truncated) = page(msgs, self.config.reply_bytes);
                            (true, page, truncated)
                        }
                    },
                };
                if change == Change::Joined {
                    let joined = pb::MemberJoined { room: room_id.clone(), user: member.user, info: member.info };
                    self.emit(&room_id, &epoch, room_event::Kind::Joined(joined)).await;
                }
                reply(router_reply::Kind::Join(internal::JoinReply { epoch, seq, recovered, missed, truncated }))
            }
            Some(router_request::Kind::Leave(l)) => {
                if let Some(room) = self.rooms.get_mut(&room_id) {
                    if let Some((user, Change::Left)) = room.leave(&l.gateway, &l.conn) {
                        let epoch = room.epoch.clone();
                        let left = pb::MemberLeft { room: room_id.clone(), user };
                        self.emit(&room_id, &epoch, room_event::Kind::Left(left)).await;
                    }
                }
                reply(router_reply::Kind::Ack(internal::Ack {}))
            }
            Some(router_request::Kind::Publish(p)) => {
                let room = self.rooms.entry(room_id.clone()).or_default();
                let msg = (p.from, p.data, proto::now_ms());
                let msg = room.publish(&room_id, msg, now, &self.config.history, &mut self.budget);
                let (epoch, seq) = (room.epoch.clone(), msg.seq);
                self.enforce_budget();
                metrics::counter!("switchboard_router_publishes_total").increment(1);
                self.emit(&room_id, &epoch, room_event::Kind::Message(msg)).await;
                reply(router_reply::Kind::Publish(internal::PublishReply { epoch, seq }))
            }
            Some(router_request::Kind::History(h)) => {
                let room = self.rooms.entry(room_id).or_default();
                let limit = if h.limit == 0 { usize::MAX } else { h.limit as usize };
                let found = match &h.since {
                    Some(since) => room.recover(since).map(|m| page(m.take(limit), self.config.reply_bytes)),
                    None => Some(page(room.latest(limit), self.config.reply_bytes)),
                };
                let (recovered, (messages, truncated)) = match found {
                    Some(p) => (true, p),
                    None => (false, (Vec::new(), false)),
                };
                reply(router_reply::Kind::History(internal::HistoryReply {
                    epoch: room.epoch.clone(),
                    seq: room.seq,
                    recovered,
                    messages,
                    truncated,
                }))
            }
            Some(router_request::Kind::Members(m)) => {
                let limit = (m.limit as usize).clamp(1, self.config.members_limit);
                let budget = self.config.reply_bytes;
                let max_bytes = if m.max_bytes == 0 { budget } else { (m.max_bytes as usize).min(budget) };
                let found = self.rooms.get(&room_id).map(|r| r.members(limit, max_bytes)).unwrap_or_default();
                let Members { members, count, truncated } = found;
                reply(router_reply::Kind::Members(internal::MembersReply { members, count, truncated }))
            }
            Some(router_request::Kind::Sync(s)) => {
                self.gateways.insert(s.gateway.clone(), now);
                let room = self.rooms.entry(room_id).or_default();
                for m in s.members.iter().filter(|m| m.gateway == s.gateway) {
                    room.join(m);
                }
                reply(router_reply::Kind::Join(internal::JoinReply {
                    epoch: room.epoch.clone(),
                    seq: room.seq,
                    ..Default::default()
                }))
            }
            Some(router_request::Kind::Handoff(_) | router_request::Kind::Pull(_)) => {
                unreachable!("handled before ownership checks")
            }
        }
    }

    /// Installs a room pushed by its previous owner.
    fn accept(&mut self, room: String, h: internal::HandoffRequest) -> internal::RouterReply {
        let Some(state) = h.state else { return error(ErrorCode::BadRequest, "handoff without state") };
        if self.rooms.contains_key(&room) {
            // We started serving it already (its push came too late): keep ours.
            tracing::warn!(room, from = h.from, "handoff for a room already served here: keeping ours");
        } else {
            tracing::debug!(room, from = h.from, epoch = state.epoch, seq = state.seq, "room handed over");
            metrics::counter!("switchboard_router_handoffs_total", "direction" => "in").increment(1);
            self.install(&room, state);
            self.moved.remove(&room);
        }
        if let Some(waiting) = self.pulling.remove(&room) {
            let _ = self.internal.send(Internal::Resume(waiting));
        }
        reply(router_reply::Kind::Ack(internal::Ack {}))
    }

    /// Hands a room's state to `to`, which now owns it.
    fn give_away(&mut self, room: String, to: String) -> internal::RouterReply {
        let now = Instant::now();
        let pull = match self.rooms.remove(&room) {
            Some(mut held) => {
                metrics::counter!("switchboard_router_handoffs_total", "direction" => "out").increment(1);
                let state = held.to_state(HANDOFF_BYTES);
                held.release(&room, &mut self.budget);
                self.moved.insert(room, Moved { to, at: now, state: None });
                internal::PullReply { state: Some(state), moved_to: String::new() }
            }
            None => match self.moved.get(&room) {
                // Pushed but not yet acknowledged: the same state, now.
                Some(Moved { to: moved_to, state: Some(state), .. }) if *moved_to == to => {
                    internal::PullReply { state: Some(state.clone()), moved_to: String::new() }
                }
                Some(m) => internal::PullReply { state: None, moved_to: m.to.clone() },
                None => internal::PullReply::default(),
            },
        };
        reply(router_reply::Kind::Pull(pull))
    }

    fn install(&mut self, room: &str, state: internal::RoomState) {
        for m in &state.members {
            self.gateways.entry(m.gateway.clone()).or_insert_with(Instant::now);
        }
        let installed = Room::from_state(room, state, Instant::now(), &self.config.history, &mut self.budget);
        self.rooms.insert(room.to_owned(), installed);
        self.enforce_budget();
    }

    /// Evicts the oldest messages of all rooms while over the budget.
    fn enforce_budget(&mut self) {
        while let Some(id) = self.budget.over().map(str::to_owned) {
            let Some(room) = self.rooms.get_mut(&id) else {
                tracing::error!(room = id, "history budget names a room not held here");
                return;
            };
            room.evict_oldest(&id, &mut self.budget);
        }
    }

    /// Drops every room's state, giving its history's bytes back.
    fn drop_rooms(&mut self) {
        for (id, room) in self.rooms.iter_mut() {
            room.release(id, &mut self.budget);
        }
        self.rooms.clear();
    }

    /// Asks `from` for `room`'s state in the background.
    fn pull(&self, room: String, from: String, hops: u8) {
        let (bus, internal) = (self.bus.clone(), self.internal.clone());
        let req = internal::RouterRequest {
            ring_version: 0,
            room: room.clone(),
            kind: Some(router_request::Kind::Pull(internal::PullRequest { to: self.id.clone() })),
        };
        tokio::spawn(async move {
            let result = bus
                .request(subject::router(&from), Bytes::from(req.encode_to_vec()), HANDOFF_TIMEOUT)
                .await
                .and_then(|b| match crate::client::decode_reply(&b) {
                    Some(router_reply::Kind::Pull(p)) => Ok(p),
                    _ => Err(BusError::Broker("unexpected answer to a pull".into())),
                });
            let _ = internal.send(Internal::Pulled { room, from, hops, result });
        });
    }

    async fn on_internal(&mut self, event: Internal) {
        match event {
            Internal::Pulled { room, from, hops, result } => {
                if !self.pulling.contains_key(&room) {
                    return; // its push arrived first
                }
                match result {
                    Ok(internal::PullReply { state: Some(state), .. }) => {
                        tracing::debug!(room, from, "room pulled from its previous owner");
                        metrics::counter!("switchboard_router_handoffs_total", "direction" => "in").increment(1);
                        if !self.rooms.contains_key(&room) {
                            self.install(&room, state);
                        }
                    }
                    Ok(internal::PullReply { moved_to, .. }) if moved_to == self.id => {
                        // Its push to us is under way: give it a moment.
                        let internal = self.internal.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(PUSH_WAIT).await;
                            let _ = internal.send(Internal::PushOverdue { room });
                        });
                        return;
                    }
                    Ok(internal::PullReply { moved_to, .. }) if !moved_to.is_empty() && hops < 2 => {
                        self.pull(room, moved_to, hops + 1);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(room, from, error = %e, "pull failed: starting the room afresh"),
                }
                self.start_afresh(&room).await;
            }
            Internal::PushOverdue { room } => {
                if self.pulling.contains_key(&room) {
                    tracing::warn!(room, "expected handoff never came: starting the room afresh");
                    self.start_afresh(&room).await;
                }
            }
            Internal::PushAcked { room } => {
                self.stats.pushing.fetch_sub(1, Ordering::Relaxed);
                if let Some(m) = self.moved.get_mut(&room) {
                    m.state = None;
                }
            }
            Internal::PushFailed { room, state } => {
                self.stats.pushing.fetch_sub(1, Ordering::Relaxed);
                if !self.rooms.contains_key(&room) {
                    tracing::warn!(room, "handoff not acknowledged: keeping the room for another try");
                    self.moved.remove(&room);
                    self.install(&room, state);
                }
            }
            Internal::Resume(waiting) => self.resume(waiting).await,
        }
    }

    /// Ends a pull: the room is served from here on, with what arrived or
    /// from a fresh start, and its waiting requests go first.
    async fn start_afresh(&mut self, room: &str) {
        self.rooms.entry(room.to_owned()).or_default();
        let waiting = self.pulling.remove(room).unwrap_or_default();
        self.resume(waiting).await;
    }

    async fn resume(&mut self, waiting: Vec<Message>) {
        for msg in waiting {
            self.serve(msg).await;
        }
    }

    /// Whether this router may serve rooms now. A router that stopped
    /// hearing announcements for longer than the TTL (paused, partitioned)
    /// may hold rooms that others took over meanwhile: it drops them, and
    /// the rooms come back only through handoff.
    async fn health(&mut self) -> Health {
        let cut_off = self.membership.is_cut_off();
        let incarnation = self.membership.incarnation();
        if cut_off || incarnation != self.incarnation {
            if !self.rooms.is_empty() {
                tracing::warn!(rooms = self.rooms.len(), "cut off from the cluster: dropping all room state");
            }
            self.drop_rooms();
            self.moved.clear();
            let waiting: Vec<Message> = self.pulling.drain().flat_map(|(_, w)| w).collect();
            let not_owner = reply(router_reply::Kind::NotOwner(internal::NotOwner { ring_version: 0 }));
            for msg in waiting {
                self.respond(&msg, &not_owner).await;
            }
            self.incarnation = incarnation;
        }
        if cut_off {
            Health::CutOff
        } else if self.membership.is_fresh() && self.membership.is_settled() {
            Health::Serving
        } else {
            Health::Starting
        }
    }

    /// Recomputes who held rooms before us, and hands off rooms we lost.
    fn on_view_change(&mut self) {
        let view = self.membership.view();
        self.others = Ring::new(view.alive.iter().filter(|r| **r != self.id), self.config.vnodes);
        self.last_change = Instant::now();
        self.push_moved();
    }

    /// Pushes every room the ring now gives to another router.
    fn push_moved(&mut self) {
        let ring = self.membership.ring();
        let moving: Vec<(String, String)> = self
            .rooms
            .keys()
            .filter_map(|r| match ring.owner(r) {
                Some(o) if o != self.id => Some((r.clone(), o.to_owned())),
                _ => None,
            })
            .collect();
        let now = Instant::now();
        for (room, to) in moving {
            let mut held = self.rooms.remove(&room).expect("listed above");
            let state = held.to_state(HANDOFF_BYTES);
            held.release(&room, &mut self.budget);
            self.moved.insert(room.clone(), Moved { to: to.clone(), at: now, state: Some(state.clone()) });
            metrics::counter!("switchboard_router_handoffs_total", "direction" => "out").increment(1);
            self.stats.pushing.fetch_add(1, Ordering::Relaxed);
            let (bus, internal, from) = (self.bus.clone(), self.internal.clone(), self.id.clone());
            tokio::spawn(async move {
                let req = internal::RouterRequest {
                    ring_version: 0,
                    room: room.clone(),
                    kind: Some(router_request::Kind::Handoff(internal::HandoffRequest {
                        from,
                        state: Some(state.clone()),
                    })),
                };
                let payload = Bytes::from(req.encode_to_vec());
                for _ in 0..3 {
                    let answer = bus.request(subject::router(&to), payload.clone(), HANDOFF_TIMEOUT).await;
                    if let Ok(Some(router_reply::Kind::Ack(_))) = answer.map(|b| crate::client::decode_reply(&b)) {
                        let _ = internal.send(Internal::PushAcked { room });
                        return;
                    }
                }
                let _ = internal.send(Internal::PushFailed { room, state });
            });
        }
    }

    /// Publishes a room event; a lost event is recovered by gateways as a gap.
    async fn emit(&self, room: &str, epoch: &str, kind: room_event::Kind) {
        let event = internal::RoomEvent { room: room.to_owned(), epoch: epoch.to_owned(), kind: Some(kind) };
        if let Err(e) = self.bus.publish_msg(subject::room(room), &event).await {
            metrics::counter!("switchboard_router_events_lost_total").increment(1);
            tracing::warn!(error = %e, room, "room event not published");
        }
    }

    /// Expires history, forgets idle rooms, drops members of dead gateways,
    /// and retries handoffs.
    async fn sweep(&mut self) {
        let now = Instant::now();
        self.health().await;
        self.push_moved();
        self.moved.retain(|_, m| m.state.is_some() || now.duration_since(m.at) < MOVED_TTL);
        let ttl = self.config.gateway_ttl;
        let dead: Vec<String> =
            self.gateways.iter().filter(|(_, at)| now.duration_since(**at) > ttl).map(|(g, _)| g.clone()).collect();
        for gateway in dead {
            self.gateways.remove(&gateway);
            let mut left = Vec::new();
            for (room_id, room) in &mut self.rooms {
                for user in room.drop_gateway(&gateway) {
                    left.push((room_id.clone(), room.epoch.clone(), user));
                }
            }
            tracing::info!(gateway, users_left = left.len(), "gateway unseen: its members dropped");
            for (room, epoch, user) in left {
                let kind = room_event::Kind::Left(pb::MemberLeft { room: room.clone(), user });
                self.emit(&room, &epoch, kind).await;
            }
        }
        let (history, budget) = (self.config.history, &mut self.budget);
        self.rooms.retain(|id, room| !room.prune(id, now, &history, budget));
        let members: usize = self.rooms.values().map(Room::conn_count).sum();
        self.stats.rooms.store(self.rooms.len(), Ordering::Relaxed);
        self.stats.members.store(members, Ordering::Relaxed);
        metrics::gauge!("switchboard_router_rooms").set(self.rooms.len() as f64);
        metrics::gauge!("switchboard_router_members").set(members as f64);
    }
}

/// Takes messages until `budget` bytes; true if some were left.
fn page<'a>(
    msgs: impl Iterator<Item = &'a internal::StoredMessage>,
    budget: usize,
) -> (Vec<internal::StoredMessage>, bool) {
    let mut out = Vec::new();
    let mut used = 0;
    for m in msgs {
        let size = m.encoded_len() + 8;
        if !out.is_empty() && used + size > budget {
            return (out, true);
        }
        used += size;
        out.push(m.clone());
    }
    (out, false)
}

fn reply(kind: router_reply::Kind) -> internal::RouterReply {
    internal::RouterReply { kind: Some(kind) }
}

fn error(code: ErrorCode, message: impl Into<String>) -> internal::RouterReply {
    reply(router_reply::Kind::Error(pb::Error { code: code.as_str().into(), message: message.into() }))
}

fn kind_name(kind: &Option<router_request::Kind>) -> &'static str {
    match kind {
        None => "none",
        Some(router_request::Kind::Join(_)) => "join",
        Some(router_request::Kind::Leave(_)) => "leave",
        Some(router_request::Kind::Publish(_)) => "publish",
        Some(router_request::Kind::History(_)) => "history",
        Some(router_request::Kind::Members(_)) => "members",
        Some(router_request::Kind::Sync(_)) => "sync",
        Some(router_request::Kind::Handoff(_)) => "handoff",
        Some(router_request::Kind::Pull(_)) => "pull",
    }
}
