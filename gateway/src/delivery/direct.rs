//! Direct messages for the users connected to this gateway.
//!
//! Senders ask presence which gateways hold the user and send each one a
//! request on `sb.gateway.<id>.direct` ([`presence::direct`]), so a gateway
//! needs one subscription for all its users: a user costs a table entry
//! here, not a NATS subscription (~6 KiB each in async-nats). The answer
//! counts the connections that took the message; 0 tells the sender to
//! queue it in the user's inbox. While presence is unreachable senders ask
//! every gateway on `sb.gateways.direct`, where only a gateway that
//! delivered answers.
//!
//! A `notice` from presence means the user's inbox got a message around the
//! time a connection of theirs opened here: the gateway takes the inbox for
//! one of the user's connections. Each queued message reaches exactly one
//! connection (a take removes what it returns), and a user's takes here run
//! one at a time, so a notice's take cannot split a new connection's
//! queued messages out of order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bus::{BusError, Message};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use proto::client::{Encoding, Event};
use proto::{internal, subject};

use crate::delivery::outbox::Out;
use crate::delivery::topics::Listener;
use crate::node::hub::Hub;

/// A user connected here.
struct User {
    /// The user's connections; usually one or two, so a list.
    conns: Vec<(Arc<str>, Listener)>,
    /// Held while the user's inbox is taken.
    taking: Arc<tokio::sync::Mutex<()>>,
}

/// The connections of each user connected here.
#[derive(Default)]
pub struct Directs {
    table: Mutex<HashMap<Arc<str>, User>>,
    /// Connections over all users.
    listeners: AtomicUsize,
}

impl Directs {
    /// Adds `conn` of `user`: it gets the user's direct messages from now on.
    pub fn add(&self, user: &str, conn: Arc<str>, listener: Listener) {
        let mut table = self.table.lock().unwrap();
        match table.get_mut(user) {
            Some(u) => u.conns.push((conn, listener)),
            None => {
                table.insert(user.into(), User { conns: vec![(conn, listener)], taking: Arc::default() });
            }
        }
        self.listeners.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes `conn` of `user`.
    pub fn remove(&self, user: &str, conn: &str) {
        let mut table = self.table.lock().unwrap();
        let Some(u) = table.get_mut(user) else { return };
        let before = u.conns.len();
        u.conns.retain(|(c, _)| &**c != conn);
        self.listeners.fetch_sub(before - u.conns.len(), Ordering::Relaxed);
        if u.conns.is_empty() {
            table.remove(user);
        }
    }

    /// The user's connections here.
    pub fn listeners_of(&self, user: &str) -> Vec<Listener> {
        let table = self.table.lock().unwrap();
        table.get(user).map(|u| u.conns.iter().map(|(_, l)| l.clone()).collect()).unwrap_or_default()
    }

    /// Whether `user` has a connection here.
    pub fn contains(&self, user: &str) -> bool {
        self.table.lock().unwrap().contains_key(user)
    }

    /// Users with a connection here.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap().len()
    }

    /// Whether no user is connected here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connections over all users.
    pub fn listeners(&self) -> usize {
        self.listeners.load(Ordering::Relaxed)
    }

    /// Queues `dm` for every connection of its user here; how many took it.
    fn deliver(&self, dm: &internal::DirectMessage) -> u32 {
        let listeners = self.listeners_of(&dm.to);
        let event = Event::Direct { from: &dm.from, data: &dm.data, ts: dm.ts, queued: false };
        let (mut json, mut proto) = (None, None);
        let mut took = 0;
        for l in listeners {
            let slot = match l.encoding {
                Encoding::Json => &mut json,
                Encoding::Proto => &mut proto,
            };
            let bytes = slot.get_or_insert_with(|| event.encode(l.encoding)).clone();
            took += l.outbox.push(Out::Data(bytes)) as u32;
        }
        crate::metrics::delivered(took.into());
        took
    }
}

/// Serves `sb.gateway.<id>.direct` and `sb.gateways.direct` until the bus
/// closes; both subscriptions are live when this returns.
pub async fn spawn(hub: Arc<Hub>) -> Result<(), BusError> {
    let own = hub.bus.subscribe(subject::gateway_direct(&hub.id)).await?.map(|m| (m, true));
    let all = hub.bus.subscribe(subject::GATEWAYS_DIRECT.to_owned()).await?.map(|m| (m, false));
    let mut both = futures::stream::select(own, all);
    tokio::spawn(async move {
        while let Some((msg, addressed)) = both.next().await {
            let Ok(dm) = internal::DirectMessage::decode(msg.payload.clone()) else { continue };
            if !subject::valid_id(&dm.to) {
                continue;
            }
            if dm.notice {
                let hub = hub.clone();
                tokio::spawn(async move { hand_over(&hub, &dm.to, None).await });
                continue;
            }
            let took = hub.direct.deliver(&dm);
            if msg.reply.is_some() && (addressed || took > 0) {
                // Answered off this loop: a slow bus never holds up delivery.
                tokio::spawn(answer(hub.clone(), msg, took));
            }
        }
    });
    Ok(())
}

async fn answer(hub: Arc<Hub>, msg: Message, took: u32) {
    let reply = internal::GatewayCommandReply { connections: took, ..Default::default() };
    let _ = hub.bus.respond(&msg, Bytes::from(reply.encode_to_vec())).await;
}

/// Takes `user`'s inbox and queues it for `listener` (by default the
/// user's first connection here), oldest first, as `direct` events with
/// `queued: true`. What the connection can no longer take (it closed
/// meanwhile) goes back to the inbox for the next one.
pub async fn hand_over(hub: &Hub, user: &str, listener: Option<Listener>) {
    let Some(taking) = hub.direct.table.lock().unwrap().get(user).map(|u| u.taking.clone()) else { return };
    let _taking = taking.lock().await;
    let Some(listener) = listener.or_else(|| hub.direct.listeners_of(user).into_iter().next()) else { return };
    let inbox = &hub.presence;
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
