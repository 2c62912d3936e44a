//! The NATS broker, for cluster mode (`--nats-url`).
//!
//! async-nats reconnects on its own and resubscribes every live subscription;
//! what it does not do is bound a publish while disconnected (it waits once
//! its queue is full), so [`crate::Bus::publish`] puts a timeout around every
//! publish. Reconnects are counted in `switchboard_<service>_nats_reconnects_total`.
//!
//! NATS that refuses the credentials is fatal at start (the process exits
//! with one line) rather than retried forever; NATS that is not up yet is
//! retried. A publish or subscribe the server's permissions refuse comes
//! back only as an asynchronous error: it is logged and counted in
//! `switchboard_<service>_nats_permission_denied_total`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::{BoxFuture, Broker, BusError, Message, NatsFlags, Subscription};

/// How long the start waits to learn whether NATS accepts the credentials;
/// past it (NATS not up yet) connecting goes on in the background.
const VERDICT_WAIT: Duration = Duration::from_secs(3);

/// A broker backed by one NATS connection.
pub struct NatsBroker {
    client: async_nats::Client,
    connected: Arc<AtomicBool>,
}

impl NatsBroker {
    /// Connects to `url`, retrying in the background if NATS is not up yet.
    /// `service` names the binary in metrics (`gateway`, `router`, `presence`).
    pub async fn connect(url: &str, security: &NatsFlags, name: &str, service: &'static str) -> Result<Self, BusError> {
        let connected = Arc::new(AtomicBool::new(false));
        let flag = connected.clone();
        let reconnects = crate::metrics::name(service, "nats_reconnects_total");
        let dropped = crate::metrics::name(service, "bus_dropped_total");
        let denied = crate::metrics::name(service, "nats_permission_denied_total");
        let seen_connect = Arc::new(AtomicBool::new(false));
        // The first connect's outcome: true connected, false refused.
        let (verdict_tx, mut verdict) = tokio::sync::watch::channel(None::<bool>);
        let verdict_tx = Arc::new(verdict_tx);
        let options =
            security.apply(async_nats::ConnectOptions::new()).await.map_err(|e| BusError::Broker(format!("{e:#}")))?;
        let client = options
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
                let verdict_tx = verdict_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            verdict_tx.send_replace(Some(true));
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
                        // The connector reports a refused CONNECT as a client error.
                        async_nats::Event::ServerError(async_nats::ServerError::AuthorizationViolation)
                        | async_nats::Event::ClientError(async_nats::ClientError::Other(_))
                            if event.to_string().contains("authorization violation") =>
                        {
                            if verdict_tx.borrow().is_none() {
                                verdict_tx.send_replace(Some(false));
                            }
                            tracing::error!("nats refused this process's credentials");
                        }
                        async_nats::Event::ServerError(async_nats::ServerError::Other(e))
                            if e.to_ascii_lowercase().contains("permissions violation") =>
                        {
                            metrics::counter!(denied).increment(1);
                            tracing::error!(error = %e, "nats refused a publish or subscribe");
                        }
                        // What async-nats says of a refused TLS handshake, too.
                        async_nats::Event::ClientError(e) => tracing::warn!(
                            error = %e,
                            "cannot reach NATS (down, or it requires TLS with a certificate not trusted here: --nats-tls-ca)"
                        ),
                        other => tracing::info!(event = %other, "nats event"),
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| BusError::Broker(e.to_string()))?;
        let _ = tokio::time::timeout(VERDICT_WAIT, verdict.wait_for(Option::is_some)).await;
        if *verdict.borrow() == Some(false) {
            return Err(BusError::Broker(
                "NATS refused the credentials (authorization violation): check --nats-creds, --nats-user/--nats-password or the URL".into(),
            ));
        }
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
