//! Writing to a connection: batches and the closing frame.
//!
//! Everything queued since the last write goes out in one `write_all`, so a
//! fanout burst costs one syscall per connection, not one per frame. A write
//! that blocks past the write timeout means the client stopped reading: the
//! connection is dropped as a slow consumer (4000). With permessage-deflate,
//! data frames of [`deflate::MIN_BYTES`] or more go compressed (RSV1).

use std::time::Duration;

use proto::client::close::{self, Close};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use crate::delivery::outbox::{Out, Outbox};
use crate::websocket::deflate;
use crate::websocket::stream::WriteHalf;

const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;
/// The first header bit after FIN: a compressed message.
const RSV1: u8 = 0x40;

/// The write half of a connection.
pub struct Writer {
    io: WriteHalf,
    /// Data frames are binary (protobuf) rather than text (JSON).
    binary: bool,
    /// Longest one batch may take to write.
    write_timeout: Duration,
    /// The close frame went out (or the socket failed): nothing more to write.
    done: bool,
    /// permessage-deflate was negotiated.
    deflate: bool,
}

impl Writer {
    pub fn new(io: WriteHalf, binary: bool, write_timeout: Duration, deflate: bool) -> Self {
        Self { io, binary, write_timeout, done: false, deflate }
    }

    /// Whether the connection can take no more frames.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Writes everything queued (after a ping, if `ping`), and the close
    /// frame once the outbox is closing. A failed or timed-out write closes
    /// the outbox. Returns the number of frames written.
    pub async fn flush(&mut self, outbox: &Outbox, ping: bool) -> usize {
        if self.done {
            return 0;
        }
        let batch = outbox.take();
        let data_op = if self.binary { OP_BINARY } else { OP_TEXT };
        // One allocation: a frame's head is at most 10 bytes, and a ping
        // (head only) and a close (head, code and reason) may join them.
        let frames: usize = batch.frames.iter().map(|o| o.size() + 10).sum();
        let mut buf = Vec::with_capacity(frames + 10 + batch.closing.map_or(0, |c| 12 + c.reason.len()));
        if ping {
            put_frame(&mut buf, OP_PING, &[]);
        }
        for out in &batch.frames {
            // Conformance echoes are compressed whatever their size: the
            // suite's checker expects every echo compressed.
            let (op, data, min) = match out {
                Out::Data(b) => (data_op, b, deflate::MIN_BYTES),
                Out::Pong(b) => (OP_PONG, b, usize::MAX),
                Out::Echo { binary, data } => (if *binary { OP_BINARY } else { OP_TEXT }, data, 0),
            };
            if self.deflate && data.len() >= min {
                put_frame(&mut buf, op | RSV1, &deflate::deflate(data));
            } else {
                put_frame(&mut buf, op, data);
            }
        }
        if let Some(c) = batch.closing.filter(|c| c.code != close::ABNORMAL) {
            let mut payload = c.code.to_be_bytes().to_vec();
            payload.extend_from_slice(c.reason.as_bytes());
            put_frame(&mut buf, OP_CLOSE, &payload);
        }
        if !buf.is_empty() {
            match timeout(self.write_timeout, self.io.write_all(&buf)).await {
                Ok(Ok(())) => {
                    let delivered = batch.frames.iter().filter(|o| matches!(o, Out::Data(_))).count();
                    crate::metrics::frames_out(delivered);
                }
                Ok(Err(_)) => {
                    outbox.close(Close::new(close::NORMAL, "socket error"));
                    self.done = true;
                    return 0;
                }
                Err(_) => {
                    crate::metrics::dropped("write_timeout");
                    outbox.close(Close::SLOW_CONSUMER);
                    self.done = true;
                    return 0;
                }
            }
        }
        if batch.closing.is_some() {
            let _ = timeout(self.write_timeout, self.io.shutdown()).await;
            self.done = true;
        }
        batch.frames.len()
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
