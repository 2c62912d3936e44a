//! The broker: how processes exchange bus messages.
//!
//! [`Broker`] is the one seam between the cluster and standalone modes: NATS
//! ([`nats::NatsBroker`]) between processes, or an in-process table
//! ([`local::LocalBroker`]) inside `gateway --standalone`. Everything above it
//! — routing, ownership, fanout, presence events — is written once against
//! [`Bus`], which adds request/reply on top of the two primitives a broker
//! offers: publish and subscribe.

pub mod local;
pub mod nats;
mod requests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use requests::Requests;

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

/// How long a publish on a hot path may wait for the broker before the
/// message counts as lost (async-nats blocks while disconnected and full).
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// The bus as the rest of Switchboard sees it: a [`Broker`] plus request/reply.
#[derive(Clone)]
pub struct Bus {
    broker: Arc<dyn Broker>,
    requests: Arc<Requests>,
}

impl Bus {
    /// A bus over `broker`; `node` names this process in its reply inbox.
    pub fn new(broker: Arc<dyn Broker>, node: &str) -> Self {
        let requests = Arc::new(Requests::new(node));
        Self { broker, requests }
    }

    /// A bus over NATS at `url`; `service` names the binary in metrics.
    pub async fn nats(url: &str, node: &str, service: &'static str) -> Result<Self, BusError> {
        let broker = nats::NatsBroker::connect(url, node, service).await?;
        Ok(Self::new(Arc::new(broker), node))
    }

    /// An in-process bus: the broker of `gateway --standalone` and of tests.
    pub fn local(node: &str, service: &'static str) -> Self {
        Self::new(Arc::new(local::LocalBroker::new(service)), node)
    }

    /// Publishes with a bounded wait, so a disconnected broker cannot stall a
    /// caller on a hot path.
    pub async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.broker.publish(subject, None, payload)).await {
            Ok(r) => r,
            Err(_) => Err(BusError::Timeout),
        }
    }

    /// Publishes a protobuf message.
    pub async fn publish_msg(&self, subject: String, msg: &impl prost::Message) -> Result<(), BusError> {
        self.publish(subject, Bytes::from(msg.encode_to_vec())).await
    }

    /// Answers a request received as `msg`; a message without a reply
    /// subject is silently not answered.
    pub async fn respond(&self, msg: &Message, payload: Bytes) -> Result<(), BusError> {
        match &msg.reply {
            Some(reply) => self.publish(reply.clone(), payload).await,
            None => Ok(()),
        }
    }

    /// Subscribes to `subject`.
    pub async fn subscribe(&self, subject: String) -> Result<Subscription, BusError> {
        self.broker.subscribe(subject).await
    }

    /// Sends a request and waits up to `timeout` for the first answer.
    pub async fn request(&self, subject: String, payload: Bytes, timeout: Duration) -> Result<Bytes, BusError> {
        self.requests.request(&*self.broker, subject, payload, timeout).await
    }

    /// Whether the broker connection is up.
    pub fn is_connected(&self) -> bool {
        self.broker.is_connected()
    }
}
