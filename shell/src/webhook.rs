//! Webhooks: events for the application's backend (a room became occupied,
//! a user went offline), `POST <--webhook-url>` as `{"events": [...]}`.
//!
//! Events wait in a queue bounded in bytes (`--webhook-queue-bytes`; past it
//! new events are dropped and counted) and go out in batches of up to
//! [`BATCH`], signed like hooks ([`crate::signature`]). A batch that fails is
//! sent again with exponential backoff and jitter, so each event arrives at
//! least once while this process lives, with an `id` the receiver can
//! deduplicate by; events older than `--webhook-max-age` are dropped and
//! counted, and what is still queued at shutdown is counted as lost. The
//! sender is one task apart from messaging: a slow or dead receiver fills
//! this queue and nothing else.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::http::HttpClient;

/// Most events in one request.
pub const BATCH: usize = 100;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff bounds between attempts of a failing batch.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The webhook flags of every binary that sends events.
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookFlags {
    /// Where to POST events (`{"events": [...]}`); none: no webhooks.
    #[arg(long, env = "SB_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// HMAC secret to sign webhooks with (repeat: the first signs).
    #[arg(long = "webhook-secret", env = "SB_WEBHOOK_SECRET", value_delimiter = ',', hide_env_values = true)]
    pub webhook_secrets: Vec<String>,
    /// Events older than this are dropped (and counted) instead of sent.
    #[arg(long, env = "SB_WEBHOOK_MAX_AGE", default_value = "1h", value_parser = crate::cli::duration)]
    pub webhook_max_age: Duration,
    /// Bytes of events waiting to be sent; past it new events are dropped (and counted).
    #[arg(long, env = "SB_WEBHOOK_QUEUE_BYTES", default_value_t = 16 << 20)]
    pub webhook_queue_bytes: usize,
}

/// One queued event and when it was made.
struct Queued {
    json: Value,
    size: usize,
    at: Instant,
}

/// The queue between the emitters and the sender task.
struct Queue {
    events: Mutex<(VecDeque<Queued>, usize)>,
    ready: Notify,
    max_bytes: usize,
}

/// Emits events; cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    queue: Arc<Queue>,
    source: Arc<str>,
    next: Arc<AtomicU64>,
}

impl Webhooks {
    /// Starts the sender for `flags`, or none without `--webhook-url`.
    /// `source` (the node id) makes event ids unique across processes.
    pub fn start(flags: &WebhookFlags, source: &str) -> anyhow::Result<Option<Self>> {
        let Some(url) = &flags.webhook_url else { return Ok(None) };
        let client = crate::http::client(url, "--webhook-url")?;
        describe();
        let queue = Arc::new(Queue {
            events: Mutex::new((VecDeque::new(), 0)),
            ready: Notify::new(),
            max_bytes: flags.webhook_queue_bytes,
        });
        let sender = Sender {
            client,
            url: url.clone(),
            secrets: flags.webhook_secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            max_age: flags.webhook_max_age,
            queue: Arc::downgrade(&queue),
        };
        tokio::spawn(sender.run());
        let salt: u32 = rand::random();
        Ok(Some(Self { queue, source: format!("{source}-{salt:08x}").into(), next: Arc::new(AtomicU64::new(0)) }))
    }

    /// Queues an event of `ty` with `fields` (besides `id`, `type`, `ts`).
    pub fn emit(&self, ty: &'static str, fields: Map<String, Value>) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut event = Map::with_capacity(fields.len() + 3);
        event.insert("id".into(), Value::String(format!("{}-{n}", self.source)));
        event.insert("type".into(), Value::String(ty.into()));
        event.insert("ts".into(), Value::from(proto::now_ms()));
        event.extend(fields);
        let json = Value::Object(event);
        let size = json.to_string().len();
        let mut q = self.queue.events.lock().unwrap();
        if q.1 + size > self.queue.max_bytes {
            drop(q);
            dropped("queue_full", 1);
            return;
        }
        q.1 += size;
        q.0.push_back(Queued { json, size, at: Instant::now() });
        metrics::gauge!("switchboard_webhook_queue_bytes").set(q.1 as f64);
        drop(q);
        self.queue.ready.notify_one();
    }
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("source", &self.source).finish()
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let left = self.events.get_mut().map(|q| q.0.len()).unwrap_or(0);
        if left > 0 {
            tracing::warn!(left, "webhook events lost at shutdown");
            dropped("shutdown", left as u64);
        }
    }
}

struct Sender {
    client: HttpClient,
    url: String,
    secrets: Vec<Vec<u8>>,
    max_age: Duration,
    /// Weak: the sender ends when every emitter is gone.
    queue: std::sync::Weak<Queue>,
}

impl Sender {
    async fn run(self) {
        let mut attempt = 0u32;
        loop {
            let Some(queue) = self.queue.upgrade() else { return };
            let batch = self.take(&queue);
            if batch.is_empty() {
                // Only this task left holding it: every emitter is gone.
                if Arc::strong_count(&queue) == 1 {
                    return;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), queue.ready.notified()).await;
                continue;
            }
            drop(queue);
            let count = batch.len();
            match self.post(&batch).await {
                Ok(()) => {
                    attempt = 0;
                    metrics::counter!("switchboard_webhook_events_total", "outcome" => "sent").increment(count as u64);
                    if let Some(queue) = self.queue.upgrade() {
                        self.forget(&queue, count);
                    }
                }
                Err(why) => {
                    metrics::counter!("switchboard_webhook_attempts_failed_total").increment(1);
                    tracing::debug!(%why, attempt, "webhook batch failed; retrying");
                    tokio::time::sleep(backoff(attempt, rand::random())).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// The oldest batch, after dropping what is past the max age.
    fn take(&self, queue: &Queue) -> Vec<Value> {
        let mut q = queue.events.lock().unwrap();
        let now = Instant::now();
        let mut expired = 0;
        while q.0.front().is_some_and(|e| now.duration_since(e.at) > self.max_age) {
            let old = q.0.pop_front().expect("a front");
            q.1 -= old.size;
            expired += 1;
        }
        if expired > 0 {
            dropped("max_age", expired);
        }
        metrics::gauge!("switchboard_webhook_queue_bytes").set(q.1 as f64);
        q.0.iter().take(BATCH).map(|e| e.json.clone()).collect()
    }

    /// Removes the `count` oldest events: they were delivered.
    fn forget(&self, queue: &Queue, count: usize) {
        let mut q = queue.events.lock().unwrap();
        for _ in 0..count {
            let Some(e) = q.0.pop_front() else { break };
            q.1 -= e.size;
        }
        metrics::gauge!("switchboard_webhook_queue_bytes").set(q.1 as f64);
    }

    async fn post(&self, batch: &[Value]) -> Result<(), String> {
        let body = Bytes::from(serde_json::json!({ "events": batch }).to_string());
        let req = hyper::Request::post(&self.url).header(CONTENT_TYPE, "application/json");
        let req = crate::signature::headers(req, self.secrets.first(), &body);
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let res = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let status = res.status();
        let _ = res.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}

/// The wait after `attempt` failures: doubling from [`BACKOFF_MIN`] up to
/// [`BACKOFF_MAX`], scaled by a jitter in [0.5, 1.5) from `random`.
fn backoff(attempt: u32, random: f64) -> Duration {
    let base = BACKOFF_MIN.saturating_mul(1u32 << attempt.min(16)).min(BACKOFF_MAX);
    base.mul_f64(0.5 + random.clamp(0.0, 1.0))
}

fn dropped(reason: &'static str, n: u64) {
    metrics::counter!("switchboard_webhook_dropped_total", "reason" => reason).increment(n);
}

fn describe() {
    metrics::describe_counter!("switchboard_webhook_events_total", "Webhook events delivered (acknowledged by a 2xx).");
    metrics::describe_counter!(
        "switchboard_webhook_dropped_total",
        "Webhook events dropped undelivered, by reason: queue_full, max_age, shutdown."
    );
    metrics::describe_counter!(
        "switchboard_webhook_attempts_failed_total",
        "Webhook requests that failed (and are retried)."
    );
    metrics::describe_gauge!("switchboard_webhook_queue_bytes", "Bytes of webhook events waiting to be sent.");
    for reason in ["queue_full", "max_age", "shutdown"] {
        metrics::counter!("switchboard_webhook_dropped_total", "reason" => reason).absolute(0);
    }
    metrics::counter!("switchboard_webhook_events_total", "outcome" => "sent").absolute(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        // (attempt, random) → wait
        let cases = [
            (0, 0.5, BACKOFF_MIN),
            (1, 0.5, BACKOFF_MIN * 2),
            (3, 0.0, BACKOFF_MIN * 4),
            (3, 1.0, BACKOFF_MIN * 12),
            (40, 0.5, BACKOFF_MAX),
        ];
        for (attempt, random, want) in cases {
            assert_eq!(backoff(attempt, random), want, "{attempt} {random}");
        }
    }
}
