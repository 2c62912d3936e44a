//! A connection's socket: one task reads, writes and keeps the clocks.
//!
//! The gateway's frame reader is cancel-safe, so one task can wait on the
//! client, on its outbox and on its clocks at once; an idle connection then
//! costs one small task rather than a reader and a writer. [`Socket::next`]
//! is the only place a session waits for the client: while it waits, queued
//! frames are written, pings go out, and silence or an expired token closes
//! the connection. While a request is being handled, [`Socket::tend`] keeps
//! writing and the clocks going, so a request that waits on a slow owner
//! never stalls the connection's other rooms. The backend's orders wait in
//! the outbox until [`Socket::next`] hands them to the session. A write
//! first lets the tasks ready now run ([`gather`]), so a fanout under way
//! lands in the same write. A busy connection, or every one with a write
//! delay, holds its frames a little so that one write carries more
//! ([`Coalesce`]); replies to the client's requests, pings and the close go
//! out at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto::client::close::Close;
use shell::tls::Stream;
use tokio::time::Instant;

use crate::delivery::coalesce::Coalesce;
use crate::delivery::outbox::{gather, Outbox};
use crate::websocket::clock::{Alarm, Clocks};
use crate::websocket::reader::{FrameReader, Incoming, ReadError};
use crate::websocket::writer::Writer;

/// How long a closing connection waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Socket settings.
#[derive(Debug, Clone, Copy)]
pub struct SocketConfig {
    /// Data frames are binary (protobuf) rather than text (JSON).
    pub binary: bool,
    pub max_message: usize,
    pub heartbeat: Duration,
    pub pong_timeout: Duration,
    pub write_timeout: Duration,
    /// How long queued frames wait for company before a write (0: none).
    pub write_delay: Duration,
    /// The same while the connection is busy ([`Coalesce`]).
    pub busy_write_delay: Duration,
    /// permessage-deflate was negotiated.
    pub deflate: bool,
}

/// The connection's reading and writing halves and its clocks.
pub struct Socket {
    reader: FrameReader,
    writer: Writer,
    pub clocks: Clocks,
    outbox: Arc<Outbox>,
    /// When queued frames are written.
    coalesce: Coalesce,
    /// A message read while the session was busy, for [`Socket::next`].
    /// Boxed: most connections never hold one.
    held: Option<Box<Result<Incoming, ReadError>>>,
}

/// What woke the socket.
pub enum Wake {
    /// The client sent something (or left).
    Read(Result<Incoming, ReadError>),
    /// The outbox has frames or a close.
    Write,
    /// A clock may be due.
    Alarm,
}

impl SocketConfig {
    /// The gateway's limits, for a connection speaking `encoding` (compressed
    /// with `deflate`).
    pub fn new(limits: &crate::config::Limits, encoding: proto::client::Encoding, deflate: bool) -> Self {
        Self {
            binary: encoding.is_binary(),
            max_message: limits.max_message_bytes,
            heartbeat: limits.heartbeat,
            pong_timeout: limits.pong_timeout,
            write_timeout: limits.write_timeout,
            write_delay: limits.write_delay,
            busy_write_delay: limits.busy_write_delay,
            deflate,
        }
    }
}

impl Socket {
    /// `prefix` holds bytes read past the HTTP upgrade.
    pub fn new(stream: Stream, prefix: Bytes, outbox: Arc<Outbox>, config: SocketConfig) -> Self {
        let (rd, wr) = crate::websocket::stream::split(stream);
        Self {
            reader: FrameReader::new(rd, prefix, config.max_message).with_deflate(config.deflate),
            writer: Writer::new(wr, config.binary, config.write_timeout, config.deflate),
            clocks: Clocks::new(config.heartbeat, config.pong_timeout, Instant::now()),
            outbox,
            coalesce: Coalesce::new(config.write_delay, config.busy_write_delay),
            held: None,
        }
    }

    /// The client's next message. Meanwhile writes what is queued and keeps
    /// the clocks. Once the connection is closing and its close frame is out,
    /// returns `Err(ReadError::Closed)`.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        if let Some(m) = self.held.take() {
            return *m;
        }
        if self.coalesce.may_hold() {
            // The reply to the request just handled: the client waits on it.
            self.flush(false).await;
        }
        crate::transport::next(self).await
    }

    /// Keeps writing and the clocks while the session handles a request
    /// ([`crate::transport::tend`]).
    pub async fn tend<T>(&mut self, busy: impl std::future::Future<Output = T>) -> T {
        crate::transport::tend(self, busy).await
    }

    /// Waits for the next thing to do. Cancel-safe: the reader is, and a
    /// dropped wait loses no wake-up.
    async fn wait(&mut self, read: bool) -> Wake {
        let wake_at = self.coalesce.wake_at(self.clocks.wake_at());
        tokio::select! {
            m = self.reader.next(), if read => Wake::Read(m),
            _ = self.outbox.ready() => Wake::Write,
            _ = tokio::time::sleep_until(wake_at) => Wake::Alarm,
        }
    }

    /// Does what `wake` asks; returns a message the client sent.
    async fn handle(&mut self, wake: Wake) -> Option<Result<Incoming, ReadError>> {
        match wake {
            Wake::Read(m) => {
                self.clocks.heard();
                return Some(m);
            }
            Wake::Write if self.outbox.closing().is_some() || self.coalesce.queued(Instant::now()) => {
                gather().await;
                self.flush(false).await
            }
            Wake::Write => {}
            Wake::Alarm if self.coalesce.is_due(Instant::now()) => self.flush(false).await,
            Wake::Alarm => match self.clocks.fire(Instant::now()) {
                Some(Alarm::Ping) => self.flush(true).await,
                Some(Alarm::Close(c)) => self.outbox.close(c),
                Some(Alarm::Renew) => return Some(Ok(Incoming::Renew)),
                None => {}
            },
        }
        None
    }

    /// Writes what is queued. Boxed, in its own statement: an idle
    /// connection's task then holds no write state between writes.
    async fn flush(&mut self, ping: bool) {
        let flush = Box::pin(self.writer.flush(&self.outbox, ping));
        let frames = flush.await;
        self.coalesce.wrote(frames, Instant::now());
    }

    /// Ends the connection: writes what is left and the close frame, then
    /// reads until the client's close or EOF (briefly) so the close frame is
    /// not lost to a reset. Returns the close code.
    pub async fn finish(&mut self, close: Close) -> u16 {
        // First close wins: a client that just vanished gets no frame.
        self.outbox.close(close);
        self.writer.flush(&self.outbox, false).await;
        let reader = &mut self.reader;
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            loop {
                match reader.next().await {
                    Ok(Incoming::Close(_)) | Err(ReadError::Closed) => return,
                    Err(ReadError::Protocol(_)) => return reader.discard_until_eof().await,
                    Ok(_) => {}
                }
            }
        })
        .await;
        self.outbox.closing().map_or(proto::client::close::ABNORMAL, |c| c.code)
    }
}

impl crate::transport::Tend for Socket {
    type Wake = Wake;
    fn wait(&mut self, read: bool) -> impl std::future::Future<Output = Wake> + Send {
        Socket::wait(self, read)
    }
    fn handle(&mut self, wake: Wake) -> impl std::future::Future<Output = Option<Result<Incoming, ReadError>>> + Send {
        Socket::handle(self, wake)
    }
    fn held(&mut self) -> &mut crate::transport::Held {
        &mut self.held
    }
    fn clocks(&mut self) -> &mut Clocks {
        &mut self.clocks
    }
    fn finished(&self) -> bool {
        self.writer.is_done()
    }
    fn has_orders(&self) -> bool {
        self.outbox.has_orders()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::outbox::Out;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    const BUSY: Duration = Duration::from_secs(2);

    /// A socket served on loopback with `--busy-write-delay` [`BUSY`]: its
    /// outbox and the client's end.
    async fn served() -> (Arc<Outbox>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let outbox = Arc::new(Outbox::new(1 << 20));
        let config = SocketConfig {
            binary: false,
            max_message: 1 << 20,
            heartbeat: Duration::from_secs(60),
            pong_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            write_delay: Duration::ZERO,
            busy_write_delay: BUSY,
            deflate: false,
        };
        let mut socket = Socket::new(Stream::Plain(server), Bytes::new(), outbox.clone(), config);
        tokio::spawn(async move { while socket.next().await.is_ok() {} });
        (outbox, client)
    }

    /// Reads `frames` one-byte text frames; returns how long that took.
    async fn read_frames(client: &mut TcpStream, frames: usize) -> Duration {
        let started = Instant::now();
        let mut buf = vec![0; frames * 3];
        client.read_exact(&mut buf).await.unwrap();
        assert!(buf.chunks(3).all(|f| f == [0x81, 1, b'm']), "{buf:?}");
        started.elapsed()
    }

    #[tokio::test]
    async fn a_busy_connection_holds_its_next_frames_and_a_quiet_one_does_not() {
        let (outbox, mut client) = served().await;
        outbox.push(Out::Data(Bytes::from_static(b"m")));
        assert!(read_frames(&mut client, 1).await < BUSY / 2, "a quiet connection writes at once");

        // Two writes of many frames in a row: the next frames wait for
        // company. One alone does not make a connection busy.
        let full = crate::delivery::coalesce::BUSY_FRAMES;
        for _ in 0..2 {
            for _ in 0..full {
                outbox.push_quiet(Out::Data(Bytes::from_static(b"m")));
            }
            outbox.wake();
            let took = read_frames(&mut client, full).await;
            assert!(took < BUSY / 2, "not held after one full write or none: {took:?}");
        }
        let started = Instant::now();
        outbox.push(Out::Data(Bytes::from_static(b"m")));
        outbox.push(Out::Data(Bytes::from_static(b"m")));
        read_frames(&mut client, 2).await;
        assert!(started.elapsed() >= BUSY - Duration::from_millis(50), "held: {:?}", started.elapsed());

        // That write carried two: the busy spell is over.
        outbox.push(Out::Data(Bytes::from_static(b"m")));
        assert!(read_frames(&mut client, 1).await < BUSY / 2, "quiet again");
    }
}
