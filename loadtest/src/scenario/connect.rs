//! `connect`: ramp up connections at a set rate and hold them idle.
//! Measures handshake latency, failures by close code, and (with
//! `--gateway-pid`) the gateway's memory per connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::member::{self, Member};
use super::{failure_kind, Target};
use crate::conn::Conn;
use crate::procfs::rss_kib;
use crate::report::Report;
use crate::stats::Stats;

/// Parameters of a connect run.
#[derive(Debug, Clone, clap::Args)]
pub struct Connect {
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// How long to hold the connections once all are up.
    #[arg(long, default_value = "5s", value_parser = shell::cli::duration)]
    pub hold: Duration,
    /// The server's process id (gateway or peer), to read its memory from /proc.
    #[arg(long)]
    pub gateway_pid: Option<u32>,
}

/// Opens `n` connections as users `<prefix><i>`, paced by the target's
/// connect rate, recording handshake times and failures. Returns the ones
/// that got `hello`, with their index.
pub async fn ramp(target: &Target, n: usize, prefix: &str, stats: &Arc<Stats>) -> Vec<(usize, Conn)> {
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (target, stats, user) = (target.clone(), stats.clone(), format!("{prefix}{i}"));
        tasks.push(tokio::spawn(async move {
            target.pace(started, i).await;
            let t0 = Instant::now();
            stats.sent.fetch_add(1, Ordering::Relaxed);
            match target.open(i, &user).await {
                Ok(conn) => {
                    stats.record("handshake", t0.elapsed().as_micros() as u64);
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    Some((i, conn))
                }
                Err(e) => {
                    stats.fail(failure_kind(&e));
                    None
                }
            }
        }));
    }
    let mut conns = Vec::with_capacity(n);
    for t in tasks {
        if let Ok(Some(c)) = t.await {
            conns.push(c);
        }
    }
    conns
}

impl Connect {
    pub async fn run(&self, target: &Target, stats: Arc<Stats>) -> Report {
        let before = self.gateway_pid.and_then(rss_kib);
        let ramp_started = Instant::now();
        let members: Vec<_> =
            ramp(target, self.connections, "c", &stats).await.into_iter().map(|(_, c)| Member::new(c)).collect();
        let ramp = ramp_started.elapsed();
        let connected = members.len();
        // Idle connections still answer pings: keep a reader on each.
        let mut senders = Vec::new();
        let mut readers = Vec::new();
        for mut m in members {
            senders.push(m.conn.sender());
            let stats = stats.clone();
            readers.push(tokio::spawn(async move {
                let code = m.read(&stats).await;
                if code != Some(1000) {
                    stats.fail(format!("dropped while idle ({code:?})"));
                }
            }));
        }
        tokio::time::sleep(self.hold).await;
        let after = self.gateway_pid.and_then(rss_kib);
        let held = stats.connections.load(Ordering::Relaxed);
        for s in &senders {
            member::close(s).await;
        }
        for r in readers {
            let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
        }
        let params = vec![
            ("connections".into(), self.connections.to_string()),
            ("rate".into(), target.connect_rate.to_string()),
            ("hold".into(), format!("{:?}", self.hold)),
        ];
        let mut report = Report::new("connect", &target.urls.join(","), params, &stats);
        report.figure("connected", connected as f64, "");
        report.figure("failed", (self.connections - connected) as f64, "");
        report.figure("held", held as f64, "");
        report.figure("ramp", ramp.as_secs_f64(), "s");
        report.figure("handshakes/s", connected as f64 / ramp.as_secs_f64().max(1e-3), "");
        if let (Some(b), Some(a)) = (before, after) {
            report.figure("server RSS before", b as f64, "KiB");
            report.figure("server RSS held", a as f64, "KiB");
            if connected > 0 {
                report.figure("server RSS per connection", a.saturating_sub(b) as f64 / connected as f64, "KiB");
            }
        }
        report
    }
}
