//! What every connection on this gateway shares.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bus::Bus;
use presence::{PresenceClient, Reporter};
use router::client::RouterClient;

use crate::config::Limits;
use crate::delivery::direct::Directs;
use crate::delivery::outbox::Outbox;
use crate::delivery::rooms::Rooms;
use crate::delivery::topics::Topics;
use crate::edge::admission::Admission;
use crate::session::auth::Verifier;
use crate::session::grants::{Defaults, Grants};
use router::namespace::Namespaces;

/// The gateway's shared state and services.
pub struct Hub {
    /// This gateway's node id.
    pub id: String,
    pub limits: Limits,
    pub bus: Bus,
    /// Calls to room owners.
    pub router: RouterClient,
    /// Rooms with local members.
    pub rooms: Arc<Rooms>,
    /// The connections of each user connected here, for direct messages.
    pub direct: Directs,
    /// `sb.presence.<user>` for users watched from here.
    pub watches: Topics,
    pub presence: PresenceClient,
    pub reporter: Arc<Reporter>,
    pub verifier: Verifier,
    /// What tokens without a claim get (`--default-rooms` and the like).
    pub defaults: Defaults,
    /// The grants of a token without any claim, shared.
    pub default_grants: Arc<Grants>,
    /// Policy per room prefix (`--config`).
    pub namespaces: Arc<Namespaces>,
    /// The backend's hooks (`--hook-url`).
    pub hooks: Option<Arc<crate::hooks::Hooks>>,
    /// Allowed `Origin` values; empty allows any.
    pub allowed_origins: Vec<String>,
    /// `--conformance-echo`: connections echo messages instead of speaking
    /// the Switchboard protocol (see [`crate::websocket::echo`]).
    pub conformance_echo: bool,
    pub admission: Arc<Admission>,
    /// The SSE connections held here, for POSTs and resumes.
    pub sse: Arc<crate::sse::registry::Registry>,
    /// Live connections, for drain and admin disconnects.
    conns: Mutex<HashMap<Arc<str>, Conn>>,
    /// Set on SIGTERM: no new connections.
    pub draining: AtomicBool,
    next_conn: AtomicU64,
}

/// A live connection as the hub sees it.
#[derive(Clone)]
pub struct Conn {
    pub user: Arc<str>,
    pub outbox: Arc<Outbox>,
}

/// What [`Hub::new`] needs.
pub struct Parts {
    pub id: String,
    pub limits: Limits,
    pub bus: Bus,
    pub router: RouterClient,
    pub presence: PresenceClient,
    pub reporter: Arc<Reporter>,
    pub verifier: Verifier,
    pub defaults: Defaults,
    pub namespaces: Arc<Namespaces>,
    pub hooks: Option<Arc<crate::hooks::Hooks>>,
    pub allowed_origins: Vec<String>,
    pub conformance_echo: bool,
}

impl Hub {
    pub fn new(p: Parts) -> Arc<Self> {
        Arc::new(Self {
            rooms: Rooms::new(&p.id, p.bus.clone(), p.router.clone(), p.limits.room_bounds()),
            direct: Directs::default(),
            watches: Topics::new(p.bus.clone()),
            admission: Admission::new(&p.limits),
            sse: Arc::default(),
            id: p.id,
            limits: p.limits,
            bus: p.bus,
            router: p.router,
            presence: p.presence,
            reporter: p.reporter,
            verifier: p.verifier,
            default_grants: Grants::defaults(&p.defaults),
            defaults: p.defaults,
            namespaces: p.namespaces,
            hooks: p.hooks,
            allowed_origins: p.allowed_origins,
            conformance_echo: p.conformance_echo,
            conns: Mutex::default(),
            draining: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
        })
    }

    /// A connection id unique in the cluster: this gateway's id and a counter.
    pub fn new_conn_id(&self) -> Arc<str> {
        format!("{}-{}", self.id, self.next_conn.fetch_add(1, Ordering::Relaxed)).into()
    }

    pub fn register(&self, id: Arc<str>, conn: Conn) {
        let mut conns = self.conns.lock().unwrap();
        conns.insert(id, conn);
        crate::metrics::connections(conns.len());
    }

    pub fn unregister(&self, id: &str) {
        let mut conns = self.conns.lock().unwrap();
        conns.remove(id);
        crate::metrics::connections(conns.len());
    }

    /// A snapshot of the live connections.
    pub fn conns(&self) -> Vec<(Arc<str>, Conn)> {
        self.conns.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Number of authenticated connections.
    pub fn conn_count(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
