//! A reconnect storm against handshake admission.

use super::*;

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
        first_source: 1,
        prefix: String::new(),
        connect_rate: 100.0,
        tls: None,
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
