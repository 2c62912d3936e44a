//! The gRPC `Watch` stream: presence changes of a few users, from the bus.
//!
//! Every replica publishes the changes of its users on `sb.presence.<user>`,
//! so a watcher subscribes there, one subject per watched user: any replica
//! (or a single service) streams every user's changes, whichever replica
//! owns them. A watcher that falls behind loses changes at the bus's bound
//! rather than slowing the service down: presence is a current state, and a
//! watcher that needs certainty re-queries.

use futures::stream::{BoxStream, StreamExt as _};
use prost::Message as _;

use bus::{Bus, BusError};
use proto::{pb, subject};
use tonic::Status;

/// What `Watch` returns: changes for the watched users, until the service
/// shuts down or the caller hangs up.
pub type WatchStream = BoxStream<'static, Result<pb::PresenceChange, Status>>;

/// Changes of `users` (deduplicated by the caller) as they are published.
pub(crate) async fn watch(bus: &Bus, users: impl IntoIterator<Item = String>) -> Result<WatchStream, BusError> {
    let mut subscriptions = Vec::new();
    for user in users {
        subscriptions.push(bus.subscribe(subject::presence(&user)).await?);
    }
    let changes = futures::stream::select_all(subscriptions)
        .filter_map(|msg| async move { pb::PresenceChange::decode(msg.payload).ok().map(Ok) });
    Ok(Box::pin(changes))
}
