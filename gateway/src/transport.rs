//! The client's end of a connection: a WebSocket, or an SSE stream whose
//! ops arrive by POST. The session drives either the same way: wait for
//! the client's next message while writing and keeping the clocks
//! ([`Transport::next`]), keep writing while a request is handled
//! ([`Transport::tend`]), and end with a close code ([`Transport::finish`]).

use std::sync::Arc;

use bytes::Bytes;
use proto::client::close::Close;

use crate::sse::stream::SseStream;
use crate::websocket::clock::Clocks;
use crate::websocket::reader::{Incoming, ReadError};
use crate::websocket::socket::Socket;
use tokio::time::Instant;

// The WebSocket variant is the common one and stays inline: boxing it
// would cost every connection an allocation and a pointer chase per wake.
#[allow(clippy::large_enum_variant)]
pub enum Transport {
    WebSocket(Socket),
    /// Boxed: a WebSocket connection pays nothing for SSE's state.
    Sse(Box<SseStream>),
}

// SSE's futures are boxed: a future of these methods is as large as its
// largest arm, and every WebSocket connection's task holds one (measured:
// unboxed, an idle WebSocket connection cost 0.4 KiB more).
impl Transport {
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        match self {
            Transport::WebSocket(s) => s.next().await,
            Transport::Sse(s) => Box::pin(s.next()).await,
        }
    }

    pub async fn tend<T>(&mut self, busy: impl std::future::Future<Output = T>) -> T {
        match self {
            Transport::WebSocket(s) => s.tend(busy).await,
            Transport::Sse(s) => Box::pin(s.tend(busy)).await,
        }
    }

    pub async fn finish(&mut self, close: Close) -> u16 {
        match self {
            Transport::WebSocket(s) => s.finish(close).await,
            Transport::Sse(s) => Box::pin(s.finish(close)).await,
        }
    }

    pub fn clocks(&mut self) -> &mut Clocks {
        match self {
            Transport::WebSocket(s) => &mut s.clocks,
            Transport::Sse(s) => &mut s.clocks,
        }
    }

    /// The connection is authenticated as `conn` of `user`. SSE registers
    /// it for POSTs and resumes and returns the `post_secret` for its hello;
    /// `resumed_hello` encodes the hello a resumed stream starts with.
    pub fn opened(
        &mut self,
        conn: &Arc<str>,
        user: &Arc<str>,
        resumed_hello: impl FnOnce(&str) -> Bytes,
    ) -> Option<String> {
        let Transport::Sse(s) = self else { return None };
        let secret: String = (0..16).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        s.opened(conn.clone(), user.clone(), secret.clone(), resumed_hello(&secret));
        Some(secret)
    }
}

/// A message read ahead while a request was being handled.
pub type Held = Option<Box<Result<Incoming, ReadError>>>;

/// What a transport's [`tend`] is made of.
pub trait Tend {
    type Wake;
    /// The next thing to do (cancel-safe); reads only with `read`.
    fn wait(&mut self, read: bool) -> impl std::future::Future<Output = Self::Wake> + Send;
    /// Does it; returns a message the client sent.
    fn handle(
        &mut self,
        wake: Self::Wake,
    ) -> impl std::future::Future<Output = Option<Result<Incoming, ReadError>>> + Send;
    fn held(&mut self) -> &mut Held;
    fn clocks(&mut self) -> &mut Clocks;
    /// Nothing more can be written.
    fn finished(&self) -> bool;
    /// The backend's orders wait in the outbox.
    fn has_orders(&self) -> bool;
}

/// The client's next message; meanwhile writes what is queued and keeps
/// the clocks. `Err(Closed)` once nothing more can be written.
pub async fn next<X: Tend>(x: &mut X) -> Result<Incoming, ReadError> {
    if let Some(m) = x.held().take() {
        return *m;
    }
    loop {
        if x.finished() {
            return Err(ReadError::Closed);
        }
        // Also those queued while a request was handled.
        if x.has_orders() {
            return Ok(Incoming::Orders);
        }
        let wake = x.wait(true).await;
        if let Some(m) = x.handle(wake).await {
            return m;
        }
    }
}

/// Keeps writing and the clocks while the session handles a request, until
/// `busy` completes. Reads at most one message ahead and holds it for
/// `next`: requests stay strictly serial, but whatever arrives from the
/// client proves it alive (no heartbeat close while a request waits on a
/// slow owner).
pub async fn tend<X: Tend, T>(x: &mut X, busy: impl std::future::Future<Output = T>) -> T {
    let mut busy = std::pin::pin!(busy);
    loop {
        let (read, finished) = (x.held().is_none(), x.finished());
        tokio::select! {
            biased;
            done = &mut busy => return done,
            // `wait` is cancel-safe; `handle` runs to completion here,
            // with `busy` simply not polled meanwhile.
            wake = x.wait(read), if !finished => {
                if let Some(m) = x.handle(wake).await {
                    if x.held().is_some() {
                        // Only a renewal comes while a message is held
                        // (reads are off): due again in a moment.
                        x.clocks().renew_at(Some(Instant::now() + std::time::Duration::from_secs(1)));
                    } else {
                        *x.held() = Some(Box::new(m));
                    }
                }
            }
        }
    }
}
