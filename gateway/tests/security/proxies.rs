//! Trusted proxies: whose address counts toward per-IP caps. Clients come
//! from 127.0.0.1 (the "load balancer" where it is trusted) or from
//! 127.0.0.2 (a stranger); the caps make the resolved address visible.

use std::net::IpAddr;

use loadtest::client::{ClientError, ConnectOptions};
use ppp::v2::{Builder, Command, IPv4, Protocol, Version};
use support::pki::Ca;

use super::*;

const STRANGER: [u8; 4] = [127, 0, 0, 2];

/// A PROXY v2 header naming `client` (`Local` for a health check).
fn proxy_v2(client: [u8; 4], command: Command) -> Vec<u8> {
    Builder::with_addresses(Version::Two | command, Protocol::Stream, IPv4::new(client, [127, 0, 0, 1], 40000, 8080))
        .build()
        .unwrap()
}

struct Via {
    source: Option<[u8; 4]>,
    forwarded_for: Option<&'static str>,
    preface: Option<Vec<u8>>,
}

const DIRECT: Via = Via { source: None, forwarded_for: None, preface: None };

fn xff(hops: &'static str) -> Via {
    Via { forwarded_for: Some(hops), ..DIRECT }
}

fn proxied(client: [u8; 4]) -> Via {
    Via { preface: Some(proxy_v2(client, Command::Proxy)), ..DIRECT }
}

/// Connects `user` the way `via` says: `None` when greeted (the client is
/// kept in `held`), else the close code.
async fn arrive(gw: &Gateway, held: &mut Vec<Client>, user: &str, via: Via) -> Option<u16> {
    let mut opts = gw.options(Some(&gw.token(user)));
    opts.source = via.source.map(IpAddr::from);
    opts.headers.extend(via.forwarded_for.map(|h| ("X-Forwarded-For".to_owned(), h.to_owned())));
    opts.preface = via.preface;
    let mut c = Client::connect(opts).await.expect("the upgrade completes");
    match c.next_json(T).await {
        Ok(v) if v["type"] == "hello" => {
            held.push(c);
            None
        }
        Ok(v) => panic!("expected hello or a close, got {v}"),
        Err(ClientError::Closed(code)) => Some(code.unwrap_or(0)),
        Err(e) => panic!("expected hello or a close: {e}"),
    }
}

fn per_ip_refusals(m: &str) -> f64 {
    metric(m, "switchboard_gateway_connections_rejected_total{reason=\"per_ip\"}")
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies_and_only_its_right_most_untrusted_hop() {
    let gw = Gateway::start(&["--trusted-proxies", "127.0.0.1/32", "--max-connections-per-ip", "2"]);
    let held = &mut Vec::new();
    // Through the trusted proxy: what the client prepended is not believed.
    assert_eq!(arrive(&gw, held, "a1", xff("6.6.6.6, 10.0.0.1")).await, None);
    assert_eq!(arrive(&gw, held, "a2", xff("7.7.7.7, 10.0.0.1")).await, None);
    assert_eq!(arrive(&gw, held, "a3", xff("8.8.8.8, 10.0.0.1")).await, Some(1013), "10.0.0.1 holds its two");
    assert_eq!(arrive(&gw, held, "b1", xff("10.0.0.1, 10.0.0.2")).await, None, "the right-most untrusted hop");
    // The proxy's own connections (no header) count for the proxy.
    assert_eq!(arrive(&gw, held, "lb", DIRECT).await, None);
    // A stranger's header is ignored: all three count for 127.0.0.2.
    for (i, spoof) in ["10.1.0.1", "10.1.0.2", "10.1.0.3"].into_iter().enumerate() {
        let via = Via { source: Some(STRANGER), forwarded_for: Some(spoof), preface: None };
        let want = (i == 2).then_some(1013);
        assert_eq!(arrive(&gw, held, &format!("s{i}"), via).await, want, "spoofed {spoof}");
    }
    assert_eq!(per_ip_refusals(&gw.metrics().await), 2.0);
    for c in held.iter_mut() {
        still_served(c).await;
    }
}

#[tokio::test]
async fn proxy_v2_from_a_trusted_proxy_names_the_client_and_a_malformed_one_closes() {
    let gw = Gateway::start(&["--trusted-proxies", "127.0.0.1", "--proxy-protocol", "--max-connections-per-ip", "2"]);
    let held = &mut Vec::new();
    let client = [203, 0, 113, 7];
    assert_eq!(arrive(&gw, held, "c1", proxied(client)).await, None);
    assert_eq!(arrive(&gw, held, "c2", proxied(client)).await, None);
    assert_eq!(arrive(&gw, held, "c3", proxied(client)).await, Some(1013), "203.0.113.7 holds its two");
    assert_eq!(arrive(&gw, held, "d1", proxied([203, 0, 113, 8])).await, None);
    // With PROXY v2 the header is the word, never X-Forwarded-For.
    let via = Via { forwarded_for: Some("10.9.9.9"), ..proxied(client) };
    assert_eq!(arrive(&gw, held, "c4", via).await, Some(1013));
    // LOCAL (a health check): the proxy itself.
    let local = Via { preface: Some(proxy_v2(client, Command::Local)), ..DIRECT };
    assert_eq!(arrive(&gw, held, "lb", local).await, None);
    // Strangers need no header (and are counted as themselves).
    assert_eq!(arrive(&gw, held, "s1", Via { source: Some(STRANGER), ..DIRECT }).await, None);
    assert_eq!(per_ip_refusals(&gw.metrics().await), 2.0);

    // A trusted peer without a header, or with a broken one, is closed
    // before any HTTP; nobody else notices.
    let mut truncated = proxy_v2(client, Command::Proxy);
    truncated[15] = 4; // announces 4 bytes of addresses, IPv4 needs 12
    let mut version1 = proxy_v2(client, Command::Proxy);
    version1[12] = 0x11;
    let broken: [(&str, Option<Vec<u8>>); 4] = [
        ("no header", None),
        ("PROXY v1", Some(b"PROXY TCP4 203.0.113.7 127.0.0.1 1 2\r\n".to_vec())),
        ("addresses cut short", Some(truncated)),
        ("version 1 in a v2 signature", Some(version1)),
    ];
    for (what, preface) in broken {
        let mut opts = gw.options(Some(&gw.token("x")));
        opts.preface = preface;
        match Client::connect(opts).await {
            Err(ClientError::Connect(_)) => {}
            other => panic!("{what}: expected the connection closed, got {:?}", other.map(|_| ())),
        }
    }
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "switchboard_gateway_connections_rejected_total{reason=\"proxy_header\"}"), 4.0);
    for c in held.iter_mut() {
        still_served(c).await;
    }
}

#[tokio::test]
async fn the_proxy_header_comes_before_tls() {
    let ca = Ca::new("proxied");
    let leaf = ca.leaf("gateway", 30);
    let args = ["--tls-cert", &leaf.cert, "--tls-key", &leaf.key];
    let gw = Gateway::start(&[&args[..], &["--trusted-proxies", "127.0.0.1", "--proxy-protocol"]].concat());
    let mut opts = ConnectOptions::new(gw.url_with_token(&gw.token("t")));
    opts.tls = Some(ca.client());
    opts.preface = Some(proxy_v2([198, 51, 100, 1], Command::Proxy));
    let mut c = Client::connect(opts).await.expect("PROXY v2, then TLS, then the upgrade");
    assert_eq!(c.next_json(T).await.unwrap()["type"], "hello");
    still_served(&mut c).await;
}
