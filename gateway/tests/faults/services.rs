//! The services every gateway needs: presence and NATS, killed and restarted.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_killed_and_restarted_is_refilled_within_one_lease_interval() {
    let mut cluster = Cluster::start(1, 2).await;
    let load = chat(&cluster).await;
    let _a = cluster.gateways[0].json("ann").await;
    let mut ben = cluster.gateways[1].json("ben").await;
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
        // Presence down degrades answers; the gateway stays ready.
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let (status, body) = http_get(&format!("{}/readyz", cluster.gateways[0].admin)).await;
            assert_eq!(status, 200, "presence down must not make a gateway unready: {body}");
            if body.contains("degraded: presence") {
                break;
            }
            assert!(Instant::now() < deadline, "/readyz never named presence as degraded: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(metric(&cluster.gateways[0].metrics().await, "switchboard_gateway_presence_degraded"), 1.0);
        // New connections are accepted; presence answers from the gateway's
        // own connections and says so.
        let mut late = cluster.gateways[0].json("late").await;
        let r = late.request(json!({"op": "presence", "users": ["ann", "ben"]})).await.unwrap();
        assert_eq!((r["ok"].as_bool(), r["degraded"].as_bool()), (Some(true), Some(true)), "{r}");
        assert_eq!(online(&r), [true, false], "ann is connected here, ben only elsewhere: {r}");
        // Direct messages still reach connected users, wherever they are
        // (every gateway is asked); an offline user's cannot be kept.
        let r = late.request(json!({"op": "send", "user": "ben", "data": round})).await.unwrap();
        assert_eq!((r["ok"].as_bool(), r["delivered"].as_bool()), (Some(true), Some(true)), "{r}");
        let dm = ben.next_of_type("direct", T).await.unwrap();
        assert_eq!((dm["from"].as_str(), dm["data"].as_u64()), (Some("late"), Some(round as u64)), "{dm}");
        let r = late.request(json!({"op": "send", "user": "nobody", "data": 1})).await.unwrap();
        assert_eq!(r["error"]["code"], "unavailable", "{r}");
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
        outages.push(outage(killed_at, Instant::now() + Duration::from_secs(1)));
        cluster.wait_gateways_ready().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let report = load.stop(Duration::from_secs(3)).await;
    assert_nothing_lost_outside(&report, &outages);
}
