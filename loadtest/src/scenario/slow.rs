//! `slow`: a share of a room's members stop reading. The others must keep
//! their latency, and the slow ones must be closed with 4000.

use std::sync::Arc;
use std::time::Duration;

use super::member::Pace;
use super::rooms::{self, Spec};
use super::Target;
use crate::report::Report;
use crate::stats::Stats;

/// Parameters of a slow-consumer run.
#[derive(Debug, Clone, clap::Args)]
pub struct Slow {
    /// Members of the room.
    #[arg(long, default_value_t = 200)]
    pub members: usize,
    /// Share of members that never read.
    #[arg(long, default_value_t = 0.1)]
    pub slow_share: f64,
    /// Messages per second from the publisher.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Payload bytes (large payloads fill slow queues sooner).
    #[arg(long, default_value_t = 8192)]
    pub size: usize,
}

impl Slow {
    pub async fn run(&self, target: &Target, duration: Duration, stats: Arc<Stats>) -> Report {
        let spec = Spec {
            rooms: 1,
            members_per_room: self.members,
            publishers_per_room: 1,
            pace: Pace { rate: self.rate, window: 64, size: self.size },
            room_prefix: "slow-".into(),
            slow_share: self.slow_share,
            hold: Duration::ZERO,
            final_broadcast: false,
        };
        let outcome = rooms::run(&spec, target, duration, stats.clone()).await;
        let params = vec![
            ("members".into(), self.members.to_string()),
            ("slow_share".into(), self.slow_share.to_string()),
            ("rate".into(), self.rate.to_string()),
            ("size".into(), self.size.to_string()),
            ("duration".into(), format!("{duration:?}")),
        ];
        let mut report = Report::new("slow", &target.urls.join(","), params, &stats);
        rooms::figures(&mut report, &stats, &outcome);
        let closed_4000 = outcome.slow_closes.iter().filter(|c| **c == Some(4000)).count();
        report.figure("slow members", outcome.slow_closes.len() as f64, "");
        report.figure("slow members closed 4000", closed_4000 as f64, "");
        if closed_4000 < outcome.slow_closes.len() {
            let other: Vec<String> =
                outcome.slow_closes.iter().filter(|c| **c != Some(4000)).map(|c| format!("{c:?}")).collect();
            report.errors.push(format!("{} slow members not closed with 4000: {}", other.len(), other.join(",")));
        }
        report
    }
}
