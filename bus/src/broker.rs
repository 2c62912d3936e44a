//! The broker seam: how processes exchange bus messages.
//!
//! [`Broker`] is the one seam between the cluster and standalone modes: NATS
//! ([`NatsBroker`](crate::broker_nats::NatsBroker)) between processes, or an
//! in-process table ([`MemoryBroker`](crate::broker_memory::MemoryBroker))
//! inside `gateway --standalone` and tests. It offers two primitives,
//! publish and subscribe, with NATS semantics; request/reply is built on
//! them once, in [`crate::Bus`].

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

/// A boxed, sendable future: what [`Broker`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One message as a subscriber receives it.
#[derive(Debug, Clone)]
pub struct Message {
    /// The subject it was published on.
    pub subject: String,
    /// Where the publisher waits for an answer, if anywhere.
    pub reply: Option<String>,
    /// The encoded protobuf message.
    pub payload: Bytes,
    /// Set on the broker's own answer to a request nobody is subscribed to
    /// (NATS "no responders"); such a message has no payload.
    pub no_responders: bool,
}

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No answer within the caller's time bound.
    #[error("timed out")]
    Timeout,
    /// Nobody is subscribed to the request's subject: it was not delivered,
    /// so retrying elsewhere is safe.
    #[error("no responders")]
    NoResponders,
    /// The broker is unreachable or refused the operation.
    #[error("broker: {0}")]
    Broker(String),
}

/// A transport for bus messages: publish to a subject, subscribe to one.
///
/// Subjects are NATS subjects (`.`-separated tokens); subscriptions may use the
/// `*` (one token) and `>` (the rest) wildcards. Delivery is at most once: a
/// subscriber that falls too far behind loses messages, as a NATS slow consumer
/// does, and never blocks the publisher.
pub trait Broker: Send + Sync + 'static {
    /// Queues `payload` for everyone subscribed to `subject`.
    fn publish(&self, subject: String, reply: Option<String>, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>>;

    /// Starts receiving messages published on `subject` from now on.
    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<Subscription, BusError>>;

    /// Whether the broker connection is up (always true in-process).
    fn is_connected(&self) -> bool;
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    stream: BoxStream<'static, Message>,
}

impl Subscription {
    /// Wraps any stream of messages; dropping the stream must unsubscribe.
    pub fn new(stream: BoxStream<'static, Message>) -> Self {
        Self { stream }
    }

    /// The next message, or `None` once the broker has closed the subscription.
    /// Cancel-safe: usable inside `select!`.
    pub async fn next(&mut self) -> Option<Message> {
        self.stream.next().await
    }
}

impl futures::Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Message>> {
        self.stream.as_mut().poll_next(cx)
    }
}
