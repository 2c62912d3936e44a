//! Request/reply over publish/subscribe.
//!
//! One wildcard inbox subscription per process (`_INBOX.<node>.<rand>.*`)
//! serves every request: each request gets a token, the answer comes back on
//! `<inbox>.<token>` and is routed to the waiting caller. This is what NATS
//! clients do internally; doing it here makes the in-process broker behave the
//! same, with no per-request subscription.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, OnceCell};

use crate::{Broker, BusError};

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Bytes, BusError>>>>>;

pub(super) struct Requests {
    inbox: String,
    next: AtomicU64,
    waiters: Waiters,
    listening: OnceCell<()>,
}

impl Requests {
    pub(super) fn new(node: &str) -> Self {
        let node: String =
            node.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        Self {
            inbox: format!("_INBOX.{node}.{:016x}", rand::random::<u64>()),
            next: AtomicU64::new(1),
            waiters: Arc::default(),
            listening: OnceCell::new(),
        }
    }

    /// Subscribes the inbox once and routes every answer to its waiter.
    async fn listen(&self, broker: &dyn Broker) -> Result<(), BusError> {
        self.listening
            .get_or_try_init(|| async {
                let mut sub = broker.subscribe(format!("{}.*", self.inbox)).await?;
                let waiters = self.waiters.clone();
                tokio::spawn(async move {
                    while let Some(msg) = sub.next().await {
                        let Some(token) = msg.subject.rsplit('.').next() else {
                            continue;
                        };
                        let Ok(token) = token.parse::<u64>() else {
                            continue;
                        };
                        let waiter = waiters.lock().unwrap().remove(&token);
                        if let Some(tx) = waiter {
                            let _ =
                                tx.send(if msg.no_responders { Err(BusError::NoResponders) } else { Ok(msg.payload) });
                        }
                    }
                });
                Ok(())
            })
            .await
            .map(|_| ())
    }

    pub(super) async fn request(
        &self,
        broker: &dyn Broker,
        subject: String,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        self.listen(broker).await?;
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().insert(token, tx);
        // Removes the waiter however this future ends (answer, timeout, drop).
        let _guard = Forget(&self.waiters, token);
        let reply = format!("{}.{token}", self.inbox);
        let answer = async {
            broker.publish(subject, Some(reply), payload).await?;
            rx.await.map_err(|_| BusError::Broker("inbox closed".into()))?
        };
        tokio::time::timeout(timeout, answer).await.unwrap_or(Err(BusError::Timeout))
    }
}

struct Forget<'a>(&'a Waiters, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap().remove(&self.1);
    }
}
