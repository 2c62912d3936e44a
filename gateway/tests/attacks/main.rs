//! The attack suite: hostile clients against the real gateway (and, for the
//! NATS subject and gRPC cases, a real cluster), over real sockets.
//!
//! Every case asserts the design's exact answer and that the gateway keeps
//! serving everyone else: a client connected before the attack still joins,
//! publishes and receives, and a new client can still connect. Cases covered
//! elsewhere are not repeated here (see the notes at each section).

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod floods;
mod fragments;
mod handshake;
mod hoarding;
mod ids;
mod oversized;
mod secrets;
mod tokens;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fastwebsockets::OpCode;
use futures::future::join_all;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use loadtest::client::{Client, ClientError};
use loadtest::token::{mint, mint_unsigned_none, SigningKey, TokenSpec};
use proto::pb;
use serde_json::{json, Value};
use support::cluster::{channel, Cluster, API_TOKEN};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");

/// Room ids the design refuses: dots and wildcards (they would widen a NATS
/// subject), empty, too long, non-ASCII, whitespace and control characters.
fn bad_ids() -> Vec<String> {
    let mut ids: Vec<String> = [
        "a.b",
        "*",
        ">",
        "a.*",
        "a.>",
        "",
        "zz9.x",
        "zz9*",
        ".",
        "a.",
        ".a",
        "sb.room.x",
        "é",
        "ünïcødé",
        "a b",
        " a",
        "a\t",
        "a\nb",
        "a\u{0}b",
        "a/b",
    ]
    .map(str::to_owned)
    .into();
    ids.push("r".repeat(129));
    ids
}

/// `127.0.0.1:PORT` of the gateway's WebSocket listener.
fn ws_addr(gw: &Gateway) -> String {
    gw.ws.trim_start_matches("ws://").trim_end_matches("/ws").to_owned()
}

fn spec(sub: &str, exp_in: i64) -> TokenSpec {
    TokenSpec::new(sub, exp_in)
}

fn now_secs() -> i64 {
    proto::now_ms() / 1000
}

/// A token with exactly these claims, signed with `alg` and `key`.
fn signed(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

/// Connects with `token` in the query; the upgrade must complete. Returns
/// the close code the gateway then sends.
async fn close_code_for(gw: &Gateway, token: &str) -> Option<u16> {
    let mut c = Client::connect(gw.options(Some(token))).await.expect("the upgrade completes");
    c.wait_close(T).await.expect("the gateway closes")
}

/// Sends `request` on a new TCP connection and reads the response head.
/// Returns the status (0 if the gateway closed without answering) and the
/// head, lower-cased. The request is written while reading: a gateway that
/// answers early (431) must not be hidden behind a blocked write.
async fn raw_http(addr: &str, request: Vec<u8>) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        // The gateway may refuse before reading it all: a failed write is fine.
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    head.extend_from_slice(&chunk[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    };
    tokio::time::timeout(T, read).await.expect("the gateway answers or closes in time");
    writer.abort();
    let text = String::from_utf8_lossy(&head).to_lowercase();
    let status = text.strip_prefix("http/1.").and_then(|s| s.get(2..5)).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// An upgrade request for `/ws` with `headers` (each `Name: value`).
fn upgrade_request(method: &str, version: &str, headers: &[&str]) -> Vec<u8> {
    let mut r = format!("{method} /ws {version}\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

const HOST: &str = "Host: 127.0.0.1";
const UPGRADE: &str = "Upgrade: websocket";
const CONNECTION: &str = "Connection: Upgrade";
const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
const VERSION: &str = "Sec-WebSocket-Version: 13";

/// A client connected before an attack, in room `calm`: proves the gateway
/// still serves it (join, publish, receive) and still admits a new client.
struct Bystander {
    old: Client,
}

impl Bystander {
    async fn start(gw: &Gateway) -> Self {
        let mut old = gw.json("bystander").await;
        join(&mut old, "calm").await;
        Self { old }
    }

    async fn check(&mut self, gw: &Gateway) {
        still_served(&mut self.old).await;
        let mut new = gw.json("newcomer").await;
        join(&mut new, "calm").await;
        let seq = publish(&mut self.old, "calm", json!({"still": "here"})).await;
        let m = new.next_of_type("message", T).await.expect("the new client receives");
        assert_eq!((m["seq"].as_u64(), m["data"]["still"].as_str()), (Some(seq), Some("here")), "{m}");
        self.old.next_of_type("message", T).await.expect("the old client receives its own message");
        new.request(json!({"op": "leave", "room": "calm"})).await.unwrap();
    }
}
