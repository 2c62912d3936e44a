//! The room owner as a state machine: requests and cluster changes in,
//! replies, room events and handoff work out as [`Action`]s. No I/O: the
//! task in [`super`] carries the actions out, in order.
//!
//! One machine holds all room state and handles requests in arrival order,
//! so a room's seqs follow the order its publishes reached the owner, and
//! one publisher's messages keep their order. For each accepted publish the
//! owner appends to history, emits the event on `sb.room.<room>`, and only
//! then replies ([`super::apply`]). Requests for rooms the ring gives to
//! someone else are answered `NotOwner` so the sender can refresh its ring
//! and retry.
//!
//! Rooms move without losing their stream ([`super::handoff`]). When the
//! ring changes, an owner pushes each room it no longer owns to the new
//! owner (epoch, seq, history, members). A new owner asked about a room it
//! holds no state for, shortly after a ring change, first pulls the room
//! from whoever held it before, holding the request until the state
//! arrives; so nobody serves a room before its state has arrived, whichever
//! of push or request comes first. An owner that was cut off from the
//! cluster for longer than the TTL drops everything it held: the rooms come
//! back to it only through handoff.
//!
//! With a durable store ([`super::durable`]) a room not held is loaded from
//! the store instead of pulled, and a publish is applied only once stored.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::Message;
use prost::Message as _;
use proto::client::ErrorCode;
use proto::internal::{self, room_event, router_reply, router_request};
use proto::subject;

use super::apply::{announce, Membership};
use super::durable::{Reloading, Writes};
use super::{OwnerConfig, OwnerStats};
use crate::history::Budget;
use crate::ring::Ring;
use crate::room::Room;

/// After a ring change, how long a new owner asks the previous one before
/// starting a room afresh.
pub const PULL_WINDOW: Duration = Duration::from_secs(10);
/// How long a moved room's new owner is remembered.
const MOVED_TTL: Duration = Duration::from_secs(30);

/// What the owner knows of the cluster, from its membership, at an input.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub ring: Arc<Ring>,
    /// Announcements were heard once, then not for longer than the TTL.
    pub cut_off: bool,
    /// How many such silences have ended.
    pub incarnation: u64,
    /// Announcements are heard, and have been listened to long enough.
    pub trusted: bool,
}

/// What the task must do for the machine, in order.
#[derive(Debug)]
pub enum Action {
    /// Answer the request `msg`.
    Reply(Message, internal::RouterReply),
    /// Publish a room event on `sb.room.<room>`.
    Emit(internal::RoomEvent),
    /// Ask a router for a room's state; answer with [`Owner::on_pulled`].
    Pull(Pull),
    /// Hand `room`'s state to router `to`; answer with [`Owner::on_pushed`].
    Push { room: String, to: String, state: internal::RoomState },
    /// Call [`Owner::on_push_overdue`] for `room` in a moment.
    PushOverdue(String),
    /// Call [`Owner::on_flush`] for `room` after `after` (its batching window).
    Flush { room: String, after: Duration },
    /// Tell the application's backend (a webhook event), if it listens.
    Notify(Notice),
    /// Load `room` from the store (a room never stored starts on `epoch`);
    /// answer with [`Owner::on_loaded`].
    Load { room: String, epoch: String, limits: crate::history::HistoryConfig },
    /// Store a message, then answer with [`Owner::on_appended`]: the
    /// publish `msg` is replied to there.
    Append { id: u64, msg: Message, append: crate::store::Append },
    /// Store `user`'s read marker, then acknowledge the request `msg`.
    SaveRead { msg: Message, room: String, user: String, seq: u64 },
}

/// A membership change for the application's backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The room's first user joined.
    Occupied {
        room: String,
    },
    /// The room's last user left.
    Vacated {
        room: String,
    },
    Joined {
        room: String,
        user: String,
    },
    Left {
        room: String,
        user: String,
    },
}

/// A pull of `room`'s state from router `from`, `hops` redirections in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    pub room: String,
    pub from: String,
    pub hops: u8,
}

/// Whether the owner can trust its view of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    /// Settled and hearing announcements: serve rooms.
    Serving,
    /// Just started (or back after a gap) and still listening: accept
    /// handoffs, but serve no room yet.
    Starting,
    /// Heard nothing for longer than the TTL: hold nothing.
    CutOff,
}

/// A room this router handed away.
pub(super) struct Moved {
    /// Its new owner.
    pub to: String,
    pub at: Instant,
    /// The state while its push is unacknowledged: a pull from the new
    /// owner is answered with it rather than making it wait for the push.
    pub state: Option<internal::RoomState>,
}

/// The state of every room this router owns.
pub struct Owner {
    pub(super) id: String,
    pub(super) config: OwnerConfig,
    pub(super) rooms: HashMap<String, Room>,
    /// Every room's history, in bytes.
    pub(super) budget: Budget,
    /// Gateway id → when it was last heard (announcement or request).
    pub(super) gateways: HashMap<String, Instant>,
    /// Rooms handed away recently.
    pub(super) moved: HashMap<String, Moved>,
    /// Rooms being pulled from their previous owner (or loaded from the
    /// store), with waiting requests.
    pub(super) pulling: HashMap<String, Vec<Message>>,
    /// Durable store: publishes waiting per room, rooms being reloaded
    /// after a refused append, and the last append's id.
    pub(super) writes: HashMap<String, Writes>,
    pub(super) reloading: HashMap<String, Reloading>,
    pub(super) next_write: u64,
    /// The ring of every other live router: who held a room before us.
    others: Ring,
    pub(super) last_change: Instant,
    incarnation: u64,
    pub(super) stats: Arc<OwnerStats>,
    /// Work that must follow the current request's reply (requests that
    /// waited for a room its handoff just brought).
    pub(super) deferred: Vec<Action>,
}

impl Owner {
    pub fn new(id: String, config: OwnerConfig, incarnation: u64, stats: Arc<OwnerStats>, now: Instant) -> Self {
        Self {
            others: Ring::new(Vec::<String>::new(), config.vnodes),
            budget: Budget::new(config.history_budget),
            id,
            config,
            rooms: HashMap::new(),
            gateways: HashMap::new(),
            moved: HashMap::new(),
            pulling: HashMap::new(),
            writes: HashMap::new(),
            reloading: HashMap::new(),
            next_write: 0,
            last_change: now,
            incarnation,
            stats,
            deferred: Vec::new(),
        }
    }

    /// A request on `sb.router.<id>`; returns its kind, for metrics.
    pub fn on_request(&mut self, msg: Message, c: &Cluster, now: Instant, out: &mut Vec<Action>) -> &'static str {
        let req = match internal::RouterRequest::decode(msg.payload.clone()) {
            Ok(req) => req,
            Err(e) => {
                out.push(Action::Reply(msg, error(ErrorCode::BadRequest, format!("undecodable request: {e}"))));
                return "invalid";
            }
        };
        let kind = kind_name(&req.kind);
        if let Some(reply) = self.handle(req, &msg, c, now, out) {
            out.push(Action::Reply(msg, reply));
        }
        out.append(&mut self.deferred);
        kind
    }

    /// The answer to a request, or `None` when it waits for the room's state.
    fn handle(
        &mut self,
        req: internal::RouterRequest,
        msg: &Message,
        c: &Cluster,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Option<internal::RouterReply> {
        if let Some(router_request::Kind::List(l)) = &req.kind {
            return Some(self.list(l));
        }
        if !subject::valid_id(&req.room) {
            return Some(error(ErrorCode::InvalidRoom, subject::INVALID_ROOM));
        }
        let room = req.room;
        let health = self.health(c, out);
        match req.kind {
            Some(router_request::Kind::Handoff(_)) if health == Health::CutOff => {
                // The pusher keeps it and tries again; we would drop it.
                return Some(error(ErrorCode::Unavailable, "cut off from the cluster"));
            }
            Some(router_request::Kind::Handoff(h)) => return Some(self.accept(room, h, c, now)),
            Some(router_request::Kind::Pull(p)) => return Some(self.give_away(room, p.to, now, out)),
            _ => {}
        }
        if health != Health::Serving || c.ring.owner(&room) != Some(self.id.as_str()) {
            return Some(not_owner(&c.ring));
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
                    return Some(not_owner(&c.ring));
                }
                // The ring gave it back to us: fetch it from where it went.
                let from = moved.to.clone();
                self.moved.remove(&room);
                if !self.config.store.durable() {
                    self.start_pull(room, from, msg, out);
                    return None;
                }
            }
            // The store has every room: no need to ask who held it.
            if self.config.store.durable() {
                self.start_load(room, vec![msg.clone()], out);
                return None;
            }
            if now.duration_since(self.last_change) < PULL_WINDOW {
                if let Some(previous) = self.others.owner(&room).map(str::to_owned) {
                    self.start_pull(room, previous, msg, out);
                    return None;
                }
            }
        }
        if self.config.store.durable() {
            match req.kind {
                Some(router_request::Kind::Publish(p)) => return self.enqueue(room, msg, p, c, out),
                Some(router_request::Kind::Read(r)) => {
                    let user = r.user.clone();
                    let answer = self.apply(room.clone(), Some(router_request::Kind::Read(r)), now, out);
                    let Some(router_reply::Kind::Ack(_)) = answer.kind else { return Some(answer) };
                    // Acknowledged once stored: the marker as it stands now.
                    let seq = self.rooms.get(&room).map_or(0, |r| r.reads.get(&user));
                    out.push(Action::SaveRead { msg: msg.clone(), room, user, seq });
                    return None;
                }
                kind => return Some(self.apply(room, kind, now, out)),
            }
        }
        Some(self.apply(room, req.kind, now, out))
    }

    /// Holds `msg` while `room`'s state is pulled from `from`.
    fn start_pull(&mut self, room: String, from: String, msg: &Message, out: &mut Vec<Action>) {
        self.pulling.insert(room.clone(), vec![msg.clone()]);
        out.push(Action::Pull(Pull { room, from, hops: 0 }));
    }

    /// Serves requests that waited for a room's state.
    pub(super) fn resume(&mut self, waiting: Vec<Message>, c: &Cluster, now: Instant, out: &mut Vec<Action>) {
        for msg in waiting {
            self.on_request(msg, c, now, out);
        }
    }

    /// A gateway announced itself.
    pub fn on_gateway(&mut self, id: String, now: Instant) {
        self.gateways.insert(id, now);
    }

    /// Whether this router may serve rooms now. A router that stopped
    /// hearing announcements for longer than the TTL (paused, partitioned)
    /// may hold rooms that others took over meanwhile: it drops them, and
    /// the rooms come back only through handoff.
    pub(super) fn health(&mut self, c: &Cluster, out: &mut Vec<Action>) -> Health {
        if c.cut_off || c.incarnation != self.incarnation {
            if !self.rooms.is_empty() {
                tracing::warn!(rooms = self.rooms.len(), "cut off from the cluster: dropping all room state");
            }
            for (id, room) in self.rooms.iter_mut() {
                room.release(id, &mut self.budget);
            }
            self.rooms.clear();
            self.moved.clear();
            self.reloading.clear();
            let rooms: Vec<String> = self.writes.keys().cloned().collect();
            for room in rooms {
                self.drop_writes(&room, c, out);
            }
            for msg in self.pulling.drain().flat_map(|(_, w)| w) {
                out.push(Action::Reply(msg, not_owner(&c.ring)));
            }
            self.incarnation = c.incarnation;
        }
        if c.cut_off {
            Health::CutOff
        } else if c.trusted {
            Health::Serving
        } else {
            Health::Starting
        }
    }

    /// The live routers changed: recompute who held rooms before us, and
    /// hand off the rooms we lost.
    pub fn on_view_change(&mut self, alive: &[String], c: &Cluster, now: Instant, out: &mut Vec<Action>) {
        self.others = Ring::new(alive.iter().filter(|r| **r != self.id), self.config.vnodes);
        self.last_change = now;
        self.push_moved(c, now, out);
    }

    /// Expires history, forgets idle rooms, drops members of dead gateways,
    /// and retries handoffs. Every second.
    pub fn sweep(&mut self, c: &Cluster, now: Instant, out: &mut Vec<Action>) {
        self.health(c, out);
        self.push_moved(c, now, out);
        self.moved.retain(|_, m| m.state.is_some() || now.duration_since(m.at) < MOVED_TTL);
        let ttl = self.config.gateway_ttl;
        let dead: Vec<String> =
            self.gateways.iter().filter(|(_, at)| now.duration_since(**at) > ttl).map(|(g, _)| g.clone()).collect();
        for gateway in dead {
            self.gateways.remove(&gateway);
            let mut left = 0;
            for (room_id, room) in &mut self.rooms {
                let ns = self.config.namespaces.of(room_id);
                for user in room.drop_gateway(&gateway) {
                    left += 1;
                    announce(ns, room_id, room, Membership::Left { user }, out);
                }
            }
            tracing::info!(gateway, users_left = left, "gateway unseen: its members dropped");
        }
        let (namespaces, budget) = (&self.config.namespaces, &mut self.budget);
        self.rooms.retain(|id, room| !room.prune(id, now, &namespaces.of(id).history, budget));
        let members: usize = self.rooms.values().map(Room::conn_count).sum();
        self.stats.rooms.store(self.rooms.len(), Ordering::Relaxed);
        self.stats.members.store(members, Ordering::Relaxed);
        crate::metrics::rooms(self.rooms.len(), members);
    }

    /// A room's batching window ended: announce its joins and leaves.
    pub fn on_flush(&mut self, room_id: &str, out: &mut Vec<Action>) {
        if let Some(room) = self.rooms.get_mut(room_id) {
            flush(room_id, room, out);
        }
    }
}

/// Emits `room`'s pending `members_changed`, if its window nets to any change.
pub(super) fn flush(room_id: &str, room: &mut Room, out: &mut Vec<Action>) {
    if let Some(changed) = room.batch.take(room_id, room.user_count()) {
        crate::metrics::members_changed(changed.truncated);
        let mut ev = event(room_id, &room.epoch, room_event::Kind::MembersChanged(changed));
        ev.members_version = room.members_version;
        out.push(Action::Emit(ev));
    }
}

pub(super) fn event(room: &str, epoch: &str, kind: room_event::Kind) -> internal::RoomEvent {
    internal::RoomEvent { room: room.to_owned(), epoch: epoch.to_owned(), kind: Some(kind), members_version: 0 }
}

pub(super) fn reply(kind: router_reply::Kind) -> internal::RouterReply {
    internal::RouterReply { kind: Some(kind) }
}

pub(super) fn error(code: ErrorCode, message: impl Into<String>) -> internal::RouterReply {
    reply(router_reply::Kind::Error(proto::pb::Error { code: code.as_str().into(), message: message.into() }))
}

pub(super) fn not_owner(ring: &Ring) -> internal::RouterReply {
    reply(router_reply::Kind::NotOwner(internal::NotOwner { ring_version: ring.version() }))
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
        Some(router_request::Kind::Signal(_)) => "signal",
        Some(router_request::Kind::Read(_)) => "read",
        Some(router_request::Kind::List(_)) => "list",
    }
}
