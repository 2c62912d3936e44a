//! Fault injection over a real local cluster (nats-server, presence, two
//! routers, two gateways as separate processes) with a chat load running.
//!
//! Every case asserts the same three things: no message acknowledged to a
//! publisher is lost for members that stay connected or resume within the
//! history window; every loss of continuity reaches clients as `resync`,
//! never silently; and service returns within the stated time.
//!
//! `SB_FAULT_ROUNDS=N` repeats each fault N times in one cluster (the long
//! version; run it with `--test-threads 1`).

mod support;

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadtest::scenario::reconnect::Reconnect;
use loadtest::scenario::{Protocol, Target};
use loadtest::stats::Stats;
use loadtest::token::SigningKey;
use proto::pb;
use serde_json::json;
use support::cluster::Cluster;
use support::load::{assert_flawless, assert_nothing_lost_outside, chat, wait_rooms_serve, ROOMS};
use support::partition::Partition;
use support::*;

/// How many times each fault is injected (`SB_FAULT_ROUNDS`, default 1).
fn rounds() -> usize {
    std::env::var("SB_FAULT_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1)
}

/// Waits until `/readyz` of `admin` answers `want` (200 or 503); returns the body.
async fn wait_readyz(admin: &str, want: u16, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (status, body) = http_get(&format!("{admin}/readyz")).await;
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "{admin}/readyz never answered {want} within {limit:?}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resyncs the gateways sent, from their metrics.
async fn gateway_resyncs(cluster: &Cluster) -> f64 {
    let mut sum = 0.0;
    for g in &cluster.gateways {
        sum += metric(&g.metrics().await, "switchboard_gateway_resyncs_total");
    }
    sum
}

/// Waits until the owner lists all `members` members of every load room.
async fn wait_members_listed(cluster: &Cluster, members: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut api = cluster.rooms_api(0).await;
    for i in 0..ROOMS {
        loop {
            let call = pb::MembersCall { room: format!("chat-{i}"), limit: 10 };
            let count = api.members(call).await.map(|r| r.into_inner().count).unwrap_or(0);
            if count == members {
                break;
            }
            assert!(Instant::now() < deadline, "chat-{i} lists {count} members, not {members}, after {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Takes router 0 out with `out` under load and asserts its rooms serve
/// again on the survivor within `limit` (their members get `resync`); then
/// brings it back with `back` and asserts it takes rooms back by handoff,
/// which changes no epoch: no new `resync`, nothing lost.
async fn router_out_and_back(out: fn(&mut Cluster), back: fn(&mut Cluster), limit: Duration) {
    let mut cluster = Cluster::start(2, 2).await;
    let load = chat(&cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut outages: Vec<Range<Instant>> = Vec::new();
    for round in 0..rounds() {
        let at = Instant::now();
        out(&mut cluster);
        // The survivor is asked (wait_rooms_serve uses the last router).
        let took = wait_rooms_serve(&cluster, limit).await;
        outages.push(at..Instant::now());
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
async fn a_gateway_killed_and_restarted_its_clients_resume_elsewhere_and_lose_nothing() {
    let mut cluster = Cluster::start(2, 2).await;
    let mut watcher = cluster.gateways[1].json("watcher").await;
    join(&mut watcher, "chat-0").await;
    let mut ghost = cluster.gateways[0].json("ghost").await;
    join(&mut ghost, "chat-0").await;
    let load = chat(&cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.gateways[0].proc.kill9();
    drop(ghost);

    // The owner drops the dead gateway's members (unseen 5 s): the ones that
    // came back elsewhere count once, the others leave.
    let left = watcher.wait_json(Duration::from_secs(10), |v| v["type"] == "left" && v["user"] == "ghost").await;
    assert!(left.is_ok(), "the dead gateway's member is dropped with a left event");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = watcher.request(json!({"op": "members", "room": "chat-0"})).await.unwrap();
        if m["members"].as_array().unwrap().iter().all(|u| u["conns"].as_u64() == Some(1)) {
            break;
        }
        assert!(Instant::now() < deadline, "dead gateway's members never dropped: {m}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Restarted in place (same id and port), it serves again; later rounds
    // kill either gateway, and members bounce between them.
    for round in 0..rounds() {
        let i = round % 2;
        if round > 0 {
            cluster.gateways[i].proc.kill9();
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        cluster.restart_gateway(i);
        wait_readyz(&cluster.gateways[i].admin, 200, Duration::from_secs(10)).await;
        let mut fresh = cluster.gateways[i].json("fresh").await;
        join(&mut fresh, "chat-1").await;
        fresh.next_of_type("message", T).await.expect("the restarted gateway delivers");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let report = load.stop(Duration::from_secs(2)).await;
    let reconnects: u64 = report.members.iter().map(|m| m.reconnects).sum();
    assert!(reconnects >= 20, "half the members reconnect: {reconnects}");
    assert_flawless(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_killed_and_restarted_is_refilled_within_one_lease_interval() {
    let mut cluster = Cluster::start(1, 2).await;
    let load = chat(&cluster).await;
    let _a = cluster.gateways[0].json("ann").await;
    let _b = cluster.gateways[1].json("ben").await;
    let mut asker = cluster.gateways[0].json("asker").await;
    let online = |r: &serde_json::Value| -> Vec<bool> {
        r["users"].as_array().unwrap().iter().map(|u| u["online"].as_bool().unwrap()).collect()
    };
    let query = json!({"op": "presence", "users": ["ben"]});
    // Reports are batched: ben (on the other gateway) shows up within 100 ms.
    let deadline = Instant::now() + T;
    while online(&asker.request(query.clone()).await.unwrap()) != [true] {
        assert!(Instant::now() < deadline, "ben never online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The instance a presence process announces at start: a new one knows nobody.
    let instance = |c: &Cluster| c.presence.as_ref().unwrap().stdout[0].clone();
    for round in 0..rounds() {
        let before = instance(&cluster);
        cluster.presence.as_mut().unwrap().kill9();
        let body = wait_readyz(&cluster.gateways[0].admin, 503, Duration::from_secs(8)).await;
        assert!(body.contains("presence"), "/readyz names presence: {body}");
        cluster.start_presence();
        let restarted = Instant::now();
        assert_ne!(instance(&cluster), before, "a fresh presence service, with none of the old state");
        // Within one lease interval (5 s) the gateways have sent snapshots;
        // the bound adds start-up and polling slack.
        loop {
            let r = asker.request(query.clone()).await.unwrap();
            if r["ok"] == true && online(&r) == [true] {
                break;
            }
            assert!(restarted.elapsed() < Duration::from_secs(7), "ben not online again after a lease interval: {r}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("round {round}: presence refilled {:?} after restart", restarted.elapsed());
        wait_readyz(&cluster.gateways[0].admin, 200, Duration::from_secs(5)).await;
    }
    // Messaging never depended on presence.
    let report = load.stop(Duration::from_secs(2)).await;
    assert_flawless(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_and_restarted_everyone_reconnects_and_nothing_is_lost_silently() {
    let mut cluster = Cluster::start(2, 2).await;
    let load = chat(&cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut outages = Vec::new();
    for round in 0..rounds() {
        let killed_at = Instant::now();
        cluster.nats.kill9();
        let body = wait_readyz(&cluster.gateways[0].admin, 503, Duration::from_secs(5)).await;
        assert!(body.contains("broker"), "/readyz names the lost NATS connection: {body}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.nats.restart();
        let took = wait_rooms_serve(&cluster, Duration::from_secs(15)).await;
        eprintln!("round {round}: rooms serve {took:?} after NATS came back");
        // Events in flight when NATS went down may be lost; a second
        // covers the deliveries after the rooms serve again.
        outages.push(killed_at..Instant::now() + Duration::from_secs(1));
        cluster.wait_gateways_ready().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let report = load.stop(Duration::from_secs(3)).await;
    assert_nothing_lost_outside(&report, &outages);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cut_off_from_nats_heals_and_its_members_miss_nothing_silently() {
    let mut cluster = Cluster::without_gateways(2);
    let partition = Partition::start(cluster.nats.port).await;
    cluster.start_gateway_with("gw-1", &partition.url, &[]);
    cluster.start_gateway("gw-2");
    cluster.wait_ring(2).await;
    cluster.wait_gateways_ready().await;
    let load = chat(&cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut outages = Vec::new();
    for round in 0..rounds() {
        let cut_at = Instant::now();
        partition.cut();
        let body = wait_readyz(&cluster.gateways[0].admin, 503, Duration::from_secs(5)).await;
        assert!(body.contains("broker"), "/readyz names the lost NATS connection: {body}");
        // Longer than the 5 s after which owners drop an unseen gateway's
        // members: the gateway must register them again when it is back.
        tokio::time::sleep(Duration::from_secs(6)).await;
        partition.heal();
        wait_readyz(&cluster.gateways[0].admin, 200, Duration::from_secs(10)).await;
        eprintln!("round {round}: gw-1 ready {:?} after the cut", cut_at.elapsed());
        wait_members_listed(&cluster, 4, Duration::from_secs(5)).await;
        outages.push(cut_at..Instant::now() + Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let report = load.stop(Duration::from_secs(2)).await;
    assert_nothing_lost_outside(&report, &outages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_is_held_off_with_1013_and_everyone_comes_back() {
    let mut cluster = Cluster::without_gateways(2);
    let nats = cluster.nats.url.clone();
    cluster.start_gateway_with("gw-1", &nats, &["--handshake-rate", "200", "--handshake-burst", "100"]);
    cluster.wait_ring(2).await;
    cluster.wait_gateways_ready().await;
    let gw = &cluster.gateways[0];
    let mut bystander = gw.json("bystander").await;

    let target = Target {
        urls: vec![gw.ws.clone()],
        protocol: Protocol::Switchboard,
        key: Some(SigningKey::hs256(cluster.secret.as_bytes().to_vec())),
        sources: 1,
        connect_rate: 100.0,
    };
    let storm = Reconnect {
        connections: 500,
        rooms: 10,
        rate: 10.0,
        backoff: Duration::from_millis(100),
        backoff_cap: Duration::from_secs(2),
    };
    let stats = Arc::new(Stats::new());
    let run = tokio::spawn({
        let stats = stats.clone();
        async move { storm.run(&target, Duration::from_secs(10), stats).await }
    });
    // Throughout, the gateway stays alive and serves the bystander.
    while !run.is_finished() {
        let (status, _) = http_get(&format!("{}/healthz", gw.admin)).await;
        assert_eq!(status, 200, "the gateway must stay up through the storm");
        still_served(&mut bystander).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = run.await.unwrap();
    eprintln!("{}", report.table());
    assert_eq!(report.correctness_errors(), Vec::<String>::new());
    let refused = report.failures.iter().find(|(k, _)| k == "reconnect: close 1013").map_or(0, |(_, n)| *n);
    assert!(refused > 0, "admission must turn part of the storm away with 1013: {:?}", report.failures);
    let back = report.figures.iter().find(|(k, _, _)| k == "members back").map(|f| f.1);
    assert_eq!(back, Some(500.0), "every member comes back");
}

/// A room id that `ring` gives to `owner`, with `prefix`.
fn room_owned_by(ring: &router::ring::Ring, owner: &str, prefix: &str) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_fill_bigger_than_the_queue_arrives_paced_and_closes_nobody() {
    let mut cluster = Cluster::without_gateways(1);
    let partition = Partition::start(cluster.nats.port).await;
    // A queue smaller than one page of history (512 KiB).
    cluster.start_gateway_with("gw-1", &partition.url, &["--queue-bytes", "262144"]);
    cluster.start_gateway("gw-2");
    cluster.wait_ring(1).await;
    cluster.wait_gateways_ready().await;
    // A member on a slow link: a small receive buffer, and it stalls a while.
    let gw1 = &cluster.gateways[0];
    let mut opts = gw1.options(Some(&gw1.token("member")));
    opts.recv_buffer = Some(4096);
    let mut member = loadtest::client::Client::connect(opts).await.unwrap();
    member.next_of_type("hello", T).await.unwrap();
    join(&mut member, "gap").await;
    let mut publisher = cluster.gateways[1].json("publisher").await;
    join(&mut publisher, "gap").await;
    let first = publish(&mut publisher, "gap", json!("before")).await;
    assert_eq!(member.next_of_type("message", T).await.unwrap()["seq"].as_u64(), Some(first));
    member.pause_reading(true);

    // While gw-1 hears nothing, 1.2 MB goes by: more than the member's queue.
    partition.cut();
    wait_readyz(&cluster.gateways[0].admin, 503, Duration::from_secs(5)).await;
    let big = "x".repeat(60_000);
    for _ in 0..20 {
        publish(&mut publisher, "gap", json!(big)).await;
    }
    partition.heal();
    wait_readyz(&cluster.gateways[0].admin, 200, Duration::from_secs(10)).await;
    // The next message shows gw-1 the gap; it fills it from the owner.
    let mut last = publish(&mut publisher, "gap", json!("after")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    member.pause_reading(false);
    let mut next = first + 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    while next <= last {
        match member.wait_json(Duration::from_secs(1), |v| v["type"] == "message" || v["type"] == "resync").await {
            Ok(m) => {
                assert_eq!((m["type"].as_str(), m["seq"].as_u64()), (Some("message"), Some(next)), "{m}");
                next += 1;
            }
            // gw-1 subscribed again only after that one: another shows it the gap.
            Err(loadtest::client::ClientError::Timeout) => {
                assert!(Instant::now() < deadline, "the gap was never filled: at {next}");
                last = publish(&mut publisher, "gap", json!("after")).await;
            }
            Err(e) => panic!("after seq {}: {e:?}", next - 1),
        }
    }
    still_served(&mut member).await;
    let gw1 = cluster.gateways[0].metrics().await;
    assert!(metric(&gw1, "switchboard_gateway_gap_fills_total") >= 1.0, "the gap was filled");
    assert_eq!(metric(&gw1, "switchboard_gateway_resyncs_total"), 0.0);
}
