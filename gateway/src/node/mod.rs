//! The gateway as a process and a cluster member.
//!
//! [`server`] starts everything and drains on SIGTERM; [`backends`] is the
//! one place standalone and cluster mode differ (what the gateway talks to);
//! [`hub`] is what every connection shares; [`control`] is the admin gRPC
//! API; [`orders`] carries out the server API's orders for this gateway's
//! connections; [`drain`] closes clients in batches.

pub mod backends;
pub mod control;
pub mod drain;
pub mod hub;
pub mod orders;
pub mod server;
