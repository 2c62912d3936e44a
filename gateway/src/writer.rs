//! A connection's writer task: batches, heartbeats and the closing frame.
//!
//! Everything queued since the last wake-up goes out in one `write_all`, so a
//! fanout burst costs one syscall per connection, not one per frame. The
//! writer also owns the heartbeat: a ping every interval, and a close with
//! 4001 if nothing at all came back within the pong timeout. A write that
//! blocks past the write timeout means the client stopped reading: the
//! connection is dropped as a slow consumer (4000).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto::client::close;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::{timeout, Instant};

use crate::outbox::{Out, Outbox};

const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Data frames are binary (protobuf) rather than text (JSON).
    pub binary: bool,
    /// Interval between pings.
    pub heartbeat: Duration,
    /// Silence after a ping before closing with 4001.
    pub pong_timeout: Duration,
    /// Longest one batch may take to write.
    pub write_timeout: Duration,
}

/// When the client was last heard from; written by the reader, read here.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Self {
        Self { epoch: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    /// Records traffic from the client now.
    pub fn touch(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether the client was heard from at or after `t`.
    fn since(&self, t: Instant) -> bool {
        let t_ms = t.saturating_duration_since(self.epoch).as_millis() as u64;
        self.last_ms.load(Ordering::Relaxed) >= t_ms
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes until the connection closes; returns the close code sent, or
/// `None` when the socket failed or blocked before a close could be written.
pub async fn run(
    mut io: OwnedWriteHalf,
    outbox: Arc<Outbox>,
    activity: Arc<Activity>,
    config: WriterConfig,
) -> Option<u16> {
    let data_op = if config.binary { OP_BINARY } else { OP_TEXT };
    let mut next_ping = Instant::now() + config.heartbeat;
    let mut ping_sent: Option<Instant> = None;
    loop {
        let mut ping_due = false;
        let deadline = ping_sent.map_or(next_ping, |t| t + config.pong_timeout);
        tokio::select! {
            _ = outbox.ready() => {}
            _ = tokio::time::sleep_until(deadline) => match ping_sent {
                Some(t) if activity.since(t) => {
                    ping_sent = None;
                    next_ping = t + config.heartbeat;
                }
                Some(_) => outbox.close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout"),
                None => {
                    ping_due = true;
                    ping_sent = Some(Instant::now());
                }
            },
        }
        let batch = outbox.take();
        let mut buf = Vec::new();
        if ping_due {
            put_frame(&mut buf, OP_PING, &[]);
        }
        for out in &batch.frames {
            match out {
                Out::Data(b) => put_frame(&mut buf, data_op, b),
                Out::Pong(b) => put_frame(&mut buf, OP_PONG, b),
            }
        }
        if let Some(c) = batch.closing.filter(|c| c.code != close::ABNORMAL) {
            let mut payload = c.code.to_be_bytes().to_vec();
            payload.extend_from_slice(c.reason.as_bytes());
            put_frame(&mut buf, OP_CLOSE, &payload);
        }
        if !buf.is_empty() {
            match timeout(config.write_timeout, io.write_all(&buf)).await {
                Ok(Ok(())) => {
                    let delivered = batch.frames.iter().filter(|o| matches!(o, Out::Data(_))).count();
                    metrics::counter!("switchboard_gateway_frames_out_total").increment(delivered as u64);
                }
                Ok(Err(_)) => {
                    outbox.close(close::NORMAL, "socket error");
                    return None;
                }
                Err(_) => {
                    metrics::counter!("switchboard_gateway_drops_total", "reason" => "write_timeout").increment(1);
                    outbox.close(close::SLOW_CONSUMER, "slow consumer");
                    return None;
                }
            }
        }
        if let Some(c) = batch.closing {
            let _ = timeout(config.write_timeout, io.shutdown()).await;
            return Some(c.code);
        }
    }
}

/// Appends one unmasked server frame.
fn put_frame(buf: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    buf.reserve(payload.len() + 10);
    buf.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => buf.push(n as u8),
        n if n < 65_536 => {
            buf.push(126);
            buf.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            buf.push(127);
            buf.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    buf.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_heads_use_the_shortest_length() {
        let mut b = Vec::new();
        put_frame(&mut b, OP_TEXT, b"hi");
        assert_eq!(b, [0x81, 2, b'h', b'i']);
        let mut b = Vec::new();
        put_frame(&mut b, OP_BINARY, &[0; 300]);
        assert_eq!(&b[..4], &[0x82, 126, 1, 44]);
        let mut b = Vec::new();
        put_frame(&mut b, OP_BINARY, &[0; 70_000]);
        assert_eq!(&b[..2], &[0x82, 127]);
        assert_eq!(b.len(), 70_010);
    }
}
