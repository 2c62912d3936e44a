//! Watched users' presence: `sb.presence.<user>` with local listeners.
//!
//! A gateway subscribes to `sb.presence.<user>` while someone here watches
//! that user: one subscription per watched user per gateway, however many
//! local connections watch. All the subscriptions are served by one task (a
//! user costs a subscription and a table entry, not a task of its own).
//! Each event is decoded once and encoded once per encoding, and the bytes
//! are shared by every listener's queue. (Direct messages need no
//! subscription per user: [`crate::delivery::direct`].)

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bus::{Bus, BusError, Message, Subscription};
use futures::stream::{AbortHandle, Abortable, FuturesUnordered, StreamExt, StreamFuture};
use futures::Stream;
use prost::Message as _;
use proto::client::{Encoding, Event};
use proto::{pb, subject};
use tokio::sync::mpsc;

use crate::delivery::outbox::{Out, Outbox};

/// Where a connection receives events.
#[derive(Clone)]
pub struct Listener {
    pub outbox: Arc<Outbox>,
    pub encoding: Encoding,
}

/// The listeners of one user's topic, and how to end its subscription.
struct Entry {
    /// Usually one or two connections: a list beats a map.
    listeners: Vec<(Arc<str>, Listener)>,
    subscription: AbortHandle,
}

type Table = Arc<Mutex<HashMap<Arc<str>, Entry>>>;

/// A user's subscription, tagged with the user, as the pump polls it.
struct Tagged {
    user: Arc<str>,
    sub: Abortable<Subscription>,
}

impl Stream for Tagged {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        Pin::new(&mut self.sub).poll_next(cx)
    }
}

/// Local interest in users' presence.
pub struct Topics {
    bus: Bus,
    table: Table,
    pump: mpsc::UnboundedSender<Tagged>,
    /// Listeners over all users (the `--max-watches` count).
    listeners: AtomicUsize,
}

impl Topics {
    pub fn new(bus: Bus) -> Self {
        let table = Table::default();
        let (pump, subs) = mpsc::unbounded_channel();
        tokio::spawn(serve(subs, table.clone()));
        Self { bus, table, pump, listeners: AtomicUsize::new(0) }
    }

    /// Adds `conn` as a listener of `user`'s topic; the bus subscription is
    /// live when this returns.
    pub async fn add(&self, user: &str, conn: Arc<str>, listener: Listener) -> Result<(), BusError> {
        if let Some(entry) = self.table.lock().unwrap().get_mut(user) {
            entry.listeners.push((conn, listener));
            self.listeners.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let sub = self.bus.subscribe(subject::presence(user)).await?;
        let mut table = self.table.lock().unwrap();
        // Someone else may have subscribed while we awaited; theirs wins and
        // ours is dropped (unsubscribed) here.
        self.listeners.fetch_add(1, Ordering::Relaxed);
        if let Some(entry) = table.get_mut(user) {
            entry.listeners.push((conn, listener));
            return Ok(());
        }
        let (handle, registration) = AbortHandle::new_pair();
        let user: Arc<str> = user.into();
        let _ = self.pump.send(Tagged { user: user.clone(), sub: Abortable::new(sub, registration) });
        table.insert(user, Entry { listeners: vec![(conn, listener)], subscription: handle });
        Ok(())
    }

    /// Removes `conn`; the subscription ends with the last listener.
    pub fn remove(&self, user: &str, conn: &str) {
        let mut table = self.table.lock().unwrap();
        if let Some(entry) = table.get_mut(user) {
            let before = entry.listeners.len();
            entry.listeners.retain(|(c, _)| &**c != conn);
            self.listeners.fetch_sub(before - entry.listeners.len(), Ordering::Relaxed);
            if entry.listeners.is_empty() {
                if let Some(entry) = table.remove(user) {
                    entry.subscription.abort();
                }
            }
        }
    }

    /// The listeners of `user`'s topic: the user's connections here.
    pub fn listeners_of(&self, user: &str) -> Vec<Listener> {
        let table = self.table.lock().unwrap();
        table.get(user).map(|e| e.listeners.iter().map(|(_, l)| l.clone()).collect()).unwrap_or_default()
    }

    /// Whether `user`'s topic has a listener here.
    pub fn contains(&self, user: &str) -> bool {
        self.table.lock().unwrap().contains_key(user)
    }

    /// Listeners over all users.
    pub fn listeners(&self) -> usize {
        self.listeners.load(Ordering::Relaxed)
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

/// The one task that serves every subscription of a kind.
async fn serve(mut added: mpsc::UnboundedReceiver<Tagged>, table: Table) {
    let mut subs: FuturesUnordered<StreamFuture<Tagged>> = FuturesUnordered::new();
    loop {
        tokio::select! {
            tagged = added.recv() => match tagged {
                Some(t) => subs.push(t.into_future()),
                None => return,
            },
            Some((msg, rest)) = subs.next(), if !subs.is_empty() => {
                // `None`: the subscription was aborted or closed; drop it.
                if let Some(msg) = msg {
                    // Anyone on the bus can publish there: never panic, whatever the bytes.
                    if let Ok(change) = pb::PresenceChange::decode(msg.payload) {
                        deliver(&rest.user, &change, &table);
                    }
                    subs.push(rest.into_future());
                }
            }
        }
    }
}

/// Forwards one change to every listener of `user`.
fn deliver(user: &str, change: &pb::PresenceChange, table: &Table) {
    let listeners: Vec<Listener> = match table.lock().unwrap().get(user) {
        Some(entry) => entry.listeners.iter().map(|(_, l)| l.clone()).collect(),
        None => return,
    };
    let event = Event::Presence { user: &change.user, online: change.online, ts: change.ts, status: &change.status };
    let (mut json, mut proto) = (None, None);
    let mut delivered = 0u64;
    for l in listeners {
        let slot = match l.encoding {
            Encoding::Json => &mut json,
            Encoding::Proto => &mut proto,
        };
        let bytes = slot.get_or_insert_with(|| event.encode(l.encoding)).clone();
        delivered += l.outbox.push(Out::Data(bytes)) as u64;
    }
    crate::metrics::delivered(delivered);
}
