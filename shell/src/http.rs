//! The outgoing HTTP client of hooks and webhooks: HTTP/1 with a connection
//! pool, HTTPS with rustls and the system's CA roots (`SSL_CERT_FILE`
//! included).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for `url`, checked: an http(s) URL, and CA roots when it is
/// https. `flag` names the setting in errors.
pub fn client(url: &str, flag: &str) -> anyhow::Result<HttpClient> {
    let uri: hyper::Uri = url.parse().map_err(|e| anyhow::anyhow!("{flag} {url}: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        anyhow::bail!("{flag} {url}: use an http:// or https:// URL");
    }
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b,
        Err(e) if uri.scheme_str() == Some("https") => {
            anyhow::bail!("{flag} {url}: no CA certificates to verify it with ({e}); set SSL_CERT_FILE")
        }
        // Plain HTTP needs no roots.
        Err(_) => {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
        }
    };
    // Small requests on pooled connections: without TCP_NODELAY one can wait
    // for the server's delayed ACK.
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector))
}
