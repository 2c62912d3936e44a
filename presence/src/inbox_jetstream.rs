//! The JetStream inbox: stream `SB_INBOX`, subjects `sb.inbox.<user>`, each
//! message a `QueuedDirect`. The inbox bounds are the stream's limits:
//! `--inbox-size` per subject (a full inbox drops its oldest), `--inbox-ttl`
//! as max age, `--inbox-bytes` over the stream (the oldest of all go). So
//! JetStream drops without telling us: only refusals are counted here.
//!
//! A take reads the user's messages, then deletes each by its sequence; a
//! message goes to the take whose delete succeeded, so two connections of
//! one user opening together (on any presence replica) never both get it,
//! and once a delete succeeded the take cannot fail.
//! Reads and deletes go to the stream leader (`STREAM.MSG.GET`/`DELETE`).

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::stream::DeleteMessageErrorKind;
use async_nats::jetstream::{self, stream, ErrorCode};
use prost::Message as _;
use proto::pb;

use crate::inbox::{Dropped, InboxConfig, InboxStore};

pub const STREAM: &str = "SB_INBOX";
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct JetStreamInbox {
    js: jetstream::Context,
    stream: stream::Stream,
    /// Messages per user: a take reads at most this many.
    size: usize,
}

impl JetStreamInbox {
    /// Connects and creates `SB_INBOX` if absent (an existing one gets the
    /// current bounds).
    pub async fn open(
        url: &str,
        security: &bus::NatsFlags,
        id: &str,
        replicas: usize,
        config: InboxConfig,
    ) -> anyhow::Result<Self> {
        let client = security.connect(url, format!("{id}-inbox")).await.context("--nats-url (inbox store)")?;
        let js = jetstream::ContextBuilder::new().timeout(CALL_TIMEOUT).build(client);
        let stream_config = stream::Config {
            name: STREAM.into(),
            subjects: vec!["sb.inbox.>".into()],
            max_messages_per_subject: config.size as i64,
            max_age: config.ttl,
            max_bytes: config.bytes as i64,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
        let stream = loop {
            let attempt = async {
                match js.get_stream(STREAM).await {
                    Ok(_) => {
                        js.update_stream(&stream_config).await?;
                        anyhow::Ok(js.get_stream(STREAM).await?)
                    }
                    Err(_) => Ok(js.create_stream(stream_config.clone()).await?),
                }
            };
            match attempt.await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "JetStream not ready for the inbox: retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e).context("creating the JetStream stream SB_INBOX"),
            }
        };
        tracing::info!(replicas, "inbox store: JetStream {STREAM}");
        Ok(Self { js, stream, size: config.size })
    }

    async fn take_all(&self, user: &str) -> Result<Vec<pb::QueuedDirect>, String> {
        let subject = format!("sb.inbox.{user}");
        // Read first: a failure here has taken nothing.
        let mut read = Vec::new();
        let mut next = 0;
        while read.len() < self.size {
            match self.stream.get_first_raw_message_by_subject(&subject, next).await {
                Ok(m) => {
                    next = m.sequence + 1;
                    read.push(m);
                }
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        // Then delete them all at once; whoever deletes a message delivers
        // it. A failed delete (a concurrent take got there first, the
        // message aged out, or JetStream refused) skips the message: if it
        // is still stored, a later take gets it. Never an error from here
        // on, or what this take already deleted would be lost.
        let deletes = read.iter().map(|m| self.stream.delete_message(m.sequence));
        let deleted = futures::future::join_all(deletes).await;
        let mut out = Vec::with_capacity(read.len());
        for (m, deleted) in read.into_iter().zip(deleted) {
            match deleted {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    if !matches!(e.kind(), DeleteMessageErrorKind::JetStream(j) if lost_race(j.error_code())) {
                        tracing::warn!(user, seq = m.sequence, error = %e, "could not delete from {STREAM}: left for the next take");
                    }
                    continue;
                }
            }
            match pb::QueuedDirect::decode(m.payload) {
                Ok(msg) => out.push(msg),
                Err(e) => tracing::warn!(user, error = %e, "undecodable message in {STREAM}: dropped"),
            }
        }
        metrics::counter!("switchboard_presence_inbox_taken_total").increment(out.len() as u64);
        Ok(out)
    }
}

/// Whether a delete failed because the message was already gone: JetStream
/// answers "no message found" (10037), or "delete failed" (10057) when a
/// concurrent delete won.
fn lost_race(code: ErrorCode) -> bool {
    code == ErrorCode::NO_MESSAGE_FOUND || code == ErrorCode::STREAM_MESSAGE_DELETE_FAILED
}

impl InboxStore for JetStreamInbox {
    fn put(&self, msg: pb::QueuedDirect) -> bus::BoxFuture<'_, Result<(Vec<Dropped>, bool), String>> {
        Box::pin(async move {
            let subject = format!("sb.inbox.{}", msg.to);
            let ack = self.js.publish(subject, msg.encode_to_vec().into()).await.map_err(|e| e.to_string())?;
            // Acknowledged once stored; the stream drops its oldest to fit.
            ack.await.map(|_| (Vec::new(), false)).map_err(|e| e.to_string())
        })
    }

    fn take(&self, user: String) -> bus::BoxFuture<'_, Result<Vec<pb::QueuedDirect>, String>> {
        Box::pin(async move { self.take_all(&user).await })
    }

    fn sweep(&self) -> usize {
        0
    }
}
