//! How events reach connections.
//!
//! Every connection has a bounded [`outbox`] that producers push encoded
//! frames into and never wait on. Room events come through one [`fanout`]
//! task per locally joined room ([`rooms`] keeps the registry); [`direct`]
//! messages through the gateway's one direct subject; watched users'
//! presence events through per-user [`topics`].

pub mod coalesce;
pub mod direct;
pub mod fanout;
pub mod outbox;
pub mod rooms;
pub mod topics;
