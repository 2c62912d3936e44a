//! Periodic announcements: how routers, presence replicas and gateways say
//! they are alive.

use std::time::Duration;

use crate::Bus;
use bytes::Bytes;

/// Publishes `payload()` on `subject` every `every` until the returned handle
/// is aborted or dropped via [`Announcer`].
pub fn spawn(
    bus: Bus,
    subject: &'static str,
    every: Duration,
    payload: impl Fn() -> Bytes + Send + 'static,
) -> Announcer {
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = bus.publish(subject.into(), payload()).await {
                tracing::warn!(error = %e, subject, "announcement not sent");
            }
        }
    });
    Announcer(task)
}

/// A running announcer; dropping it stops the announcements.
pub struct Announcer(tokio::task::JoinHandle<()>);

impl Drop for Announcer {
    fn drop(&mut self) {
        self.0.abort();
    }
}
