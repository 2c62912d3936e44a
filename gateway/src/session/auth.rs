//! Who is connecting: the JWT a client presents and what it grants.
//!
//! A client proves its identity with a JWT, signed either with a secret the
//! gateway shares with the application backend (HS256) or with the backend's
//! private key, the gateway holding only the public key (RS256 or ES256). The
//! token names the user (`sub`), bounds the session (`exp`), and may restrict
//! the rooms the user can join (`rooms`) and carry what other members see of
//! them (`info`).
//!
//! A [`Verifier`] holds several keys at once (a rotation, even from HS256 to
//! RS256, keeps the old key beside the new one for a while), each bound to
//! its own algorithm ([`Key`]): a token is checked only against the keys of
//! the algorithm it names, the ones with its `kid` first, and a bad signature
//! under one key moves on to the next. Keys from a JWKS ([`Jwks`]) join the
//! configured ones; a `kid` nobody knows makes [`Verifier::check`] refresh
//! the set (at most once per interval) before giving up. `aud` and `iss` are
//! compared only when the gateway is told what to expect. Failures come back
//! as [`AuthError`], which knows its WebSocket close code and metric reason
//! and never contains the token: tokens are credentials and must stay out of
//! logs.

use bytes::Bytes;
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use proto::client::close::{self, Close};
use serde::Deserialize;
use serde_json::value::RawValue;

pub use super::jwks::Jwks;
pub use super::key::{Key, KeyError};

/// The algorithms a key can be for.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256];

/// Checks tokens against a set of keys.
#[derive(Clone, Debug)]
pub struct Verifier {
    /// Keys given on the command line.
    keys: Arc<[Key]>,
    /// Keys published by the issuer, when `--jwks-url` is set.
    jwks: Option<Arc<Jwks>>,
    /// One per entry of [`ALGORITHMS`], with the `aud`/`iss` rules.
    validations: Arc<[Validation; 3]>,
    /// Largest `info` claim accepted: every room member receives it with
    /// every `joined` and `members`, so it is bounded like a message.
    max_info_bytes: usize,
}

/// Default bound on the `info` claim.
pub const MAX_INFO_BYTES: usize = 1024;

/// The claims of a verified token.
#[derive(Clone, Debug)]
pub struct Claims {
    /// The user id; always a valid id (1–128 bytes of `[A-Za-z0-9_:@-]`).
    pub sub: String,
    /// Expiry, in seconds since the Unix epoch; always in the future when
    /// returned by [`Verifier::verify`].
    pub exp: i64,
    /// Glob patterns of the rooms the user may join; `None` means the server's
    /// `--default-rooms` apply.
    pub rooms: Option<Vec<String>>,
    /// Rooms the user may publish and signal to; `None`: the rooms it may join.
    pub publish: Option<Vec<String>>,
    /// Users the user may message; `None`: `--default-send`.
    pub send: Option<Vec<String>>,
    /// Users whose presence the user may query or watch; `None`: `--default-watch`.
    pub watch: Option<Vec<String>>,
    /// Opaque JSON shown to room members, kept as the token's own text so it
    /// is passed on without being parsed and re-serialized.
    pub info: Option<Box<RawValue>>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token was genuine but its `exp` has passed (close code 4501).
    #[error("token expired")]
    Expired,
    /// Missing, malformed, forged or otherwise unacceptable (close code
    /// 4500). The message is for logs and the close reason; it never
    /// contains the token.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A genuine token whose `info` claim is over the gateway's bound (4500).
    #[error("claim `info` is over {limit} bytes")]
    InfoTooLarge { limit: usize },
    /// A genuine token for another audience or from another issuer than
    /// `--jwt-audience`/`--jwt-issuer` name, or without the claim (4500).
    #[error("claim `{0}` is missing or not one this server accepts")]
    Claim(&'static str),
    /// A `kid` that no key has, even after asking the JWKS again (4500).
    #[error("no key with this token's `kid`")]
    UnknownKey,
}

/// The claims as they appear on the wire. Everything is optional here so
/// that a missing claim is reported by name (via `required_spec_claims`)
/// rather than as a generic parse error.
/// The glob claims stay raw JSON until checked, so that one of the wrong
/// shape is refused by name.
#[derive(Deserialize)]
struct WireClaims {
    sub: Option<String>,
    exp: Option<i64>,
    rooms: Option<serde_json::Value>,
    publish: Option<serde_json::Value>,
    send: Option<serde_json::Value>,
    watch: Option<serde_json::Value>,
    info: Option<Box<RawValue>>,
}

/// A glob claim: absent (or null), or a list of strings.
fn globs(claim: &str, value: Option<serde_json::Value>) -> Result<Option<Vec<String>>, AuthError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Array(items)) => items
            .into_iter()
            .map(|i| match i {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(AuthError::Invalid(format!("claim `{claim}` must be a list of strings"))),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(AuthError::Invalid(format!("claim `{claim}` must be a list of strings"))),
    }
}

impl Verifier {
    /// A verifier for `keys` (at least one, or a JWKS added with
    /// [`Verifier::with_jwks`]).
    pub fn new(keys: Vec<Key>) -> Verifier {
        Verifier {
            keys: keys.into(),
            jwks: None,
            validations: Arc::new(ALGORITHMS.map(|alg| validation(alg, &[], &[]))),
            max_info_bytes: MAX_INFO_BYTES,
        }
    }

    /// A verifier for HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8]) -> Verifier {
        Verifier::new(vec![Key::hs256(secret)])
    }

    /// A verifier for the public key in `pem` (see [`Key::from_public_key_pem`]).
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Verifier, KeyError> {
        Ok(Verifier::new(vec![Key::from_public_key_pem(pem)?]))
    }

    /// The same verifier, also trusting the keys `jwks` publishes.
    pub fn with_jwks(mut self, jwks: Arc<Jwks>) -> Self {
        self.jwks = Some(jwks);
        self
    }

    /// The same verifier, requiring `aud` to be one of `audiences` and `iss`
    /// one of `issuers` (each check only when its list is not empty).
    pub fn with_claims(mut self, audiences: &[String], issuers: &[String]) -> Self {
        self.validations = Arc::new(ALGORITHMS.map(|alg| validation(alg, audiences, issuers)));
        self
    }

    /// The same verifier with another bound on the `info` claim.
    pub fn with_max_info_bytes(mut self, max: usize) -> Self {
        self.max_info_bytes = max;
        self
    }

    /// The algorithms some key is for, in [`ALGORITHMS`] order.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let jwks = self.jwks.as_ref().map(|j| j.keys()).unwrap_or_default();
        ALGORITHMS.into_iter().filter(|a| self.keys.iter().chain(jwks.iter()).any(|k| k.alg == *a)).collect()
    }

    /// Verifies `token`; a `kid` no key has makes the JWKS (if any) be
    /// fetched again, at most once per its interval, before the answer.
    pub async fn check(&self, token: &str) -> Result<Claims, AuthError> {
        match (self.verify(token), &self.jwks) {
            (Err(AuthError::UnknownKey), Some(jwks)) => {
                jwks.refresh().await;
                self.verify(token)
            }
            (result, _) => result,
        }
    }

    /// Verifies `token` against the keys known now and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| self.classify(e.kind()))?;
        let Some(slot) = ALGORITHMS.iter().position(|a| *a == header.alg) else {
            return Err(self.classify(&ErrorKind::InvalidAlgorithm));
        };
        let jwks = self.jwks.as_ref().map(|j| j.keys()).unwrap_or_default();
        let of_alg = || self.keys.iter().chain(jwks.iter()).filter(|k| k.alg == header.alg);
        // A JWKS may publish a key of a new algorithm with a new `kid`.
        if of_alg().next().is_none() && (self.jwks.is_none() || header.kid.is_none()) {
            return Err(self.classify(&ErrorKind::InvalidAlgorithm));
        }
        // A token with a `kid`: the keys with that `kid`, then those without
        // one (configured keys). Without: every key of its algorithm.
        let fits = |k: &&Key| header.kid.is_none() || k.kid == header.kid;
        let named = of_alg().filter(|k| k.kid.is_some()).filter(fits);
        let mut candidates = named.chain(of_alg().filter(|k| k.kid.is_none())).peekable();
        if candidates.peek().is_none() {
            return Err(AuthError::UnknownKey);
        }
        let mut last = ErrorKind::InvalidSignature;
        let mut wire = None;
        for key in candidates {
            match jsonwebtoken::decode::<WireClaims>(token, &key.key, &self.validations[slot]) {
                Ok(data) => {
                    wire = Some(data.claims);
                    break;
                }
                // Not this key's signature: maybe the next one's.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {}
                // Signed by this key but unacceptable: that is the answer.
                Err(e) => {
                    last = e.into_kind();
                    break;
                }
            }
        }
        let wire = wire.ok_or_else(|| self.classify(&last))?;

        // `required_spec_claims` has already checked both are present; these
        // are belt and braces, not a second source of truth.
        let sub = wire.sub.ok_or_else(|| invalid("missing claim `sub`"))?;
        let exp = wire.exp.ok_or_else(|| invalid("missing claim `exp`"))?;

        // jsonwebtoken accepts `exp == now`; by RFC 7519 the token must be
        // rejected "on or after" its expiry.
        if exp <= now_secs() {
            return Err(AuthError::Expired);
        }
        // `sub` becomes part of NATS subjects: it must not be able to add a
        // level (`.`) or a wildcard to one.
        if !proto::subject::valid_id(&sub) {
            return Err(AuthError::Invalid(format!(
                "claim `sub` is not a valid user id ({})",
                proto::subject::ID_RULE
            )));
        }

        if wire.info.as_ref().is_some_and(|i| i.get().len() > self.max_info_bytes) {
            return Err(AuthError::InfoTooLarge { limit: self.max_info_bytes });
        }
        Ok(Claims {
            sub,
            exp,
            rooms: globs("rooms", wire.rooms)?,
            publish: globs("publish", wire.publish)?,
            send: globs("send", wire.send)?,
            watch: globs("watch", wire.watch)?,
            info: wire.info,
        })
    }

    /// Turns a jsonwebtoken error into a message that is useful to whoever
    /// minted the token yet cannot leak it: only fixed strings and claim names.
    fn classify(&self, kind: &ErrorKind) -> AuthError {
        match kind {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => invalid("bad signature"),
            ErrorKind::InvalidAlgorithm => {
                let algs: Vec<String> = self.algorithms().iter().map(|a| format!("{a:?}")).collect();
                AuthError::Invalid(format!("wrong algorithm, this server accepts only {}", algs.join(", ")))
            }
            ErrorKind::InvalidAudience => AuthError::Claim("aud"),
            ErrorKind::InvalidIssuer => AuthError::Claim("iss"),
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::Claim("aud"),
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::Claim("iss"),
            ErrorKind::MissingRequiredClaim(claim) => AuthError::Invalid(format!("missing claim `{claim}`")),
            ErrorKind::InvalidClaimFormat(claim) => AuthError::Invalid(format!("malformed claim `{claim}`")),
            ErrorKind::ImmatureSignature => invalid("not valid yet (`nbf` is in the future)"),
            // Bad base64 or JSON, a wrong claim type, an unknown `alg` such as
            // `none`: serde's messages may quote the payload, so say less.
            _ => invalid("malformed token"),
        }
    }
}

/// What a token of `alg` must satisfy besides its signature.
fn validation(alg: Algorithm, audiences: &[String], issuers: &[String]) -> Validation {
    let mut v = Validation::new(alg);
    let mut required = vec!["exp", "sub"];
    // A token is expired the second its `exp` is reached; clock skew is
    // the issuer's business (it can mint tokens that live a bit longer).
    v.leeway = 0;
    v.validate_exp = true;
    v.validate_nbf = true;
    // Without `--jwt-audience` the gateway has no audience of its own to
    // compare against, so an `aud` claim is ignored rather than rejected.
    v.validate_aud = !audiences.is_empty();
    if v.validate_aud {
        v.set_audience(audiences);
        required.push("aud");
    }
    if !issuers.is_empty() {
        v.set_issuer(issuers);
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    v
}

impl Claims {
    /// The `info` claim's JSON text, or empty when there is none.
    pub fn info_bytes(&self) -> Bytes {
        match &self.info {
            Some(raw) => Bytes::copy_from_slice(raw.get().as_bytes()),
            None => Bytes::new(),
        }
    }
}

impl AuthError {
    /// How to end the connection: 4501 for an expired token, else 4500.
    pub fn close(&self) -> Close {
        match self {
            AuthError::Expired => Close::TOKEN_EXPIRED,
            AuthError::Invalid(_) => Close::new(close::UNAUTHORIZED, "unauthorized"),
            AuthError::InfoTooLarge { .. } => Close::new(close::UNAUTHORIZED, "info claim too large"),
            AuthError::Claim(_) | AuthError::UnknownKey => Close::new(close::UNAUTHORIZED, "unauthorized"),
        }
    }

    /// The `reason` label of `switchboard_gateway_connections_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Claim("aud") => "wrong_audience",
            AuthError::Claim(_) => "wrong_issuer",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Expired | AuthError::Invalid(_) | AuthError::InfoTooLarge { .. } => "unauthorized",
        }
    }
}

/// The token a WebSocket upgrade request carries, if any:
/// `Authorization: Bearer <token>` first, else `token=` in the URL query.
///
/// Browsers cannot set headers on a WebSocket, hence the query fallback. The
/// query value is percent-decoded, but `+` is left alone: JWTs never contain
/// spaces, and a `+` from standard base64 should reach the verifier intact.
pub fn token_from_request(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    for value in headers.get_all(AUTHORIZATION) {
        let Ok(value) = value.to_str() else { continue };
        if let Some((scheme, token)) = value.trim().split_once(' ') {
            let token = token.trim();
            if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
                return Some(token.to_owned());
            }
        }
    }

    query?
        .split('&')
        .find_map(|pair| match pair.split_once('=') {
            Some(("token", value)) => Some(percent_decode(value)),
            _ => None,
        })
        .filter(|token| !token.is_empty())
}

/// Decodes `%XX` escapes; a malformed escape is kept as it is, so that a
/// mangled token is reported as invalid rather than as missing.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn invalid(why: &str) -> AuthError {
    AuthError::Invalid(why.to_owned())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
