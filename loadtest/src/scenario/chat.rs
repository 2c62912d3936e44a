//! `chat`: many rooms, every member publishing at a steady rate. Measures
//! publish → delivery latency to the other members, and deliveries/s.

use std::sync::Arc;
use std::time::Duration;

use super::member::Pace;
use super::rooms::{self, Spec};
use super::Target;
use crate::report::Report;
use crate::stats::Stats;

/// Parameters of a chat run.
#[derive(Debug, Clone, clap::Args)]
pub struct Chat {
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Members per room; every one publishes.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Messages per second per member.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Payload bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Members sit joined and idle this long before anyone publishes (to
    /// hold connections through heartbeats).
    #[arg(long, default_value = "0s", value_parser = shell::cli::duration)]
    pub hold: Duration,
    /// After the load, one more message per room, which every member must
    /// end with.
    #[arg(long)]
    pub final_broadcast: bool,
}

impl Chat {
    pub async fn run(&self, target: &Target, duration: Duration, stats: Arc<Stats>) -> Report {
        let spec = Spec {
            rooms: self.rooms,
            members_per_room: self.members,
            publishers_per_room: self.members,
            pace: Pace { rate: self.rate, window: 16, size: self.size },
            room_prefix: "chat-".into(),
            slow_share: 0.0,
            hold: self.hold,
            final_broadcast: self.final_broadcast,
        };
        let outcome = rooms::run(&spec, target, duration, stats.clone()).await;
        let params = vec![
            ("rooms".into(), self.rooms.to_string()),
            ("members".into(), self.members.to_string()),
            ("rate".into(), self.rate.to_string()),
            ("size".into(), self.size.to_string()),
            ("hold".into(), format!("{:?}", self.hold)),
            ("final broadcast".into(), self.final_broadcast.to_string()),
            ("duration".into(), format!("{duration:?}")),
        ];
        let mut report = Report::new("chat", &target.urls.join(","), params, &stats);
        rooms::figures(&mut report, &stats, &outcome);
        report
    }
}
