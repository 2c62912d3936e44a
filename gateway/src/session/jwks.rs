//! The keys a token issuer publishes at `--jwks-url` (a JSON Web Key Set,
//! RFC 7517), cached.
//!
//! The set is fetched at start, every `--jwks-refresh`, and when a token
//! names a `kid` no cached key has (the issuer rotated): that fetch happens
//! at most once per `--jwks-min-interval` however many such tokens arrive, so
//! a flood of made-up `kid`s costs the issuer one request per interval.
//! Handshakes that need a fetch wait for the one in flight instead of
//! starting their own. A failed fetch (the issuer down, an error status, a
//! body with no usable key) keeps the cached keys: an outage of the issuer
//! must not log everyone out. The body is bounded like any input.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Uri};
use jsonwebtoken::jwk::Jwk;
use shell::http::HttpClient;

use super::key::Key;

/// Largest JWKS body read.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most keys kept from one set.
const MAX_KEYS: usize = 64;
/// Longest one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A cached JWKS.
pub struct Jwks {
    url: Uri,
    client: HttpClient,
    keys: RwLock<Arc<Vec<Key>>>,
    /// When the last fetch started; held across a fetch so that concurrent
    /// callers wait for it rather than fetch again.
    last: tokio::sync::Mutex<Option<Instant>>,
    min_interval: Duration,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks").field("url", &self.url).field("keys", &self.keys().len()).finish()
    }
}

impl Jwks {
    /// A set to be fetched from `url`, empty until the first fetch.
    pub fn new(url: &str, min_interval: Duration) -> anyhow::Result<Arc<Jwks>> {
        let client = shell::http::client(url, "--jwks-url")?;
        let url = url.parse().map_err(|e| anyhow::anyhow!("--jwks-url {url}: {e}"))?;
        Ok(Arc::new(Jwks {
            url,
            client,
            keys: RwLock::new(Arc::default()),
            last: tokio::sync::Mutex::new(None),
            min_interval,
        }))
    }

    /// The keys cached now.
    pub fn keys(&self) -> Arc<Vec<Key>> {
        self.keys.read().expect("jwks lock").clone()
    }

    /// Fetches the set again unless a fetch started less than the minimum
    /// interval ago; waits for a fetch in flight. Returns whether this call
    /// fetched successfully.
    pub async fn refresh(&self) -> bool {
        let mut last = self.last.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_interval) {
            return false;
        }
        *last = Some(Instant::now());
        let result = tokio::time::timeout(FETCH_TIMEOUT, self.fetch())
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {FETCH_TIMEOUT:?}")));
        match result {
            Ok(keys) => {
                metrics::counter!("switchboard_gateway_jwks_fetches_total", "result" => "ok").increment(1);
                metrics::gauge!("switchboard_gateway_jwks_keys").set(keys.len() as f64);
                *self.keys.write().expect("jwks lock") = Arc::new(keys);
                true
            }
            Err(e) => {
                metrics::counter!("switchboard_gateway_jwks_fetches_total", "result" => "error").increment(1);
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping the cached keys");
                false
            }
        }
    }

    /// Refreshes every `every`, for as long as the process runs.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) {
        let jwks = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(jwks) = jwks.upgrade() else { return };
                jwks.refresh().await;
            }
        });
    }

    async fn fetch(&self) -> anyhow::Result<Vec<Key>> {
        let req = Request::get(self.url.clone()).header("accept", "application/json").body(Full::<Bytes>::default())?;
        let res = self.client.request(req).await?;
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the body: {e}"))?
            .to_bytes();
        if !status.is_success() {
            anyhow::bail!("answered {status}");
        }
        parse(&body)
    }
}

/// The usable keys of a JWKS body. Keys of other types or uses are skipped
/// (an issuer may publish encryption keys too); a set with none is an error.
pub fn parse(body: &[u8]) -> anyhow::Result<Vec<Key>> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set =
        serde_json::from_slice(body).map_err(|_| anyhow::anyhow!("not a JWKS (a JSON object with `keys`)"))?;
    let keys: Vec<Key> = set
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(|jwk| Key::from_jwk(&jwk).ok())
        .take(MAX_KEYS)
        .collect();
    if keys.is_empty() {
        anyhow::bail!("no RS256 or ES256 signature key in the set");
    }
    Ok(keys)
}
