//! Serving the gRPC APIs: bound listeners and the bearer token.
//!
//! The server API (routers), the admin API (gateways) and presence sit on
//! internal addresses; when `--api-token` is set every call must carry
//! `authorization: Bearer <token>`, compared in constant time. An API
//! without a token may listen only on loopback: anyone who reaches it can
//! read any room, publish as any user and disconnect anyone, so a
//! non-loopback address without a token is refused at start-up unless
//! `--api-insecure` says so, and then every start logs a warning.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::bail;

use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Status};

use crate::tls::Certificate;

/// The API's credentials: `--api-token` and its escape hatch.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiAccess {
    /// Bearer token the gRPC APIs require; empty means none, allowed only on
    /// a loopback address (or with --api-insecure).
    #[arg(long, env = "SB_API_TOKEN", default_value = "", hide_env_values = true)]
    pub api_token: String,

    /// Serve the APIs without a token on a non-loopback address. Anyone who
    /// reaches them can then read and publish to any room and disconnect anyone.
    #[arg(long, env = "SB_API_INSECURE")]
    pub api_insecure: bool,
}

impl ApiAccess {
    /// The check for an API listening on `addr` (given by `flag`): refused
    /// without a token off loopback unless `--api-insecure`.
    pub fn guard(&self, flag: &str, addr: SocketAddr) -> anyhow::Result<BearerAuth> {
        if self.api_token.is_empty() && !addr.ip().is_loopback() {
            if !self.api_insecure {
                bail!(
                    "{flag} {addr} is not a loopback address: set --api-token (SB_API_TOKEN), \
                     or --api-insecure to serve the API without one"
                );
            }
            tracing::warn!(%addr, "--api-insecure: serving {flag} without a token on a non-loopback address");
        }
        Ok(BearerAuth::new(&self.api_token))
    }
}

/// Adds `authorization: Bearer <token>` to every call a client makes; an
/// empty token adds nothing.
#[derive(Clone)]
pub struct BearerToken {
    value: Option<tonic::metadata::AsciiMetadataValue>,
}

impl BearerToken {
    /// Fails when the token cannot be a header value.
    pub fn new(token: &str) -> anyhow::Result<Self> {
        if token.is_empty() {
            return Ok(Self { value: None });
        }
        match format!("Bearer {token}").parse() {
            Ok(v) => Ok(Self { value: Some(v) }),
            Err(_) => bail!("the token must be printable ASCII"),
        }
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.value {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Checks the bearer token of every call; an empty token disables the check.
#[derive(Clone)]
pub struct BearerAuth {
    expected: Option<Vec<u8>>,
}

impl BearerAuth {
    pub fn new(token: &str) -> Self {
        Self { expected: (!token.is_empty()).then(|| token.as_bytes().to_vec()) }
    }

    /// Whether an `Authorization` header value (or its absence) passes.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(expected) = &self.expected else { return true };
        constant_time_eq(authorization.and_then(bearer).unwrap_or_default(), expected)
    }
}

/// The credentials of an `Authorization: Bearer <token>` value. The scheme
/// is case-insensitive (RFC 9110 11.1), so `bearer` works as well.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

impl Interceptor for BearerAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if self.allows(req.metadata().get("authorization").map(|v| v.as_bytes())) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }
}

/// Compares secrets without leaking, through timing, how much matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// Binds `addr` and serves `router` on it in the background; returns the
/// bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    router: tonic::transport::server::Router,
    tls: Option<Arc<Certificate>>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        // Without TCP_NODELAY a small answer waits for the peer's delayed
        // ACK: 40 ms at p99 in `loadtest api --transport grpc`.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let served = match tls {
            None => router.serve_with_incoming(incoming).await,
            Some(cert) => router.serve_with_incoming(handshakes(incoming, cert.acceptor(&[b"h2"]))).await,
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    });
    Ok(local)
}

/// The TLS connections of `incoming`, each handshake in its own task so a
/// slow one never holds up the others; failed handshakes are dropped.
fn handshakes(
    mut incoming: TcpIncoming,
    acceptor: tokio_rustls::TlsAcceptor,
) -> impl futures::Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>> {
    // Bounded: a burst of handshakes waits in the listen backlog.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(accepted) = incoming.next().await {
            let Ok(stream) = accepted else { continue };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Some(tls) = crate::tls::accept(&acceptor, stream, "grpc").await {
                    let _ = tx.send(Ok(tls)).await;
                }
            });
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    fn access(token: &str, insecure: bool) -> ApiAccess {
        ApiAccess { api_token: token.into(), api_insecure: insecure }
    }

    #[test]
    fn apis_off_loopback_need_a_token_or_api_insecure() {
        let lo: SocketAddr = "127.0.0.1:7071".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7071".parse().unwrap();
        let v6: SocketAddr = "[::]:7071".parse().unwrap();
        assert!(access("", false).guard("--grpc-listen", lo).is_ok());
        assert!(access("", false).guard("--grpc-listen", "[::1]:1".parse().unwrap()).is_ok());
        for addr in [any, v6] {
            let e = access("", false).guard("--grpc-listen", addr).err().unwrap().to_string();
            assert!(e.contains("--grpc-listen") && e.contains("--api-token"), "{e}");
            assert!(access("t", false).guard("--grpc-listen", addr).is_ok());
            assert!(access("", true).guard("--grpc-listen", addr).is_ok());
        }
    }

    #[test]
    fn clients_present_their_token() {
        let mut add = BearerToken::new("s3cret").unwrap();
        let req = add.call(Request::new(())).unwrap();
        assert!(BearerAuth::new("s3cret").call(req).is_ok());
        let req = BearerToken::new("").unwrap().call(Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
        assert!(BearerToken::new("bad\ntoken").is_err());
    }

    #[test]
    fn bearer_tokens_are_checked_when_set() {
        let mut open = BearerAuth::new("");
        assert!(open.call(Request::new(())).is_ok());
        let mut auth = BearerAuth::new("s3cret");
        assert!(auth.call(Request::new(())).is_err());
        let mut req = Request::new(());
        req.metadata_mut().insert("authorization", "Bearer wrong".parse().unwrap());
        assert!(auth.call(req).is_err());
        for refused in ["s3cret", "Basic s3cret", "Bearer", "Bearer ", "Bearer  s3cret", "Bearers3cret"] {
            let mut req = Request::new(());
            req.metadata_mut().insert("authorization", refused.parse().unwrap());
            assert!(auth.call(req).is_err(), "{refused}");
        }
        for accepted in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret"] {
            let mut req = Request::new(());
            req.metadata_mut().insert("authorization", accepted.parse().unwrap());
            assert!(auth.call(req).is_ok(), "{accepted}");
        }
    }
}
