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
