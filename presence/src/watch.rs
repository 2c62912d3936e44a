//! The gRPC `Watch` stream: the service's change feed, filtered to a few users.
//!
//! Every change goes out on one broadcast channel; each watcher filters it for
//! the users it asked about. A watcher that falls behind skips ahead (and says
//! so in the log) rather than ending its stream or slowing the service down:
//! presence is a current state, so the newest changes matter most, and a
//! watcher that needs certainty re-queries.

use std::collections::HashSet;

use futures::stream::BoxStream;
use proto::pb;
use tokio::sync::broadcast;
use tonic::Status;

/// What `Watch` returns: changes for the watched users, until the service
/// shuts down or the caller hangs up.
pub type WatchStream = BoxStream<'static, Result<pb::PresenceChange, Status>>;

/// Filters `changes` down to `users`.
pub(crate) fn watch(changes: broadcast::Receiver<pb::PresenceChange>, users: HashSet<String>) -> WatchStream {
    Box::pin(futures::stream::unfold((changes, users), |(mut changes, users)| async move {
        loop {
            match changes.recv().await {
                Ok(change) if users.contains(&change.user) => {
                    return Some((Ok(change), (changes, users)));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    metrics::counter!("switchboard_presence_watch_lagged_total").increment(missed);
                    tracing::debug!(missed, "presence watcher lagged, skipping ahead");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }))
}
