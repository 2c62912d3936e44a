//! Signing hook and webhook requests so a backend can tell they came from
//! Switchboard and are fresh: `X-Switchboard-Timestamp` (Unix seconds) and
//! `X-Switchboard-Signature: sha256=<hex of HMAC-SHA256(secret,
//! timestamp + "." + body)>`. Several secrets may be configured for
//! rotation: the first signs, a receiver accepts any. Receivers reject
//! timestamps older than [`MAX_AGE_SECS`], so a captured request cannot be
//! replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How old a signed request may be, in seconds.
pub const MAX_AGE_SECS: i64 = 300;

/// The signature header's value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Adds the timestamp and signature headers for `body` to a request, when
/// there is a secret to sign with.
pub fn headers(
    req: hyper::http::request::Builder,
    secret: Option<&Vec<u8>>,
    body: &[u8],
) -> hyper::http::request::Builder {
    let Some(secret) = secret else { return req };
    let ts = proto::now_ms() / 1000;
    req.header("x-switchboard-timestamp", ts).header("x-switchboard-signature", sign(secret, ts, body))
}

/// Whether `signature` signs `body` at `timestamp` with one of `secrets`,
/// and `timestamp` is within [`MAX_AGE_SECS`] of `now` (Unix seconds).
/// Compares in constant time.
pub fn verify(secrets: &[Vec<u8>], timestamp: i64, body: &[u8], signature: &str, now: i64) -> bool {
    if (now - timestamp).abs() > MAX_AGE_SECS {
        return false;
    }
    let Some(hex) = signature.strip_prefix("sha256=") else { return false };
    let Some(given) = decode_hex(hex) else { return false };
    secrets.iter().any(|secret| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&given).is_ok()
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_secret_verifies_a_fresh_signature() {
        let (old, new) = (b"old-secret".to_vec(), b"new-secret".to_vec());
        let sig = sign(&new, 1000, b"{}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        let (only_new, both, only_old) = (vec![new.clone()], vec![old.clone(), new], vec![old]);
        // (secrets, timestamp, body, now) → accepted
        type Case<'a> = (&'a [Vec<u8>], i64, &'a [u8], i64, bool);
        let cases: &[Case] = &[
            (&only_new, 1000, b"{}", 1000, true),
            (&both, 1000, b"{}", 1200, true),
            (&only_old, 1000, b"{}", 1000, false),
            (&only_new, 1000, b"{ }", 1000, false),
            (&only_new, 1001, b"{}", 1001, false),
            (&only_new, 1000, b"{}", 1000 + MAX_AGE_SECS + 1, false),
        ];
        for (secrets, ts, body, now, ok) in cases {
            assert_eq!(verify(secrets, *ts, body, &sig, *now), *ok, "{ts} {now} {:?}", std::str::from_utf8(body));
        }
        assert!(!verify(&only_new, 1000, b"{}", "sha256=zz", 1000));
        assert!(!verify(&only_new, 1000, b"{}", "md5=00", 1000));
    }
}
