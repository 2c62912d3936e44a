//! The gateway side of presence: batched session reports and the lease.
//!
//! A gateway must never wait on presence while accepting or closing a
//! connection, so [`Reporter::connected`] and [`Reporter::disconnected`] only
//! note the change; a background loop sends what accumulated every
//! `batch_interval` (100 ms) in one `Report`, and an empty one every
//! `lease_renewal` (5 s) to keep the gateway's lease.
//!
//! Direct messages find a user's gateways through presence, so a connection
//! should be known there before its `hello`: a message sent to a user who
//! has seen `hello` then arrives live, never by way of the inbox. A connect
//! therefore wakes the loop at once (at most one report per [`EAGER_GAP`]),
//! and [`Reporter::reported`] lets the gateway wait for that report, bounded
//! by [`REPORTED_WAIT`] so a slow or absent presence never holds a
//! handshake up for long. Under a connect storm the reports still batch:
//! what arrives while one is in flight or within the gap goes out together.
//!
//! Deltas alone cannot heal lost state, so the reporter also keeps the
//! gateway's full session set and sends it as a snapshot whenever the service
//! may have lost track of it: on the first report, when the reply carries a
//! new instance id (presence restarted), after a failed report (the deltas
//! may or may not have arrived), and when so much time passed since the last
//! successful report that the lease may have lapsed.
//!
//! With presence replicas, the gateway holds one lease per replica (a
//! [`Lane`]) and each replica hears only of its own users. When the ring
//! changes every lane sends a snapshot: a replica that took users over
//! learns their sessions within one batch, and one that gave them away has
//! already dropped them silently, so nobody who stayed connected is ever
//! reported offline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use proto::pb;

use crate::client::{owner, PresenceClient};

/// How long [`Reporter::leave`] may take, waiting for an in-flight report
/// included.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The least time between two reports a connect woke the loop for.
pub const EAGER_GAP: Duration = Duration::from_millis(5);

/// The longest [`Reporter::reported`] waits.
pub const REPORTED_WAIT: Duration = Duration::from_secs(1);

/// The lease TTL assumed until the service states its own.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// Timing of the reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReporterConfig {
    /// How often pending deltas are sent: the most a delta waits.
    pub batch_interval: Duration,
    /// How often a report goes out even with nothing in it, renewing the
    /// lease. Must stay well below the service's lease TTL (15 s).
    pub lease_renewal: Duration,
}

impl Default for ReporterConfig {
    fn default() -> Self {
        Self { batch_interval: Duration::from_millis(100), lease_renewal: Duration::from_secs(5) }
    }
}

/// Batches one gateway's session changes to the presence service.
pub struct Reporter {
    /// Where reports go (one service, or replicas by user).
    client: PresenceClient,
    /// This gateway's node id: the key of its lease.
    gateway: String,
    /// Report timing.
    config: ReporterConfig,
    /// Sessions and pending deltas; held only briefly, never across an await.
    state: Mutex<State>,
    /// Held while reports are in flight, so reports arrive in order and the
    /// final `leaving` report cannot be overtaken by a snapshot.
    sending: tokio::sync::Mutex<()>,
    /// Whether the last report to every target succeeded.
    reachable: AtomicBool,
    /// Wakes the loop for a connect.
    wake: tokio::sync::Notify,
    /// The connects the last finished report round took (sent or failed).
    reported: tokio::sync::watch::Sender<u64>,
}

/// A live session: its user and the status last set on it (text, ms).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Live {
    user: String,
    status: String,
    status_ms: i64,
}

/// A session change not yet reported, keyed by connection id.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Delta {
    /// The connection opened (or set a status): report it as it is now.
    Connected(Live),
    /// The connection closed, for this user.
    Disconnected(String),
}

/// What the reporter knows and owes the service.
#[derive(Debug)]
struct State {
    /// Every live session on this gateway, by connection id.
    sessions: HashMap<String, Live>,
    /// Changes since the last reports that carried deltas.
    pending: HashMap<String, Delta>,
    /// One lease per target, by target id ("" for a single service).
    lanes: HashMap<Arc<str>, Lane>,
    /// The ring version the lanes were last set up for.
    ring: Option<u64>,
    /// `leave` was called: report nothing more.
    left: bool,
    /// Counts connects; the report round that takes connect `n` ends with
    /// `reported >= n`.
    connects: u64,
}

/// The lease this gateway holds at one target, and how reporting there goes.
#[derive(Debug)]
struct Lane {
    /// Where this lane's reports go.
    client: PresenceClient,
    /// The service instance that answered the last successful report.
    instance: Option<String>,
    /// The next report must be a snapshot.
    resync: bool,
    /// When the last report was started, successful or not.
    last_attempt: Option<Instant>,
    /// When the last successful report was started.
    last_ok: Option<Instant>,
    /// The service's lease TTL, from its last reply.
    lease_ttl: Duration,
    /// The wait before retrying after a failure; doubles up to the renewal
    /// interval, so a dead service is not hammered every batch.
    backoff: Duration,
    /// No report before this, after a failure.
    retry_at: Option<Instant>,
    /// Whether the last report succeeded.
    ok: bool,
}

/// One report about to go out.
struct Outgoing {
    lane: Arc<str>,
    client: PresenceClient,
    req: pb::ReportRequest,
    snapshot: bool,
}

impl Reporter {
    /// Starts reporting for `gateway_id` with the default timing.
    pub fn start(client: PresenceClient, gateway_id: String) -> Arc<Self> {
        Self::start_with_config(client, gateway_id, ReporterConfig::default())
    }

    /// Starts reporting for `gateway_id`; the loop stops when the last `Arc`
    /// is dropped or after [`leave`](Self::leave).
    pub fn start_with_config(client: PresenceClient, gateway_id: String, config: ReporterConfig) -> Arc<Self> {
        let reporter = Arc::new(Self {
            client,
            gateway: gateway_id,
            config,
            state: Mutex::new(State {
                sessions: HashMap::new(),
                pending: HashMap::new(),
                lanes: HashMap::new(),
                ring: None,
                left: false,
                connects: 0,
            }),
            sending: tokio::sync::Mutex::new(()),
            reachable: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            reported: tokio::sync::watch::Sender::new(0),
        });
        tokio::spawn(run(Arc::downgrade(&reporter), config.batch_interval));
        reporter
    }

    /// Notes that `conn` of `user` opened and has it reported at once;
    /// returns what to pass to [`reported`](Self::reported).
    pub fn connected(&self, user: &str, conn: &str) -> u64 {
        let mut state = self.state.lock().unwrap();
        let live = Live { user: user.to_owned(), status: String::new(), status_ms: 0 };
        state.sessions.insert(conn.to_owned(), live.clone());
        state.pending.insert(conn.to_owned(), Delta::Connected(live));
        state.connects += 1;
        let connect = state.connects;
        drop(state);
        self.wake.notify_one();
        connect
    }

    /// Waits until the report carrying `connect` went out and was answered
    /// (or failed: presence is degraded), at most [`REPORTED_WAIT`].
    pub async fn reported(&self, connect: u64) {
        let mut reported = self.reported.subscribe();
        let _ = tokio::time::timeout(REPORTED_WAIT, reported.wait_for(|n| *n >= connect)).await;
    }

    /// Notes that `conn` set its user's status at `at_ms` (ms since the Unix
    /// epoch); reported within one batch. Unknown connections are ignored.
    pub fn status(&self, conn: &str, status: &str, at_ms: i64) {
        let mut state = self.state.lock().unwrap();
        let Some(live) = state.sessions.get_mut(conn) else { return };
        live.status = status.to_owned();
        live.status_ms = at_ms;
        let live = live.clone();
        state.pending.insert(conn.to_owned(), Delta::Connected(live));
    }

    /// Notes that `conn` of `user` closed; reported within one batch.
    pub fn disconnected(&self, user: &str, conn: &str) {
        let mut state = self.state.lock().unwrap();
        state.sessions.remove(conn);
        // Even when the connect is still pending, send the disconnect: the
        // service ignores unknown ones, and this stays right should a
        // connection id ever be reused.
        state.pending.insert(conn.to_owned(), Delta::Disconnected(user.to_owned()));
    }

    /// Whether the last report to every target succeeded: false means
    /// presence is degraded (some users' presence may be stale).
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Live sessions on this gateway, as the reporter knows them.
    pub fn sessions(&self) -> usize {
        self.state.lock().unwrap().sessions.len()
    }

    /// Deregisters this gateway on shutdown: stops reporting and sends a
    /// final `leaving` report to every target, so its users enter offline
    /// grace now rather than when the lease runs out. Gives up after 2 s.
    pub async fn leave(&self) {
        self.state.lock().unwrap().left = true;
        let send = async {
            let _sending = self.sending.lock().await;
            let leaving = self.client.targets().into_iter().map(|target| {
                let req = pb::ReportRequest { gateway: self.gateway.clone(), leaving: true, ..Default::default() };
                async move { target.client.report(req).await }
            });
            futures::future::join_all(leaving).await.into_iter().collect::<Result<Vec<_>, _>>()
        };
        match tokio::time::timeout(LEAVE_TIMEOUT, send).await {
            Ok(Ok(_)) => {
                count("ok");
                tracing::info!(gateway = %self.gateway, "left presence");
            }
            Ok(Err(status)) => {
                count("error");
                tracing::warn!(gateway = %self.gateway, %status, "could not leave presence");
            }
            Err(_) => {
                count("error");
                tracing::warn!(gateway = %self.gateway, "leaving presence timed out");
            }
        }
    }

    /// Sends the reports that are due; false once the reporter has left.
    async fn report_if_due(&self) -> bool {
        let _sending = self.sending.lock().await;
        let now = Instant::now();
        let outgoing = {
            let mut state = self.state.lock().unwrap();
            if state.left {
                return false;
            }
            state.follow_ring(&self.client);
            let outgoing = state.take_requests(now, &self.gateway, &self.config, self.client.ring().as_deref());
            (outgoing, state.connects)
        };
        let (outgoing, connects) = outgoing;
        if outgoing.is_empty() {
            self.reported.send_replace(connects);
            return true;
        }
        let sends = outgoing.into_iter().map(|o| async move {
            let result = o.client.report(o.req).await;
            (o.lane, o.snapshot, result)
        });
        let results = futures::future::join_all(sends).await;
        let was_reachable = self.reachable();
        let mut state = self.state.lock().unwrap();
        for (id, snapshot, result) in results {
            let Some(lane) = state.lanes.get_mut(&id) else { continue };
            match result {
                Ok(reply) => {
                    count("ok");
                    if !lane.ok {
                        tracing::info!(replica = %id, instance = %reply.instance, "presence reachable");
                    }
                    lane.succeeded(now, snapshot, reply, &self.config);
                }
                Err(status) => {
                    count("error");
                    // Once per outage at warn; the retries at debug.
                    if lane.ok {
                        tracing::warn!(replica = %id, %status, "presence report failed");
                    } else {
                        tracing::debug!(replica = %id, %status, "presence report failed");
                    }
                    lane.failed(now, &self.config);
                }
            }
        }
        let reachable = state.lanes.values().all(|l| l.ok);
        self.reported.send_replace(connects);
        self.reachable.store(reachable, Ordering::Relaxed);
        if reachable != was_reachable {
            metrics::gauge!("switchboard_gateway_presence_degraded").set(if reachable { 0.0 } else { 1.0 });
        }
        true
    }
}

impl State {
    /// Sets the lanes up for the current targets. When the ring changed,
    /// users may have moved: every lane's next report is a snapshot.
    fn follow_ring(&mut self, client: &PresenceClient) {
        let version = client.ring().map_or(0, |r| r.version());
        if self.ring == Some(version) {
            return;
        }
        self.ring = Some(version);
        let targets = client.targets();
        self.lanes.retain(|id, _| targets.iter().any(|t| t.id == *id));
        for target in targets {
            let lane = self.lanes.entry(target.id).or_insert_with(|| Lane::new(target.client.clone()));
            lane.client = target.client;
            lane.resync = true;
        }
    }

    /// The reports due now (one per lane at most); clears what they carry.
    fn take_requests(
        &mut self,
        now: Instant,
        gateway: &str,
        config: &ReporterConfig,
        ring: Option<&bus::ring::Ring>,
    ) -> Vec<Outgoing> {
        let mut deltas: HashMap<&str, Vec<(String, Delta)>> = HashMap::new();
        let pending = std::mem::take(&mut self.pending);
        for (conn, delta) in pending {
            let user = match &delta {
                Delta::Connected(live) => &live.user,
                Delta::Disconnected(user) => user,
            };
            deltas.entry(owner(ring, user)).or_default().push((conn, delta));
        }
        let mut out = Vec::new();
        for (id, lane) in &mut self.lanes {
            let mine = deltas.remove(&**id).unwrap_or_default();
            // A lane in backoff has resync set: its snapshot will carry these.
            if !lane.due(now, config, !mine.is_empty()) {
                continue;
            }
            lane.last_attempt = Some(now);
            // Past half the lease since the last success, the lease may have
            // lapsed on the service side (a paused process, a slow network):
            // deltas alone would then leave the service missing sessions.
            let stale = lane.last_ok.is_none_or(|at| now.duration_since(at) >= lane.lease_ttl / 2);
            let mut req = pb::ReportRequest { gateway: gateway.to_owned(), ..Default::default() };
            let snapshot = lane.resync || stale;
            if snapshot {
                req.snapshot = true;
                req.connected = self
                    .sessions
                    .iter()
                    .filter(|(_, live)| owner(ring, &live.user) == &**id)
                    .map(|(conn, live)| session(live, conn))
                    .collect();
                lane.resync = false;
            } else {
                for (conn, delta) in mine {
                    match delta {
                        Delta::Connected(live) => req.connected.push(session(&live, &conn)),
                        Delta::Disconnected(user) => {
                            req.disconnected.push(pb::Session { user, conn, ..Default::default() })
                        }
                    }
                }
            }
            out.push(Outgoing { lane: id.clone(), client: lane.client.clone(), req, snapshot });
        }
        out
    }
}

impl Lane {
    fn new(client: PresenceClient) -> Self {
        Self {
            client,
            instance: None,
            resync: true,
            last_attempt: None,
            last_ok: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            backoff: Duration::ZERO,
            retry_at: None,
            ok: false,
        }
    }

    /// Whether a report should go out now.
    fn due(&self, now: Instant, config: &ReporterConfig, has_deltas: bool) -> bool {
        if self.retry_at.is_some_and(|at| now < at) {
            return false;
        }
        self.resync || has_deltas || self.last_attempt.is_none_or(|at| now.duration_since(at) >= config.lease_renewal)
    }

    /// Records a successful report.
    fn succeeded(&mut self, now: Instant, snapshot: bool, reply: pb::ReportReply, config: &ReporterConfig) {
        self.ok = true;
        self.last_ok = Some(now);
        self.backoff = Duration::ZERO;
        self.retry_at = None;
        if reply.lease_ttl_ms > 0 {
            self.lease_ttl = Duration::from_millis(reply.lease_ttl_ms.into());
        }
        if reply.misrouted > 0 {
            // The replica's ring and ours differ for now: what it ignored
            // belongs somewhere, so snapshot again until the rings agree.
            self.resync = true;
        }
        if self.instance.as_deref() == Some(reply.instance.as_str()) {
            return;
        }
        if self.instance.is_some() {
            // What the old instance held in memory (the inbox) is gone.
            metrics::counter!("switchboard_gateway_presence_restarts_total").increment(1);
        }
        if !snapshot {
            // A new service instance: our deltas went to an empty store.
            tracing::info!(instance = %reply.instance, "presence restarted, resending all sessions");
            self.resync = true;
        }
        if config.lease_renewal >= self.lease_ttl {
            tracing::warn!(
                renewal = ?config.lease_renewal,
                lease_ttl = ?self.lease_ttl,
                "lease renewal is not shorter than the presence lease; sessions will expire"
            );
        }
        self.instance = Some(reply.instance);
    }

    /// Records a failed report: what it carried may be lost, so the next one
    /// is a snapshot, after a growing pause.
    fn failed(&mut self, now: Instant, config: &ReporterConfig) {
        self.ok = false;
        self.resync = true;
        self.backoff = (self.backoff * 2).max(config.batch_interval).min(config.lease_renewal);
        self.retry_at = Some(now + self.backoff);
    }
}

/// The reporting loop; holds the reporter weakly so dropping it stops the loop.
async fn run(reporter: Weak<Reporter>, batch_interval: Duration) {
    let mut tick = tokio::time::interval(batch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(woken) = reporter.upgrade() else { return };
        tokio::select! {
            _ = tick.tick() => {}
            _ = woken.wake.notified() => {}
        }
        drop(woken);
        let Some(reporter) = reporter.upgrade() else {
            return;
        };
        if !reporter.report_if_due().await {
            return;
        }
        drop(reporter);
        tokio::time::sleep(EAGER_GAP).await;
    }
}

/// Counts a report by outcome.
fn count(result: &'static str) {
    metrics::counter!("switchboard_gateway_presence_reports_total", "result" => result).increment(1);
}

/// A protobuf session.
fn session(live: &Live, conn: &str) -> pb::Session {
    pb::Session {
        user: live.user.clone(),
        conn: conn.to_owned(),
        status: live.status.clone(),
        status_ms: live.status_ms,
    }
}
