//! The HTTP listener in front of the WebSocket endpoint.
//!
//! One hyper HTTP/1 connection per TCP connection, counted by
//! [`admission`](crate::edge::admission) from accept to close, with a header read
//! timeout (`--header-timeout`, against slowloris) and a small header buffer
//! (oversized headers are refused by hyper with 431). A trusted proxy's
//! connection may open with a PROXY header and may name its client in
//! `X-Forwarded-For` ([`client_ip`](crate::edge::client_ip)); that client
//! is who per-IP caps and the session see. `/ws` upgrades; the
//! [`demo`](crate::edge::demo) answers the rest (its page, the JavaScript client,
//! demo tokens), or 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use shell::tls::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::delivery::outbox::Outbox;
use crate::edge::admission::{Refusal, Ticket};
use crate::edge::client_ip::Proxies;
use crate::edge::demo::Demo;
use crate::edge::proxy_protocol;
use crate::node::hub::Hub;
use crate::sse::endpoint::Body;
use crate::transport::Transport;
use crate::websocket::handshake::{self, Upgrade};
use crate::websocket::socket::{Socket, SocketConfig};

/// Request head buffer: headers larger than this are refused.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What every connection of the listener shares.
pub struct Edge {
    pub hub: Arc<Hub>,
    pub demo: Arc<Demo>,
    /// `--tls-cert`: each connection's TLS handshake comes first.
    pub tls: Option<TlsAcceptor>,
    pub proxies: Proxies,
}

/// Accepts connections until `stop` fires.
pub async fn serve(edge: Arc<Edge>, listener: TcpListener, stop: CancellationToken) {
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
        // be told 1013 while few are, else dropped at once. A trusted
        // proxy's connection counts per IP once its client is known.
        let ip = (!edge.proxies.trusts(peer.ip())).then_some(peer.ip());
        let (ticket, refused) = match edge.hub.admission.accept(ip) {
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
        tokio::spawn(connection(edge.clone(), stream, peer, ticket, refused));
    }
}

/// One TCP connection: HTTP until (and unless) it upgrades, then the
/// WebSocket session, in the same task — one task per client, not two.
async fn connection(edge: Arc<Edge>, stream: TcpStream, peer: SocketAddr, ticket: Ticket, refused: Option<Refusal>) {
    let hub = edge.hub.clone();
    // The PROXY header (from trusted proxies with --proxy-protocol) and
    // the TLS handshake share the header timeout. Boxed like the steps
    // below: inline, the TLS handshake's state sized the task for the
    // connection's whole life (a 2,056 B future; 312 B without it).
    let opening = Box::pin(tokio::time::timeout(hub.limits.header_timeout, open(&edge, stream, peer)));
    let Ok(Some((stream, peer))) = opening.await else { return };
    let ticket = Arc::new(Mutex::new(ticket));
    let upgrade: Arc<Mutex<Option<Upgrade>>> = Arc::default();
    let (slot, held) = (upgrade.clone(), ticket.clone());
    let service_edge = edge.clone();
    let service = hyper::service::service_fn(move |req| {
        let (edge, held, slot) = (service_edge.clone(), held.clone(), slot.clone());
        async move { Ok::<_, Infallible>(route(&edge, peer, req, refused, &held, &slot).await) }
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
    let outbox = Arc::new(Outbox::new(hub.limits.queue_bytes));
    let socket = Socket::new(
        stream,
        prefix,
        outbox.clone(),
        SocketConfig::new(&hub.limits, accepted.encoding, accepted.deflate),
    );
    let session = Box::pin(crate::session::run(hub, Transport::WebSocket(socket), outbox, accepted));
    session.await
}

/// The PROXY header when one is due, then TLS when configured: the stream
/// to speak HTTP on and the client's address, or `None` to close.
async fn open(edge: &Edge, mut stream: TcpStream, peer: SocketAddr) -> Option<(Stream, SocketAddr)> {
    let mut client = peer;
    if edge.proxies.expects_header(peer.ip()) {
        match proxy_protocol::read(&mut stream, peer).await {
            Ok(named) => client = named,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "PROXY header refused");
                crate::metrics::rejected("proxy_header");
                return None;
            }
        }
    }
    let stream = Stream::accept(stream, edge.tls.as_ref(), "client").await?;
    Some((stream, client))
}

async fn route(
    edge: &Edge,
    peer: SocketAddr,
    req: Request<Incoming>,
    refused: Option<Refusal>,
    ticket: &Mutex<Ticket>,
    upgrade: &Mutex<Option<Upgrade>>,
) -> Response<Body> {
    let path = req.uri().path();
    if path == "/ws" || path == "/sse" {
        // From here on the client is who the trusted proxy says.
        let client = edge.proxies.client(peer, req.headers());
        let refused = refused.or_else(|| ticket.lock().unwrap().bind(client.ip()).err().inspect(|r| r.count()));
        if path == "/sse" {
            return crate::sse::endpoint::open(&edge.hub, client, req, refused).await;
        }
        let (response, accepted) = handshake::upgrade(&edge.hub, client, req, refused);
        *upgrade.lock().unwrap() = accepted;
        return response.map(BodyExt::boxed);
    }
    if let Some(conn) = path.strip_prefix("/sse/") {
        let conn = conn.to_owned();
        return crate::sse::endpoint::post(&edge.hub, &conn, req).await;
    }
    if refused.is_some() {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "text/plain")
            .header("retry-after", "1")
            .body(Full::new(Bytes::from_static(b"try again later\n")).boxed())
            .expect("static response parts are valid");
    }
    let response = edge.demo.respond(&req).unwrap_or_else(|| {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"not found\n")))
            .expect("static response parts are valid")
    });
    response.map(BodyExt::boxed)
}

#[cfg(test)]
mod tests {
    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, D, E, F: std::future::Future>(_: fn(A, B, C, D, E) -> F) -> usize {
        size_of::<F>()
    }

    /// A connection's task lives as long as the connection: what only the
    /// opening needs (the TLS handshake) must not size it.
    #[test]
    fn a_connection_task_keeps_no_handshake_state() {
        let size = future_size(super::connection);
        assert!(size <= 512, "the connection future is {size} B");
    }
}
