//! Who may open a WebSocket: connection caps and the handshake rate.
//!
//! Past any limit the upgrade still completes and the socket is closed with
//! 1013 (try again later), so clients see a code and back off instead of
//! retrying a failed HTTP request in a tight loop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::bucket::TokenBucket;
use crate::config::Limits;

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the handshake rate (a reconnect storm).
    Rate,
    /// The gateway is full.
    Capacity,
    /// This client IP has too many connections.
    PerIp,
}

impl Refusal {
    /// The `reason` label of `switchboard_gateway_connections_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Rate => "handshake_rate",
            Self::Capacity => "capacity",
            Self::PerIp => "per_ip",
        }
    }
}

/// Connection counting and handshake admission for one gateway.
pub struct Admission {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    handshakes: Mutex<TokenBucket>,
}

impl Admission {
    /// Admission with the configured limits.
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            max_total: limits.max_connections,
            max_per_ip: limits.max_connections_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            handshakes: Mutex::new(TokenBucket::new(limits.handshake_rate, limits.handshake_burst, Instant::now())),
        })
    }

    /// Admits a connection from `ip`, or says why not. The ticket holds the
    /// connection's place until dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        if !self.handshakes.lock().unwrap().take(Instant::now()) {
            return Err(Refusal::Rate);
        }
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Capacity);
        }
        let mut per_ip = self.per_ip.lock().unwrap();
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            drop(per_ip);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::PerIp);
        }
        *n += 1;
        Ok(Ticket { admission: self.clone(), ip })
    }

    /// Connections currently admitted.
    pub fn connections(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// A connection's place in the counts; released on drop.
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
        let mut per_ip = self.admission.per_ip.lock().unwrap();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
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
        let t1 = a.admit(ip1).unwrap();
        assert_eq!(a.admit(ip1).err(), Some(Refusal::PerIp));
        let _t2 = a.admit(ip2).unwrap();
        assert_eq!(a.admit("127.0.0.3".parse().unwrap()).err(), Some(Refusal::Capacity));
        drop(t1);
        assert_eq!(a.connections(), 1);
        assert!(a.admit(ip1).is_ok());
    }

    #[test]
    fn handshake_rate_limits_storms() {
        let a = Admission::new(&limits(&["--handshake-rate", "1", "--handshake-burst", "3"]));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let admitted: Vec<_> = (0..10).filter_map(|_| a.admit(ip).ok()).collect();
        assert_eq!(admitted.len(), 3);
        assert_eq!(a.admit(ip).err(), Some(Refusal::Rate));
    }
}
