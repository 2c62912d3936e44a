//! Sending a direct message: to the user's live connections, else to their
//! inbox.
//!
//! A send is a request on `sb.user.<user>`: every gateway holding a
//! connection of the user delivers it, one answers, and NATS answers at once
//! when no gateway listens. Then the user has no live connection and the
//! message waits in the user's inbox at presence until their next
//! connection takes it; a `notice` on the same subject makes a connection
//! that opened meanwhile take it now. The client `send` op and the server
//! API's `send` both go through here.

use std::time::Duration;

use bus::{Bus, BusError};
use bytes::Bytes;
use proto::{internal, pb, subject};

use crate::PresenceClient;

/// How long the gateways holding the user's connections have to answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a message was neither delivered nor queued; retrying is safe.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("message bus unavailable; retry")]
    Bus,
    #[error("the inbox is full; retry later")]
    InboxFull,
    #[error("the user is offline and the inbox is unavailable; retry")]
    InboxUnavailable,
}

/// Sends `data` from `from` ("" for the server) to every connection of
/// `to`; `Ok(false)` when it waits in the inbox instead. Without a presence
/// service (`None`) an offline user's message cannot be kept.
pub async fn send(
    bus: &Bus,
    presence: Option<&PresenceClient>,
    to: &str,
    from: &str,
    data: Bytes,
) -> Result<bool, SendError> {
    let ts = proto::now_ms();
    let dm = internal::DirectMessage { to: to.to_owned(), from: from.to_owned(), data, ts, notice: false };
    let payload = Bytes::from(prost::Message::encode_to_vec(&dm));
    match bus.request(subject::user(to), payload, DELIVERY_TIMEOUT).await {
        Ok(_) => return Ok(true),
        // Nobody holds a connection of the user (or none took it in time).
        Err(BusError::NoResponders | BusError::Timeout) => {}
        Err(_) => return Err(SendError::Bus),
    }
    let presence = presence.ok_or(SendError::InboxUnavailable)?;
    let queued = pb::QueuedDirect { to: dm.to, from: dm.from, data: dm.data, ts };
    match presence.enqueue(queued).await {
        Ok(reply) if reply.refused => return Err(SendError::InboxFull),
        Ok(_) => {}
        Err(_) => return Err(SendError::InboxUnavailable),
    }
    let notice = internal::DirectMessage { to: to.to_owned(), notice: true, ..Default::default() };
    let _ = bus.publish_msg(subject::user(to), &notice).await;
    Ok(false)
}
