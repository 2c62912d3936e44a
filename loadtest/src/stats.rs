//! What a run measures: counters, latency histograms, a per-second
//! timeline, failures by kind, and continuity errors.
//!
//! Hot paths record into task-local histograms and atomic counters; the
//! histograms are merged once at the end, so measuring does not serialise
//! the load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::check::RoomView;

/// A latency histogram in microseconds, 1 µs to 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// One second of the timeline.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Tick {
    /// Seconds since the run started.
    pub at: f64,
    pub sent: u64,
    pub delivered: u64,
    pub connections: u64,
}

/// Shared measurements of one run.
pub struct Stats {
    started: Instant,
    /// Messages published (or handshakes attempted, for `connect`).
    pub sent: AtomicU64,
    /// Publishes acknowledged.
    pub acked: AtomicU64,
    /// Messages delivered to receivers.
    pub delivered: AtomicU64,
    /// Open connections now.
    pub connections: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    /// Named second histograms (handshake time, presence delay, …).
    extra: Mutex<BTreeMap<&'static str, Histogram<u64>>>,
    /// Failures by kind (close codes, errors).
    failures: Mutex<BTreeMap<String, u64>>,
    /// Continuity errors summed over members and rooms.
    continuity: Mutex<RoomView>,
    timeline: Mutex<Vec<Tick>>,
}

impl Stats {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
            extra: Mutex::new(BTreeMap::new()),
            failures: Mutex::new(BTreeMap::new()),
            continuity: Mutex::new(RoomView::default()),
            timeline: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the run started: the clock payloads carry.
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Adds a task's end-to-end latencies.
    pub fn merge_latency(&self, local: &Histogram<u64>) {
        let _ = self.latency.lock().unwrap().add(local);
    }

    /// Records one sample in a named histogram (microseconds).
    pub fn record(&self, name: &'static str, micros: u64) {
        let mut extra = self.extra.lock().unwrap();
        let h = extra.entry(name).or_insert_with(histogram);
        let _ = h.record(micros.max(1));
    }

    pub fn fail(&self, kind: impl Into<String>) {
        *self.failures.lock().unwrap().entry(kind.into()).or_insert(0) += 1;
    }

    /// Adds one member's continuity in one room.
    pub fn add_continuity(&self, v: &RoomView) {
        let mut c = self.continuity.lock().unwrap();
        c.received += v.received;
        c.lost += v.lost;
        c.duplicated += v.duplicated;
        c.silent_epoch_changes += v.silent_epoch_changes;
        c.resyncs += v.resyncs;
    }

    /// Appends one second to the timeline; returns it.
    pub fn tick(&self, last: &mut (u64, u64)) -> Tick {
        let (sent, delivered) = (self.sent.load(Ordering::Relaxed), self.delivered.load(Ordering::Relaxed));
        let tick = Tick {
            at: self.started.elapsed().as_secs_f64(),
            sent: sent - last.0,
            delivered: delivered - last.1,
            connections: self.connections.load(Ordering::Relaxed),
        };
        *last = (sent, delivered);
        self.timeline.lock().unwrap().push(tick);
        tick
    }

    pub fn latency(&self) -> Histogram<u64> {
        self.latency.lock().unwrap().clone()
    }

    pub fn extra(&self) -> BTreeMap<&'static str, Histogram<u64>> {
        self.extra.lock().unwrap().clone()
    }

    pub fn failures(&self) -> BTreeMap<String, u64> {
        self.failures.lock().unwrap().clone()
    }

    pub fn continuity(&self) -> RoomView {
        self.continuity.lock().unwrap().clone()
    }

    pub fn timeline(&self) -> Vec<Tick> {
        self.timeline.lock().unwrap().clone()
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}
