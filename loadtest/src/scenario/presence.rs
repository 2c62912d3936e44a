//! `presence`: users come and go while watchers follow them. Measures the
//! time from a connect (or disconnect) to the watcher's `presence` event;
//! offline events include the gateway's offline grace.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{failure_kind, Target};
use crate::conn::{Conn, Received};
use crate::report::Report;
use crate::scan::Frame;
use crate::stats::Stats;

/// Parameters of a presence run.
#[derive(Debug, Clone, clap::Args)]
pub struct Presence {
    /// Connections watching every churning user.
    #[arg(long, default_value_t = 10)]
    pub watchers: usize,
    /// Users that come and go (at most 100). Each stays online (and then
    /// offline) for users/churn seconds: keep that above the offline grace.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Connects plus disconnects per second.
    #[arg(long, default_value_t = 10.0)]
    pub churn: f64,
}

/// When each user last changed, and to what.
type Changes = Arc<Mutex<HashMap<String, (bool, Instant)>>>;

impl Presence {
    pub async fn run(&self, target: &Target, duration: Duration, stats: Arc<Stats>) -> Report {
        let users: Vec<String> = (0..self.users.min(100)).map(|i| format!("pres-{i}")).collect();
        let changes: Changes = Arc::default();
        let (stop, stopped) = watch::channel(false);
        let mut watchers = Vec::new();
        for w in 0..self.watchers {
            match target.open(w, &format!("watcher-{w}")).await {
                Ok(conn) => {
                    let op = serde_json::json!({"op": "watch", "users": users, "id": 1});
                    if conn.send(op.to_string()).await.is_ok() {
                        stats.connections.fetch_add(1, Ordering::Relaxed);
                        watchers.push(tokio::spawn(watch_loop(conn, changes.clone(), stats.clone())));
                    }
                }
                Err(e) => stats.fail(failure_kind(&e)),
            }
        }
        // Let the watches register before anyone moves.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut online: HashMap<usize, Conn> = HashMap::new();
        let every = Duration::from_secs_f64(1.0 / self.churn.max(0.1));
        let end = tokio::time::Instant::now() + duration;
        let mut i = 0usize;
        while tokio::time::Instant::now() < end {
            let u = i % users.len();
            i += 1;
            match online.remove(&u) {
                Some(conn) => {
                    changes.lock().unwrap().insert(users[u].clone(), (false, Instant::now()));
                    conn.abort();
                }
                None => {
                    changes.lock().unwrap().insert(users[u].clone(), (true, Instant::now()));
                    match target.open(self.watchers + u, &users[u]).await {
                        Ok(conn) => {
                            online.insert(u, conn);
                        }
                        Err(e) => stats.fail(failure_kind(&e)),
                    }
                }
            }
            stats.sent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(every).await;
        }
        for (_, conn) in online.drain() {
            conn.abort();
        }
        // Offline events arrive after the grace: wait for them.
        tokio::time::sleep(Duration::from_secs(7)).await;
        let _ = stop.send(true);
        drop(stopped);
        for w in watchers {
            w.abort();
        }
        let params = vec![
            ("watchers".into(), self.watchers.to_string()),
            ("users".into(), users.len().to_string()),
            ("churn".into(), self.churn.to_string()),
            ("duration".into(), format!("{duration:?}")),
        ];
        let mut report = Report::new("presence", &target.urls.join(","), params, &stats);
        report.figure("changes", stats.sent.load(Ordering::Relaxed) as f64, "");
        report.figure("presence events", stats.delivered.load(Ordering::Relaxed) as f64, "");
        report
    }
}

/// Reads a watcher's events and times each against the change behind it.
async fn watch_loop(mut conn: Conn, changes: Changes, stats: Arc<Stats>) {
    while let Received::Text(t) = conn.recv().await {
        let Some(f) = Frame::parse(&t) else { continue };
        if f.ty != "presence" {
            continue;
        }
        let (Some(user), Some(online)) = (f.user, f.online) else { continue };
        stats.delivered.fetch_add(1, Ordering::Relaxed);
        let since = changes.lock().unwrap().get(user).copied();
        match since {
            Some((state, at)) if state == online => {
                let name = if online { "online event" } else { "offline event (incl. grace)" };
                stats.record(name, at.elapsed().as_micros() as u64);
            }
            // The user moved again before this event arrived.
            _ => stats.fail("event for an outdated state"),
        }
    }
}
