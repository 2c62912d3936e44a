//! A real cluster on loopback: nats-server, presence, routers, gateways.

use std::time::{Duration, Instant};

use proto::pb;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::process::{binary, nats_server, Proc};
use super::{http_get, Gateway};

pub const API_TOKEN: &str = "test-api-token";

/// A port nobody listens on right now. Racy (another process may take it
/// before the caller binds it): only for programs that cannot bind port 0
/// and say which port they got; [`retry_on_port`] makes up for the race.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// nats-server on a fixed loopback port, so it can be restarted in place.
pub struct Nats {
    proc: Option<Proc>,
    pub port: u16,
    pub url: String,
    /// JetStream's store directory (`-js -sd`), kept across restarts and
    /// removed on drop.
    store: Option<std::path::PathBuf>,
    /// A configuration file (`-c`) and its directory, removed on drop.
    conf: Option<std::path::PathBuf>,
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill9();
        if let Some(dir) = &self.store {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(dir) = self.conf.as_ref().and_then(|c| c.parent()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Nats {
    /// Starts nats-server on a port of its own choosing.
    pub fn start() -> Self {
        Self::start_in(None)
    }

    /// Starts nats-server with JetStream, its store in a fresh directory
    /// under the system's temp dir.
    pub fn start_js() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sb-jetstream-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_in(Some(dir))
    }

    /// Starts nats-server with the configuration `conf`, written to a fresh
    /// directory together with `files` (name, text) it may include.
    pub fn start_conf(conf: &str, files: &[(&str, &str)]) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sb-nats-conf-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        std::fs::write(dir.join("nats.conf"), conf).unwrap();
        Self::launch(None, Some(dir.join("nats.conf")))
    }

    fn start_in(store: Option<std::path::PathBuf>) -> Self {
        Self::launch(store, None)
    }

    fn launch(store: Option<std::path::PathBuf>, conf: Option<std::path::PathBuf>) -> Self {
        let proc = Proc::start("nats", &nats_server(), &Self::args(-1, store.as_deref(), conf.as_deref()), None);
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            // "[INF] Listening for client connections on 127.0.0.1:PORT"
            let log = proc.log_text();
            let found = log
                .lines()
                .find_map(|l| l.split("client connections on ").nth(1)?.rsplit(':').next()?.trim().parse().ok());
            if let Some(port) = found {
                break port;
            }
            assert!(Instant::now() < deadline, "nats-server never said its port: {log}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let n = Self { proc: Some(proc), port, url: format!("nats://127.0.0.1:{port}"), store, conf };
        n.wait_accepting();
        n
    }

    fn args(port: i32, store: Option<&std::path::Path>, conf: Option<&std::path::Path>) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        if let Some(conf) = conf {
            args.extend(["-c".to_owned(), conf.display().to_string()]);
        }
        args.extend(["-a", "127.0.0.1", "-p", &port.to_string()].map(str::to_owned));
        if let Some(dir) = store {
            args.extend(["-js".to_owned(), "-sd".to_owned(), dir.display().to_string()]);
        }
        args
    }

    /// Starts the server again in place, on its port.
    pub fn restart(&mut self) {
        let args = Self::args(self.port as i32, self.store.as_deref(), self.conf.as_deref());
        self.proc = Some(Proc::start("nats", &nats_server(), &args, None));
        self.wait_accepting();
    }

    /// Waits until the server accepts connections.
    fn wait_accepting(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }
}

/// A router process and its addresses.
pub struct Router {
    pub id: String,
    pub proc: Proc,
    pub grpc: String,
    pub admin: String,
    /// `http://127.0.0.1:PORT/api/` of the HTTP server API.
    pub api: String,
}

pub type RoomsClient = router::rpc::rooms_client::RoomsClient<InterceptedService<Channel, Bearer>>;
pub type AdminClient = gateway::rpc::gateway_admin_client::GatewayAdminClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer …` to every call.
#[derive(Clone)]
pub struct Bearer(pub String);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.0.is_empty() {
            req.metadata_mut().insert("authorization", format!("Bearer {}", self.0).parse().unwrap());
        }
        Ok(req)
    }
}

pub async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

/// The whole cluster; every process is killed on drop.
pub struct Cluster {
    pub nats: Nats,
    pub presence: Option<Proc>,
    pub presence_port: u16,
    pub routers: Vec<Router>,
    pub gateways: Vec<Gateway>,
    pub secret: String,
    next_router: usize,
    /// Each gateway's arguments, to restart it in place.
    gateway_args: Vec<Vec<String>>,
    /// Flags every router and gateway gets (`--config`, say).
    common: Vec<String>,
    /// Flags presence gets besides its own.
    presence_extra: Vec<String>,
    /// Flags routers get besides `common`.
    router_extra: Vec<String>,
    /// Flags gateways get besides `common`.
    gateway_extra: Vec<String>,
    /// Presence replicas after the first (`presence-2`, …), when replicated.
    pub replicas: Vec<Proc>,
    /// Presence runs as replicas (`--advertise`); the first is the first contact.
    replicated: bool,
}

impl Cluster {
    /// Starts NATS, presence, `routers` routers and `gateways` gateways, and
    /// waits until every gateway is ready and every router sees the full ring.
    pub async fn start(routers: usize, gateways: usize) -> Self {
        Self::start_with(routers, gateways, &[]).await
    }

    /// [`Cluster::start`] with `common` flags for every router and gateway.
    pub async fn start_with(routers: usize, gateways: usize, common: &[&str]) -> Self {
        Self::start_full(routers, gateways, common, &[]).await
    }

    /// [`Cluster::start_with`], and `presence` flags for presence.
    pub async fn start_full(routers: usize, gateways: usize, common: &[&str], presence: &[&str]) -> Self {
        let mut c = Self::without_gateways_with(routers, common, presence);
        for i in 1..=gateways {
            c.start_gateway(&format!("gw-{i}"));
        }
        c.wait_ring(routers).await;
        c.wait_gateways_ready().await;
        c
    }

    /// A cluster on `nats` (a secured one, say) where each kind gets its own
    /// flags (its NATS credentials): `kinds` is (gateway, router, presence).
    pub async fn start_on(nats: Nats, routers: usize, gateways: usize, kinds: [Vec<String>; 3]) -> Self {
        let [gateway, router, presence] = kinds;
        let mut c = Self::bare(nats, &[], &[]);
        c.presence_extra = presence;
        c.router_extra = router;
        c.gateway_extra = gateway;
        c.start_services(routers);
        for i in 1..=gateways {
            c.start_gateway(&format!("gw-{i}"));
        }
        c.wait_ring(routers).await;
        c.wait_gateways_ready().await;
        c
    }

    /// Starts NATS, presence and `routers` routers; the caller adds gateways
    /// and waits for them.
    pub fn without_gateways(routers: usize) -> Self {
        Self::without_gateways_with(routers, &[], &[])
    }

    /// [`Cluster::start`] with routers keeping rooms in JetStream
    /// (`--history-store jetstream`) and presence its inbox
    /// (`--inbox-store jetstream`), on a nats-server with `-js`.
    pub async fn start_durable(routers: usize, gateways: usize) -> Self {
        let mut c = Self::bare(Nats::start_js(), &[], &["--inbox-store", "jetstream"]);
        c.router_extra = ["--history-store", "jetstream"].map(str::to_owned).into();
        c.start_services(routers);
        for i in 1..=gateways {
            c.start_gateway(&format!("gw-{i}"));
        }
        c.wait_ring(routers).await;
        c.wait_gateways_ready().await;
        c
    }

    fn without_gateways_with(routers: usize, common: &[&str], presence: &[&str]) -> Self {
        let mut c = Self::bare(Nats::start(), common, presence);
        c.start_services(routers);
        c
    }

    fn start_services(&mut self, routers: usize) {
        self.start_presence();
        for _ in 0..routers {
            self.start_router();
        }
    }

    fn bare(nats: Nats, common: &[&str], presence: &[&str]) -> Self {
        Self {
            nats,
            presence: None,
            presence_port: 0,
            routers: Vec::new(),
            gateways: Vec::new(),
            secret: format!("cluster-secret-of-32-bytes-or-more-{}", std::process::id()),
            next_router: 1,
            gateway_args: Vec::new(),
            common: common.iter().map(|s| s.to_string()).collect(),
            presence_extra: presence.iter().map(|s| s.to_string()).collect(),
            router_extra: Vec::new(),
            gateway_extra: Vec::new(),
            replicas: Vec::new(),
            replicated: false,
        }
    }

    /// [`Cluster::start`] with `replicas` presence replicas (`--advertise`);
    /// waits until every gateway hears all of them.
    pub async fn start_replicated(routers: usize, gateways: usize, replicas: usize) -> Self {
        let mut c = Self::bare(Nats::start(), &[], &[]);
        c.replicated = true;
        c.start_services(routers);
        for _ in 1..replicas {
            c.start_replica();
        }
        for i in 1..=gateways {
            c.start_gateway(&format!("gw-{i}"));
        }
        c.wait_ring(routers).await;
        c.wait_gateways_ready().await;
        c.wait_presence_ring(replicas).await;
        c
    }

    /// Starts the next presence replica (`presence-2`, …); returns its index
    /// in `replicas`.
    pub fn start_replica(&mut self) -> usize {
        let id = format!("presence-{}", self.replicas.len() + 2);
        let (proc, _) = self.presence_proc(&id, 0);
        self.replicas.push(proc);
        self.replicas.len() - 1
    }

    /// Waits until every gateway's presence ring has `n` replicas.
    pub async fn wait_presence_ring(&self, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for g in &self.gateways {
            while super::metric(&g.metrics().await, "switchboard_gateway_presence_ring_size") != n as f64 {
                assert!(std::time::Instant::now() < deadline, "{} never heard {n} presence replicas", g.ws);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Starts presence: on a port of its choosing the first time, in place after.
    pub fn start_presence(&mut self) {
        let (proc, port) = self.presence_proc("presence-1", self.presence_port);
        self.presence_port = port;
        self.presence = Some(proc);
    }

    /// Starts presence `id` on `port` (0: any); a replica advertises it.
    fn presence_proc(&self, id: &str, port: u16) -> (Proc, u16) {
        let start = |port: u16| {
            let mut args: Vec<String> = [
                "--nats-url",
                &self.nats.url,
                "--id",
                id,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-listen",
                "127.0.0.1:0",
                "--api-token",
                API_TOKEN,
            ]
            .map(str::to_owned)
            .into();
            if self.replicated {
                args.extend(["--advertise".to_owned(), format!("127.0.0.1:{port}")]);
            }
            args.extend(self.presence_extra.iter().cloned());
            Proc::start(id, &binary("presence"), &args, Some("admin"))
        };
        if !self.replicated {
            let proc = start(port);
            let grpc = proc.printed("grpc").expect("a grpc line");
            let port = grpc.rsplit(':').next().unwrap().parse().unwrap();
            return (proc, port);
        }
        // A replica advertises its port, so it picks one first.
        match port {
            0 => retry_on_port(start, |_| true),
            port => (start(port), port),
        }
    }

    /// Starts the next router (`r-1`, `r-2`, …); returns its index.
    pub fn start_router(&mut self) -> usize {
        let id = format!("r-{}", self.next_router);
        self.next_router += 1;
        let router = self.router_proc(id);
        self.routers.push(router);
        self.routers.len() - 1
    }

    /// Kills router `i` (if it still runs) and starts it again with the same id.
    pub fn restart_router(&mut self, i: usize) {
        self.routers[i].proc.kill9();
        self.routers[i] = self.router_proc(self.routers[i].id.clone());
    }

    fn router_proc(&self, id: String) -> Router {
        let args: Vec<String> = [
            "--nats-url",
            &self.nats.url,
            "--id",
            &id,
            "--admin-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--presence-url",
            &format!("http://127.0.0.1:{}", self.presence_port),
            "--api-token",
            API_TOKEN,
        ]
        .map(str::to_owned)
        .into();
        let args: Vec<String> =
            args.into_iter().chain(self.common.iter().cloned()).chain(self.router_extra.iter().cloned()).collect();
        let proc = Proc::start(&id, &binary("router"), &args, Some("admin"));
        let grpc = proc.printed("grpc").expect("grpc line");
        let admin = proc.printed("admin").expect("admin line").trim_end_matches("/metrics").to_owned();
        let api = proc.printed("api").expect("api line");
        Router { id, proc, grpc, admin, api }
    }

    pub fn start_gateway(&mut self, id: &str) {
        let nats = self.nats.url.clone();
        self.start_gateway_with(id, &nats, &[]);
    }

    /// Starts a gateway that reaches NATS at `nats_url` (a proxy, say), with
    /// `extra` flags; a restart keeps its WebSocket port.
    pub fn start_gateway_with(&mut self, id: &str, nats_url: &str, extra: &[&str]) {
        let mut args = self.gateway_args(id, nats_url);
        args.extend(self.common.iter().cloned());
        args.extend(self.gateway_extra.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::start(id, &binary("gateway"), &args, Some("admin"));
        let gateway = Gateway::from_proc(proc, self.secret.clone());
        // A restart in place takes the port it got.
        let listen = args.iter().position(|a| a == "--listen").unwrap() + 1;
        args[listen] = gateway.ws.trim_start_matches("ws://").trim_end_matches("/ws").to_owned();
        self.gateways.push(gateway);
        self.gateway_args.push(args);
    }

    /// Kills gateway `i` (if it still runs) and starts it again with the same
    /// id and WebSocket port.
    pub fn restart_gateway(&mut self, i: usize) {
        self.gateways[i].proc.kill9();
        let id = self.gateways[i].proc.name.clone();
        let proc = Proc::start(&id, &binary("gateway"), &self.gateway_args[i], Some("admin"));
        self.gateways[i] = Gateway::from_proc(proc, self.secret.clone());
    }

    /// A gateway's flags before `common` and its own: this cluster's NATS
    /// (at `nats_url`), presence, secret and API token, free ports.
    pub fn gateway_args(&self, id: &str, nats_url: &str) -> Vec<String> {
        [
            "--nats-url",
            nats_url,
            "--presence-url",
            &format!("http://127.0.0.1:{}", self.presence_port),
            "--id",
            id,
            "--jwt-secret",
            &self.secret,
            "--api-token",
            API_TOKEN,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--drain-window",
            "1s",
        ]
        .map(str::to_owned)
        .into()
    }

    /// The gateways' WebSocket URLs.
    pub fn urls(&self) -> Vec<String> {
        self.gateways.iter().map(|g| g.ws.clone()).collect()
    }

    /// A gRPC channel to `addr`, over TLS when the cluster runs with `--tls-ca`.
    async fn grpc_channel(&self, addr: &str) -> Channel {
        let Some(i) = self.common.iter().position(|a| a == "--tls-ca") else { return channel(addr).await };
        let ca = std::fs::read(&self.common[i + 1]).unwrap();
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca));
        Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap().connect().await.unwrap()
    }

    pub async fn rooms_api(&self, router: usize) -> RoomsClient {
        router::rpc::rooms_client::RoomsClient::with_interceptor(
            self.grpc_channel(&self.routers[router].grpc).await,
            Bearer(API_TOKEN.into()),
        )
    }

    pub async fn admin_api(&self, gateway: usize) -> AdminClient {
        gateway::rpc::gateway_admin_client::GatewayAdminClient::with_interceptor(
            self.grpc_channel(&self.gateways[gateway].grpc).await,
            Bearer(API_TOKEN.into()),
        )
    }

    /// Waits until every live router reports a ring of `n` routers.
    pub async fn wait_ring(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        'outer: loop {
            assert!(Instant::now() < deadline, "routers never agreed on a ring of {n}");
            for i in 0..self.routers.len() {
                let Ok(mut api) = tokio::time::timeout(Duration::from_secs(1), self.rooms_api(i)).await else {
                    continue 'outer;
                };
                match api.stats(pb::StatsCall {}).await {
                    Ok(s) if s.get_ref().ring_size as usize == n => {}
                    _ => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue 'outer;
                    }
                }
            }
            return;
        }
    }

    pub async fn wait_gateways_ready(&self) {
        for g in &self.gateways {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let (status, body) = http_get(&format!("{}/readyz", g.admin)).await;
                if status == 200 {
                    break;
                }
                assert!(Instant::now() < deadline, "gateway never ready: {body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Which router owns each of `rooms`, asked of the routers themselves.
    pub async fn room_counts(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for i in 0..self.routers.len() {
            let mut api = self.rooms_api(i).await;
            out.push(api.stats(pb::StatsCall {}).await.map(|s| s.get_ref().rooms).unwrap_or(0));
        }
        out
    }
}

/// Starts a program that cannot listen on port 0 (`start` gets the port),
/// up to three times: a port found free may have been taken meanwhile.
/// `ready` says whether it is serving on that port.
pub fn retry_on_port(mut start: impl FnMut(u16) -> Proc, ready: impl Fn(u16) -> bool) -> (Proc, u16) {
    for _ in 0..3 {
        let port = free_port();
        let mut proc = start(port);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && !proc.exited() {
            // Ready, and not because another program holds the port while
            // this one failed to bind it and is exiting.
            if ready(port) {
                std::thread::sleep(Duration::from_millis(100));
                if !proc.exited() {
                    return (proc, port);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        proc.kill9();
    }
    panic!("could not start on a free port three times");
}
