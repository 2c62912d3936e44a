//! The engine behind `chat`, `broadcast` and `slow`: rooms of members on
//! one or more gateways, some publishing, some (optionally) not reading.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::member::{self, Member, Pace};
use super::{failure_kind, Target};
use crate::client::ClientError;
use crate::report::Report;
use crate::stats::Stats;

/// The shape of a room load.
#[derive(Debug, Clone)]
pub struct Spec {
    pub rooms: usize,
    pub members_per_room: usize,
    pub publishers_per_room: usize,
    pub pace: Pace,
    pub room_prefix: String,
    /// Share of non-publishing members that never read.
    pub slow_share: f64,
    /// How long members sit joined and idle before anyone publishes (held
    /// through heartbeats: a connection lost meanwhile is counted).
    pub hold: Duration,
    /// After the load, one more message per room from its first member,
    /// which every member must end with.
    pub final_broadcast: bool,
}

/// What the engine measured besides the shared stats.
pub struct Outcome {
    pub joined: usize,
    pub publish_secs: f64,
    pub active_secs: f64,
    /// Close codes seen by the members that never read.
    pub slow_closes: Vec<Option<u16>>,
    /// Members still connected after the hold (all of them without one).
    pub held: usize,
    /// Members whose last message was their room's last (the tail check).
    pub at_end: usize,
    /// Members the tail check saw (their reader stopped in time).
    pub checked: usize,
}

pub async fn run(spec: &Spec, target: &Target, duration: Duration, stats: Arc<Stats>) -> Outcome {
    let (stop, stopped) = watch::channel(false);
    let started = tokio::time::Instant::now();
    let total = spec.rooms * spec.members_per_room;
    let slow_every = if spec.slow_share > 0.0 { (1.0 / spec.slow_share).round().max(1.0) as usize } else { 0 };
    let mut joining = Vec::with_capacity(total);
    for i in 0..total {
        let room = format!("{}{}{}", target.prefix, spec.room_prefix, i % spec.rooms);
        let (target, stats) = (target.clone(), stats.clone());
        let rank = i / spec.rooms;
        let publishes = rank < spec.publishers_per_room;
        let slow = !publishes && slow_every > 0 && rank.is_multiple_of(slow_every);
        joining.push(tokio::spawn(async move {
            target.pace(started, i).await;
            // As a client does: a connect or join the server asks to retry
            // (1013, `unavailable`, no answer in time) is tried again.
            let mut attempt = 0;
            let mut m = loop {
                attempt += 1;
                let opened = std::time::Instant::now();
                let joined = async {
                    let conn = target.open(i, &format!("u{i}")).await?;
                    stats.record("handshake", opened.elapsed().as_micros() as u64);
                    let mut m = Member::new(conn);
                    m.join(&room, &stats).await?;
                    Ok::<_, ClientError>(m)
                };
                match joined.await {
                    Ok(m) => break m,
                    Err(e) if attempt < JOIN_ATTEMPTS && super::retryable(&e) => {
                        stats.fail(format!("retried after {}", failure_kind(&e)));
                        tokio::time::sleep(Duration::from_millis(250 << attempt.min(4))).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let (sender, window) = (m.conn.sender(), m.window.clone());
            // A member reads (and answers pings) from the moment it joined:
            // a ramp of 100,000 takes longer than a heartbeat.
            let reading = if slow {
                Reading::Never(Box::new(m))
            } else {
                Reading::Now(tokio::spawn(async move {
                    m.read(&stats).await;
                    m
                }))
            };
            Ok::<_, ClientError>((i, room, sender, window, publishes, reading))
        }));
    }
    let (mut readers, mut senders, mut slow, mut publishers, mut firsts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for j in joining {
        let (i, room, sender, window, publishes, reading) = match j.await.expect("join task") {
            Ok(m) => m,
            Err(e) => {
                stats.fail(failure_kind(&e));
                continue;
            }
        };
        if i < spec.rooms {
            firsts.push((room.clone(), sender.clone()));
        }
        if publishes {
            publishers.push((sender.clone(), room, format!("p{i}"), window));
        }
        match reading {
            Reading::Never(m) => slow.push(*m),
            Reading::Now(reader) => {
                senders.push(sender);
                readers.push(reader);
            }
        }
    }
    let joined = readers.len() + slow.len();
    // Everyone reads (and answers pings) while held; nobody publishes yet.
    tokio::time::sleep(spec.hold).await;
    let held = readers.iter().filter(|r| !r.is_finished()).count() + slow.len();
    let publish_started = stats.elapsed();
    for (sender, room, name, window) in publishers {
        tokio::spawn(member::publish(sender, room, name, spec.pace, window, stats.clone(), stopped.clone()));
    }
    tokio::time::sleep(duration).await;
    let _ = stop.send(true);
    let publish_ended = stats.elapsed();
    if spec.final_broadcast {
        for (room, sender) in &firsts {
            let data = crate::scan::payload(stats.now_ns(), &format!("final-{room}"), 1, spec.pace.size);
            let op = format!(r#"{{"op":"publish","room":"{room}","id":{FINAL_ID},"data":{data}}}"#);
            if sender.send(op).await.is_ok() {
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // Let deliveries drain: stop after a quiet 500 ms (at most 10 s).
    let mut last = stats.delivered.load(Ordering::Relaxed);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = stats.delivered.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let drained = stats.elapsed();
    for s in &senders {
        member::close(s).await;
    }
    let mut read = Vec::new();
    for r in readers {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), r).await {
            m.settle(&stats);
            read.push(m);
        }
    }
    let (at_end, checked) = (tail_check(&read, &stats), read.len());
    // The members that never read now read what is left: the gateway should
    // have closed them as slow consumers (4000).
    let mut slow_closes = Vec::new();
    for mut m in slow {
        let quiet = Stats::new();
        slow_closes.push(tokio::time::timeout(Duration::from_secs(10), m.read(&quiet)).await.unwrap_or(None));
    }
    Outcome {
        joined,
        publish_secs: (publish_ended - publish_started).as_secs_f64().max(1e-3),
        active_secs: (drained - publish_started).as_secs_f64().max(1e-3),
        slow_closes,
        held,
        at_end,
        checked,
    }
}

/// Connects and joins a member tries before giving up.
const JOIN_ATTEMPTS: u32 = 5;

/// How a joined member reads.
enum Reading {
    /// Its reader runs; the member comes back when its connection closes.
    Now(tokio::task::JoinHandle<Member>),
    /// It never reads (a slow consumer).
    Never(Box<Member>),
}

/// Request id of the final broadcast's publish (publishes count from 1000).
const FINAL_ID: u64 = 1 << 40;

/// Every member of a room must end on the room's last seq: a gap shows in
/// continuity, a lost tail only here. Counts each member behind its room's
/// last message as lost (by how far), and returns how many were not.
fn tail_check(members: &[Member], stats: &Stats) -> usize {
    let mut last: std::collections::HashMap<(&str, &str), u64> = Default::default();
    for m in members {
        for (room, v) in &m.continuity.rooms {
            let top = last.entry((room.as_str(), v.epoch.as_str())).or_default();
            *top = (*top).max(v.last);
        }
    }
    let mut at_end = 0;
    for m in members {
        let behind: u64 =
            m.continuity.rooms.iter().map(|(room, v)| last[&(room.as_str(), v.epoch.as_str())] - v.last).sum();
        if behind == 0 {
            at_end += 1;
        } else {
            stats.add_continuity(&crate::check::RoomView { lost: behind, ..Default::default() });
        }
    }
    at_end
}

/// The figures every room load reports.
pub fn figures(report: &mut Report, stats: &Stats, outcome: &Outcome) {
    let sent = stats.sent.load(Ordering::Relaxed) as f64;
    let delivered = stats.delivered.load(Ordering::Relaxed) as f64;
    report.figure("members joined", outcome.joined as f64, "");
    report.figure("members held", outcome.held as f64, "");
    report.figure("members at the end", outcome.at_end as f64, "");
    report.figure("members checked at the end", outcome.checked as f64, "");
    report.figure("published", sent, "msgs");
    report.figure("acknowledged", stats.acked.load(Ordering::Relaxed) as f64, "msgs");
    report.figure("publish rate", sent / outcome.publish_secs, "msgs/s");
    report.figure("deliveries", delivered, "msgs");
    report.figure("deliveries/s", delivered / outcome.active_secs, "msgs/s");
    if delivered > 0.0 {
        // All this process's connections received, replies and joins included.
        report.figure("received bytes per delivery", crate::conn::received_bytes() as f64 / delivered, "B");
    }
    if outcome.joined == 0 {
        report.errors.push("no member could connect and join".into());
    } else if sent > 0.0 && stats.acked.load(Ordering::Relaxed) == 0 {
        report.errors.push("no publish was acknowledged".into());
    }
}
