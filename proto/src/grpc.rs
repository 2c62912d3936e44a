//! Serving the gRPC APIs: bound listeners and the optional bearer token.
//!
//! The server API (routers) and the admin API (gateways) sit on internal
//! addresses; when `--api-token` is set every call must carry
//! `authorization: Bearer <token>`, compared in constant time.

use std::net::SocketAddr;

use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Status};

/// Checks the bearer token of every call; an empty token disables the check.
#[derive(Clone)]
pub struct BearerAuth {
    expected: Option<Vec<u8>>,
}

impl BearerAuth {
    pub fn new(token: &str) -> Self {
        Self { expected: (!token.is_empty()).then(|| token.as_bytes().to_vec()) }
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
        let Some(expected) = &self.expected else { return Ok(req) };
        let given = req.metadata().get("authorization").and_then(|v| bearer(v.as_bytes())).unwrap_or_default();
        if constant_time_eq(given, expected) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }
}

/// Compares secrets without leaking, through timing, how much matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Binds `addr` and serves `router` on it in the background; returns the
/// bound address (useful with port 0).
pub async fn serve(addr: SocketAddr, router: tonic::transport::server::Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming(TcpIncoming::from(listener)).await {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    });
    Ok(local)
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
