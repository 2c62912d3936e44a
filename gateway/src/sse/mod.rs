//! Server-sent events: the transport for clients whose network breaks
//! WebSockets, without sticky sessions.
//!
//! `GET /sse` ([`endpoint`]) opens a `text/event-stream` carrying the same
//! JSON events as the WebSocket; the session behind it is the WebSocket's,
//! with an [`stream::SseStream`] as its transport. The client's ops come by
//! `POST /sse/<conn>` with the `post_secret` of its `hello`, to any gateway:
//! one that does not hold the connection forwards them over the bus to the
//! one that does ([`forward`]); the [`registry`] says where they go.

pub mod endpoint;
pub mod forward;
pub mod registry;
pub mod stream;
