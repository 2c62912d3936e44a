//! The JetStream store: rooms outlive their owner on NATS JetStream.
//!
//! - Stream `SB_HISTORY`, subjects `sb.hist.<room>`: each message as a
//!   `StoredMessage` (idempotency key included, so a retry is recognised
//!   after a crash) with its epoch in the `Sb-Epoch` header and its
//!   namespace's TTL as a per-message TTL (`Nats-TTL`). Stream limits are
//!   per stream, so the per-subject limit and max age are the largest of
//!   all namespaces; a load keeps the room's own namespace's last N.
//! - KV bucket `SB_ROOMS`: key `<room>` holds `StoredRoom {epoch, seq}`, so
//!   a seq never repeats or goes back within an epoch even once every
//!   message aged out; keys `<room>.<user>` hold read markers.
//!
//! An append writes the stream first, naming the room's last stream
//! sequence (`Nats-Expected-Last-Subject-Sequence`), then the entry,
//! naming its revision: a stale owner's write fails at the first step and
//! leaves nothing. The two writes are sequential so the entry never names a
//! seq that was not stored; that costs one more round trip per publish
//! (measured in docs/benchmarks.md). Reads go to the stream leader
//! (`STREAM.MSG.GET`, not direct gets), so a load after a crash never
//! misses an acknowledged message on a lagging replica.
//!
//! Room and user ids may hold `:` and `@`, which KV keys may not: they are
//! written `=3A` and `=40` (`=` is never in an id, so keys stay unique).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt;
use prost::Message as _;
use proto::internal::{StoreFence, StoredMessage, StoredRoom};

use crate::history::HistoryConfig;
use crate::store::{Append, Loaded, Store, StoreError, StoreFlags};

pub const STREAM: &str = "SB_HISTORY";
pub const BUCKET: &str = "SB_ROOMS";
const EPOCH_HEADER: &str = "Sb-Epoch";
/// Bound on one JetStream API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on a whole load (several calls).
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `open` waits for JetStream to answer at startup.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Entries of rooms untouched this long go (a room back later starts a new epoch).
const ENTRY_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Bytes the bucket may hold.
const BUCKET_BYTES: i64 = 256 << 20;

pub struct JetStreamStore {
    js: jetstream::Context,
    history: stream::Stream,
    rooms: kv::Store,
    rooms_stream: stream::Stream,
}

impl std::fmt::Debug for JetStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JetStreamStore")
    }
}

/// A room or user id as a KV key token.
fn key(id: &str) -> String {
    id.replace(':', "=3A").replace('@', "=40")
}

/// The id a KV key token was made from.
fn unkey(token: &str) -> String {
    token.replace("=3A", ":").replace("=40", "@")
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl JetStreamStore {
    /// Connects to NATS and creates the stream and bucket if absent (with
    /// `--history-replicas`); an existing stream gets the current limits.
    pub async fn open(
        url: &str,
        security: &bus::NatsFlags,
        id: &str,
        flags: &StoreFlags,
        limits: HistoryConfig,
    ) -> anyhow::Result<Self> {
        let client = security.connect(url, format!("{id}-store")).await.context("--nats-url (history store)")?;
        let js = jetstream::ContextBuilder::new().timeout(CALL_TIMEOUT).build(client);
        let config = stream::Config {
            name: STREAM.into(),
            subjects: vec!["sb.hist.>".into()],
            max_messages_per_subject: limits.max_len as i64,
            max_age: limits.max_age,
            max_bytes: flags.history_store_bytes,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: flags.history_replicas,
            allow_message_ttl: true,
            ..Default::default()
        };
        let bucket = kv::Config {
            bucket: BUCKET.into(),
            history: 1,
            max_age: ENTRY_MAX_AGE,
            max_bytes: BUCKET_BYTES,
            storage: stream::StorageType::File,
            num_replicas: flags.history_replicas,
            ..Default::default()
        };
        let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
        let (history, rooms) = loop {
            let attempt = async {
                let history = match js.get_stream(STREAM).await {
                    Ok(_) => {
                        js.update_stream(&config).await?;
                        js.get_stream(STREAM).await?
                    }
                    Err(_) => js.create_stream(config.clone()).await?,
                };
                let rooms = match js.get_key_value(BUCKET).await {
                    Ok(kv) => kv,
                    Err(_) => js.create_key_value(bucket.clone()).await?,
                };
                anyhow::Ok((history, rooms))
            };
            match attempt.await {
                Ok(ready) => break ready,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "JetStream not ready for the history store: retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e).context("creating the JetStream stream SB_HISTORY and bucket SB_ROOMS"),
            }
        };
        let rooms_stream = js.get_stream(format!("KV_{BUCKET}")).await.context("the bucket's stream")?;
        tracing::info!(replicas = flags.history_replicas, "history store: JetStream {STREAM} and {BUCKET}");
        Ok(Self { js, history, rooms, rooms_stream })
    }

    async fn load_room(&self, room: &str, epoch: String, limits: HistoryConfig) -> Result<Loaded, StoreError> {
        let entry_key = key(room);
        let (stored, revision) = match self.rooms.entry(entry_key.as_str()).await.map_err(unavailable)? {
            Some(e) if e.operation == kv::Operation::Put => {
                let stored = StoredRoom::decode(e.value).map_err(unavailable)?;
                (stored, e.revision)
            }
            _ => {
                let stored = StoredRoom { epoch, seq: 0 };
                match self.rooms.create(entry_key.as_str(), stored.encode_to_vec().into()).await {
                    Ok(revision) => (stored, revision),
                    // Another router created it just now: we are not its owner.
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Err(StoreError::Fenced),
                    Err(e) => return Err(unavailable(e)),
                }
            }
        };
        let (history, stream_seq) = self.read_history(room, &stored.epoch, limits.max_len).await?;
        // The stream is written first: its newest message is the truth while
        // it lasts; the entry keeps the seq once it aged out.
        let seq = history.back().map_or(stored.seq, |m| m.seq);
        let reads = self.read_markers(&entry_key).await?;
        let fence = StoreFence { stream_seq, revision };
        Ok(Loaded { epoch: stored.epoch, seq, history: history.into(), reads, fence })
    }

    /// The room's last `keep` messages of `epoch`, and the stream sequence
    /// of its newest message of any epoch (0: none).
    async fn read_history(
        &self,
        room: &str,
        epoch: &str,
        keep: usize,
    ) -> Result<(VecDeque<StoredMessage>, u64), StoreError> {
        let subject = format!("sb.hist.{room}");
        let last = match self.history.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => m.sequence,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok((VecDeque::new(), 0));
            }
            Err(e) => return Err(unavailable(e)),
        };
        let mut kept = VecDeque::new();
        let mut next = 0;
        while next <= last {
            let m = match self.history.get_first_raw_message_by_subject(&subject, next).await {
                Ok(m) => m,
                // The rest aged out while we read.
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(unavailable(e)),
            };
            next = m.sequence + 1;
            if m.headers.get(EPOCH_HEADER).is_none_or(|e| e.as_str() != epoch) {
                continue;
            }
            let Ok(msg) = StoredMessage::decode(m.payload) else {
                tracing::warn!(room, seq = m.sequence, "undecodable message in {STREAM}: skipped");
                continue;
            };
            kept.push_back(msg);
            if kept.len() > keep {
                kept.pop_front();
            }
        }
        Ok((kept, last))
    }

    /// The room's read markers: the latest value of each `<room>.<user>` key.
    async fn read_markers(&self, room_key: &str) -> Result<HashMap<String, u64>, StoreError> {
        let prefix = format!("$KV.{BUCKET}.{room_key}.");
        let consumer = self
            .rooms_stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                filter_subject: format!("{prefix}*"),
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                replay_policy: consumer::ReplayPolicy::Instant,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let mut reads = HashMap::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(reads);
        }
        let mut messages = consumer.messages().await.map_err(unavailable)?;
        while let Some(m) = messages.next().await {
            let m = m.map_err(unavailable)?;
            let pending = m.info().map_err(unavailable)?.pending;
            let deleted = m.headers.as_ref().and_then(|h| h.get("KV-Operation")).is_some();
            let seq = std::str::from_utf8(&m.payload).ok().and_then(|s| s.parse::<u64>().ok());
            if let (Some(user), Some(seq), false) = (m.subject.strip_prefix(prefix.as_str()), seq, deleted) {
                reads.insert(unkey(user), seq);
            }
            if pending == 0 {
                break;
            }
        }
        Ok(reads)
    }

    async fn append_message(&self, a: Append) -> Result<StoreFence, StoreError> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(a.msg.encode_to_vec().into())
            .header(EPOCH_HEADER, a.epoch.as_str())
            .expected_last_subject_sequence(a.fence.stream_seq)
            .ttl(a.ttl.max(Duration::from_secs(1)));
        let stored = async { self.js.send_publish(format!("sb.hist.{}", a.room), publish).await?.await };
        let stream_seq = match stored.await {
            Ok(ack) => ack.sequence,
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                return Err(StoreError::Fenced)
            }
            Err(e) => return Err(unavailable(e)),
        };
        let entry = StoredRoom { epoch: a.epoch, seq: a.msg.seq };
        match self.rooms.update(key(&a.room), entry.encode_to_vec().into(), a.fence.revision).await {
            Ok(revision) => Ok(StoreFence { stream_seq, revision }),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(StoreError::Fenced),
            Err(e) => Err(unavailable(e)),
        }
    }
}

impl Store for JetStreamStore {
    fn kind(&self) -> &'static str {
        "jetstream"
    }

    fn durable(&self) -> bool {
        true
    }

    fn load(
        &self,
        room: String,
        epoch: String,
        limits: HistoryConfig,
    ) -> bus::BoxFuture<'_, Result<Loaded, StoreError>> {
        Box::pin(async move {
            match tokio::time::timeout(LOAD_TIMEOUT, self.load_room(&room, epoch, limits)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable("load timed out".into())),
            }
        })
    }

    fn append(&self, append: Append) -> bus::BoxFuture<'_, Result<StoreFence, StoreError>> {
        Box::pin(self.append_message(append))
    }

    fn save_read(&self, room: String, user: String, seq: u64) -> bus::BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let k = format!("{}.{}", key(&room), key(&user));
            self.rooms.put(k, seq.to_string().into()).await.map(|_| ()).map_err(unavailable)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_unique_for_every_id() {
        for id in ["plain", "chat:lobby", "dm:alice@example", "x-y_z", ":@:"] {
            assert!(proto::subject::valid_id(id));
            let k = key(id);
            assert!(k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)), "{k}");
            assert_eq!(unkey(&k), id);
        }
        assert_ne!(key("a:b"), key("a@b"));
    }
}
