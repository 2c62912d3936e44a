//! The bus: bus messages between Switchboard processes, over a [`Broker`].
//!
//! Everything above the broker — routing, ownership, fanout, presence
//! events — is written once against [`Bus`], which adds request/reply and
//! bounded publishes to the two primitives a broker offers. The broker is
//! NATS in a cluster ([`broker_nats`]) and an in-process table in
//! `gateway --standalone` ([`broker_memory`]). Members of a kind (routers,
//! presence replicas) [`announce`] themselves on it and everyone who routes
//! to them keeps their [`ring`] from what it hears ([`membership`]).

pub mod announce;
mod broker;
pub mod broker_memory;
pub mod broker_nats;
pub mod membership;
pub mod metrics;
mod nats_auth;
mod requests;
pub mod ring;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use broker::{BoxFuture, Broker, BusError, Message, Subscription};
pub use nats_auth::NatsFlags;
use requests::Requests;

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

    /// A bus over NATS at `url`, authenticated as `security` says;
    /// `service` names the binary in metrics.
    pub async fn nats(url: &str, security: &NatsFlags, node: &str, service: &'static str) -> Result<Self, BusError> {
        let broker = broker_nats::NatsBroker::connect(url, security, node, service).await?;
        Ok(Self::new(Arc::new(broker), node))
    }

    /// An in-process bus: the broker of `gateway --standalone` and of tests.
    pub fn local(node: &str, service: &'static str) -> Self {
        Self::new(Arc::new(broker_memory::MemoryBroker::new(service)), node)
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
