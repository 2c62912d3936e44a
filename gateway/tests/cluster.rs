//! The cluster: real nats-server, presence, routers and gateways as separate
//! processes, driven over real WebSockets and gRPC.

mod support;

use std::time::Duration;

use futures::StreamExt;

use loadtest::chat::{Chat, ChatConfig, ChatReport};
use loadtest::token::SigningKey;
use proto::pb;
use serde_json::json;
use support::cluster::{channel, Bearer, Cluster};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_and_two_routers_behave_as_one_service() {
    let cluster = Cluster::start(2, 2).await;
    let (gw1, gw2) = (&cluster.gateways[0], &cluster.gateways[1]);
    let mut alice = gw1.json("alice").await;
    let mut bob = gw2.json("bob").await;

    // Rooms, joined/left and members across gateways.
    join(&mut alice, "lobby").await;
    join(&mut bob, "lobby").await;
    let ev = alice.next_of_type("joined", T).await.unwrap();
    assert_eq!(ev["user"], "bob");
    let m = alice.request(json!({"op": "members", "room": "lobby"})).await.unwrap();
    assert_eq!(m["count"], 2, "{m}");

    // Interleaved publishers on two gateways: one order for everyone.
    for i in 0..10 {
        alice.send_json(&json!({"op": "publish", "room": "lobby", "data": {"a": i}})).await.unwrap();
        bob.send_json(&json!({"op": "publish", "room": "lobby", "data": {"b": i}})).await.unwrap();
    }
    let mut seen = Vec::new();
    for c in [&mut alice, &mut bob] {
        let mut got = Vec::new();
        while got.len() < 20 {
            let m = c.next_of_type("message", T).await.unwrap();
            got.push((m["seq"].as_u64().unwrap(), m["data"].to_string()));
        }
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "both gateways deliver the same order");
    assert!(seen[0].windows(2).all(|w| w[1].0 == w[0].0 + 1), "{:?}", seen[0]);

    // Direct messages and presence across gateways.
    let r = alice.request(json!({"op": "send", "user": "bob", "data": "psst"})).await.unwrap();
    assert_eq!(r["ok"], true);
    assert_eq!(bob.next_of_type("direct", T).await.unwrap()["from"], "alice");
    let mut carol = gw1.json("carol").await;
    carol.request(json!({"op": "watch", "users": ["dave"]})).await.unwrap();
    let dave = gw2.json("dave").await;
    let ev = carol.next_of_type("presence", T).await.unwrap();
    assert_eq!((ev["user"].as_str(), ev["online"].as_bool()), (Some("dave"), Some(true)), "{ev}");
    let r = carol.request(json!({"op": "presence", "users": ["dave", "alice", "nobody"]})).await.unwrap();
    let online: Vec<bool> = r["users"].as_array().unwrap().iter().map(|u| u["online"].as_bool().unwrap()).collect();
    assert_eq!(online, [true, true, false], "{r}");
    drop(dave);

    // The server API: any router forwards to the owner, and clients see it.
    let mut api = cluster.rooms_api(1).await;
    let seq = api
        .publish(pb::PublishCall {
            room: "lobby".into(),
            data: br#"{"from":"backend"}"#.to_vec().into(),
            from: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .seq;
    assert_eq!(seq, 21);
    for c in [&mut alice, &mut bob] {
        let m = c.next_of_type("message", T).await.unwrap();
        assert_eq!(
            (m["seq"].as_u64(), m["data"]["from"].as_str(), m["from"].as_str()),
            (Some(21), Some("backend"), Some(""))
        );
    }
    let members = api.members(pb::MembersCall { room: "lobby".into(), limit: 10 }).await.unwrap().into_inner();
    assert_eq!(members.count, 2);
    let history =
        api.history(pb::HistoryCall { room: "lobby".into(), since: None, limit: 5 }).await.unwrap().into_inner();
    assert_eq!(history.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [17, 18, 19, 20, 21]);
    let err =
        api.publish(pb::PublishCall { room: "a.b".into(), data: b"1".to_vec().into(), from: String::new() }).await;
    assert_eq!(err.unwrap_err().code(), tonic::Code::InvalidArgument);

    // Without the bearer token, both APIs refuse.
    let mut anon =
        pb::rooms_client::RoomsClient::with_interceptor(channel(&cluster.routers[0].grpc).await, Bearer(String::new()));
    assert_eq!(anon.stats(pb::StatsCall {}).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    let mut wrong = pb::gateway_admin_client::GatewayAdminClient::with_interceptor(
        channel(&cluster.gateways[0].grpc).await,
        Bearer("wrong".into()),
    );
    assert_eq!(wrong.stats(pb::GatewayStatsCall {}).await.unwrap_err().code(), tonic::Code::Unauthenticated);

    // The gateway admin API: stats and disconnect.
    let mut admin = cluster.admin_api(1).await;
    let stats = admin.stats(pb::GatewayStatsCall {}).await.unwrap().into_inner();
    assert_eq!((stats.id.as_str(), stats.connections), ("gw-2", 1));
    let call = pb::DisconnectCall { target: Some(pb::disconnect_call::Target::User("bob".into())), code: 4502 };
    assert_eq!(admin.disconnect(call).await.unwrap().into_inner().closed, 1);
    assert_eq!(bob.wait_close(T).await.unwrap(), Some(4502));
    let ev = alice.next_of_type("left", T).await.unwrap();
    assert_eq!(ev["user"], "bob");

    // Every binary exports its metrics.
    let router = http_get(&format!("{}/metrics", cluster.routers[0].admin)).await.1;
    assert_eq!(metric(&router, "switchboard_router_ring_size"), 2.0, "{router}");
    assert!(metric(&router, "switchboard_router_requests_total") > 0.0, "{router}");
    let presence_admin = cluster.presence.as_ref().unwrap().printed("admin").unwrap();
    let presence = http_get(&presence_admin).await.1;
    assert!(metric(&presence, "switchboard_presence_reports_total") > 0.0, "{presence}");
    assert!(presence.contains("switchboard_presence_users_online"), "{presence}");
    let gateway = cluster.gateways[0].metrics().await;
    assert_eq!(metric(&gateway, "switchboard_gateway_ring_size"), 2.0, "{gateway}");

    // Drain: clients get 1001 and the gateway stops being ready.
    let mut admin = cluster.admin_api(0).await;
    assert_eq!(admin.drain(pb::DrainCall {}).await.unwrap().into_inner().connections, 2);
    assert_eq!(alice.wait_close(T).await.unwrap(), Some(1001));
    let (status, body) = http_get(&format!("{}/readyz", cluster.gateways[0].admin)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not_draining"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_router_ops_answer_unavailable_within_the_bound() {
    let mut cluster = Cluster::start(1, 1).await;
    let mut c = cluster.gateways[0].json("ursula").await;
    join(&mut c, "lonely").await;
    cluster.routers[0].proc.kill9();
    for op in [json!({"op": "publish", "room": "lonely", "data": 1}), json!({"op": "join", "room": "other"})] {
        let started = std::time::Instant::now();
        let r = c.request(op).await.unwrap();
        assert_eq!(r["error"]["code"], "unavailable", "{r}");
        // The router client gives up after 5 s.
        assert!(started.elapsed() < Duration::from_secs(7), "bounded: {:?}", started.elapsed());
    }
    still_served(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_both_routers() {
    let cluster = Cluster::start(2, 1).await;
    let api = cluster.rooms_api(0).await;
    let calls = (0..1000).map(|i| {
        let mut api = api.clone();
        async move {
            let call = pb::PublishCall { room: format!("spread-{i}"), data: b"1".to_vec().into(), from: String::new() };
            api.publish(call).await.map(|_| ())
        }
    });
    // As a backend would: a bounded number of calls in flight.
    let results: Vec<_> = futures::stream::iter(calls).buffer_unordered(32).collect().await;
    assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
    // Owners report their rooms at their next sweep.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counts = cluster.room_counts().await;
    assert_eq!(counts.iter().sum::<u64>(), 1000, "{counts:?}");
    for c in &counts {
        assert!((350..=650).contains(c), "uneven spread: {counts:?}");
    }
}

/// A chat load over every gateway of `cluster`: 12 rooms of 4 members, two
/// publishers each, a message every 100 ms per publisher.
async fn chat(cluster: &Cluster) -> Chat {
    Chat::start(ChatConfig {
        urls: cluster.urls(),
        key: SigningKey::hs256(cluster.secret.as_bytes().to_vec()),
        rooms: 12,
        members_per_room: 4,
        publishers_per_room: 2,
        publish_every: Duration::from_millis(100),
        room_prefix: "chat-".into(),
    })
    .await
}

/// Asserts the load saw no gap, duplicate, silent epoch change or resync,
/// and that every acknowledged message reached every member.
fn assert_flawless(report: &ChatReport) {
    let errors: u64 = report.members.iter().map(|m| m.publish_errors).sum();
    let reconnects: u64 = report.members.iter().map(|m| m.reconnects).sum();
    eprintln!("acked {} publish errors {errors} reconnects {reconnects}", report.acked());
    assert!(report.acked() > 100, "too little traffic: {}", report.acked());
    assert_eq!(report.continuity_errors(), Vec::<String>::new());
    assert_eq!(report.resyncs(), 0, "no client may see a resync");
    let missing = report.missing(report.started);
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_joining_under_load_takes_rooms_over_without_a_gap() {
    let mut cluster = Cluster::start(2, 2).await;
    let load = chat(&cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.start_router();
    cluster.wait_ring(3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.stop(Duration::from_secs(2)).await;
    let counts = cluster.room_counts().await;
    assert!(counts[2] > 0, "the new router owns nothing: {counts:?}");
    assert_flawless(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_stopped_with_sigterm_hands_its_rooms_over() {
    let mut cluster = Cluster::start(2, 2).await;
    let load = chat(&cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = cluster.room_counts().await;
    assert!(before[0] > 0, "{before:?}");
    let status = tokio::task::block_in_place(|| cluster.routers[0].proc.terminate(Duration::from_secs(20)));
    assert!(status.success(), "router exit: {status:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop(Duration::from_secs(2)).await;
    assert_flawless(&report);
}

/// Waits until publishing to every room of the load succeeds again; returns
/// how long that took.
async fn wait_rooms_serve(cluster: &Cluster, rooms: usize, limit: Duration) -> Duration {
    let started = std::time::Instant::now();
    let mut api = cluster.rooms_api(cluster.routers.len() - 1).await;
    for i in 0..rooms {
        loop {
            let call =
                pb::PublishCall { room: format!("chat-{i}"), data: b"\"probe\"".to_vec().into(), from: String::new() };
            if api.publish(call).await.is_ok() {
                break;
            }
            assert!(started.elapsed() < limit, "chat-{i} did not serve again within {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_with_sigkill_comes_back_with_resync_and_loses_nothing_after() {
    let mut cluster = Cluster::start(2, 2).await;
    let load = chat(&cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = std::time::Instant::now();
    cluster.routers[0].proc.kill9();
    // The survivor is asked last (wait_rooms_serve uses the last router).
    let took = wait_rooms_serve(&cluster, 12, Duration::from_secs(5)).await;
    let recovered = std::time::Instant::now();
    eprintln!("rooms serve again {:?} after the kill ({:?} of waiting)", recovered - killed_at, took);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop(Duration::from_secs(2)).await;
    assert_eq!(report.continuity_errors(), Vec::<String>::new(), "losses are announced, never silent");
    assert!(report.resyncs() > 0, "members of the dead router's rooms get resync");
    let missing = report.missing(recovered);
    assert!(missing.is_empty(), "acknowledged after recovery but lost: {:?}", &missing[..missing.len().min(5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_with_sigkill_its_clients_resume_elsewhere() {
    let mut cluster = Cluster::start(2, 2).await;
    let mut watcher = cluster.gateways[1].json("watcher").await;
    join(&mut watcher, "chat-0").await;
    let mut ghost = cluster.gateways[0].json("ghost").await;
    join(&mut ghost, "chat-0").await;
    let load = chat(&cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.gateways[0].proc.kill9();
    drop(ghost);
    // Members reconnect to gw-2 with since: they miss nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.stop(Duration::from_secs(2)).await;
    let reconnects: u64 = report.members.iter().map(|m| m.reconnects).sum();
    assert!(reconnects >= 20, "half the members reconnect: {reconnects}");
    assert_flawless(&report);
    // The owner drops the dead gateway's members (5 s unseen): the ones
    // that came back count once, the others left.
    let left = watcher.wait_json(Duration::from_secs(10), |v| v["type"] == "left" && v["user"] == "ghost").await;
    assert!(left.is_ok(), "the dead gateway's member is dropped with a left event");
    let members = watcher.request(json!({"op": "members", "room": "chat-0"})).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut m = members;
    while m["members"].as_array().unwrap().iter().any(|u| u["conns"].as_u64() != Some(1)) {
        assert!(std::time::Instant::now() < deadline, "dead gateway's members never dropped: {m}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        m = watcher.request(json!({"op": "members", "room": "chat-0"})).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_everyone_reconnects_and_nothing_is_lost_silently() {
    let mut cluster = Cluster::start(2, 2).await;
    let load = chat(&cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.nats.kill9();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while http_get(&format!("{}/readyz", cluster.gateways[0].admin)).await.0 == 200 {
        assert!(std::time::Instant::now() < deadline, "/readyz must report the lost NATS connection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.nats.restart();
    let took = wait_rooms_serve(&cluster, 12, Duration::from_secs(15)).await;
    eprintln!("rooms serve {took:?} after NATS came back");
    let recovered = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.stop(Duration::from_secs(3)).await;
    assert_eq!(report.continuity_errors(), Vec::<String>::new(), "gaps are filled or resynced, never silent");
    let missing = report.missing(recovered + Duration::from_secs(1));
    assert!(missing.is_empty(), "acknowledged after recovery but lost: {:?}", &missing[..missing.len().min(5)]);
    cluster.wait_gateways_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_restarted_is_refilled_within_one_lease_interval() {
    let mut cluster = Cluster::start(1, 2).await;
    let _a = cluster.gateways[0].json("ann").await;
    let _b = cluster.gateways[1].json("ben").await;
    let mut asker = cluster.gateways[0].json("asker").await;
    let online = |r: &serde_json::Value| -> Vec<bool> {
        r["users"].as_array().unwrap().iter().map(|u| u["online"].as_bool().unwrap()).collect()
    };
    let query = json!({"op": "presence", "users": ["ben"]});
    // Reports are batched: ben (on the other gateway) shows up within 100 ms.
    let mut waited = Duration::ZERO;
    while online(&asker.request(query.clone()).await.unwrap()) != [true] {
        assert!(waited < T, "ben never online");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }

    cluster.presence.as_mut().unwrap().kill9();
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    loop {
        let (status, body) = http_get(&format!("{}/readyz", cluster.gateways[0].admin)).await;
        if status == 503 {
            assert!(body.contains("presence"), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "/readyz must report presence unreachable");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.start_presence();
    let restarted = std::time::Instant::now();
    let r = asker.request(query.clone()).await.unwrap();
    assert_eq!(online(&r), [false], "a fresh presence service knows nobody yet: {r}");
    // Within one lease interval (5 s) the gateways have sent snapshots; the
    // bound adds start-up and polling slack.
    loop {
        let r = asker.request(query.clone()).await.unwrap();
        if r["ok"] == true && online(&r) == [true] {
            break;
        }
        assert!(restarted.elapsed() < Duration::from_secs(7), "ben not online again after a lease interval: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("presence refilled {:?} after restart", restarted.elapsed());
}
