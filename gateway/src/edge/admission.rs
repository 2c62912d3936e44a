//! Who may open a WebSocket: connection caps, the handshake rate, and a
//! separate budget for failed authentication.
//!
//! A TCP connection counts toward the caps (total and per client IP) from
//! the moment it is accepted, so connections that never finish their
//! handshake (slowloris) cannot exceed them. Past a cap, a few at a time
//! are still served to be told 1013 (try again later, after the upgrade, so
//! a browser sees a code); the rest are dropped at once.
//!
//! The handshake rate (a reconnect storm's bound) is charged only when a
//! token has been verified. Failed authentications are charged to a budget
//! of their own, per client IP and in total: within it they are closed with
//! their code (4500, 4501), past it with 1013. So failures never use up
//! what valid tokens need, even behind a load balancer where every client
//! has its IP.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::bucket::TokenBucket;
use crate::config::Limits;

/// Connections past a cap served at once, to tell them 1013.
const REFUSING_MAX: usize = 64;
/// Client IPs with a failure bucket; past it the idle ones are forgotten.
const FAILURE_IPS_MAX: usize = 10_000;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the handshake rate (a reconnect storm).
    Rate,
    /// The gateway is full.
    Capacity,
    /// This client IP has too many connections.
    PerIp,
    /// Over the budget of failed authentications.
    Failures,
}

impl Refusal {
    /// The `reason` label of `switchboard_gateway_connections_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Rate => "handshake_rate",
            Self::Capacity => "capacity",
            Self::PerIp => "per_ip",
            Self::Failures => "auth_failure_rate",
        }
    }

    /// Counts the refusal.
    pub fn count(self) {
        crate::metrics::rejected(self.reason());
    }
}

/// Connection counting and handshake admission for one gateway.
pub struct Admission {
    max_total: usize,
    max_per_ip: usize,
    max_bytes_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, PerIp>>,
    /// Connections past a cap being told 1013.
    refusing: AtomicUsize,
    handshakes: Mutex<TokenBucket>,
    failures: Mutex<Failures>,
}

/// What one client IP holds.
#[derive(Debug, Default)]
struct PerIp {
    conns: usize,
    /// Bytes of memberships and watches ([`Admission::hold`]).
    bytes: usize,
}

/// The budget of failed authentications.
struct Failures {
    total: TokenBucket,
    per_ip: HashMap<IpAddr, TokenBucket>,
    ip_rate: f64,
}

impl Admission {
    /// Admission with the configured limits.
    pub fn new(limits: &Limits) -> Arc<Self> {
        let now = Instant::now();
        let (rate, ip_rate) = (limits.auth_failure_rate, limits.auth_failure_ip_rate);
        Arc::new(Self {
            max_total: limits.max_connections,
            max_per_ip: limits.max_connections_per_ip,
            max_bytes_per_ip: limits.max_bytes_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            refusing: AtomicUsize::new(0),
            handshakes: Mutex::new(TokenBucket::new(limits.handshake_rate, limits.handshake_burst, now)),
            failures: Mutex::new(Failures {
                total: TokenBucket::new(rate, rate, now),
                per_ip: HashMap::new(),
                ip_rate,
            }),
        })
    }

    /// Counts a connection from `ip` as it is accepted, or says why not;
    /// with the refusal comes a ticket to serve it anyway (to tell it
    /// 1013), when few enough are being told. `None`: a trusted proxy's
    /// connection, counted in total now and per client IP once
    /// [`Ticket::bind`] learns it.
    pub fn accept(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Ticket, (Refusal, Option<Ticket>)> {
        let refused = |refusal| {
            if self.refusing.fetch_add(1, Ordering::AcqRel) >= REFUSING_MAX {
                self.refusing.fetch_sub(1, Ordering::AcqRel);
                return Err((refusal, None));
            }
            Err((refusal, Some(Ticket { admission: self.clone(), place: Place::Refusing })))
        };
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return refused(Refusal::Capacity);
        }
        let mut ticket = Ticket { admission: self.clone(), place: Place::Counted(None) };
        match ip.map(|ip| ticket.bind(ip)) {
            Some(Err(refusal)) => {
                drop(ticket);
                refused(refusal)
            }
            _ => Ok(ticket),
        }
    }

    /// Counts one more connection for `ip` unless it holds its cap.
    fn count(&self, ip: IpAddr) -> bool {
        let mut per_ip = self.per_ip.lock().unwrap();
        let held = per_ip.entry(ip).or_default();
        if held.conns >= self.max_per_ip {
            if held.conns == 0 && held.bytes == 0 {
                per_ip.remove(&ip);
            }
            return false;
        }
        held.conns += 1;
        true
    }

    /// Charges `bytes` of state (a membership, a watch) to `ip`; false when
    /// that would take it over `--max-bytes-per-ip`.
    pub fn hold(&self, ip: IpAddr, bytes: usize) -> bool {
        let mut per_ip = self.per_ip.lock().unwrap();
        let held = per_ip.entry(ip).or_default();
        if held.bytes + bytes > self.max_bytes_per_ip {
            return false;
        }
        held.bytes += bytes;
        true
    }

    /// Gives back what [`Self::hold`] charged.
    pub fn release(&self, ip: IpAddr, bytes: usize) {
        let mut per_ip = self.per_ip.lock().unwrap();
        if let Some(held) = per_ip.get_mut(&ip) {
            held.bytes = held.bytes.saturating_sub(bytes);
            if held.conns == 0 && held.bytes == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    /// A verified token asks in: within the handshake rate?
    pub fn handshake(&self) -> Result<(), Refusal> {
        self.handshakes.lock().unwrap().take(Instant::now()).then_some(()).ok_or(Refusal::Rate)
    }

    /// A failed authentication from `ip`: within its budget (closed with
    /// its own code), or past it (1013)?
    pub fn failure(&self, ip: IpAddr) -> Result<(), Refusal> {
        let now = Instant::now();
        let mut f = self.failures.lock().unwrap();
        if f.per_ip.len() >= FAILURE_IPS_MAX && !f.per_ip.contains_key(&ip) {
            // Forget the IPs whose buckets have refilled: they are idle.
            f.per_ip.retain(|_, b| !b.is_full(now));
        }
        let (ip_rate, room) = (f.ip_rate, f.per_ip.len() < FAILURE_IPS_MAX);
        let ip_ok = match f.per_ip.entry(ip) {
            Entry::Occupied(mut b) => b.get_mut().take(now),
            Entry::Vacant(v) if room => v.insert(TokenBucket::new(ip_rate, ip_rate, now)).take(now),
            Entry::Vacant(_) => false,
        };
        (ip_ok && f.total.take(now)).then_some(()).ok_or(Refusal::Failures)
    }

    /// Connections currently counted.
    pub fn connections(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// A connection's place in the counts (or among those being refused);
/// released on drop.
pub struct Ticket {
    admission: Arc<Admission>,
    place: Place,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Place {
    /// Among the connections being told 1013.
    Refusing,
    /// Counted in total, and per client IP once it is known.
    Counted(Option<IpAddr>),
}

impl Ticket {
    /// Counts the connection for client `ip` (learnt from a trusted proxy);
    /// past `--max-connections-per-ip` it stays counted in total only, to
    /// be refused. Once counted (or when refusing) it changes nothing.
    pub fn bind(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        if self.place != Place::Counted(None) {
            return Ok(());
        }
        if !self.admission.count(ip) {
            return Err(Refusal::PerIp);
        }
        self.place = Place::Counted(Some(ip));
        Ok(())
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("place", &self.place).finish()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let ip = match self.place {
            Place::Refusing => {
                self.admission.refusing.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            Place::Counted(ip) => ip,
        };
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
        let Some(ip) = ip else { return };
        let mut per_ip = self.admission.per_ip.lock().unwrap();
        if let Some(held) = per_ip.get_mut(&ip) {
            held.conns -= 1;
            if held.conns == 0 && held.bytes == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn limits(args: &[&str]) -> Limits {
        let mut argv = vec!["gateway"];
        argv.extend_from_slice(args);
        crate::config::Config::try_parse_from(argv).unwrap().limits
    }

    #[test]
    fn caps_total_and_per_ip_and_releases_on_drop() {
        let a = Admission::new(&limits(&["--max-connections", "2", "--max-connections-per-ip", "1"]));
        let ip1: IpAddr = "127.0.0.1".parse().unwrap();
        let ip2: IpAddr = "127.0.0.2".parse().unwrap();
        let refusal = |r: Result<Ticket, (Refusal, Option<Ticket>)>| r.err().map(|(r, _)| r);
        let t1 = a.accept(Some(ip1)).unwrap();
        assert_eq!(refusal(a.accept(Some(ip1))), Some(Refusal::PerIp));
        let _t2 = a.accept(Some(ip2)).unwrap();
        assert_eq!(refusal(a.accept("127.0.0.3".parse().ok())), Some(Refusal::Capacity));
        drop(t1);
        assert_eq!(a.connections(), 1);
        assert!(a.accept(Some(ip1)).is_ok());
    }

    #[test]
    fn a_proxied_connection_counts_per_ip_once_its_client_is_known() {
        let a = Admission::new(&limits(&["--max-connections", "3", "--max-connections-per-ip", "1"]));
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let mut t1 = a.accept(None).unwrap();
        let mut t2 = a.accept(None).unwrap();
        assert_eq!(a.per_ip.lock().unwrap().len(), 0, "the proxy's address is not charged");
        assert_eq!(t1.bind(client), Ok(()));
        assert_eq!(t1.bind(client), Ok(()), "binding twice counts once");
        assert_eq!(t2.bind(client), Err(Refusal::PerIp));
        assert_eq!(a.connections(), 2, "the refused one stays counted in total until it closes");
        drop(t2);
        drop(t1);
        assert_eq!(a.connections(), 0);
        assert!(a.per_ip.lock().unwrap().is_empty());
        assert_eq!(a.accept(None).unwrap().bind(client), Ok(()), "released");
    }

    #[test]
    fn state_held_per_ip_is_bounded_in_bytes() {
        let a = Admission::new(&limits(&["--max-bytes-per-ip", "1000"]));
        let (ip1, ip2): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let t = a.accept(Some(ip1)).unwrap();
        assert!(a.hold(ip1, 600) && !a.hold(ip1, 600), "over the bound");
        assert!(a.hold(ip2, 600), "another IP has its own");
        a.release(ip1, 600);
        assert!(a.hold(ip1, 1000));
        drop(t);
        a.release(ip1, 1000);
        assert!(a.per_ip.lock().unwrap().get(&ip1).is_none(), "forgotten once it holds nothing");
    }

    #[test]
    fn only_a_few_refused_connections_are_served_at_once() {
        let a = Admission::new(&limits(&["--max-connections", "0"]));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let served: Vec<Ticket> = (0..100).filter_map(|_| a.accept(Some(ip)).err().and_then(|(_, t)| t)).collect();
        assert_eq!(served.len(), REFUSING_MAX);
        drop(served);
        assert!(a.accept(Some(ip)).err().and_then(|(_, t)| t).is_some(), "released");
    }

    #[test]
    fn failures_have_their_own_budget_per_ip_and_in_total() {
        let a = Admission::new(&limits(&[
            "--handshake-rate",
            "1",
            "--handshake-burst",
            "2",
            "--auth-failure-rate",
            "5",
            "--auth-failure-ip-rate",
            "3",
        ]));
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        let told = (0..10).filter(|_| a.failure(ip(1)).is_ok()).count();
        assert_eq!(told, 3, "per IP");
        assert_eq!((2..10).filter(|&n| a.failure(ip(n)).is_ok()).count(), 2, "in total");
        assert_eq!(a.failure(ip(1)), Err(Refusal::Failures));
        // None of it touched the handshake rate.
        assert_eq!((a.handshake(), a.handshake(), a.handshake()), (Ok(()), Ok(()), Err(Refusal::Rate)));
    }

    #[test]
    fn handshake_rate_limits_storms() {
        let a = Admission::new(&limits(&["--handshake-rate", "1", "--handshake-burst", "3"]));
        assert_eq!((0..10).filter(|_| a.handshake().is_ok()).count(), 3);
        assert_eq!(a.handshake(), Err(Refusal::Rate));
    }
}
