//! The rooms this gateway has local members in.
//!
//! Each such room has one fanout task holding the gateway's subscription to
//! `sb.room.<room>`. Sessions `enter` a room before asking its owner to join
//! (so no event published after the owner's answer can be missed) and `exit`
//! when they leave; the task ends with the last local member.
//!
//! A gateway pays this per room it follows, and in a cluster every gateway
//! follows nearly every room (a room of 100 spread over six gateways has
//! members on all six): with 1,000 rooms of 100, 9.5 KiB a room was 13%
//! of each gateway's memory per connection (`docs/scaling.md`). So the room's
//! command channel is futures' (a node per command; tokio's allocates 32
//! slots and a cache-padded header up front, 1.3 KiB), its readiness a
//! `SetOnce` (a `watch` carries eight `Notify`s, 344 B), and the task's
//! arguments are boxed ([`Follow`]): 7.9 KiB a room. The floor is
//! async-nats' subscription: its channel allocates 32 messages and a header
//! up front, 6.4 KiB, and once 32 events have passed it keeps a second
//! block for reuse (12.3 KiB); the crate offers no way to size or share it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bus::{Bus, BusError};
use futures::channel::mpsc;
use router::client::RouterClient;
use tokio::sync::SetOnce;

use crate::delivery::fanout::{self, Attach, Bounds, Cmd, Follow, Joining, Joins};

/// Whether a room's subscription is live: set once, by its task (false if
/// subscribing failed or the task ended before it could say).
type Ready = Arc<SetOnce<bool>>;

struct Entry {
    tx: mpsc::UnboundedSender<Cmd>,
    /// Sessions that entered and have not exited.
    refs: usize,
    ready: Ready,
    joins: Joins,
}

/// The registry of locally joined rooms.
pub struct Rooms {
    /// This gateway's id, for re-registering members.
    gateway: Arc<str>,
    bus: Bus,
    router: Arc<RouterClient>,
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
        Arc::new(Self { gateway: gateway.into(), bus, router: Arc::new(router), bounds, table: Mutex::default() })
    }

    /// Takes a reference on `room`, starting its fanout if needed, and waits
    /// until its subscription is live. Pair every success with [`Self::exit`].
    /// The session counts as joining the room until it drops the [`Joining`]
    /// (attached, or given up).
    pub async fn enter(&self, room: &str) -> Result<(RoomHandle, Joining), BusError> {
        let (tx, ready, joining) = {
            let mut table = self.table.lock().unwrap();
            let entry = table.entry(room.to_owned()).or_insert_with(|| self.spawn(room));
            entry.refs += 1;
            (entry.tx.clone(), entry.ready.clone(), entry.joins.start())
        };
        if !*ready.wait().await {
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
                let _ = entry.tx.unbounded_send(Cmd::Stop);
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
        let (tx, cmds) = mpsc::unbounded();
        let ready = Ready::default();
        let joins = Joins::default();
        tokio::spawn(fanout::run(Box::new(Follow {
            room: room.to_owned(),
            gateway: self.gateway.clone(),
            bus: self.bus.clone(),
            router: self.router.clone(),
            joins: joins.clone(),
            bounds: self.bounds.clone(),
            cmds,
            said: SaysReady(ready.clone()),
        })));
        Entry { tx, refs: 0, ready, joins }
    }
}

/// The task's side of [`Ready`]: a task dropped before it could say (the
/// runtime shutting down) reads as a failure, so nobody waits forever.
pub struct SaysReady(Ready);

impl SaysReady {
    pub fn say(&self, live: bool) {
        let _ = self.0.set(live);
    }
}

impl Drop for SaysReady {
    fn drop(&mut self) {
        self.say(false);
    }
}

impl RoomHandle {
    /// Starts delivering to a member (see [`Attach`]).
    pub fn attach(&self, attach: Attach) {
        let _ = self.tx.unbounded_send(Cmd::Attach(Box::new(attach)));
    }

    /// Stops delivering to a member.
    pub fn detach(&self, conn: Arc<str>) {
        let _ = self.tx.unbounded_send(Cmd::Detach(conn));
    }
}
