//! Limits and backpressure: floods, room caps, heartbeats, slow consumers,
//! connection caps and handshake admission, the rooms' recent-message budget.

mod support;

use std::time::{Duration, Instant};

use loadtest::client::{Client, ConnectOptions};
use serde_json::json;
use support::*;

#[tokio::test]
async fn flooding_gets_rate_limited_then_4002() {
    let gw = Gateway::start(&["--rate-per-sec", "5", "--rate-burst", "10", "--flood-limit", "20"]);
    let mut flood = gw.json("flood").await;
    let mut other = gw.json("calm").await;
    for i in 0..200 {
        if flood.send_json(&json!({"op": "members", "room": "r", "id": i})).await.is_err() {
            break;
        }
    }
    let limited = flood
        .wait_json(T, |v| v["type"] == "reply" && v["error"]["code"] == "rate_limited")
        .await
        .expect("over the rate: rate_limited replies");
    assert_eq!(limited["ok"], false);
    assert_eq!(flood.wait_close(T).await.unwrap(), Some(4002));
    still_served(&mut other).await;
}

#[tokio::test]
async fn rooms_per_connection_are_capped() {
    let gw = Gateway::start(&["--max-rooms-per-conn", "3"]);
    let mut c = gw.json("alice").await;
    for room in ["a", "b", "c"] {
        join(&mut c, room).await;
    }
    let r = c.request(json!({"op": "join", "room": "d"})).await.unwrap();
    assert_eq!(r["error"]["code"], "too_many_rooms", "{r}");
    join(&mut c, "a").await; // joining again is not a new room
    c.request(json!({"op": "leave", "room": "b"})).await.unwrap();
    join(&mut c, "d").await;
}

#[tokio::test]
async fn silent_clients_are_closed_with_4001_and_pongs_keep_clients_alive() {
    let gw = Gateway::start(&["--heartbeat", "300ms", "--pong-timeout", "300ms"]);
    let mut opts = gw.options(Some(&gw.token("mute")));
    opts.auto_pong = false;
    let mut mute = Client::connect(opts).await.unwrap();
    let mut polite = gw.json("polite").await;
    let started = Instant::now();
    assert_eq!(mute.wait_close(T).await.unwrap(), Some(4001));
    assert!(started.elapsed() >= Duration::from_millis(500), "only after a ping went unanswered");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    still_served(&mut polite).await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_and_others_are_unaffected() {
    let gw = Gateway::start(&[
        "--queue-bytes",
        "4194304",
        "--write-timeout",
        "2s",
        "--rate-per-sec",
        "1000",
        "--rate-burst",
        "1000",
    ]);
    let mut opts = gw.options(Some(&gw.token("sloth")));
    opts.read = false;
    let sloth = Client::connect(opts).await.unwrap();
    // It cannot read replies either: join without waiting.
    sloth.send_json(&json!({"op": "join", "room": "busy"})).await.unwrap();
    let mut reader = gw.json("reader").await;
    let mut publisher = gw.json("publisher").await;
    join(&mut reader, "busy").await;
    join(&mut publisher, "busy").await;
    let members = publisher.request(json!({"op": "members", "room": "busy"})).await.unwrap();
    assert_eq!(members["count"], 3, "{members}");

    // ~12 MiB through a room: far more than the sloth's 4 MiB queue and its
    // socket buffers; the others read as they go and never come near theirs.
    let blob = "x".repeat(48 * 1024);
    let n = 250;
    let receive = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < n {
            let m = reader.next_of_type("message", Duration::from_secs(20)).await.unwrap();
            seqs.push(m["seq"].as_u64().unwrap());
        }
        (seqs, reader)
    });
    for i in 0..n {
        // Acked one by one: the publisher reads (and stashes) its own echoes.
        publish(&mut publisher, "busy", json!({"i": i, "blob": blob})).await;
    }
    let (seqs, mut reader) = receive.await.unwrap();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "the reading member got everything in order");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = gw.metrics().await;
        let slow = metric(&m, "switchboard_gateway_disconnects_total{code=\"4000\"}");
        if slow >= 1.0 {
            assert!(metric(&m, "switchboard_gateway_drops_total") >= 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "the sloth was never dropped:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let members = publisher.request(json!({"op": "members", "room": "busy"})).await;
    assert_eq!(members.unwrap()["count"], 2, "the sloth left the room");
    still_served(&mut reader).await;
    drop(sloth);
}

#[tokio::test]
async fn a_write_delay_batches_deliveries_and_never_holds_replies() {
    const DELAY: Duration = Duration::from_millis(1500);
    let gw = Gateway::start(&["--write-delay", "1500ms"]);
    let mut member = gw.json("member").await;
    let mut publisher = gw.json("publisher").await;
    join(&mut member, "batched").await;
    join(&mut publisher, "batched").await;
    let before = gw.metrics().await;
    let started = Instant::now();
    for i in 0..5 {
        // Acked one by one: each reply came before the delay was up.
        let r = publisher.request(json!({"op": "publish", "room": "batched", "data": i})).await.unwrap();
        assert_eq!(r["ok"], true, "{r}");
    }
    assert!(started.elapsed() < DELAY, "replies are written at once: {:?}", started.elapsed());
    for i in 0..5 {
        let m = member.next_of_type("message", T).await.unwrap();
        assert_eq!(m["data"], i);
    }
    assert!(started.elapsed() >= DELAY - Duration::from_millis(100), "deliveries waited for company");
    let after = gw.metrics().await;
    let delta = |name| metric(&after, name) - metric(&before, name);
    // The member's five in one write (the publisher's echoes ride with its
    // replies).
    let (frames, writes) = (delta("switchboard_gateway_frames_out_total"), delta("switchboard_gateway_writes_total"));
    assert!(frames - writes >= 4.0, "{frames} frames in {writes} writes");
}

#[tokio::test]
async fn connection_caps_and_handshake_admission_answer_1013() {
    let gw = Gateway::start(&["--max-connections", "2"]);
    let _a = gw.json("a").await;
    let _b = gw.json("b").await;
    let mut c = Client::connect(gw.options(Some(&gw.token("c")))).await.unwrap();
    assert_eq!(c.wait_close(T).await.unwrap(), Some(1013));

    let gw = Gateway::start(&["--max-connections-per-ip", "1"]);
    let _a = gw.json("a").await;
    let mut c = Client::connect(gw.options(Some(&gw.token("b")))).await.unwrap();
    assert_eq!(c.wait_close(T).await.unwrap(), Some(1013));
    // Another loopback address is another client IP.
    let mut opts = ConnectOptions::new(gw.url_with_token(&gw.token("b")));
    opts.source = Some("127.0.0.2".parse().unwrap());
    let mut c = Client::connect(opts).await.unwrap();
    c.next_of_type("hello", T).await.unwrap();

    let gw = Gateway::start(&["--handshake-rate", "1", "--handshake-burst", "3"]);
    let mut codes = Vec::new();
    let mut kept = Vec::new();
    let started = Instant::now();
    for i in 0..6 {
        let mut c = Client::connect(gw.options(Some(&gw.token(&format!("u{i}"))))).await.unwrap();
        match c.next_json(T).await {
            Ok(v) => {
                assert_eq!(v["type"], "hello");
                kept.push(c);
            }
            Err(loadtest::client::ClientError::Closed(code)) => codes.push(code),
            Err(e) => panic!("{e}"),
        }
    }
    // The burst, plus one a second for the time the attempts took.
    let refilled = started.elapsed().as_secs_f64().floor() as usize;
    assert!(kept.len() >= 3 && kept.len() <= 3 + refilled, "{} admitted in {:?}", kept.len(), started.elapsed());
    assert!(!codes.is_empty() && codes.iter().all(|c| *c == Some(1013)), "{codes:?}");
    let m = gw.metrics().await;
    let refused = metric(&m, "switchboard_gateway_connections_rejected_total{reason=\"handshake_rate\"}");
    assert_eq!(refused, codes.len() as f64, "{m}");
}

#[tokio::test]
async fn recent_messages_stay_within_the_gateways_budget() {
    const BUDGET: f64 = 20_000.0;
    let gw = Gateway::start(&["--recent-bytes", "20000", "--rate-per-sec", "10000", "--rate-burst", "10000"]);
    let mut c = gw.json("chatty").await;
    let rooms: Vec<String> = (0..10).map(|i| format!("budget-{i}")).collect();
    for room in &rooms {
        join(&mut c, room).await;
    }
    // Each message is counted as about 1 KB: 400 kept unbounded, 40 at most
    // with the budget (the budget, then each room's newest four).
    let data = "x".repeat(400);
    for room in &rooms {
        for _ in 0..40 {
            publish(&mut c, room, json!(data)).await;
        }
    }
    for _ in 0..rooms.len() * 40 {
        c.next_of_type("message", T).await.expect("every message delivered");
    }
    let recent = metric(&gw.metrics().await, "switchboard_gateway_room_buffer_bytes{buffer=\"recent\"}");
    assert!(recent > 0.0, "rooms keep their newest messages");
    assert!(recent <= BUDGET + 10.0 * 4.0 * 1_100.0, "{recent} bytes kept against a budget of {BUDGET}");
}
