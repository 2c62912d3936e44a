//! The HTTP edge: the listener every client reaches first.
//!
//! [`http`] accepts connections and routes requests (`/ws` upgrades, the
//! demo page, 404), [`admission`] decides who may stay, [`client_ip`] and
//! [`proxy_protocol`] say who the client is behind a trusted load
//! balancer, and [`demo`] serves the chat page, the JavaScript client and
//! demo tokens.

pub mod admission;
pub mod client_ip;
pub mod demo;
pub mod http;
pub mod proxy_protocol;
