//! The reporter and client over real gRPC on loopback: healing after a
//! presence restart or failed reports, and the server's message size limit.
//!
//! A test server holds a swappable [`PresenceService`], so "restarting
//! presence" is swapping in a fresh one behind the same address.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::Bus;
use presence::rpc::presence_server::{Presence, PresenceServer};
use presence::{Dial, PresenceClient, PresenceService, Reporter, ReporterConfig, StoreConfig};
use proto::pb;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// Upper bound on any single wait.
const DEADLINE: Duration = Duration::from_secs(5);

const CONFIG: StoreConfig = StoreConfig {
    lease_ttl: Duration::from_secs(10),
    offline_grace: Duration::from_millis(200),
    inbox: presence::InboxConfig::DEFAULT,
};

const FAST: ReporterConfig =
    ReporterConfig { batch_interval: Duration::from_millis(20), lease_renewal: Duration::from_millis(100) };

/// A presence server whose service can be replaced or made to fail.
struct Swappable {
    /// Where calls go.
    current: Mutex<Arc<PresenceService>>,
    /// Fail every report without applying it, as a lost request would.
    fail: AtomicBool,
}

impl Swappable {
    fn current(&self) -> Arc<PresenceService> {
        self.current.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl Presence for Swappable {
    async fn report(&self, request: Request<pb::ReportRequest>) -> Result<Response<pb::ReportReply>, Status> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Status::unavailable("injected failure"));
        }
        self.current().report(request).await
    }

    async fn query(&self, request: Request<pb::QueryRequest>) -> Result<Response<pb::QueryReply>, Status> {
        self.current().query(request).await
    }

    type WatchStream = presence::WatchStream;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        self.current().watch(request).await
    }

    async fn enqueue(&self, request: Request<pb::QueuedDirect>) -> Result<Response<pb::EnqueueReply>, Status> {
        self.current().enqueue(request).await
    }

    async fn take_inbox(&self, request: Request<pb::TakeInboxRequest>) -> Result<Response<pb::TakeInboxReply>, Status> {
        self.current().take_inbox(request).await
    }

    async fn locate(&self, request: Request<pb::LocateRequest>) -> Result<Response<pb::LocateReply>, Status> {
        self.current().locate(request).await
    }
}

/// Serves `router` on a loopback port for the rest of the test.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    addr
}

/// A swappable server with a fresh service, and a reporter for `gw1` on it.
async fn setup() -> (Arc<Swappable>, Arc<Reporter>) {
    let swappable = Arc::new(Swappable {
        current: Mutex::new(PresenceService::start(Bus::local("t", "test"), CONFIG)),
        fail: AtomicBool::new(false),
    });
    let addr = serve(Server::builder().add_service(PresenceServer::from_arc(swappable.clone()))).await;
    let client = PresenceClient::connect_lazy(&format!("http://{addr}"), &Dial::default()).unwrap();
    let reporter = Reporter::start_with_config(client, "gw1".into(), FAST);
    (swappable, reporter)
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

/// Who among `users` `service` shows online.
async fn online(service: &Arc<PresenceService>, users: &[&str]) -> Vec<String> {
    let users = users.iter().map(|u| u.to_string()).collect();
    let reply = service.query(Request::new(pb::QueryRequest { users })).await.unwrap().into_inner();
    reply.users.into_iter().filter(|p| p.online).map(|p| p.user).collect()
}

#[tokio::test]
async fn reporter_resends_all_sessions_after_presence_restart() {
    let (swappable, reporter) = setup().await;
    reporter.connected("alice", "c1");
    reporter.connected("bob", "c2");
    let first = swappable.current();
    wait_for("both online", || async { online(&first, &["alice", "bob"]).await.len() == 2 }).await;
    assert!(reporter.reachable());

    // Presence restarts with empty state and a new instance id.
    let second = PresenceService::start(Bus::local("t", "test"), CONFIG);
    assert_ne!(first.instance(), second.instance());
    *swappable.current.lock().unwrap() = second.clone();
    wait_for("state restored by snapshot", || async { online(&second, &["alice", "bob"]).await.len() == 2 }).await;

    // Deltas work as before on the new instance.
    reporter.disconnected("bob", "c2");
    wait_for("bob offline", || async { online(&second, &["alice", "bob"]).await == ["alice"] }).await;
}

#[tokio::test]
async fn reporter_heals_after_failed_reports() {
    let (swappable, reporter) = setup().await;
    let service = swappable.current();
    reporter.connected("alice", "c1");
    wait_for("alice online", || async { online(&service, &["alice"]).await.len() == 1 }).await;

    // These deltas travel in a report that fails without being applied.
    swappable.fail.store(true, Ordering::SeqCst);
    reporter.disconnected("alice", "c1");
    reporter.connected("bob", "c2");
    wait_for("a failed report", || async { !reporter.reachable() }).await;
    swappable.fail.store(false, Ordering::SeqCst);

    wait_for("reachable again", || async { reporter.reachable() }).await;
    wait_for("snapshot applied", || async { online(&service, &["alice", "bob"]).await == ["bob"] }).await;
}

#[tokio::test]
async fn grpc_client_answers_like_the_local_one() {
    let (swappable, reporter) = setup().await;
    let auth = shell::grpc::BearerAuth::new("presence-token");
    let addr = serve(Server::builder().add_service(swappable.current().into_server(auth))).await;
    let grpc = PresenceClient::connect_lazy(&format!("http://{addr}"), &Dial::token("presence-token")).unwrap();
    let wrong = PresenceClient::connect_lazy(&format!("http://{addr}"), &Dial::token("wrong")).unwrap();
    assert_eq!(wrong.query(vec!["alice".into()]).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    let local = PresenceClient::local(swappable.current());
    reporter.connected("alice", "c1");
    wait_for("alice online", || async { online(&swappable.current(), &["alice"]).await.len() == 1 }).await;
    let users = vec!["alice".to_owned(), "bob".to_owned()];
    let over_grpc = grpc.query(users.clone()).await.unwrap();
    let in_process = local.query(users).await.unwrap();
    let summary =
        |v: &[pb::UserPresence]| -> Vec<(String, bool)> { v.iter().map(|p| (p.user.clone(), p.online)).collect() };
    assert_eq!(summary(&over_grpc), summary(&in_process));
    assert_eq!(summary(&over_grpc), [("alice".to_owned(), true), ("bob".to_owned(), false)]);
    let err = grpc.query(vec!["no.dots".into()]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn server_accepts_snapshots_beyond_the_default_limit() {
    let service = PresenceService::start(Bus::local("t", "test"), CONFIG);
    let addr =
        serve(Server::builder().add_service(service.clone().into_server(shell::grpc::BearerAuth::new("")))).await;
    let connected = (0..70_000)
        .map(|i| pb::Session { user: "alice".into(), conn: format!("{i:0>60}"), ..Default::default() })
        .collect();
    let req = pb::ReportRequest { gateway: "gw1".into(), snapshot: true, connected, ..Default::default() };
    assert!(prost::Message::encoded_len(&req) > 4 << 20, "beyond tonic's default");
    // A client without the 2 s call timeout: this test is about size, and a
    // debug build on a busy machine may take a while to encode it.
    let mut client = presence::rpc::presence_client::PresenceClient::connect(format!("http://{addr}")).await.unwrap();
    client.report(req).await.unwrap();
    assert_eq!(online(&service, &["alice"]).await, ["alice"]);
}
