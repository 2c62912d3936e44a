//! The API as HTTP/JSON on `--api-listen`: `POST /api/<method>` with a JSON
//! body and `Authorization: Bearer <--api-token>`; 200 with the result, or
//! `{"error":{"code","message"}}` with 400, 401, 403, 404 or 503 (500 for
//! a bug). Bodies are capped at [`MAX_BODY_BYTES`], connections at
//! [`MAX_CONNECTIONS`], and a request's head must arrive within
//! [`HEAD_TIMEOUT`], so a misbehaving caller costs bounded memory.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use proto::client::ErrorCode;
use proto::pb;
use shell::grpc::BearerAuth;
use tokio::net::TcpListener;

use super::cmd::subscription::{Subscribe, Unsubscribe};
use super::{Api, ApiError, Caller, Command};

/// Largest request body: a broadcast to 1,000 rooms with 64 KiB of data fits.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a request's head may take to arrive.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` and serves the API on it in the background; returns the
/// bound address (useful with port 0).
/// With `tls` (`--tls-cert`), over TLS.
pub async fn serve(
    addr: SocketAddr,
    api: Arc<Api>,
    auth: BearerAuth,
    tls: Option<Arc<shell::tls::Certificate>>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let acceptor = tls.map(|c| c.acceptor(&[b"http/1.1"]));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let Ok((stream, peer)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let (api, auth, acceptor) = (api.clone(), auth.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Some(stream) = shell::tls::Stream::accept(stream, acceptor.as_ref(), "api").await else { return };
                let service = hyper::service::service_fn(move |req| {
                    let (api, auth) = (api.clone(), auth.clone());
                    async move { Ok::<_, Infallible>(handle(req, peer, &api, &auth).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                drop(slot);
            });
        }
    });
    Ok(local)
}

async fn handle(req: Request<Incoming>, peer: SocketAddr, api: &Api, auth: &BearerAuth) -> Response<Full<Bytes>> {
    let authorization = req.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
    if !auth.allows(authorization) {
        crate::metrics::api_call("none", ErrorCode::Unauthorized.as_str(), Duration::ZERO);
        return failure(&ApiError::new(ErrorCode::Unauthorized, "missing or wrong bearer token"));
    }
    let Some(method) = req.uri().path().strip_prefix("/api/").map(str::to_owned) else {
        return failure(&ApiError::new(ErrorCode::NotFound, "the API is at POST /api/<method>"));
    };
    if req.method() != Method::POST {
        let mut response = failure(&ApiError::bad_request("use POST"));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("POST"));
        return response;
    }
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return failure(&ApiError::new(ErrorCode::TooLarge, "the request body is over 1 MiB"))
        }
        Err(_) => return failure(&ApiError::bad_request("the request body could not be read")),
    };
    let caller = Caller { transport: "http", addr: Some(peer) };
    match method.as_str() {
        "publish" => run::<pb::PublishCall>(api, &caller, &body).await,
        "broadcast" => run::<pb::BroadcastCall>(api, &caller, &body).await,
        "send" => run::<pb::SendCall>(api, &caller, &body).await,
        "disconnect" => run::<pb::DisconnectUserCall>(api, &caller, &body).await,
        "subscribe" => run::<Subscribe>(api, &caller, &body).await,
        "unsubscribe" => run::<Unsubscribe>(api, &caller, &body).await,
        "members" => run::<pb::MembersCall>(api, &caller, &body).await,
        "history" => run::<pb::HistoryCall>(api, &caller, &body).await,
        "presence" => run::<pb::QueryRequest>(api, &caller, &body).await,
        "rooms" => run::<pb::RoomsCall>(api, &caller, &body).await,
        "stats" => run::<pb::StatsCall>(api, &caller, &body).await,
        _ => failure(&ApiError::new(ErrorCode::NotFound, format!("no API method `{method}`"))),
    }
}

async fn run<C: Command>(api: &Api, caller: &Caller, body: &[u8]) -> Response<Full<Bytes>> {
    let call = match C::from_json(body) {
        Ok(call) => call,
        Err(e) => {
            crate::metrics::api_call(C::NAME, e.code.as_str(), Duration::ZERO);
            return failure(&e);
        }
    };
    match api.call(caller, call).await {
        Ok(output) => json(StatusCode::OK, C::to_json(&output)),
        Err(e) => failure(&e),
    }
}

fn failure(e: &ApiError) -> Response<Full<Bytes>> {
    json(e.http_status(), e.to_json())
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}
