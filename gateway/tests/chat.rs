//! The chat signals (`signal`, `status`, direct messages that wait for
//! offline users) against a real standalone gateway and a real 2-gateway
//! cluster: the same cases in both, and the inbox's bounds and a presence
//! restart where they need their own processes.

mod support;

use std::time::Duration;

use loadtest::client::{Client, ConnectOptions};
use loadtest::token::{SigningKey, TokenSpec};
use proto::pb;
use serde_json::{json, Value};
use support::cluster::{Cluster, API_TOKEN};
use support::process::TempDir;
use support::target::Target;
use support::*;

/// A read-only namespace, for the signal rules.
const POLICY: &str = "[[namespace]]\nprefix = \"news:\"\npublish = \"none\"\n";

fn config_file(dir: &TempDir) -> String {
    let path = dir.path.join("switchboard.toml");
    std::fs::write(&path, POLICY).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_signals_in_standalone_mode() {
    let dir = TempDir::new("chat-standalone");
    let config = config_file(&dir);
    let gw = Gateway::start(&["--config", &config, "--api-token", API_TOKEN, "--offline-grace", "300ms"]);
    let target = Target { urls: vec![gw.ws.clone()], key: gw.key(), rooms_api: gw.grpc.clone() };
    signals(&target).await;
    status(&target).await;
    status_resets_offline(&target).await;
    inbox(&target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_keeps_the_newest_messages_for_their_ttl() {
    let gw = Gateway::start(&["--inbox-size", "3", "--inbox-ttl", "1s"]);
    let t = Target { urls: vec![gw.ws.clone()], key: gw.key(), rooms_api: gw.grpc.clone() };
    let mut a = t.user(0, "bd-a").await;
    for n in 1..=5 {
        let r = a.request(json!({"op": "send", "user": "bd-b", "data": n})).await.unwrap();
        assert_eq!(r["delivered"], false, "{r}");
    }
    let mut b = t.user(0, "bd-b").await;
    let got: Vec<Value> =
        queued(&mut b, 3, Duration::from_millis(300)).await.iter().map(|v| v["data"].clone()).collect();
    assert_eq!(got, [json!(3), json!(4), json!(5)], "a full inbox drops its oldest");
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "switchboard_presence_inbox_dropped_total{reason=\"full\"}"), 2.0);

    a.request(json!({"op": "send", "user": "bd-c", "data": "old"})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut c = t.user(0, "bd-c").await;
    assert!(queued(&mut c, 0, Duration::from_millis(500)).await.is_empty(), "expired after --inbox-ttl");
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "switchboard_presence_inbox_dropped_total{reason=\"expired\"}"), 1.0);
    assert_eq!(metric(&m, "switchboard_presence_inbox_messages"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_signals_in_a_two_gateway_cluster() {
    let dir = TempDir::new("chat-cluster");
    let config = config_file(&dir);
    let cluster = Cluster::start_with(2, 2, &["--config", &config]).await;
    let target = Target {
        urls: cluster.urls(),
        key: SigningKey::hs256(cluster.secret.as_bytes().to_vec()),
        rooms_api: cluster.routers[0].grpc.clone(),
    };
    signals(&target).await;
    status(&target).await;
    inbox(&target).await;
    // A presence restart loses its inbox; every gateway counts the restart.
    let mut cluster = cluster;
    let mut a = target.user(0, "rs-a").await;
    assert_eq!(a.request(json!({"op": "send", "user": "rs-b", "data": 1})).await.unwrap()["delivered"], false);
    cluster.presence = None;
    cluster.start_presence();
    for gw in &cluster.gateways {
        let restarts = || async { metric(&gw.metrics().await, "switchboard_gateway_presence_restarts_total") };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while restarts().await < 1.0 {
            assert!(std::time::Instant::now() < deadline, "the restart is counted");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut b = target.user(1, "rs-b").await;
    assert!(queued(&mut b, 0, Duration::from_millis(500)).await.is_empty(), "lost with the old instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_jetstream_the_inbox_survives_presence_and_router_restarts() {
    let mut cluster = Cluster::start_durable(2, 2).await;
    let target = Target {
        urls: cluster.urls(),
        key: SigningKey::hs256(cluster.secret.as_bytes().to_vec()),
        rooms_api: cluster.routers[0].grpc.clone(),
    };
    // The same rules as in memory: in order, once, one take per message.
    inbox(&target).await;
    let mut a = target.user(0, "js-a").await;
    for n in 1..=2 {
        assert_eq!(a.request(json!({"op": "send", "user": "js-b", "data": n})).await.unwrap()["delivered"], false);
    }
    let presence = cluster.presence.as_mut().unwrap();
    presence.kill9();
    cluster.start_presence();
    cluster.restart_router(0);
    cluster.wait_ring(2).await;
    cluster.wait_gateways_ready().await;
    let mut b = target.user(1, "js-b").await;
    let got = queued(&mut b, 2, Duration::from_millis(500)).await;
    assert_eq!(got.iter().map(|v| v["data"].clone()).collect::<Vec<_>>(), [json!(1), json!(2)], "kept, once");
    let mut again = target.user(0, "js-b").await;
    assert!(queued(&mut again, 0, Duration::from_millis(300)).await.is_empty(), "never twice");
}

/// `signal`: to the other members on every gateway (the sender's other
/// connections included, in both encodings), no seq taken, never replayed,
/// the publish rules and a 4 KiB cap.
async fn signals(t: &Target) {
    use pb::client_frame::Op;
    use pb::server_frame::Kind;
    let room = "chat:signals";
    let mut a = t.user(0, "sig-a").await;
    let mut b = t.user(1, "sig-b").await;
    let mut a2 = t.user(1, "sig-a").await;
    let url = format!("{}?token={}", t.urls[0], t.token(TokenSpec::new("sig-p", 3600)));
    let mut opts = ConnectOptions::new(url);
    opts.protocols = vec!["switchboard.v1.proto".into()];
    let mut p = Client::connect(opts).await.unwrap();
    p.wait_proto(T, |f| matches!(f.kind, Some(Kind::Hello(_)))).await.unwrap();
    let joined = a.request(json!({"op": "join", "room": room})).await.unwrap();
    for c in [&mut b, &mut a2] {
        assert_eq!(c.request(json!({"op": "join", "room": room})).await.unwrap()["ok"], true);
    }
    let r = p.request_proto(Op::Join(pb::JoinOp { room: room.into(), since: None })).await.unwrap();
    assert!(r.ok, "{r:?}");
    let first = a.request(json!({"op": "publish", "room": room, "data": 1})).await.unwrap();
    assert_eq!(first["seq"], 1);

    let r = a.request(json!({"op": "signal", "room": room, "data": {"typing": true}})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let want = json!({"type": "signal", "room": room, "from": "sig-a", "data": {"typing": true}});
    assert_eq!(b.next_of_type("signal", T).await.unwrap(), want);
    assert_eq!(a2.next_of_type("signal", T).await.unwrap(), want, "the sender's other connection gets it");
    let f = p.wait_proto(T, |f| matches!(f.kind, Some(Kind::Signal(_)))).await.unwrap();
    let Some(Kind::Signal(s)) = f.kind else { unreachable!() };
    assert_eq!((s.room.as_str(), s.from.as_str(), &s.data[..]), (room, "sig-a", &br#"{"typing":true}"#[..]));
    let second = a.request(json!({"op": "publish", "room": room, "data": 2})).await.unwrap();
    assert_eq!(second["seq"], 2, "a signal takes no seq");
    assert!(a.next_of_type("signal", Duration::from_millis(300)).await.is_err(), "not to the sender");

    // A resume from before the signal replays the messages alone.
    let mut late = t.user(1, "sig-late").await;
    let since = json!({"epoch": joined["epoch"], "seq": 0});
    let r = late.request(json!({"op": "join", "room": room, "since": since})).await.unwrap();
    assert_eq!(r["recovered"], true, "{r}");
    for seq in [1, 2] {
        assert_eq!(late.next_json(T).await.unwrap()["seq"], seq);
    }
    assert!(late.next_of_type("signal", Duration::from_millis(300)).await.is_err(), "never replayed");

    let r = a.request(json!({"op": "signal", "room": room, "data": "x".repeat(5 * 1024)})).await.unwrap();
    assert_eq!(r["error"]["code"], "too_large", "{r}");
    let r = a.request(json!({"op": "signal", "room": "chat:elsewhere", "data": 1})).await.unwrap();
    assert_eq!(r["error"]["code"], "not_member", "{r}");
    a.request(json!({"op": "join", "room": "news:signals"})).await.unwrap();
    let r = a.request(json!({"op": "signal", "room": "news:signals", "data": 1})).await.unwrap();
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("publish = \"none\""), "{r}");
}

/// The `queued` direct events a connection gets: the first `expect` (each
/// within [`T`], however loaded the machine), then any more within `quiet`.
async fn queued(c: &mut Client, expect: usize, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let wait = if out.len() < expect { T } else { quiet };
        let Ok(v) = c.wait_json(wait, |v| v["type"] == "direct").await else { return out };
        assert_eq!(v["queued"], true, "{v}");
        out.push(v);
    }
}

/// `send` to an offline user: `delivered: false`, then the user's next
/// connection (on the other gateway) gets the messages, in order, once; of
/// two connections opening together each message reaches one.
async fn inbox(t: &Target) {
    let mut a = t.user(0, "ib-a").await;
    let mut sent = Vec::new();
    for n in 1..=3 {
        let r = a.request(json!({"op": "send", "user": "ib-b", "data": {"n": n}})).await.unwrap();
        assert_eq!((r["ok"].as_bool(), r["delivered"].as_bool()), (Some(true), Some(false)), "{r}");
        sent.push(json!({"n": n}));
    }
    let mut b = t.user(1, "ib-b").await;
    let got = queued(&mut b, 3, Duration::from_millis(300)).await;
    assert_eq!(got.iter().map(|v| v["data"].clone()).collect::<Vec<_>>(), sent, "in order, once");
    assert!(got.iter().all(|v| v["from"] == "ib-a" && v["ts"].as_i64() > Some(0)));
    // Online now: delivered live, not queued.
    let r = a.request(json!({"op": "send", "user": "ib-b", "data": "live"})).await.unwrap();
    assert_eq!(r["delivered"], true, "{r}");
    let live = b.next_of_type("direct", T).await.unwrap();
    assert_eq!((live["data"].as_str(), live.get("queued")), (Some("live"), None));
    let mut again = t.user(0, "ib-b").await;
    assert!(queued(&mut again, 0, Duration::from_millis(300)).await.is_empty(), "never twice");

    for n in 0..20 {
        assert_eq!(a.request(json!({"op": "send", "user": "ib-c", "data": n})).await.unwrap()["delivered"], false);
    }
    let (mut c1, mut c2) = tokio::join!(t.user(0, "ib-c"), t.user(1, "ib-c"));
    // Until all 20 came (the split is the race's), then a quiet spell in
    // which any duplicate would show.
    let (mut q1, mut q2) = (Vec::new(), Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut quiet = Duration::from_millis(200);
    loop {
        let (a1, a2) = tokio::join!(queued(&mut c1, 0, quiet), queued(&mut c2, 0, quiet));
        q1.extend(a1);
        q2.extend(a2);
        if quiet > Duration::from_millis(200) {
            break;
        }
        if q1.len() + q2.len() >= 20 || std::time::Instant::now() > deadline {
            quiet = Duration::from_millis(500);
        }
    }
    let mut all: Vec<i64> = q1.iter().chain(&q2).map(|v| v["data"].as_i64().unwrap()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..20).collect::<Vec<_>>(), "each on exactly one connection ({} and {})", q1.len(), q2.len());
    let r = a.request(json!({"op": "send", "user": "ib-nobody!", "data": 1})).await.unwrap();
    assert_eq!(r["error"]["code"], "bad_request");
}

/// `status`: seen by a watcher on the other gateway, in `presence` replies
/// and events; of two devices the last set wins; bad values refused.
async fn status(t: &Target) {
    let mut phone = t.user(0, "st-a").await;
    let mut laptop = t.user(1, "st-a").await;
    let mut watcher = t.user(1, "st-w").await;
    let r = watcher.request(json!({"op": "watch", "users": ["st-a"]})).await.unwrap();
    assert_eq!(r["users"][0]["status"], "online", "online until set: {r}");

    assert_eq!(phone.request(json!({"op": "status", "status": "away"})).await.unwrap()["ok"], true);
    let ev = watcher.wait_json(T, |v| v["type"] == "presence" && v["status"] == "away").await.unwrap();
    assert_eq!((ev["user"].as_str(), ev["online"].as_bool()), (Some("st-a"), Some(true)));
    assert_eq!(laptop.request(json!({"op": "status", "status": "busy"})).await.unwrap()["ok"], true);
    watcher.wait_json(T, |v| v["type"] == "presence" && v["status"] == "busy").await.unwrap();
    let r = watcher.request(json!({"op": "presence", "users": ["st-a", "st-nobody"]})).await.unwrap();
    assert_eq!((r["users"][0]["status"].as_str(), r["users"][1].get("status")), (Some("busy"), None), "{r}");

    for bad in [json!(""), json!("x".repeat(65)), json!(7)] {
        let r = phone.request(json!({"op": "status", "status": bad})).await.unwrap();
        assert_eq!(r["error"]["code"], "bad_request", "{r}");
    }
    // In protobuf too.
    let url = format!("{}?token={}", t.urls[0], t.token(TokenSpec::new("st-p", 3600)));
    let mut opts = ConnectOptions::new(url);
    opts.protocols = vec!["switchboard.v1.proto".into()];
    let mut p = Client::connect(opts).await.unwrap();
    let r = p.request_proto(pb::client_frame::Op::Watch(pb::WatchOp { users: vec!["st-a".into()] })).await.unwrap();
    let Some(pb::reply::Result::Presence(found)) = r.result else { panic!("{r:?}") };
    assert_eq!(found.users[0].status, "busy");
}

/// The user's last connection ends: after the offline grace the status is
/// gone, and a new connection starts `online`.
async fn status_resets_offline(t: &Target) {
    let mut watcher = t.user(0, "st-w2").await;
    watcher.request(json!({"op": "watch", "users": ["st-b"]})).await.unwrap();
    let mut a = t.user(0, "st-b").await;
    a.request(json!({"op": "status", "status": "busy"})).await.unwrap();
    watcher.wait_json(T, |v| v["type"] == "presence" && v["status"] == "busy").await.unwrap();
    a.close(1000).await.unwrap();
    let ev = watcher.wait_json(T, |v| v["type"] == "presence" && v["online"] == false).await.unwrap();
    assert!(ev.get("status").is_none(), "{ev}");
    let gone = ev["ts"].as_i64().unwrap();
    let _back = t.user(0, "st-b").await;
    // (The stash still holds the first `online` event: take a newer one.)
    let back = |v: &serde_json::Value| v["type"] == "presence" && v["online"] == true && v["ts"].as_i64() >= Some(gone);
    let ev = watcher.wait_json(T, back).await.unwrap();
    assert_eq!(ev["status"], "online", "{ev}");
    let r = watcher.request(json!({"op": "presence", "users": ["st-b"]})).await.unwrap();
    assert_eq!(r["users"][0]["status"], "online");
}
