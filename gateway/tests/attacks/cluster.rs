//! The cluster: NATS subjects built from user input, and the gRPC APIs.

use super::*;
use proto::internal;

// The cluster: NATS subjects built from user input, and the gRPC APIs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_input_never_widens_a_nats_subject() {
    // Dozens of refused tokens from one IP: within the failure budget.
    let mut cluster = Cluster::without_gateways(1);
    let nats = cluster.nats.url.clone();
    cluster.start_gateway_with("gw-1", &nats, &["--auth-failure-ip-rate", "1000"]);
    cluster.wait_ring(1).await;
    cluster.wait_gateways_ready().await;
    let gw = &cluster.gateways[0];
    // A raw NATS client that sees everything published on the server.
    let observer = bus::Bus::nats(&cluster.nats.url, &Default::default(), "attack-observer", "test").await.unwrap();
    let mut everything = observer.subscribe(">".into()).await.unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(m) = everything.next().await {
                seen.lock().unwrap().push(m.subject);
            }
        })
    };
    // The recording is live once a probe comes back through the server.
    let probe = "sb.probe.observer";
    observer.publish(probe.into(), bytes::Bytes::new()).await.unwrap();
    wait_seen(&seen, probe).await;

    let mut bob = gw.json("bob").await;
    for id in bad_ids() {
        // A fresh connection per id: the refusals count towards the
        // bad-frame limit (4503).
        let mut mallory = gw.json("mallory").await;
        for op in ["join", "publish", "members", "leave"] {
            let r = mallory.request(json!({"op": op, "room": id, "data": 1})).await.unwrap();
            assert_eq!(r["error"]["code"], "invalid_room", "{op} {id:?}: {r}");
        }
        for op in ["presence", "watch", "unwatch"] {
            let r = mallory.request(json!({"op": op, "users": [id]})).await.unwrap();
            assert_eq!(r["error"]["code"], "bad_request", "{op} {id:?}: {r}");
        }
        let r = mallory.request(json!({"op": "send", "user": id, "data": "for everyone?"})).await.unwrap();
        assert_eq!(r["error"]["code"], "bad_request", "send {id:?}: {r}");
        // Nor may a genuine token carry such a user id.
        let token = mint(&gw.key(), &spec(&id, 60));
        assert_eq!(close_code_for(gw, &percent_encode(&token)).await, Some(4500), "sub {id:?}");
    }
    assert_quiet(bob.next_of_type("direct", Duration::from_millis(300)).await, "bob got a wildcard DM");

    // Probes: had any of that subscribed the gateway to a wildcard, these
    // would reach mallory. The control is a watch she is allowed, probed
    // until it arrives: the gateway's subscription reaches nats-server on
    // another connection than the probe.
    let mut mallory = gw.json("mallory").await;
    let r = mallory.request(json!({"op": "watch", "users": ["zz9friend"]})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let presence =
        |user: &str| pb::PresenceChange { user: user.into(), online: true, ts: proto::now_ms(), ..Default::default() };
    let deadline = Instant::now() + T;
    loop {
        observer.publish_msg("sb.presence.zz9friend".into(), &presence("zz9friend")).await.unwrap();
        match mallory.next_json(Duration::from_millis(200)).await {
            Ok(got) => {
                assert_eq!(
                    (got["type"].as_str(), got["user"].as_str()),
                    (Some("presence"), Some("zz9friend")),
                    "{got}"
                );
                break;
            }
            Err(ClientError::Timeout) => assert!(Instant::now() < deadline, "the control probe never arrived"),
            Err(e) => panic!("{e}"),
        }
    }
    let dm = internal::DirectMessage {
        to: "zz9victim".into(),
        from: "x".into(),
        data: b"1".to_vec().into(),
        ts: 1,
        ..Default::default()
    };
    observer.publish_msg("sb.presence.zz9victim".into(), &presence("zz9victim")).await.unwrap();
    observer.publish_msg("sb.gateway.gw-1.direct".to_string(), &dm).await.unwrap();
    let event = internal::RoomEvent { room: "zz9victim".into(), epoch: "e".into(), ..Default::default() };
    observer.publish_msg("sb.room.zz9victim".into(), &event).await.unwrap();
    let stray = mallory.wait_json(Duration::from_millis(500), |v| v["user"] != "zz9friend").await;
    assert!(matches!(stray, Err(ClientError::Timeout)), "nothing else reaches mallory: {stray:?}");

    // Controls for the observer: a valid DM and a publish are seen.
    let r = mallory.request(json!({"op": "send", "user": "bob", "data": "hi"})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(bob.next_of_type("direct", T).await.unwrap()["from"], "mallory");
    join(&mut mallory, "zz9room").await;
    publish(&mut mallory, "zz9room", json!(1)).await;
    // The observer sees direct messages and room events.
    wait_seen(&seen, "sb.gateway.gw-1.direct").await;
    wait_seen(&seen, "sb.room.zz9room").await;
    recorder.abort();

    let seen = seen.lock().unwrap().clone();
    for s in &seen {
        assert!(s.split('.').all(|t| !t.is_empty() && t != "*" && t != ">"), "{s}");
        for prefix in ["sb.room.", "sb.presence."] {
            if let Some(rest) = s.strip_prefix(prefix) {
                assert!(proto::subject::valid_id(rest), "a subject built from a bad id: {s}");
            }
        }
        for prefix in ["sb.router.", "sb.handoff.", "sb.gateway."] {
            if let Some(rest) = s.strip_prefix(prefix) {
                let id = rest.strip_suffix(".direct").unwrap_or(rest);
                assert!(proto::subject::valid_node_id(id), "a subject built from a bad id: {s}");
            }
        }
    }
    let mut subjects = seen.clone();
    subjects.sort();
    subjects.dedup();
    eprintln!("{} messages observed on {subjects:?}", seen.len());
}

/// Waits until the recorder has seen a message on `subject`.
async fn wait_seen(seen: &Mutex<Vec<String>>, subject: &str) {
    let deadline = Instant::now() + T;
    while !seen.lock().unwrap().iter().any(|s| s == subject) {
        assert!(Instant::now() < deadline, "the observer never saw {subject}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sets `authorization` to exactly this value, or leaves it out.
#[derive(Clone)]
struct Authorization(Option<&'static str>);

impl tonic::service::Interceptor for Authorization {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = self.0 {
            req.metadata_mut().insert("authorization", value.parse().unwrap());
        }
        Ok(req)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_apis_refuse_missing_and_wrong_bearer_tokens() {
    let cluster = Cluster::start(1, 1).await;
    let (router, gateway) = (cluster.routers[0].grpc.clone(), cluster.gateways[0].grpc.clone());
    let mut victim = cluster.gateways[0].json("victim").await;
    join(&mut victim, "vault").await;
    let right: &'static str = format!("Bearer {API_TOKEN}").leak();
    let refused = [None, Some("Bearer wrong"), Some(API_TOKEN), Some("Bearer "), Some("Basic dGVzdA==")];
    let unauthenticated = |r: Result<_, tonic::Status>, what: &str| match r {
        Err(s) if s.code() == tonic::Code::Unauthenticated => {}
        other => panic!("{what}: {:?}", other.map(|_: ()| ())),
    };

    for auth in refused {
        let what = format!("{auth:?}");
        let mut rooms =
            router::rpc::rooms_client::RoomsClient::with_interceptor(channel(&router).await, Authorization(auth));
        let publish = pb::PublishCall {
            room: "vault".into(),
            data: b"\"forged\"".to_vec().into(),
            from: "x".into(),
            ..Default::default()
        };
        unauthenticated(rooms.publish(publish).await.map(|_| ()), &format!("Publish {what}"));
        let members = pb::MembersCall { room: "vault".into(), limit: 10 };
        unauthenticated(rooms.members(members).await.map(|_| ()), &format!("Members {what}"));
        let history = pb::HistoryCall { room: "vault".into(), since: None, limit: 10, ..Default::default() };
        unauthenticated(rooms.history(history).await.map(|_| ()), &format!("History {what}"));
        unauthenticated(rooms.stats(pb::StatsCall {}).await.map(|_| ()), &format!("Stats {what}"));

        let mut admin = gateway::rpc::gateway_admin_client::GatewayAdminClient::with_interceptor(
            channel(&gateway).await,
            Authorization(auth),
        );
        unauthenticated(admin.stats(pb::GatewayStatsCall {}).await.map(|_| ()), &format!("gateway Stats {what}"));
        let call = pb::DisconnectCall { target: Some(pb::disconnect_call::Target::User("victim".into())), code: 4000 };
        unauthenticated(admin.disconnect(call).await.map(|_| ()), &format!("Disconnect {what}"));
        unauthenticated(admin.drain(pb::DrainCall {}).await.map(|_| ()), &format!("Drain {what}"));
    }
    // None of it had an effect: no message, no disconnect, no drain.
    still_served(&mut victim).await;
    assert_quiet(victim.next_of_type("message", Duration::from_millis(200)).await, "a refused publish went out");
    assert_eq!(http_get(&format!("{}/readyz", cluster.gateways[0].admin)).await.0, 200, "a refused drain drained");

    // With the token, every call works.
    let mut rooms =
        router::rpc::rooms_client::RoomsClient::with_interceptor(channel(&router).await, Authorization(Some(right)));
    let publish = pb::PublishCall {
        room: "vault".into(),
        data: b"\"real\"".to_vec().into(),
        from: String::new(),
        ..Default::default()
    };
    assert_eq!(rooms.publish(publish).await.unwrap().into_inner().seq, 1, "the refused publishes took no seq");
    assert_eq!(victim.next_of_type("message", T).await.unwrap()["data"], "real");
    let members = rooms.members(pb::MembersCall { room: "vault".into(), limit: 10 }).await.unwrap().into_inner();
    assert_eq!(members.count, 1);
    let history = pb::HistoryCall { room: "vault".into(), since: None, limit: 10, ..Default::default() };
    assert_eq!(rooms.history(history).await.unwrap().into_inner().messages.len(), 1);
    assert_eq!(rooms.stats(pb::StatsCall {}).await.unwrap().into_inner().ring_size, 1);

    let mut admin = gateway::rpc::gateway_admin_client::GatewayAdminClient::with_interceptor(
        channel(&gateway).await,
        Authorization(Some(right)),
    );
    assert_eq!(admin.stats(pb::GatewayStatsCall {}).await.unwrap().into_inner().connections, 1);
    let call = pb::DisconnectCall { target: Some(pb::disconnect_call::Target::User("victim".into())), code: 4000 };
    assert_eq!(admin.disconnect(call).await.unwrap().into_inner().closed, 1);
    assert_eq!(victim.wait_close(T).await.unwrap(), Some(4000));
    admin.drain(pb::DrainCall {}).await.unwrap();
    assert_eq!(http_get(&format!("{}/readyz", cluster.gateways[0].admin)).await.0, 503, "drained");
}
