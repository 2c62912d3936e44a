//! Live progress: a bar on a terminal, a plain line per second otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::stats::Stats;

/// Samples the stats every second into the timeline and shows them, until
/// the returned handle is aborted.
pub fn start(scenario: &'static str, stats: Arc<Stats>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}").expect("valid template"));
            bar
        });
        let mut last = (0, 0);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let t = stats.tick(&mut last);
            let line = format!(
                "{scenario}: {:>6.1}s  conns {:>6}  sent/s {:>8}  delivered/s {:>9}",
                t.at, t.connections, t.sent, t.delivered
            );
            match &bar {
                Some(bar) => {
                    bar.set_message(line);
                    bar.tick();
                }
                None => eprintln!("{line}"),
            }
        }
    })
}
