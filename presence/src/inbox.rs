//! Direct messages waiting for users who had no live connection when they
//! were sent, delivered to the user's next connection: the seam between the
//! presence service and where the messages are kept.
//!
//! A gateway whose `send` found nobody puts the message here; a gateway
//! that greets a connection of the user takes the user's whole inbox, and
//! of two connections opening together each message reaches exactly one.
//! - [`MemoryInbox`]: in this process (lost with it); the standalone
//!   gateway's and the default.
//! - [`JetStreamInbox`]: the stream `SB_INBOX` on NATS JetStream, which
//!   survives restarts of presence (`--inbox-store jetstream`).

use std::sync::Arc;
use std::time::Duration;

use proto::pb;

pub use crate::inbox_jetstream::JetStreamInbox;
pub use crate::inbox_memory::MemoryInbox;

/// Where offline users' direct messages wait.
pub trait InboxStore: Send + Sync + 'static {
    /// Queues `msg` for `msg.to`: the messages that had to go, by reason,
    /// and whether `msg` itself was refused.
    fn put(&self, msg: pb::QueuedDirect) -> bus::BoxFuture<'_, Result<(Vec<Dropped>, bool), String>>;

    /// Takes `user`'s waiting messages, oldest first, leaving none.
    fn take(&self, user: String) -> bus::BoxFuture<'_, Result<Vec<pb::QueuedDirect>, String>>;

    /// Drops messages past their TTL; returns how many (a store that
    /// expires them itself returns 0).
    fn sweep(&self) -> usize;
}

/// Which inbox store presence uses.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxKind {
    Memory,
    Jetstream,
}

/// Where `presence` keeps the inbox.
#[derive(clap::Args, Debug, Clone)]
pub struct InboxStoreFlags {
    /// `memory` (lost when presence restarts) or `jetstream` (the stream
    /// SB_INBOX on NATS JetStream: kept across restarts).
    #[arg(long, env = "SB_INBOX_STORE", value_enum, default_value_t = InboxKind::Memory)]
    pub inbox_store: InboxKind,

    /// Replicas of SB_INBOX when presence creates it.
    #[arg(long, env = "SB_INBOX_REPLICAS", default_value_t = 1)]
    pub inbox_replicas: usize,
}

impl InboxStoreFlags {
    /// Opens the configured store with `config`'s bounds.
    pub async fn open(
        &self,
        nats_url: &str,
        security: &bus::NatsFlags,
        id: &str,
        config: InboxConfig,
    ) -> anyhow::Result<Arc<dyn InboxStore>> {
        Ok(match self.inbox_store {
            InboxKind::Memory => Arc::new(MemoryInbox::new(config)),
            InboxKind::Jetstream => {
                Arc::new(JetStreamInbox::open(nats_url, security, id, self.inbox_replicas, config).await?)
            }
        })
    }
}

/// The inbox flags of `presence` and of the standalone gateway.
#[derive(clap::Args, Debug, Clone)]
pub struct InboxFlags {
    /// Direct messages kept per offline user; a full inbox drops its oldest.
    #[arg(long, env = "SB_INBOX_SIZE", default_value_t = 100)]
    pub inbox_size: usize,
    /// How long a direct message waits for an offline user (168h: a week).
    #[arg(long, env = "SB_INBOX_TTL", default_value = "168h", value_parser = shell::cli::duration)]
    pub inbox_ttl: Duration,
    /// Bytes of waiting direct messages over all users.
    #[arg(long, env = "SB_INBOX_BYTES", default_value_t = 256 << 20)]
    pub inbox_bytes: usize,
}

impl InboxFlags {
    pub fn config(&self) -> InboxConfig {
        InboxConfig { size: self.inbox_size.max(1), ttl: self.inbox_ttl, bytes: self.inbox_bytes }
    }
}

/// Bounds of the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxConfig {
    /// Messages kept per user (`--inbox-size`).
    pub size: usize,
    /// How long a message waits (`--inbox-ttl`).
    pub ttl: Duration,
    /// Bytes kept over all users (`--inbox-bytes`).
    pub bytes: usize,
}

impl InboxConfig {
    /// The flags' defaults: 100 messages, 7 days, 256 MiB.
    pub const DEFAULT: Self = Self { size: 100, ttl: Duration::from_secs(7 * 24 * 3600), bytes: 256 << 20 };
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a message left the inbox undelivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The user's inbox was full: its oldest message made room.
    Full,
    /// The inbox was over its byte budget.
    Budget,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Full => "full",
            Dropped::Budget => "budget",
        }
    }
}
