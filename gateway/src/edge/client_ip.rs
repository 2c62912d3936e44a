//! Whose address a connection is: the peer's, or the client's as a trusted
//! load balancer tells it.
//!
//! Behind a balancer every client has the balancer's address, so per-IP
//! caps would limit the whole gateway. Peers in `--trusted-proxies` may say
//! who the client is: with `--proxy-protocol` by a PROXY v2 header they
//! must send first ([`proxy_protocol`](crate::edge::proxy_protocol)),
//! otherwise by `X-Forwarded-For`, read from the right: the right-most hop
//! that is not itself a trusted proxy is the client, since everything left
//! of it was written by the client and may be made up. Anyone else's
//! headers are ignored, so a client cannot claim another address.
//!
//! Pure: no I/O, tested with tables.

use std::net::{IpAddr, SocketAddr};

use hyper::header::HeaderMap;
use ipnet::IpNet;

/// `X-Forwarded-For`.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The trusted-proxy flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Proxies {
    /// Load balancers (CIDRs or addresses, comma-separated) whose word on the
    /// client's address is taken: PROXY v2 with --proxy-protocol, else
    /// X-Forwarded-For.
    #[arg(long = "trusted-proxies", env = "SB_TRUSTED_PROXIES", value_delimiter = ',', value_parser = cidr)]
    pub trusted: Vec<IpNet>,
    /// Require a PROXY protocol v2 header from --trusted-proxies on the
    /// client listener (a connection without one is closed).
    #[arg(long, env = "SB_PROXY_PROTOCOL", requires = "trusted")]
    pub proxy_protocol: bool,
}

impl Proxies {
    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Whether a connection from `peer` must start with a PROXY v2 header.
    pub fn expects_header(&self, peer: IpAddr) -> bool {
        self.proxy_protocol && self.trusts(peer)
    }

    /// The client behind a request from `peer`: the right-most untrusted hop
    /// of `X-Forwarded-For` when `peer` is a trusted proxy that does not
    /// speak PROXY v2; `peer` itself otherwise. A hop that is not an address
    /// ends the walk at the last trusted one (what came before it cannot be
    /// believed). Its port is unknown: 0.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if self.proxy_protocol || !self.trusts(peer.ip()) {
            return peer;
        }
        let hops = headers.get_all(FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok());
        let hops: Vec<&str> = hops.flat_map(|v| v.split(',')).map(str::trim).collect();
        let mut client = peer.ip().to_canonical();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        if client == peer.ip().to_canonical() {
            return peer;
        }
        SocketAddr::new(client, 0)
    }
}

/// One `X-Forwarded-For` hop: `ip`, `ip:port` or `[ipv6]:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let ip = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(ip.to_canonical())
}

/// A `--trusted-proxies` entry: a CIDR, or one address.
fn cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .map(|net| net.trunc())
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither a CIDR (10.0.0.0/8) nor an address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn proxies(trusted: &[&str], proxy_protocol: bool) -> Proxies {
        Proxies { trusted: trusted.iter().map(|s| cidr(s).unwrap()).collect(), proxy_protocol }
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop_and_only_trusted_peers_are_heard() {
        let lb = proxies(&["10.0.0.0/8", "192.168.1.1"], false);
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        #[rustfmt::skip]
        let table: &[(&Proxies, SocketAddr, &[&str], &str)] = &[
            // Untrusted peers: their headers are ignored.
            (&lb, stranger, &["1.2.3.4"], "203.0.113.9:4000"),
            (&proxies(&[], false), peer, &["1.2.3.4"], "10.0.0.5:4000"),
            // Trusted peer without a header: the peer.
            (&lb, peer, &[], "10.0.0.5:4000"),
            (&lb, peer, &["1.2.3.4"], "1.2.3.4:0"),
            // What the client prepended is not believed.
            (&lb, peer, &["6.6.6.6, 1.2.3.4"], "1.2.3.4:0"),
            (&lb, peer, &["6.6.6.6", "1.2.3.4"], "1.2.3.4:0"),
            // Hops through further trusted proxies are skipped.
            (&lb, peer, &["6.6.6.6, 1.2.3.4, 192.168.1.1, 10.1.1.1"], "1.2.3.4:0"),
            // Ports and IPv6.
            (&lb, peer, &["1.2.3.4:5555"], "1.2.3.4:0"),
            (&lb, peer, &["[2001:db8::1]:443"], "[2001:db8::1]:0"),
            (&lb, peer, &["2001:db8::2"], "[2001:db8::2]:0"),
            // Garbage stops the walk at the last trusted hop.
            (&lb, peer, &["1.2.3.4, unknown"], "10.0.0.5:4000"),
            (&lb, peer, &["1.2.3.4, nonsense, 10.9.9.9"], "10.9.9.9:0"),
            // Every hop trusted: the left-most.
            (&lb, peer, &["10.7.7.7, 10.8.8.8"], "10.7.7.7:0"),
            // With PROXY v2 the header says it, never X-Forwarded-For.
            (&proxies(&["10.0.0.0/8"], true), peer, &["1.2.3.4"], "10.0.0.5:4000"),
        ];
        for (i, (p, peer, xff, want)) in table.iter().enumerate() {
            assert_eq!(p.client(*peer, &headers(xff)), want.parse().unwrap(), "row {i}: {xff:?}");
        }
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let p = proxies(&["127.0.0.0/8"], true);
        assert!(p.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(p.expects_header("127.0.0.9".parse().unwrap()));
        assert!(!p.expects_header("10.0.0.1".parse().unwrap()));
        assert!(!proxies(&["127.0.0.0/8"], false).expects_header("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn entries_are_cidrs_or_addresses() {
        assert_eq!(cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(cidr(" 192.168.0.1 ").unwrap().to_string(), "192.168.0.1/32");
        assert_eq!(cidr("fd00::/8").unwrap().to_string(), "fd00::/8");
        assert!(cidr("10.0.0.0/33").is_err());
        assert!(cidr("lb.internal").is_err());
    }
}
