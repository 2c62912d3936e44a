//! `examples/backend` (a real Node.js program) beside a standalone gateway,
//! run as its README says: hooks (cookie login, private support rooms, a
//! word filter), webhooks (a welcome message, a greeting) and the server API
//! (a ban) seen from real WebSocket clients.

mod support;

use loadtest::client::{Client, ConnectOptions};
use serde_json::{json, Value};
use support::process::{on_path, Proc};
use support::{http_get, http_post, Gateway, T};

const SECRET: &str = "example-secret-for-the-test";

/// Logs `user` in at the backend; the session cookie.
async fn login(backend: &str, user: &str) -> String {
    let (status, body) = http_get(&format!("{backend}/login?user={user}")).await;
    assert_eq!(status, 200, "{body}");
    let session: Value = serde_json::from_str(&body).unwrap();
    format!("session={}", session["session"].as_str().unwrap())
}

/// A connection that presents only `cookie`.
async fn connect_raw(gw: &Gateway, cookie: &str) -> Client {
    let mut opts = ConnectOptions::new(gw.ws.clone());
    opts.headers = vec![("Cookie".into(), cookie.into())];
    Client::connect(opts).await.unwrap()
}

/// [`connect_raw`], and its first frame.
async fn connect(gw: &Gateway, cookie: &str) -> (Client, Value) {
    let mut c = connect_raw(gw, cookie).await;
    let first = c.next_json(T).await.unwrap_or(Value::Null);
    (c, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_backend_runs_beside_a_standalone_gateway() {
    let node = on_path("node").expect("node (Node.js 18+) is required to run examples/backend: install nodejs");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let script = format!("{root}/examples/backend/server.js");
    // The gateway first, pointed at a free port for the backend; then the
    // backend there, pointed at the API address the gateway printed.
    let port = support::cluster::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let (hooks, webhooks) = (format!("{base}/hooks"), format!("{base}/webhooks"));
    let config = format!("{root}/examples/backend/switchboard.toml");
    let gw = Gateway::start_raw(
        &["--config", &config, "--hook-url", &hooks, "--hook-secret", SECRET]
            .into_iter()
            .chain(["--webhook-url", &webhooks, "--webhook-secret", SECRET])
            .collect::<Vec<_>>(),
        String::new(),
    );
    let api = gw.api.clone().expect("an api line");
    let listen = format!("127.0.0.1:{port}");
    let args = [script.as_str(), "--listen", &listen, "--api", &api, "--secret", SECRET].map(str::to_owned);
    let _backend = Proc::start("example-backend", &node, &args, Some("webhooks"));

    // connect: the cookie stands in for a token.
    let refused = connect_raw(&gw, "session=unknown").await.wait_close(T).await.unwrap();
    assert_eq!(refused, Some(4500), "an unknown session is refused");
    let ann_cookie = login(&base, "ann").await;
    let (mut ann, hello) = connect(&gw, &ann_cookie).await;
    assert_eq!((&hello["type"], &hello["user"]), (&json!("hello"), &json!("ann")), "{hello}");

    // join: ann's own support room. The webhooks follow: the room became
    // occupied (a greeting in the room) and ann joined it (a welcome).
    let r = ann.request(json!({"op": "join", "room": "support:ann"})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let welcome = ann.next_of_type("direct", T).await.unwrap();
    assert_eq!(welcome["data"]["text"], "Welcome to support:ann", "{welcome}");
    let greeting = ann.next_of_type("message", T).await.unwrap();
    assert_eq!(
        (&greeting["data"]["text"], &greeting["from"]),
        (&json!("An agent will be with you shortly"), &json!(""))
    );

    // publish: the backend masks what it does not want shown.
    let r = ann.request(json!({"op": "publish", "room": "support:ann", "data": {"text": "this darn printer"}})).await;
    assert_eq!(r.unwrap()["ok"], true);
    let m = ann.next_of_type("message", T).await.unwrap();
    assert_eq!((&m["data"]["text"], &m["from"]), (&json!("this **** printer"), &json!("ann")), "{m}");

    // join: someone else's support room is private; an agent may come in.
    let (mut mallory, _) = connect(&gw, &login(&base, "mallory").await).await;
    let r = mallory.request(json!({"op": "join", "room": "support:ann"})).await.unwrap();
    assert_eq!((&r["ok"], &r["error"]["code"]), (&json!(false), &json!("forbidden")), "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("support rooms are private"), "{r}");
    let (mut agent, _) = connect(&gw, &login(&base, "agent-bo").await).await;
    let r = agent.request(json!({"op": "join", "room": "support:ann"})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");

    // The server API: a ban closes every connection of the user, and the
    // connect hook refuses them from then on.
    let (mut mallory2, _) = connect(&gw, &login(&base, "mallory").await).await;
    let (status, body) = http_post(&format!("{base}/admin/ban"), &[], br#"{"user": "mallory"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["closed"], 2, "{body}");
    for c in [&mut mallory, &mut mallory2] {
        assert_eq!(c.wait_close(T).await.unwrap(), Some(4502));
    }
    let again = connect_raw(&gw, &login(&base, "mallory").await).await.wait_close(T).await.unwrap();
    assert_eq!(again, Some(4500), "banned");

    // Everyone else is still there.
    let r = ann.request(json!({"op": "members", "room": "support:ann"})).await.unwrap();
    assert_eq!(r["count"], 2, "{r}");
}
