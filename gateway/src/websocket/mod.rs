//! The gateway's WebSocket layer (RFC 6455), kept apart from the protocol
//! above it; what it changes from fastwebsockets is in `README.md` here.
//!
//! [`handshake`] upgrades a request (fastwebsockets checks the key and
//! version, the rest is checked here), [`reader`] reads frames into
//! messages, [`writer`] writes batches, [`socket`] drives both with the
//! heartbeat [`clock`]s in one task over a [`stream`] (plain TCP or TLS),
//! [`deflate`] is permessage-deflate for both (with `--compression`), and
//! [`echo`] is the conformance test mode built from the same parts.

pub mod clock;
pub mod deflate;
pub mod echo;
pub mod handshake;
pub mod reader;
pub mod socket;
pub mod stream;
pub mod writer;
