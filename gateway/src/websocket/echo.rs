//! `--conformance-echo`: a WebSocket echo for RFC 6455 conformance suites.
//!
//! Conformance suites (Autobahn's cases, run by `kosoku`, see
//! `docs/conformance.md`) drive a server that echoes every message back. This
//! mode is that server, built from the gateway's real parts: the same
//! upgrade, the same frame [`reader`](crate::websocket::reader) (limits, UTF-8
//! validation, fragmentation, close-code checks), the same outbox, writer,
//! heartbeat and closing handshake. Only the layer above — authentication
//! and the Switchboard ops — is replaced by "send it back", so what the suite
//! judges is the code path real clients take.
//!
//! It is off by default; the only cost to the normal path is one flag check
//! per connection. It skips authentication, so it must never face real
//! clients.

use proto::client::close::{self, Close};

use crate::delivery::outbox::{Out, Outbox};
use crate::websocket::reader::{Incoming, ReadError};
use crate::websocket::socket::Socket;

/// Echoes messages (text as text, binary as binary) and answers pings until
/// the connection starts closing; the caller then finishes the close.
pub async fn serve(socket: &mut Socket, outbox: &Outbox) {
    loop {
        match socket.next().await {
            Ok(Incoming::Text(data)) => {
                outbox.push(Out::Echo { binary: false, data });
            }
            Ok(Incoming::Binary(data)) => {
                outbox.push(Out::Echo { binary: true, data });
            }
            Ok(Incoming::Ping(payload)) => {
                outbox.push(Out::Pong(payload));
            }
            Ok(Incoming::Pong | Incoming::Renew | Incoming::Orders) => {}
            // Same answers as a Switchboard session gives (session::serve).
            Ok(Incoming::Close(code)) => outbox.close(Close::new(code.unwrap_or(close::NORMAL), "bye")),
            Err(ReadError::Protocol(c)) => outbox.close(c),
            Err(ReadError::Closed) => outbox.close(Close::GONE),
        }
        if outbox.closing().is_some() {
            return;
        }
    }
}
