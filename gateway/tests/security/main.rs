//! Transport security, against real gateway processes: the keys tokens are
//! checked with (several at once, a JWKS served by a real HTTP server, the
//! `aud`/`iss` rules) and secrets read from files.

#[path = "../support/mod.rs"]
mod support;

mod keys;
mod nats;
mod proxies;
mod tls;
mod token;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use loadtest::client::Client;
use proto::pb;
use serde_json::{json, Value};
use support::*;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A token for `sub` valid for an hour, with `extra` claims and `kid`.
fn token(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, sub: &str, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "exp": now_secs() + 3600});
    claims.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn rsa_private() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(format!("{KEYS}/rsa_private.pem")).unwrap()).unwrap()
}

fn ec_private() -> EncodingKey {
    EncodingKey::from_ec_pem(&std::fs::read(format!("{KEYS}/ec_private.pem")).unwrap()).unwrap()
}

/// Whether `token` gets `hello` (`None`) or the close code it gets.
async fn outcome(gw: &Gateway, token: &str) -> Option<u16> {
    let mut c = Client::connect(gw.options(Some(token))).await.expect("the upgrade completes");
    match c.next_json(T).await {
        Ok(v) if v["type"] == "hello" => None,
        Ok(v) => panic!("expected hello or a close, got {v}"),
        Err(loadtest::client::ClientError::Closed(code)) => Some(code.unwrap_or(0)),
        Err(e) => panic!("expected hello or a close: {e}"),
    }
}
