//! A real HTTP backend for hook tests: a hyper server on a free loopback
//! port (plain, or HTTPS with a certificate of a test CA) that answers with
//! a test's handler and keeps every request it got (path, signature
//! headers, body) for the test to check.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// What the handler answers: a status, a JSON body, after a delay.
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Self { status: 200, body, delay: Duration::ZERO }
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    pub body: Bytes,
}

pub struct Backend {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Serves `handler(path, body)` on 127.0.0.1 until dropped.
    pub async fn start(handler: impl Fn(&str, &Value) -> Reply + Send + Sync + 'static) -> Self {
        Self::serve(handler, None).await
    }

    /// [`Backend::start`] over HTTPS with a certificate for 127.0.0.1 from a
    /// fresh CA; returns the CA's certificate (PEM) too.
    pub async fn start_tls(handler: impl Fn(&str, &Value) -> Reply + Send + Sync + 'static) -> (Self, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "switchboard test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        (Self::serve(handler, Some(acceptor)).await, ca_cert.pem())
    }

    async fn serve(
        handler: impl Fn(&str, &Value) -> Reply + Send + Sync + 'static,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let tls_on = tls.is_some();
        let (handler, log) = (Arc::new(handler), received.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (handler, log, tls) = (handler.clone(), log.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (handler, log) = (handler.clone(), log.clone());
                        async move {
                            let header =
                                |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                            let (timestamp, signature) =
                                (header("x-switchboard-timestamp"), header("x-switchboard-signature"));
                            let path = req.uri().path().to_owned();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            log.lock().unwrap().push(Received {
                                path: path.clone(),
                                timestamp,
                                signature,
                                body: body.clone(),
                            });
                            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let reply = handler(&path, &json);
                            tokio::time::sleep(reply.delay).await;
                            let mut res = Response::new(Full::new(Bytes::from(reply.body.to_string())));
                            *res.status_mut() = hyper::StatusCode::from_u16(reply.status).unwrap();
                            Ok::<_, Infallible>(res)
                        }
                    });
                    match tls {
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else { return };
                            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                        }
                        None => {
                            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        let scheme = if tls_on { "https" } else { "http" };
        Self { url: format!("{scheme}://{addr}"), received, task }
    }

    /// The requests to `path` so far.
    pub fn requests(&self, path: &str) -> Vec<Received> {
        self.received.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
