//! Load scenarios: each drives a gateway (or the `ws` peer, or a cluster)
//! and measures speed and correctness together.

pub mod api;
pub mod broadcast;
pub mod chat;
pub mod connect;
pub mod member;
pub mod presence;
pub mod reconnect;
pub mod rooms;
pub mod seat;
pub mod slow;
pub mod soak;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::client::ClientError;
use crate::conn::{Conn, Received};
use crate::scan::Frame;
use crate::token::{mint, SigningKey, TokenSpec};

/// Which server is being driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// A Switchboard gateway or cluster.
    Switchboard,
    /// The same over its SSE transport: events from `GET /sse`, ops POSTed
    /// (the `--url`s stay the gateways' `ws://…/ws`).
    SwitchboardSse,
    /// The same over WebSockets with permessage-deflate (a gateway with
    /// `--compression`).
    SwitchboardDeflate,
    /// The `ws` rooms peer in `loadtest/peers/ws-rooms` (no auth, no presence).
    Peer,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Gateway URLs; connections go round-robin.
    pub urls: Vec<String>,
    pub protocol: Protocol,
    pub key: Option<SigningKey>,
    /// Spread client sockets over this many loopback addresses, from
    /// 127.0.0.`first_source` on.
    pub sources: u8,
    /// The last octet of the first source address (1 unless a worker).
    pub first_source: u8,
    /// Prefix of every user and room name (a worker's `w<i>-`).
    pub prefix: String,
    /// Handshakes started per second, across the scenario.
    pub connect_rate: f64,
    /// Trusted CAs for `wss://` URLs (`--ca`).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Target {
    /// A token for `user`, when there is a key to mint with.
    pub fn token(&self, user: &str) -> Option<String> {
        let key = self.key.as_ref()?;
        Some(mint(key, &TokenSpec::new(user.to_owned(), 86_400)))
    }

    /// Connection `i`'s URL and local address.
    fn place(&self, i: usize) -> (&str, Option<IpAddr>) {
        let url = &self.urls[i % self.urls.len()];
        let spread = self.sources > 1 || self.first_source != 1;
        let octet = usize::from(self.first_source) + i % usize::from(self.sources.max(1));
        let source = spread.then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet.min(254) as u8)));
        (url, source)
    }

    /// Opens connection `i` as `user` (with this target's prefix) and waits
    /// for `hello`.
    pub async fn open(&self, i: usize, user: &str) -> Result<Conn, ClientError> {
        let (url, source) = self.place(i);
        let token = self.token(&format!("{}{user}", self.prefix));
        let timeout = Duration::from_secs(10);
        let mut conn = match self.protocol {
            Protocol::SwitchboardSse => Conn::open_sse(url, token.as_deref(), source, timeout).await?,
            Protocol::SwitchboardDeflate => Conn::open_deflate(url, token.as_deref(), source, timeout).await?,
            _ => Conn::open(url, token.as_deref(), source, self.tls.as_ref(), timeout).await?,
        };
        match tokio::time::timeout(Duration::from_secs(10), conn.recv()).await {
            Ok(Received::Text(t)) if Frame::parse(&t).is_some_and(|f| f.ty == "hello") => Ok(conn),
            Ok(Received::Text(t)) => Err(ClientError::Unexpected(String::from_utf8_lossy(&t).into_owned())),
            Ok(Received::Closed(code)) => Err(ClientError::Closed(code)),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// A pacer for handshakes: waits until connection `i` may start.
    pub async fn pace(&self, started: tokio::time::Instant, i: usize) {
        if self.connect_rate > 0.0 {
            tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / self.connect_rate)).await;
        }
    }
}

/// The name of a failed connection attempt, for the failures table.
/// Whether a client would try again: the server asked for it (1013, a
/// reply `unavailable`), or did not answer in time, or refused the TCP
/// connection (a full accept queue under a connect storm).
pub fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Closed(Some(1013)) | ClientError::Timeout => true,
        ClientError::Connect(_) => failure_kind(e).starts_with("connect error"),
        ClientError::Unexpected(_) => failure_kind(e) == "refused unavailable",
        _ => false,
    }
}

pub fn failure_kind(e: &ClientError) -> String {
    match e {
        ClientError::Closed(Some(code)) => format!("close {code}"),
        ClientError::Closed(None) => "closed".into(),
        ClientError::Http(code) => format!("http {code}"),
        ClientError::Timeout => "timeout".into(),
        ClientError::Connect(m) if m.contains("Too many open files") => "out of file descriptors".into(),
        ClientError::Connect(m) if m.contains("Address not available") || m.contains("Cannot assign") => {
            "out of local ports".into()
        }
        // The OS's words, so a failed run says why (refused, reset, ...).
        ClientError::Connect(m) => format!("connect error: {m}"),
        // A refused request names its error code; anything else is a frame
        // the scenario did not expect.
        ClientError::Unexpected(text) => match crate::scan::Frame::parse(text.as_bytes()) {
            Some(f) if f.ty == "reply" => format!("refused {}", f.error.as_ref().map_or("?", |e| e.code)),
            Some(f) => format!("unexpected {}", f.ty),
            None => "unexpected frame".into(),
        },
    }
}
