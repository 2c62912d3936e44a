//! A room member under load: joins, reads, and keeps the books.
//!
//! Every frame a member reads goes through [`Member::handle`]: messages
//! advance its continuity and its latency histogram, replies release its
//! publisher's window. Publishing runs in a separate task through the
//! connection's [`Sender`], paced by [`publish`].

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::{watch, Semaphore};

use crate::check::Continuity;
use crate::client::ClientError;
use crate::conn::{Conn, Received, Sender};
use crate::scan::{payload, Frame};
use crate::stats::{histogram, Stats};

/// Request id used for joins; publishes use ids from 1000 on.
const JOIN_ID: u64 = 1;

/// One member's connection and books.
pub struct Member {
    pub conn: Conn,
    pub continuity: Continuity,
    /// Publish → delivery latency of what this member received (µs).
    pub latency: Histogram<u64>,
    /// Released by each publish reply: the publisher's window.
    pub window: Arc<Semaphore>,
    /// Publish replies with `ok: false`, by code.
    pub refused: u64,
}

impl Member {
    pub fn new(conn: Conn) -> Self {
        Self {
            conn,
            continuity: Continuity::default(),
            latency: histogram(),
            window: Arc::new(Semaphore::new(0)),
            refused: 0,
        }
    }

    /// Joins `room`, resuming from where this member was, and records the
    /// starting position. Frames that arrive meanwhile are handled too.
    pub async fn join(&mut self, room: &str, stats: &Stats) -> Result<(), ClientError> {
        let mut op = serde_json::json!({"op": "join", "room": room, "id": JOIN_ID});
        if let Some((epoch, seq)) = self.continuity.position(room) {
            op["since"] = serde_json::json!({"epoch": epoch, "seq": seq});
        }
        self.conn.send(op.to_string()).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let received =
                tokio::time::timeout_at(deadline, self.conn.recv()).await.map_err(|_| ClientError::Timeout)?;
            let text = match received {
                Received::Text(t) => t,
                Received::Closed(code) => return Err(ClientError::Closed(code)),
            };
            let Some(f) = Frame::parse(&text) else { continue };
            if f.ty == "reply" && f.id == Some(JOIN_ID) {
                if f.ok != Some(true) {
                    return Err(ClientError::Unexpected(String::from_utf8_lossy(&text).into_owned()));
                }
                self.continuity.join_at(room, f.epoch.unwrap_or_default(), f.seq.unwrap_or_default(), f.recovered);
                return Ok(());
            }
            self.handle(&f, stats);
        }
    }

    /// Accounts for one frame.
    pub fn handle(&mut self, f: &Frame, stats: &Stats) {
        match f.ty {
            "message" => {
                let room = f.room.unwrap_or_default();
                self.continuity.message(room, f.epoch.unwrap_or_default(), f.seq.unwrap_or_default());
                stats.delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(t) = f.data.as_ref().and_then(|d| d.t) {
                    let _ = self.latency.record((stats.now_ns().saturating_sub(t) / 1000).max(1));
                }
            }
            "resync" => {
                self.continuity.resync(f.room.unwrap_or_default(), f.epoch.unwrap_or_default(), f.seq.unwrap_or(0))
            }
            "reply" if f.id.is_some_and(|id| id >= 1000) => {
                if f.ok == Some(true) {
                    stats.acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    self.refused += 1;
                    stats.fail(format!("publish {}", f.error.as_ref().map_or("refused", |e| e.code)));
                }
                self.window.add_permits(1);
            }
            "error" => stats.fail(format!("error {}", f.error.as_ref().map_or("?", |e| e.code))),
            _ => {}
        }
    }

    /// Reads until the connection closes; returns the close code.
    pub async fn read(&mut self, stats: &Stats) -> Option<u16> {
        loop {
            match self.conn.recv().await {
                Received::Text(t) => {
                    if let Some(f) = Frame::parse(&t) {
                        self.handle(&f, stats);
                    }
                }
                Received::Closed(code) => return code,
            }
        }
    }

    /// Hands the books to the run's totals.
    pub fn settle(&self, stats: &Stats) {
        stats.merge_latency(&self.latency);
        for v in self.continuity.rooms.values() {
            stats.add_continuity(v);
        }
    }
}

/// How a publisher paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Messages per second (0: as fast as the window allows).
    pub rate: f64,
    /// Most unacknowledged publishes in flight.
    pub window: usize,
    /// Payload size in bytes.
    pub size: usize,
}

/// Publishes to `room` through `sender` until `stop`, as `name`. The
/// member reading this connection releases `window` on each reply.
pub async fn publish(
    sender: Sender,
    room: String,
    name: String,
    pace: Pace,
    window: Arc<Semaphore>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    window.add_permits(pace.window.max(1));
    let interval = (pace.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / pace.rate));
    // Publishers start at different points of their interval: started
    // together, a thousand of them would publish in bursts, and the run would
    // measure the bursts rather than the rate.
    let phase = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        (h.finish() % 10_000) as f64 / 10_000.0
    };
    let mut next = tokio::time::Instant::now() + interval.map_or(Duration::ZERO, |every| every.mul_f64(phase));
    let mut n = 0u64;
    loop {
        if *stop.borrow() {
            return;
        }
        if let Some(every) = interval {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.changed() => return,
            }
            next += every;
        }
        let permit = tokio::select! {
            p = window.acquire() => p,
            _ = stop.changed() => return,
        };
        match permit {
            Ok(p) => p.forget(),
            Err(_) => return,
        }
        n += 1;
        let data = payload(stats.now_ns(), &name, n, pace.size);
        // Keyed as the JS client keys every publish: a gateway may then send
        // it to a new owner again after a timeout without doubling it.
        let op = format!(
            r#"{{"op":"publish","room":"{room}","id":{},"data":{data},"idempotency_key":"{name}-{n}"}}"#,
            999 + n
        );
        if sender.send(op).await.is_err() {
            return;
        }
        stats.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Closes a member's connection politely so its reader ends.
pub async fn close(sender: &Sender) {
    let _ = sender.close(1000).await;
}
