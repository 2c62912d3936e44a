//! TLS for every listener that crosses a network, and for gRPC clients.
//!
//! A listener given `--tls-cert`/`--tls-key` serves TLS (rustls, TLS 1.2 and
//! 1.3); the admin listener stays plain (probes and scrapes) unless it gets
//! `--admin-tls-cert`/`--admin-tls-key`. A [`Certificate`] is read from its
//! PEM files at start, where a bad pair (unreadable, mismatched, expired)
//! stops the process with one line, and read again whenever either file
//! changes: new handshakes get the new certificate, connections already up
//! keep theirs, and a bad replacement is logged and counted while the old
//! certificate stays in use. Each certificate's expiry is a metric, so an
//! alert can fire weeks before a renewal is missed. `--tls-ca` is what this
//! process's gRPC clients (gateways and routers calling presence) verify
//! servers with; with it they speak `https`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// How often the files are checked for a change.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Longest a TLS handshake may take on any listener.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS flags every binary takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsFlags {
    /// PEM certificate chain for the client-facing listener, the API
    /// listeners and gRPC (with --tls-key); reloaded when the file changes.
    #[arg(long, env = "SB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "SB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates this process's gRPC clients verify servers with
    /// (gateways and routers calling presence); with it they use https.
    #[arg(long, env = "SB_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// PEM certificate chain for the admin listener (/metrics, probes); plain without it.
    #[arg(long, env = "SB_ADMIN_TLS_CERT", requires = "admin_tls_key")]
    pub admin_tls_cert: Option<PathBuf>,

    /// PEM private key of --admin-tls-cert.
    #[arg(long, env = "SB_ADMIN_TLS_KEY", requires = "admin_tls_cert")]
    pub admin_tls_key: Option<PathBuf>,
}

impl TlsFlags {
    /// The certificate of the client-facing, API and gRPC listeners, if any.
    pub fn server(&self) -> anyhow::Result<Option<Arc<Certificate>>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Certificate::watch(cert, key, "server").map(Some),
            _ => Ok(None),
        }
    }

    /// The admin listener's certificate, if any.
    pub fn admin(&self) -> anyhow::Result<Option<Arc<Certificate>>> {
        match (&self.admin_tls_cert, &self.admin_tls_key) {
            (Some(cert), Some(key)) => Certificate::watch(cert, key, "admin").map(Some),
            _ => Ok(None),
        }
    }

    /// The gRPC client TLS settings, if `--tls-ca` is set.
    pub fn client(&self) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
        let Some(path) = &self.tls_ca else { return Ok(None) };
        let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("--tls-ca {}: {e}", path.display()))?;
        if CertificateDer::pem_slice_iter(&pem).next().is_none() {
            anyhow::bail!("--tls-ca {}: no PEM certificate in it", path.display());
        }
        let ca = tonic::transport::Certificate::from_pem(pem);
        Ok(Some(tonic::transport::ClientTlsConfig::new().ca_certificate(ca)))
    }
}

/// A certificate and key from PEM files, reloaded when they change.
#[derive(Debug)]
pub struct Certificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// `server` or `admin`: the metrics' `listener` label.
    listener: &'static str,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    /// Loads the pair and watches both files for as long as the process runs.
    pub fn watch(cert: &Path, key: &Path, listener: &'static str) -> anyhow::Result<Arc<Certificate>> {
        let (loaded, expiry) = load(cert, key)?;
        expires(listener, expiry);
        let this = Arc::new(Certificate {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            listener,
            current: RwLock::new(Arc::new(loaded)),
        });
        let weak = Arc::downgrade(&this);
        let mut seen = stamps(cert, key);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RELOAD_CHECK).await;
                let Some(this) = weak.upgrade() else { return };
                let now = stamps(&this.cert_path, &this.key_path);
                if now != seen {
                    seen = now;
                    this.reload();
                }
            }
        });
        Ok(this)
    }

    fn reload(&self) {
        match load(&self.cert_path, &self.key_path) {
            Ok((loaded, expiry)) => {
                *self.current.write().expect("certificate lock") = Arc::new(loaded);
                expires(self.listener, expiry);
                metrics::counter!("switchboard_tls_reloads_total", "listener" => self.listener, "result" => "ok")
                    .increment(1);
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
            }
            // Often a renewal caught between writing the two files: the next
            // change is read again, and until then the old pair serves.
            Err(e) => {
                metrics::counter!("switchboard_tls_reloads_total", "listener" => self.listener, "result" => "error")
                    .increment(1);
                tracing::warn!(error = %e, "TLS certificate not reloaded; still serving the previous one");
            }
        }
    }

    /// A rustls server configuration that always serves the current pair,
    /// offering `alpn` (e.g. `h2` for gRPC, `http/1.1` for WebSockets).
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// An acceptor for [`accept`], offering `alpn`.
    pub fn acceptor(self: &Arc<Self>, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config(alpn))
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").clone())
    }
}

/// The TLS handshake of an accepted connection, bounded in time; `None`
/// (counted by `listener`) when it fails.
pub async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    listener: &'static str,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        _ => {
            metrics::counter!("switchboard_tls_handshake_failures_total", "listener" => listener).increment(1);
            None
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The files' modification times and sizes: a change of either reloads.
fn stamps(cert: &Path, key: &Path) -> [Option<(SystemTime, u64)>; 2] {
    let stamp = |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    [stamp(cert), stamp(key)]
}

/// Reads and checks a pair; returns it with its certificate's expiry.
fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<(CertifiedKey, SystemTime)> {
    let what = |p: &Path| format!("{}", p.display());
    let pem = std::fs::read(cert_path).map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", what(cert_path)))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", what(cert_path)))?;
    let Some(leaf) = chain.first() else {
        anyhow::bail!("--tls-cert {}: no PEM certificate in it", what(cert_path));
    };
    let key_pem = std::fs::read(key_path).map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", what(key_path)))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow::anyhow!("--tls-key {}: no PEM private key in it ({e})", what(key_path)))?;
    let (not_before, not_after) = validity(leaf).map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", what(cert_path)))?;
    let now = SystemTime::now();
    if now >= not_after {
        anyhow::bail!("--tls-cert {}: the certificate expired {}", what(cert_path), ago(not_after, now));
    }
    if now < not_before {
        anyhow::bail!("--tls-cert {}: the certificate is not valid yet", what(cert_path));
    }
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        anyhow::anyhow!("--tls-key {} does not fit --tls-cert {}: {e}", what(key_path), what(cert_path))
    })?;
    Ok((certified, not_after))
}

/// A certificate's validity window.
fn validity(der: &CertificateDer<'_>) -> anyhow::Result<(SystemTime, SystemTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| anyhow::anyhow!("not X.509: {e}"))?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    let v = cert.validity();
    Ok((at(v.not_before.timestamp()), at(v.not_after.timestamp())))
}

fn ago(then: SystemTime, now: SystemTime) -> String {
    let secs = now.duration_since(then).unwrap_or_default().as_secs();
    match secs {
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s => format!("{} h ago", s / 3600),
    }
}

fn expires(listener: &'static str, at: SystemTime) {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    metrics::gauge!("switchboard_tls_certificate_expiry_timestamp_seconds", "listener" => listener).set(secs);
}

/// `https` for a listener with a certificate, else `http`.
pub fn scheme(cert: &Option<Arc<Certificate>>) -> &'static str {
    if cert.is_some() {
        "https"
    } else {
        "http"
    }
}

/// An accepted connection, plain or TLS: what a listener with an optional
/// certificate hands its HTTP server.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// `stream` as the listener serves it: through a TLS handshake when it
    /// has an acceptor (`None` when that fails), else as it is.
    pub async fn accept(
        stream: TcpStream,
        acceptor: Option<&tokio_rustls::TlsAcceptor>,
        listener: &'static str,
    ) -> Option<Stream> {
        match acceptor {
            None => Some(Stream::Plain(stream)),
            Some(a) => accept(a, stream, listener).await.map(|s| Stream::Tls(Box::new(s))),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => {
                let $s = std::pin::Pin::new($s);
                $e
            }
            Stream::Tls($s) => {
                let $s = std::pin::Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}
