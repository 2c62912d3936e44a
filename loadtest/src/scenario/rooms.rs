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
}

/// What the engine measured besides the shared stats.
pub struct Outcome {
    pub joined: usize,
    pub publish_secs: f64,
    pub active_secs: f64,
    /// Close codes seen by the members that never read.
    pub slow_closes: Vec<Option<u16>>,
}

pub async fn run(spec: &Spec, target: &Target, duration: Duration, stats: Arc<Stats>) -> Outcome {
    let (stop, stopped) = watch::channel(false);
    let started = tokio::time::Instant::now();
    let total = spec.rooms * spec.members_per_room;
    let mut joining = Vec::with_capacity(total);
    for i in 0..total {
        let (target, stats, room) = (target.clone(), stats.clone(), format!("{}{}", spec.room_prefix, i % spec.rooms));
        joining.push(tokio::spawn(async move {
            target.pace(started, i).await;
            let conn = target.open(i, &format!("u{i}")).await?;
            let mut m = Member::new(conn);
            m.join(&room, &stats).await?;
            stats.connections.fetch_add(1, Ordering::Relaxed);
            Ok::<_, ClientError>((i, room, m))
        }));
    }
    let mut members = Vec::new();
    for j in joining {
        match j.await.expect("join task") {
            Ok(m) => members.push(m),
            Err(e) => stats.fail(failure_kind(&e)),
        }
    }
    let joined = members.len();
    let publish_started = stats.elapsed();
    let (mut readers, mut senders, mut slow) = (Vec::new(), Vec::new(), Vec::new());
    let slow_every = if spec.slow_share > 0.0 { (1.0 / spec.slow_share).round().max(1.0) as usize } else { 0 };
    for (i, room, mut m) in members {
        let sender = m.conn.sender();
        let rank = i / spec.rooms;
        if rank < spec.publishers_per_room {
            tokio::spawn(member::publish(
                sender.clone(),
                room,
                format!("p{i}"),
                spec.pace,
                m.window.clone(),
                stats.clone(),
                stopped.clone(),
            ));
        } else if slow_every > 0 && rank.is_multiple_of(slow_every) {
            slow.push(m);
            continue;
        }
        senders.push(sender);
        let stats = stats.clone();
        readers.push(tokio::spawn(async move {
            m.read(&stats).await;
            m
        }));
    }
    tokio::time::sleep(duration).await;
    let _ = stop.send(true);
    let publish_ended = stats.elapsed();
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
    for r in readers {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), r).await {
            m.settle(&stats);
        }
    }
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
    }
}

/// The figures every room load reports.
pub fn figures(report: &mut Report, stats: &Stats, outcome: &Outcome) {
    let sent = stats.sent.load(Ordering::Relaxed) as f64;
    let delivered = stats.delivered.load(Ordering::Relaxed) as f64;
    report.figure("members joined", outcome.joined as f64, "");
    report.figure("published", sent, "msgs");
    report.figure("acknowledged", stats.acked.load(Ordering::Relaxed) as f64, "msgs");
    report.figure("publish rate", sent / outcome.publish_secs, "msgs/s");
    report.figure("deliveries", delivered, "msgs");
    report.figure("deliveries/s", delivered / outcome.active_secs, "msgs/s");
    if outcome.joined == 0 {
        report.errors.push("no member could connect and join".into());
    } else if sent > 0.0 && stats.acked.load(Ordering::Relaxed) == 0 {
        report.errors.push("no publish was acknowledged".into());
    }
}
