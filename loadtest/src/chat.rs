//! A chat load: rooms of members on several gateways, publishing and
//! checking what they receive.
//!
//! Members reconnect on their own (to the next gateway, resuming with
//! `since`), so the same load runs through router handoffs, crashes and
//! gateway restarts. Each published message carries its publisher and a
//! counter, so the report can say exactly which acknowledged messages a
//! member never received, besides the per-room continuity counts.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{watch, Barrier};

use crate::check::Continuity;
use crate::client::{Client, ClientError, ConnectOptions, Incoming};
use crate::token::{mint, SigningKey, TokenSpec};

/// The shape of the load.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Gateway WebSocket URLs (`ws://host:port/ws`); members spread over them.
    pub urls: Vec<String>,
    pub key: SigningKey,
    pub rooms: usize,
    pub members_per_room: usize,
    /// How many of each room's members publish.
    pub publishers_per_room: usize,
    /// Interval between one publisher's messages.
    pub publish_every: Duration,
    /// Room ids are `<prefix><n>`.
    pub room_prefix: String,
}

/// A running load.
pub struct Chat {
    stop: watch::Sender<bool>,
    members: Vec<tokio::task::JoinHandle<MemberReport>>,
    started: Instant,
}

/// What one member did and saw.
#[derive(Debug, Clone)]
pub struct MemberReport {
    pub user: String,
    pub room: String,
    pub continuity: Continuity,
    /// Messages received: (publisher, counter).
    pub received: HashSet<(String, u64)>,
    /// Messages this member published and had acknowledged: (counter, when).
    pub acked: Vec<(u64, Instant)>,
    /// Publishes that failed (`unavailable`, timeouts, closed connections).
    pub publish_errors: u64,
    pub reconnects: u64,
    /// From publish to the publisher's own receipt of the message.
    pub latencies: Vec<Duration>,
}

/// What the whole load saw.
#[derive(Debug)]
pub struct ChatReport {
    pub members: Vec<MemberReport>,
    pub started: Instant,
}

impl Chat {
    /// Connects every member, joins them to their rooms, and starts
    /// publishing once all have joined.
    pub async fn start(config: ChatConfig) -> Self {
        let (stop, stopped) = watch::channel(false);
        let total = config.rooms * config.members_per_room;
        let barrier = Arc::new(Barrier::new(total + 1));
        let config = Arc::new(config);
        let mut members = Vec::with_capacity(total);
        for i in 0..total {
            let (config, barrier, stopped) = (config.clone(), barrier.clone(), stopped.clone());
            members.push(tokio::spawn(async move { member(i, &config, barrier, stopped).await }));
        }
        barrier.wait().await;
        Self { stop, members, started: Instant::now() }
    }

    /// Stops publishing, lets deliveries settle for `settle`, and reports.
    pub async fn stop(self, settle: Duration) -> ChatReport {
        let _ = self.stop.send(true);
        tokio::time::sleep(settle).await;
        let _ = self.stop.send(true);
        let mut members = Vec::new();
        for m in self.members {
            members.push(m.await.expect("member task"));
        }
        ChatReport { members, started: self.started }
    }
}

impl ChatReport {
    /// Gaps, duplicates and silent epoch changes, per member and room.
    pub fn continuity_errors(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.members {
            for (room, v) in &m.continuity.rooms {
                if v.lost > 0 || v.duplicated > 0 || v.silent_epoch_changes > 0 {
                    out.push(format!("{} in {room}: {v:?}", m.user));
                }
            }
        }
        out
    }

    /// Resyncs seen, over all members.
    pub fn resyncs(&self) -> u64 {
        self.members.iter().flat_map(|m| m.continuity.rooms.values()).map(|v| v.resyncs).sum()
    }

    /// The rooms in which some member saw a resync.
    pub fn resynced_rooms(&self) -> std::collections::BTreeSet<String> {
        let rooms = self.members.iter().flat_map(|m| m.continuity.rooms.iter());
        rooms.filter(|(_, v)| v.resyncs > 0).map(|(room, _)| room.clone()).collect()
    }

    /// Acknowledged messages (acked at or after `since`) that some member of
    /// the room never received.
    pub fn missing(&self, since: Instant) -> Vec<String> {
        self.missing_outside(&[self.started..since])
    }

    /// Acknowledged messages that some member of the room never received,
    /// except those acknowledged during `excused` (outages in which losing
    /// a message is allowed, as long as members are told with `resync`).
    pub fn missing_outside(&self, excused: &[Range<Instant>]) -> Vec<String> {
        let mut by_room: HashMap<&str, Vec<&MemberReport>> = HashMap::new();
        for m in &self.members {
            by_room.entry(&m.room).or_default().push(m);
        }
        let mut out = Vec::new();
        for (room, members) in by_room {
            for publisher in &members {
                for (n, at) in publisher.acked.iter().filter(|(_, at)| !excused.iter().any(|r| r.contains(at))) {
                    for m in &members {
                        if !m.received.contains(&(publisher.user.clone(), *n)) {
                            out.push(format!(
                                "{} missed {}#{n} in {room} (acked {:?} into the run)",
                                m.user,
                                publisher.user,
                                at.duration_since(self.started)
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    /// Acknowledged publishes in total.
    pub fn acked(&self) -> usize {
        self.members.iter().map(|m| m.acked.len()).sum()
    }
}

/// One member's life: connect, join, publish and read until told to stop,
/// reconnecting whenever its connection ends.
async fn member(i: usize, config: &ChatConfig, barrier: Arc<Barrier>, mut stop: watch::Receiver<bool>) -> MemberReport {
    let room = format!("{}{}", config.room_prefix, i % config.rooms);
    let user = format!("m{i}");
    let publisher = i / config.rooms < config.publishers_per_room;
    let mut report = MemberReport {
        user: user.clone(),
        room: room.clone(),
        continuity: Continuity::default(),
        received: HashSet::new(),
        acked: Vec::new(),
        publish_errors: 0,
        reconnects: 0,
        latencies: Vec::new(),
    };
    let token = mint(&config.key, &TokenSpec::new(user.clone(), 86_400));
    let mut gateway = i % config.urls.len();
    let mut client = loop {
        match connect(&config.urls[gateway], &token, &room, &mut report).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    barrier.wait().await;
    let mut counter = 0u64;
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let mut next_publish = Instant::now() + config.publish_every.mul_f64((i % 10) as f64 / 10.0);
    let mut stopped_at: Option<Instant> = None;
    loop {
        if stopped_at.is_none() && *stop.borrow_and_update() {
            stopped_at = Some(Instant::now());
        }
        if stopped_at.is_some() && stop.has_changed().unwrap_or(true) {
            break;
        }
        let mut broken = false;
        if publisher && stopped_at.is_none() && Instant::now() >= next_publish {
            next_publish += config.publish_every;
            counter += 1;
            let at = Instant::now();
            sent.insert(counter, at);
            let key = format!("{user}-{counter}");
            let op = json!({"op": "publish", "room": room, "data": {"p": user, "n": counter}, "idempotency_key": key});
            match client.request(op).await {
                Ok(r) if r["ok"] == true => report.acked.push((counter, at)),
                Ok(_) => report.publish_errors += 1,
                Err(_) => {
                    report.publish_errors += 1;
                    broken = true;
                }
            }
        }
        if !broken {
            let wait = next_publish.saturating_duration_since(Instant::now()).min(Duration::from_millis(50));
            match client.recv(wait).await {
                None => {}
                Some(Incoming::Text(t)) => {
                    if let Ok(ev) = serde_json::from_str::<Value>(&t) {
                        if report.continuity.event(&ev).is_some() && ev["type"] == "message" {
                            let (p, n) =
                                (ev["data"]["p"].as_str().unwrap_or_default(), ev["data"]["n"].as_u64().unwrap_or(0));
                            if p == user {
                                if let Some(at) = sent.remove(&n) {
                                    report.latencies.push(at.elapsed());
                                }
                            }
                            report.received.insert((p.to_owned(), n));
                        }
                    }
                }
                Some(Incoming::Close(_) | Incoming::Gone) => broken = true,
                Some(_) => {}
            }
        }
        if broken {
            // Reconnect elsewhere with backoff, resuming where we were.
            let mut backoff = Duration::from_millis(50);
            loop {
                if *stop.borrow() && stopped_at.is_some() {
                    return report;
                }
                gateway = (gateway + 1) % config.urls.len();
                tokio::time::sleep(backoff.mul_f64(0.5 + rand_unit())).await;
                if let Ok(c) = connect(&config.urls[gateway], &token, &room, &mut report).await {
                    client = c;
                    report.reconnects += 1;
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    report
}

/// Connects, joins `room` (resuming from the member's position), and
/// records the join.
async fn connect(url: &str, token: &str, room: &str, report: &mut MemberReport) -> Result<Client, ClientError> {
    let mut opts = ConnectOptions::new(url);
    opts.bearer = Some(token.to_owned());
    opts.timeout = Duration::from_secs(3);
    let mut client = Client::connect(opts).await?;
    client.next_of_type("hello", Duration::from_secs(3)).await?;
    let mut op = json!({"op": "join", "room": room});
    if let Some((epoch, seq)) = report.continuity.position(room) {
        op["since"] = json!({"epoch": epoch, "seq": seq});
    }
    let reply = client.request(op).await?;
    if reply["ok"] != true {
        return Err(ClientError::Unexpected(reply.to_string()));
    }
    report.continuity.joined(room, &reply);
    Ok(client)
}

fn rand_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() % 1000) as f64 / 1000.0
}
