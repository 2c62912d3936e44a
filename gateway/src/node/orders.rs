//! The server API's orders to this gateway on `sb.gateway.<id>`: close a
//! user's connections, or subscribe them to a room or unsubscribe them.
//!
//! A user's connections here are those of their direct-message
//! table. A disconnect closes them at once; a subscription order goes to
//! each connection's own task ([`crate::session::orders`]) and is answered
//! when all of them are done (or [`ORDER_TIMEOUT`] passes), so the API's
//! caller knows the joins happened. At most [`MAX_IN_FLIGHT`] orders are
//! carried out at once; past that the API hears `unavailable` and may retry,
//! and the subscription is never blocked.

use std::sync::Arc;
use std::time::Duration;

use bus::{BusError, Message};
use bytes::Bytes;
use prost::Message as _;
use proto::client::close::{self, Close};
use proto::client::ErrorCode;
use proto::internal::{self, gateway_command};
use proto::{pb, subject};
use tokio::sync::{oneshot, Semaphore};

use crate::node::hub::Hub;
use crate::session::orders::{Order, OrderKind};

/// How long the connections have to carry out a subscription order.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(5);
/// Orders carried out at once.
const MAX_IN_FLIGHT: usize = 64;

/// Serves `sb.gateway.<id>` until the bus closes.
pub async fn spawn(hub: Arc<Hub>) -> Result<(), BusError> {
    let mut sub = hub.bus.subscribe(subject::gateway(&hub.id)).await?;
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                answer(&hub, &msg, refusal(ErrorCode::Unavailable, "the gateway is busy; retry")).await;
                continue;
            };
            let hub = hub.clone();
            tokio::spawn(async move {
                let reply = match internal::GatewayCommand::decode(msg.payload.clone()) {
                    Ok(command) => carry_out(&hub, command).await,
                    Err(_) => refusal(ErrorCode::BadRequest, "undecodable command"),
                };
                answer(&hub, &msg, reply).await;
                drop(slot);
            });
        }
    });
    Ok(())
}

async fn answer(hub: &Hub, msg: &Message, reply: internal::GatewayCommandReply) {
    let _ = hub.bus.respond(msg, Bytes::from(reply.encode_to_vec())).await;
}

fn refusal(code: ErrorCode, message: &str) -> internal::GatewayCommandReply {
    let error = pb::Error { code: code.as_str().into(), message: message.into() };
    internal::GatewayCommandReply { connections: 0, failed: 0, error: Some(error) }
}

/// Carries out one command on the user's connections here.
pub async fn carry_out(hub: &Hub, command: internal::GatewayCommand) -> internal::GatewayCommandReply {
    match command.kind {
        Some(gateway_command::Kind::Disconnect(d)) => {
            let code = u16::try_from(d.code).ok().filter(|c| close::operator_may_send(*c));
            let Some(code) = code else { return refusal(ErrorCode::BadRequest, "close code not allowed") };
            let listeners = hub.direct.listeners_of(&d.user);
            let close = Close::new(code, close::app_reason(&d.reason));
            for l in &listeners {
                l.outbox.close(close);
            }
            internal::GatewayCommandReply { connections: listeners.len() as u32, ..Default::default() }
        }
        Some(gateway_command::Kind::Subscribe(s)) => order(hub, &s.user, OrderKind::Subscribe(s.room)).await,
        Some(gateway_command::Kind::Unsubscribe(s)) => order(hub, &s.user, OrderKind::Unsubscribe(s.room)).await,
        None => refusal(ErrorCode::BadRequest, "empty command"),
    }
}

/// Gives `kind` to each of `user`'s connections and waits for them.
async fn order(hub: &Hub, user: &str, kind: OrderKind) -> internal::GatewayCommandReply {
    let mut reply = internal::GatewayCommandReply::default();
    let mut waiting = Vec::new();
    for l in hub.direct.listeners_of(user) {
        let (done, outcome) = oneshot::channel();
        match l.outbox.order(Order { kind: kind.clone(), done }) {
            Ok(()) => waiting.push(outcome),
            Err(_) => fail(&mut reply, ErrorCode::Unavailable, "the connection is closing or busy"),
        }
    }
    let asked = waiting.len() as u32;
    let outcomes = tokio::time::timeout(ORDER_TIMEOUT, futures::future::join_all(waiting)).await;
    let Ok(outcomes) = outcomes else {
        fail(&mut reply, ErrorCode::Unavailable, "connections did not carry the order out in time");
        reply.failed += asked - 1;
        return reply;
    };
    for outcome in outcomes {
        match outcome {
            Ok(Ok(_)) => reply.connections += 1,
            Ok(Err((code, message))) => fail(&mut reply, code, &message),
            Err(_) => fail(&mut reply, ErrorCode::Unavailable, "the connection closed"),
        }
    }
    reply
}

/// Counts a failure; the first one is the reply's error.
fn fail(reply: &mut internal::GatewayCommandReply, code: ErrorCode, message: &str) {
    reply.failed += 1;
    if reply.error.is_none() {
        reply.error = Some(pb::Error { code: code.as_str().into(), message: message.into() });
    }
}
