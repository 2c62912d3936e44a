//! The process around the protocol: start-up, flags, metrics, SIGTERM.

mod support;

use std::process::Command;
use std::time::Duration;

use loadtest::client::Client;
use serde_json::json;
use support::*;

#[tokio::test]
async fn standalone_without_a_key_prints_a_working_connect_url() {
    let gw = Gateway::start_raw(&[], String::new());
    let line = gw.stdout.iter().find(|l| l.trim_start().starts_with("connect")).expect("a connect line");
    let url = line.split_whitespace().nth(1).unwrap();
    assert!(url.starts_with("ws://127.0.0.1:") && url.contains("/ws?token="), "{line}");
    let mut c = Client::connect(loadtest::client::ConnectOptions::new(url)).await.unwrap();
    let hello = c.next_json(T).await.unwrap();
    assert_eq!((hello["type"].as_str(), hello["user"].as_str()), (Some("hello"), Some("demo")), "{hello}");
    assert_eq!(hello["heartbeat_ms"], 25000);
    assert!(hello["conn"].as_str().is_some_and(|c| !c.is_empty()));
    join(&mut c, "lobby").await;
}

#[test]
fn help_lists_every_flag_with_its_env_var_and_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env, default) in [
        ("--standalone", "SB_STANDALONE", None),
        ("--listen", "SB_LISTEN", Some("127.0.0.1:8080")),
        ("--admin-listen", "SB_ADMIN_LISTEN", Some("127.0.0.1:9090")),
        ("--grpc-listen", "SB_GRPC_LISTEN", Some("127.0.0.1:7071")),
        ("--id", "SB_ID", None),
        ("--nats-url", "SB_NATS_URL", None),
        ("--presence-url", "SB_PRESENCE_URL", None),
        ("--jwt-secret", "SB_JWT_SECRET", None),
        ("--jwt-public-key", "SB_JWT_PUBLIC_KEY", None),
        ("--default-rooms", "SB_DEFAULT_ROOMS", Some("*")),
        ("--allowed-origins", "SB_ALLOWED_ORIGINS", None),
        ("--api-token", "SB_API_TOKEN", None),
        ("--max-message-bytes", "SB_MAX_MESSAGE_BYTES", Some("65536")),
        ("--rate-per-sec", "SB_RATE_PER_SEC", Some("50")),
        ("--rate-burst", "SB_RATE_BURST", Some("100")),
        ("--max-rooms-per-conn", "SB_MAX_ROOMS_PER_CONN", Some("128")),
        ("--queue-bytes", "SB_QUEUE_BYTES", Some("1048576")),
        ("--heartbeat", "SB_HEARTBEAT", Some("25s")),
        ("--pong-timeout", "SB_PONG_TIMEOUT", Some("10s")),
        ("--auth-timeout", "SB_AUTH_TIMEOUT", Some("5s")),
        ("--header-timeout", "SB_HEADER_TIMEOUT", Some("5s")),
        ("--conformance-echo", "SB_CONFORMANCE_ECHO", None),
    ] {
        let lines: Vec<&str> = help.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.trim_start().split([' ', '<']).next() == Some(flag))
            .unwrap_or_else(|| panic!("{flag} missing from --help:\n{help}"));
        let block = format!("{} {}", lines[at], lines.get(at + 1).unwrap_or(&""));
        assert!(block.contains(&format!("env: {env}")), "{flag} does not name {env}: {block}");
        if let Some(d) = default {
            assert!(block.contains(&format!("default: {d}")), "{flag} does not show default {d}: {block}");
        }
    }
}

#[test]
fn a_bad_flag_value_exits_non_zero_with_one_line_naming_the_flag() {
    for (args, flag) in [
        (vec!["--listen", "not-an-address"], "--listen"),
        (vec!["--heartbeat", "soon"], "--heartbeat"),
        (vec!["--id", "bad.id"], "--id"),
        (vec!["--max-rooms-per-conn", "many"], "--max-rooms-per-conn"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_gateway")).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].contains(flag), "{args:?}: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--standalone", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--jwt-public-key", "/nonexistent/key.pem"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.lines().count() == 1 && err.contains("--jwt-public-key"), "{err}");
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let gw = Gateway::start(&[]);
    assert_eq!(http_get(&format!("{}/healthz", gw.admin)).await.0, 200);
    // Ready once the embedded router is in the ring and presence answered.
    let deadline = std::time::Instant::now() + T;
    loop {
        let (status, body) = http_get(&format!("{}/readyz", gw.admin)).await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut a = gw.json("alice").await;
    let mut b = gw.proto("bob").await;
    join(&mut a, "m").await;
    publish(&mut a, "m", json!("hi")).await;
    drop(b.recv(Duration::from_millis(50)).await);
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "switchboard_gateway_connections"), 2.0, "{m}");
    assert!(metric(&m, "switchboard_gateway_frames_in_total{op=\"publish\"}") >= 1.0, "{m}");
    assert!(metric(&m, "switchboard_gateway_messages_delivered_total") >= 1.0, "{m}");
    assert!(metric(&m, "switchboard_gateway_connections_accepted_total") >= 2.0, "{m}");
    assert!(m.contains("switchboard_gateway_op_duration_seconds_bucket{op=\"publish\",le=\"0.001\"}"), "{m}");
    assert!(metric(&m, "switchboard_router_publishes_total") >= 1.0, "{m}");
    // The freed-heap trimmer runs (its counter starts at 0).
    assert!(m.contains("\nswitchboard_heap_returned_bytes_total "), "{m}");
    drop(a);
    drop(b);
    let deadline = std::time::Instant::now() + T;
    loop {
        let m = gw.metrics().await;
        // The gauge drops at cleanup; the disconnect is counted once the
        // socket is finished with, a moment later.
        if metric(&m, "switchboard_gateway_connections") == 0.0
            && metric(&m, "switchboard_gateway_disconnects_total") >= 2.0
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let mut gw = Gateway::start(&["--drain-window", "500ms"]);
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut c = gw.json(&format!("u{i}")).await;
        join(&mut c, "r").await;
        clients.push(c);
    }
    let waiters: Vec<_> = clients.into_iter().map(|mut c| tokio::spawn(async move { c.wait_close(T).await })).collect();
    let status = tokio::task::spawn_blocking(move || {
        let s = gw.terminate(Duration::from_secs(15));
        (s, gw)
    })
    .await
    .unwrap()
    .0;
    for w in waiters {
        assert_eq!(w.await.unwrap().unwrap(), Some(1001));
    }
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn tokens_never_reach_the_logs_and_json_logs_are_json() {
    // Debug logs, in JSON, of a gateway handling good and bad tokens in every
    // place a token can be.
    let secret = "a-secret-of-at-least-thirty-two-bytes-for-logs";
    let args: Vec<String> = [
        "--standalone",
        "--jwt-secret",
        secret,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--api-listen",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .into();
    let env = [("RUST_LOG", "debug"), ("SB_LOG_FORMAT", "json")];
    let proc = support::process::Proc::start_with_env(
        "gateway",
        &support::process::binary("gateway"),
        &args,
        &env,
        Some("admin"),
    );
    let gw = Gateway::from_proc(proc, secret.into());
    let good = gw.token("alice");
    let forged = loadtest::token::mint(
        &loadtest::token::SigningKey::hs256(b"another-secret-of-at-least-32-bytes".to_vec()),
        &loadtest::token::TokenSpec::new("mallory", 3600),
    );
    let expired = gw.token_with(loadtest::token::TokenSpec::new("late", -10));
    let mut c = Client::connect(gw.options(Some(&good))).await.unwrap();
    c.next_of_type("hello", T).await.unwrap();
    c.request(json!({"op": "refresh", "token": good})).await.unwrap();
    c.request(json!({"op": "refresh", "token": forged})).await.unwrap();
    for token in [&forged, &expired] {
        let mut bad = Client::connect(gw.options(Some(token))).await.unwrap();
        bad.wait_close(T).await.unwrap();
        let mut opts = gw.options(None);
        opts.bearer = Some(token.clone());
        let mut bad = Client::connect(opts).await.unwrap();
        bad.wait_close(T).await.unwrap();
        let mut bad = Client::connect(gw.options(None)).await.unwrap();
        bad.send_json(&json!({"op": "auth", "token": token})).await.unwrap();
        bad.wait_close(T).await.unwrap();
    }
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = gw.proc.log_text();
    assert!(log.lines().count() > 5, "debug logs were written: {log}");
    for token in [&good, &forged, &expired] {
        for part in token.split('.') {
            assert!(!log.contains(part), "a token part in the log: {part}");
        }
    }
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
}

/// `loadtest soak`, short: 20 s of connections coming and going, joining,
/// leaving and publishing, with slow consumers among them, against a
/// standalone gateway (gateway, router and presence in one process). Its
/// RSS after the run stays within 10% of where it was after warm-up, and
/// every gauge of connections, sessions, members and queued bytes is back to
/// its value before the run once everyone has left. The long version is
/// `loadtest soak --duration 10m` (docs/benchmarks.md).
#[test]
fn a_short_soak_leaks_nothing() {
    let gw = Gateway::start(&["--rate-per-sec", "1000", "--queue-bytes", "65536"]);
    let out = support::process::TempDir::new("soak");
    let json = out.path.join("soak.json");
    let status = Command::new(support::process::binary("loadtest"))
        .args(["soak", "--connections", "200", "--rooms", "10", "--lifetime", "3s", "--rate", "2"])
        .args(["--slow-share", "0.05", "--warmup", "0.3", "--duration", "20s"])
        .args(["--rss-pid", &gw.proc.pid().to_string(), "--metrics", &gw.admin])
        .args(["--url", &gw.ws, "--secret", &gw.secret])
        .arg("--json")
        .arg(&json)
        .status()
        .expect("loadtest runs");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(status.success(), "the soak found a leak or lost messages: {report}");
    assert!(report["figures"]["connections opened"]["value"].as_f64().unwrap() > 400.0, "churn happened: {report}");
    assert!(report["figures"]["gauges back to idle"]["value"].as_f64().unwrap() >= 4.0, "gauges were read: {report}");
    assert_eq!(report["continuity"]["lost"], 0, "{report}");
}
