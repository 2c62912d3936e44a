//! The rooms this gateway has local members in.
//!
//! Each such room has one fanout task holding the gateway's subscription to
//! `sb.room.<room>`. Sessions `enter` a room before asking its owner to join
//! (so no event published after the owner's answer can be missed) and `exit`
//! when they leave; the task ends with the last local member.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bus::{Bus, BusError};
use proto::subject;
use router::client::RouterClient;
use tokio::sync::{mpsc, watch};

use crate::delivery::fanout::{self, Attach, Bounds, Cmd, Joining, Joins};

/// How far a room's subscription has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    Pending,
    Subscribed,
    Failed,
}

struct Entry {
    tx: mpsc::UnboundedSender<Cmd>,
    /// Sessions that entered and have not exited.
    refs: usize,
    ready: watch::Receiver<Ready>,
    joins: Joins,
}

/// The registry of locally joined rooms.
pub struct Rooms {
    /// This gateway's id, for re-registering members.
    gateway: Arc<str>,
    bus: Bus,
    router: RouterClient,
    /// Every room's buffer bounds (with the budget they share).
    bounds: Bounds,
    table: Mutex<HashMap<String, Entry>>,
}

/// A session's handle on a room's fanout task.
#[derive(Clone)]
pub struct RoomHandle {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Rooms {
    pub fn new(gateway: &str, bus: Bus, router: RouterClient, bounds: Bounds) -> Arc<Self> {
        Arc::new(Self { gateway: gateway.into(), bus, router, bounds, table: Mutex::default() })
    }

    /// Takes a reference on `room`, starting its fanout if needed, and waits
    /// until its subscription is live. Pair every success with [`Self::exit`].
    /// The session counts as joining the room until it drops the [`Joining`]
    /// (attached, or given up).
    pub async fn enter(&self, room: &str) -> Result<(RoomHandle, Joining), BusError> {
        let (tx, mut ready, joining) = {
            let mut table = self.table.lock().unwrap();
            let entry = table.entry(room.to_owned()).or_insert_with(|| self.spawn(room));
            entry.refs += 1;
            (entry.tx.clone(), entry.ready.clone(), entry.joins.start())
        };
        let state = ready.wait_for(|r| *r != Ready::Pending).await.map(|r| *r).unwrap_or(Ready::Failed);
        if state == Ready::Failed {
            self.exit(room);
            return Err(BusError::Broker("room subscription failed".into()));
        }
        Ok((RoomHandle { tx }, joining))
    }

    /// Drops a reference taken by [`Self::enter`].
    pub fn exit(&self, room: &str) {
        let mut table = self.table.lock().unwrap();
        if let Some(entry) = table.get_mut(room) {
            entry.refs -= 1;
            if entry.refs == 0 {
                let entry = table.remove(room).expect("present");
                let _ = entry.tx.send(Cmd::Stop);
            }
        }
    }

    /// Rooms with local members.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap().len()
    }

    /// Whether no room has local members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn spawn(&self, room: &str) -> Entry {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(Ready::Pending);
        let joins = Joins::default();
        let (bus, router, room, gateway, task_joins, bounds) = (
            self.bus.clone(),
            self.router.clone(),
            room.to_owned(),
            self.gateway.clone(),
            joins.clone(),
            self.bounds.clone(),
        );
        tokio::spawn(async move {
            match bus.subscribe(subject::room(&room)).await {
                Ok(sub) => {
                    ready_tx.send_replace(Ready::Subscribed);
                    fanout::run(room, gateway, sub, rx, router, task_joins, bounds).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, room, "room subscription failed");
                    ready_tx.send_replace(Ready::Failed);
                }
            }
        });
        Entry { tx, refs: 0, ready, joins }
    }
}

impl RoomHandle {
    /// Starts delivering to a member (see [`Attach`]).
    pub fn attach(&self, attach: Attach) {
        let _ = self.tx.send(Cmd::Attach(Box::new(attach)));
    }

    /// Stops delivering to a member.
    pub fn detach(&self, conn: Arc<str>) {
        let _ = self.tx.send(Cmd::Detach(conn));
    }
}
