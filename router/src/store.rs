//! Where rooms' streams live beyond their owner's memory: the seam between
//! the owner (a state machine that asks for loads and appends, no I/O) and
//! a store the owner's task calls.
//!
//! - [`MemoryStore`] keeps nothing beyond the process: a room starts on a
//!   fresh epoch wherever its state cannot be handed over, so members of a
//!   crashed owner's rooms get `resync`. Publishes never wait for it.
//! - [`JetStreamStore`] keeps every message in the stream `SB_HISTORY`
//!   (`sb.hist.<room>`), each room's epoch and last seq in the KV bucket
//!   `SB_ROOMS`, and read markers beside them. The owner acknowledges a
//!   publish only after JetStream has, with one write in flight per room;
//!   every write names the stream sequence and KV revision it expects, so a
//!   stale owner's write fails instead of forking the stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proto::internal::{StoreFence, StoredMessage};

use crate::history::HistoryConfig;

pub use crate::store_jetstream::JetStreamStore;
pub use crate::store_memory::MemoryStore;

/// A room as the store holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub epoch: String,
    pub seq: u64,
    /// The latest messages of the epoch, oldest first, at most the
    /// namespace's history size.
    pub history: Vec<StoredMessage>,
    /// Read markers: user → highest seq read.
    pub reads: HashMap<String, u64>,
    pub fence: StoreFence,
}

/// One message to store for `room`, fenced on where the owner last wrote.
#[derive(Debug, Clone)]
pub struct Append {
    pub room: String,
    pub epoch: String,
    pub msg: StoredMessage,
    /// The namespace's history TTL, as the message's own TTL.
    pub ttl: Duration,
    pub fence: StoreFence,
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The stream or the room's entry moved since our fence: another owner
    /// wrote (or our last message aged out). Nothing of this write is kept
    /// unless the entry alone was refused.
    #[error("fenced: the room was written since this owner's last write")]
    Fenced,
    /// The store did not answer in time or refused; the write may or may
    /// not have been kept.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// What the owner's task calls. Futures are boxed so owners hold an
/// `Arc<dyn Store>` whichever mode is configured.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// `memory` or `jetstream`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Whether publishes are acknowledged only once stored (and rooms are
    /// loaded from the store rather than started afresh).
    fn durable(&self) -> bool;

    /// `room`'s stored state; a room never stored starts now on `epoch`.
    fn load(
        &self,
        room: String,
        epoch: String,
        limits: HistoryConfig,
    ) -> bus::BoxFuture<'_, Result<Loaded, StoreError>>;

    /// Stores one message; answers the new fence.
    fn append(&self, append: Append) -> bus::BoxFuture<'_, Result<StoreFence, StoreError>>;

    /// Stores `user`'s read marker in `room`.
    fn save_read(&self, room: String, user: String, seq: u64) -> bus::BoxFuture<'_, Result<(), StoreError>>;
}

/// Which store a router uses.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Jetstream,
}

/// The store flags of the `router` binary.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreFlags {
    /// Where rooms' history, epoch and seq live: `memory` (lost with the
    /// owner: its rooms resync) or `jetstream` (NATS JetStream: another
    /// router continues a crashed owner's rooms, nothing acknowledged lost).
    #[arg(long, env = "SB_HISTORY_STORE", value_enum, default_value_t = StoreKind::Memory)]
    pub history_store: StoreKind,

    /// Replicas of the JetStream stream and bucket when this router creates
    /// them (1 on one NATS server, 3 in a production cluster).
    #[arg(long, env = "SB_HISTORY_REPLICAS", default_value_t = 1)]
    pub history_replicas: usize,

    /// Bytes the stream `SB_HISTORY` may hold; past it the oldest messages
    /// of all rooms go.
    #[arg(long, env = "SB_HISTORY_STORE_BYTES", default_value_t = 1 << 30)]
    pub history_store_bytes: i64,
}

impl StoreFlags {
    /// Opens the configured store; `limits` is the largest history any
    /// namespace keeps (the stream's per-subject bounds).
    pub async fn open(
        &self,
        nats_url: &str,
        security: &bus::NatsFlags,
        id: &str,
        limits: HistoryConfig,
    ) -> anyhow::Result<Arc<dyn Store>> {
        Ok(match self.history_store {
            StoreKind::Memory => Arc::new(MemoryStore),
            StoreKind::Jetstream => Arc::new(JetStreamStore::open(nats_url, security, id, self, limits).await?),
        })
    }
}
