//! Load generator and WebSocket test client for Switchboard.
//!
//! [`scenario`] holds the load scenarios the `loadtest` binary runs, built on
//! lean connections ([`conn`]) and measured by [`stats`] (and, for the
//! server's own cost, [`procfs`]) into a [`report`].
//! [`client`] is the convenient client the integration tests use, and
//! [`chat`] the chat load the cluster tests run; both check correctness with
//! [`check`].

pub mod chat;
pub mod check;
pub mod client;
pub mod conn;
pub mod http;
pub mod procfs;
pub mod progress;
pub mod report;
pub mod scan;
pub mod scenario;
pub mod sse;
pub mod stats;
pub mod token;
pub mod workers;
