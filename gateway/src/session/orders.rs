//! Orders from the application's backend for one connection: the server
//! API's `subscribe` and `unsubscribe`.
//!
//! A session belongs to its connection's task, which handles one request at
//! a time; an order is queued in the connection's outbox, wakes that task,
//! and is carried out there between requests ([`super::Session::obey`]), so
//! it never races the client's own joins and leaves. Each order answers on
//! its `done` channel; a connection that closes first drops the order, and
//! the gateway counts it as failed.

use tokio::sync::oneshot;

use super::ops::Failure;

/// What an order reports: whether it changed the connection (a subscribe
/// of a member, or an unsubscribe of a non-member, changes nothing).
pub type Outcome = Result<bool, Failure>;

/// One order for one connection.
#[derive(Debug)]
pub struct Order {
    pub kind: OrderKind,
    pub done: oneshot::Sender<Outcome>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderKind {
    /// Join the room, announced to the client as `subscribed`.
    Subscribe(String),
    /// Leave the room, announced as `removed` with reason `server`.
    Unsubscribe(String),
}
