//! Secrets where they do not belong: working tokens in the output, weak
//! secrets, and server APIs reachable without a token.

use super::*;
use support::process::{binary, Proc};

/// Every string in `lines` that looks like a JWT (three base64url parts).
fn jwt_like(lines: &[String]) -> Vec<String> {
    let is_b64 = |s: &str| s.len() >= 8 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    lines
        .iter()
        .flat_map(|l| l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')))
        .filter(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() == 3 && parts.iter().all(|p| is_b64(p))
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_configured_secret_never_prints_a_token() {
    let gw = Gateway::start(&[]);
    assert!(jwt_like(&gw.stdout).is_empty(), "a token in the output: {:?}", gw.stdout);
    assert!(gw.stdout.iter().all(|l| !l.contains("token=")), "{:?}", gw.stdout);
    assert!(jwt_like(&[gw.proc.log_text()]).is_empty(), "a token in the log");
    // The page is still served, without a token in its link.
    assert_eq!(gw.proc.printed("demo").as_deref().map(|d| d.ends_with('/')), Some(true), "{:?}", gw.stdout);

    let cluster = Cluster::start(1, 1).await;
    let g = &cluster.gateways[0];
    assert!(jwt_like(&g.stdout).is_empty(), "cluster mode printed a token: {:?}", g.stdout);

    // A generated secret (standalone, no key) still prints a working one.
    let generated = Gateway::start_raw(&[], String::new());
    assert_eq!(jwt_like(&generated.stdout).len(), 2, "connect and demo lines: {:?}", generated.stdout);
}

/// Runs a binary that must refuse its flags; returns its stderr.
fn refused(name: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(binary(name)).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{name} {args:?} started: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn hs256_secrets_shorter_than_32_bytes_are_refused() {
    for secret in ["a", "short-secret", &"x".repeat(31)] {
        let err = refused("gateway", &["--standalone", "--jwt-secret", secret, "--listen", "127.0.0.1:0"]);
        assert!(err.contains("--jwt-secret") && err.contains("32"), "{err}");
        assert!(!err.contains(secret) || secret.len() < 4, "the secret is echoed: {err}");
    }
}

#[test]
fn server_apis_on_a_non_loopback_address_need_a_token() {
    let any = "0.0.0.0:0";
    let secret = "a-secret-of-at-least-thirty-two-bytes";
    let err = refused("gateway", &["--standalone", "--jwt-secret", secret, "--grpc-listen", any]);
    assert!(err.contains("--grpc-listen") && err.contains("--api-token"), "{err}");
    let open = ["--standalone", "--jwt-secret", secret, "--grpc-listen", "127.0.0.1:0", "--api-listen", any];
    let err = refused("gateway", &open);
    assert!(err.contains("--api-listen") && err.contains("--api-token"), "{err}");
    let err = refused("router", &["--nats-url", "nats://127.0.0.1:1", "--api-listen", any]);
    assert!(err.contains("--api-listen") && err.contains("--api-token"), "{err}");
    let err = refused("router", &["--nats-url", "nats://127.0.0.1:1", "--grpc-listen", any]);
    assert!(err.contains("--grpc-listen") && err.contains("--api-token"), "{err}");
    let err = refused("presence", &["--nats-url", "nats://127.0.0.1:1", "--listen", any]);
    assert!(err.contains("--listen") && err.contains("--api-token"), "{err}");
}

#[test]
fn api_insecure_starts_with_a_warning_every_time() {
    let secret = "a-secret-of-at-least-thirty-two-bytes";
    let args: Vec<String> = [
        "--standalone",
        "--jwt-secret",
        secret,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "0.0.0.0:0",
        "--api-listen",
        "0.0.0.0:0",
        "--api-insecure",
    ]
    .map(str::to_owned)
    .into();
    let gw = Proc::start("gateway", &binary("gateway"), &args, Some("admin"));
    let log = gw.log_text();
    assert!(log.contains("--api-insecure") && log.to_lowercase().contains("without a token"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_checks_its_api_token_and_gateways_present_it() {
    // The cluster runs presence with --api-token; its gateways reach it
    // with --presence-token defaulting to their --api-token.
    let cluster = Cluster::start(1, 2).await;
    let addr = format!("127.0.0.1:{}", cluster.presence_port);
    let mut open = presence::rpc::presence_client::PresenceClient::new(channel(&addr).await);
    let call = pb::QueryRequest { users: vec!["alice".into()] };
    let status = open.query(call).await.expect_err("presence answered without a token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // Presence works for the gateways: a user connected to one is online
    // for a client of the other.
    let _alice = cluster.gateways[0].json("alice").await;
    let mut bob = cluster.gateways[1].json("bob").await;
    let deadline = Instant::now() + T;
    loop {
        let r = bob.request(json!({"op": "presence", "users": ["alice"]})).await.unwrap();
        if r["users"][0]["online"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
