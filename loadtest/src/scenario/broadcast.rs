//! `broadcast`: one room, many members, a few publishers. Measures fanout:
//! deliveries per second and publish → delivery latency.

use std::sync::Arc;
use std::time::Duration;

use super::member::Pace;
use super::rooms::{self, Spec};
use super::Target;
use crate::report::Report;
use crate::stats::Stats;

/// Parameters of a broadcast run.
#[derive(Debug, Clone, clap::Args)]
pub struct Broadcast {
    /// Members of the room (publishers included).
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Members that publish.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages per second per publisher (0: as fast as the window allows).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Unacknowledged publishes per publisher.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Payload bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
}

impl Broadcast {
    pub async fn run(&self, target: &Target, duration: Duration, stats: Arc<Stats>) -> Report {
        let spec = Spec {
            rooms: 1,
            members_per_room: self.members,
            publishers_per_room: self.publishers,
            pace: Pace { rate: self.rate, window: self.window, size: self.size },
            room_prefix: "broadcast-".into(),
            slow_share: 0.0,
            hold: Duration::ZERO,
            final_broadcast: false,
        };
        let outcome = rooms::run(&spec, target, duration, stats.clone()).await;
        let params = vec![
            ("members".into(), self.members.to_string()),
            ("publishers".into(), self.publishers.to_string()),
            ("rate".into(), self.rate.to_string()),
            ("window".into(), self.window.to_string()),
            ("size".into(), self.size.to_string()),
            ("duration".into(), format!("{duration:?}")),
        ];
        let mut report = Report::new("broadcast", &target.urls.join(","), params, &stats);
        rooms::figures(&mut report, &stats, &outcome);
        report
    }
}
