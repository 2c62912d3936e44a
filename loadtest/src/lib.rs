//! Load generator and WebSocket test client for Switchboard.

pub mod chat;
pub mod check;
pub mod client;
pub mod token;
