//! The WebSocket upgrade: checks fastwebsockets leaves to us, then hand-off.
//!
//! `fastwebsockets::upgrade` only checks the key and version, so the method,
//! the `Connection`/`Upgrade` headers, the subprotocol and the Origin are
//! checked here. Failures that a browser should be able to see as a close
//! code (bad origin 1008, admission 1013, and later a bad token) complete the
//! upgrade and then close; requests that are not WebSocket upgrades at all
//! get a plain HTTP error.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use fastwebsockets::upgrade::UpgradeFut;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use proto::client::close::Close;
use proto::client::Encoding;
use shell::tls::Stream;
use tokio::net::TcpStream;

use crate::edge::admission::Refusal;
use crate::node::hub::Hub;
use crate::session::auth::token_from_request;
use crate::session::Accepted;

/// A WebSocket upgrade answered with 101: what the connection's task runs
/// once hyper lets go of the socket.
pub struct Upgrade {
    fut: UpgradeFut,
    accepted: Accepted,
}

impl Upgrade {
    /// Takes the socket back from hyper once the 101 is out: the stream, the
    /// bytes hyper read past the request, and what the handshake decided.
    pub async fn into_socket(self) -> Option<(Stream, Bytes, Accepted)> {
        let ws = self.fut.await.ok()?;
        let upgraded = ws.into_inner().into_inner();
        let Ok(parts) = upgraded.downcast::<TokioIo<Stream>>() else {
            tracing::error!("upgraded connection is not the accepted stream");
            return None;
        };
        let stream = match parts.io.into_inner() {
            // Re-register the socket: its readiness slots still hold wakers
            // from hyper's part of the task, which would keep stale state alive.
            Stream::Plain(tcp) => Stream::Plain(tcp.into_std().and_then(TcpStream::from_std).ok()?),
            tls => tls,
        };
        Some((stream, parts.read_buf, self.accepted))
    }
}

/// Answers a request on `/ws`: the response, and on success the upgrade
/// for the connection's task to run.
pub fn upgrade(
    hub: &Arc<Hub>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
    refused: Option<Refusal>,
) -> (Response<Full<Bytes>>, Option<Upgrade>) {
    if req.method() != Method::GET {
        // RFC 9110: a 405 names the methods that are allowed.
        let mut r = reject(StatusCode::METHOD_NOT_ALLOWED, "WebSocket upgrades use GET", "method");
        r.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static("GET"));
        return (r, None);
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        let mut r = reject(StatusCode::UPGRADE_REQUIRED, "this endpoint speaks WebSocket", "not_upgrade");
        r.headers_mut().insert(hyper::header::UPGRADE, HeaderValue::from_static("websocket"));
        return (r, None);
    }
    // RFC 6455 4.2.1 asks for HTTP/1.1 or later, a Host, and a key of 16
    // bytes in base64; fastwebsockets checks only that a key is present.
    if req.version() < hyper::Version::HTTP_11 || !req.headers().contains_key(hyper::header::HOST) {
        return (reject(StatusCode::BAD_REQUEST, "WebSocket needs HTTP/1.1 and a Host header", "bad_handshake"), None);
    }
    if !valid_key(req.headers().get(hyper::header::SEC_WEBSOCKET_KEY)) {
        let message = "Sec-WebSocket-Key must be 16 bytes in base64";
        return (reject(StatusCode::BAD_REQUEST, message, "bad_handshake"), None);
    }
    if hub.is_draining() {
        return (reject(StatusCode::SERVICE_UNAVAILABLE, "draining", "draining"), None);
    }
    let Some(encoding) = negotiate(&req) else {
        return (reject(StatusCode::BAD_REQUEST, "no supported subprotocol offered", "subprotocol"), None);
    };
    let offered_protocol = req.headers().contains_key(SEC_WEBSOCKET_PROTOCOL);
    // permessage-deflate: only with --compression, only for JSON (protobuf
    // frames are compact already).
    let deflate = hub.limits.compression
        && encoding == Encoding::Json
        && req
            .headers()
            .get_all(SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(crate::websocket::deflate::accepts);
    let token = token_from_request(req.headers(), req.uri().query());
    let origin_ok = origin_allowed(&hub.allowed_origins, req.headers().get(hyper::header::ORIGIN));

    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(r) => r,
        Err(e) => {
            let mut r = reject(StatusCode::BAD_REQUEST, &e.to_string(), "bad_handshake");
            if matches!(e, fastwebsockets::WebSocketError::InvalidSecWebsocketVersion) {
                r.headers_mut().insert("sec-websocket-version", HeaderValue::from_static("13"));
            }
            return (r, None);
        }
    };
    // (A refusal was counted when the connection was accepted.)
    let refuse = if refused.is_some() {
        Some(Close::TRY_AGAIN_LATER)
    } else if !origin_ok {
        crate::metrics::rejected("origin");
        Some(Close::ORIGIN)
    } else {
        None
    };
    let hook = match (&token, &hub.hooks) {
        (None, Some(hooks)) => crate::hooks::connect::Presented::of(req.headers(), &hooks.headers, peer).map(Box::new),
        _ => None,
    };
    let accepted = Accepted { encoding, token, refuse, peer, hook, deflate };
    let mut response = response.map(|_| Full::new(Bytes::new()));
    if offered_protocol {
        response.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(encoding.protocol()));
    }
    if deflate {
        let accepted = HeaderValue::from_static(crate::websocket::deflate::RESPONSE);
        response.headers_mut().insert(SEC_WEBSOCKET_EXTENSIONS, accepted);
    }
    (response, Some(Upgrade { fut, accepted }))
}

/// The encoding for the client's subprotocol offer: the first of ours it
/// lists, JSON when it offers none, `None` when it offers only others.
fn negotiate<B>(req: &Request<B>) -> Option<Encoding> {
    let mut offered = req
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .peekable();
    if offered.peek().is_none() {
        return Some(Encoding::Json);
    }
    offered.find_map(Encoding::from_protocol)
}

/// Whether `origin` passes the allow-list (empty list: anything passes).
pub(crate) fn origin_allowed(allowed: &[String], origin: Option<&HeaderValue>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(origin) = origin.and_then(|o| o.to_str().ok()) else {
        return false;
    };
    allowed.iter().any(|a| a.eq_ignore_ascii_case(origin.trim_end_matches('/')))
}

/// A `Sec-WebSocket-Key` of 16 bytes in base64: 22 digits and `==`.
fn valid_key(key: Option<&HeaderValue>) -> bool {
    let Some(key) = key.map(HeaderValue::as_bytes) else { return false };
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
}

fn reject(status: StatusCode, message: &str, reason: &'static str) -> Response<Full<Bytes>> {
    crate::metrics::rejected(reason);
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(format!("{message}\n"))))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(protocols: &[&str]) -> Request<()> {
        let mut b = Request::builder();
        for p in protocols {
            b = b.header(SEC_WEBSOCKET_PROTOCOL, *p);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn subprotocol_negotiation() {
        assert_eq!(negotiate(&req(&[])), Some(Encoding::Json));
        assert_eq!(negotiate(&req(&["switchboard.v1.proto"])), Some(Encoding::Proto));
        assert_eq!(negotiate(&req(&["x, switchboard.v1.proto", "switchboard.v1.json"])), Some(Encoding::Proto));
        assert_eq!(negotiate(&req(&["chat"])), None);
    }

    #[test]
    fn keys() {
        let key = |k: &'static str| valid_key(Some(&HeaderValue::from_static(k)));
        // The RFC's example key, and one with `+` and `/`.
        assert!(key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(key("+/+/AAAAAAAAAAAAAAAAAA=="));
        assert!(!valid_key(None));
        for bad in [
            "",
            "x",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25j.Q==",
            "aaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(!key(bad), "{bad}");
        }
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example".to_string()];
        assert!(origin_allowed(&[], None));
        assert!(origin_allowed(&allowed, Some(&HeaderValue::from_static("https://app.example"))));
        assert!(!origin_allowed(&allowed, Some(&HeaderValue::from_static("https://evil.example"))));
        assert!(!origin_allowed(&allowed, None));
    }
}
