//! Command-line flags and environment variables of the `gateway` binary.
//!
//! Every flag has an `SB_…` environment twin and a default shown by `--help`.
//! Names fixed by the design (`--listen`, `--nats-url`, …) are what manifests
//! and docs rely on; the limit flags default to the design's values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shell::cli::{duration, node_id};

/// Switchboard WebSocket gateway.
#[derive(Parser, Debug, Clone)]
#[command(name = "gateway", version, about, long_about = None)]
pub struct Config {
    /// Embed a router and presence in this process on an in-process broker (no NATS).
    #[arg(long, env = "SB_STANDALONE")]
    pub standalone: bool,

    /// WebSocket (`/ws`) and demo page address.
    #[arg(long, env = "SB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Admin address: /metrics, /healthz, /readyz.
    #[arg(long, env = "SB_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,

    /// Admin gRPC API address (Stats, Disconnect, Drain).
    #[arg(long, env = "SB_GRPC_LISTEN", default_value = "127.0.0.1:7071")]
    pub grpc_listen: SocketAddr,

    /// Node id ([A-Za-z0-9_-]); default: host name plus a random suffix.
    #[arg(long, env = "SB_ID", value_parser = node_id)]
    pub id: Option<String>,

    /// NATS server for cluster mode, e.g. nats://127.0.0.1:4222.
    #[arg(long, env = "SB_NATS_URL")]
    pub nats_url: Option<String>,

    /// Presence service for cluster mode, e.g. http://127.0.0.1:7070.
    #[arg(long, env = "SB_PRESENCE_URL")]
    pub presence_url: Option<String>,

    #[command(flatten)]
    pub tokens: Tokens,

    /// Room globs for tokens without a `rooms` claim (comma-separated).
    #[arg(long, env = "SB_DEFAULT_ROOMS", default_value = "*")]
    pub default_rooms: String,

    /// User globs a token without a `send` claim may message (comma-separated).
    #[arg(long, env = "SB_DEFAULT_SEND", default_value = "*")]
    pub default_send: String,

    /// User globs whose presence a token without a `watch` claim may query or watch.
    #[arg(long, env = "SB_DEFAULT_WATCH", default_value = "*")]
    pub default_watch: String,

    /// Allowed Origin values (comma-separated); empty allows any.
    #[arg(long, env = "SB_ALLOWED_ORIGINS", default_value = "")]
    pub allowed_origins: String,

    #[command(flatten)]
    pub api: shell::grpc::ApiAccess,

    #[command(flatten)]
    pub tls: shell::tls::TlsFlags,

    #[command(flatten)]
    pub proxies: crate::edge::client_ip::Proxies,

    #[command(flatten)]
    pub nats: bus::NatsFlags,

    /// Bearer token for calls to presence (cluster mode); default: --api-token.
    #[arg(long, env = "SB_PRESENCE_TOKEN", hide_env_values = true)]
    pub presence_token: Option<String>,

    /// Virtual nodes per router on the ring (must match the routers).
    #[arg(long, env = "SB_VNODES", default_value_t = 128)]
    pub vnodes: u32,

    /// Test mode for RFC 6455 conformance suites: WebSocket connections skip
    /// authentication and echo every message back instead of speaking the
    /// Switchboard protocol. Never enable it in production.
    #[arg(long, env = "SB_CONFORMANCE_ECHO")]
    pub conformance_echo: bool,

    #[command(flatten)]
    pub limits: Limits,

    /// `--config` (namespaces) and the history flags (standalone).
    #[command(flatten)]
    pub policy: router::namespace::PolicyFlags,

    #[command(flatten)]
    pub embedded: Embedded,

    #[command(flatten)]
    pub hooks: crate::hooks::HookFlags,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of serving.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Mint a client token with this gateway's key, or check one (--check).
    Token(crate::cmd::token::TokenArgs),
}

/// The keys client tokens are checked with, and what their claims must say.
/// Several keys may be given at once, of any kinds: a rotation keeps the old
/// key beside the new one until tokens signed with it have expired.
#[derive(clap::Args, Debug, Clone)]
pub struct Tokens {
    /// HS256 secret for client tokens; repeat for several (generated in
    /// standalone mode when no key is set). SB_JWT_SECRET_FILE: one per line.
    #[arg(long = "jwt-secret", env = "SB_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secrets: Vec<String>,

    /// PEM public key file for RS256 or ES256 client tokens; repeat (or
    /// separate with commas) for several.
    #[arg(long = "jwt-public-key", env = "SB_JWT_PUBLIC_KEY", value_delimiter = ',', global = true)]
    pub jwt_public_keys: Vec<PathBuf>,

    /// URL of the token issuer's JSON Web Key Set (RS256/ES256 keys by `kid`).
    #[arg(long, env = "SB_JWKS_URL", global = true)]
    pub jwks_url: Option<String>,

    /// How often the JWKS is fetched again.
    #[arg(long, env = "SB_JWKS_REFRESH", default_value = "5m", value_parser = duration)]
    pub jwks_refresh: Duration,

    /// Least time between two fetches of the JWKS caused by tokens with an unknown `kid`.
    #[arg(long, env = "SB_JWKS_MIN_INTERVAL", default_value = "30s", value_parser = duration)]
    pub jwks_min_interval: Duration,

    /// Audiences a token's `aud` must name one of (comma-separated); empty: `aud` is not checked.
    #[arg(long, env = "SB_JWT_AUDIENCE", value_delimiter = ',', global = true)]
    pub jwt_audience: Vec<String>,

    /// Issuers a token's `iss` must be one of (comma-separated); empty: `iss` is not checked.
    #[arg(long, env = "SB_JWT_ISSUER", value_delimiter = ',', global = true)]
    pub jwt_issuer: Vec<String>,
}

/// Per-connection and per-gateway limits.
#[derive(clap::Args, Debug, Clone)]
pub struct Limits {
    /// Offer permessage-deflate (no context takeover) to JSON WebSocket
    /// clients that ask; messages under 256 bytes go uncompressed.
    #[arg(long, env = "SB_COMPRESSION")]
    pub compression: bool,

    /// Largest client message after reassembly, in bytes (close 1009 past it).
    #[arg(long, env = "SB_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Sustained client frames per second per connection.
    #[arg(long, env = "SB_RATE_PER_SEC", default_value_t = 50.0)]
    pub rate_per_sec: f64,

    /// Burst of client frames per connection.
    #[arg(long, env = "SB_RATE_BURST", default_value_t = 100.0)]
    pub rate_burst: f64,

    /// Frames refused by the rate limit, in a row, before closing with 4002.
    #[arg(long, env = "SB_FLOOD_LIMIT", default_value_t = 100)]
    pub flood_limit: u32,

    /// Bad frames per minute before closing with 4503.
    #[arg(long, env = "SB_BAD_FRAME_LIMIT", default_value_t = 10)]
    pub bad_frame_limit: u32,

    /// Largest `info` claim in a token, in bytes (refused at auth with 4500 past it).
    #[arg(long, env = "SB_MAX_INFO_BYTES", default_value_t = crate::session::auth::MAX_INFO_BYTES)]
    pub max_info_bytes: usize,

    /// Rooms one connection may join.
    #[arg(long, env = "SB_MAX_ROOMS_PER_CONN", default_value_t = 128)]
    pub max_rooms_per_conn: usize,

    /// Users one connection may watch.
    #[arg(long, env = "SB_MAX_WATCHES_PER_CONN", default_value_t = 1000)]
    pub max_watches_per_conn: usize,

    /// Watches (connection, user) all connections of this gateway may hold.
    #[arg(long, env = "SB_MAX_WATCHES", default_value_t = 1_000_000)]
    pub max_watches: usize,

    /// Bytes of room memberships and watches the connections of one client IP
    /// may hold (a membership counts 512 bytes plus its room id and twice its info).
    #[arg(long, env = "SB_MAX_BYTES_PER_IP", default_value_t = 256 << 20)]
    pub max_bytes_per_ip: usize,

    /// Joins and leaves per second per connection (rate_limited past it): each
    /// one is an event at every member.
    #[arg(long, env = "SB_JOIN_RATE", default_value_t = 10.0)]
    pub join_rate: f64,

    /// Burst of joins and leaves per connection (enough to rejoin every room at once).
    #[arg(long, env = "SB_JOIN_BURST", default_value_t = 128.0)]
    pub join_burst: f64,

    /// Connections this gateway accepts (1013 past it).
    #[arg(long, env = "SB_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Connections per client IP (1013 past it).
    #[arg(long, env = "SB_MAX_CONNECTIONS_PER_IP", default_value_t = 10_000)]
    pub max_connections_per_ip: usize,

    /// Authenticated handshakes admitted per second (1013 past it).
    #[arg(long, env = "SB_HANDSHAKE_RATE", default_value_t = 2000.0)]
    pub handshake_rate: f64,

    /// Burst of handshakes admitted at once.
    #[arg(long, env = "SB_HANDSHAKE_BURST", default_value_t = 2000.0)]
    pub handshake_burst: f64,

    /// Failed authentications per second answered with their close code
    /// (4500, 4501), in total; past it they get 1013. Valid tokens never use it.
    #[arg(long, env = "SB_AUTH_FAILURE_RATE", default_value_t = 100.0)]
    pub auth_failure_rate: f64,

    /// Failed authentications per second answered with their code, per client IP.
    #[arg(long, env = "SB_AUTH_FAILURE_IP_RATE", default_value_t = 20.0)]
    pub auth_failure_ip_rate: f64,

    /// Outbound queue per connection, in bytes (close 4000 past it).
    #[arg(long, env = "SB_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub queue_bytes: usize,

    /// Bytes of recent room messages this gateway keeps, all rooms together,
    /// so that members catching up need not ask the room's owner. Past it, a
    /// room keeps its newest few (each room also keeps at most 256 messages
    /// or 1 MiB).
    #[arg(long, env = "SB_RECENT_BYTES", default_value_t = DEFAULT_RECENT_BYTES)]
    pub recent_bytes: usize,

    /// Longest a socket write may block before the client counts as slow (4000).
    #[arg(long, env = "SB_WRITE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub write_timeout: Duration,

    /// Longest a connection holds frames before writing them, so that under
    /// a broadcast load several go out in one write (fewer syscalls, less
    /// CPU per delivery) at the price of this much latency. 0: write at
    /// once. `--busy-write-delay` does the same for busy connections only.
    #[arg(long, env = "SB_WRITE_DELAY", default_value = "0s", value_parser = duration)]
    pub write_delay: Duration,

    /// How long a busy connection's next frames wait for company: one whose
    /// last two writes each carried 16 frames or more is already behind (a
    /// member of a room under a fanout the gateway cannot keep up with, a
    /// slow client), so fuller writes cost it little latency and save CPU
    /// per delivery. A connection receiving a frame or two at a time is
    /// never held; replies, pings and closes never wait. 0: off.
    #[arg(long, env = "SB_BUSY_WRITE_DELAY", default_value = "200ms", value_parser = duration)]
    pub busy_write_delay: Duration,

    /// Interval between heartbeat pings.
    #[arg(long, env = "SB_HEARTBEAT", default_value = "25s", value_parser = duration)]
    pub heartbeat: Duration,

    /// Silence after a ping before closing with 4001.
    #[arg(long, env = "SB_PONG_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub pong_timeout: Duration,

    /// Time to send the auth frame when the upgrade carried no token (4500 past it).
    #[arg(long, env = "SB_AUTH_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub auth_timeout: Duration,

    /// Time to send the HTTP request headers; slower connections (slowloris) are dropped.
    #[arg(long, env = "SB_HEADER_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub header_timeout: Duration,

    /// On SIGTERM, close clients with 1001 in batches spread over this window.
    #[arg(long, env = "SB_DRAIN_WINDOW", default_value = "10s", value_parser = duration)]
    pub drain_window: Duration,
}

/// `--recent-bytes` unless set: 64 MiB.
pub const DEFAULT_RECENT_BYTES: usize = 64 << 20;

impl Limits {
    /// The bounds of each room this gateway follows, sharing one budget for
    /// recent messages.
    pub fn room_bounds(&self) -> crate::delivery::fanout::Bounds {
        let recent_budget = crate::delivery::fanout::Budget::new(self.recent_bytes);
        crate::delivery::fanout::Bounds { recent_budget, ..Default::default() }
    }
}

/// Settings of the router and presence embedded by `--standalone`.
#[derive(clap::Args, Debug, Clone)]
pub struct Embedded {
    /// Server API over HTTP/JSON, POST /api/<method> (standalone; routers
    /// serve it in a cluster).
    #[arg(long, env = "SB_API_LISTEN", default_value = "127.0.0.1:8090")]
    pub api_listen: std::net::SocketAddr,

    /// How long a user stays online after their last connection ends (standalone).
    #[arg(long, env = "SB_OFFLINE_GRACE", default_value = "5s", value_parser = duration)]
    pub offline_grace: Duration,

    #[command(flatten)]
    pub inbox: presence::InboxFlags,

    /// Room and user events for the application's backend (standalone).
    #[command(flatten)]
    pub webhooks: shell::webhook::WebhookFlags,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_have_env_twins_and_defaults() {
        use clap::CommandFactory;
        let cmd = Config::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            assert!(arg.get_env().is_some(), "--{id} has no SB_ env var");
        }
        cmd.debug_assert();
    }
}
