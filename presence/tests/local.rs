//! The service, the in-process client and the reporter working together over
//! an in-process bus, as in `gateway --standalone`.
//!
//! Durations are shortened; every wait polls with a generous deadline, so a
//! slow machine makes the tests slower, not flaky.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bus::{Bus, Subscription};
use futures::StreamExt;
use presence::rpc::presence_server::Presence as _;
use presence::{PresenceClient, PresenceService, Reporter, ReporterConfig, StoreConfig, WatchStream};
use prost::Message as _;
use proto::pb;
use tonic::{Code, Request};

/// Upper bound on any single wait.
const DEADLINE: Duration = Duration::from_secs(5);

/// Short grace, long lease: only the lease test wants a lease to lapse.
const CONFIG: StoreConfig = StoreConfig {
    lease_ttl: Duration::from_secs(10),
    offline_grace: Duration::from_millis(300),
    inbox: presence::InboxConfig::DEFAULT,
};

const FAST: ReporterConfig =
    ReporterConfig { batch_interval: Duration::from_millis(20), lease_renewal: Duration::from_millis(200) };

/// A service on a fresh bus, with a reporter for gateway `gw1`.
fn setup(config: StoreConfig) -> (Bus, Arc<PresenceService>, PresenceClient, Arc<Reporter>) {
    let bus = Bus::local("t", "test");
    let service = PresenceService::start(bus.clone(), config);
    let client = PresenceClient::local(service.clone());
    let reporter = Reporter::start_with_config(client.clone(), "gw1".into(), FAST);
    (bus, service, client, reporter)
}

/// Polls `check` until it holds, failing after [`DEADLINE`].
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn presence_of(client: &PresenceClient, user: &str) -> pb::UserPresence {
    client.query(vec![user.into()]).await.unwrap().pop().unwrap()
}

async fn is_online(client: &PresenceClient, user: &str) -> bool {
    presence_of(client, user).await.online
}

/// The next presence change on a bus subscription.
async fn next_change(sub: &mut Subscription) -> pb::PresenceChange {
    let msg = tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("no presence change in time")
        .expect("subscription ended");
    pb::PresenceChange::decode(msg.payload).unwrap()
}

/// The next change on a `Watch` stream.
async fn next_watched(watch: &mut WatchStream) -> pb::PresenceChange {
    tokio::time::timeout(DEADLINE, watch.next())
        .await
        .expect("no change in time")
        .expect("stream ended")
        .expect("stream error")
}

#[tokio::test]
async fn reported_sessions_answer_queries() {
    let (_bus, _service, client, reporter) = setup(CONFIG);
    reporter.connected("alice", "c1");
    reporter.connected("alice", "c2");
    wait_for("alice online", || is_online(&client, "alice")).await;
    assert_eq!(reporter.sessions(), 2);
    let before = proto::now_ms();
    let p = presence_of(&client, "alice").await;
    assert!(p.last_seen_ms >= before, "last seen is now while online");
    assert_eq!(presence_of(&client, "bob").await.last_seen_ms, 0);

    // One of two sessions ends: still online well past the grace.
    reporter.disconnected("alice", "c1");
    tokio::time::sleep(CONFIG.offline_grace * 3).await;
    assert!(is_online(&client, "alice").await);

    reporter.disconnected("alice", "c2");
    wait_for("alice offline", || async { !is_online(&client, "alice").await }).await;
    let p = presence_of(&client, "alice").await;
    assert!(p.last_seen_ms >= before && p.last_seen_ms <= proto::now_ms());
}

#[tokio::test]
async fn bus_carries_online_and_offline_changes() {
    let (bus, _service, _client, reporter) = setup(CONFIG);
    let mut alice = bus.subscribe(proto::subject::presence("alice")).await.unwrap();
    reporter.connected("bob", "c0");
    reporter.connected("alice", "c1");
    let online = next_change(&mut alice).await;
    assert_eq!((online.user.as_str(), online.online), ("alice", true));

    reporter.disconnected("alice", "c1");
    let offline = next_change(&mut alice).await;
    assert_eq!((offline.user.as_str(), offline.online), ("alice", false));
    assert!(
        offline.ts - online.ts >= CONFIG.offline_grace.as_millis() as i64,
        "offline only after the grace: {online:?} {offline:?}"
    );
}

#[tokio::test]
async fn connect_and_disconnect_in_one_batch_never_shows_online() {
    let (bus, _service, client, reporter) = setup(CONFIG);
    // Past the first report, which is a snapshot: test the delta path.
    wait_for("first report", || async { reporter.reachable() }).await;
    let mut all = bus.subscribe("sb.presence.*".into()).await.unwrap();
    // No await in between: all three land in the same batch.
    reporter.connected("alice", "c1");
    reporter.disconnected("alice", "c1");
    reporter.connected("bob", "c2");
    // bob was in the same report as alice, so his change marks its arrival.
    let first = next_change(&mut all).await;
    assert_eq!((first.user.as_str(), first.online), ("bob", true));
    let p = presence_of(&client, "alice").await;
    assert!(!p.online);
    assert_eq!(p.last_seen_ms, 0, "alice was never online");
    assert_eq!(reporter.sessions(), 1);
}

#[tokio::test]
async fn reconnect_within_grace_emits_nothing() {
    let config = StoreConfig { offline_grace: Duration::from_secs(1), ..CONFIG };
    let (bus, service, client, reporter) = setup(config);
    let mut all = bus.subscribe("sb.presence.*".into()).await.unwrap();
    reporter.connected("alice", "c1");
    assert!(next_change(&mut all).await.online);
    // A network switch: the old connection closes, a new one opens shortly
    // after, in a later report.
    reporter.disconnected("alice", "c1");
    wait_for("disconnect applied", || async { service.sessions() == 0 }).await;
    assert_eq!(service.online_users(), 1, "in grace");
    reporter.connected("alice", "c2");
    wait_for("reconnect applied", || async { service.sessions() == 1 }).await;
    tokio::time::sleep(config.offline_grace * 2).await;
    assert!(is_online(&client, "alice").await);
    // Anything alice emitted would have been published before this marker.
    reporter.connected("marker", "c3");
    let next = next_change(&mut all).await;
    assert_eq!(next.user, "marker", "alice flapped: {next:?}");
}

#[tokio::test]
async fn leave_ends_sessions_and_stops_reporting() {
    let (bus, _service, client, reporter) = setup(CONFIG);
    let mut alice = bus.subscribe(proto::subject::presence("alice")).await.unwrap();
    reporter.connected("alice", "c1");
    assert!(next_change(&mut alice).await.online);
    reporter.leave().await;
    assert!(!next_change(&mut alice).await.online);
    // Nothing is reported after leaving.
    reporter.connected("bob", "c2");
    tokio::time::sleep(FAST.lease_renewal * 3).await;
    assert!(!is_online(&client, "bob").await);
}

#[tokio::test]
async fn dropped_reporter_lets_the_lease_lapse() {
    let config = StoreConfig {
        lease_ttl: Duration::from_millis(500),
        offline_grace: Duration::from_millis(100),
        ..StoreConfig::default()
    };
    let (bus, _service, client, reporter) = setup(config);
    let mut alice = bus.subscribe(proto::subject::presence("alice")).await.unwrap();
    reporter.connected("alice", "c1");
    assert!(next_change(&mut alice).await.online);
    // While the reporter lives, renewals keep alice online past the lease.
    tokio::time::sleep(config.lease_ttl * 2).await;
    assert!(is_online(&client, "alice").await);
    assert!(reporter.reachable());
    drop(reporter);
    assert!(!next_change(&mut alice).await.online);
}

#[tokio::test]
async fn reply_names_the_instance_and_lease() {
    let bus = Bus::local("t", "test");
    let a = PresenceClient::local(PresenceService::start(bus.clone(), CONFIG));
    let b = PresenceClient::local(PresenceService::start(bus, CONFIG));
    let req = pb::ReportRequest { gateway: "gw1".into(), ..Default::default() };
    let ra = a.report(req.clone()).await.unwrap();
    let rb = b.report(req.clone()).await.unwrap();
    assert_eq!(ra.instance.len(), 16);
    assert!(ra.instance.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(ra.instance, rb.instance, "each start has its own instance");
    assert_eq!(ra.instance, a.report(req).await.unwrap().instance);
    assert_eq!(ra.lease_ttl_ms, 10_000);
}

#[tokio::test]
async fn watch_streams_only_the_watched_users() {
    let (_bus, service, client, _reporter) = setup(CONFIG);
    let mut watch =
        service.watch(Request::new(pb::WatchRequest { users: vec!["alice".into()] })).await.unwrap().into_inner();
    let report = |connected: Vec<(&str, &str)>, disconnected: Vec<(&str, &str)>| {
        let session =
            |(user, conn): (&str, &str)| pb::Session { user: user.into(), conn: conn.into(), ..Default::default() };
        client.report(pb::ReportRequest {
            gateway: "gw2".into(),
            connected: connected.into_iter().map(session).collect(),
            disconnected: disconnected.into_iter().map(session).collect(),
            ..Default::default()
        })
    };
    report(vec![("bob", "c1")], vec![]).await.unwrap();
    report(vec![("alice", "c2"), ("carol", "c3")], vec![]).await.unwrap();
    report(vec![], vec![("alice", "c2"), ("bob", "c1")]).await.unwrap();

    let online = next_watched(&mut watch).await;
    assert_eq!((online.user.as_str(), online.online), ("alice", true));
    let offline = next_watched(&mut watch).await;
    assert_eq!((offline.user.as_str(), offline.online), ("alice", false));
}

#[tokio::test]
async fn lagging_watcher_skips_ahead_and_keeps_streaming() {
    let (_bus, service, client, _reporter) = setup(CONFIG);
    let mut watch =
        service.watch(Request::new(pb::WatchRequest { users: vec!["alice".into()] })).await.unwrap().into_inner();
    // Far more changes than a watcher may buffer, none of them read.
    let crowd = (0..10_000)
        .map(|i| pb::Session { user: format!("u{i}"), conn: format!("c{i}"), ..Default::default() })
        .collect();
    client.report(pb::ReportRequest { gateway: "gw2".into(), connected: crowd, ..Default::default() }).await.unwrap();
    client
        .report(pb::ReportRequest {
            gateway: "gw2".into(),
            connected: vec![pb::Session { user: "alice".into(), conn: "a".into(), ..Default::default() }],
            ..Default::default()
        })
        .await
        .unwrap();
    let change = next_watched(&mut watch).await;
    assert_eq!((change.user.as_str(), change.online), ("alice", true));
}

#[tokio::test]
async fn invalid_requests_are_rejected() {
    let (_bus, service, client, _reporter) = setup(CONFIG);
    let too_many: Vec<String> = (0..=presence::MAX_USERS_PER_REQUEST).map(|i| format!("u{i}")).collect();
    let at_limit = too_many[1..].to_vec();
    assert_eq!(client.query(at_limit).await.unwrap().len(), 100);
    let err = client.query(too_many.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client.query(vec!["a.b".into()]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    for users in [vec![], vec!["*".to_owned()], too_many] {
        let err = service.watch(Request::new(pb::WatchRequest { users })).await.err().expect("watch must be rejected");
        assert_eq!(err.code(), Code::InvalidArgument);
    }

    let err = client.report(pb::ReportRequest { gateway: "gw.1".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // One bad session does not cost the others.
    let session = |user: &str, conn: &str| pb::Session { user: user.into(), conn: conn.into(), ..Default::default() };
    client
        .report(pb::ReportRequest {
            gateway: "gw2".into(),
            snapshot: true,
            connected: vec![session("a>b", "c1"), session("bob", ""), session("alice", "c3")],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(is_online(&client, "alice").await);
    assert!(!is_online(&client, "bob").await);
}

#[tokio::test]
async fn dropping_the_service_stops_its_tasks() {
    let service = PresenceService::start(Bus::local("t", "test"), CONFIG);
    let weak = Arc::downgrade(&service);
    drop(service);
    // The sweeper only ever holds it for one sweep.
    wait_for("service freed", || async { weak.upgrade().is_none() }).await;
}

/// The memory inbox, each take held up by `delay`: a store slower than
/// the caller's patience.
struct SlowInbox {
    inner: presence::inbox::MemoryInbox,
    delay: Duration,
}

impl presence::InboxStore for SlowInbox {
    fn put(&self, msg: pb::QueuedDirect) -> bus::BoxFuture<'_, Result<(Vec<presence::inbox::Dropped>, bool), String>> {
        self.inner.put(msg)
    }

    fn take(&self, user: String) -> bus::BoxFuture<'_, Result<Vec<pb::QueuedDirect>, String>> {
        Box::pin(async move {
            let taken = self.inner.take(user).await;
            tokio::time::sleep(self.delay).await;
            taken
        })
    }

    fn sweep(&self) -> usize {
        self.inner.sweep()
    }
}

#[tokio::test]
async fn a_take_whose_caller_gave_up_returns_the_messages_to_the_inbox() {
    let inbox = Arc::new(SlowInbox {
        inner: presence::inbox::MemoryInbox::new(presence::InboxConfig::DEFAULT),
        delay: Duration::from_millis(300),
    });
    let service = PresenceService::start_with(Bus::local("t", "test"), CONFIG, None, inbox);
    let client = PresenceClient::local(service.clone());
    for n in 0..3u8 {
        let msg = pb::QueuedDirect { to: "bob".into(), from: "ann".into(), data: vec![n].into(), ts: 1 };
        client.enqueue(msg).await.unwrap();
    }
    // The caller's deadline passes while the store is taking.
    let gave_up = tokio::time::timeout(Duration::from_millis(50), client.take_inbox("bob")).await;
    assert!(gave_up.is_err(), "the take outlasted the caller");
    let mut back = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while back.len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for the messages back: {back:?}");
        back.extend(client.take_inbox("bob").await.unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let data: Vec<Vec<u8>> = back.iter().map(|m| m.data.to_vec()).collect();
    assert_eq!(data, [[0], [1], [2]], "each message back, once, in order");
}

#[tokio::test]
async fn a_connect_is_known_to_presence_when_reported_returns() {
    let bus = Bus::local("t", "test");
    let service = PresenceService::start(bus.clone(), CONFIG);
    let client = PresenceClient::local(service.clone());
    // Batches far apart: only the connect's own wake-up can report it.
    let slow = ReporterConfig { batch_interval: Duration::from_secs(60), lease_renewal: Duration::from_secs(60) };
    let reporter = Reporter::start_with_config(client.clone(), "gw1".into(), slow);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let connect = reporter.connected("alice", "c1");
    tokio::time::timeout(Duration::from_millis(900), reporter.reported(connect)).await.expect("reported at once");
    assert_eq!(client.locate("alice").await.unwrap(), ["gw1"]);
    assert!(client.locate("bob").await.unwrap().is_empty());
}

/// What presence tells `gw1` on its direct subject, within `wait`.
async fn notice(sub: &mut Subscription, wait: Duration) -> Option<proto::internal::DirectMessage> {
    let msg = tokio::time::timeout(wait, sub.next()).await.ok()??;
    Some(proto::internal::DirectMessage::decode(msg.payload).unwrap())
}

#[tokio::test]
async fn a_message_queued_around_a_connect_makes_the_gateway_take_the_inbox() {
    let (bus, _service, client, reporter) = setup(CONFIG);
    let mut direct = bus.subscribe(proto::subject::gateway_direct("gw1")).await.unwrap();
    let queued = |to: &str| pb::QueuedDirect { to: to.into(), from: "x".into(), data: b"1".to_vec().into(), ts: 1 };

    // Queued first, the session reported after: the report brings the notice.
    client.enqueue(queued("alice")).await.unwrap();
    assert!(notice(&mut direct, Duration::from_millis(200)).await.is_none(), "nobody to tell yet");
    let connect = reporter.connected("alice", "c1");
    reporter.reported(connect).await;
    let n = notice(&mut direct, DEADLINE).await.expect("a notice");
    assert_eq!((n.to.as_str(), n.notice), ("alice", true));

    // Session first, queued after: the enqueue brings it.
    let connect = reporter.connected("bob", "c2");
    reporter.reported(connect).await;
    assert!(notice(&mut direct, Duration::from_millis(200)).await.is_none(), "bob has nothing queued");
    client.enqueue(queued("bob")).await.unwrap();
    let n = notice(&mut direct, DEADLINE).await.expect("a notice");
    assert_eq!((n.to.as_str(), n.notice), ("bob", true));
}
