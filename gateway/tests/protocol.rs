//! Every op of client protocol v1 against a real standalone gateway, from
//! several clients, in both encodings.

mod support;

use std::time::Duration;

use proto::pb::{self, client_frame::Op, reply, server_frame::Kind};
use serde_json::json;
use support::*;

#[tokio::test]
async fn rooms_publish_in_order_with_members_and_join_leave_events() {
    let gw = Gateway::start(&[]);
    let mut alice = gw.json("alice").await;
    let mut bob = gw.json("bob").await;

    let r = join(&mut alice, "lobby").await;
    assert_eq!(r["seq"], 0);
    assert!(r["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    assert!(r.get("recovered").is_none(), "recovered only with since: {r}");
    join(&mut bob, "lobby").await;
    let ev = alice.next_of_type("joined", T).await.unwrap();
    assert_eq!((ev["room"].as_str(), ev["user"].as_str()), (Some("lobby"), Some("bob")));

    let members = alice.request(json!({"op": "members", "room": "lobby"})).await.unwrap();
    assert_eq!(members["count"], 2, "{members}");
    let users: Vec<&str> = members["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["alice", "bob"]);

    for i in 1..=5u64 {
        assert_eq!(publish(&mut alice, "lobby", json!({"n": i})).await, i, "acks carry consecutive seqs");
    }
    for c in [&mut alice, &mut bob] {
        for i in 1..=5u64 {
            let m = c.next_of_type("message", T).await.unwrap();
            assert_eq!((m["seq"].as_u64(), m["data"]["n"].as_u64()), (Some(i), Some(i)), "{m}");
            assert_eq!(m["from"], "alice");
            assert_eq!(m["room"], "lobby");
            assert!(m["ts"].as_i64().unwrap() > 0);
        }
    }

    let r = bob.request(json!({"op": "leave", "room": "lobby"})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let ev = alice.next_of_type("left", T).await.unwrap();
    assert_eq!(ev["user"], "bob");
    let r = bob.request(json!({"op": "publish", "room": "lobby", "data": 1})).await.unwrap();
    assert_eq!(r["error"]["code"], "not_member", "{r}");
    let r = bob.request(json!({"op": "leave", "room": "lobby"})).await.unwrap();
    assert_eq!(r["error"]["code"], "not_member", "{r}");
    let members = alice.request(json!({"op": "members", "room": "lobby"})).await.unwrap();
    assert_eq!(members["count"], 1, "{members}");
}

#[tokio::test]
async fn one_publisher_pipelined_keeps_its_order_for_everyone() {
    let gw = Gateway::start(&[]);
    let mut alice = gw.json("alice").await;
    let mut bob = gw.json("bob").await;
    join(&mut alice, "r").await;
    join(&mut bob, "r").await;
    // Sent back to back without waiting for acks.
    for i in 0..40 {
        alice.send_json(&json!({"op": "publish", "room": "r", "data": i, "id": 1000 + i})).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 40 {
        let m = bob.next_of_type("message", T).await.unwrap();
        got.push((m["seq"].as_u64().unwrap(), m["data"].as_u64().unwrap()));
    }
    let first = got[0].0;
    for (i, (seq, data)) in got.iter().enumerate() {
        assert_eq!((*seq, *data), (first + i as u64, i as u64), "{got:?}");
    }
}

#[tokio::test]
async fn protobuf_clients_use_every_room_op_and_share_rooms_with_json_clients() {
    let gw = Gateway::start(&[]);
    let mut carol = gw.proto("carol").await;
    let mut dave = gw.json("dave").await;

    let r = carol.request_proto(Op::Join(pb::JoinOp { room: "mixed".into(), since: None })).await.unwrap();
    assert!(r.ok, "{r:?}");
    let Some(reply::Result::Join(j)) = r.result else { panic!("{r:?}") };
    assert_eq!(j.seq, 0);
    join(&mut dave, "mixed").await;
    let ev = carol.wait_proto(T, |f| matches!(f.kind, Some(Kind::Joined(_)))).await.unwrap();
    let Some(Kind::Joined(joined)) = ev.kind else { unreachable!() };
    assert_eq!(joined.user, "dave");

    let r = carol
        .request_proto(Op::Publish(pb::PublishOp {
            room: "mixed".into(),
            data: br#"{"from":"proto"}"#.to_vec().into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let Some(reply::Result::Publish(p)) = r.result else { panic!("{r:?}") };
    assert_eq!(p.seq, 1);
    let m = dave.next_of_type("message", T).await.unwrap();
    assert_eq!((m["seq"].as_u64(), m["data"]["from"].as_str()), (Some(1), Some("proto")));

    assert_eq!(publish(&mut dave, "mixed", json!({"from": "json"})).await, 2);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let f = carol.wait_proto(T, |f| matches!(f.kind, Some(Kind::Message(_)))).await.unwrap();
        let Some(Kind::Message(m)) = f.kind else { unreachable!() };
        seen.push((m.seq, String::from_utf8(m.data.to_vec()).unwrap(), m.from));
    }
    assert_eq!(seen[0], (1, r#"{"from":"proto"}"#.into(), "carol".into()));
    assert_eq!(seen[1], (2, r#"{"from":"json"}"#.into(), "dave".into()));

    let r = carol.request_proto(Op::Members(pb::MembersOp { room: "mixed".into() })).await.unwrap();
    let Some(reply::Result::Members(m)) = r.result else { panic!("{r:?}") };
    assert_eq!(m.count, 2);

    let r = carol
        .request_proto(Op::Publish(pb::PublishOp {
            room: "other".into(),
            data: b"1".to_vec().into(),
            ..Default::default()
        }))
        .await;
    let r = r.unwrap();
    assert_eq!((r.ok, r.error.unwrap().code.as_str()), (false, "not_member"));

    dave.request(json!({"op": "leave", "room": "mixed"})).await.unwrap();
    let ev = carol.wait_proto(T, |f| matches!(f.kind, Some(Kind::Left(_)))).await.unwrap();
    let Some(Kind::Left(left)) = ev.kind else { unreachable!() };
    assert_eq!(left.user, "dave");
    let r = carol.request_proto(Op::Leave(pb::LeaveOp { room: "mixed".into() })).await.unwrap();
    assert!(r.ok);

    carol.send_proto(&pb::ClientFrame { id: 0, op: Some(Op::Ping(pb::PingOp {})) }).await.unwrap();
    carol.wait_proto(T, |f| matches!(f.kind, Some(Kind::Pong(_)))).await.unwrap();
}

#[tokio::test]
async fn send_reaches_every_connection_of_the_user_in_both_encodings() {
    let gw = Gateway::start(&[]);
    let mut alice_json = gw.json("alice").await;
    let mut alice_proto = gw.proto("alice").await;
    let mut bob = gw.json("bob").await;
    let mut other = gw.json("mallory").await;

    let r = bob.request(json!({"op": "send", "user": "alice", "data": {"hi": 1}})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let d = alice_json.next_of_type("direct", T).await.unwrap();
    assert_eq!((d["from"].as_str(), d["data"]["hi"].as_i64()), (Some("bob"), Some(1)));
    let f = alice_proto.wait_proto(T, |f| matches!(f.kind, Some(Kind::Direct(_)))).await.unwrap();
    let Some(Kind::Direct(d)) = f.kind else { unreachable!() };
    assert_eq!((d.from.as_str(), &d.data[..]), ("bob", &br#"{"hi":1}"#[..]));

    let r =
        alice_proto.request_proto(Op::Send(pb::SendOp { user: "bob".into(), data: b"\"back\"".to_vec().into() })).await;
    assert!(r.unwrap().ok);
    let d = bob.next_of_type("direct", T).await.unwrap();
    assert_eq!((d["from"].as_str(), d["data"].as_str()), (Some("alice"), Some("back")));

    // Nobody else hears it.
    assert_quiet(other.next_of_type("direct", Duration::from_millis(300)).await, "nothing more");
    let r = bob.request(json!({"op": "send", "user": "a.b", "data": 1})).await.unwrap();
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
}

#[tokio::test]
async fn presence_and_watch_with_offline_grace() {
    let gw = Gateway::start(&["--offline-grace", "1s"]);
    let mut watcher = gw.json("watcher").await;
    let mut proto_watcher = gw.proto("pwatcher").await;

    let r = watcher.request(json!({"op": "watch", "users": ["erin"]})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["users"][0]["online"], false, "{r}");
    let r = proto_watcher.request_proto(Op::Watch(pb::WatchOp { users: vec!["erin".into()] })).await.unwrap();
    assert!(r.ok);

    let erin = gw.json("erin").await;
    let ev = watcher.next_of_type("presence", T).await.unwrap();
    assert_eq!((ev["user"].as_str(), ev["online"].as_bool()), (Some("erin"), Some(true)), "{ev}");
    let f = proto_watcher.wait_proto(T, |f| matches!(f.kind, Some(Kind::Presence(_)))).await.unwrap();
    let Some(Kind::Presence(p)) = f.kind else { unreachable!() };
    assert!(p.online && p.user == "erin");

    let r = watcher.request(json!({"op": "presence", "users": ["erin", "nobody"]})).await.unwrap();
    assert_eq!(r["users"][0]["online"], true, "{r}");
    assert!(r["users"][0]["last_seen_ms"].as_i64().unwrap() > 0);
    assert_eq!(r["users"][1]["online"], false);
    assert_eq!(r["users"][1]["last_seen_ms"], 0);

    // A reconnect within the grace does not flap.
    drop(erin);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let erin = gw.json("erin").await;
    assert_quiet(watcher.next_of_type("presence", Duration::from_millis(1500)).await, "no flap");

    drop(erin);
    let started = std::time::Instant::now();
    let ev = watcher.next_of_type("presence", T).await.unwrap();
    assert_eq!((ev["user"].as_str(), ev["online"].as_bool()), (Some("erin"), Some(false)), "{ev}");
    assert!(started.elapsed() >= Duration::from_millis(700), "offline only after the grace");
    let r = watcher.request(json!({"op": "presence", "users": ["erin"]})).await.unwrap();
    assert_eq!(r["users"][0]["online"], false, "{r}");
    assert!(r["users"][0]["last_seen_ms"].as_i64().unwrap() > 0);

    let r = watcher.request(json!({"op": "unwatch", "users": ["erin"]})).await.unwrap();
    assert_eq!(r["ok"], true);
    let _erin = gw.json("erin").await;
    assert_quiet(watcher.next_of_type("presence", Duration::from_millis(500)).await, "unwatched");
}

#[tokio::test]
async fn refresh_extends_the_connection_and_expiry_closes_with_4501() {
    let gw = Gateway::start(&[]);
    let short = |user: &str| gw.token_with(loadtest::token::TokenSpec::new(user, 2));
    let mut refreshed = loadtest::client::Client::connect(gw.options(Some(&short("frank")))).await.unwrap();
    refreshed.next_of_type("hello", T).await.unwrap();
    let mut expiring = loadtest::client::Client::connect(gw.options(Some(&short("gina")))).await.unwrap();
    expiring.next_of_type("hello", T).await.unwrap();

    let r = refreshed.request(json!({"op": "refresh", "token": gw.token("frank")})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["exp"].as_i64().unwrap() > proto::now_ms() / 1000 + 1000);
    let r = refreshed.request(json!({"op": "refresh", "token": gw.token("someone-else")})).await.unwrap();
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    let r = refreshed.request(json!({"op": "refresh", "token": "not.a.token"})).await.unwrap();
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");

    assert_eq!(expiring.wait_close(Duration::from_secs(6)).await.unwrap(), Some(4501));
    still_served(&mut refreshed).await;
}

#[tokio::test]
async fn ping_op_and_ping_frames_are_answered() {
    let gw = Gateway::start(&[]);
    let mut c = gw.json("pinger").await;
    // A ping is answered by a pong, never by a reply, even with an id.
    c.send_json(&json!({"op": "ping", "id": 5})).await.unwrap();
    let pong = c.next_json(T).await.unwrap();
    assert_eq!(pong, json!({"type": "pong"}));
    assert_quiet(c.next_json(Duration::from_millis(200)).await, "nothing else follows");
    c.send_frame(true, fastwebsockets::OpCode::Ping, b"x".to_vec()).await.unwrap();
    loop {
        match c.recv(T).await.expect("pong frame") {
            loadtest::client::Incoming::Pong => break,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn protobuf_auth_frame_presence_unwatch_and_refresh() {
    let gw = Gateway::start(&["--offline-grace", "200ms"]);
    let mut opts = gw.options(None);
    opts.protocols = vec!["switchboard.v1.proto".into()];
    let mut c = loadtest::client::Client::connect(opts).await.unwrap();
    let r = c.request_proto(Op::Auth(pb::AuthOp { token: gw.token("pat") })).await.unwrap();
    assert!(r.ok, "{r:?}");
    let hello = c.wait_proto(T, |f| matches!(f.kind, Some(Kind::Hello(_)))).await.unwrap();
    let Some(Kind::Hello(h)) = hello.kind else { unreachable!() };
    assert_eq!((h.user.as_str(), h.heartbeat_ms), ("pat", 25_000));

    let r = c.request_proto(Op::Presence(pb::PresenceOp { users: vec!["pat".into(), "quinn".into()] })).await.unwrap();
    let Some(reply::Result::Presence(p)) = r.result else { panic!("{r:?}") };
    assert_eq!(
        p.users.iter().map(|u| (u.user.as_str(), u.online)).collect::<Vec<_>>(),
        [("pat", true), ("quinn", false)]
    );

    c.request_proto(Op::Watch(pb::WatchOp { users: vec!["quinn".into()] })).await.unwrap();
    let r = c.request_proto(Op::Unwatch(pb::WatchOp { users: vec!["quinn".into()] })).await.unwrap();
    assert!(r.ok);
    let _quinn = gw.json("quinn").await;
    assert_quiet(
        c.wait_proto(Duration::from_millis(400), |f| matches!(f.kind, Some(Kind::Presence(_)))).await,
        "nothing more",
    );

    let r = c.request_proto(Op::Refresh(pb::RefreshOp { token: gw.token("pat") })).await.unwrap();
    let Some(reply::Result::Refresh(rr)) = r.result else { panic!("{r:?}") };
    assert!(rr.exp > proto::now_ms() / 1000);
    let r = c.request_proto(Op::Refresh(pb::RefreshOp { token: "x".into() })).await.unwrap();
    assert_eq!(r.error.unwrap().code, "unauthorized");

    let r = c.request_proto(Op::Join(pb::JoinOp { room: "a.b".into(), since: None })).await.unwrap();
    assert_eq!(r.error.unwrap().code, "invalid_room");
    let r = c
        .request_proto(Op::Publish(pb::PublishOp {
            room: "x".into(),
            data: b"{bad".to_vec().into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(r.unwrap().error.unwrap().code, "bad_request", "protobuf data must be JSON text");
}

#[tokio::test]
async fn rs256_and_es256_public_keys() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    for (public, private) in [("rsa_public.pem", "rsa_private.pem"), ("ec_public.pem", "ec_private.pem")] {
        let gw = Gateway::start_raw(&["--jwt-public-key", &format!("{dir}/{public}")], String::new());
        let key =
            loadtest::token::SigningKey::from_private_key_pem(&std::fs::read(format!("{dir}/{private}")).unwrap())
                .unwrap();
        let spec = loadtest::token::TokenSpec::new("kim", 60);
        let mut ok =
            loadtest::client::Client::connect(gw.options(Some(&loadtest::token::mint(&key, &spec)))).await.unwrap();
        let hello = ok.next_json(T).await.unwrap();
        assert_eq!(hello["user"], "kim", "{public}: {hello}");
        assert!(!gw.stdout.iter().any(|l| l.contains("token=")), "no demo token without a secret");
        // An HS256 token signed with the public key as the secret: key confusion.
        let pem = std::fs::read(format!("{dir}/{public}")).unwrap();
        let confused = loadtest::token::mint(&loadtest::token::SigningKey::hs256(pem), &spec);
        let mut bad = loadtest::client::Client::connect(gw.options(Some(&confused))).await.unwrap();
        assert_eq!(bad.wait_close(T).await.unwrap(), Some(4500), "{public}");
    }
}

#[tokio::test]
async fn an_operator_may_close_a_connection_with_1011() {
    let gw = Gateway::start(&[]);
    let mut c = gw.json("victim").await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", gw.grpc)).unwrap().connect().await.unwrap();
    let mut admin = gateway::rpc::gateway_admin_client::GatewayAdminClient::new(channel);
    let call = pb::DisconnectCall { target: Some(pb::disconnect_call::Target::User("victim".into())), code: 1011 };
    assert_eq!(admin.disconnect(call).await.unwrap().into_inner().closed, 1);
    assert_eq!(c.wait_close(T).await.unwrap(), Some(1011));
}
