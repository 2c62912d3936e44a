//! `reconnect`: every member's connection drops at once, and all come back
//! with exponential backoff and full jitter, resuming their room with
//! `since`. Measures the time to full recovery and checks nothing was lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Barrier};

use super::member::{self, Member, Pace};
use super::{failure_kind, Target};
use crate::report::Report;
use crate::stats::Stats;

/// Tries of each member's first connection, before the drop.
const INITIAL_ATTEMPTS: u32 = 5;

/// Parameters of a reconnect run.
#[derive(Debug, Clone, clap::Args)]
pub struct Reconnect {
    /// Members that drop and come back.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Rooms they are spread over; each has one publisher that stays.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Messages per second per room.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// First backoff step; doubles per failed attempt.
    #[arg(long, default_value = "100ms", value_parser = shell::cli::duration)]
    pub backoff: Duration,
    /// Largest backoff step.
    #[arg(long, default_value = "5s", value_parser = shell::cli::duration)]
    pub backoff_cap: Duration,
}

impl Reconnect {
    pub async fn run(&self, target: &Target, duration: Duration, stats: Arc<Stats>) -> Report {
        let (stop, stopped) = watch::channel(false);
        let started = tokio::time::Instant::now();
        // One publisher per room, on connections that stay up.
        let mut publishers = Vec::new();
        for r in 0..self.rooms {
            let room = format!("reconnect-{r}");
            let Ok(conn) = target.open(r, &format!("pub{r}")).await else {
                stats.fail("publisher could not connect");
                continue;
            };
            let mut m = Member::new(conn);
            if m.join(&room, &stats).await.is_err() {
                stats.fail("publisher could not join");
                continue;
            }
            let pace = Pace { rate: self.rate, window: 16, size: 100 };
            let sender = m.conn.sender();
            tokio::spawn(member::publish(
                sender.clone(),
                room,
                format!("pub{r}"),
                pace,
                m.window.clone(),
                stats.clone(),
                stopped.clone(),
            ));
            let stats = stats.clone();
            publishers.push((
                sender,
                tokio::spawn(async move {
                    let quiet = Stats::new();
                    m.read(&quiet).await;
                    drop(stats);
                }),
            ));
        }
        // The members: join, read, drop at the signal, come back, read on.
        let drop_at = Arc::new(Barrier::new(self.connections + 1));
        // Members connected before the drop, and members back after it: the
        // live connection count cannot tell, as early returners overlap
        // late droppers.
        let (joined, back) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for i in 0..self.connections {
            let (target, stats, drop_at, mut stopped) =
                (target.clone(), stats.clone(), drop_at.clone(), stopped.clone());
            let (joined, back) = (joined.clone(), back.clone());
            let room = format!("reconnect-{}", i % self.rooms);
            let (base, cap, rooms) = (self.backoff, self.backoff_cap, self.rooms);
            tasks.push(tokio::spawn(async move {
                target.pace(started, i).await;
                let user = format!("r{i}");
                // A real client retries a first connection that admission
                // turned away (1013) too: a few times, with the same backoff.
                let mut first = None;
                for attempt in 0..INITIAL_ATTEMPTS {
                    match target.open(rooms + i, &user).await {
                        Ok(conn) => {
                            first = Some(conn);
                            break;
                        }
                        Err(e) => stats.fail(failure_kind(&e)),
                    }
                    tokio::time::sleep(base.saturating_mul(1 << attempt).min(cap).mul_f64(jitter())).await;
                }
                let Some(conn) = first else {
                    drop_at.wait().await;
                    return None;
                };
                let mut m = Member::new(conn);
                if m.join(&room, &stats).await.is_err() {
                    stats.fail("join failed");
                }
                stats.connections.fetch_add(1, Ordering::Relaxed);
                joined.fetch_add(1, Ordering::Relaxed);
                // Read until the drop: the closer below ends this read.
                let sender = m.conn.sender();
                let dropper = tokio::spawn({
                    let drop_at = drop_at.clone();
                    async move {
                        drop_at.wait().await;
                        member::close(&sender).await;
                    }
                });
                m.read(&stats).await;
                let _ = dropper.await;
                stats.connections.fetch_sub(1, Ordering::Relaxed);
                let dropped = Instant::now();
                let mut attempt = 0u32;
                loop {
                    // Full jitter: anywhere between zero and the capped step.
                    let step = base.saturating_mul(1 << attempt.min(16)).min(cap);
                    tokio::time::sleep(step.mul_f64(jitter())).await;
                    attempt += 1;
                    match target.open(rooms + i, &user).await {
                        Ok(conn) => {
                            m.conn = conn;
                            if m.join(&room, &stats).await.is_ok() {
                                break;
                            }
                            stats.fail("rejoin failed");
                        }
                        Err(e) => stats.fail(format!("reconnect: {}", failure_kind(&e))),
                    }
                    if *stopped.borrow_and_update() {
                        return Some(m);
                    }
                }
                stats.record("time to recover", dropped.elapsed().as_micros() as u64);
                back.fetch_add(1, Ordering::Relaxed);
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let sender = m.conn.sender();
                let closer = tokio::spawn(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                    member::close(&sender).await;
                });
                m.read(&stats).await;
                closer.abort();
                Some(m)
            }));
        }
        tokio::time::sleep(duration / 3).await;
        let dropped = Instant::now();
        drop_at.wait().await;
        // Wait until everyone is back (or the run's time is up).
        let deadline = tokio::time::Instant::now() + duration;
        while back.load(Ordering::Relaxed) < joined.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let recovered = dropped.elapsed();
        tokio::time::sleep(duration / 3).await;
        let _ = stop.send(true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (sender, reader) in publishers {
            member::close(&sender).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        for t in tasks {
            if let Ok(Ok(Some(m))) = tokio::time::timeout(Duration::from_secs(10), t).await {
                m.settle(&stats);
            }
        }
        let params = vec![
            ("connections".into(), self.connections.to_string()),
            ("rooms".into(), self.rooms.to_string()),
            ("rate".into(), self.rate.to_string()),
            ("backoff".into(), format!("{:?}..{:?}", self.backoff, self.backoff_cap)),
            ("duration".into(), format!("{duration:?}")),
        ];
        let mut report = Report::new("reconnect", &target.urls.join(","), params, &stats);
        let back = stats.extra().get("time to recover").map_or(0, |h| h.len());
        report.figure("members back", back as f64, "");
        report.figure("time to full recovery", recovered.as_secs_f64(), "s");
        report.figure("published", stats.sent.load(Ordering::Relaxed) as f64, "msgs");
        if back < self.connections as u64 {
            report.errors.push(format!("{} members never came back", self.connections as u64 - back));
        }
        report
    }
}

fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    (h.finish() % 10_000) as f64 / 10_000.0
}
