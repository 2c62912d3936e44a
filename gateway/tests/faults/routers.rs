//! Routers: killed and restarted, paused past their TTL, and a request waiting on a killed owner.

use super::*;

/// Takes router 0 out with `out` under load and asserts its rooms serve
/// again on the survivor within `limit` (their members get `resync`); then
/// brings it back with `back` and asserts it takes rooms back by handoff,
/// which changes no epoch: no new `resync`, nothing lost.
pub(super) async fn router_out_and_back(out: fn(&mut Cluster), back: fn(&mut Cluster), limit: Duration) {
    let mut cluster = Cluster::start(2, 2).await;
    let load = chat(&cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut outages: Vec<Range<Instant>> = Vec::new();
    for round in 0..rounds() {
        let at = Instant::now();
        out(&mut cluster);
        // The survivor is asked (wait_rooms_serve uses the last router).
        let took = wait_rooms_serve(&cluster, limit).await;
        outages.push(outage(at, Instant::now()));
        eprintln!("round {round}: rooms serve again {took:?} after the fault");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let resyncs = gateway_resyncs(&cluster).await;
        back(&mut cluster);
        cluster.wait_ring(2).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(gateway_resyncs(&cluster).await, resyncs, "a returning router must take rooms back by handoff");
    }
    let report = load.stop(Duration::from_secs(2)).await;
    // Resync in the lost router's rooms, and only there.
    let ring = router::ring::Ring::new(["r-1", "r-2"], router::ring::DEFAULT_VNODES);
    let resynced = report.resynced_rooms();
    assert!(!resynced.is_empty(), "members of the lost router's rooms get resync");
    let elsewhere: Vec<&String> = resynced.iter().filter(|r| ring.owner(r) != Some("r-1")).collect();
    assert!(elsewhere.is_empty(), "rooms of the surviving router saw resync: {elsewhere:?}");
    assert_nothing_lost_outside(&report, &outages);
    let counts = cluster.room_counts().await;
    assert!(counts[0] > 0, "the returning router owns rooms again: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_and_restarted_serves_again_with_resync_only_for_its_rooms() {
    // Back with the same id, it takes its rooms back by handoff.
    router_out_and_back(|c| c.routers[0].proc.kill9(), |c| c.restart_router(0), Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_paused_past_its_ttl_does_not_serve_rooms_it_no_longer_owns() {
    // Unseen for its TTL (2 s), it is dead to everyone else. Resumed, it has
    // heard nothing for longer than its TTL: it drops its stale rooms and
    // rejoins empty. Serving them from its old state would switch members
    // back to the old epoch: a resync, or worse.
    router_out_and_back(
        |c| c.routers[0].proc.signal("STOP"),
        |c| c.routers[0].proc.signal("CONT"),
        Duration::from_secs(6),
    )
    .await;
}

/// A room id that `ring` gives to `owner`, with `prefix`.
pub(super) fn room_owned_by(ring: &router::ring::Ring, owner: &str, prefix: &str) -> String {
    (0..).map(|i| format!("{prefix}-{i}")).find(|r| ring.owner(r) == Some(owner)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_on_a_killed_owner_does_not_stall_the_connections_other_rooms() {
    // Pings every second: a stalled connection would also miss them.
    let mut cluster = Cluster::without_gateways(2);
    cluster.start_gateway_with("gw-1", &cluster.nats.url.clone(), &["--rate-per-sec", "1000", "--heartbeat", "1s"]);
    cluster.wait_ring(2).await;
    cluster.wait_gateways_ready().await;
    let ring = router::ring::Ring::new(["r-1", "r-2"], 128);
    let (busy, stalled) = (room_owned_by(&ring, "r-2", "busy"), room_owned_by(&ring, "r-1", "stalled"));
    let gw = &cluster.gateways[0];
    let mut member = gw.json("member").await;
    let start = join(&mut member, &busy).await["seq"].as_u64().unwrap();
    join(&mut member, &stalled).await;
    let mut publisher = gw.json("publisher").await;
    join(&mut publisher, &busy).await;

    // 16 KB at 100 messages a second: over 1 MiB (the queue) every second.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pump = {
        let (stop, busy) = (stop.clone(), busy.clone());
        tokio::spawn(async move {
            let data = "x".repeat(16_000);
            let mut last = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                last = publish(&mut publisher, &busy, json!(data)).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            last
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.routers[0].proc.kill9();
    let asked = Instant::now();
    // Waits for the killed owner's successor; meanwhile `busy` keeps coming.
    let r = member.request(json!({"op": "publish", "room": stalled, "data": "after the crash"})).await;
    let waited = asked.elapsed();
    let r = r.expect("a reply, not a close");
    assert!(r["ok"] == true || r["error"]["code"] == "unavailable", "{r}");
    eprintln!("the publish to the killed owner's room waited {waited:?}");
    assert!(waited > Duration::from_millis(500), "the request did wait for the new owner: {waited:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last = pump.await.unwrap();
    // Every message of the busy room, in order, and the connection still up.
    let mut next = start + 1;
    while next <= last {
        let m = member.wait_json(T, |v| v["type"] == "message" && v["room"] == busy.as_str()).await.unwrap();
        assert_eq!(m["seq"].as_u64(), Some(next), "{m}");
        next += 1;
    }
    still_served(&mut member).await;
    let resync = member.wait_json(Duration::from_millis(100), |v| v["type"] == "resync" && v["room"] == busy.as_str());
    assert!(
        matches!(resync.await, Err(loadtest::client::ClientError::Timeout)),
        "no resync for a room on the surviving owner"
    );
}
