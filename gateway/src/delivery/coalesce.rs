//! When a connection writes what is queued: at once while it is quiet, a
//! little later while it is busy.
//!
//! A socket write costs about the same whatever it carries (on loopback
//! ~15 µs of kernel time: the send, the receiver's TCP processing and its
//! wake-up). Under a fanout the gateway cannot keep up with, every member's
//! writer gets one turn per round of all writers and writes what arrived
//! in the meantime; the writes are then about half the gateway's CPU per
//! delivery. A connection whose last two writes each carried
//! [`BUSY_FRAMES`] frames or more is in that state (or its client is slow);
//! its next frames, if they come within `busy_delay` of the last write,
//! wait `busy_delay` for company. Two writes, not one: a single big write
//! is also what a resume's catch-up or one burst looks like, and the live
//! message after it should not wait. The hold pays only when it is at
//! least as long as a round: with 5,000 members here a round took
//! ~150-250 ms; 50 ms changed nothing, and in one run 100, 150 and 200 ms
//! gave 57, 79 and 105 frames per write and 0.80, 0.65 and 0.50 µs of CPU
//! per delivery (docs/benchmarks.md). A connection that writes a frame or
//! two at a time (chat, replies) is never held, and the first small write
//! ends a busy spell. `--write-delay` instead holds every write.
//!
//! No I/O: the caller passes the time and does the waiting; a held write
//! is counted (`switchboard_gateway_writes_held_total`).

use std::time::Duration;

use tokio::time::Instant;

/// Frames in one write from which a connection counts as busy. Under light
/// load writes carry one or two; under a broadcast to thousands, dozens.
pub const BUSY_FRAMES: usize = 16;

/// Where a connection stands, by its last writes. One enum, not a flag
/// beside an `Option<Instant>`: it fits where the `Option` did (every
/// connection's future holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spell {
    /// The last write carried fewer than [`BUSY_FRAMES`].
    Quiet,
    /// The last write was full, and the connection is not busy: the write
    /// before it was not, or `busy_delay` is zero.
    Full,
    /// The last two writes were full: busy until then.
    Busy(Instant),
}

/// A connection's write timing.
#[derive(Debug, Clone, Copy)]
pub struct Coalesce {
    /// Every write waits this long (`--write-delay`; 0: none).
    delay: Duration,
    /// A busy connection's writes wait this long (`--busy-write-delay`).
    busy_delay: Duration,
    /// What the last writes say about the connection.
    spell: Spell,
    /// When the frames held now are written.
    due: Option<Instant>,
}

impl Coalesce {
    pub fn new(delay: Duration, busy_delay: Duration) -> Self {
        Self { delay, busy_delay, spell: Spell::Quiet, due: None }
    }

    /// Frames were queued at `now`: true to write them at once, false when
    /// they wait for [`Self::due`].
    pub fn queued(&mut self, now: Instant) -> bool {
        let wait = match self.spell {
            _ if !self.delay.is_zero() => self.delay,
            Spell::Busy(until) if now < until => self.busy_delay,
            _ => return true,
        };
        self.due.get_or_insert_with(|| {
            crate::metrics::write_held();
            now + wait
        });
        false
    }

    /// When the held frames are written, if any are held (the tests'
    /// view; the transports ask [`Self::is_due`] and [`Self::wake_at`]).
    #[cfg(test)]
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Whether held frames are due by `now`: the alarm that woke the task
    /// may have been a clock's.
    pub fn is_due(&self, now: Instant) -> bool {
        self.due.is_some_and(|at| at <= now)
    }

    /// `clocks`, or the held write's time if sooner: when the connection's
    /// task next wakes by itself.
    pub fn wake_at(&self, clocks: Instant) -> Instant {
        self.due.map_or(clocks, |at| at.min(clocks))
    }

    /// Whether queued frames may be waiting on a later write: the caller
    /// then writes a reply at once rather than leave it behind them.
    pub fn may_hold(&self) -> bool {
        !self.delay.is_zero() || matches!(self.spell, Spell::Busy(_))
    }

    /// A write of `frames` frames ended at `now`.
    pub fn wrote(&mut self, frames: usize, now: Instant) {
        self.spell = match self.spell {
            _ if frames < BUSY_FRAMES => Spell::Quiet,
            Spell::Quiet => Spell::Full,
            _ if self.busy_delay.is_zero() => Spell::Full,
            Spell::Full | Spell::Busy(_) => Spell::Busy(now + self.busy_delay),
        };
        self.due = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// (write delay, busy delay, frames in each write so far, ms from the
    /// last write to the next frames, expected wait in ms)
    #[test]
    fn only_a_busy_connection_waits_unless_every_write_does() {
        const B: usize = BUSY_FRAMES;
        let cases: &[(u32, u32, &[usize], u32, u32)] = &[
            (0, 5, &[], 0, 0),         // nothing written yet
            (0, 5, &[1, 1], 0, 0),     // a quiet connection
            (0, 5, &[B, B - 1], 0, 0), // just under busy
            (0, 5, &[B], 0, 0),        // one full write: a catch-up, a burst
            (0, 5, &[1, B], 0, 0),     // ... after a small one
            (0, 5, &[B, B], 0, 5),     // busy: frames right behind the write
            (0, 5, &[B, 2, B], 0, 0),  // a small write in between ended it
            (0, 5, &[64, 64], 4, 5),   // still within the busy spell
            (0, 5, &[64, 64], 5, 0),   // the spell is over
            (0, 0, &[64, 64], 0, 0),   // coalescing off
            (20, 5, &[], 0, 20),       // --write-delay holds everything
            (20, 5, &[64, 64], 0, 20), // ... busy or not
        ];
        for &(delay, busy, writes, gap, want) in cases {
            let t0 = Instant::now();
            let mut c = Coalesce::new(delay * MS, busy * MS);
            for &frames in writes {
                c.wrote(frames, t0);
            }
            let now = t0 + gap * MS;
            let at_once = c.queued(now);
            assert_eq!(at_once, want == 0, "{delay} {busy} {writes:?} {gap}");
            assert_eq!(c.due(), (want > 0).then(|| now + want * MS), "{delay} {busy} {writes:?} {gap}");
        }
    }

    #[test]
    fn a_small_write_ends_the_busy_spell() {
        let t0 = Instant::now();
        let mut c = Coalesce::new(Duration::ZERO, 5 * MS);
        c.wrote(40, t0);
        c.wrote(40, t0);
        assert!(c.may_hold());
        c.wrote(2, t0 + MS);
        assert!(!c.may_hold());
        assert!(c.queued(t0 + 2 * MS));
    }

    #[test]
    fn frames_queued_while_held_keep_the_first_due_time() {
        let t0 = Instant::now();
        let mut c = Coalesce::new(Duration::ZERO, 5 * MS);
        c.wrote(40, t0);
        c.wrote(40, t0);
        assert!(!c.queued(t0 + MS));
        assert!(!c.queued(t0 + 3 * MS));
        assert_eq!(c.due(), Some(t0 + 6 * MS), "the first frames wait no longer than the delay");
        assert!(!c.is_due(t0 + 5 * MS) && c.is_due(t0 + 6 * MS));
        c.wrote(40, t0 + 6 * MS);
        assert_eq!(c.due(), None);
        assert!(!c.is_due(t0 + 7 * MS));
    }
}
