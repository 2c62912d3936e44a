//! Starting a real `gateway --standalone` process and connecting to it.

#![allow(dead_code)]

use std::time::Duration;

use loadtest::client::{Client, ConnectOptions};
use loadtest::token::{mint, SigningKey, TokenSpec};
use serde_json::{json, Value};

pub const T: Duration = Duration::from_secs(5);

pub mod backend;
pub mod cluster;
pub mod load;
pub mod nats_auth;
pub mod partition;
pub mod pki;
pub mod process;
pub mod target;

use process::{binary, Proc};

/// A running standalone gateway process, killed on drop.
pub struct Gateway {
    pub proc: Proc,
    /// `ws://127.0.0.1:PORT/ws`
    pub ws: String,
    /// `http://127.0.0.1:PORT` of the admin endpoint.
    pub admin: String,
    /// The admin gRPC address, `127.0.0.1:PORT`.
    pub grpc: String,
    /// `http://127.0.0.1:PORT/api/` of the server API (standalone only).
    pub api: Option<String>,
    pub secret: String,
    pub stdout: Vec<String>,
}

impl Gateway {
    /// Starts a standalone gateway on free loopback ports with a known secret.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_env(extra, &[])
    }

    /// [`Gateway::start`] with environment variables.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let secret = format!("test-secret-of-32-bytes-or-more-{}", std::process::id());
        let mut args = vec!["--jwt-secret", &secret];
        args.extend_from_slice(extra);
        Self::start_raw_env(&args, secret.clone(), env)
    }

    /// Starts with exactly `args` after the standalone and address flags.
    pub fn start_raw(args: &[&str], secret: String) -> Self {
        Self::start_raw_env(args, secret, &[])
    }

    pub fn start_raw_env(args: &[&str], secret: String, env: &[(&str, &str)]) -> Self {
        let mut all: Vec<String> = [
            "--standalone",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        all.extend(args.iter().map(|s| s.to_string()));
        let proc = Proc::start_with_env("gateway", &binary("gateway"), &all, env, Some("admin"));
        Self::from_proc(proc, secret)
    }

    /// A gateway (standalone or cluster) that has printed its addresses.
    pub fn from_proc(proc: Proc, secret: String) -> Self {
        Self {
            ws: proc.printed("websocket").expect("websocket line"),
            admin: proc.printed("admin").expect("admin line").trim_end_matches("/metrics").to_owned(),
            grpc: proc.printed("grpc").expect("grpc line"),
            api: proc.printed("api"),
            stdout: proc.stdout.clone(),
            proc,
            secret,
        }
    }

    pub fn key(&self) -> SigningKey {
        SigningKey::hs256(self.secret.as_bytes().to_vec())
    }

    /// A valid token for `user` (an hour, default rooms).
    pub fn token(&self, user: &str) -> String {
        self.token_with(TokenSpec::new(user, 3600))
    }

    pub fn token_with(&self, spec: TokenSpec) -> String {
        mint(&self.key(), &spec)
    }

    /// The URL with `?token=`.
    pub fn url_with_token(&self, token: &str) -> String {
        format!("{}?token={token}", self.ws)
    }

    /// A JSON client for `user`, greeted.
    pub async fn json(&self, user: &str) -> Client {
        let mut c = Client::connect(ConnectOptions::new(self.url_with_token(&self.token(user)))).await.unwrap();
        let hello = c.next_json(T).await.unwrap();
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(hello["user"], user);
        c
    }

    /// A protobuf client for `user`, greeted.
    pub async fn proto(&self, user: &str) -> Client {
        let mut opts = ConnectOptions::new(self.ws.clone());
        opts.bearer = Some(self.token(user));
        opts.protocols = vec!["switchboard.v1.proto".into()];
        let mut c = Client::connect(opts).await.unwrap();
        assert_eq!(c.protocol(), Some("switchboard.v1.proto"));
        let hello = c.next_proto(T).await.unwrap();
        assert!(matches!(hello.kind, Some(proto::pb::server_frame::Kind::Hello(_))), "{hello:?}");
        c
    }

    /// Connection options for raw experiments.
    pub fn options(&self, token: Option<&str>) -> ConnectOptions {
        match token {
            Some(t) => ConnectOptions::new(self.url_with_token(t)),
            None => ConnectOptions::new(self.ws.clone()),
        }
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        http_get(&format!("{}/metrics", self.admin)).await.1
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.proc.terminate(timeout)
    }
}

/// A minimal HTTP/1.1 GET over loopback: (status, body).
pub async fn http_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// A minimal HTTP/1.1 POST over loopback with extra headers: (status, body).
pub async fn http_post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut head =
        format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and close) before it has read a refused body.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// A server API call (`POST <api><method>` with bearer `token`): (status, JSON).
pub async fn api_call(api: &str, token: &str, method: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let (status, text) =
        http_post(&format!("{api}{method}"), &[("Authorization", &auth)], body.to_string().as_bytes()).await;
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method}: not JSON ({status}): {text:?}"));
    (status, value)
}

/// Percent-encodes what a query string cannot carry as it is.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Joins `room` and asserts success; returns the reply.
pub async fn join(c: &mut Client, room: &str) -> Value {
    let r = c.request(json!({"op": "join", "room": room})).await.unwrap();
    assert_eq!(r["ok"], true, "join {room}: {r}");
    r
}

/// Publishes and asserts success; returns the seq.
pub async fn publish(c: &mut Client, room: &str, data: Value) -> u64 {
    let r = c.request(json!({"op": "publish", "room": room, "data": data})).await.unwrap();
    assert_eq!(r["ok"], true, "publish to {room}: {r}");
    r["seq"].as_u64().unwrap()
}

/// Asserts that nothing came (the wait timed out) and the connection is not
/// closed: a closed connection is an error too, and must not pass for quiet.
pub fn assert_quiet<T: std::fmt::Debug>(waited: Result<T, loadtest::client::ClientError>, what: &str) {
    assert!(matches!(waited, Err(loadtest::client::ClientError::Timeout)), "{what}: {waited:?}");
}

/// Asserts the client is still served: a ping op gets its pong.
pub async fn still_served(c: &mut Client) {
    c.send_json(&json!({"op": "ping"})).await.unwrap();
    c.next_of_type("pong", T).await.expect("server still answers");
}

/// The value of an unlabelled sample (or the sum over labels) in metrics text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
