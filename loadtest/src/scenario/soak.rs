//! `soak`: long churn, and a check that nothing leaks.
//!
//! A fixed number of slots each run one connection after another: a new
//! user connects, joins one to three rooms, publishes, leaves one room for
//! another half way through its life, and goes; a share of them never read
//! (the gateway closes those 4000 when their queue fills). After a warm-up
//! the servers' RSS (`--rss-pid`) is sampled, and again at the end under the
//! same load: growth past `--rss-growth` is a leak. Once everyone has left
//! (and presence's offline grace has passed), every gauge of connections,
//! sessions, members and queued bytes at `--metrics` must be back to what it
//! was before the run. Continuity is checked as in every room load.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::watch;

use super::member::{self, Member, Pace};
use super::{failure_kind, Target};
use crate::procfs::rss_kib;
use crate::report::Report;
use crate::stats::Stats;

/// Distinct users each connection slot cycles through.
const USERS_PER_SLOT: usize = 4;

/// Parameters of a soak run.
#[derive(Debug, Clone, clap::Args)]
pub struct Soak {
    /// Connections alive at any moment.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Rooms the connections pick from.
    #[arg(long, default_value_t = 50)]
    pub rooms: usize,
    /// Longest life of one connection (each lives a random share of it).
    #[arg(long, default_value = "10s", value_parser = shell::cli::duration)]
    pub lifetime: Duration,
    /// Messages per second per connection.
    #[arg(long, default_value_t = 0.5)]
    pub rate: f64,
    /// Share of connections that never read.
    #[arg(long, default_value_t = 0.02)]
    pub slow_share: f64,
    /// Share of the run before the first RSS sample.
    #[arg(long, default_value_t = 0.2)]
    pub warmup: f64,
    /// Server processes whose RSS must not grow (comma-separated pids).
    #[arg(long, value_delimiter = ',')]
    pub rss_pid: Vec<u32>,
    /// Allowed RSS growth from the end of warm-up to the end of the run.
    #[arg(long, default_value_t = 0.10)]
    pub rss_growth: f64,
    /// Admin URLs (`http://127.0.0.1:9090`) whose gauges must return to idle.
    #[arg(long, value_delimiter = ',')]
    pub metrics: Vec<String>,
    /// Wait after everyone left before reading the gauges (presence's
    /// offline grace is 5 s).
    #[arg(long, default_value = "7s", value_parser = shell::cli::duration)]
    pub settle: Duration,
}

impl Soak {
    pub async fn run(&self, target: &Target, duration: Duration, stats: Arc<Stats>) -> Report {
        let idle = gauges(&self.metrics).await;
        let (stop, stopped) = watch::channel(false);
        let slots: Vec<_> = (0..self.connections)
            .map(|slot| tokio::spawn(churn(self.clone(), target.clone(), slot, stats.clone(), stopped.clone())))
            .collect();
        tokio::time::sleep(duration.mul_f64(self.warmup.clamp(0.0, 0.9))).await;
        let warm: Vec<(u32, Option<u64>)> = self.rss_pid.iter().map(|p| (*p, rss_kib(*p))).collect();
        tokio::time::sleep(duration.mul_f64(1.0 - self.warmup.clamp(0.0, 0.9))).await;
        let end: Vec<Option<u64>> = self.rss_pid.iter().map(|p| rss_kib(*p)).collect();
        let _ = stop.send(true);
        for slot in slots {
            let _ = slot.await;
        }
        tokio::time::sleep(self.settle).await;
        let after = gauges(&self.metrics).await;

        let params = vec![
            ("connections".into(), self.connections.to_string()),
            ("rooms".into(), self.rooms.to_string()),
            ("lifetime".into(), format!("{:?}", self.lifetime)),
            ("rate".into(), self.rate.to_string()),
            ("slow share".into(), self.slow_share.to_string()),
            ("duration".into(), format!("{duration:?}")),
        ];
        let mut report = Report::new("soak", &target.urls.join(","), params, &stats);
        report.figure("connections opened", stats.connections.load(Ordering::Relaxed) as f64, "");
        report.figure("published", stats.sent.load(Ordering::Relaxed) as f64, "msgs");
        report.figure("deliveries", stats.delivered.load(Ordering::Relaxed) as f64, "msgs");
        for ((pid, warm), end) in warm.into_iter().zip(end) {
            let (Some(warm), Some(end)) = (warm, end) else {
                report.errors.push(format!("pid {pid}: no RSS to read"));
                continue;
            };
            let growth = end as f64 / warm as f64 - 1.0;
            report.figure(&format!("pid {pid} RSS after warm-up"), warm as f64, "KiB");
            report.figure(&format!("pid {pid} RSS at the end"), end as f64, "KiB");
            if growth > self.rss_growth {
                report.errors.push(format!(
                    "pid {pid}: RSS grew {:.1}% after warm-up ({warm} → {end} KiB; allowed {:.0}%)",
                    growth * 100.0,
                    self.rss_growth * 100.0
                ));
            }
        }
        for (name, value) in &after {
            let before = idle.get(name).copied().unwrap_or(0.0);
            if *value > before {
                report.errors.push(format!("{name} is {value} after everyone left, {before} before the run"));
            }
        }
        report.figure("gauges back to idle", after.len() as f64, "");
        if stats.connections.load(Ordering::Relaxed) == 0 {
            report.errors.push("no connection could be opened".into());
        }
        report
    }
}

/// One slot: connection after connection until `stop`.
async fn churn(soak: Soak, target: Target, slot: usize, stats: Arc<Stats>, stopped: watch::Receiver<bool>) {
    let mut generation = 0usize;
    // Slots start spread over a second, not all at once.
    tokio::time::sleep(Duration::from_millis((slot % 1000) as u64)).await;
    while !*stopped.borrow() {
        generation += 1;
        let (life, rooms, slow) = {
            let mut rng = rand::rng();
            let life = soak.lifetime.mul_f64(rng.random_range(0.2..1.0));
            let n = rng.random_range(1..=3usize);
            let mut rooms: Vec<String> =
                (0..n).map(|_| format!("{}soak-{}", target.prefix, rng.random_range(0..soak.rooms))).collect();
            rooms.sort();
            rooms.dedup();
            (life, rooms, rng.random_bool(soak.slow_share.clamp(0.0, 1.0)))
        };
        // A bounded population, as in a real application: users come back.
        // With a new user per connection, presence's last-seen memory
        // (kept an hour per offline user, by design) would grow for the
        // whole run and read as a leak.
        let user = format!("s{slot}-{}", generation % USERS_PER_SLOT);
        let conn = match target.open(slot, &user).await {
            Ok(conn) => conn,
            Err(e) => {
                stats.fail(failure_kind(&e));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        if slow {
            // Joins, then never reads: the gateway's bound closes it.
            for room in &rooms {
                let _ = conn.send(format!(r#"{{"op":"join","room":"{room}","id":1}}"#)).await;
            }
            let mut stop = stopped.clone();
            let _ = tokio::time::timeout(life, stop.changed()).await;
            conn.abort();
            continue;
        }
        let mut m = Member::new(conn);
        let mut joined = Vec::new();
        for room in rooms {
            match m.join(&room, &stats).await {
                Ok(()) => joined.push(room),
                Err(e) => stats.fail(failure_kind(&e)),
            }
        }
        let Some(first) = joined.first().cloned() else {
            member::close(&m.conn.sender()).await;
            continue;
        };
        let sender = m.conn.sender();
        let (quit, quitting) = watch::channel(false);
        let pace = Pace { rate: soak.rate, window: 16, size: 100 };
        tokio::spawn(member::publish(
            sender.clone(),
            first,
            format!("s{slot}g{generation}"),
            pace,
            m.window.clone(),
            stats.clone(),
            quitting,
        ));
        // Half way, leave the last room: join/leave churn.
        if read_for(&mut m, life / 2, &stats, &stopped).await && joined.len() > 1 {
            let last = joined.pop().expect("more than one");
            let _ = sender.send(format!(r#"{{"op":"leave","room":"{last}","id":2}}"#)).await;
        }
        read_for(&mut m, life / 2, &stats, &stopped).await;
        let _ = quit.send(true);
        member::close(&sender).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), m.read(&stats)).await;
        m.settle(&stats);
    }
}

/// Reads for `time`; false when the run stopped or the connection closed first.
async fn read_for(m: &mut Member, time: Duration, stats: &Stats, stopped: &watch::Receiver<bool>) -> bool {
    let mut stop = stopped.clone();
    tokio::time::timeout(time, async {
        tokio::select! {
            _ = m.read(stats) => {}
            _ = stop.changed() => {}
        }
    })
    .await
    .is_err()
}

/// The gauges that hold connections, sessions, members or queued bytes,
/// summed over `admins`' `/metrics` (by name, over all labels).
async fn gauges(admins: &[String]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for admin in admins {
        let Ok(text) = crate::http::get(&format!("{}/metrics", admin.trim_end_matches('/'))).await else { continue };
        let mut gauges = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("# TYPE ").and_then(|l| l.strip_suffix(" gauge")) {
                gauges.insert(name.to_owned());
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let name = series.split('{').next().unwrap_or(series);
            if gauges.contains(name) && held(name) {
                *out.entry(format!("{admin} {name}")).or_default() += value.parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    out
}

/// A gauge that must return to idle once everyone left: rooms and their
/// history stay by design (bounded by the history budget), rings are not
/// tables of clients.
fn held(name: &str) -> bool {
    let table = ["_connections", "_sessions", "_users_online", "_members", "_bytes", "_messages"]
        .iter()
        .any(|suffix| name.ends_with(suffix));
    table && !name.ends_with("_history_bytes")
}
