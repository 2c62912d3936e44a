//! Room hoarding: thousands of joins on one connection.

use super::*;

// Room hoarding.

/// Pipelines `n` joins of rooms `room-0..n` and reads until every reply is
/// in or the connection closes. Returns (reply codes by room index: "ok" or
/// the error code, the close code if it closed).
async fn join_many(c: &mut Client, n: usize) -> (Vec<Option<String>>, Option<Option<u16>>) {
    let mut codes = vec![None; n];
    for i in 0..n {
        let frame = json!({"op": "join", "room": format!("room-{i}"), "id": i});
        if c.send_json(&frame).await.is_err() {
            break;
        }
    }
    let mut answered = 0;
    while answered < n {
        match c.next_json(Duration::from_secs(20)).await {
            Ok(v) if v["type"] == "reply" => {
                let i = v["id"].as_u64().unwrap() as usize;
                let code = if v["ok"] == true { "ok" } else { v["error"]["code"].as_str().unwrap() };
                assert!(codes[i].is_none(), "two replies for one request: {v}");
                codes[i] = Some(code.to_owned());
                answered += 1;
            }
            Ok(_) => {}
            Err(ClientError::Closed(code)) => return (codes, Some(code)),
            Err(e) => panic!("after {answered} replies: {e}"),
        }
    }
    (codes, None)
}

#[tokio::test]
async fn ten_thousand_joins_on_one_connection_stop_at_the_room_cap() {
    // A rate limit that lets the whole burst through: only the room cap answers.
    let gw = Gateway::start(&["--rate-per-sec", "100000", "--rate-burst", "100000"]);
    let mut bystander = Bystander::start(&gw).await;
    let token = gw.token("hoarder");
    let mut c = Client::connect(gw.options(Some(&token))).await.unwrap();
    c.next_of_type("hello", T).await.unwrap();
    let started = Instant::now();
    let (codes, closed) = join_many(&mut c, 10_000).await;
    eprintln!("10,000 joins answered in {:?}", started.elapsed());
    assert_eq!(closed, None, "the connection stays open");
    let ok: Vec<usize> = (0..codes.len()).filter(|&i| codes[i].as_deref() == Some("ok")).collect();
    assert_eq!(ok, (0..128).collect::<Vec<_>>(), "exactly the first 128 rooms");
    assert!(codes[128..].iter().all(|c| c.as_deref() == Some("too_many_rooms")), "the rest: too_many_rooms");
    // The connection and its rooms still work.
    let seq = publish(&mut c, "room-127", json!("still mine")).await;
    let m = c.wait_json(T, |v| v["type"] == "message" && v["room"] == "room-127").await.unwrap();
    assert_eq!(m["seq"].as_u64(), Some(seq));
    still_served(&mut c).await;

    // More connections of the same token may each join up to the cap.
    let mut others = Vec::new();
    for _ in 0..4 {
        let mut o = Client::connect(gw.options(Some(&token))).await.unwrap();
        o.next_of_type("hello", T).await.unwrap();
        let (codes, closed) = join_many(&mut o, 129).await;
        assert_eq!(closed, None);
        assert!(codes[..128].iter().all(|c| c.as_deref() == Some("ok")), "each connection joins 128");
        assert_eq!(codes[128].as_deref(), Some("too_many_rooms"));
        others.push(o);
    }
    let members = c.request(json!({"op": "members", "room": "room-0"})).await.unwrap();
    assert_eq!((members["count"].as_u64(), members["members"][0]["conns"].as_u64()), (Some(1), Some(5)), "{members}");
    bystander.check(&gw).await;
}

#[tokio::test]
async fn ten_thousand_joins_at_the_default_rate_are_rate_limited_then_closed_4002() {
    // The default rate (50/s) with a burst past the room cap, so both limits show.
    let gw = Gateway::start(&["--rate-burst", "200"]);
    let mut bystander = Bystander::start(&gw).await;
    let mut c = gw.json("hoarder").await;
    let (codes, closed) = join_many(&mut c, 10_000).await;
    assert_eq!(closed, Some(Some(4002)), "sustained flooding closes with 4002");
    let answered: Vec<&str> = codes.iter().flatten().map(String::as_str).collect();
    // A join's reply comes through the room's fanout, so the reply of one
    // accepted just before the close can be lost with the connection.
    let ok: Vec<usize> = (0..codes.len()).filter(|&i| codes[i].as_deref() == Some("ok")).collect();
    assert!(ok.len() >= 120 && ok.iter().all(|&i| i < 128), "the first rooms, never a 129th: {ok:?}");
    assert!(codes[..128].iter().all(|c| matches!(c.as_deref(), Some("ok") | None)), "{:?}", &codes[..128]);
    assert!(answered.contains(&"too_many_rooms") && answered.contains(&"rate_limited"), "{answered:?}");
    assert!(answered.iter().all(|c| ["ok", "too_many_rooms", "rate_limited"].contains(c)), "{answered:?}");
    bystander.check(&gw).await;
}

/// Joins `room` resuming after `seq` of `epoch`; returns `recovered`.
async fn recovered(c: &mut Client, room: &str, epoch: &str, seq: u64) -> bool {
    let r = c.request(json!({"op": "join", "room": room, "since": {"epoch": epoch, "seq": seq}})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    r["recovered"].as_bool().unwrap()
}

#[tokio::test]
async fn history_is_bounded_in_bytes_per_room_and_per_router_oldest_first() {
    // 200 KB per room, 1 MB for the router; 60 KB messages.
    let gw = Gateway::start(&["--history-bytes", "200000", "--history-budget", "1000000", "--rate-burst", "200"]);
    let mut m = gw.json("mallory").await;
    let big = json!("x".repeat(60_000));
    // One room: only the last three fit.
    let epoch = join(&mut m, "one").await["epoch"].as_str().unwrap().to_owned();
    for _ in 0..10 {
        publish(&mut m, "one", big.clone()).await;
    }
    let mut reader = gw.json("reader").await;
    assert!(!recovered(&mut reader, "one", &epoch, 6).await, "seq 7 was evicted by the room's bound");
    assert!(recovered(&mut reader, "one", &epoch, 7).await);
    // Forty rooms, 2.4 MB in all: the router keeps its budget, newest rooms first.
    let mut epochs = Vec::new();
    for i in 0..40 {
        let room = format!("many-{i}");
        epochs.push(join(&mut m, &room).await["epoch"].as_str().unwrap().to_owned());
        publish(&mut m, &room, big.clone()).await;
    }
    let metrics = gw.metrics().await;
    let held = metric(&metrics, "switchboard_router_history_bytes");
    assert!(held > 0.0 && held <= 1_000_000.0, "{held} bytes held");
    assert!(metric(&metrics, "switchboard_router_history_evicted_total") >= 25.0, "{metrics}");
    assert!(!recovered(&mut reader, "many-0", &epochs[0], 0).await, "the oldest went first");
    assert!(recovered(&mut reader, "many-39", &epochs[39], 0).await, "the newest stays");
}

#[tokio::test]
async fn watches_are_bounded_per_gateway() {
    let gw = Gateway::start(&["--max-watches", "50"]);
    let users = |from: usize, n: usize| (from..from + n).map(|i| format!("u{i}")).collect::<Vec<_>>();
    let mut a = gw.json("a").await;
    let mut b = gw.json("b").await;
    assert_eq!(a.request(json!({"op": "watch", "users": users(0, 30)})).await.unwrap()["ok"], true);
    let r = b.request(json!({"op": "watch", "users": users(30, 30)})).await.unwrap();
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("--max-watches"), "{r}");
    assert_eq!(b.request(json!({"op": "watch", "users": users(30, 20)})).await.unwrap()["ok"], true);
    // Unwatching, or leaving, frees the places.
    a.request(json!({"op": "unwatch", "users": users(0, 10)})).await.unwrap();
    assert_eq!(b.request(json!({"op": "watch", "users": users(50, 10)})).await.unwrap()["ok"], true);
    drop(a);
    let deadline = Instant::now() + T;
    loop {
        let r = b.request(json!({"op": "watch", "users": users(60, 20)})).await.unwrap();
        if r["ok"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "places never freed: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn one_client_address_holds_a_bounded_amount_of_memberships() {
    // 1 KiB of info: each membership costs about 2.5 KB; 20 KB allow 7.
    let gw = Gateway::start(&["--max-bytes-per-ip", "20000"]);
    let info = json!("i".repeat(1000));
    let token = gw.token_with(TokenSpec { info: Some(info), ..TokenSpec::new("hoarder", 3600) });
    let connect = |source: &'static str| {
        let mut opts = gw.options(Some(&token));
        opts.source = Some(source.parse().unwrap());
        async move {
            let mut c = Client::connect(opts).await.unwrap();
            c.next_of_type("hello", T).await.unwrap();
            c
        }
    };
    let (mut c1, mut c2) = (connect("127.0.0.1").await, connect("127.0.0.1").await);
    let (codes1, _) = join_many(&mut c1, 5).await;
    let (codes2, _) = join_many(&mut c2, 5).await;
    let ok = codes1.iter().chain(&codes2).filter(|c| c.as_deref() == Some("ok")).count();
    assert_eq!(ok, 7, "{codes1:?} {codes2:?}");
    assert!(codes2.iter().flatten().any(|c| c == "too_many_rooms"), "{codes2:?}");
    // Another address has its own allowance; a leave gives one back.
    let mut other = connect("127.0.0.3").await;
    join(&mut other, "room-0").await;
    let r = c1.request(json!({"op": "leave", "room": "room-0"})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    join(&mut c2, "elsewhere").await;
}

#[tokio::test]
async fn join_and_leave_churn_is_rate_limited() {
    // Plenty of frames allowed: only the join rate answers.
    let gw = Gateway::start(&["--rate-per-sec", "10000", "--rate-burst", "10000", "--max-info-bytes", "5000"]);
    let mut watcher = gw.json("watcher").await;
    join(&mut watcher, "stage").await;
    let info = json!("i".repeat(4_800));
    let token = gw.token_with(TokenSpec { info: Some(info), ..TokenSpec::new("churner", 3600) });
    let mut c = Client::connect(gw.options(Some(&token))).await.unwrap();
    c.next_of_type("hello", T).await.unwrap();
    let started = Instant::now();
    for i in 0..300 {
        let op = if i % 2 == 0 { "join" } else { "leave" };
        c.send_json(&json!({"op": op, "room": "stage", "id": i})).await.unwrap();
    }
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..300 {
        let r = c.next_of_type("reply", T).await.unwrap();
        let code = if r["ok"] == true { "ok" } else { r["error"]["code"].as_str().unwrap() };
        *codes.entry(code.to_owned()).or_default() += 1;
    }
    let took = started.elapsed().as_secs_f64();
    // The burst (128) plus 10 a second, then rate_limited.
    let allowed = (128.0 + 10.0 * took + 1.0) as usize;
    assert!(codes.get("ok").copied().unwrap_or(0) <= allowed, "{codes:?} in {took}s");
    assert!(codes.get("rate_limited").copied().unwrap_or(0) > 50, "{codes:?}");
    // A leave after a refused join finds nothing to leave.
    assert!(codes.keys().all(|c| ["ok", "rate_limited", "not_member"].contains(&c.as_str())), "{codes:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut events = 0;
    while watcher.wait_json(Duration::from_millis(100), |v| v["type"] == "joined").await.is_ok() {
        events += 1;
    }
    assert!(events <= allowed / 2 + 1, "{events} joined events at every member");
    still_served(&mut c).await;
}
