//! Backend hooks against a real standalone gateway and a real HTTP backend
//! started here: `connect` (cookie or a listed header instead of a token),
//! `join` and `publish` (allow, deny with the backend's code, rewrite), a
//! backend that fails or hangs, and the signatures.

mod support;

use std::time::{Duration, Instant};

use gateway::hooks::signature;
use loadtest::client::{Client, ConnectOptions};
use serde_json::{json, Value};
use support::backend::{Backend, Reply};
use support::process::TempDir;
use support::*;

const SECRET: &str = "hook-secret-new";
const OLD_SECRET: &str = "hook-secret-old";
const TIMEOUT: Duration = Duration::from_millis(500);

const POLICY: &str = r#"
[[namespace]]
prefix = "chat:"
hooks = ["join", "publish"]
"#;

/// What the backend answers, by hook and input.
fn backend(path: &str, body: &Value) -> Reply {
    let slow = Reply { status: 200, body: json!({"ok": true}), delay: Duration::from_secs(3) };
    match path {
        "/hooks/connect" => {
            let session = body["cookie"].as_str().map(|c| c.trim_start_matches("sid=").to_owned());
            let session = session.or_else(|| body["headers"]["x-session"].as_str().map(str::to_owned));
            match session.as_deref() {
                Some("ann") => Reply::ok(json!({"user": "ann", "info": {"name": "Ann"}, "rooms": ["chat:*"]})),
                Some("bad") => Reply::ok(json!({"error": {"code": "unauthorized", "message": "no such session"}})),
                Some("boom") => Reply { status: 500, body: json!({}), delay: Duration::ZERO },
                Some("slow") => slow,
                // Short lives, for the refresh hook.
                Some(user @ ("rita" | "nora")) => Reply::ok(json!({"user": user, "exp": proto::now_ms() / 1000 + 2})),
                Some(other) => Reply::ok(json!({"user": other, "rooms": ["chat:*"]})),
                None => Reply::ok(json!({"error": {"code": "unauthorized", "message": "no session"}})),
            }
        }
        "/hooks/refresh" => match body["user"].as_str() {
            Some("rita") => Reply::ok(json!({"user": "rita", "exp": proto::now_ms() / 1000 + 2})),
            _ => Reply::ok(json!({"error": {"code": "unauthorized", "message": "session ended"}})),
        },
        "/hooks/join" => match body["room"].as_str().unwrap_or_default() {
            "chat:vip" => Reply::ok(json!({"ok": false, "error": {"code": "forbidden", "message": "members only"}})),
            "chat:banned" => Reply::ok(json!({"ok": false, "error": {"code": "banned", "message": "go away"}})),
            "chat:hang" => slow,
            _ => Reply::ok(json!({"ok": true})),
        },
        "/hooks/publish" => match body["data"]["text"].as_str().unwrap_or_default() {
            "darn" => Reply::ok(json!({"ok": true, "data": {"text": "d**n"}})),
            "spam" => Reply::ok(json!({"ok": false, "error": {"code": "forbidden", "message": "no spam"}})),
            "hang" => slow,
            _ => Reply::ok(json!({"ok": true})),
        },
        _ => Reply { status: 404, body: json!({}), delay: Duration::ZERO },
    }
}

/// A client that presents `headers` instead of a token.
async fn with_headers(gw: &Gateway, headers: &[(&str, &str)]) -> Result<Client, loadtest::client::ClientError> {
    let mut opts = ConnectOptions::new(gw.ws.clone());
    opts.headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Client::connect(opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_let_the_backend_authenticate_approve_and_rewrite() {
    let backend = Backend::start(backend).await;
    let dir = TempDir::new("hooks");
    let config = dir.path.join("switchboard.toml");
    std::fs::write(&config, POLICY).unwrap();
    let hook_url = format!("{}/hooks", backend.url);
    let timeout = format!("{}ms", TIMEOUT.as_millis());
    let gw = Gateway::start(&[
        "--config",
        config.to_str().unwrap(),
        "--hook-url",
        &hook_url,
        "--hook-timeout",
        &timeout,
        "--hook-secret",
        SECRET,
        "--hook-secret",
        OLD_SECRET,
        "--hook-headers",
        "x-session",
    ]);

    // connect: a cookie (or a listed header) stands in for a token.
    let mut ann = with_headers(&gw, &[("cookie", "sid=ann")]).await.unwrap();
    let hello = ann.next_of_type("hello", T).await.unwrap();
    assert_eq!(hello["user"], "ann", "{hello}");
    let mut bob = with_headers(&gw, &[("x-session", "bob")]).await.unwrap();
    assert_eq!(bob.next_of_type("hello", T).await.unwrap()["user"], "bob");
    let r = ann.request(json!({"op": "join", "room": "lobby"})).await.unwrap();
    assert_eq!(r["error"]["code"], "forbidden", "the hook's rooms stand in for the claim: {r}");

    for (cookie, code) in [("sid=bad", 4500), ("sid=boom", 1013)] {
        let mut c = with_headers(&gw, &[("cookie", cookie)]).await.unwrap();
        assert_eq!(c.wait_close(T).await.unwrap(), Some(code), "{cookie}");
    }
    let started = Instant::now();
    let mut c = with_headers(&gw, &[("cookie", "sid=slow")]).await.unwrap();
    assert_eq!(c.wait_close(T).await.unwrap(), Some(1013), "a slow backend: retry later");
    assert!(started.elapsed() < TIMEOUT + Duration::from_secs(1), "{:?}", started.elapsed());

    // join: allowed, refused with the backend's code, or as forbidden naming it.
    for c in [&mut ann, &mut bob] {
        assert_eq!(c.request(json!({"op": "join", "room": "chat:general"})).await.unwrap()["ok"], true);
    }
    let r = ann.request(json!({"op": "join", "room": "chat:vip"})).await.unwrap();
    assert_eq!(
        (r["error"]["code"].as_str(), r["error"]["message"].as_str()),
        (Some("forbidden"), Some("members only"))
    );
    let r = ann.request(json!({"op": "join", "room": "chat:banned"})).await.unwrap();
    assert_eq!(
        (r["error"]["code"].as_str(), r["error"]["message"].as_str()),
        (Some("forbidden"), Some("banned: go away"))
    );

    // publish: passed, rewritten, refused.
    let r = ann.request(json!({"op": "publish", "room": "chat:general", "data": {"text": "darn"}})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let m = bob.next_of_type("message", T).await.unwrap();
    assert_eq!(m["data"], json!({"text": "d**n"}), "the backend rewrote it");
    let r = ann.request(json!({"op": "publish", "room": "chat:general", "data": {"text": "spam"}})).await.unwrap();
    assert_eq!((r["error"]["code"].as_str(), r["error"]["message"].as_str()), (Some("forbidden"), Some("no spam")));

    // A hanging hook refuses its own request at the timeout; the others chat on.
    let hung = tokio::spawn(async move {
        let started = Instant::now();
        let r = ann.request(json!({"op": "join", "room": "chat:hang"})).await.unwrap();
        (r, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let r =
        bob.request(json!({"op": "publish", "room": "chat:general", "data": {"text": "still here"}})).await.unwrap();
    assert_eq!(r["ok"], true);
    assert!(started.elapsed() < TIMEOUT / 2, "others are not held up: {:?}", started.elapsed());
    let (r, took) = hung.await.unwrap();
    assert_eq!(r["error"]["code"], "unavailable", "{r}");
    assert!(took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(1), "{took:?}");

    // refresh: a short-lived hook session is renewed before it expires, or
    // closed with 4501 when the backend says no.
    let mut rita = with_headers(&gw, &[("cookie", "sid=rita")]).await.unwrap();
    let mut nora = with_headers(&gw, &[("cookie", "sid=nora")]).await.unwrap();
    for c in [&mut rita, &mut nora] {
        c.next_of_type("hello", T).await.unwrap();
    }
    let started = Instant::now();
    assert_eq!(nora.wait_close(Duration::from_secs(4)).await.unwrap(), Some(4501));
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "closed at the refusal, before exp: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(4) - started.elapsed()).await;
    let r = rita.request(json!({"op": "join", "room": "chat:general"})).await.unwrap();
    assert_eq!(r["ok"], true, "renewed past its first exp: {r}");
    let refreshes = backend.requests("/hooks/refresh");
    let rita_refresh =
        refreshes.iter().find(|r| r.body.windows(6).any(|w| w == b"\"rita\"")).expect("a refresh for rita");
    let body: Value = serde_json::from_slice(&rita_refresh.body).unwrap();
    assert_eq!((body["cookie"].as_str(), body["user"].as_str()), (Some("sid=rita"), Some("rita")));
    assert!(body["conn"].as_str().is_some_and(|c| !c.is_empty()));

    // Every request was signed with the first secret, freshly.
    let received = backend.received.lock().unwrap().clone();
    assert!(received.len() >= 10, "{}", received.len());
    let now = proto::now_ms() / 1000;
    for r in &received {
        let ts: i64 = r.timestamp.as_deref().unwrap().parse().unwrap();
        let sig = r.signature.as_deref().unwrap();
        let verify = |secrets: &[&str]| {
            let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
            signature::verify(&secrets, ts, &r.body, sig, now)
        };
        assert!(verify(&[SECRET]) && verify(&[OLD_SECRET, SECRET]), "{}", r.path);
        assert!(!verify(&[OLD_SECRET]) && !verify(&["another"]), "{}", r.path);
        assert!(
            !signature::verify(&[SECRET.as_bytes().to_vec()], ts, &r.body, sig, ts + 301),
            "a replay later is refused"
        );
    }
    let m = gw.metrics().await;
    assert!(metric(&m, "switchboard_gateway_hook_calls_total{hook=\"connect\",outcome=\"timeout\"}") >= 1.0, "{m}");
    assert!(metric(&m, "switchboard_gateway_hook_calls_total{hook=\"join\",outcome=\"denied\"}") >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_reach_an_https_backend_whose_ca_ssl_cert_file_names() {
    let (backend, ca) = Backend::start_tls(backend).await;
    let (_other, other_ca) = Backend::start_tls(backend_fn_unused).await;
    let dir = TempDir::new("hooks-tls");
    let (ours, theirs) = (dir.path.join("ca.pem"), dir.path.join("other-ca.pem"));
    std::fs::write(&ours, ca).unwrap();
    std::fs::write(&theirs, other_ca).unwrap();
    let hook_url = format!("{}/hooks", backend.url);
    assert!(hook_url.starts_with("https://127.0.0.1:"), "{hook_url}");
    for (ca_file, code) in [(&ours, None), (&theirs, Some(1013))] {
        let gw = Gateway::start_env(&["--hook-url", &hook_url], &[("SSL_CERT_FILE", ca_file.to_str().unwrap())]);
        let mut c = with_headers(&gw, &[("cookie", "sid=ann")]).await.unwrap();
        match code {
            None => assert_eq!(c.next_of_type("hello", T).await.unwrap()["user"], "ann", "trusted: the hook answers"),
            Some(code) => {
                assert_eq!(c.wait_close(T).await.unwrap(), Some(code), "an unknown CA fails like a down backend")
            }
        }
    }
    assert_eq!(backend.requests("/hooks/connect").len(), 1, "only the trusting gateway got through");
}

/// A backend that is never asked anything (its CA is the wrong one).
fn backend_fn_unused(_: &str, _: &Value) -> Reply {
    Reply::ok(json!({}))
}
