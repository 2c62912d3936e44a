//! The room owner: applies every request for the rooms this router owns.
//!
//! One task holds all room state and handles requests in arrival order, so a
//! room's seqs follow the order its publishes reached the owner, and one
//! publisher's messages keep their order. For each accepted publish the owner
//! appends to history, fans the event out on `sb.room.<room>`, and only then
//! acknowledges. Requests for rooms the ring gives to someone else are
//! answered `NotOwner` so the sender can refresh its ring and retry.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use proto::bus::{Bus, BusError, Message, Subscription};
use proto::client::ErrorCode;
use proto::pb::{self, room_event, router_reply, router_request};
use proto::subject;

use crate::history::HistoryConfig;
use crate::membership::Membership;
use crate::room::{Change, Room};

/// How the owner keeps rooms.
#[derive(Debug, Clone)]
pub struct OwnerConfig {
    /// History bounds per room.
    pub history: HistoryConfig,
    /// Longest `members` list returned (the count is always exact).
    pub members_limit: usize,
    /// Most message bytes in one reply; the rest is paged with `history`.
    pub reply_bytes: usize,
    /// Members of a gateway unheard for this long are dropped.
    pub gateway_ttl: Duration,
}

impl Default for OwnerConfig {
    fn default() -> Self {
        Self {
            history: HistoryConfig::default(),
            members_limit: 100,
            reply_bytes: 512 * 1024,
            gateway_ttl: Duration::from_secs(5),
        }
    }
}

/// The state of every room this router owns.
pub struct Owner {
    id: String,
    bus: Bus,
    membership: Membership,
    config: OwnerConfig,
    rooms: HashMap<String, Room>,
    /// Gateway id → when it was last heard (announcement or request).
    gateways: HashMap<String, Instant>,
}

impl Owner {
    /// Subscribes to `sb.router.<id>` and gateway announcements, then serves
    /// requests until the bus closes.
    pub async fn spawn(
        id: String,
        bus: Bus,
        membership: Membership,
        config: OwnerConfig,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        let requests = bus.subscribe(subject::router(&id)).await?;
        let gateways = bus.subscribe(subject::GATEWAY_ANNOUNCE.into()).await?;
        let owner = Owner { id, bus, membership, config, rooms: HashMap::new(), gateways: HashMap::new() };
        Ok(tokio::spawn(owner.run(requests, gateways)))
    }

    async fn run(mut self, mut requests: Subscription, mut gateways: Subscription) {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = requests.next() => {
                    let Some(msg) = msg else { break };
                    self.serve(msg).await;
                }
                msg = gateways.next() => {
                    let Some(msg) = msg else { break };
                    if let Ok(a) = pb::GatewayAnnounce::decode(msg.payload) {
                        self.gateways.insert(a.id, Instant::now());
                    }
                }
                _ = sweep.tick() => self.sweep().await,
            }
        }
    }

    async fn serve(&mut self, msg: Message) {
        let started = Instant::now();
        let (kind, reply) = match pb::RouterRequest::decode(msg.payload.clone()) {
            Ok(req) => {
                let kind = kind_name(&req.kind);
                (kind, self.handle(req).await)
            }
            Err(e) => ("invalid", error(ErrorCode::BadRequest, format!("undecodable request: {e}"))),
        };
        if let Err(e) = self.bus.respond(&msg, Bytes::from(reply.encode_to_vec())).await {
            tracing::warn!(error = %e, "reply not sent");
        }
        metrics::counter!("switchboard_router_requests_total", "kind" => kind).increment(1);
        metrics::histogram!("switchboard_router_request_duration_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
    }

    async fn handle(&mut self, req: pb::RouterRequest) -> pb::RouterReply {
        if !subject::valid_id(&req.room) {
            return error(ErrorCode::InvalidRoom, "invalid room id");
        }
        let ring = self.membership.ring();
        if ring.owner(&req.room) != Some(self.id.as_str()) {
            return reply(router_reply::Kind::NotOwner(pb::NotOwner { ring_version: ring.version() }));
        }
        let room_id = req.room;
        let now = Instant::now();
        match req.kind {
            None => error(ErrorCode::BadRequest, "empty request"),
            Some(router_request::Kind::Join(j)) => {
                let Some(member) = j.member else {
                    return error(ErrorCode::BadRequest, "join without member");
                };
                self.gateways.entry(member.gateway.clone()).or_insert(now);
                let room = self.rooms.entry(room_id.clone()).or_default();
                let change = room.join(&member);
                let (epoch, seq) = (room.epoch.clone(), room.seq);
                let (recovered, missed, truncated) = match &j.since {
                    None => (false, Vec::new(), false),
                    Some(since) => match room.recover(since) {
                        None => (false, Vec::new(), false),
                        Some(msgs) => {
                            let (page, truncated) = page(msgs, 0, self.config.reply_bytes);
                            (true, page, truncated)
                        }
                    },
                };
                if change == Change::Joined {
                    let joined = pb::MemberJoined { room: room_id.clone(), user: member.user, info: member.info };
                    self.emit(&room_id, &epoch, room_event::Kind::Joined(joined)).await;
                }
                reply(router_reply::Kind::Join(pb::JoinReply { epoch, seq, recovered, missed, truncated }))
            }
            Some(router_request::Kind::Leave(l)) => {
                if let Some(room) = self.rooms.get_mut(&room_id) {
                    if let Some((user, Change::Left)) = room.leave(&l.gateway, &l.conn) {
                        let epoch = room.epoch.clone();
                        let left = pb::MemberLeft { room: room_id.clone(), user };
                        self.emit(&room_id, &epoch, room_event::Kind::Left(left)).await;
                    }
                }
                reply(router_reply::Kind::Ack(pb::Ack {}))
            }
            Some(router_request::Kind::Publish(p)) => {
                let room = self.rooms.entry(room_id.clone()).or_default();
                let msg = room.publish(p.from, p.data, proto::now_ms(), now, &self.config.history);
                let (epoch, seq) = (room.epoch.clone(), msg.seq);
                metrics::counter!("switchboard_router_publishes_total").increment(1);
                self.emit(&room_id, &epoch, room_event::Kind::Message(msg)).await;
                reply(router_reply::Kind::Publish(pb::PublishReply { epoch, seq }))
            }
            Some(router_request::Kind::History(h)) => {
                let room = self.rooms.entry(room_id).or_default();
                let since = h.since.unwrap_or_default();
                let limit = if h.limit == 0 { usize::MAX } else { h.limit as usize };
                let (recovered, messages, truncated) = match room.recover(&since) {
                    None => (false, Vec::new(), false),
                    Some(msgs) => {
                        let (page, truncated) = page(msgs.take(limit), 0, self.config.reply_bytes);
                        (true, page, truncated)
                    }
                };
                reply(router_reply::Kind::History(pb::HistoryReply {
                    epoch: room.epoch.clone(),
                    seq: room.seq,
                    recovered,
                    messages,
                    truncated,
                }))
            }
            Some(router_request::Kind::Members(m)) => {
                let limit = (m.limit as usize).clamp(1, self.config.members_limit);
                let (members, count) = self.rooms.get(&room_id).map(|r| r.members(limit)).unwrap_or_default();
                reply(router_reply::Kind::Members(pb::MembersReply { members, count }))
            }
            Some(router_request::Kind::Sync(s)) => {
                self.gateways.insert(s.gateway.clone(), now);
                let room = self.rooms.entry(room_id).or_default();
                for m in s.members.iter().filter(|m| m.gateway == s.gateway) {
                    room.join(m);
                }
                reply(router_reply::Kind::Join(pb::JoinReply {
                    epoch: room.epoch.clone(),
                    seq: room.seq,
                    ..Default::default()
                }))
            }
        }
    }

    /// Publishes a room event; a lost event is recovered by gateways as a gap.
    async fn emit(&self, room: &str, epoch: &str, kind: room_event::Kind) {
        let event = pb::RoomEvent { room: room.to_owned(), epoch: epoch.to_owned(), kind: Some(kind) };
        if let Err(e) = self.bus.publish_msg(subject::room(room), &event).await {
            metrics::counter!("switchboard_router_events_lost_total").increment(1);
            tracing::warn!(error = %e, room, "room event not published");
        }
    }

    /// Expires history, forgets idle rooms and drops members of dead gateways.
    async fn sweep(&mut self) {
        let now = Instant::now();
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
        let history = self.config.history;
        self.rooms.retain(|_, room| !room.prune(now, &history));
        let members: usize = self.rooms.values().map(Room::conn_count).sum();
        metrics::gauge!("switchboard_router_rooms").set(self.rooms.len() as f64);
        metrics::gauge!("switchboard_router_members").set(members as f64);
    }
}

/// Takes messages from `msgs` until `budget` bytes; true if some were left.
fn page<'a>(
    msgs: impl Iterator<Item = &'a pb::StoredMessage>,
    mut used: usize,
    budget: usize,
) -> (Vec<pb::StoredMessage>, bool) {
    let mut out = Vec::new();
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

fn reply(kind: router_reply::Kind) -> pb::RouterReply {
    pb::RouterReply { kind: Some(kind) }
}

fn error(code: ErrorCode, message: impl Into<String>) -> pb::RouterReply {
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
    }
}
