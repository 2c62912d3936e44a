//! Reading client WebSocket messages, with the gateway's own limits.
//!
//! fastwebsockets' reader keeps an 8 KiB buffer per connection from the
//! start, caps frames but not reassembled messages, and drops the socket on a
//! protocol error without saying why. This reader keeps no buffer while a
//! connection is idle, caps the whole message (and the number of fragments,
//! so endless empty continuations are bounded too), validates UTF-8
//! incrementally, and reports each failure with the close code to send.
//!
//! With permessage-deflate negotiated ([`FrameReader::with_deflate`]), a
//! message whose first frame has RSV1 set is inflated once complete, capped
//! at the same message size ([`deflate`](crate::websocket::deflate)); its
//! UTF-8 is checked after inflating.
//!
//! `next()` is cancel-safe: bytes are only consumed once a whole frame is
//! buffered, so it can sit in a `select!` next to timers.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use proto::client::close::{self, Close};
use tokio::io::{AsyncRead, ReadBuf};

use crate::websocket::deflate::{self, InflateError};
use crate::websocket::stream::ReadHalf;

/// Most fragments one message may arrive in at the default message cap.
pub const MAX_FRAGMENTS: usize = 1024;
/// A raised message cap allows one more fragment per this many bytes, so a
/// large message may arrive in small fragments (Autobahn sends 4 MiB in
/// 64-byte ones) while endless empty continuations stay bounded.
const BYTES_PER_FRAGMENT: usize = 64;

/// Most fragments one message may arrive in, for a message cap.
pub fn max_fragments(max_message: usize) -> usize {
    MAX_FRAGMENTS.max(max_message / BYTES_PER_FRAGMENT)
}

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// A text message (valid UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; answer with a pong carrying the payload.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// The client closes, with its code if it sent one.
    Close(Option<u16>),
    /// Not from the client: the socket's clock says the connection's
    /// credentials are due for renewal.
    Renew,
    /// Not from the client: the backend's orders wait in the outbox.
    Orders,
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReadError {
    /// The peer closed the TCP connection (or it failed).
    #[error("connection closed")]
    Closed,
    /// A framing violation; close with this.
    #[error("{}", .0.reason)]
    Protocol(Close),
}

impl ReadError {
    fn protocol(reason: &'static str) -> Self {
        Self::Protocol(Close::new(close::PROTOCOL_ERROR, reason))
    }
    fn too_big() -> Self {
        Self::Protocol(Close::new(close::TOO_BIG, "message too big"))
    }
    fn utf8() -> Self {
        Self::Protocol(Close::new(close::INVALID_PAYLOAD, "invalid UTF-8"))
    }
    fn inflate(e: InflateError) -> Self {
        match e {
            InflateError::TooBig => Self::too_big(),
            InflateError::Invalid => Self::Protocol(Close::new(close::INVALID_PAYLOAD, "invalid deflate data")),
        }
    }
}

/// A fragmented message being reassembled.
struct Partial {
    text: bool,
    /// Its first frame had RSV1: inflate it once complete.
    compressed: bool,
    data: BytesMut,
    fragments: usize,
    /// Prefix of `data` known to be valid UTF-8.
    valid_to: usize,
}

/// Reads client messages from the read half of an upgraded TCP stream (or,
/// for tests and fuzzing, from any byte stream).
pub struct FrameReader<R = ReadHalf> {
    io: R,
    buf: BytesMut,
    max_message: usize,
    partial: Option<Partial>,
    /// Of a text frame at the head of `buf` that has not all arrived yet:
    /// payload bytes already unmasked in place, and the prefix of those known
    /// to be valid UTF-8. Lets invalid text fail before the rest arrives.
    early: (usize, usize),
    /// permessage-deflate was negotiated.
    deflate: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// `prefix` holds bytes read past the HTTP upgrade, if any.
    pub fn new(io: R, prefix: Bytes, max_message: usize) -> Self {
        Self { io, buf: BytesMut::from(&prefix[..]), max_message, partial: None, early: (0, 0), deflate: false }
    }

    /// Accepts compressed messages (permessage-deflate was negotiated).
    pub fn with_deflate(mut self, deflate: bool) -> Self {
        self.deflate = deflate;
        self
    }

    /// The next message or control frame.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls for the next message. Written as a poll function so that a task
    /// waiting on an idle connection stores no read future at all.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, ReadError>> {
        loop {
            if let Some(msg) = self.parse()? {
                return Poll::Ready(Ok(msg));
            }
            let read = if self.buf.is_empty() {
                // Idle: hold no buffer until the socket has something to say.
                // The stack buffer lives only during this call.
                self.buf = BytesMut::new();
                let mut stack = [0u8; 4096];
                let mut chunk = ReadBuf::new(&mut stack);
                let read = ready!(Pin::new(&mut self.io).poll_read(cx, &mut chunk)).map(|()| chunk.filled().len());
                self.buf.extend_from_slice(chunk.filled());
                read
            } else {
                if self.buf.capacity() - self.buf.len() < 512 {
                    self.buf.reserve(4096);
                }
                ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))
            };
            match read {
                Ok(0) | Err(_) => return Poll::Ready(Err(ReadError::Closed)),
                Ok(_) => {}
            }
        }
    }

    /// Consumes one frame if it is fully buffered.
    fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some(frame) = self.take_frame()? else {
                return Ok(None);
            };
            if let Some(msg) = self.assemble(frame)? {
                return Ok(Some(msg));
            }
        }
    }

    /// Splits one whole frame off the buffer: (fin, opcode, unmasked
    /// payload, compressed).
    fn take_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let (fin, rsv, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0f);
        let (masked, len7) = (b[1] & 0x80 != 0, b[1] & 0x7f);
        // RSV1 marks a compressed message, on its first frame only.
        let compressed = rsv == 0x40 && self.deflate && matches!(opcode, 1 | 2);
        if rsv != 0 && !compressed {
            return Err(ReadError::protocol("reserved bits set"));
        }
        if !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10) {
            return Err(ReadError::protocol("unknown opcode"));
        }
        if !masked {
            return Err(ReadError::protocol("client frames must be masked"));
        }
        let control = opcode >= 8;
        if control && (!fin || len7 > 125) {
            return Err(ReadError::protocol("bad control frame"));
        }
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let head = 2 + ext + 4;
        if b.len() < head {
            return Ok(None);
        }
        let len = match ext {
            0 => len7 as u64,
            2 => u16::from_be_bytes([b[2], b[3]]) as u64,
            _ => u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")),
        };
        // RFC 6455 5.2: the top bit of a 64-bit length must be 0.
        if len >> 63 != 0 {
            return Err(ReadError::protocol("frame length out of range"));
        }
        // Refuse before buffering: a 1 GiB length must not reserve 1 GiB.
        let so_far = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
        if !control && so_far.saturating_add(len) > self.max_message as u64 {
            return Err(ReadError::too_big());
        }
        let len = len as usize;
        let mask: [u8; 4] = b[head - 4..head].try_into().expect("4 bytes");
        if b.len() < head + len {
            // Only text whose UTF-8 state starts clean at this frame: a
            // continuation may finish a character the previous one began.
            let text = match &self.partial {
                None => opcode == 1 && !compressed,
                Some(p) => opcode == 0 && p.text && !p.compressed && p.valid_to == p.data.len(),
            };
            if text {
                self.check_early(head, mask)?;
            }
            self.buf.reserve(head + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(head);
        let mut payload = self.buf.split_to(len);
        let (unmasked, _) = std::mem::take(&mut self.early);
        fastwebsockets::unmask(&mut payload[unmasked..], rotate(mask, unmasked));
        Ok(Some((fin, opcode, payload, compressed)))
    }

    /// Unmasks what has arrived of the text frame at the head of the buffer
    /// and fails if it can no longer become valid UTF-8 (Autobahn 6.4.3: fail
    /// fast, not once 16 MiB have arrived). The rest is unmasked and the whole
    /// checked again once the frame is complete.
    fn check_early(&mut self, head: usize, mask: [u8; 4]) -> Result<(), ReadError> {
        let (unmasked, valid) = self.early;
        let arrived = self.buf.len() - head;
        fastwebsockets::unmask(&mut self.buf[head + unmasked..], rotate(mask, unmasked));
        self.early.0 = arrived;
        match std::str::from_utf8(&self.buf[head + valid..]) {
            Ok(_) => self.early.1 = arrived,
            Err(e) if e.error_len().is_none() => self.early.1 = valid + e.valid_up_to(),
            Err(_) => return Err(ReadError::utf8()),
        }
        Ok(())
    }

    /// Applies one frame to the message being assembled.
    fn assemble(&mut self, (fin, opcode, payload, compressed): Frame) -> Result<Option<Incoming>, ReadError> {
        match opcode {
            0 => {
                let Some(p) = self.partial.as_mut() else {
                    return Err(ReadError::protocol("continuation without a message"));
                };
                p.fragments += 1;
                if p.fragments > max_fragments(self.max_message) {
                    return Err(ReadError::too_big());
                }
                p.data.extend_from_slice(&payload);
                if p.text && !p.compressed {
                    check_utf8(p, fin)?;
                }
                if !fin {
                    return Ok(None);
                }
                let p = self.partial.take().expect("checked above");
                if p.compressed {
                    return self.inflated(p.text, &p.data).map(Some);
                }
                Ok(Some(if p.text { Incoming::Text(p.data.freeze()) } else { Incoming::Binary(p.data.freeze()) }))
            }
            1 | 2 => {
                if self.partial.is_some() {
                    return Err(ReadError::protocol("new message inside a fragmented one"));
                }
                let text = opcode == 1;
                if fin && compressed {
                    return self.inflated(text, &payload).map(Some);
                }
                if fin {
                    if text && simdutf8::basic::from_utf8(&payload).is_err() {
                        return Err(ReadError::utf8());
                    }
                    let data = payload.freeze();
                    return Ok(Some(if text { Incoming::Text(data) } else { Incoming::Binary(data) }));
                }
                let mut p = Partial { text, compressed, data: payload, fragments: 1, valid_to: 0 };
                if text && !compressed {
                    check_utf8(&mut p, false)?;
                }
                self.partial = Some(p);
                Ok(None)
            }
            8 => Ok(Some(Incoming::Close(close_code(&payload)?))),
            9 => Ok(Some(Incoming::Ping(payload.freeze()))),
            _ => Ok(Some(Incoming::Pong)),
        }
    }

    /// A compressed message, inflated within the cap and checked.
    fn inflated(&self, text: bool, compressed: &[u8]) -> Result<Incoming, ReadError> {
        let data = Bytes::from(deflate::inflate(compressed, self.max_message).map_err(ReadError::inflate)?);
        if text && simdutf8::basic::from_utf8(&data).is_err() {
            return Err(ReadError::utf8());
        }
        Ok(if text { Incoming::Text(data) } else { Incoming::Binary(data) })
    }
}

/// A frame off the wire: (fin, opcode, unmasked payload, compressed).
type Frame = (bool, u8, BytesMut, bool);

impl FrameReader<ReadHalf> {
    /// Reads and drops whatever the client still sends, until it closes its
    /// side. Closing a socket with unread input makes the kernel send a
    /// reset, which can destroy our close frame before the client reads it.
    pub async fn discard_until_eof(&mut self) {
        self.buf = BytesMut::new();
        self.partial = None;
        self.early = (0, 0);
        self.io.discard_until_eof().await
    }
}

/// The mask for a payload that starts `offset` bytes into a frame's.
fn rotate(mut mask: [u8; 4], offset: usize) -> [u8; 4] {
    mask.rotate_left(offset % 4);
    mask
}

/// Fails as soon as the text cannot become valid UTF-8.
fn check_utf8(p: &mut Partial, fin: bool) -> Result<(), ReadError> {
    match std::str::from_utf8(&p.data[p.valid_to..]) {
        Ok(_) => p.valid_to = p.data.len(),
        Err(e) if e.error_len().is_none() && !fin => p.valid_to += e.valid_up_to(),
        Err(_) => return Err(ReadError::utf8()),
    }
    Ok(())
}

/// The code of a close frame, checked as RFC 6455 asks.
fn close_code(payload: &[u8]) -> Result<Option<u16>, ReadError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(ReadError::protocol("close frame with a 1-byte body")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !allowed {
                return Err(ReadError::protocol("invalid close code"));
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(ReadError::utf8());
            }
            Ok(Some(code))
        }
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
