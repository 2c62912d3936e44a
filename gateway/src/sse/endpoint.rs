//! `GET /sse` and `POST /sse/<conn>`.
//!
//! The GET takes the token as `/ws` does (`?token=`, `Authorization`, or the
//! connect hook's cookie or headers) and checks the Origin the same way; a
//! refusal is the stream's only event, `event: close` with the WebSocket's
//! code. With `Last-Event-ID: <conn>:<n>` (or `?last_event_id=`, for a
//! client that reconnects by itself) and a token of the same user, a
//! connection held here takes the new response and resumes; otherwise the
//! GET opens a new connection, whose `hello` says `"resumed": false`.
//!
//! A POST carries one JSON op or an array of them (at most
//! [`OPS_QUEUE`], within `--max-message-bytes` in all) and the connection's
//! `post_secret` as a Bearer token. It answers 202 once the ops are queued
//! for the connection (their replies come on the stream), 403 for a wrong
//! secret, 404 for a connection that is nowhere, 413/400 for a body too
//! large or not JSON ops, 429 when the connection's queue is full, 503 when
//! the holder could not be asked. Pages on other origins (in
//! `--allowed-origins`, or any without the flag) get CORS headers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use proto::client::close::{self, Close};
use proto::client::Encoding;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::delivery::outbox::Outbox;
use crate::edge::admission::Refusal;
use crate::node::hub::Hub;
use crate::session::auth::token_from_request;
use crate::session::Accepted;
use crate::sse::registry::Posted;
use crate::sse::stream::{Attach, SseStream, OPS_QUEUE};
use crate::transport::Transport;
use crate::websocket::handshake::origin_allowed;

pub type Body = BoxBody<Bytes, Infallible>;

/// Response chunks waiting for hyper, per stream (each a batch of events).
const BODY_CHUNKS: usize = 4;

/// Answers `GET /sse`.
pub async fn open(
    hub: &Arc<Hub>,
    peer: SocketAddr,
    req: Request<Incoming>,
    refused: Option<Refusal>,
) -> Response<Body> {
    if req.method() != Method::GET {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "the event stream is GET /sse");
        r.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    if hub.is_draining() {
        crate::metrics::rejected("draining");
        return plain(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    let origin = req.headers().get(ORIGIN).cloned();
    let origin_ok = origin_allowed(&hub.allowed_origins, origin.as_ref());
    let token = token_from_request(req.headers(), req.uri().query());
    if let (Some((conn, last)), Some(token), true, None) = (last_event_id(&req), &token, origin_ok, refused) {
        if let Some(response) = resume(hub, &conn, last, token, origin.as_ref()).await {
            return response;
        }
    }
    let hook = match (&token, &hub.hooks) {
        (None, Some(hooks)) => crate::hooks::connect::Presented::of(req.headers(), &hooks.headers, peer).map(Box::new),
        _ => None,
    };
    // (A refusal was counted when the connection was accepted.)
    let refuse = if refused.is_some() {
        Some(Close::TRY_AGAIN_LATER)
    } else if !origin_ok {
        crate::metrics::rejected("origin");
        Some(Close::ORIGIN)
    } else if token.is_none() && hook.is_none() {
        // No first frame can come before the hello: the token is in the GET.
        crate::metrics::rejected("unauthorized");
        Some(Close::new(close::UNAUTHORIZED, "token required"))
    } else {
        None
    };
    let (body, rx) = mpsc::channel(BODY_CHUNKS);
    let accepted = Accepted { encoding: Encoding::Json, token, refuse, peer, hook, deflate: false };
    let outbox = Arc::new(Outbox::new(hub.limits.queue_bytes));
    let stream = SseStream::new(body, outbox.clone(), hub.sse.clone(), &hub.limits);
    tokio::spawn(crate::session::run(hub.clone(), Transport::Sse(Box::new(stream)), outbox, accepted));
    events(rx, origin.as_ref())
}

/// The connection `conn` held here takes up this GET, if `token` is its user's.
async fn resume(hub: &Hub, conn: &str, last: u64, token: &str, origin: Option<&HeaderValue>) -> Option<Response<Body>> {
    let claims = hub.verifier.check(token).await.ok()?;
    let attach = hub.sse.attach(conn, &claims.sub)?;
    let (body, rx) = mpsc::channel(BODY_CHUNKS);
    let (answer, answered) = oneshot::channel();
    attach.send(Attach { body, last, answer }).await.ok()?;
    match answered.await {
        Ok(None) => Some(events(rx, origin)),
        _ => None,
    }
}

/// `<conn>:<n>` from `Last-Event-ID`, or `last_event_id=` in the query.
fn last_event_id<B>(req: &Request<B>) -> Option<(String, u64)> {
    let from_query = || {
        let query = req.uri().query()?;
        let raw = query.split('&').find_map(|kv| kv.strip_prefix("last_event_id="))?;
        Some(percent_encoding::percent_decode_str(raw).decode_utf8().ok()?.into_owned())
    };
    let id = match req.headers().get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(id) => id.to_owned(),
        None => from_query()?,
    };
    let (conn, n) = id.rsplit_once(':')?;
    Some((conn.to_owned(), n.parse().ok()?))
}

/// The event-stream response fed by `rx`.
fn events(rx: mpsc::Receiver<Bytes>, origin: Option<&HeaderValue>) -> Response<Body> {
    let chunks = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    // A first comment: proxies that wait for body bytes pass the headers on.
    let first = futures::stream::once(async { Ok(Frame::data(Bytes::from_static(b": switchboard\n\n"))) });
    let mut r = Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .header("x-accel-buffering", "no")
        .body(BodyExt::boxed(StreamBody::new(futures::StreamExt::chain(first, chunks))))
        .expect("static response parts are valid");
    cors(&mut r, origin);
    r
}

/// Answers `POST /sse/<conn>` (and its CORS preflight).
pub async fn post(hub: &Arc<Hub>, conn: &str, req: Request<Incoming>) -> Response<Body> {
    let origin = req.headers().get(ORIGIN).cloned();
    if origin.is_some() && !origin_allowed(&hub.allowed_origins, origin.as_ref()) {
        return plain(StatusCode::FORBIDDEN, "origin not allowed");
    }
    let mut r = match *req.method() {
        Method::OPTIONS => {
            let mut r = plain(StatusCode::NO_CONTENT, "");
            let h = r.headers_mut();
            h.insert("access-control-allow-methods", HeaderValue::from_static("POST"));
            h.insert("access-control-allow-headers", HeaderValue::from_static("authorization, content-type"));
            h.insert("access-control-max-age", HeaderValue::from_static("600"));
            r
        }
        Method::POST => deliver(hub, conn, req).await,
        _ => {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "ops are POSTed");
            r.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
            r
        }
    };
    cors(&mut r, origin.as_ref());
    r
}

async fn deliver(hub: &Arc<Hub>, conn: &str, req: Request<Incoming>) -> Response<Body> {
    let secret = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let max = hub.limits.max_message_bytes;
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            crate::metrics::sse_post("bad_request");
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "the ops are over --max-message-bytes");
        }
    };
    let Some(ops) = ops(&body) else {
        crate::metrics::sse_post("bad_request");
        return plain(StatusCode::BAD_REQUEST, "expected a JSON op or an array of at most 64 ops");
    };
    let n = ops.len();
    let posted = match hub.sse.post(conn, &secret, ops.clone()) {
        Posted::Unknown => match conn.rsplit_once('-').map(|(gw, _)| gw) {
            Some(holder) if holder != hub.id && proto::subject::valid_node_id(holder) => {
                match crate::sse::forward::post(hub, holder, conn, &secret, ops).await {
                    Some(Posted::Taken) => {
                        crate::metrics::sse_post("forwarded");
                        return accepted(n);
                    }
                    Some(p) => p,
                    None => {
                        crate::metrics::sse_post("unavailable");
                        return plain(StatusCode::SERVICE_UNAVAILABLE, "the connection's gateway did not answer");
                    }
                }
            }
            _ => Posted::Unknown,
        },
        p => p,
    };
    match posted {
        Posted::Taken => {
            crate::metrics::sse_post("taken");
            accepted(n)
        }
        Posted::WrongSecret => {
            crate::metrics::sse_post("wrong_secret");
            plain(StatusCode::FORBIDDEN, "not this connection's post_secret")
        }
        Posted::Unknown => {
            crate::metrics::sse_post("unknown");
            plain(StatusCode::NOT_FOUND, "no such connection")
        }
        Posted::Full => {
            crate::metrics::sse_post("full");
            let mut r = plain(StatusCode::TOO_MANY_REQUESTS, "the connection's ops are queued up");
            r.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}

/// One op or an array of ops, each as the client wrote it.
fn ops(body: &[u8]) -> Option<Vec<Bytes>> {
    let text = std::str::from_utf8(body).ok()?;
    let raw: Vec<&RawValue> = match text.trim_start().as_bytes().first()? {
        b'[' => serde_json::from_str(text).ok()?,
        _ => vec![serde_json::from_str(text).ok()?],
    };
    if raw.is_empty() || raw.len() > OPS_QUEUE || raw.iter().any(|r| !r.get().starts_with('{')) {
        return None;
    }
    Some(raw.into_iter().map(|r| Bytes::copy_from_slice(r.get().as_bytes())).collect())
}

fn accepted(n: usize) -> Response<Body> {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(r#"{{"accepted":{n}}}"#))).boxed())
        .expect("static response parts are valid")
}

fn plain(status: StatusCode, message: &str) -> Response<Body> {
    let body = if message.is_empty() { Bytes::new() } else { Bytes::from(format!("{message}\n")) };
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(body).boxed())
        .expect("static response parts are valid")
}

/// Lets the page at `origin` read the response (it passed the Origin check).
fn cors(r: &mut Response<Body>, origin: Option<&HeaderValue>) {
    if let Some(origin) = origin {
        r.headers_mut().insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        r.headers_mut().insert(hyper::header::VARY, HeaderValue::from_static("origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_body_is_one_op_or_an_array_of_ops() {
        let table: &[(&str, Option<usize>)] = &[
            (r#"{"op":"ping"}"#, Some(1)),
            (r#" [{"op":"ping"},{"op":"join","room":"a"}]"#, Some(2)),
            ("[]", None),
            ("[1]", None),
            (r#""op""#, None),
            ("{", None),
            ("", None),
        ];
        for (body, want) in table {
            assert_eq!(ops(body.as_bytes()).map(|o| o.len()), *want, "{body}");
        }
        let many = format!("[{}]", vec![r#"{"op":"ping"}"#; OPS_QUEUE + 1].join(","));
        assert!(ops(many.as_bytes()).is_none(), "over the queue");
        assert_eq!(ops(br#"[{"op":"ping","id":1}]"#).unwrap()[0], Bytes::from_static(br#"{"op":"ping","id":1}"#));
    }

    #[test]
    fn last_event_id_comes_from_the_header_or_the_query() {
        let req = |uri: &str, header: Option<&str>| {
            let mut b = Request::builder().uri(uri);
            if let Some(h) = header {
                b = b.header("last-event-id", h);
            }
            b.body(()).unwrap()
        };
        assert_eq!(last_event_id(&req("/sse", Some("gw-1-4:17"))), Some(("gw-1-4".into(), 17)));
        assert_eq!(last_event_id(&req("/sse?token=x&last_event_id=gw-1-4%3A9", None)), Some(("gw-1-4".into(), 9)));
        assert_eq!(last_event_id(&req("/sse", Some("garbage"))), None);
        assert_eq!(last_event_id(&req("/sse", None)), None);
    }
}
