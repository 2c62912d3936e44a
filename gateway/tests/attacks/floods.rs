//! Floods: pings, connections from one IP, handshake storms.

use super::*;

// Floods. limits.rs covers frames past the rate (rate_limited, then 4002),
// the per-IP cap and the handshake rate one connection at a time, and the
// client that never reads (4000).

#[tokio::test]
async fn a_ping_frame_flood_is_closed_with_4002() {
    let gw = Gateway::start(&[]);
    let mut bystander = Bystander::start(&gw).await;
    let mut c = gw.json("pinger").await;
    for _ in 0..2000 {
        if c.send_frame(true, OpCode::Ping, b"p".to_vec()).await.is_err() {
            break;
        }
    }
    assert_eq!(c.wait_close(T).await.unwrap(), Some(4002));

    // The same before authenticating: the auth timeout is not a free pass.
    let mut c = Client::connect(gw.options(None)).await.unwrap();
    for _ in 0..2000 {
        if c.send_frame(true, OpCode::Ping, b"p".to_vec()).await.is_err() {
            break;
        }
    }
    assert_eq!(c.wait_close(T).await.unwrap(), Some(4002), "unauthenticated ping flood");
    bystander.check(&gw).await;
}

#[tokio::test]
async fn a_connection_flood_from_one_ip_gets_1013_past_the_cap() {
    let gw = Gateway::start(&["--max-connections-per-ip", "20"]);
    // The bystander comes from another loopback address: another client IP.
    let mut opts = gw.options(Some(&gw.token("bystander")));
    opts.source = Some("127.0.0.2".parse().unwrap());
    let mut old = Client::connect(opts).await.unwrap();
    old.next_of_type("hello", T).await.unwrap();
    join(&mut old, "calm").await;

    let attempts = (0..60).map(|i| {
        let opts = gw.options(Some(&gw.token(&format!("f{i}"))));
        async move {
            let mut c = Client::connect(opts).await.expect("the upgrade completes");
            match c.next_json(T).await {
                Ok(hello) => {
                    assert_eq!(hello["type"], "hello");
                    (Some(c), None)
                }
                Err(ClientError::Closed(code)) => (None, code),
                Err(e) => panic!("{e}"),
            }
        }
    });
    let results = join_all(attempts).await;
    let admitted = results.iter().filter(|r| r.0.is_some()).count();
    let refused: Vec<Option<u16>> = results.iter().filter(|r| r.0.is_none()).map(|r| r.1).collect();
    assert_eq!(admitted, 20, "{refused:?}");
    assert_eq!(refused, vec![Some(1013); 40]);
    still_served(&mut old).await;
    let seq = publish(&mut old, "calm", json!(1)).await;
    assert_eq!(old.next_of_type("message", T).await.unwrap()["seq"].as_u64(), Some(seq));

    // Once the flood goes away its places are free again.
    drop(results);
    let deadline = Instant::now() + T;
    loop {
        let mut c = Client::connect(gw.options(Some(&gw.token("later")))).await.unwrap();
        match c.next_json(T).await {
            Ok(hello) if hello["type"] == "hello" => break,
            other => assert!(Instant::now() < deadline, "places never freed: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_storm_gets_1013_while_an_existing_client_keeps_being_served() {
    let gw = Gateway::start(&["--handshake-rate", "20", "--handshake-burst", "20"]);
    let mut old = gw.json("bystander").await;
    join(&mut old, "calm").await;

    // The existing client keeps publishing and timing its round trips.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || rounds < 5 {
                let started = Instant::now();
                publish(&mut old, "calm", json!(rounds)).await;
                old.next_of_type("message", T).await.expect("the existing client still receives");
                worst = worst.max(started.elapsed());
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (worst, rounds)
        })
    };

    let started = Instant::now();
    let attempts = (0..300).map(|i| {
        let opts = gw.options(Some(&gw.token(&format!("s{i}"))));
        tokio::spawn(async move {
            let mut c = Client::connect(opts).await.expect("the upgrade completes");
            match c.next_json(T).await {
                Ok(hello) => {
                    assert_eq!(hello["type"], "hello");
                    None
                }
                Err(ClientError::Closed(code)) => Some(code),
                Err(e) => panic!("{e}"),
            }
        })
    });
    let results: Vec<Option<Option<u16>>> = join_all(attempts).await.into_iter().map(Result::unwrap).collect();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, rounds) = prober.await.unwrap();

    let admitted = results.iter().filter(|r| r.is_none()).count();
    let refused: Vec<_> = results.iter().flatten().collect();
    eprintln!(
        "storm: {admitted} admitted, {} refused in {took:?}; bystander worst round trip {worst:?} over {rounds}",
        refused.len()
    );
    assert!(refused.iter().all(|c| **c == Some(1013)), "{refused:?}");
    // The burst (less the bystander's) plus what the rate refilled meanwhile.
    let allowed = 20.0 + 20.0 * took.as_secs_f64() + 1.0;
    assert!((admitted as f64) <= allowed, "{admitted} admitted, at most {allowed} allowed");
    assert!(refused.len() >= 300 - allowed as usize);
    assert!(worst < Duration::from_secs(2), "the existing client's round trips stay reasonable: {worst:?}");
}

/// Opens a connection and says what the gateway did: `Ok(())` for a hello,
/// or the close code.
async fn outcome(opts: loadtest::client::ConnectOptions, auth_frame: Option<String>) -> Result<(), Option<u16>> {
    let mut c = Client::connect(opts).await.map_err(|_| None)?;
    if let Some(token) = auth_frame {
        let _ = c.send_json(&json!({"op": "auth", "token": token})).await;
    }
    match c.wait_json(T, |v| v["type"] == "hello").await {
        Ok(_) => Ok(()),
        Err(ClientError::Closed(code)) => Err(code),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_never_use_the_budget_of_valid_tokens() {
    // One IP for everyone, as behind a load balancer.
    let gw = Gateway::start(&["--handshake-rate", "20", "--handshake-burst", "20"]);
    let forged = mint(&SigningKey::hs256(b"not-the-gateway-secret-but-32-bytes".to_vec()), &spec("eve", 3600));
    // 60 forged tokens in the upgrade, 60 in auth frames, all at once.
    let upgrades = (0..60).map(|_| outcome(gw.options(Some(&forged)), None));
    let frames = (0..60).map(|_| outcome(gw.options(None), Some(forged.clone())));
    let (upgrades, frames) = tokio::join!(join_all(upgrades), join_all(frames));
    let codes: Vec<Option<u16>> =
        upgrades.into_iter().chain(frames).map(|r| r.expect_err("a forged token got in")).collect();
    assert!(codes.iter().all(|c| matches!(c, Some(4500) | Some(1013))), "{codes:?}");
    assert!(codes.contains(&Some(4500)), "failures within their budget are told why: {codes:?}");
    // A legitimate user still gets in: the 20 handshakes are all theirs.
    for i in 0..20 {
        assert_eq!(outcome(gw.options(Some(&gw.token(&format!("ok{i}")))), None).await, Ok(()), "user {i}");
    }
    let m = gw.metrics().await;
    let shed = metric(&m, "switchboard_gateway_connections_rejected_total{reason=\"auth_failure_rate\"}");
    let told = metric(&m, "switchboard_gateway_connections_rejected_total{reason=\"unauthorized\"}");
    assert_eq!(shed + told, 120.0, "every failure counted once: {shed} shed, {told} told");
    assert!(metric(&m, "switchboard_gateway_connections_rejected_total{reason=\"handshake_rate\"}") == 0.0);
}

#[tokio::test]
async fn unfinished_handshakes_count_toward_the_connection_caps() {
    let gw = Gateway::start(&["--max-connections-per-ip", "10", "--header-timeout", "3s"]);
    let addr = ws_addr(&gw);
    // Ten connections that never finish their request take every place.
    let mut idle = Vec::new();
    for _ in 0..10 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(outcome(gw.options(Some(&gw.token("late"))), None).await, Err(Some(1013)), "the IP is full");
    // Another address still gets in, and once they go the places are free.
    let mut opts = gw.options(Some(&gw.token("other")));
    opts.source = Some("127.0.0.2".parse().unwrap());
    assert_eq!(outcome(opts, None).await, Ok(()));
    drop(idle);
    let deadline = Instant::now() + T;
    while outcome(gw.options(Some(&gw.token("late"))), None).await != Ok(()) {
        assert!(Instant::now() < deadline, "places never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
