//! A connection's clocks: heartbeat pings, silence after a ping, a
//! deadline (the auth timeout before authentication, the token's expiry
//! after), and when to renew credentials the backend granted.
//!
//! Plain state with the time passed in: the socket asks when to wake
//! ([`Clocks::wake_at`]) and what is due then ([`Clocks::fire`]).

use std::time::Duration;

use proto::client::close::Close;
use tokio::time::Instant;

/// What a clock asks the connection to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    /// Send a ping.
    Ping,
    /// Close so.
    Close(Close),
    /// Renew the connection's credentials (the connect hook's, before they expire).
    Renew,
}

/// Heartbeat and deadline state.
#[derive(Debug)]
pub struct Clocks {
    heartbeat: Duration,
    pong_timeout: Duration,
    next_ping: Instant,
    /// When the unanswered ping went out.
    ping_sent: Option<Instant>,
    /// Whether anything came from the client since that ping.
    heard: bool,
    /// The connection ends at this instant with this close.
    deadline: Option<(Instant, Close)>,
    /// When to ask for renewed credentials.
    renew: Option<Instant>,
}

impl Clocks {
    pub fn new(heartbeat: Duration, pong_timeout: Duration, now: Instant) -> Self {
        Self {
            heartbeat,
            pong_timeout,
            next_ping: now + heartbeat,
            ping_sent: None,
            heard: false,
            deadline: None,
            renew: None,
        }
    }

    /// Asks for a [`Alarm::Renew`] at `at` (or never).
    pub fn renew_at(&mut self, at: Option<Instant>) {
        self.renew = at;
    }

    /// Anything at all arrived from the client.
    pub fn heard(&mut self) {
        self.heard = true;
    }

    /// Ends the connection at `at` with `code` unless moved again.
    pub fn end_at(&mut self, at: Instant, close: Close) {
        self.deadline = Some((at, close));
    }

    /// Ends the connection when a token with `exp` (Unix seconds) expires.
    pub fn expire_at(&mut self, exp: i64, now: Instant) {
        let left = exp.saturating_mul(1000).saturating_sub(proto::now_ms()).max(0) as u64;
        // Far enough to never fire, near enough not to overflow.
        self.end_at(now + Duration::from_millis(left.min(365 * 86_400_000)), Close::TOKEN_EXPIRED);
    }

    /// When something may be due.
    pub fn wake_at(&self) -> Instant {
        let heartbeat = self.ping_sent.map_or(self.next_ping, |t| t + self.pong_timeout);
        let soonest = self.renew.map_or(heartbeat, |at| at.min(heartbeat));
        self.deadline.map_or(soonest, |(at, _)| at.min(soonest))
    }

    /// What is due at `now`, if anything.
    pub fn fire(&mut self, now: Instant) -> Option<Alarm> {
        if let Some((at, close)) = self.deadline {
            if now >= at {
                return Some(Alarm::Close(close));
            }
        }
        if self.renew.is_some_and(|at| now >= at) {
            self.renew = None;
            return Some(Alarm::Renew);
        }
        match self.ping_sent {
            Some(t) if now >= t + self.pong_timeout => {
                if !self.heard {
                    return Some(Alarm::Close(Close::HEARTBEAT_TIMEOUT));
                }
                self.ping_sent = None;
                self.next_ping = t + self.heartbeat;
                None
            }
            None if now >= self.next_ping => {
                self.ping_sent = Some(now);
                self.heard = false;
                Some(Alarm::Ping)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_then_closes_on_silence() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = Clocks::new(10 * s, 2 * s, t0);
        assert_eq!(c.wake_at(), t0 + 10 * s);
        assert_eq!(c.fire(t0 + 5 * s), None);
        assert_eq!(c.fire(t0 + 10 * s), Some(Alarm::Ping));
        assert_eq!(c.wake_at(), t0 + 12 * s);
        c.heard();
        assert_eq!(c.fire(t0 + 12 * s), None, "answered");
        assert_eq!(c.fire(t0 + 20 * s), Some(Alarm::Ping));
        assert_eq!(c.fire(t0 + 22 * s), Some(Alarm::Close(Close::HEARTBEAT_TIMEOUT)));
    }

    #[test]
    fn the_deadline_wins_when_earlier() {
        let t0 = Instant::now();
        let mut c = Clocks::new(Duration::from_secs(25), Duration::from_secs(10), t0);
        c.end_at(t0 + Duration::from_secs(5), Close::AUTH_TIMEOUT);
        assert_eq!(c.wake_at(), t0 + Duration::from_secs(5));
        assert_eq!(c.fire(t0 + Duration::from_secs(5)), Some(Alarm::Close(Close::AUTH_TIMEOUT)));
        c.expire_at(proto::now_ms() / 1000 + 3600, t0);
        assert_eq!(c.fire(t0 + Duration::from_secs(5)), None, "moved by a fresh token");
    }
}
