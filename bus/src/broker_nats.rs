//! The NATS broker, for cluster mode (`--nats-url`).
//!
//! async-nats reconnects on its own and resubscribes every live subscription;
//! what it does not do is bound a publish while disconnected (it waits once
//! its queue is full), so [`crate::Bus::publish`] puts a timeout around every
//! publish. Reconnects are counted in `switchboard_<service>_nats_reconnects_total`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::{BoxFuture, Broker, BusError, Message, Subscription};

/// A broker backed by one NATS connection.
pub struct NatsBroker {
    client: async_nats::Client,
    connected: Arc<AtomicBool>,
}

impl NatsBroker {
    /// Connects to `url`, retrying in the background if NATS is not up yet.
    /// `service` names the binary in metrics (`gateway`, `router`, `presence`).
    pub async fn connect(url: &str, name: &str, service: &'static str) -> Result<Self, BusError> {
        let connected = Arc::new(AtomicBool::new(false));
        let flag = connected.clone();
        let reconnects = crate::metrics::name(service, "nats_reconnects_total");
        let dropped = crate::metrics::name(service, "bus_dropped_total");
        let seen_connect = Arc::new(AtomicBool::new(false));
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .ping_interval(Duration::from_secs(5))
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis((100 * 2u64.saturating_pow(attempt.min(5) as u32)).min(2_000))
            })
            .event_callback(move |event| {
                let flag = flag.clone();
                let seen_connect = seen_connect.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            flag.store(true, Ordering::Relaxed);
                            if seen_connect.swap(true, Ordering::Relaxed) {
                                metrics::counter!(reconnects).increment(1);
                            }
                            tracing::info!("nats connected");
                        }
                        async_nats::Event::Disconnected => {
                            flag.store(false, Ordering::Relaxed);
                            tracing::warn!("nats disconnected");
                        }
                        async_nats::Event::SlowConsumer(sid) => {
                            metrics::counter!(dropped).increment(1);
                            tracing::warn!(sid, "nats slow consumer: messages dropped");
                        }
                        other => tracing::info!(event = %other, "nats event"),
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| BusError::Broker(e.to_string()))?;
        if client.connection_state() == async_nats::connection::State::Connected {
            connected.store(true, Ordering::Relaxed);
        }
        Ok(Self { client, connected })
    }
}

impl Broker for NatsBroker {
    fn publish(&self, subject: String, reply: Option<String>, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let r = match reply {
                Some(reply) => self.client.publish_with_reply(subject, reply, payload).await,
                None => self.client.publish(subject, payload).await,
            };
            r.map_err(|e| BusError::Broker(e.to_string()))
        })
    }

    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<Subscription, BusError>> {
        Box::pin(async move {
            let sub = self.client.subscribe(subject).await.map_err(|e| BusError::Broker(e.to_string()))?;
            let stream = sub.map(|m| Message {
                no_responders: m.status == Some(async_nats::StatusCode::NO_RESPONDERS),
                subject: m.subject.to_string(),
                reply: m.reply.map(|r| r.to_string()),
                payload: m.payload,
            });
            Ok(Subscription::new(Box::pin(stream)))
        })
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
            && self.client.connection_state() == async_nats::connection::State::Connected
    }
}
