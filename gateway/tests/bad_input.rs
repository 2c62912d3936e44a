//! Bad input gets the design's answer, and other clients keep being served.

mod support;

use std::time::Duration;

use fastwebsockets::OpCode;
use loadtest::client::{Client, ClientError, ConnectOptions};
use loadtest::token::{mint_unsigned_none, SigningKey, TokenSpec};
use serde_json::json;
use support::*;

fn spec(sub: &str, exp_in: i64) -> TokenSpec {
    TokenSpec::new(sub, exp_in)
}

#[tokio::test]
async fn malformed_requests_get_error_replies_and_the_connection_lives_on() {
    let gw = Gateway::start(&[]);
    let mut c = gw.json("alice").await;
    let mut other = gw.json("bob").await;

    c.send_text("{not json").await.unwrap();
    let e = c.next_json(T).await.unwrap();
    assert_eq!((e["type"].as_str(), e["error"]["code"].as_str()), (Some("error"), Some("bad_request")), "{e}");

    for non_object in ["[1,2]", "42", "\"join\"", "null"] {
        c.send_text(non_object).await.unwrap();
        let e = c.next_json(T).await.unwrap();
        assert_eq!(e["error"]["code"], "bad_request", "{non_object}: {e}");
    }

    let r = c.request(json!({"op": "teleport"})).await.unwrap();
    assert_eq!((r["ok"].as_bool(), r["error"]["code"].as_str()), (Some(false), Some("unknown_op")), "{r}");
    let r = c.request(json!({"op": "join"})).await.unwrap();
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let r = c.request(json!({"op": "publish", "room": "x"})).await.unwrap();
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let r = c.request(json!({"op": "join", "room": 7})).await.unwrap();
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    let r = c.request(json!({"op": "presence", "users": []})).await.unwrap();
    assert_eq!(r["error"]["code"], "bad_request", "{r}");

    still_served(&mut c).await;
    still_served(&mut other).await;
}

#[tokio::test]
async fn invalid_room_ids_are_refused() {
    let gw = Gateway::start(&[]);
    let mut c = gw.json("alice").await;
    let long = "r".repeat(200);
    for room in ["a.b", "*", ">", "lobby.>", "", long.as_str(), "sp ace"] {
        let r = c.request(json!({"op": "join", "room": room})).await.unwrap();
        assert_eq!(r["error"]["code"], "invalid_room", "{room:?}: {r}");
    }
    let r = c.request(json!({"op": "publish", "room": "a.b", "data": 1})).await.unwrap();
    assert_eq!(r["error"]["code"], "invalid_room", "{r}");
    still_served(&mut c).await;
}

#[tokio::test]
async fn framing_violations_close_with_their_codes() {
    let gw = Gateway::start(&[]);
    let mut other = gw.json("bystander").await;

    // Invalid UTF-8 in a text frame: 1007.
    let mut c = gw.json("u1").await;
    c.send_frame(true, OpCode::Text, vec![b'{', 0xff, 0xfe, b'}']).await.unwrap();
    assert_eq!(c.wait_close(T).await.unwrap(), Some(1007));

    // A binary frame on the JSON subprotocol: 1003.
    let mut c = gw.json("u2").await;
    c.send_binary(vec![1, 2, 3]).await.unwrap();
    assert_eq!(c.wait_close(T).await.unwrap(), Some(1003));

    // A text frame on the protobuf subprotocol: 1003.
    let mut c = gw.proto("u3").await;
    c.send_text("{}").await.unwrap();
    assert_eq!(c.wait_close(T).await.unwrap(), Some(1003));

    // 1 MiB sent as many small fragments: 1009 once past 64 KiB in total.
    let mut c = gw.json("u4").await;
    let chunk = vec![b'a'; 1024];
    for i in 0..1024 {
        let op = if i == 0 { OpCode::Text } else { OpCode::Continuation };
        // Past 64 KiB the server closes; our writes then fail.
        if c.send_frame(i == 1023, op, chunk.clone()).await.is_err() || i == 80 {
            break;
        }
    }
    let closed = c.wait_close(T).await.unwrap();
    assert_eq!(closed, Some(1009));

    // A single frame over the cap: 1009.
    let mut c = gw.json("u5").await;
    c.send_frame(true, OpCode::Text, vec![b' '; 70_000]).await.unwrap();
    assert_eq!(c.wait_close(T).await.unwrap(), Some(1009));

    still_served(&mut other).await;
}

#[tokio::test]
async fn repeated_bad_frames_close_with_4503() {
    let gw = Gateway::start(&["--bad-frame-limit", "5"]);
    let mut c = gw.json("noisy").await;
    for _ in 0..10 {
        if c.send_text("nope").await.is_err() {
            break;
        }
    }
    assert_eq!(c.wait_close(T).await.unwrap(), Some(4503));
}

#[tokio::test]
async fn bad_tokens_complete_the_upgrade_then_close_4500_or_4501() {
    let gw = Gateway::start(&[]);
    let mut other = gw.json("bystander").await;
    let expired = gw.token_with(spec("old", -10));
    let forged = loadtest::token::mint(&SigningKey::hs256(b"not-the-secret".to_vec()), &spec("eve", 3600));
    let none = mint_unsigned_none(&spec("eve", 3600));
    let cases = [(expired.as_str(), 4501), (forged.as_str(), 4500), (none.as_str(), 4500), ("garbage", 4500)];
    for (token, code) in cases {
        let mut c = Client::connect(gw.options(Some(token))).await.expect("upgrade completes");
        assert_eq!(c.wait_close(T).await.unwrap(), Some(code), "token {token:.20}");
    }
    // In the Authorization header too.
    let mut opts = gw.options(None);
    opts.bearer = Some(forged.clone());
    let mut c = Client::connect(opts).await.unwrap();
    assert_eq!(c.wait_close(T).await.unwrap(), Some(4500));
    still_served(&mut other).await;
}

#[tokio::test]
async fn auth_by_first_frame_or_timeout() {
    let gw = Gateway::start(&["--auth-timeout", "500ms"]);
    // No token anywhere, and no auth frame: 4500 after the timeout.
    let mut silent = Client::connect(gw.options(None)).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(silent.wait_close(T).await.unwrap(), Some(4500));
    assert!(started.elapsed() >= Duration::from_millis(400));

    // Another op before auth: 4500.
    let mut eager = Client::connect(gw.options(None)).await.unwrap();
    eager.send_json(&json!({"op": "join", "room": "x", "id": 1})).await.unwrap();
    assert_eq!(eager.wait_close(T).await.unwrap(), Some(4500));

    // A forged auth frame: an unauthorized reply, then 4500.
    let mut forged = Client::connect(gw.options(None)).await.unwrap();
    let bad = loadtest::token::mint(&SigningKey::hs256(b"wrong".to_vec()), &spec("eve", 60));
    forged.send_json(&json!({"op": "auth", "token": bad, "id": 1})).await.unwrap();
    let r = forged.next_json(T).await.unwrap();
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    assert_eq!(forged.wait_close(T).await.unwrap(), Some(4500));

    // A good auth frame: hello, then the reply.
    let mut ok = Client::connect(gw.options(None)).await.unwrap();
    ok.send_json(&json!({"op": "auth", "token": gw.token("late"), "id": "a1"})).await.unwrap();
    let hello = ok.next_json(T).await.unwrap();
    assert_eq!((hello["type"].as_str(), hello["user"].as_str()), (Some("hello"), Some("late")));
    let r = ok.next_json(T).await.unwrap();
    assert_eq!((r["id"].as_str(), r["ok"].as_bool()), (Some("a1"), Some(true)), "{r}");
    join(&mut ok, "x").await;
}

#[tokio::test]
async fn room_claims_limit_joins() {
    let gw = Gateway::start(&["--default-rooms", "public:*"]);
    let token = gw.token_with(TokenSpec {
        sub: "alice".into(),
        exp_in: 60,
        rooms: Some(vec!["chat:*".into(), "lobby".into()]),
        info: Some(json!({"name": "Alice"})),
        ..TokenSpec::default()
    });
    let mut c = Client::connect(gw.options(Some(&token))).await.unwrap();
    c.next_of_type("hello", T).await.unwrap();
    let r = c.request(json!({"op": "join", "room": "secret"})).await.unwrap();
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    let r = c.request(json!({"op": "members", "room": "secret"})).await.unwrap();
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    join(&mut c, "chat:1").await;
    join(&mut c, "lobby").await;
    let members = c.request(json!({"op": "members", "room": "lobby"})).await.unwrap();
    assert_eq!(members["members"][0]["info"], json!({"name": "Alice"}), "{members}");

    // Without a rooms claim the server default applies.
    let mut d = gw.json("dave").await;
    let r = d.request(json!({"op": "join", "room": "lobby"})).await.unwrap();
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    join(&mut d, "public:square").await;
}

#[tokio::test]
async fn origin_allow_list() {
    let gw = Gateway::start(&["--allowed-origins", "https://app.example, https://admin.example"]);
    let token = gw.token("alice");
    let mut opts = gw.options(Some(&token));
    opts.origin = Some("https://evil.example".into());
    let mut c = Client::connect(opts.clone()).await.unwrap();
    assert_eq!(c.wait_close(T).await.unwrap(), Some(1008));
    opts.origin = None;
    let mut c = Client::connect(opts.clone()).await.unwrap();
    assert_eq!(c.wait_close(T).await.unwrap(), Some(1008), "a missing Origin is not allowed either");
    opts.origin = Some("https://app.example".into());
    let mut c = Client::connect(opts).await.unwrap();
    c.next_of_type("hello", T).await.unwrap();
}

#[tokio::test]
async fn non_websocket_requests_get_http_errors() {
    let gw = Gateway::start(&[]);
    let (status, _) = http_get(&gw.ws.replace("ws://", "http://")).await;
    assert_eq!(status, 426);
    let mut opts = ConnectOptions::new(gw.ws.clone());
    opts.protocols = vec!["chat".into()];
    assert!(matches!(Client::connect(opts).await, Err(ClientError::Http(400))));
}

#[tokio::test]
async fn data_over_64_kib_is_too_large_where_the_message_cap_allows_it() {
    // A raised message cap lets a 100 KB frame in; its data is still refused.
    let gw = Gateway::start(&["--max-message-bytes", "200000"]);
    let mut c = gw.json("big").await;
    join(&mut c, "r").await;
    let data = json!("x".repeat(100_000));
    for op in [json!({"op": "publish", "room": "r", "data": data}), json!({"op": "send", "user": "big", "data": data})]
    {
        let r = c.request(op).await.unwrap();
        assert_eq!(r["error"]["code"], "too_large", "{r}");
    }
    // Exactly 64 KiB is fine.
    let fits = json!("x".repeat(64 * 1024 - 2));
    publish(&mut c, "r", fits).await;
    still_served(&mut c).await;
}
