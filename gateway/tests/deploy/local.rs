//! `deploy/local/cluster.sh` for real: NATS with TLS and a user per kind,
//! two presence replicas, two routers, two gateways; a message crosses the
//! gateways, nothing is denied, and Ctrl-C stops everything.

use std::net::TcpStream;

use loadtest::token::{mint, SigningKey, TokenSpec};

use super::*;

/// The script's default secret (a loopback-only cluster).
const SECRET: &str = "local-cluster-secret-for-loopback-only";

/// Stops the script (and so its processes) even when the test fails.
struct Script(Proc);

impl Drop for Script {
    fn drop(&mut self) {
        if !self.0.exited() {
            self.0.signal("INT");
            let deadline = Instant::now() + Duration::from_secs(20);
            while !self.0.exited() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

async fn greeted(url: &str, user: &str) -> Client {
    let token = mint(&SigningKey::hs256(SECRET.as_bytes().to_vec()), &TokenSpec::new(user, 600));
    let mut c = Client::connect(loadtest::client::ConnectOptions::new(format!("{url}?token={token}"))).await.unwrap();
    assert_eq!(c.next_json(T).await.unwrap()["type"], "hello");
    c
}

#[tokio::test]
async fn the_local_cluster_runs_on_nats_with_tls_and_service_users() {
    let logs = TempDir::new("local-cluster");
    let nats_port = support::cluster::free_port().to_string();
    let bin = binary("gateway").parent().unwrap().to_string_lossy().into_owned();
    let nats_dir = nats_server().parent().unwrap().to_string_lossy().into_owned();
    let search = format!("{nats_dir}:{}", std::env::var("PATH").unwrap_or_default());
    let logs_dir = logs.path.to_string_lossy().into_owned();
    let env = [("BIN", bin.as_str()), ("LOGS", &logs_dir), ("NATS_PORT", &nats_port), ("PATH", &search)];
    let script = path("deploy/local/cluster.sh");
    let mut script = Script(Proc::start_with_env("cluster.sh", &script, &[], &env, None));
    script.0.wait_line("Press Ctrl-C", Duration::from_secs(60));

    // NATS asks for TLS and credentials of anyone who connects.
    let mut info = String::new();
    let mut nats = TcpStream::connect(("127.0.0.1", nats_port.parse::<u16>().unwrap())).unwrap();
    nats.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = nats.read(&mut buf).unwrap();
    info.push_str(&String::from_utf8_lossy(&buf[..n]));
    assert!(info.contains("\"tls_required\":true") && info.contains("\"auth_required\":true"), "{info}");

    // A message crosses from one gateway to the other.
    let mut alice = greeted("ws://127.0.0.1:8081/ws", "alice").await;
    let mut bob = greeted("ws://127.0.0.1:8082/ws", "bob").await;
    join(&mut alice, "local").await;
    join(&mut bob, "local").await;
    publish(&mut bob, "local", json!("across gateways")).await;
    let got = alice.next_of_type("message", T).await.unwrap();
    assert_eq!(got["data"], "across gateways", "{got}");

    for (kind, admin) in [("gateway", 9191), ("gateway", 9192), ("router", 9291), ("presence", 9092)] {
        let m = http_get(&format!("http://127.0.0.1:{admin}/metrics")).await.1;
        let denied = metric(&m, &format!("switchboard_{kind}_nats_permission_denied_total"));
        assert_eq!(denied, 0.0, "{kind} on :{admin} was denied on NATS");
    }
    drop((alice, bob));

    // Ctrl-C stops every process it started.
    script.0.signal("INT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !script.0.exited() {
        assert!(Instant::now() < deadline, "cluster.sh did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    for port in [8081, 8082, 9191, 9291, 9092, nats_port.parse().unwrap()] {
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "something still listens on {port}");
    }
}
