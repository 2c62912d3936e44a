//! Routers on `--history-store jetstream` (nats-server with `-js`, its
//! store under the temp dir): a crashed owner costs a pause and nothing
//! else, a paused one is fenced out, and NATS restarting keeps the epochs.

use super::*;

/// A room id with `prefix` that the ring of `routers` gives to `owner`.
fn room_of(routers: &[&str], owner: &str, prefix: &str) -> String {
    let ring = router::ring::Ring::new(routers.iter().copied(), router::ring::DEFAULT_VNODES);
    super::routers::room_owned_by(&ring, owner, prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jetstream_a_router_killed_costs_a_pause_and_nothing_else() {
    let mut cluster = Cluster::start_durable(3, 2).await;
    let load = chat(&cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The last router answers wait_rooms_serve: kill the other two in turn.
    for round in 0..3 {
        let victim = round % 2;
        cluster.routers[victim].proc.kill9();
        let took = wait_rooms_serve(&cluster, Duration::from_secs(5)).await;
        eprintln!("round {round}: rooms serve again {took:?} after router {victim} was killed");
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.restart_router(victim);
        cluster.wait_ring(3).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let report = load.stop(Duration::from_secs(2)).await;
    assert_flawless(&report);
    assert_eq!(gateway_resyncs(&cluster).await, 0.0, "no gateway sent a resync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jetstream_a_router_paused_past_its_ttl_is_fenced_out_and_nobody_sees_a_seq_twice() {
    let cluster = Cluster::start_durable(2, 2).await;
    let load = chat(&cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.routers[0].proc.signal("STOP");
    // Its rooms are loaded by the survivor, same epochs, and go on.
    let took = wait_rooms_serve(&cluster, Duration::from_secs(6)).await;
    eprintln!("rooms serve again {took:?} after the pause");
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.routers[0].proc.signal("CONT");
    cluster.wait_ring(2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.stop(Duration::from_secs(2)).await;
    // Duplicates and gaps are continuity errors: none, and no resync.
    assert_flawless(&report);
    let paused = http_get(&format!("{}/metrics", cluster.routers[0].admin)).await.1;
    eprintln!(
        "the paused router's fenced appends: {}",
        metric(&paused, "switchboard_router_store_appends_total{outcome=\"fenced\"}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jetstream_rooms_keep_their_epoch_seq_keys_and_markers_across_crashes_and_a_nats_restart() {
    let mut cluster = Cluster::start_durable(2, 1).await;
    let room = room_of(&["r-1", "r-2"], "r-1", "durable");
    let gw = &cluster.gateways[0];
    let mut alice = gw.json("alice").await;
    let joined = join(&mut alice, &room).await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    let keyed = |key: &str| json!({"op": "publish", "room": room, "data": key, "idempotency_key": key});
    let first = alice.request(keyed("k1")).await.unwrap();
    assert_eq!((first["ok"].clone(), first["seq"].as_u64(), first.get("duplicate")), (json!(true), Some(1), None));
    let again = alice.request(keyed("k1")).await.unwrap();
    assert_eq!((again["seq"].as_u64(), again["duplicate"].clone()), (Some(1), json!(true)), "{again}");
    publish(&mut alice, &room, json!("two")).await;
    let read = alice.request(json!({"op": "read", "room": room, "seq": 2})).await.unwrap();
    assert_eq!(read["ok"], true, "{read}");

    // The same key from a new connection of the same user: one message.
    let mut tab = gw.json("alice").await;
    join(&mut tab, &room).await;
    let r = tab.request(keyed("k1")).await.unwrap();
    assert_eq!((r["seq"].as_u64(), r["duplicate"].clone()), (Some(1), json!(true)), "{r}");

    // The owner crashes: the survivor loads the room, same epoch, and
    // knows the key and the marker.
    cluster.routers[0].proc.kill9();
    let r = loop {
        let r = tab.request(keyed("k1")).await.unwrap();
        if r["ok"] == true {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((r["seq"].as_u64(), r["duplicate"].clone()), (Some(1), json!(true)), "after the crash: {r}");
    assert_eq!(publish(&mut tab, &room, json!("three")).await, 3, "seqs go on");
    let members = tab.request(json!({"op": "members", "room": room})).await.unwrap();
    let marker =
        members["members"].as_array().unwrap().iter().find(|m| m["user"] == "alice").map(|m| m["read_seq"].clone());
    assert_eq!(marker, Some(json!(2)), "the read marker survived: {members}");
    // Nobody saw a resync; alice got every message once, in order.
    for seq in [1, 2, 3] {
        let m = alice.wait_json(T, |v| v["type"] == "message" || v["type"] == "resync").await.unwrap();
        assert_eq!(
            (m["type"].as_str(), m["seq"].as_u64(), m["epoch"].as_str()),
            (Some("message"), Some(seq), Some(epoch.as_str())),
            "{m}"
        );
    }

    // NATS restarts, its JetStream data kept: routers cut off drop every
    // room and load it again, on the same epoch.
    cluster.restart_router(0);
    cluster.wait_ring(2).await;
    cluster.nats.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.nats.restart();
    cluster.wait_ring(2).await;
    cluster.wait_gateways_ready().await;
    let mut bob = cluster.gateways[0].json("bob").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let joined = loop {
        let r = bob.request(json!({"op": "join", "room": room})).await.unwrap();
        if r["ok"] == true {
            break r;
        }
        assert!(Instant::now() < deadline, "the room never served after NATS came back: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((joined["epoch"].as_str(), joined["seq"].as_u64()), (Some(epoch.as_str()), Some(3)), "{joined}");
    assert_eq!(publish(&mut bob, &room, json!("four")).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_owners_of_one_room_the_one_behind_is_refused_and_nothing_forks() {
    use router::store::{Append, StoreError, StoreFlags, StoreKind};
    let nats = support::cluster::Nats::start_js();
    let flags = StoreFlags { history_store: StoreKind::Jetstream, history_replicas: 1, history_store_bytes: 1 << 20 };
    let limits = router::history::HistoryConfig::default();
    let (a, b) = (
        flags.open(&nats.url, &Default::default(), "r-a", limits).await.unwrap(),
        flags.open(&nats.url, &Default::default(), "r-b", limits).await.unwrap(),
    );
    let loaded_a = a.load("split".into(), "ea".into(), limits).await.unwrap();
    let loaded_b = b.load("split".into(), "eb".into(), limits).await.unwrap();
    assert_eq!(loaded_b.epoch, "ea", "the first load made the epoch; the second continues it");
    let append = |fence: proto::internal::StoreFence, seq: u64| Append {
        room: "split".into(),
        epoch: "ea".into(),
        msg: proto::internal::StoredMessage {
            seq,
            from: "u".into(),
            data: "1".into(),
            ts: proto::now_ms(),
            ..Default::default()
        },
        ttl: Duration::from_secs(60),
        fence,
    };
    let after_a = a.append(append(loaded_a.fence, 1)).await.unwrap();
    assert_eq!(b.append(append(loaded_b.fence, 1)).await, Err(StoreError::Fenced), "B is behind A's write");
    let reloaded = b.load("split".into(), "eb".into(), limits).await.unwrap();
    assert_eq!((reloaded.seq, reloaded.history.len(), reloaded.fence), (1, 1, after_a));
    b.append(append(reloaded.fence, 2)).await.unwrap();
    assert_eq!(a.append(append(after_a, 2)).await, Err(StoreError::Fenced), "now A is behind");
    let last = a.load("split".into(), "ea".into(), limits).await.unwrap();
    assert_eq!(
        (last.epoch.as_str(), last.seq, last.history.iter().map(|m| m.seq).collect::<Vec<_>>()),
        ("ea", 2, vec![1, 2])
    );
    // Read markers are kept beside the room.
    a.save_read("split".into(), "u:1@x".into(), 2).await.unwrap();
    let marked = b.load("split".into(), "eb".into(), limits).await.unwrap();
    assert_eq!(marked.reads.get("u:1@x"), Some(&2));
}
