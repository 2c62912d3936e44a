//! The SSE connections this gateway holds: where a POST's ops go, and where
//! a resuming `GET /sse` attaches.
//!
//! A POST must present the connection's `post_secret` (compared in constant
//! time); ids are guessable, secrets are not. A resume must come from the
//! same user (its token is verified first), so knowing a connection id is
//! never enough to read its stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::sse::stream::{Attach, Inlets};

/// What a POST's ops met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// Queued for the connection (202).
    Taken,
    /// The secret is not this connection's (403).
    WrongSecret,
    /// No such connection here (404).
    Unknown,
    /// Its queue of ops is full (429).
    Full,
}

impl Posted {
    pub fn status(self) -> u16 {
        match self {
            Posted::Taken => 202,
            Posted::WrongSecret => 403,
            Posted::Unknown => 404,
            Posted::Full => 429,
        }
    }

    pub fn of_status(status: u32) -> Self {
        match status {
            202 => Posted::Taken,
            403 => Posted::WrongSecret,
            429 => Posted::Full,
            _ => Posted::Unknown,
        }
    }
}

struct Entry {
    user: Arc<str>,
    secret: String,
    inlets: Inlets,
}

/// SSE connections by id.
#[derive(Default)]
pub struct Registry {
    conns: Mutex<HashMap<Arc<str>, Entry>>,
}

impl Registry {
    pub fn add(&self, conn: Arc<str>, user: Arc<str>, secret: String, inlets: Inlets) {
        let mut conns = self.conns.lock().unwrap();
        conns.insert(conn, Entry { user, secret, inlets });
        crate::metrics::sse_connections(conns.len());
    }

    pub fn remove(&self, conn: &str) {
        let mut conns = self.conns.lock().unwrap();
        conns.remove(conn);
        crate::metrics::sse_connections(conns.len());
    }

    /// Queues `ops` for `conn` if `secret` is its own; all or none.
    pub fn post(&self, conn: &str, secret: &str, ops: Vec<Bytes>) -> Posted {
        let conns = self.conns.lock().unwrap();
        let Some(entry) = conns.get(conn) else { return Posted::Unknown };
        if !shell::grpc::constant_time_eq(secret.as_bytes(), entry.secret.as_bytes()) {
            return Posted::WrongSecret;
        }
        if entry.inlets.ops.capacity() < ops.len() {
            return Posted::Full;
        }
        for op in ops {
            // Room was checked under the lock, and only POSTs send.
            let _ = entry.inlets.ops.try_send(op);
        }
        Posted::Taken
    }

    /// Where `user`'s connection `conn` takes a new response, if it is here.
    pub fn attach(&self, conn: &str, user: &str) -> Option<mpsc::Sender<Attach>> {
        let conns = self.conns.lock().unwrap();
        conns.get(conn).filter(|e| &*e.user == user).map(|e| e.inlets.attach.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_need_the_secret_and_room_for_all_their_ops() {
        let r = Registry::default();
        let (ops, mut rx) = mpsc::channel(2);
        let (attach, _a) = mpsc::channel(1);
        r.add("gw-1".into(), "alice".into(), "s3cret".into(), Inlets { ops, attach });
        let op = || Bytes::from_static(br#"{"op":"ping"}"#);
        let table = [
            ("gw-2", "s3cret", 1, Posted::Unknown),
            ("gw-1", "guess", 1, Posted::WrongSecret),
            ("gw-1", "", 1, Posted::WrongSecret),
            ("gw-1", "s3cret", 3, Posted::Full),
            ("gw-1", "s3cret", 2, Posted::Taken),
            ("gw-1", "s3cret", 1, Posted::Full),
        ];
        for (conn, secret, n, want) in table {
            assert_eq!(r.post(conn, secret, (0..n).map(|_| op()).collect()), want, "{conn} {secret} {n}");
        }
        assert_eq!(rx.try_recv().unwrap(), op());
        assert!(r.attach("gw-1", "mallory").is_none(), "another user's connection");
        assert!(r.attach("gw-1", "alice").is_some());
        r.remove("gw-1");
        assert_eq!(r.post("gw-1", "s3cret", vec![op()]), Posted::Unknown);
    }
}
