//! Ops POSTed to another gateway, for SSE connections held here:
//! `sb.gateway.<id>.sse`, answered with the HTTP status the POST gets.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use proto::{internal, subject};

use crate::node::hub::Hub;
use crate::sse::registry::Posted;

/// How long a POST waits for the holder's answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves this gateway's SSE subject until the bus closes; live when this returns.
pub async fn spawn(hub: Arc<Hub>) -> Result<(), bus::BusError> {
    let mut posts = hub.bus.subscribe(subject::gateway_sse(&hub.id)).await?;
    tokio::spawn(async move {
        while let Some(msg) = posts.next().await {
            let Ok(f) = internal::SseForward::decode(msg.payload.clone()) else { continue };
            let posted = hub.sse.post(&f.conn, &f.secret, f.ops);
            let reply = internal::SseForwardReply { status: posted.status().into() };
            let hub = hub.clone();
            // Off the loop: a slow bus never holds up the next POST.
            tokio::spawn(async move { hub.bus.respond(&msg, Bytes::from(reply.encode_to_vec())).await });
        }
    });
    Ok(())
}

/// Hands `ops` to the gateway `holder`: what it answered, or `None` when
/// it could not be asked in time.
pub async fn post(hub: &Hub, holder: &str, conn: &str, secret: &str, ops: Vec<Bytes>) -> Option<Posted> {
    let f = internal::SseForward { conn: conn.to_owned(), secret: secret.to_owned(), ops };
    match hub.bus.request(subject::gateway_sse(holder), Bytes::from(f.encode_to_vec()), FORWARD_TIMEOUT).await {
        Ok(reply) => internal::SseForwardReply::decode(reply).ok().map(|r| Posted::of_status(r.status)),
        Err(bus::BusError::NoResponders) => Some(Posted::Unknown),
        Err(_) => None,
    }
}
