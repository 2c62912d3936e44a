//! Webhooks from a real cluster (nats-server, presence, 2 routers, 2
//! gateways) to a real HTTP receiver started here: room and member events
//! from the rooms' owners, user events from presence, signed, retried while
//! the receiver fails, each event id once after deduplication, nothing lost
//! over a 30 s outage, and messaging unhurried while the receiver is down.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::backend::{Backend, Reply};
use support::cluster::Cluster;
use support::target::Target;

const SECRET: &str = "webhook-secret";

/// The events received so far, by id (a retried batch arrives again).
fn events(backend: &Backend) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for r in backend.requests("/events") {
        let ts: i64 = r.timestamp.as_deref().unwrap().parse().unwrap();
        let secrets = [SECRET.as_bytes().to_vec()];
        assert!(
            gateway::hooks::signature::verify(&secrets, ts, &r.body, r.signature.as_deref().unwrap(), ts),
            "signed"
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        for e in body["events"].as_array().unwrap() {
            out.insert(e["id"].as_str().unwrap().to_owned(), e.clone());
        }
    }
    out
}

/// `(type, room or user, user)` of the events about `room` or `user`.
fn about(events: &BTreeMap<String, Value>, key: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = events
        .values()
        .filter(|e| e["room"] == key || e["user"] == key)
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["user"].as_str().unwrap_or("").to_owned()))
        .collect();
    out.sort();
    out
}

async fn until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !f() {
        assert!(Instant::now() < end, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_and_presence_send_events_at_least_once_while_messaging_goes_on() {
    // The receiver fails its first two requests, and whenever told to.
    let (failures, down) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let (f, d) = (failures.clone(), down.clone());
    let backend = Backend::start(move |_, _| {
        if f.fetch_add(1, Ordering::SeqCst) < 2 || d.load(Ordering::SeqCst) {
            return Reply { status: 503, body: json!({}), delay: Duration::ZERO };
        }
        Reply::ok(json!({}))
    })
    .await;
    let url = format!("{}/events", backend.url);
    let flags = ["--webhook-url", &url, "--webhook-secret", SECRET];
    let cluster = Cluster::start_full(2, 2, &flags, &flags).await;
    let t = Target {
        urls: cluster.urls(),
        key: loadtest::token::SigningKey::hs256(cluster.secret.as_bytes().to_vec()),
        rooms_api: cluster.routers[0].grpc.clone(),
    };

    let room = "wh:room";
    let mut a = t.user(0, "wh-a").await;
    let mut b = t.user(1, "wh-b").await;
    for c in [&mut a, &mut b] {
        assert_eq!(c.request(json!({"op": "join", "room": room})).await.unwrap()["ok"], true);
    }
    a.request(json!({"op": "leave", "room": room})).await.unwrap();
    b.request(json!({"op": "leave", "room": room})).await.unwrap();
    let want = |a: &str, b: &str| {
        let mut v = vec![
            ("member_joined".to_owned(), a.to_owned()),
            ("member_joined".to_owned(), b.to_owned()),
            ("member_left".to_owned(), a.to_owned()),
            ("member_left".to_owned(), b.to_owned()),
            ("room_occupied".to_owned(), String::new()),
            ("room_vacated".to_owned(), String::new()),
        ];
        v.sort();
        v
    };
    until("the room's events arrive despite the failures", Duration::from_secs(20), || {
        about(&events(&backend), room) == want("wh-a", "wh-b")
    })
    .await;
    assert!(failures.load(Ordering::SeqCst) >= 3, "the first attempts failed and were retried");
    until("presence says wh-a is online", Duration::from_secs(20), || {
        about(&events(&backend), "wh-a").contains(&("user_online".to_owned(), "wh-a".to_owned()))
    })
    .await;

    // The receiver goes down: messaging is not held up, and nothing is lost.
    down.store(true, Ordering::SeqCst);
    let room2 = "wh:down";
    for c in [&mut a, &mut b] {
        c.request(json!({"op": "join", "room": room2})).await.unwrap();
    }
    let mut slowest = Duration::ZERO;
    for n in 0..50 {
        let started = Instant::now();
        let r = a.request(json!({"op": "publish", "room": room2, "data": n})).await.unwrap();
        assert_eq!(r["ok"], true);
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_millis(500), "publishes stay fast while webhooks fail: {slowest:?}");
    for c in [&mut a, &mut b] {
        c.request(json!({"op": "leave", "room": room2})).await.unwrap();
    }
    // Down for 30 s, well within --webhook-max-age: every event still comes
    // (the backoff between attempts has grown to its 30 s cap by then).
    tokio::time::sleep(Duration::from_secs(30)).await;
    down.store(false, Ordering::SeqCst);
    until("the events held while the receiver was down arrive", Duration::from_secs(60), || {
        about(&events(&backend), room2) == want("wh-a", "wh-b")
    })
    .await;
    // Every event has its own id, and a retried batch repeats ids, never events under new ones.
    let all = events(&backend);
    let keys: Vec<(String, String, String)> = all
        .values()
        .map(|e| (e["type"].to_string(), e["room"].to_string(), e["user"].to_string()))
        .filter(|k| k.1.contains("wh:"))
        .collect();
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(keys.len(), unique.len(), "{keys:?}");
    assert!(all.values().all(|e| e["ts"].as_i64().is_some_and(|ts| ts > 0)));
}
