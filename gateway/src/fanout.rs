//! One room's delivery to its local members: in order, without gaps.
//!
//! The task tracks the room's position (epoch, seq) as this gateway has
//! delivered it. An event that skips ahead is held while the gap is filled
//! from the owner's history; if the history no longer reaches, or the epoch
//! changed (a new owner), members get `resync` and delivery goes on from the
//! new position. A joining member is attached with the position the owner
//! gave it: it receives what this gateway delivers after that point, caught
//! up from a short buffer of recent events if the gateway is already past it.
//! Each event is encoded once per encoding and the bytes are shared.
//!
//! When the ring gives the room to another router, the task re-registers
//! its members with the new owner (`sync`). After a handoff that changes
//! nothing; after an owner crash the new owner starts a new epoch, and the
//! answer makes members `resync`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use proto::bus::Subscription;
use proto::client::{Encoding, Event};
use proto::pb::{self, room_event, router_reply, router_request};
use router::client::{CallError, RouterClient};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::outbox::Out;
use crate::topics::Listener;

/// Recent events kept for members attaching behind the gateway's position.
const RECENT_LEN: usize = 256;
/// Events held behind a gap before giving up on filling it.
const HELD_MAX: usize = 10_000;
/// Attempts to fill a gap before declaring continuity lost.
const FILL_ATTEMPTS: u32 = 5;
/// Members re-registered per sync request.
const SYNC_PAGE: usize = 1000;

/// Commands from sessions.
pub enum Cmd {
    Attach(Attach),
    Detach(Arc<str>),
    Stop,
}

/// A member joining, with what the owner answered.
pub struct Attach {
    pub conn: Arc<str>,
    /// The member's user: `joined`/`left` about themselves are not news to them.
    pub user: Arc<str>,
    /// The member's `info` claim, for re-registering with a new owner.
    pub info: Bytes,
    pub listener: Listener,
    /// The room's epoch and latest seq in the owner's answer.
    pub epoch: String,
    pub seq: u64,
    /// Frames to queue first: the join reply, then recovered messages.
    pub frames: Vec<Bytes>,
}

struct Member {
    user: Arc<str>,
    info: Bytes,
    listener: Listener,
    /// Deliver only messages after this seq (what the member already has).
    after: u64,
}

/// A room message, encoded lazily once per encoding.
pub struct Encoded {
    room: Arc<str>,
    epoch: Arc<str>,
    msg: pb::StoredMessage,
    json: OnceLock<Bytes>,
    proto: OnceLock<Bytes>,
}

impl Encoded {
    pub fn new(room: Arc<str>, epoch: Arc<str>, msg: pb::StoredMessage) -> Self {
        Self { room, epoch, msg, json: OnceLock::new(), proto: OnceLock::new() }
    }

    /// The `message` frame in `encoding`.
    pub fn bytes(&self, encoding: Encoding) -> Bytes {
        let slot = match encoding {
            Encoding::Json => &self.json,
            Encoding::Proto => &self.proto,
        };
        slot.get_or_init(|| {
            let m = &self.msg;
            Event::Message { room: &self.room, seq: m.seq, epoch: &self.epoch, from: &m.from, data: &m.data, ts: m.ts }
                .encode(encoding)
        })
        .clone()
    }

    fn seq(&self) -> u64 {
        self.msg.seq
    }
}

/// The result of a gap fill.
type Fill = Result<pb::HistoryReply, CallError>;
/// The result of re-registering with a new owner.
type Sync = Result<pb::JoinReply, CallError>;

struct Fanout {
    room: Arc<str>,
    gateway: Arc<str>,
    router: RouterClient,
    /// The owner the members are registered with, as far as we know.
    owner: Option<Arc<str>>,
    sync: Option<JoinHandle<Sync>>,
    members: HashMap<Arc<str>, Member>,
    /// The last delivered position, once known.
    pos: Option<(Arc<str>, u64)>,
    recent: VecDeque<Arc<Encoded>>,
    /// Messages after a gap, by seq, waiting for the fill.
    held: BTreeMap<u64, Arc<Encoded>>,
    fill: Option<JoinHandle<Fill>>,
}

/// Runs a room's fanout until `Cmd::Stop` or the subscription ends.
pub async fn run(
    room: String,
    gateway: Arc<str>,
    mut sub: Subscription,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    router: RouterClient,
) {
    let mut view = router.membership().clone();
    let mut f = Fanout {
        owner: router.membership().ring().owner(&room).map(Arc::from),
        room: room.into(),
        gateway,
        sync: None,
        router,
        members: HashMap::new(),
        pos: None,
        recent: VecDeque::new(),
        held: BTreeMap::new(),
        fill: None,
    };
    loop {
        tokio::select! {
            msg = sub.next() => match msg {
                Some(msg) => match pb::RoomEvent::decode(msg.payload) {
                    Ok(ev) => f.on_event(ev),
                    Err(e) => tracing::warn!(error = %e, "undecodable room event"),
                },
                None => break,
            },
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Attach(a)) => f.attach(a),
                Some(Cmd::Detach(conn)) => { f.members.remove(&conn); }
                Some(Cmd::Stop) | None => break,
            },
            done = async { f.fill.as_mut().expect("guarded").await }, if f.fill.is_some() => {
                f.fill = None;
                let result = done.unwrap_or(Err(CallError::Unavailable));
                f.on_fill(result);
            }
            done = async { f.sync.as_mut().expect("guarded").await }, if f.sync.is_some() => {
                f.sync = None;
                let result = done.unwrap_or(Err(CallError::Unavailable));
                f.on_sync(result);
            }
            alive = view.next_change() => {
                if !alive {
                    break;
                }
                f.on_ring_change();
            }
        }
    }
    if let Some(fill) = f.fill.take() {
        fill.abort();
    }
    if let Some(sync) = f.sync.take() {
        sync.abort();
    }
}

impl Fanout {
    fn on_event(&mut self, ev: pb::RoomEvent) {
        match ev.kind {
            Some(room_event::Kind::Message(m)) => {
                let enc = Arc::new(Encoded::new(self.room.clone(), ev.epoch.into(), m));
                self.on_message(enc);
            }
            // Whether a member's own `joined` arrives before or after its
            // attach is a race; leaving the user out makes it deterministic.
            Some(room_event::Kind::Joined(j)) => {
                self.broadcast(Some(&j.user), |e| {
                    Event::Joined { room: &j.room, user: &j.user, info: &j.info }.encode(e)
                });
            }
            Some(room_event::Kind::Left(l)) => {
                self.broadcast(Some(&l.user), |e| Event::Left { room: &l.room, user: &l.user }.encode(e));
            }
            None => {}
        }
    }

    fn on_message(&mut self, enc: Arc<Encoded>) {
        let seq = enc.seq();
        match &self.pos {
            None => self.deliver(enc),
            Some((epoch, _)) if **epoch != *enc.epoch => {
                // A new owner started a new stream: continuity is lost.
                self.resync(enc.epoch.clone(), seq.saturating_sub(1));
                self.deliver(enc);
            }
            Some((_, at)) if seq <= *at => {}
            Some((_, at)) if seq == at + 1 => {
                self.deliver(enc);
                self.drain_held();
            }
            Some(_) => {
                self.held.insert(seq, enc);
                if self.held.len() > HELD_MAX {
                    self.give_up_on_gap();
                } else {
                    self.start_fill();
                }
            }
        }
    }

    /// Delivers the next message to every member that does not have it yet.
    fn deliver(&mut self, enc: Arc<Encoded>) {
        let seq = enc.seq();
        self.pos = Some((enc.epoch.clone(), seq));
        let (mut json, mut proto) = (None, None);
        let mut delivered = 0u64;
        for m in self.members.values().filter(|m| seq > m.after) {
            let slot = match m.listener.encoding {
                Encoding::Json => &mut json,
                Encoding::Proto => &mut proto,
            };
            let bytes = slot.get_or_insert_with(|| enc.bytes(m.listener.encoding)).clone();
            delivered += m.listener.outbox.push(Out::Data(bytes)) as u64;
        }
        metrics::counter!("switchboard_gateway_messages_delivered_total").increment(delivered);
        self.recent.push_back(enc);
        if self.recent.len() > RECENT_LEN {
            self.recent.pop_front();
        }
    }

    /// Sends an unsequenced event to every member except those of `about`.
    fn broadcast(&self, about: Option<&str>, encode: impl Fn(Encoding) -> Bytes) {
        let (mut json, mut proto) = (None, None);
        for m in self.members.values().filter(|m| about != Some(&*m.user)) {
            let slot = match m.listener.encoding {
                Encoding::Json => &mut json,
                Encoding::Proto => &mut proto,
            };
            let bytes = slot.get_or_insert_with(|| encode(m.listener.encoding)).clone();
            m.listener.outbox.push(Out::Data(bytes));
        }
    }

    /// Tells every member continuity was lost; delivery goes on after `seq`.
    fn resync(&mut self, epoch: Arc<str>, seq: u64) {
        metrics::counter!("switchboard_gateway_resyncs_total").increment(1);
        let room = self.room.clone();
        self.broadcast(None, |e| Event::Resync { room: &room, epoch: &epoch, seq }.encode(e));
        for m in self.members.values_mut() {
            m.after = seq;
        }
        self.held.retain(|s, enc| *s > seq && enc.epoch == epoch);
        self.recent.clear();
        self.pos = Some((epoch, seq));
    }

    fn drain_held(&mut self) {
        while let Some((&seq, _)) = self.held.first_key_value() {
            let at = self.pos.as_ref().map_or(0, |p| p.1);
            if seq <= at {
                self.held.pop_first();
            } else if seq == at + 1 {
                let (_, enc) = self.held.pop_first().expect("present");
                self.deliver(enc);
            } else {
                self.start_fill();
                return;
            }
        }
    }

    /// Asks the owner for what this gateway missed.
    fn start_fill(&mut self) {
        if self.fill.is_some() {
            return;
        }
        let Some((epoch, seq)) = self.pos.clone() else {
            return;
        };
        metrics::counter!("switchboard_gateway_gap_fills_total").increment(1);
        let (router, room) = (self.router.clone(), self.room.clone());
        self.fill = Some(tokio::spawn(async move {
            let since = pb::Since { epoch: epoch.to_string(), seq };
            let mut attempt = 0;
            loop {
                let req = router_request::Kind::History(pb::HistoryRequest { since: Some(since.clone()), limit: 0 });
                match router.call(&room, req).await {
                    Ok(router_reply::Kind::History(h)) => return Ok(h),
                    Ok(_) => return Err(CallError::Unavailable),
                    Err(e) => {
                        attempt += 1;
                        if attempt >= FILL_ATTEMPTS {
                            return Err(e);
                        }
                        tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                    }
                }
            }
        }));
    }

    fn on_fill(&mut self, result: Fill) {
        match result {
            Ok(h) if h.recovered && self.pos.as_ref().is_some_and(|(e, _)| **e == *h.epoch) => {
                let epoch: Arc<str> = h.epoch.into();
                for m in h.messages {
                    if self.pos.as_ref().is_some_and(|(_, at)| m.seq == at + 1) {
                        self.deliver(Arc::new(Encoded::new(self.room.clone(), epoch.clone(), m)));
                    }
                }
                self.drain_held();
            }
            Ok(h) => {
                // The owner's history no longer reaches back: start over at its position.
                self.resync(h.epoch.into(), h.seq);
                self.drain_held();
            }
            Err(e) => {
                tracing::warn!(error = %e, room = %self.room, "gap fill failed");
                self.give_up_on_gap();
            }
        }
    }

    /// Continuity cannot be restored: resync at the first held message.
    fn give_up_on_gap(&mut self) {
        let Some((&first, enc)) = self.held.first_key_value() else {
            return;
        };
        let epoch = enc.epoch.clone();
        self.resync(epoch, first - 1);
        self.drain_held();
    }

    /// Re-registers the members if the room's owner changed.
    fn on_ring_change(&mut self) {
        let owner = self.router.membership().ring().owner(&self.room).map(Arc::from);
        if owner.is_none() {
            // Cut off from the routers for longer than their TTL: they have
            // likely dropped our members too. Whoever owns the room when the
            // ring is back gets them again, even the same router.
            self.owner = None;
            return;
        }
        if owner == self.owner {
            return;
        }
        self.owner = owner;
        self.start_sync();
    }

    fn start_sync(&mut self) {
        if let Some(old) = self.sync.take() {
            old.abort();
        }
        if self.members.is_empty() {
            return;
        }
        let members: Vec<pb::MemberRef> = self
            .members
            .iter()
            .map(|(conn, m)| pb::MemberRef {
                gateway: self.gateway.to_string(),
                conn: conn.to_string(),
                user: m.user.to_string(),
                info: m.info.clone(),
            })
            .collect();
        let (router, room, gateway) = (self.router.clone(), self.room.clone(), self.gateway.to_string());
        metrics::counter!("switchboard_gateway_room_syncs_total").increment(1);
        self.sync = Some(tokio::spawn(async move {
            let mut attempt = 0;
            'retry: loop {
                let mut last = Err(CallError::Unavailable);
                for page in members.chunks(SYNC_PAGE) {
                    let kind = router_request::Kind::Sync(pb::SyncRequest {
                        gateway: gateway.clone(),
                        members: page.to_vec(),
                    });
                    last = match router.call(&room, kind).await {
                        Ok(router_reply::Kind::Join(j)) => Ok(j),
                        Ok(_) => Err(CallError::Unavailable),
                        Err(e) => Err(e),
                    };
                    if last.is_err() {
                        attempt += 1;
                        if attempt >= FILL_ATTEMPTS {
                            return last;
                        }
                        tokio::time::sleep(Duration::from_millis(300 * attempt as u64)).await;
                        continue 'retry;
                    }
                }
                return last;
            }
        }));
    }

    /// The new owner's position: carry on, fill the gap, or resync.
    fn on_sync(&mut self, result: Sync) {
        match result {
            Ok(j) => match &self.pos {
                None => self.pos = Some((j.epoch.into(), j.seq)),
                Some((epoch, _)) if **epoch != *j.epoch => {
                    tracing::info!(room = %self.room, "room owner changed epoch: members resync");
                    self.resync(j.epoch.into(), j.seq);
                }
                Some((_, at)) if j.seq > *at => self.start_fill(),
                Some(_) => {}
            },
            Err(e) => {
                // The next ring change tries again.
                tracing::warn!(room = %self.room, error = %e, "re-registering with the new owner failed");
                self.owner = None;
            }
        }
    }

    fn attach(&mut self, a: Attach) {
        for frame in a.frames {
            a.listener.outbox.push(Out::Data(frame));
        }
        let epoch: Arc<str> = a.epoch.into();
        let after = match &self.pos {
            None => {
                self.pos = Some((epoch, a.seq));
                a.seq
            }
            Some((e, _)) if *e != epoch => {
                // The owner is on a newer stream than we have seen events of.
                self.resync(epoch, a.seq);
                a.seq
            }
            Some((_, at)) if a.seq >= *at => a.seq,
            Some((e, at)) => {
                // We are ahead of the member's answer: catch it up from recent.
                let (e, at) = (e.clone(), *at);
                let missing: Vec<_> = self.recent.iter().filter(|m| m.seq() > a.seq).cloned().collect();
                if missing.first().is_some_and(|m| m.seq() == a.seq + 1) {
                    for m in missing {
                        a.listener.outbox.push(Out::Data(m.bytes(a.listener.encoding)));
                    }
                } else {
                    let frame = Event::Resync { room: &self.room, epoch: &e, seq: at }.encode(a.listener.encoding);
                    a.listener.outbox.push(Out::Data(frame));
                }
                at
            }
        };
        self.members.insert(a.conn, Member { user: a.user, info: a.info, listener: a.listener, after });
    }
}
