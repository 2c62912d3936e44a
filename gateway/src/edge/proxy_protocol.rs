//! The PROXY protocol v2 header a trusted load balancer sends before
//! anything else on a connection (before TLS), naming the client.
//!
//! Read with exact-length reads (the 16-byte fixed part, then the length
//! it announces), so no byte of what follows is consumed and no buffer
//! outlives the header. Parsing is the `ppp` crate's. A header that is not
//! PROXY v2, is longer than [`MAX_HEADER_BYTES`] or does not parse is an
//! error: the connection is closed, since a trusted peer that does not
//! speak the protocol is misconfigured and guessing would let its clients
//! share (or dodge) per-IP caps.

use std::net::SocketAddr;

use ppp::v2::{Addresses, Command, Header};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The fixed part: 12-byte signature, version/command, family, length.
const FIXED_BYTES: usize = 16;
/// Largest header accepted (addresses plus TLVs), in bytes.
pub const MAX_HEADER_BYTES: usize = 4096;

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("PROXY header of {0} bytes (at most {MAX_HEADER_BYTES})")]
    TooLong(usize),
    #[error("not a PROXY v2 header: {0}")]
    Parse(#[from] ppp::v2::ParseError),
}

/// Reads the header from `stream` and returns the client's address: the
/// source it names, or `peer` for a `LOCAL` header (the balancer's own
/// health check) and for addresses that are not IP (a Unix socket).
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S, peer: SocketAddr) -> Result<SocketAddr, Malformed> {
    let mut head = [0u8; FIXED_BYTES];
    stream.read_exact(&mut head).await?;
    // Checked before the length is trusted: signature, version, command.
    if let Err(e) = Header::try_from(&head[..]) {
        if !matches!(e, ppp::v2::ParseError::Partial(..)) {
            return Err(e.into());
        }
    }
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    if FIXED_BYTES + len > MAX_HEADER_BYTES {
        return Err(Malformed::TooLong(FIXED_BYTES + len));
    }
    let mut whole = Vec::with_capacity(FIXED_BYTES + len);
    whole.extend_from_slice(&head);
    whole.resize(FIXED_BYTES + len, 0);
    stream.read_exact(&mut whole[FIXED_BYTES..]).await?;
    Ok(client(&Header::try_from(&whole[..])?, peer))
}

fn client(header: &Header<'_>, peer: SocketAddr) -> SocketAddr {
    if header.command == Command::Local {
        return peer;
    }
    match &header.addresses {
        Addresses::IPv4(a) => SocketAddr::new(a.source_address.into(), a.source_port),
        Addresses::IPv6(a) => SocketAddr::new(a.source_address.to_canonical(), a.source_port),
        Addresses::Unspecified | Addresses::Unix(_) => peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, IPv4, IPv6, Protocol, Type, Version};

    fn proxy(addresses: impl Into<Addresses>, command: Command) -> Vec<u8> {
        Builder::with_addresses(Version::Two | command, Protocol::Stream, addresses).build().unwrap()
    }

    async fn outcome(bytes: &[u8]) -> Result<(SocketAddr, Vec<u8>), String> {
        let peer: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let mut input = bytes;
        let client = read(&mut input, peer).await.map_err(|e| e.to_string())?;
        Ok((client, input.to_vec()))
    }

    #[tokio::test]
    async fn headers_name_the_client_and_leave_the_rest_unread() {
        let v4 = proxy(IPv4::new([203, 0, 113, 7], [10, 0, 0, 2], 5555, 8080), Command::Proxy);
        let v6 = proxy(
            IPv6::new([0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0; 16], 6, 7),
            Command::Proxy,
        );
        let local = proxy(IPv4::new([1, 1, 1, 1], [2, 2, 2, 2], 1, 2), Command::Local);
        let with_tlv = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            IPv4::new([198, 51, 100, 1], [10, 0, 0, 2], 9, 8080),
        )
        .write_tlv(Type::NoOp, [0u8; 40].as_slice())
        .unwrap()
        .build()
        .unwrap();
        for (bytes, want) in
            [(v4, "203.0.113.7:5555"), (v6, "[2001:db8::1]:6"), (local, "10.0.0.1:1000"), (with_tlv, "198.51.100.1:9")]
        {
            let mut input = bytes.clone();
            input.extend_from_slice(b"GET /ws HTTP/1.1\r\n");
            let (client, rest) = outcome(&input).await.unwrap();
            assert_eq!(client, want.parse().unwrap());
            assert_eq!(rest, b"GET /ws HTTP/1.1\r\n", "nothing past the header is read");
        }
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let good = proxy(IPv4::new([203, 0, 113, 7], [10, 0, 0, 2], 5555, 8080), Command::Proxy);
        let mut version1 = good.clone();
        version1[12] = 0x11;
        let mut long = good.clone();
        long[14..16].copy_from_slice(&(MAX_HEADER_BYTES as u16).to_be_bytes());
        let mut short_addresses = good.clone();
        short_addresses[14..16].copy_from_slice(&4u16.to_be_bytes());
        let cases: [(&str, Vec<u8>, &str); 6] = [
            ("plain HTTP", b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "not a PROXY v2 header"),
            ("PROXY v1", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), "not a PROXY v2 header"),
            ("version 1 in a v2 signature", version1, "not a PROXY v2 header"),
            ("too long", long, "at most"),
            ("addresses cut short", short_addresses, "not a PROXY v2 header"),
            ("cut off", good[..20].to_vec(), "reading the PROXY header"),
        ];
        for (what, bytes, want) in cases {
            let err = outcome(&bytes).await.expect_err(what);
            assert!(err.contains(want), "{what}: {err}");
        }
    }
}
