//! The SSE transport against real gateway processes: `GET /sse` streams the
//! protocol's events, `POST /sse/<conn>` carries ops (to the gateway that
//! holds the stream or to any other, which forwards them over NATS), a
//! stream resumes with `Last-Event-ID` on its gateway, and the WebSocket's
//! limits and close codes apply.

mod support;

use loadtest::client::{Client, ClientError};
use loadtest::sse::SseClient;
use loadtest::token::TokenSpec;
use serde_json::{json, Value};
use support::cluster::Cluster;
use support::*;

/// `http://127.0.0.1:PORT` of a gateway's client listener.
fn base(ws: &str) -> String {
    ws.replacen("ws://", "http://", 1).trim_end_matches("/ws").to_owned()
}

async fn open(base: &str, token: &str) -> SseClient {
    let mut s = SseClient::open(base, &format!("/sse?token={token}"), &[]).await.expect("the stream opens");
    let hello = s.next_json(T).await.unwrap();
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(hello["resumed"], false, "{hello}");
    assert!(hello["post_secret"].as_str().is_some_and(|s| s.len() == 32), "{hello}");
    s
}

/// POSTs `op` (with an id) and waits for its reply on the stream.
async fn request(s: &mut SseClient, via: Option<&str>, mut op: Value, id: u64) -> Value {
    op["id"] = json!(id);
    let (status, body) = s.post(via, &op).await;
    assert_eq!(status, 202, "{op}: {body}");
    s.reply(id, T).await.unwrap()
}

/// The next message (on a WebSocket) whose data is `data`.
async fn message_with(c: &mut Client, data: Value) -> Value {
    loop {
        let m = c.next_of_type("message", T).await.unwrap();
        if m["data"] == data {
            return m;
        }
    }
}

/// The close code of a stream's first event.
async fn closed_with(base: &str, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
    let mut s = SseClient::open(base, path, headers).await.expect("the stream opens");
    match s.next_json(T).await {
        Err(ClientError::Closed(code)) => code,
        other => panic!("expected event: close, got {other:?}"),
    }
}

#[tokio::test]
async fn the_protocol_over_sse_in_standalone() {
    let gw = Gateway::start(&[]);
    let http = base(&gw.ws);
    let mut s = open(&http, &gw.token("alice")).await;
    assert_eq!(s.headers["content-type"], "text/event-stream");
    assert_eq!(s.headers["cache-control"], "no-cache");
    assert_eq!(s.headers["x-accel-buffering"], "no");

    // Join and publish by POST; the replies and the message come as events.
    let joined = request(&mut s, None, json!({"op": "join", "room": "lobby"}), 1).await;
    assert_eq!(joined["ok"], true, "{joined}");
    let mut bob = gw.json("bob").await;
    join(&mut bob, "lobby").await;
    let r = request(&mut s, None, json!({"op": "publish", "room": "lobby", "data": {"text": "hi"}}), 2).await;
    let seq = r["seq"].as_u64().expect("a seq");
    let m = message_with(&mut bob, json!({"text": "hi"})).await;
    assert_eq!((m["from"].as_str(), m["seq"].as_u64()), (Some("alice"), Some(seq)));
    assert_eq!(s.next_of_type("message", T).await.unwrap()["data"]["text"], "hi", "its own message first");
    publish(&mut bob, "lobby", json!("from a WebSocket")).await;
    let m = s.next_of_type("message", T).await.unwrap();
    assert_eq!(m["data"], "from a WebSocket");
    let id = s.last_id.clone().unwrap();
    assert!(id.starts_with(&format!("{}:", s.conn.as_deref().unwrap())), "event ids name the connection: {id}");

    // Members, presence, a direct message and a signal, both ways.
    let members = request(&mut s, None, json!({"op": "members", "room": "lobby"}), 3).await;
    assert_eq!(members["count"], 2, "{members}");
    let p = request(&mut s, None, json!({"op": "presence", "users": ["bob"]}), 4).await;
    assert_eq!(p["users"][0]["online"], true, "{p}");
    let sent = request(&mut s, None, json!({"op": "send", "user": "bob", "data": "psst"}), 5).await;
    assert_eq!(sent["delivered"], true, "{sent}");
    assert_eq!(bob.next_of_type("direct", T).await.unwrap()["data"], "psst");
    bob.request(json!({"op": "send", "user": "alice", "data": "back"})).await.unwrap();
    assert_eq!(s.next_of_type("direct", T).await.unwrap()["data"], "back");
    bob.request(json!({"op": "signal", "room": "lobby", "data": {"typing": true}})).await.unwrap();
    assert_eq!(s.next_of_type("signal", T).await.unwrap()["from"], "bob");

    // Several ops in one POST, in order.
    let ops = json!([
        {"op": "publish", "room": "lobby", "data": 1, "id": 10},
        {"op": "publish", "room": "lobby", "data": 2, "id": 11}
    ]);
    assert_eq!(s.post(None, &ops).await.0, 202);
    let (a, b) = (message_with(&mut bob, json!(1)).await, message_with(&mut bob, json!(2)).await);
    assert_eq!(b["seq"].as_u64(), a["seq"].as_u64().map(|s| s + 1), "in order");

    // Refused POSTs harm nothing.
    let conn = s.conn.clone().unwrap();
    let ping = br#"{"op":"ping"}"#.to_vec();
    assert_eq!(loadtest::sse::post(&http, &conn, "not-the-secret", ping.clone()).await.0, 403);
    assert_eq!(loadtest::sse::post(&http, &format!("{conn}0"), "x", ping.clone()).await.0, 404);
    assert_eq!(s.post(None, &json!("ping")).await.0, 400);
    assert_eq!(s.post(None, &json!({"op": "publish", "room": "lobby", "data": "x".repeat(70_000)})).await.0, 413);
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "switchboard_gateway_sse_posts_total{outcome=\"wrong_secret\"}"), 1.0);
    assert_eq!(metric(&m, "switchboard_gateway_sse_connections"), 1.0);
    assert_eq!(s.post(None, &json!({"op": "ping"})).await.0, 202);
    s.next_of_type("pong", T).await.expect("still served");
    still_served(&mut bob).await;
}

#[tokio::test]
async fn a_stream_resumes_with_last_event_id_on_its_gateway() {
    let gw = Gateway::start(&[]);
    let http = base(&gw.ws);
    let token = gw.token("carol");
    let mut s = open(&http, &token).await;
    request(&mut s, None, json!({"op": "join", "room": "resume"}), 1).await;
    let mut dan = gw.json("dan").await;
    join(&mut dan, "resume").await;
    publish(&mut dan, "resume", json!("seen")).await;
    s.next_of_type("message", T).await.unwrap();
    let (conn, secret, last) = (s.conn.clone().unwrap(), s.post_secret.clone().unwrap(), s.last_id.clone().unwrap());
    drop(s); // the response ends, as when a proxy cuts it

    publish(&mut dan, "resume", json!("missed")).await;
    let mut again = SseClient::open(&http, &format!("/sse?token={token}"), &[("last-event-id", &last)]).await.unwrap();
    let hello = again.next_json(T).await.unwrap();
    assert_eq!((hello["type"].as_str(), hello["resumed"].as_bool()), (Some("hello"), Some(true)), "{hello}");
    assert_eq!(hello["conn"], conn.as_str(), "the same connection");
    let m = again.next_of_type("message", T).await.unwrap();
    assert_eq!(m["data"], "missed", "{m}");
    // The same secret still works, and the membership held.
    let p = loadtest::sse::post(
        &http,
        &conn,
        &secret,
        br#"{"op":"publish","room":"resume","data":"back","id":7}"#.to_vec(),
    );
    assert_eq!(p.await.0, 202);
    message_with(&mut dan, json!("back")).await;

    // Another user cannot take the stream over by naming it.
    let eve = gw.token("eve");
    let mut other = SseClient::open(&http, &format!("/sse?token={eve}"), &[("last-event-id", &last)]).await.unwrap();
    let hello = other.next_json(T).await.unwrap();
    assert_eq!((hello["resumed"].as_bool(), hello["user"].as_str()), (Some(false), Some("eve")), "{hello}");
    assert_ne!(hello["conn"], conn.as_str());
}

#[tokio::test]
async fn limits_and_close_codes_are_the_websockets() {
    let gw = Gateway::start(&[
        "--allowed-origins",
        "https://app.example",
        "--rate-per-sec",
        "5",
        "--rate-burst",
        "5",
        "--flood-limit",
        "20",
    ]);
    let http = base(&gw.ws);
    let origin = [("origin", "https://app.example")];
    let token = gw.token("frank");
    assert_eq!(closed_with(&http, "/sse", &origin).await, Some(4500), "no token");
    let expired = gw.token_with(TokenSpec::new("frank", -10));
    assert_eq!(closed_with(&http, &format!("/sse?token={expired}"), &origin).await, Some(4501));
    assert_eq!(closed_with(&http, "/sse?token=forged.token.here", &origin).await, Some(4500));
    let evil = [("origin", "https://evil.example")];
    assert_eq!(closed_with(&http, &format!("/sse?token={token}"), &evil).await, Some(1008));

    // A flood of ops closes with 4002, as on a WebSocket.
    let mut s = SseClient::open(&http, &format!("/sse?token={token}"), &origin).await.unwrap();
    s.next_json(T).await.unwrap();
    assert_eq!(s.headers["access-control-allow-origin"], "https://app.example");
    let pings: Vec<Value> = (0..60).map(|i| json!({"op": "ping", "id": i})).collect();
    assert_eq!(s.post(None, &json!(pings)).await.0, 202);
    let code = loop {
        match s.next_json(T).await {
            Ok(_) => continue,
            Err(ClientError::Closed(code)) => break code,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(code, Some(4002));
    let m = gw.metrics().await;
    assert!(metric(&m, "switchboard_gateway_disconnects_total{code=\"4002\"}") >= 1.0, "counted as a WebSocket close");
}

#[tokio::test]
async fn posts_reach_the_stream_through_any_gateway_and_rooms_mix_transports() {
    let cluster = Cluster::start(2, 2).await;
    let (http1, http2) = (base(&cluster.gateways[0].ws), base(&cluster.gateways[1].ws));
    let token = cluster.gateways[0].token("gina");
    let mut s = open(&http1, &token).await;
    // Every op goes to the other gateway, which forwards it.
    let joined = request(&mut s, Some(&http2), json!({"op": "join", "room": "mixed"}), 1).await;
    assert_eq!(joined["ok"], true, "{joined}");
    let mut json_ws = cluster.gateways[1].json("hank").await;
    let mut proto_ws = cluster.gateways[0].proto("ivy").await;
    join(&mut json_ws, "mixed").await;
    proto_ws
        .request_proto(proto::pb::client_frame::Op::Join(proto::pb::JoinOp { room: "mixed".into(), since: None }))
        .await
        .unwrap();
    for i in 0..10 {
        let op = json!({"op": "publish", "room": "mixed", "data": i});
        let r = request(&mut s, Some(if i % 2 == 0 { &http2 } else { &http1 }), op, 100 + i).await;
        assert_eq!(r["ok"], true, "{r}");
        publish(&mut json_ws, "mixed", json!(format!("ws{i}"))).await;
    }
    // The same messages in the same order on all three transports.
    let mut seen: Vec<Vec<u64>> = Vec::new();
    let mut sse_seqs = Vec::new();
    let mut epoch = Value::Null;
    while sse_seqs.len() < 20 {
        let m = s.next_of_type("message", T).await.unwrap();
        epoch = m["epoch"].clone();
        sse_seqs.push(m["seq"].as_u64().unwrap());
    }
    seen.push(sse_seqs);
    let mut ws_seqs = Vec::new();
    while ws_seqs.len() < 20 {
        ws_seqs.push(json_ws.next_of_type("message", T).await.unwrap()["seq"].as_u64().unwrap());
    }
    seen.push(ws_seqs);
    let mut proto_seqs = Vec::new();
    while proto_seqs.len() < 20 {
        if let Some(proto::pb::server_frame::Kind::Message(m)) = proto_ws.next_proto(T).await.unwrap().kind {
            proto_seqs.push(m.seq);
        }
    }
    seen.push(proto_seqs);
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
    assert!(seen[0].windows(2).all(|w| w[1] == w[0] + 1), "{:?}", seen[0]);

    // Members, presence, a direct message and a signal, all POSTed through
    // the other gateway.
    let members = request(&mut s, Some(&http2), json!({"op": "members", "room": "mixed"}), 200).await;
    assert_eq!(members["count"], 3, "{members}");
    let p = request(&mut s, Some(&http2), json!({"op": "presence", "users": ["hank"]}), 201).await;
    assert_eq!(p["users"][0]["online"], true, "{p}");
    let sent = request(&mut s, Some(&http2), json!({"op": "send", "user": "hank", "data": "via 2"}), 202).await;
    assert_eq!(sent["delivered"], true, "{sent}");
    assert_eq!(json_ws.next_of_type("direct", T).await.unwrap()["data"], "via 2");
    let signal = json!({"op": "signal", "room": "mixed", "data": {"typing": true}});
    assert_eq!(request(&mut s, Some(&http2), signal, 203).await["ok"], true);
    assert_eq!(json_ws.next_of_type("signal", T).await.unwrap()["from"], "gina");

    // A wrong secret through the other gateway is refused there too, and a
    // connection that is nowhere is 404.
    let conn = s.conn.clone().unwrap();
    assert_eq!(loadtest::sse::post(&http2, &conn, "wrong", b"{\"op\":\"ping\"}".to_vec()).await.0, 403);
    let nowhere = conn.replacen('-', "-9", 1);
    assert_eq!(loadtest::sse::post(&http2, &nowhere, "x", b"{\"op\":\"ping\"}".to_vec()).await.0, 404);

    // Resuming on the other gateway: a new connection, which rejoins with since.
    let last = s.last_id.clone().unwrap();
    drop(s);
    let mut moved = SseClient::open(&http2, &format!("/sse?token={token}"), &[("last-event-id", &last)]).await.unwrap();
    let hello = moved.next_json(T).await.unwrap();
    assert_eq!(hello["resumed"], false, "{hello}");
    assert_ne!(hello["conn"], conn.as_str());
    let since = seen[0][19];
    let r =
        request(&mut moved, None, json!({"op": "join", "room": "mixed", "since": {"epoch": epoch, "seq": since}}), 1)
            .await;
    assert_eq!(r["ok"], true, "{r}");
    publish(&mut json_ws, "mixed", json!("after the move")).await;
    let m = moved.next_of_type("message", T).await.unwrap();
    assert_eq!((m["seq"].as_u64(), m["data"].clone()), (Some(since + 1), json!("after the move")));
}
