//! The admin endpoint every binary serves on `--admin-listen`.
//!
//! `/metrics` (Prometheus text), `/healthz` (the process is alive) and
//! `/readyz` (it can do its job: each binary supplies its own checks, and a
//! failing check is named in the 503 body so an operator sees why). A
//! check that only degrades the answers (presence, for a gateway) is named
//! in a 200 body: taking every gateway out of a load balancer because a
//! helper is down would turn a degraded cluster into a dead one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::tls::{Certificate, Stream};

/// Readiness checks: each a name and how it stands now.
pub type ReadyCheck = Arc<dyn Fn() -> Vec<(&'static str, Readiness)> + Send + Sync>;

/// How one readiness check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Passing.
    Ready,
    /// Failing, but the process still does its job with poorer answers.
    Degraded,
    /// Failing: the process cannot do its job (503).
    NotReady,
}

impl From<bool> for Readiness {
    /// A required check: passing or not ready.
    fn from(ok: bool) -> Self {
        if ok {
            Self::Ready
        } else {
            Self::NotReady
        }
    }
}

/// Binds `addr` and serves the admin endpoint until the process exits.
/// Returns the bound address (useful with port 0).
/// With `tls` (`--admin-tls-cert`), over TLS.
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    ready: ReadyCheck,
    tls: Option<Arc<Certificate>>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let acceptor = tls.map(|c| c.acceptor(&[b"http/1.1"]));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            let ready = ready.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Some(stream) = Stream::accept(stream, acceptor.as_ref(), "admin").await else { return };
                let service = hyper::service::service_fn(move |req| {
                    let metrics = metrics.clone();
                    let ready = ready.clone();
                    async move { Ok::<_, Infallible>(route(&req, &metrics, &ready)) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(local)
}

fn route<B>(req: &Request<B>, metrics: &PrometheusHandle, ready: &ReadyCheck) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => text(StatusCode::OK, metrics.render(), "text/plain; version=0.0.4"),
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" => {
            let checks = ready();
            let named = |r: Readiness| checks.iter().filter(|(_, c)| *c == r).map(|(n, _)| *n).collect::<Vec<_>>();
            let (failing, degraded) = (named(Readiness::NotReady), named(Readiness::Degraded));
            let degraded =
                if degraded.is_empty() { String::new() } else { format!("degraded: {}\n", degraded.join(", ")) };
            if failing.is_empty() {
                text(StatusCode::OK, format!("ready\n{degraded}"), "text/plain")
            } else {
                let body = format!("not ready: {}\n{degraded}", failing.join(", "));
                text(StatusCode::SERVICE_UNAVAILABLE, body, "text/plain")
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}

fn text(status: StatusCode, body: String, content_type: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}
