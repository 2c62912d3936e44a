//! The application's backend in the loop: HTTP hooks the gateway calls
//! before it lets a connection in (`connect`), a user into a room (`join`)
//! or a message out (`publish`).
//!
//! Each hook is a signed `POST <--hook-url>/<hook>` with a JSON body
//! ([`signature`]), bounded by `--hook-timeout`, over one pooled HTTP/1
//! client (HTTPS with the system roots, `SSL_CERT_FILE` included). A hook
//! that fails, answers 5xx or runs out of time denies with `unavailable` (a
//! connect closes 1013, so clients retry), and only the connection that
//! asked waits for it: others keep going. Calls are counted in
//! `switchboard_gateway_hook_calls_total{hook, outcome}`.

pub mod approve;
pub mod connect;
pub use shell::signature;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, CONTENT_TYPE};
use hyper::{Method, Request};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest hook answer read, in bytes.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// The hook flags.
#[derive(clap::Args, Debug, Clone)]
pub struct HookFlags {
    /// Base URL of the backend's hooks (`<url>/connect`, `/join`, `/publish`).
    #[arg(long, env = "SB_HOOK_URL")]
    pub hook_url: Option<String>,
    /// How long a hook may take before it counts as failed.
    #[arg(long, env = "SB_HOOK_TIMEOUT", default_value = "1s", value_parser = shell::cli::duration)]
    pub hook_timeout: Duration,
    /// HMAC secret to sign hooks with (repeat: the first signs, receivers accept any).
    #[arg(long = "hook-secret", env = "SB_HOOK_SECRET", value_delimiter = ',', hide_env_values = true)]
    pub hook_secrets: Vec<String>,
    /// Request headers that, without a token, send a connection to the connect hook (cookies always do).
    #[arg(long = "hook-headers", env = "SB_HOOK_HEADERS", value_delimiter = ',')]
    pub hook_headers: Vec<String>,
}

/// A backend's refusal, or the backend failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookError {
    /// The backend said no, with its code and message.
    Denied { code: String, message: String },
    /// No usable answer in time (down, 5xx, timeout, nonsense).
    Unavailable(String),
}

/// An error a backend returns: `{"error": {"code", "message"}}`.
#[derive(Debug, Deserialize)]
struct BackendError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The hook client.
pub struct Hooks {
    client: shell::http::HttpClient,
    base: String,
    timeout: Duration,
    secrets: Vec<Vec<u8>>,
    /// Headers that send a tokenless upgrade to the connect hook.
    pub headers: Vec<HeaderName>,
}

impl Hooks {
    /// The hooks of `flags`, or none without `--hook-url`.
    pub fn new(flags: &HookFlags) -> anyhow::Result<Option<Self>> {
        let Some(url) = &flags.hook_url else { return Ok(None) };
        let client = shell::http::client(url, "--hook-url")?;
        let headers = flags
            .hook_headers
            .iter()
            .map(|h| {
                HeaderName::try_from(h.as_str())
                    .map_err(|_| anyhow::anyhow!("--hook-headers: {h:?} is not a header name"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Some(Self {
            client,
            base: url.trim_end_matches('/').to_owned(),
            timeout: flags.hook_timeout,
            secrets: flags.hook_secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            headers,
        }))
    }

    /// Calls `<url>/<hook>` with `body`; the answer, or why there is none.
    pub async fn call<T: DeserializeOwned>(&self, hook: &'static str, body: &impl Serialize) -> Result<T, HookError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.post(hook, body)).await;
        let result = result.unwrap_or_else(|_| Err(HookError::Unavailable(format!("{hook} hook timed out"))));
        let outcome = match &result {
            Ok(_) => "ok",
            Err(HookError::Denied { .. }) => "denied",
            Err(HookError::Unavailable(_)) if started.elapsed() >= self.timeout => "timeout",
            Err(HookError::Unavailable(_)) => "error",
        };
        metrics::counter!("switchboard_gateway_hook_calls_total", "hook" => hook, "outcome" => outcome).increment(1);
        metrics::histogram!("switchboard_gateway_hook_duration_seconds", "hook" => hook)
            .record(started.elapsed().as_secs_f64());
        if let Err(HookError::Unavailable(why)) = &result {
            tracing::warn!(hook, %why, "hook failed");
        }
        result
    }

    async fn post<T: DeserializeOwned>(&self, hook: &str, body: &impl Serialize) -> Result<T, HookError> {
        let body = Bytes::from(serde_json::to_vec(body).expect("hook bodies serialize"));
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/{hook}", self.base))
            .header(CONTENT_TYPE, "application/json");
        let req = signature::headers(req, self.secrets.first(), &body);
        let req = req.body(Full::new(body)).map_err(|e| HookError::Unavailable(e.to_string()))?;
        let res = self.client.request(req).await.map_err(|e| HookError::Unavailable(format!("{hook} hook: {e}")))?;
        let status = res.status();
        let bytes = Limited::new(res.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| HookError::Unavailable(format!("{hook} hook answer: {e}")))?
            .to_bytes();
        if status.is_server_error() {
            return Err(HookError::Unavailable(format!("{hook} hook answered {status}")));
        }
        #[derive(Deserialize)]
        struct MaybeError {
            error: Option<BackendError>,
        }
        if let Ok(MaybeError { error: Some(e) }) = serde_json::from_slice(&bytes) {
            return Err(HookError::Denied { code: e.code, message: e.message });
        }
        if !status.is_success() {
            return Err(HookError::Unavailable(format!("{hook} hook answered {status}")));
        }
        serde_json::from_slice(&bytes).map_err(|e| HookError::Unavailable(format!("{hook} hook answer: {e}")))
    }
}
