//! Gateways: killed and restarted, cut off from NATS, and a gap fill bigger than a member's queue.

use super::*;

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
        outages.push(outage(cut_at, Instant::now() + Duration::from_secs(1)));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let report = load.stop(Duration::from_secs(2)).await;
    assert_nothing_lost_outside(&report, &outages);
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
