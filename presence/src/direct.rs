//! Sending a direct message: to the user's live connections, else to their
//! inbox.
//!
//! Presence knows which gateways hold the user's sessions (`Locate`); the
//! message is a request on each one's `sb.gateway.<id>.direct`, and a
//! gateway answers with how many of the user's connections took it. One
//! subscription per gateway, not one per connected user, carries every
//! direct message (a NATS subscription costs the gateway ~6 KiB: see
//! docs/scaling.md). When no gateway took it the message waits in the
//! user's inbox at presence, which makes a gateway that reports a session
//! of the user meanwhile take it ([`crate::located`]).
//!
//! While presence cannot be asked, the message is asked of every gateway
//! (`sb.gateways.direct`; only those that delivered it answer): the user's
//! connections still get it, and if none does, the sender hears
//! `unavailable` after [`DELIVERY_TIMEOUT`] since the inbox cannot keep it.
//! The client `send` op and the server API's `send` both go through here.

use std::time::Duration;

use bus::{Bus, BusError};
use bytes::Bytes;
use prost::Message as _;
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
    let payload = Bytes::from(dm.encode_to_vec());
    let located = match presence {
        Some(presence) => presence.locate(to).await.ok(),
        None => None,
    };
    let (Some(presence), Some(gateways)) = (presence, located) else {
        return everywhere(bus, payload).await;
    };
    if deliver(bus, &gateways, payload).await? {
        return Ok(true);
    }
    let queued = pb::QueuedDirect { to: dm.to, from: dm.from, data: dm.data, ts };
    match presence.enqueue(queued).await {
        Ok(reply) if reply.refused => Err(SendError::InboxFull),
        Ok(_) => Ok(false),
        Err(_) => Err(SendError::InboxUnavailable),
    }
}

/// Asks each of `gateways` to deliver; whether any connection took it.
async fn deliver(bus: &Bus, gateways: &[String], payload: Bytes) -> Result<bool, SendError> {
    let asks = gateways.iter().filter(|g| subject::valid_node_id(g)).map(|g| {
        let payload = payload.clone();
        async move { bus.request(subject::gateway_direct(g), payload, DELIVERY_TIMEOUT).await }
    });
    let mut bus_failed = false;
    for answer in futures::future::join_all(asks).await {
        match answer {
            Ok(bytes) => {
                if internal::GatewayCommandReply::decode(bytes).is_ok_and(|r| r.connections > 0) {
                    return Ok(true);
                }
            }
            // Gone, or the connection closed since presence heard of it.
            Err(BusError::NoResponders | BusError::Timeout) => {}
            Err(_) => bus_failed = true,
        }
    }
    if bus_failed {
        return Err(SendError::Bus);
    }
    Ok(false)
}

/// Asks every gateway, for when presence cannot say where the user is.
async fn everywhere(bus: &Bus, payload: Bytes) -> Result<bool, SendError> {
    match bus.request(subject::GATEWAYS_DIRECT.to_owned(), payload, DELIVERY_TIMEOUT).await {
        Ok(_) => Ok(true),
        Err(BusError::NoResponders | BusError::Timeout) => Err(SendError::InboxUnavailable),
        Err(_) => Err(SendError::Bus),
    }
}
