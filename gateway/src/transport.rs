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
