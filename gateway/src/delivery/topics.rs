//! Per-user bus topics with local listeners: direct messages and presence.
//!
//! A gateway subscribes to `sb.user.<user>` while that user has a connection
//! here, and to `sb.presence.<user>` while someone here watches that user —
//! one subscription per user per gateway, however many local connections
//! care. All of a kind's subscriptions are served by one task (a user costs
//! a subscription and a table entry, not a task of its own). Each event is
//! decoded once and encoded once per encoding, and the bytes are shared by
//! every listener's queue.
//!
//! Direct messages are requests: a gateway that put one into a local
//! connection's queue answers, so the sender learns it was delivered (NATS
//! says at once when nobody subscribes). A message for a user with no
//! connection waits in the presence inbox; the user's next connection takes
//! it (and a `notice` on the user's subject makes a gateway that holds a
//! connection take it, for a connection that opened while it was queued).
//! Taking is atomic, so each queued message reaches exactly one connection.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bus::{Bus, BusError, Message, Subscription};
use bytes::Bytes;
use futures::stream::{AbortHandle, Abortable, FuturesUnordered, StreamExt, StreamFuture};
use futures::Stream;
use prost::Message as _;
use proto::client::{Encoding, Event};
use proto::internal;
use proto::{pb, subject};
use tokio::sync::mpsc;

use presence::PresenceClient;

use crate::delivery::outbox::{Out, Outbox};

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

/// Local interest in one kind of per-user topic.
pub struct Topics {
    topic: Topic,
    bus: Bus,
    table: Table,
    pump: mpsc::UnboundedSender<Tagged>,
    /// Listeners over all users (the `--max-watches` count).
    listeners: AtomicUsize,
}

impl Topics {
    /// `inbox`: where a direct-message topic takes queued messages from.
    pub fn new(topic: Topic, bus: Bus, inbox: Option<PresenceClient>) -> Self {
        let table = Table::default();
        let (pump, subs) = mpsc::unbounded_channel();
        tokio::spawn(serve(topic, subs, table.clone(), bus.clone(), inbox));
        Self { topic, bus, table, pump, listeners: AtomicUsize::new(0) }
    }

    /// Adds `conn` as a listener of `user`'s topic; the bus subscription is
    /// live when this returns.
    pub async fn add(&self, user: &str, conn: Arc<str>, listener: Listener) -> Result<(), BusError> {
        if let Some(entry) = self.table.lock().unwrap().get_mut(user) {
            entry.listeners.push((conn, listener));
            self.listeners.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let subject = match self.topic {
            Topic::Direct => subject::user(user),
            Topic::Presence => subject::presence(user),
        };
        let sub = self.bus.subscribe(subject).await?;
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
async fn serve(
    topic: Topic,
    mut added: mpsc::UnboundedReceiver<Tagged>,
    table: Table,
    bus: Bus,
    inbox: Option<PresenceClient>,
) {
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
                    match Frame::decode(topic, &msg.payload) {
                        Some(Frame::Direct(d)) if d.notice => {
                            if let Some(inbox) = &inbox {
                                tokio::spawn(take_inbox(inbox.clone(), rest.user.clone(), table.clone()));
                            }
                        }
                        // Answered off this loop: a slow bus never holds up delivery.
                        Some(frame) if deliver(&rest.user, &frame, &table) > 0 && msg.reply.is_some() => {
                            let bus = bus.clone();
                            tokio::spawn(async move { bus.respond(&msg, Bytes::new()).await });
                        }
                        Some(_) | None => {}
                    }
                    subs.push(rest.into_future());
                }
            }
        }
    }
}

/// Forwards one event to every listener of `user`; returns how many took it.
fn deliver(user: &str, frame: &Frame, table: &Table) -> u64 {
    let listeners: Vec<Listener> = match table.lock().unwrap().get(user) {
        Some(entry) => entry.listeners.iter().map(|(_, l)| l.clone()).collect(),
        None => return 0,
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
    crate::metrics::delivered(delivered);
    delivered
}

/// Takes `user`'s inbox for one of the user's connections here, if any.
async fn take_inbox(inbox: PresenceClient, user: Arc<str>, table: Table) {
    let first = || table.lock().unwrap().get(&*user).and_then(|e| e.listeners.first().map(|(_, l)| l.clone()));
    if first().is_none() {
        return;
    }
    hand_over(&inbox, &user, first()).await;
}

/// Takes `user`'s inbox and queues it for one connection, oldest first, as
/// `direct` events with `queued: true`. What the connection can no longer
/// take (it closed meanwhile) goes back to the inbox for the next one.
pub async fn hand_over(inbox: &PresenceClient, user: &str, listener: Option<Listener>) {
    let Some(listener) = listener else { return };
    let msgs = match inbox.take_inbox(user).await {
        Ok(msgs) => msgs,
        Err(status) => return tracing::warn!(%status, "could not take a user's inbox"),
    };
    let mut back = Vec::new();
    for m in msgs {
        let event = Event::Direct { from: &m.from, data: &m.data, ts: m.ts, queued: true };
        if back.is_empty() && listener.outbox.push(Out::Data(event.encode(listener.encoding))) {
            crate::metrics::delivered(1);
        } else {
            back.push(m);
        }
    }
    for m in back {
        if inbox.enqueue(m).await.is_err() {
            crate::metrics::dropped("inbox_unavailable");
        }
    }
}

/// A decoded per-user event: what `sb.user.<user>` and `sb.presence.<user>`
/// carry, on its way to the client frame every listener gets.
pub enum Frame {
    Direct(internal::DirectMessage),
    Presence(pb::PresenceChange),
}

impl Frame {
    /// Decodes a bus payload of `topic`; `None` if it is not one. Anyone on
    /// the bus can publish there, so this never panics, whatever the bytes.
    pub fn decode(topic: Topic, payload: &Bytes) -> Option<Self> {
        match topic {
            Topic::Direct => internal::DirectMessage::decode(payload.clone()).ok().map(Self::Direct),
            Topic::Presence => pb::PresenceChange::decode(payload.clone()).ok().map(Self::Presence),
        }
    }

    /// The client frame (`direct` or `presence` event) in `encoding`.
    pub fn encode(&self, encoding: Encoding) -> Bytes {
        match self {
            Self::Direct(d) => Event::Direct { from: &d.from, data: &d.data, ts: d.ts, queued: false }.encode(encoding),
            Self::Presence(p) => {
                Event::Presence { user: &p.user, online: p.online, ts: p.ts, status: &p.status }.encode(encoding)
            }
        }
    }
}
