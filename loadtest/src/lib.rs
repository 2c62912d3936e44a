//! Load generator and WebSocket test client for Switchboard.

pub mod client;
pub mod token;
