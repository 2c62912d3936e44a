//! The demo page, the JavaScript client and demo tokens over HTTP.

mod support;

use loadtest::client::{Client, ConnectOptions};
use serde_json::Value;
use support::*;

/// A response: status, lower-cased headers, body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over loopback with extra headers.
async fn request(base: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.strip_prefix("http://").expect("http URL").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply { status, headers, body: body.to_owned() }
}

/// The printed demo URL, split into the HTTP base and its token (if any).
fn demo_url(gw: &Gateway) -> (String, Option<String>) {
    let url = gw.proc.printed("demo").expect("a demo line");
    match url.split_once("/?token=") {
        Some((base, token)) => (base.to_owned(), Some(token.to_owned())),
        None => (url.trim_end_matches('/').to_owned(), None),
    }
}

#[tokio::test]
async fn serves_the_page_and_the_client_with_types_and_caching_headers() {
    let gw = Gateway::start_raw(&[], String::new());
    let (base, _) = demo_url(&gw);
    assert_eq!(format!("{}/ws", base.replace("http://", "ws://")), gw.ws, "the page is on the WebSocket port");

    let page = request(&base, "GET", "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"), "the page's URL holds a token");
    assert!(page.header("content-security-policy").is_some_and(|p| p.contains("connect-src 'self'")));
    assert!(page.body.contains(r#"<script type="module" src="/demo.js">"#), "{}", page.body);

    let js = request(&base, "GET", "/switchboard.js", &[]).await;
    assert_eq!(js.status, 200);
    assert_eq!(js.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(js.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(js.header("access-control-allow-origin"), Some("*"), "importable from other origins");
    assert!(js.body.contains("export function connect("));
    assert_eq!(js.body.as_bytes(), include_bytes!("../../clients/js/switchboard.js"));

    for (path, ty) in [
        ("/demo.js", "text/javascript; charset=utf-8"),
        ("/demo.css", "text/css; charset=utf-8"),
        ("/switchboard.d.ts", "application/typescript; charset=utf-8"),
    ] {
        let r = request(&base, "GET", path, &[]).await;
        assert_eq!((r.status, r.header("content-type")), (200, Some(ty)), "{path}");
    }

    // Revalidation with the ETag costs no body.
    let etag = js.header("etag").expect("an etag").to_owned();
    let again = request(&base, "GET", "/switchboard.js", &[("If-None-Match", &etag)]).await;
    assert_eq!((again.status, again.body.as_str()), (304, ""));
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_ne!(page.header("etag"), Some(etag.as_str()));

    let head = request(&base, "HEAD", "/", &[]).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let post = request(&base, "POST", "/", &[("Content-Length", "0")]).await;
    assert_eq!((post.status, post.header("allow")), (405, Some("GET, HEAD")));
    assert_eq!(request(&base, "GET", "/nothing-here", &[]).await.status, 404);
}

#[tokio::test]
async fn demo_tokens_are_minted_only_for_the_printed_demo_token() {
    let gw = Gateway::start_raw(&[], String::new());
    let (base, token) = demo_url(&gw);
    let demo = token.expect("the demo URL carries the demo token");
    let connect = gw.proc.printed("connect").unwrap();
    assert!(connect.ends_with(&format!("?token={demo}")), "one demo token: {connect}");
    let bearer = format!("Bearer {demo}");

    let none = request(&base, "GET", "/demo/token?user=alice", &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = request(&base, "GET", "/demo/token?user=alice", &[("Authorization", "Bearer not-the-token")]).await;
    assert_eq!(wrong.status, 401);
    let in_query = request(&base, "GET", &format!("/demo/token?user=alice&token={demo}"), &[]).await;
    assert_eq!(in_query.status, 401, "the header only: URLs end up in histories and logs");

    let ok = request(&base, "GET", "/demo/token?user=al%40ice", &[("Authorization", &bearer)]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("content-type"), Some("application/json"));
    assert_eq!(ok.header("cache-control"), Some("no-store"));
    let body: Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(body["user"], "al@ice");
    let now = proto::now_ms() / 1000;
    let exp = body["exp"].as_i64().unwrap();
    assert!(exp > now && exp <= now + 3600, "short-lived: {exp} vs now {now}");
    let minted = body["token"].as_str().unwrap().to_owned();

    // The minted token connects as its user …
    let mut c = Client::connect(ConnectOptions::new(gw.url_with_token(&minted))).await.unwrap();
    let hello = c.next_json(T).await.unwrap();
    assert_eq!((hello["type"].as_str(), hello["user"].as_str()), (Some("hello"), Some("al@ice")), "{hello}");
    join(&mut c, "lobby").await;
    // … but mints nothing itself.
    let chained =
        request(&base, "GET", "/demo/token?user=bob", &[("Authorization", &format!("Bearer {minted}"))]).await;
    assert_eq!(chained.status, 401);

    for bad in ["/demo/token", "/demo/token?user=", "/demo/token?user=a.b", "/demo/token?user=a%2Ab"] {
        assert_eq!(request(&base, "GET", bad, &[("Authorization", &bearer)]).await.status, 400, "{bad}");
    }
    let post =
        request(&base, "POST", "/demo/token?user=x", &[("Authorization", &bearer), ("Content-Length", "0")]).await;
    assert_eq!(post.status, 405);
}

#[tokio::test]
async fn no_demo_tokens_with_a_configured_secret() {
    let gw = Gateway::start(&[]);
    let (base, token) = demo_url(&gw);
    // The page is served, but no token is printed: one minted with the
    // application's secret would end up in container logs.
    assert_eq!(token, None, "{:?}", gw.stdout);
    assert_eq!(request(&base, "GET", "/", &[]).await.status, 200);
    let r =
        request(&base, "GET", "/demo/token?user=alice", &[("Authorization", &format!("Bearer {}", gw.token("demo")))])
            .await;
    assert_eq!(r.status, 404, "{}", r.body);
}

#[tokio::test]
async fn no_demo_tokens_with_a_public_key() {
    let key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/ec_public.pem");
    let gw = Gateway::start_raw(&["--jwt-public-key", key], String::new());
    let (base, token) = demo_url(&gw);
    assert_eq!(token, None, "no key to sign a demo token with");
    assert_eq!(request(&base, "GET", "/", &[]).await.status, 200);
    assert_eq!(request(&base, "GET", "/demo/token?user=alice", &[]).await.status, 404);
}

#[tokio::test]
async fn the_demo_line_comes_before_the_websocket_line_and_admin_stays_last() {
    let gw = Gateway::start_raw(&[], String::new());
    let labels: Vec<&str> = gw.stdout.iter().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(labels, ["connect", "demo", "websocket", "grpc", "api", "admin"], "{:?}", gw.stdout);
}
