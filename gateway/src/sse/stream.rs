//! One SSE connection's transport: the outbox written as `text/event-stream`
//! events into the current response body, the client's ops arriving from
//! its POSTs, and the clocks.
//!
//! Unlike a WebSocket, the stream outlives its HTTP response: when the
//! response ends (a proxy cut it, EventSource reconnects), the connection
//! stays, detached, for one heartbeat plus the pong timeout. A `GET /sse`
//! with `Last-Event-ID: <conn>:<n>` on this gateway attaches a new response
//! ([`Attach`]): the events after `n` still in the replay ring are written
//! again and the stream goes on. Written events stay in the ring (at most
//! [`REPLAY_BYTES`]) until newer ones push them out. While detached
//! nothing is taken from the outbox, so a client that stays away fills it
//! and is closed with 4000 as any slow consumer. Each event is
//! `id: <conn>:<n>` and `data: <the JSON event>`; heartbeats are comment
//! lines, and a close is `event: close` with `{"code","reason"}`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use proto::client::close::Close;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::Limits;
use crate::delivery::coalesce::Coalesce;
use crate::delivery::outbox::{gather, Out, Outbox};
use crate::sse::registry::Registry;
use crate::websocket::clock::{Alarm, Clocks};
use crate::websocket::reader::{Incoming, ReadError};

/// Ops waiting for the session, per connection.
pub const OPS_QUEUE: usize = 64;

/// Written events kept for a resume, per connection, in bytes. A resume
/// needs only what was in flight when the response broke (events are not
/// taken from the outbox while detached); one from further back gets a new
/// connection, which recovers from the rooms' history instead.
pub const REPLAY_BYTES: usize = 64 << 10;

/// A response body to write to, and what its client has already seen.
pub struct Attach {
    pub body: mpsc::Sender<Bytes>,
    /// The `<n>` of its `Last-Event-ID`.
    pub last: u64,
    /// The body back when events after `last` are gone (it gets a new
    /// connection instead), or `None` once attached.
    pub answer: oneshot::Sender<Option<mpsc::Sender<Bytes>>>,
}

/// The SSE side of a connection.
pub struct SseStream {
    /// `<conn>:` once the connection has an id.
    id_prefix: Bytes,
    /// The response being written; `None` while detached.
    body: Option<mpsc::Sender<Bytes>>,
    ops: mpsc::Receiver<Bytes>,
    attach: mpsc::Receiver<Attach>,
    /// Their senders, until the connection is registered.
    inlets: Option<Inlets>,
    registry: Arc<Registry>,
    /// The registered id, to leave the registry with.
    conn: Option<Arc<str>>,
    pub clocks: Clocks,
    outbox: Arc<Outbox>,
    /// When queued events are written.
    coalesce: Coalesce,
    write_timeout: Duration,
    /// The `<n>` of the last event written.
    last_id: u64,
    /// Written events, oldest first, for a resume.
    replay: VecDeque<(u64, Bytes)>,
    replay_bytes: usize,
    replay_limit: usize,
    /// Sent first on an attached response: the `hello` with `resumed: true`.
    resumed_hello: Bytes,
    held: Option<Box<Result<Incoming, ReadError>>>,
    /// The close event is out (or the connection is gone).
    done: bool,
}

/// The ends of an SSE connection's channels that POSTs and resumes use.
pub struct Inlets {
    pub ops: mpsc::Sender<Bytes>,
    pub attach: mpsc::Sender<Attach>,
}

pub enum Wake {
    Op(Option<Bytes>),
    Attach(Option<Attach>),
    Write,
    Alarm,
    Detached,
}

impl SseStream {
    /// A stream writing to `body`.
    pub fn new(body: mpsc::Sender<Bytes>, outbox: Arc<Outbox>, registry: Arc<Registry>, limits: &Limits) -> Self {
        let (ops_tx, ops) = mpsc::channel(OPS_QUEUE);
        let (attach_tx, attach) = mpsc::channel(1);
        Self {
            id_prefix: Bytes::new(),
            body: Some(body),
            ops,
            attach,
            inlets: Some(Inlets { ops: ops_tx, attach: attach_tx }),
            registry,
            conn: None,
            clocks: Clocks::new(limits.heartbeat, limits.pong_timeout, Instant::now()),
            outbox,
            coalesce: Coalesce::new(limits.write_delay, limits.busy_write_delay),
            write_timeout: limits.write_timeout,
            last_id: 0,
            replay: VecDeque::new(),
            replay_bytes: 0,
            replay_limit: REPLAY_BYTES.min(limits.queue_bytes),
            resumed_hello: Bytes::new(),
            held: None,
            done: false,
        }
    }

    /// Registers the authenticated connection `conn` of `user`, whose POSTs
    /// present `secret`; `resumed_hello` starts every later response.
    pub fn opened(&mut self, conn: Arc<str>, user: Arc<str>, secret: String, resumed_hello: Bytes) {
        self.id_prefix = Bytes::from(format!("{conn}:"));
        self.resumed_hello = resumed_hello;
        if let Some(inlets) = self.inlets.take() {
            self.registry.add(conn.clone(), user, secret, inlets);
        }
        self.conn = Some(conn);
    }

    /// The client's next op. Meanwhile writes what is queued and keeps the
    /// clocks; `Err(Closed)` once the close is out.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        if self.coalesce.may_hold() && self.held.is_none() {
            // The reply to the request just handled: the client waits on it.
            self.flush().await;
        }
        crate::transport::next(self).await
    }

    /// Keeps writing and the clocks while the session handles a request
    /// ([`crate::transport::tend`]).
    pub async fn tend<T>(&mut self, busy: impl std::future::Future<Output = T>) -> T {
        crate::transport::tend(self, busy).await
    }

    /// Cancel-safe: every branch is.
    async fn wait(&mut self, read: bool) -> Wake {
        let wake_at = self.coalesce.wake_at(self.clocks.wake_at());
        let attached = self.body.clone();
        tokio::select! {
            op = self.ops.recv(), if read => Wake::Op(op),
            a = self.attach.recv() => Wake::Attach(a),
            _ = self.outbox.ready(), if attached.is_some() || self.outbox.closing().is_some() => Wake::Write,
            _ = async { attached.as_ref().unwrap().closed().await }, if attached.is_some() => Wake::Detached,
            _ = tokio::time::sleep_until(wake_at) => Wake::Alarm,
        }
    }

    async fn handle(&mut self, wake: Wake) -> Option<Result<Incoming, ReadError>> {
        match wake {
            Wake::Op(Some(op)) => return Some(Ok(Incoming::Text(op))),
            // The registry let go: the connection is being replaced.
            Wake::Op(None) | Wake::Attach(None) => self.outbox.close(Close::GONE),
            Wake::Attach(Some(a)) => self.attach(a).await,
            Wake::Write if self.outbox.closing().is_some() || self.coalesce.queued(Instant::now()) => {
                gather().await;
                self.flush().await
            }
            Wake::Write => {}
            Wake::Detached => self.body = None,
            Wake::Alarm if self.coalesce.is_due(Instant::now()) => self.flush().await,
            Wake::Alarm => match self.clocks.fire(Instant::now()) {
                // A heartbeat the response takes proves the client still there.
                Some(Alarm::Ping) if self.send(Bytes::from_static(b": ping\n\n")).await => self.clocks.heard(),
                Some(Alarm::Close(c)) => self.outbox.close(c),
                Some(Alarm::Renew) => return Some(Ok(Incoming::Renew)),
                Some(Alarm::Ping) | None => {}
            },
        }
        None
    }

    /// Takes up a new response: the hello, then the events after `last`.
    async fn attach(&mut self, a: Attach) {
        let first = self.replay.front().map_or(self.last_id + 1, |(n, _)| *n);
        if a.last > self.last_id || a.last + 1 < first {
            let _ = a.answer.send(Some(a.body));
            return;
        }
        let _ = a.answer.send(None);
        self.body = Some(a.body);
        let mut out = BytesMut::new();
        event(&mut out, None, None, &self.resumed_hello);
        for (_, e) in self.replay.iter().filter(|(n, _)| *n > a.last) {
            out.put_slice(e);
        }
        if self.send(out.freeze()).await {
            self.clocks.heard();
        }
    }

    /// Writes what the outbox holds, and the close after it.
    async fn flush(&mut self) {
        if self.body.is_none() && self.outbox.closing().is_none() {
            // Detached: the events wait in the outbox for a response (a held
            // write is let go, or its alarm would keep firing).
            self.coalesce.wrote(0, Instant::now());
            return;
        }
        let batch = self.outbox.take();
        self.coalesce.wrote(batch.frames.len(), Instant::now());
        let mut out = BytesMut::new();
        for frame in batch.frames {
            let Out::Data(data) = frame else { continue };
            self.last_id += 1;
            let start = out.len();
            event(&mut out, Some((&self.id_prefix, self.last_id)), None, &data);
            let written = Bytes::copy_from_slice(&out[start..]);
            let before = self.replay_bytes;
            self.replay_bytes += written.len();
            self.replay.push_back((self.last_id, written));
            while self.replay_bytes > self.replay_limit {
                let Some((_, old)) = self.replay.pop_front() else { break };
                self.replay_bytes -= old.len();
            }
            crate::metrics::sse_replay_bytes(self.replay_bytes as f64 - before as f64);
        }
        if let Some(close) = batch.closing {
            let data = format!(r#"{{"code":{},"reason":"{}"}}"#, close.code, close.reason);
            event(&mut out, None, Some("close"), data.as_bytes());
            self.done = true;
        }
        if !out.is_empty() && self.body.is_some() {
            self.send(out.freeze()).await;
        }
        if self.done {
            self.body = None;
        }
    }

    /// Hands `bytes` to the response; false (and detached) when it is gone,
    /// closed with 4000 when it does not take them within the write timeout.
    async fn send(&mut self, bytes: Bytes) -> bool {
        let Some(body) = &self.body else { return false };
        match tokio::time::timeout(self.write_timeout, body.send(bytes)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => {
                self.body = None;
                false
            }
            Err(_) => {
                crate::metrics::dropped("write_timeout");
                self.outbox.close(Close::SLOW_CONSUMER);
                false
            }
        }
    }

    /// Ends the stream: what is queued and the close event, if a response
    /// is there to take them. Returns the close code.
    pub async fn finish(&mut self, close: Close) -> u16 {
        if let Some(conn) = self.conn.take() {
            self.registry.remove(&conn);
        }
        self.outbox.close(close);
        if !self.done {
            self.flush().await;
        }
        self.body = None;
        self.outbox.closing().map_or(proto::client::close::ABNORMAL, |c| c.code)
    }
}

impl crate::transport::Tend for SseStream {
    type Wake = Wake;
    fn wait(&mut self, read: bool) -> impl std::future::Future<Output = Wake> + Send {
        SseStream::wait(self, read)
    }
    fn handle(&mut self, wake: Wake) -> impl std::future::Future<Output = Option<Result<Incoming, ReadError>>> + Send {
        SseStream::handle(self, wake)
    }
    fn held(&mut self) -> &mut crate::transport::Held {
        &mut self.held
    }
    fn clocks(&mut self) -> &mut Clocks {
        &mut self.clocks
    }
    fn finished(&self) -> bool {
        self.done
    }
    fn has_orders(&self) -> bool {
        self.outbox.has_orders()
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        crate::metrics::sse_replay_bytes(-(self.replay_bytes as f64));
    }
}

/// Appends one event: `id:` (with the prefix), `event:`, and `data` as one
/// `data:` line (JSON events hold no newline).
fn event(out: &mut BytesMut, id: Option<(&[u8], u64)>, name: Option<&str>, data: &[u8]) {
    if let Some((prefix, n)) = id {
        out.put_slice(b"id: ");
        out.put_slice(prefix);
        out.put_slice(n.to_string().as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(name) = name {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(limit: usize) -> (SseStream, mpsc::Receiver<Bytes>, Arc<Outbox>) {
        use clap::Parser;
        let (tx, rx) = mpsc::channel(8);
        let outbox = Arc::new(Outbox::new(1 << 20));
        let mut limits = crate::config::Config::try_parse_from(["gateway"]).unwrap().limits;
        limits.queue_bytes = limit;
        let mut s = SseStream::new(tx, outbox.clone(), Arc::default(), &limits);
        let hello = Bytes::from_static(br#"{"type":"hello","resumed":true}"#);
        s.opened("gw-7".into(), "u".into(), "secret".into(), hello);
        (s, rx, outbox)
    }

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[tokio::test]
    async fn events_carry_ids_and_a_close_ends_the_stream() {
        let (mut s, mut rx, outbox) = stream(1 << 20);
        outbox.push(Out::Data(Bytes::from_static(br#"{"type":"a"}"#)));
        outbox.push(Out::Data(Bytes::from_static(br#"{"type":"b"}"#)));
        s.flush().await;
        let got = rx.recv().await.unwrap();
        assert_eq!(text(&got), "id: gw-7:1\ndata: {\"type\":\"a\"}\n\nid: gw-7:2\ndata: {\"type\":\"b\"}\n\n");
        assert_eq!(s.finish(Close::new(4500, "unauthorized")).await, 4500);
        let got = rx.recv().await.unwrap();
        assert_eq!(text(&got), "event: close\ndata: {\"code\":4500,\"reason\":\"unauthorized\"}\n\n");
        assert!(rx.recv().await.is_none(), "the response ends");
    }

    #[tokio::test]
    async fn a_new_response_gets_the_events_after_its_last_id_or_is_handed_back() {
        let (mut s, rx, outbox) = stream(60);
        for e in ["1", "2", "3"] {
            outbox.push(Out::Data(Bytes::from(format!(r#"{{"n":{e}}}"#))));
        }
        s.flush().await;
        drop(rx);
        // The ring holds the last two (26 bytes each).
        assert_eq!(s.replay.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![2, 3]);
        let table = [(0, false), (1, true), (2, true), (3, true), (4, false)];
        for (last, resumes) in table {
            let (tx, mut rx) = mpsc::channel(8);
            let (answer, answered) = oneshot::channel();
            s.attach(Attach { body: tx, last, answer }).await;
            let handed_back = answered.await.unwrap();
            assert_eq!(handed_back.is_none(), resumes, "Last-Event-ID gw-7:{last}");
            if resumes {
                let got = rx.recv().await.unwrap();
                let want: String = (last + 1..=3).map(|n| format!("id: gw-7:{n}\ndata: {{\"n\":{n}}}\n\n")).collect();
                assert_eq!(text(&got), format!("data: {{\"type\":\"hello\",\"resumed\":true}}\n\n{want}"));
            }
        }
    }
}
