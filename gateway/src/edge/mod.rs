//! The HTTP edge: the listener every client reaches first.
//!
//! [`http`] accepts connections and routes requests (`/ws` upgrades, the
//! demo page, 404), [`admission`] decides who may stay, and [`demo`] serves
//! the chat page, the JavaScript client and demo tokens.

pub mod admission;
pub mod demo;
pub mod http;
