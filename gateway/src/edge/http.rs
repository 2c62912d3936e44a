//! The HTTP listener in front of the WebSocket endpoint.
//!
//! One hyper HTTP/1 connection per TCP connection, counted by
//! [`admission`](crate::edge::admission) from accept to close, with a header read
//! timeout (`--header-timeout`, against slowloris) and a small header buffer
//! (oversized headers are refused by hyper with 431). `/ws` upgrades; the
//! [`demo`](crate::edge::demo) answers the rest (its page, the JavaScript client,
//! demo tokens), or 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use shell::tls::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::edge::admission::{Refusal, Ticket};
use crate::edge::demo::Demo;
use crate::node::hub::Hub;
use crate::websocket::handshake::{self, Upgrade};

/// Request head buffer: headers larger than this are refused.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Accepts connections until `stop` fires.
/// With `tls` (`--tls-cert`), each connection's TLS handshake comes first,
/// in its task and within the header timeout.
pub async fn serve(
    hub: Arc<Hub>,
    demo: Arc<Demo>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        // Counted from here, handshake or not; past a cap, served only to
        // be told 1013 while few are, else dropped at once.
        let (ticket, refused) = match hub.admission.accept(peer.ip()) {
            Ok(ticket) => (ticket, None),
            Err((refusal, ticket)) => {
                refusal.count();
                match ticket {
                    Some(ticket) => (ticket, Some(refusal)),
                    None => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(hub.clone(), demo.clone(), stream, tls.clone(), peer, ticket, refused));
    }
}

/// One TCP connection: HTTP until (and unless) it upgrades, then the
/// WebSocket session, in the same task — one task per client, not two.
async fn connection(
    hub: Arc<Hub>,
    demo: Arc<Demo>,
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    peer: SocketAddr,
    _ticket: Ticket,
    refused: Option<Refusal>,
) {
    let handshake = Stream::accept(stream, tls.as_ref(), "client");
    let Ok(Some(stream)) = tokio::time::timeout(hub.limits.header_timeout, handshake).await else { return };
    let upgrade: Arc<Mutex<Option<Upgrade>>> = Arc::default();
    let slot = upgrade.clone();
    let service_hub = hub.clone();
    let service = hyper::service::service_fn(move |req| {
        let response = route(&service_hub, &demo, peer, req, refused, &slot);
        async move { Ok::<_, Infallible>(response) }
    });
    // Boxed in their own statements: the task keeps neither hyper's nor the
    // session's state inline once it has moved on.
    let http = Box::pin(
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(hub.limits.header_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades(),
    );
    let _ = http.await;
    let next = upgrade.lock().unwrap().take();
    let Some(upgrade) = next else { return };
    let socket = Box::pin(upgrade.into_socket());
    let Some((stream, prefix, accepted)) = socket.await else { return };
    let session = Box::pin(crate::session::run(hub, stream, prefix, accepted));
    session.await
}

fn route(
    hub: &Arc<Hub>,
    demo: &Demo,
    peer: SocketAddr,
    req: Request<Incoming>,
    refused: Option<Refusal>,
    upgrade: &Mutex<Option<Upgrade>>,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/ws" {
        let (response, accepted) = handshake::upgrade(hub, peer, req, refused);
        *upgrade.lock().unwrap() = accepted;
        return response;
    }
    if refused.is_some() {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "text/plain")
            .header("retry-after", "1")
            .body(Full::new(Bytes::from_static(b"try again later\n")))
            .expect("static response parts are valid");
    }
    demo.respond(&req).unwrap_or_else(|| {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"not found\n")))
            .expect("static response parts are valid")
    })
}
