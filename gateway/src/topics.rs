//! Per-user bus topics with local listeners: direct messages and presence.
//!
//! A gateway subscribes to `sb.user.<user>` while that user has a connection
//! here, and to `sb.presence.<user>` while someone here watches that user —
//! one subscription per user per gateway, however many local connections
//! care. Each event is decoded and encoded once per encoding, and the bytes
//! are shared by every listener's queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prost::Message as _;
use proto::bus::{Bus, BusError, Subscription};
use proto::client::{Encoding, Event};
use proto::{pb, subject};

use crate::outbox::{Out, Outbox};

/// Which per-user subject a [`Topics`] follows.
#[derive(Debug, Clone, Copy)]
pub enum Topic {
    /// `sb.user.<user>`: `direct` events.
    Direct,
    /// `sb.presence.<user>`: `presence` events.
    Presence,
}

/// Where a connection receives events.
#[derive(Clone)]
pub struct Listener {
    pub outbox: Arc<Outbox>,
    pub encoding: Encoding,
}

/// The listeners of one user's topic and the task that serves them.
struct Entry {
    listeners: HashMap<Arc<str>, Listener>,
    task: tokio::task::JoinHandle<()>,
}

type Table = Arc<Mutex<HashMap<String, Entry>>>;

/// Local interest in one kind of per-user topic.
pub struct Topics {
    topic: Topic,
    bus: Bus,
    table: Table,
}

impl Topics {
    pub fn new(topic: Topic, bus: Bus) -> Self {
        Self { topic, bus, table: Arc::default() }
    }

    /// Adds `conn` as a listener of `user`'s topic; the bus subscription is
    /// live when this returns.
    pub async fn add(&self, user: &str, conn: Arc<str>, listener: Listener) -> Result<(), BusError> {
        if let Some(entry) = self.table.lock().unwrap().get_mut(user) {
            entry.listeners.insert(conn, listener);
            return Ok(());
        }
        let subject = match self.topic {
            Topic::Direct => subject::user(user),
            Topic::Presence => subject::presence(user),
        };
        let sub = self.bus.subscribe(subject).await?;
        let mut table = self.table.lock().unwrap();
        // Someone else may have subscribed while we awaited; theirs wins.
        let entry = table.entry(user.to_owned()).or_insert_with(|| Entry {
            listeners: HashMap::new(),
            task: tokio::spawn(serve(self.topic, user.to_owned(), sub, self.table.clone())),
        });
        entry.listeners.insert(conn, listener);
        Ok(())
    }

    /// Removes `conn`; the subscription ends with the last listener.
    pub fn remove(&self, user: &str, conn: &str) {
        let mut table = self.table.lock().unwrap();
        if let Some(entry) = table.get_mut(user) {
            entry.listeners.remove(conn);
            if entry.listeners.is_empty() {
                if let Some(entry) = table.remove(user) {
                    entry.task.abort();
                }
            }
        }
    }

    /// Whether `user`'s topic has a listener here.
    pub fn contains(&self, user: &str) -> bool {
        self.table.lock().unwrap().contains_key(user)
    }

    /// Number of users with a subscription here.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap().len()
    }

    /// Whether no user has a subscription here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Forwards one user's topic to its listeners.
async fn serve(topic: Topic, user: String, mut sub: Subscription, table: Table) {
    while let Some(msg) = sub.next().await {
        let Some(frame) = Frame::decode(topic, &msg.payload) else {
            continue;
        };
        let listeners: Vec<Listener> = match table.lock().unwrap().get(&user) {
            Some(entry) => entry.listeners.values().cloned().collect(),
            None => return,
        };
        let (mut json, mut proto) = (None, None);
        let mut delivered = 0u64;
        for l in listeners {
            let slot = match l.encoding {
                Encoding::Json => &mut json,
                Encoding::Proto => &mut proto,
            };
            let bytes = slot.get_or_insert_with(|| frame.encode(l.encoding)).clone();
            delivered += l.outbox.push(Out::Data(bytes)) as u64;
        }
        metrics::counter!("switchboard_gateway_messages_delivered_total").increment(delivered);
    }
}

/// A decoded per-user event.
enum Frame {
    Direct(pb::DirectMessage),
    Presence(pb::PresenceChange),
}

impl Frame {
    fn decode(topic: Topic, payload: &Bytes) -> Option<Self> {
        match topic {
            Topic::Direct => pb::DirectMessage::decode(payload.clone()).ok().map(Self::Direct),
            Topic::Presence => pb::PresenceChange::decode(payload.clone()).ok().map(Self::Presence),
        }
    }

    fn encode(&self, encoding: Encoding) -> Bytes {
        match self {
            Self::Direct(d) => Event::Direct { from: &d.from, data: &d.data, ts: d.ts }.encode(encoding),
            Self::Presence(p) => Event::Presence { user: &p.user, online: p.online, ts: p.ts }.encode(encoding),
        }
    }
}
