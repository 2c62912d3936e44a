//! The server API over HTTP/JSON (and the same methods over gRPC `Rooms`)
//! against a real cluster: NATS, presence, 2 routers and 2 gateways. Every
//! call goes to router 1 or 2 while clients sit on both gateways, so each
//! cluster-wide method is seen to reach both.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use proto::pb;
use serde_json::{json, Value};
use support::cluster::{Cluster, API_TOKEN};
use support::{api_call, http_post, join, T};

/// Publishes through the API and returns the seq.
async fn publish(api: &str, room: &str, data: Value) -> u64 {
    let (status, r) = api_call(api, API_TOKEN, "publish", json!({"room": room, "data": data})).await;
    assert_eq!(status, 200, "{r}");
    r["seq"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_reaches_every_router_gateway_and_connection() {
    let cluster = Cluster::start(2, 2).await;
    let (api1, api2) = (cluster.routers[0].api.clone(), cluster.routers[1].api.clone());
    let (gw1, gw2) = (&cluster.gateways[0], &cluster.gateways[1]);

    // --- Refusals: the design's statuses and codes, and nothing happens.
    let (status, r) = api_call(&api1, "wrong-token", "stats", json!({})).await;
    assert_eq!((status, r["error"]["code"].as_str()), (401, Some("unauthorized")), "{r}");
    let (status, body) = http_post(&format!("{api1}stats"), &[], b"{}").await;
    assert_eq!(status, 401, "no token: {body}");
    let (status, r) = api_call(&api1, API_TOKEN, "nope", json!({})).await;
    assert_eq!((status, r["error"]["code"].as_str()), (404, Some("not_found")), "{r}");
    let auth = format!("Bearer {API_TOKEN}");
    let (status, body) = http_post(&format!("{api1}publish"), &[("Authorization", &auth)], b"{not json").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], "bad_request");
    let cases = [
        ("publish", json!({"room": "a.b", "data": 1}), 400, "invalid_room"),
        ("publish", json!({"room": "ok", "data": "x".repeat(70_000)}), 400, "too_large"),
        ("publish", json!({"room": "ok", "data": 1, "colour": "red"}), 400, "bad_request"),
        ("publish", json!({"room": "ok"}), 400, "bad_request"),
        ("publish", json!({"room": "ok", "data": 1, "idempotency_key": "k".repeat(65)}), 400, "bad_request"),
        ("send", json!({"user": "a b", "data": 1}), 400, "bad_request"),
        ("disconnect", json!({"user": "u", "code": 1006}), 400, "bad_request"),
        ("subscribe", json!({"user": "u", "room": "*"}), 400, "invalid_room"),
        ("history", json!({"room": "ok", "cursor": "nonsense"}), 400, "bad_request"),
        ("rooms", json!({"limit": 5000}), 400, "bad_request"),
        ("presence", json!({"users": []}), 400, "bad_request"),
        ("broadcast", json!({"rooms": ["ok", "no.pe"], "data": 1}), 400, "invalid_room"),
    ];
    for (method, body, want_status, want_code) in cases {
        let (status, r) = api_call(&api2, API_TOKEN, method, body.clone()).await;
        assert_eq!((status, r["error"]["code"].as_str()), (want_status, Some(want_code)), "{method} {body}: {r}");
    }
    let huge = vec![b' '; 2 << 20];
    let (status, body) = http_post(&format!("{api1}publish"), &[("Authorization", &auth)], &huge).await;
    assert_eq!(status, 400, "a body over 1 MiB: {body}");

    // --- publish, idempotently, seen on both gateways.
    let mut alice1 = gw1.json("alice").await;
    let mut alice2 = gw2.json("alice").await;
    join(&mut alice1, "lobby").await;
    join(&mut alice2, "lobby").await;
    let call = json!({"room": "lobby", "data": {"n": 1}, "idempotency_key": "order-17"});
    let (status, first) = api_call(&api1, API_TOKEN, "publish", call.clone()).await;
    assert_eq!((status, first["duplicate"].as_bool()), (200, Some(false)), "{first}");
    let (status, again) = api_call(&api2, API_TOKEN, "publish", call).await;
    assert_eq!((status, &again["seq"], again["duplicate"].as_bool()), (200, &first["seq"], Some(true)), "{again}");
    let marker = publish(&api2, "lobby", json!("marker")).await;
    for c in [&mut alice1, &mut alice2] {
        let m = c.next_of_type("message", T).await.unwrap();
        assert_eq!((m["data"]["n"].as_u64(), &m["seq"], m["from"].as_str()), (Some(1), &first["seq"], Some("")), "{m}");
        // The repeat delivered nothing: the next message is the marker.
        let m = c.next_of_type("message", T).await.unwrap();
        assert_eq!(m["seq"].as_u64(), Some(marker), "{m}");
    }

    // --- broadcast: each room its own seq, in the order given.
    join(&mut alice2, "side").await;
    let (status, r) =
        api_call(&api1, API_TOKEN, "broadcast", json!({"rooms": ["lobby", "side", "empty"], "data": "all"})).await;
    assert_eq!(status, 200, "{r}");
    let rooms: Vec<&str> = r["results"].as_array().unwrap().iter().map(|o| o["room"].as_str().unwrap()).collect();
    assert_eq!(rooms, ["lobby", "side", "empty"]);
    assert!(r["results"].as_array().unwrap().iter().all(|o| o["seq"].as_u64().is_some()), "{r}");
    for room in ["lobby", "side"] {
        let m = alice2.wait_json(T, |v| v["type"] == "message" && v["room"] == room).await.unwrap();
        assert_eq!(m["data"], "all");
    }

    // --- send: every connection of the user; queued while offline.
    let (status, r) = api_call(&api2, API_TOKEN, "send", json!({"user": "alice", "data": {"hi": 1}})).await;
    assert_eq!((status, r["delivered"].as_bool()), (200, Some(true)), "{r}");
    for c in [&mut alice1, &mut alice2] {
        let d = c.next_of_type("direct", T).await.unwrap();
        assert_eq!((d["data"]["hi"].as_u64(), d["from"].as_str()), (Some(1), Some("")), "{d}");
    }
    let (status, r) = api_call(&api1, API_TOKEN, "send", json!({"user": "olga", "data": "later"})).await;
    assert_eq!((status, r["delivered"].as_bool()), (200, Some(false)), "{r}");
    let mut olga = gw2.json("olga").await;
    let d = olga.next_of_type("direct", T).await.unwrap();
    assert_eq!((d["data"].as_str(), d["queued"].as_bool()), (Some("later"), Some(true)), "{d}");

    // --- subscribe / unsubscribe: every connection of the user, both gateways.
    let mut sam1 = gw1.json("sam").await;
    let mut sam2 = gw2.json("sam").await;
    let (status, r) = api_call(&api2, API_TOKEN, "subscribe", json!({"user": "sam", "room": "vip"})).await;
    assert_eq!((status, r["connections"].as_u64(), r["failed"].as_u64()), (200, Some(2), Some(0)), "{r}");
    for c in [&mut sam1, &mut sam2] {
        let s = c.next_of_type("subscribed", T).await.unwrap();
        assert_eq!((s["room"].as_str(), s["count"].as_u64()), (Some("vip"), Some(1)), "{s}");
    }
    // The call returned after the joins: a publish right after reaches both.
    let seq = publish(&api1, "vip", json!("welcome")).await;
    for c in [&mut sam1, &mut sam2] {
        let m = c.next_of_type("message", T).await.unwrap();
        assert_eq!((m["room"].as_str(), m["seq"].as_u64()), (Some("vip"), Some(seq)), "{m}");
    }
    // Members as the client ops see them, publishing included.
    let r = sam1.request(json!({"op": "publish", "room": "vip", "data": "thanks"})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let (_, m) = api_call(&api1, API_TOKEN, "members", json!({"room": "vip"})).await;
    assert_eq!(
        (m["count"].as_u64(), &m["members"][0]["user"], m["members"][0]["conns"].as_u64()),
        (Some(1), &json!("sam"), Some(2)),
        "{m}"
    );
    // Again: nothing changes, both still count.
    let (_, r) = api_call(&api1, API_TOKEN, "subscribe", json!({"user": "sam", "room": "vip"})).await;
    assert_eq!(r["connections"].as_u64(), Some(2), "{r}");
    let (status, r) = api_call(&api1, API_TOKEN, "unsubscribe", json!({"user": "sam", "room": "vip"})).await;
    assert_eq!((status, r["connections"].as_u64()), (200, Some(2)), "{r}");
    for c in [&mut sam1, &mut sam2] {
        let s = c.next_of_type("removed", T).await.unwrap();
        assert_eq!((s["room"].as_str(), s["reason"].as_str()), (Some("vip"), Some("server")), "{s}");
    }
    let r = sam1.request(json!({"op": "publish", "room": "vip", "data": "x"})).await.unwrap();
    assert_eq!(r["error"]["code"], "not_member", "{r}");
    let (_, m) = api_call(&api2, API_TOKEN, "members", json!({"room": "vip"})).await;
    assert_eq!(m["count"].as_u64(), Some(0), "{m}");
    // A user with no connection anywhere: nothing to do.
    let (status, r) = api_call(&api1, API_TOKEN, "subscribe", json!({"user": "ghost", "room": "vip"})).await;
    assert_eq!((status, r["connections"].as_u64()), (200, Some(0)), "{r}");

    // --- presence, as presence knows it.
    // Gateways report sessions in batches: sam is online within a moment.
    let mut r = Value::Null;
    for _ in 0..50 {
        let (status, got) = api_call(&api2, API_TOKEN, "presence", json!({"users": ["sam", "nobody"]})).await;
        assert_eq!(status, 200, "{got}");
        r = got;
        if r["users"][0]["online"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((&r["users"][0]["online"], &r["users"][0]["status"]), (&json!(true), &json!("online")), "{r}");
    assert_eq!(r["users"][1]["online"], false, "{r}");

    // --- history with cursor paging: every message once, in order.
    for n in 0..7 {
        publish(&api1, "paged", json!(n)).await;
    }
    let data = |h: &Value| -> Vec<i64> {
        h["messages"].as_array().unwrap().iter().map(|m| m["data"].as_i64().unwrap()).collect()
    };
    let (_, h) = api_call(&api2, API_TOKEN, "history", json!({"room": "paged", "limit": 3})).await;
    assert_eq!((data(&h), h["cursor"].is_null()), (vec![4, 5, 6], true), "the latest three: {h}");
    let epoch = h["epoch"].as_str().unwrap().to_owned();
    let (_, stale) =
        api_call(&api2, API_TOKEN, "history", json!({"room": "paged", "since": {"epoch": "old", "seq": 0}})).await;
    assert_eq!((&stale["recovered"], data(&stale).len()), (&json!(false), 0), "{stale}");
    let mut call = json!({"room": "paged", "since": {"epoch": epoch, "seq": 0}, "limit": 3});
    let mut pages = Vec::new();
    loop {
        let (status, h) = api_call(&api1, API_TOKEN, "history", call.clone()).await;
        assert_eq!((status, &h["recovered"]), (200, &json!(true)), "{h}");
        pages.push(data(&h));
        match h["cursor"].as_str() {
            Some(next) => call["cursor"] = json!(next),
            None => break,
        }
    }
    assert_eq!(pages, [vec![0, 1, 2], vec![3, 4, 5], vec![6]]);

    // --- rooms: 1,000 rooms over both routers, paged, each exactly once.
    let names: Vec<String> = (0..1000).map(|i| format!("page-{i:04}")).collect();
    let (status, r) = api_call(&api1, API_TOKEN, "broadcast", json!({"rooms": names, "data": 1})).await;
    assert_eq!(status, 200, "{r}");
    assert!(r["results"].as_array().unwrap().iter().all(|o| o["error"].is_null()), "{r}");
    let (mut listed, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let mut call = json!({"prefix": "page-", "limit": 77});
        if let Some(c) = &cursor {
            call["cursor"] = json!(c);
        }
        let (status, page) = api_call(&api2, API_TOKEN, "rooms", call).await;
        assert_eq!(status, 200, "{page}");
        let rooms = page["rooms"].as_array().unwrap();
        assert!(rooms.len() <= 77);
        listed.extend(rooms.iter().map(|r| r["room"].as_str().unwrap().to_owned()));
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed, names, "every room once, in id order");
    // Routers count their rooms once a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let owners = cluster.room_counts().await;
        if owners.iter().all(|n| *n >= 100) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "both routers own some of them: {owners:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // --- stats: the whole cluster.
    let (status, s) = api_call(&api2, API_TOKEN, "stats", json!({})).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!((s["ring_size"].as_u64(), s["gateways"].as_u64()), (Some(2), Some(2)), "{s}");
    assert!(s["cluster_rooms"].as_u64().unwrap() >= 1000, "{s}");

    // --- the same methods over gRPC Rooms.
    let mut grpc = cluster.rooms_api(1).await;
    let page = grpc
        .rooms(pb::RoomsCall { prefix: "page-".into(), limit: 10, cursor: "page-0994".into() })
        .await
        .unwrap()
        .into_inner();
    let rooms: Vec<&str> = page.rooms.iter().map(|r| r.room.as_str()).collect();
    assert_eq!(rooms, ["page-0995", "page-0996", "page-0997", "page-0998", "page-0999"]);
    assert!(page.cursor.is_empty());
    let sent = grpc.send(pb::SendCall { user: "olga".into(), data: b"\"by grpc\"".to_vec().into() }).await.unwrap();
    assert!(sent.into_inner().delivered);
    assert_eq!(olga.next_of_type("direct", T).await.unwrap()["data"], "by grpc");
    let err = grpc.subscribe(pb::SubscriptionCall { user: "sam".into(), room: "no.pe".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("invalid_room:"), "{}", err.message());

    // --- disconnect: every connection of the user, on both gateways.
    let mut mallory1 = gw1.json("mallory").await;
    let mut mallory2 = gw2.json("mallory").await;
    let (status, r) =
        api_call(&api1, API_TOKEN, "disconnect", json!({"user": "mallory", "code": 4502, "reason": "banned"})).await;
    assert_eq!((status, r["closed"].as_u64()), (200, Some(2)), "{r}");
    for c in [&mut mallory1, &mut mallory2] {
        assert_eq!(c.wait_close(T).await.unwrap(), Some(4502));
    }
    // Everyone else stays.
    let r = alice1.request(json!({"op": "members", "room": "lobby"})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");

    // --- the audit log: state changes, by whom, never payloads or tokens.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = cluster.routers[0].proc.log_text() + &cluster.routers[1].proc.log_text();
    let audited: Vec<&str> = log.lines().filter(|l| l.contains("api call")).collect();
    for method in ["publish", "broadcast", "send", "subscribe", "unsubscribe", "disconnect"] {
        assert!(
            audited.iter().any(|l| l.contains(&format!("method=\"{method}\""))),
            "{method} not audited: {audited:#?}"
        );
    }
    assert!(audited.iter().any(|l| l.contains("user mallory") && l.contains("127.0.0.1")), "{audited:#?}");
    assert!(
        !log.contains("order-17") && !log.contains("marker") && !log.contains(API_TOKEN),
        "payloads or tokens logged"
    );
    assert!(!audited.iter().any(|l| l.contains("method=\"members\"")), "reads are not audited");
    let metrics = support::http_get(&format!("{}/metrics", cluster.routers[0].admin)).await.1;
    assert!(metrics.contains("switchboard_router_api_calls_total{method=\"publish\",outcome=\"ok\"}"), "{metrics}");

    let distinct: BTreeSet<_> = listed.iter().collect();
    assert_eq!(distinct.len(), 1000);
}

/// The curl lines of docs/integration.md's server API section, run against a
/// standalone gateway as the README starts it (no token on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_curl_examples_work_against_a_standalone_gateway() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/integration.md")).unwrap();
    let section = doc.split("## Your backend acts: the server API").nth(1).expect("the API section");
    let block = section.split("```sh").nth(1).and_then(|b| b.split("```").next()).expect("a sh block");
    let lines: Vec<&str> = block.lines().filter(|l| l.starts_with("curl ")).collect();
    assert!(lines.len() >= 12, "{lines:?}");

    let gw = support::Gateway::start(&[]);
    let base = gw.api.clone().expect("an api line");
    let base = base.trim_end_matches("/api/");
    let mut ann = gw.json("ann").await;
    join(&mut ann, "chat:general").await;
    let mut answers = Vec::new();
    for line in &lines {
        assert!(line.contains("http://127.0.0.1:8090/api/"), "{line}");
        let command = line.replace("http://127.0.0.1:8090", base);
        let out = std::process::Command::new("bash").args(["-c", &command]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{line}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        let answer: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{line}: {stdout}"));
        assert!(answer.get("error").is_none(), "{line}: {answer}");
        answers.push(answer);
    }
    // The idempotent pair: the same seq, delivered once.
    assert_eq!(answers[1]["seq"], answers[2]["seq"]);
    assert_eq!(answers[2]["duplicate"], true);
    let texts: Vec<String> = {
        let mut texts = Vec::new();
        while let Ok(m) = ann.next_of_type("message", Duration::from_millis(500)).await {
            texts.push(m["data"]["text"].as_str().unwrap_or_default().to_owned());
        }
        texts
    };
    assert_eq!(texts, ["Deploy at 5pm", "Order 17 shipped", "Maintenance tonight"]);
    let sent = lines.iter().position(|l| l.contains("/api/send")).unwrap();
    assert_eq!(answers[sent]["delivered"], true, "ann is online");
    let subscribed = lines.iter().position(|l| l.contains("/api/subscribe")).unwrap();
    assert_eq!(answers[subscribed]["connections"], 1);
}
