//! Draining on SIGTERM: close every client with 1001, a batch at a time.
//!
//! Closing tens of thousands of clients at once would have them all
//! reconnect to the remaining gateways in the same instant; spreading the
//! closes over the drain window spreads the reconnect storm too.

use std::sync::atomic::Ordering;
use std::time::Duration;

use proto::client::close::Close;

use crate::node::hub::Hub;

/// Pause between batches.
const STEP: Duration = Duration::from_millis(100);
/// Extra time for closing sessions to finish cleaning up.
const GRACE: Duration = Duration::from_secs(5);

/// Stops new connections and closes existing ones over `window`; returns
/// when every session has ended or the window and grace have passed.
pub async fn run(hub: &Hub, window: Duration) {
    hub.draining.store(true, Ordering::Relaxed);
    let conns = hub.conns();
    let steps = (window.as_millis() / STEP.as_millis()).max(1) as usize;
    let batch = conns.len().div_ceil(steps).max(1);
    tracing::info!(connections = conns.len(), batch, ?window, "draining");
    for chunk in conns.chunks(batch) {
        for (_, conn) in chunk {
            conn.outbox.close(Close::DRAINING);
        }
        tokio::time::sleep(STEP).await;
    }
    let deadline = tokio::time::Instant::now() + GRACE;
    while hub.conn_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
