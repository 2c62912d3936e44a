//! Presence replicas: users split over them; one killed, one added.

use super::*;
use loadtest::client::Client;

/// `switchboard_presence_sessions` of a presence process.
async fn sessions(p: &support::process::Proc) -> f64 {
    let admin = p.printed("admin").expect("an admin line");
    metric(&http_get(&admin).await.1, "switchboard_presence_sessions")
}

/// Presence of `users` as `asker` gets it: (online flags, degraded).
async fn ask(asker: &mut Client, users: &[String]) -> (Vec<bool>, bool) {
    let r = asker.request(json!({"op": "presence", "users": users})).await.unwrap();
    assert_eq!(r["ok"], true, "presence always answers: {r}");
    let online = r["users"].as_array().unwrap().iter().map(|u| u["online"] == true).collect();
    (online, r["degraded"] == true)
}

/// Asks about every user, 100 at a time, until all are online from
/// presence itself (not degraded); returns how long that took.
async fn all_online(asker: &mut Client, users: &[String], limit: Duration) -> Duration {
    let start = Instant::now();
    'again: loop {
        assert!(start.elapsed() < limit, "not every connected user online within {limit:?}");
        for chunk in users.chunks(100) {
            let (online, degraded) = ask(asker, chunk).await;
            if degraded || online.contains(&false) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'again;
            }
        }
        return start.elapsed();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_replicas_split_users_and_move_them_without_a_flap_when_one_dies_or_joins() {
    let mut cluster = Cluster::start_replicated(1, 2, 2).await;
    let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let mut connected = Vec::new();
    for (i, user) in users.iter().enumerate() {
        connected.push(cluster.gateways[i % 2].json(user).await);
    }
    let mut watcher = cluster.gateways[0].json("watcher").await;
    for watched in users[..300].chunks(100) {
        let r = watcher.request(json!({"op": "watch", "users": watched})).await.unwrap();
        assert_eq!(r["ok"], true, "{r}");
    }
    let mut asker = cluster.gateways[1].json("asker").await;
    all_online(&mut asker, &users, Duration::from_secs(10)).await;

    // Split by the ring: each replica holds 40–60% of the sessions.
    let (one, two) = (cluster.presence.as_ref().unwrap(), &cluster.replicas[0]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (a, b) = loop {
        let (a, b) = (sessions(one).await, sessions(two).await);
        // The watcher and the asker are users too.
        if a + b == 1002.0 {
            break (a, b);
        }
        assert!(Instant::now() < deadline, "sessions never added up: {a} + {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!((400.0..=600.0).contains(&a) && (400.0..=600.0).contains(&b), "users split {a} / {b}");

    // Lose a replica: every query answers (degraded while its users have
    // no replica), and within one lease interval (5 s) every user is online
    // on the survivor.
    cluster.replicas[0].kill9();
    let killed = Instant::now();
    // Direct messages sent meanwhile reach their users: some find no
    // replica (every gateway is asked), some a survivor that does not know
    // the user's session yet (queued, and taken once the snapshot names it).
    for (i, user) in users.iter().enumerate().take(20) {
        let r = asker.request(json!({"op": "send", "user": user, "data": i})).await.unwrap();
        assert_eq!(r["ok"], true, "{r}");
    }
    for (i, conn) in connected.iter_mut().enumerate().take(20) {
        let dm = conn.next_of_type("direct", Duration::from_secs(8)).await.unwrap();
        assert_eq!((dm["from"].as_str(), dm["data"].as_u64()), (Some("asker"), Some(i as u64)), "{dm}");
    }
    let took = all_online(&mut asker, &users, Duration::from_secs(6)).await;
    eprintln!("replica killed: every user online again after {:?}", killed.elapsed().max(took));
    // Online answers can come before the last snapshot report lands (a query
    // whose replica call fails is answered from the gateway's own view): the
    // sessions themselves must be on the survivor within one lease interval.
    let survivor = cluster.presence.as_ref().unwrap();
    while sessions(survivor).await != 1002.0 {
        assert!(
            killed.elapsed() < Duration::from_secs(6),
            "the survivor holds {} of 1002 sessions",
            sessions(survivor).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A replica joins: users move to it; the one that gave them away drops
    // them silently.
    cluster.start_replica();
    cluster.wait_presence_ring(2).await;
    let (one, three) = (cluster.presence.as_ref().unwrap(), &cluster.replicas[1]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (a, c) = (sessions(one).await, sessions(three).await);
        if a + c == 1002.0 && c > 0.0 {
            assert!((400.0..=600.0).contains(&c), "the new replica took its share: {a} / {c}");
            break;
        }
        assert!(Instant::now() < deadline, "users never moved to the new replica: {a} / {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    all_online(&mut asker, &users, Duration::from_secs(5)).await;

    // Past the offline grace (5 s): nobody who stayed connected was ever
    // reported offline to a watcher.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut events = 0;
    while let Ok(e) = watcher.next_of_type("presence", Duration::from_millis(200)).await {
        assert_eq!(e["online"], true, "a connected user was reported offline: {e}");
        events += 1;
    }
    eprintln!("watcher saw {events} presence events, none offline");
    drop(connected);
}
