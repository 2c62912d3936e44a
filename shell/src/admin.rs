//! The admin endpoint every binary serves on `--admin-listen`.
//!
//! `/metrics` (Prometheus text), `/healthz` (the process is alive) and
//! `/readyz` (it can do its job: each binary supplies its own checks, and a
//! failing check is named in the 503 body so an operator sees why).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

/// Readiness checks: each a name and whether it currently passes.
pub type ReadyCheck = Arc<dyn Fn() -> Vec<(&'static str, bool)> + Send + Sync>;

/// Binds `addr` and serves the admin endpoint until the process exits.
/// Returns the bound address (useful with port 0).
pub async fn serve(addr: SocketAddr, metrics: PrometheusHandle, ready: ReadyCheck) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            let ready = ready.clone();
            tokio::spawn(async move {
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
            let failing: Vec<_> = checks.iter().filter(|(_, ok)| !ok).map(|(n, _)| *n).collect();
            if failing.is_empty() {
                text(StatusCode::OK, "ready\n".into(), "text/plain")
            } else {
                let body = format!("not ready: {}\n", failing.join(", "));
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
