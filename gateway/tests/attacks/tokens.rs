//! Tokens that must be refused, and room claims that must not match.

use super::*;

// Tokens. bad_input.rs covers expired (4501), a forged signature, `alg:
// none` and "garbage" against an HS256 gateway; protocol.rs the HS256 token
// signed with the public key (key confusion) against RS256 and ES256.

#[tokio::test]
async fn bad_tokens_against_an_hs256_gateway() {
    // Dozens of failures from one IP: all within the failure budget, so each
    // gets its own answer (floods.rs covers the budget).
    let gw = Gateway::start(&["--auth-failure-ip-rate", "1000"]);
    let mut bystander = Bystander::start(&gw).await;
    let secret = EncodingKey::from_secret(gw.secret.as_bytes());
    let rsa = SigningKey::from_private_key_pem(&std::fs::read(format!("{KEYS}/rsa_private.pem")).unwrap()).unwrap();
    let ec = SigningKey::from_private_key_pem(&std::fs::read(format!("{KEYS}/ec_private.pem")).unwrap()).unwrap();
    let exp = now_secs() + 3600;
    let mut cases: Vec<(&str, String, u16)> = vec![
        ("RS256 token", mint(&rsa, &spec("eve", 3600)), 4500),
        ("ES256 token", mint(&ec, &spec("eve", 3600)), 4500),
        ("HS512 with the secret", signed(Algorithm::HS512, &secret, &json!({"sub": "eve", "exp": exp})), 4500),
        ("missing sub", signed(Algorithm::HS256, &secret, &json!({"exp": exp})), 4500),
        ("missing exp", signed(Algorithm::HS256, &secret, &json!({"sub": "eve"})), 4500),
        ("exp a string", signed(Algorithm::HS256, &secret, &json!({"sub": "eve", "exp": "later"})), 4500),
        ("not yet valid", signed(Algorithm::HS256, &secret, &json!({"sub": "eve", "exp": exp, "nbf": exp})), 4500),
        ("rooms not a list", signed(Algorithm::HS256, &secret, &json!({"sub": "eve", "exp": exp, "rooms": "*"})), 4500),
        ("expired and forged", mint(&SigningKey::hs256(b"other".to_vec()), &spec("eve", -10)), 4500),
        ("empty segments", "..".into(), 4500),
        ("four segments", "a.b.c.d".into(), 4500),
        ("not base64", "%%%.***.!!!".into(), 4500),
        ("10 KB of garbage", "x".repeat(10_000), 4500),
    ];
    // A genuine signature over a `sub` that would widen a NATS subject.
    for sub in ["*", ">", "a.b", "a.*", "", "a b", "é"] {
        cases.push((
            "sub not a valid user id",
            signed(Algorithm::HS256, &secret, &json!({"sub": sub, "exp": exp})),
            4500,
        ));
    }
    for (case, token, code) in &cases {
        assert_eq!(close_code_for(&gw, &percent_encode(token)).await, Some(*code), "{case}");
    }
    // The same refusals through the Authorization header and the auth frame.
    for (case, token, code) in cases.iter().filter(|(_, t, _)| !t.is_empty() && !t.contains(' ')) {
        let mut opts = gw.options(None);
        opts.bearer = Some(token.clone());
        let mut c = Client::connect(opts).await.unwrap();
        assert_eq!(c.wait_close(T).await.unwrap(), Some(*code), "{case} (header)");
    }
    for (case, token, code) in &cases {
        let mut c = Client::connect(gw.options(None)).await.unwrap();
        c.send_json(&json!({"op": "auth", "token": token, "id": 1})).await.unwrap();
        let r = c.next_json(T).await.unwrap();
        assert_eq!(r["error"]["code"], "unauthorized", "{case} (frame): {r}");
        assert_eq!(c.wait_close(T).await.unwrap(), Some(*code), "{case} (frame)");
    }
    // Expired in an auth frame: an unauthorized reply, then 4501.
    let mut c = Client::connect(gw.options(None)).await.unwrap();
    c.send_json(&json!({"op": "auth", "token": gw.token_with(spec("old", -10)), "id": 1})).await.unwrap();
    assert_eq!(c.next_json(T).await.unwrap()["error"]["code"], "unauthorized");
    assert_eq!(c.wait_close(T).await.unwrap(), Some(4501));

    // A 100 KB token does not fit the 16 KiB request head (431), nor a
    // 64 KiB message (1009); 60 KB in an auth frame is read and refused.
    let huge = "x".repeat(100_000);
    let addr = ws_addr(&gw);
    let query =
        format!("GET /ws?token={huge} HTTP/1.1\r\n{HOST}\r\n{UPGRADE}\r\n{CONNECTION}\r\n{KEY}\r\n{VERSION}\r\n\r\n");
    let query = query.into_bytes();
    let header = format!("Authorization: Bearer {huge}");
    let header = upgrade_request("GET", "HTTP/1.1", &[HOST, UPGRADE, CONNECTION, KEY, VERSION, &header]);
    for (case, request) in [("query", query), ("header", header)] {
        let (status, head) = raw_http(&addr, request).await;
        eprintln!("100 KB token in the {case}: HTTP {status}");
        assert!(status == 431 || (status == 0 && head.is_empty()), "100 KB token in the {case}: {head}");
    }
    let mut c = Client::connect(gw.options(None)).await.unwrap();
    c.send_json(&json!({"op": "auth", "token": huge})).await.unwrap();
    assert_eq!(c.wait_close(T).await.unwrap(), Some(1009), "100 KB auth frame");
    let mut c = Client::connect(gw.options(None)).await.unwrap();
    c.send_json(&json!({"op": "auth", "token": "x".repeat(60_000), "id": 1})).await.unwrap();
    assert_eq!(c.next_json(T).await.unwrap()["error"]["code"], "unauthorized");
    assert_eq!(c.wait_close(T).await.unwrap(), Some(4500), "60 KB auth frame");

    bystander.check(&gw).await;
}

#[tokio::test]
async fn bad_tokens_against_rs256_and_es256_gateways() {
    let key = |name: &str| std::fs::read(format!("{KEYS}/{name}")).unwrap();
    let rsa = SigningKey::from_private_key_pem(&key("rsa_private.pem")).unwrap();
    let ec = SigningKey::from_private_key_pem(&key("ec_private.pem")).unwrap();
    let rsa_raw = EncodingKey::from_rsa_pem(&key("rsa_private.pem")).unwrap();
    let claims = json!({"sub": "eve", "exp": now_secs() + 3600});
    let hs = mint(&SigningKey::hs256(b"some-secret".to_vec()), &spec("eve", 3600));
    let none = mint_unsigned_none(&spec("eve", 3600));

    let gw = Gateway::start_raw(&["--jwt-public-key", &format!("{KEYS}/rsa_public.pem")], String::new());
    let cases = [
        ("HS256 token", hs.clone()),
        ("alg none", none.clone()),
        ("ES256 token", mint(&ec, &spec("eve", 3600))),
        ("RS512 with the right key", signed(Algorithm::RS512, &rsa_raw, &claims)),
        ("PS256 with the right key", signed(Algorithm::PS256, &rsa_raw, &claims)),
        ("RS256 missing sub", signed(Algorithm::RS256, &rsa_raw, &json!({"exp": now_secs() + 60}))),
        ("RS256 missing exp", signed(Algorithm::RS256, &rsa_raw, &json!({"sub": "eve"}))),
        ("RS256 sub `*`", signed(Algorithm::RS256, &rsa_raw, &json!({"sub": "*", "exp": now_secs() + 60}))),
    ];
    for (case, token) in &cases {
        assert_eq!(close_code_for(&gw, token).await, Some(4500), "RS256 gateway, {case}");
    }
    assert_eq!(close_code_for(&gw, &mint(&rsa, &spec("old", -10))).await, Some(4501), "RS256 expired");
    let mut ok = Client::connect(gw.options(Some(&mint(&rsa, &spec("kim", 60))))).await.unwrap();
    assert_eq!(ok.next_of_type("hello", T).await.unwrap()["user"], "kim", "a genuine RS256 token still works");

    let gw = Gateway::start_raw(&["--jwt-public-key", &format!("{KEYS}/ec_public.pem")], String::new());
    for (case, token) in [("HS256 token", hs), ("alg none", none), ("RS256 token", mint(&rsa, &spec("eve", 3600)))] {
        assert_eq!(close_code_for(&gw, &token).await, Some(4500), "ES256 gateway, {case}");
    }
    let mut ok = Client::connect(gw.options(Some(&mint(&ec, &spec("kim", 60))))).await.unwrap();
    assert_eq!(ok.next_of_type("hello", T).await.unwrap()["user"], "kim", "a genuine ES256 token still works");
}

/// bad_input.rs (`room_claims_limit_joins`) covers a room outside the
/// claim; these are the near misses a sloppy matcher would let through.
#[tokio::test]
async fn room_claims_do_not_match_near_misses() {
    let gw = Gateway::start(&[]);
    let token = |rooms: Vec<&str>| {
        gw.token_with(TokenSpec {
            sub: "claimant".into(),
            exp_in: 60,
            rooms: Some(rooms.into_iter().map(str::to_owned).collect()),
            info: None,
            ..TokenSpec::default()
        })
    };
    let mut c = Client::connect(gw.options(Some(&token(vec!["chat:*", "lobby"])))).await.unwrap();
    c.next_of_type("hello", T).await.unwrap();
    for room in ["chat", "CHAT:1", "xchat:1", "lobby2", "Lobby", "xlobby", "lobb"] {
        let r = c.request(json!({"op": "join", "room": room})).await.unwrap();
        assert_eq!(r["error"]["code"], "forbidden", "{room}: {r}");
        let r = c.request(json!({"op": "publish", "room": room, "data": 1})).await.unwrap();
        assert_eq!(r["error"]["code"], "not_member", "{room}: {r}");
    }
    join(&mut c, "chat:1").await;
    join(&mut c, "lobby").await;
    // An empty list allows nothing (it is not "absent").
    let mut none = Client::connect(gw.options(Some(&token(vec![])))).await.unwrap();
    none.next_of_type("hello", T).await.unwrap();
    let r = none.request(json!({"op": "join", "room": "lobby"})).await.unwrap();
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
}

#[tokio::test]
async fn a_refresh_that_no_longer_allows_a_room_removes_the_connection_from_it() {
    let gw = Gateway::start(&[]);
    let scoped = |rooms: &[&str]| {
        gw.token_with(TokenSpec {
            sub: "mallory".into(),
            exp_in: 3600,
            rooms: Some(rooms.iter().map(|r| r.to_string()).collect()),
            info: None,
            ..TokenSpec::default()
        })
    };
    let mut m = Client::connect(gw.options(Some(&scoped(&["keep", "vault"])))).await.unwrap();
    m.next_of_type("hello", T).await.unwrap();
    join(&mut m, "keep").await;
    join(&mut m, "vault").await;
    let mut owner = gw.json("owner").await;
    join(&mut owner, "vault").await;

    let r = m.request(json!({"op": "refresh", "token": scoped(&["keep"])})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let removed = m.next_of_type("removed", T).await.unwrap();
    assert_eq!(removed, json!({"type": "removed", "room": "vault", "reason": "token"}));
    let left = owner.next_of_type("left", T).await.unwrap();
    assert_eq!(left["user"], "mallory", "the others see the member go");
    let r = m.request(json!({"op": "publish", "room": "vault", "data": "still here?"})).await.unwrap();
    assert_eq!(r["error"]["code"], "not_member", "{r}");
    publish(&mut owner, "vault", json!("secret")).await;
    publish(&mut m, "keep", json!("allowed")).await;
    let got = m.next_of_type("message", T).await.unwrap();
    assert_eq!(got["room"], "keep", "nothing more from the revoked room: {got}");
    let r = m.request(json!({"op": "join", "room": "vault"})).await.unwrap();
    assert_eq!(r["error"]["code"], "forbidden", "{r}");

    // The same in protobuf; a refresh without `rooms` falls back to --default-rooms.
    let mut p = gw.proto("mallory").await;
    use pb::client_frame::Op;
    p.request_proto(Op::Join(pb::JoinOp { room: "vault".into(), since: None })).await.unwrap();
    let r = p.request_proto(Op::Refresh(pb::RefreshOp { token: scoped(&["keep"]) })).await.unwrap();
    assert!(r.ok, "{r:?}");
    let f = p.wait_proto(T, |f| matches!(f.kind, Some(pb::server_frame::Kind::Removed(_)))).await.unwrap();
    let Some(pb::server_frame::Kind::Removed(removed)) = f.kind else { unreachable!() };
    assert_eq!((removed.room.as_str(), removed.reason.as_str()), ("vault", "token"));
    p.request_proto(Op::Join(pb::JoinOp { room: "vault".into(), since: None })).await.unwrap();
    let r = p.request_proto(Op::Refresh(pb::RefreshOp { token: gw.token("mallory") })).await.unwrap();
    assert!(r.ok, "{r:?}");
    let stray =
        p.wait_proto(Duration::from_millis(300), |f| matches!(f.kind, Some(pb::server_frame::Kind::Removed(_))));
    assert!(matches!(stray.await, Err(ClientError::Timeout)), "the default rooms (*) allow the room");
}
