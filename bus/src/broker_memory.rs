//! The in-process broker of `gateway --standalone`.
//!
//! A subject table in memory with NATS semantics where they matter: exact and
//! wildcard (`*`, `>`) subscriptions, bounded subscriber queues, and a full
//! queue drops the message (a slow consumer) instead of blocking the publisher.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::Stream;

use crate::{BoxFuture, Broker, BusError, Message, Subscription};

/// Messages a subscriber may have queued before new ones are dropped.
pub const SUBSCRIPTION_CAPACITY: usize = 65_536;

/// An in-memory broker; clones share one subject table.
#[derive(Clone)]
pub struct MemoryBroker {
    table: Arc<Mutex<Table>>,
    /// `switchboard_<service>_bus_dropped_total` counts slow-consumer drops.
    dropped: &'static str,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    exact: HashMap<String, Vec<Sub>>,
    wildcard: Vec<(String, Sub)>,
}

struct Sub {
    id: u64,
    queue: Arc<Mutex<Queue>>,
}

/// A subscriber's pending messages. A plain deque rather than a channel:
/// a gateway holds one subscription per connected user, and an idle one
/// should cost a few dozen bytes, not a preallocated channel block.
#[derive(Default)]
struct Queue {
    items: VecDeque<Message>,
    waker: Option<Waker>,
    /// The subscriber has gone.
    closed: bool,
}

impl Sub {
    /// Delivers without waiting; false when the subscriber is gone.
    fn offer(&self, msg: &Message, dropped: &'static str) -> bool {
        let mut q = self.queue.lock().unwrap();
        if q.closed {
            return false;
        }
        if q.items.len() >= SUBSCRIPTION_CAPACITY {
            metrics::counter!(dropped).increment(1);
            return true;
        }
        q.items.push_back(msg.clone());
        if let Some(w) = q.waker.take() {
            w.wake();
        }
        true
    }
}

impl MemoryBroker {
    /// An empty broker; `service` names the binary in its metrics.
    pub fn new(service: &'static str) -> Self {
        let dropped = crate::metrics::name(service, "bus_dropped_total");
        Self { table: Arc::default(), dropped }
    }

    fn deliver(&self, msg: Message) {
        let mut table = self.table.lock().unwrap();
        let mut reached = 0;
        if let Some(subs) = table.exact.get_mut(&msg.subject) {
            subs.retain(|s| s.offer(&msg, self.dropped));
            reached += subs.len();
        }
        table.wildcard.retain(|(pattern, s)| {
            if !matches(pattern, &msg.subject) {
                return true;
            }
            reached += 1;
            s.offer(&msg, self.dropped)
        });
        drop(table);
        // As NATS does: a request nobody can receive is answered at once.
        if let (0, Some(reply)) = (reached, msg.reply) {
            self.deliver(Message { subject: reply, reply: None, payload: Bytes::new(), no_responders: true });
        }
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, subject: String, reply: Option<String>, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>> {
        self.deliver(Message { subject, reply, payload, no_responders: false });
        Box::pin(async { Ok(()) })
    }

    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<Subscription, BusError>> {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let mut table = self.table.lock().unwrap();
        table.next_id += 1;
        let id = table.next_id;
        let sub = Sub { id, queue: queue.clone() };
        if subject.split('.').any(|t| t == "*" || t == ">") {
            table.wildcard.push((subject.clone(), sub));
        } else {
            table.exact.entry(subject.clone()).or_default().push(sub);
        }
        let stream = LocalStream { queue, table: Arc::downgrade(&self.table), id, subject };
        Box::pin(async move { Ok(Subscription::new(Box::pin(stream))) })
    }

    fn is_connected(&self) -> bool {
        true
    }
}

impl Drop for Table {
    /// The broker is gone: every subscription ends.
    fn drop(&mut self) {
        let subs = self.exact.values().flatten().chain(self.wildcard.iter().map(|(_, s)| s));
        for sub in subs {
            let mut q = sub.queue.lock().unwrap();
            q.closed = true;
            if let Some(w) = q.waker.take() {
                w.wake();
            }
        }
    }
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// The receiving end; removes its table entry when dropped.
struct LocalStream {
    queue: Arc<Mutex<Queue>>,
    table: Weak<Mutex<Table>>,
    id: u64,
    subject: String,
}

impl Stream for LocalStream {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let mut q = self.queue.lock().unwrap();
        match q.items.pop_front() {
            Some(msg) => {
                if q.items.is_empty() && q.items.capacity() > 64 {
                    // Give back what a burst grew.
                    q.items = VecDeque::new();
                }
                Poll::Ready(Some(msg))
            }
            None if q.closed => Poll::Ready(None),
            None => {
                q.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for LocalStream {
    fn drop(&mut self) {
        self.queue.lock().unwrap().closed = true;
        let Some(table) = self.table.upgrade() else {
            return;
        };
        let mut table = table.lock().unwrap();
        let id = self.id;
        if let Some(subs) = table.exact.get_mut(&self.subject) {
            subs.retain(|s| s.id != id);
            if subs.is_empty() {
                table.exact.remove(&self.subject);
            }
        }
        table.wildcard.retain(|(_, s)| s.id != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bus;
    use std::time::Duration;

    #[test]
    fn wildcards_follow_nats_rules() {
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.bc"));
    }

    #[tokio::test]
    async fn publish_reaches_exact_and_wildcard_subscribers_once() {
        let broker = MemoryBroker::new("test");
        let mut exact = broker.subscribe("sb.room.x".into()).await.unwrap();
        let mut wild = broker.subscribe("sb.room.*".into()).await.unwrap();
        broker.publish("sb.room.x".into(), None, Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(exact.next().await.unwrap().payload, "1");
        assert_eq!(wild.next().await.unwrap().payload, "1");
        drop(exact);
        assert!(broker.table.lock().unwrap().exact.is_empty());
    }

    #[tokio::test]
    async fn request_gets_the_answer_no_responders_or_a_timeout() {
        let bus = Bus::local("test", "test");
        let mut sub = bus.subscribe("svc".into()).await.unwrap();
        let server = bus.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let mut answer = msg.payload.to_vec();
                answer.reverse();
                server.respond(&msg, answer.into()).await.unwrap();
            }
        });
        let got = bus.request("svc".into(), Bytes::from_static(b"abc"), Duration::from_secs(1)).await.unwrap();
        assert_eq!(got, "cba");
        // Nobody subscribed: answered at once, as NATS does.
        let err = bus.request("nobody".into(), Bytes::new(), Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, BusError::NoResponders), "{err}");
        // Subscribed but silent: a timeout.
        let _silent = bus.subscribe("silent".into()).await.unwrap();
        let err = bus.request("silent".into(), Bytes::new(), Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, BusError::Timeout), "{err}");
    }
}
