//! The `connect` hook: a connection without a token but with a cookie (or
//! one of `--hook-headers`) is let in as the user the backend names. The
//! answer `{"user", "info", "rooms", "publish", "send", "watch", "exp"}`
//! stands in for a token's claims; `{"error": …}` closes 4500; a failing or
//! slow backend closes 1013, so clients retry.
//!
//! The `refresh` hook renews such a connection shortly before its `exp`
//! (a minute before, or halfway for shorter lives) with the same request
//! plus the user and connection; `{"error": …}` closes it with 4501, a
//! failing backend is asked again until the old `exp` runs out.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hyper::header::{HeaderMap, HeaderName, COOKIE};
use proto::client::close::{self, Close};
use proto::subject;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{HookError, Hooks};
use crate::session::auth::{Claims, MAX_INFO_BYTES};

/// Without `exp`, a hook-authenticated connection lasts this long.
const DEFAULT_TTL_SECS: i64 = 3600;

/// What the upgrade presented instead of a token: the connect hook's body.
#[derive(Debug, Clone, Serialize)]
pub struct Presented {
    /// The `Cookie` header, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The `--hook-headers` present, by lower-case name.
    pub headers: BTreeMap<String, String>,
    /// The client's address as the gateway sees it.
    pub ip: String,
}

impl Presented {
    /// The cookie and listed headers of an upgrade, if it has any.
    pub fn of(headers: &HeaderMap, listed: &[HeaderName], peer: SocketAddr) -> Option<Self> {
        let text = |v: &hyper::header::HeaderValue| v.to_str().ok().map(str::to_owned);
        let cookie = headers.get(COOKIE).and_then(text);
        let listed: BTreeMap<String, String> = listed
            .iter()
            .filter_map(|name| Some((name.as_str().to_owned(), headers.get(name).and_then(text)?)))
            .collect();
        (cookie.is_some() || !listed.is_empty()).then(|| Self { cookie, headers: listed, ip: peer.ip().to_string() })
    }
}

/// The backend's answer.
#[derive(Debug, Deserialize)]
struct Answer {
    user: String,
    #[serde(default)]
    info: Option<Box<RawValue>>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    publish: Option<Vec<String>>,
    #[serde(default)]
    send: Option<Vec<String>>,
    #[serde(default)]
    watch: Option<Vec<String>>,
    #[serde(default)]
    exp: Option<i64>,
}

/// Why a refresh did not renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The backend said no (or named another user): close 4501.
    Refused,
    /// No usable answer: ask again later.
    Unavailable,
}

#[derive(Serialize)]
struct RefreshAsk<'a> {
    #[serde(flatten)]
    presented: &'a Presented,
    user: &'a str,
    conn: &'a str,
}

/// Renewed claims for `user`'s connection `conn`.
pub async fn refresh(hooks: &Hooks, presented: &Presented, user: &str, conn: &str) -> Result<Claims, Renewal> {
    let answer: Answer = match hooks.call("refresh", &RefreshAsk { presented, user, conn }).await {
        Ok(a) => a,
        Err(HookError::Denied { .. }) => return Err(Renewal::Refused),
        Err(HookError::Unavailable(_)) => return Err(Renewal::Unavailable),
    };
    match claims(answer, proto::now_ms() / 1000) {
        Ok(c) if c.sub == user => Ok(c),
        Ok(_) => Err(Renewal::Refused),
        Err(_) => Err(Renewal::Unavailable),
    }
}

/// When to renew claims that expire at `exp` (Unix seconds).
pub fn renew_at(exp: i64, now_ms: i64, now: tokio::time::Instant) -> tokio::time::Instant {
    let left = exp.saturating_mul(1000).saturating_sub(now_ms).max(0) as u64;
    let margin = (left / 2).min(60_000);
    now + std::time::Duration::from_millis((left - margin).min(365 * 86_400_000))
}

/// The claims the backend grants `presented`, or how to close.
pub async fn connect(hooks: &Hooks, presented: &Presented) -> Result<Claims, Close> {
    let answer: Answer = match hooks.call("connect", presented).await {
        Ok(a) => a,
        Err(HookError::Denied { .. }) => return Err(Close::new(close::UNAUTHORIZED, "refused by the backend")),
        Err(HookError::Unavailable(_)) => return Err(Close::TRY_AGAIN_LATER),
    };
    claims(answer, proto::now_ms() / 1000).map_err(|why| {
        tracing::warn!(why, "the connect hook's answer is unusable");
        Close::TRY_AGAIN_LATER
    })
}

fn claims(a: Answer, now: i64) -> Result<Claims, &'static str> {
    if !subject::valid_id(&a.user) {
        return Err("`user` is not a valid user id");
    }
    if a.info.as_ref().is_some_and(|i| i.get().len() > MAX_INFO_BYTES) {
        return Err("`info` is over 1 KiB");
    }
    let exp = a.exp.unwrap_or(now + DEFAULT_TTL_SECS);
    if exp <= now {
        return Err("`exp` is in the past");
    }
    Ok(Claims { sub: a.user, exp, rooms: a.rooms, publish: a.publish, send: a.send, watch: a.watch, info: a.info })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_becomes_claims_or_is_refused() {
        let parse = |json: &str| claims(serde_json::from_str(json).unwrap(), 1000);
        let c = parse(r#"{"user":"ann","info":{"n":1},"rooms":["chat:*"],"send":["bob"]}"#).unwrap();
        assert_eq!((c.sub.as_str(), c.exp, c.info.unwrap().get()), ("ann", 1000 + DEFAULT_TTL_SECS, r#"{"n":1}"#));
        assert_eq!(
            (c.rooms.unwrap(), c.send.unwrap(), c.publish, c.watch),
            (vec!["chat:*".into()], vec!["bob".into()], None, None)
        );
        assert_eq!(parse(r#"{"user":"ann","exp":5000}"#).unwrap().exp, 5000);
        for bad in [r#"{"user":"a b"}"#, r#"{"user":"ann","exp":999}"#] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let big = format!(r#"{{"user":"ann","info":"{}"}}"#, "x".repeat(MAX_INFO_BYTES));
        assert!(parse(&big).is_err());
    }

    #[test]
    fn renewal_comes_a_minute_early_or_halfway() {
        let now = tokio::time::Instant::now();
        let at = |exp_s: i64| renew_at(exp_s, 1_000_000, now).duration_since(now).as_millis();
        // (exp, renew after ms)
        for (exp, after) in [(1000 + 3600, 3_540_000), (1000 + 60, 30_000), (1000 + 10, 5_000), (900, 0)] {
            assert_eq!(at(exp), after, "{exp}");
        }
    }

    #[test]
    fn only_a_cookie_or_a_listed_header_goes_to_the_hook() {
        let peer: SocketAddr = "127.0.0.7:5000".parse().unwrap();
        let listed = [HeaderName::from_static("x-session")];
        let mut h = HeaderMap::new();
        assert!(Presented::of(&h, &listed, peer).is_none());
        h.insert("x-other", "1".parse().unwrap());
        assert!(Presented::of(&h, &listed, peer).is_none());
        h.insert("x-session", "s1".parse().unwrap());
        h.insert(COOKIE, "sid=abc".parse().unwrap());
        let p = Presented::of(&h, &listed, peer).unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"cookie": "sid=abc", "headers": {"x-session": "s1"}, "ip": "127.0.0.7"})
        );
    }
}
