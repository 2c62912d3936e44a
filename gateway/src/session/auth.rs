//! Who is connecting: the JWT a client presents and what it grants.
//!
//! A client proves its identity with a JWT, signed either with a secret the
//! gateway shares with the application backend (HS256) or with the backend's
//! private key, the gateway holding only the public key (RS256 or ES256). The
//! token names the user (`sub`), bounds the session (`exp`), and may restrict
//! the rooms the user can join (`rooms`) and carry what other members see of
//! them (`info`).
//!
//! A [`Verifier`] accepts exactly one algorithm, the one its key is for.
//! Letting the token's header choose is how JWT libraries got broken: `alg:
//! none`, or an HS256 token "signed" with the RSA public key as the HMAC
//! secret. Failures come back as [`AuthError`], which knows its WebSocket
//! close code and never contains the token: tokens are credentials and must
//! stay out of logs.

use bytes::Bytes;
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use proto::client::close::{self, Close};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Shortest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// Checks tokens against one key, for one algorithm.
#[derive(Clone, Debug)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
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
}

/// Why a public key file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No `-----BEGIN …-----` line.
    #[error("not a PEM file")]
    NotPem,
    /// A PEM file, but not a public key; the label is included.
    #[error(
        "expected a public key (-----BEGIN PUBLIC KEY-----), found -----BEGIN {0}-----; \
         `openssl pkey -in private.pem -pubout` extracts the public key"
    )]
    NotPublicKey(String),
    /// An RSA key that does not parse or is too short.
    #[error("unusable RSA public key: {0}")]
    InvalidRsa(String),
    /// An EC key on a curve other than P-256.
    #[error("EC public key on curve {0} is not supported; only P-256 (ES256) is")]
    UnsupportedCurve(String),
    /// Neither RSA nor EC.
    #[error("unsupported public key type; only RSA (RS256) and EC P-256 (ES256) are accepted")]
    Unsupported,
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
    /// A verifier for HS256 tokens signed with `secret`.
    ///
    /// The caller should refuse an empty or short secret at configuration
    /// time; this function accepts whatever it is given.
    pub fn hs256(secret: &[u8]) -> Verifier {
        Verifier::new(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// A verifier for the public key in `pem`: RS256 for an RSA key, ES256 for
    /// an EC P-256 key. Anything else, private keys included, is refused.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Verifier, KeyError> {
        let label = pem_label(pem).ok_or(KeyError::NotPem)?;
        if label != "PUBLIC KEY" && label != "RSA PUBLIC KEY" {
            return Err(KeyError::NotPublicKey(label.to_owned()));
        }

        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            // `from_rsa_pem` only slices the DER out of the file; parse it now
            // so that a bad key fails at startup rather than on every token.
            let jwk = Jwk::from_decoding_key(&key, Some(Algorithm::RS256))
                .map_err(|e| KeyError::InvalidRsa(e.to_string()))?;
            let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
                return Err(KeyError::Unsupported);
            };
            // `n` is unpadded base64url: 4 characters per 3 bytes.
            let modulus_bytes = rsa.n.len() * 3 / 4;
            if modulus_bytes < MIN_RSA_MODULUS_BYTES {
                return Err(KeyError::InvalidRsa(format!(
                    "{}-bit modulus, at least 2048 bits required",
                    modulus_bytes * 8
                )));
            }
            return Ok(Verifier::new(key, Algorithm::RS256));
        }

        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            // The key alone does not say which ES* algorithm it is for; the
            // curve does, and ES256 means P-256.
            let curve = match Jwk::from_decoding_key(&key, Some(Algorithm::ES256)) {
                Ok(Jwk { algorithm: AlgorithmParameters::EllipticCurve(ec), .. }) => ec.curve,
                _ => return Err(KeyError::UnsupportedCurve("unknown".into())),
            };
            if curve != EllipticCurve::P256 {
                return Err(KeyError::UnsupportedCurve(format!("{curve:?}")));
            }
            return Ok(Verifier::new(key, Algorithm::ES256));
        }

        Err(KeyError::Unsupported)
    }

    fn new(key: DecodingKey, alg: Algorithm) -> Verifier {
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // A token is expired the second its `exp` is reached; clock skew is
        // the issuer's business (it can mint tokens that live a bit longer).
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // The gateway has no audience of its own to compare against, so an
        // `aud` claim is ignored rather than rejected.
        validation.validate_aud = false;
        Verifier { key, validation, max_info_bytes: MAX_INFO_BYTES }
    }

    /// The same verifier with another bound on the `info` claim.
    pub fn with_max_info_bytes(mut self, max: usize) -> Self {
        self.max_info_bytes = max;
        self
    }

    /// The one algorithm this verifier accepts.
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }

    /// Verifies `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let wire = jsonwebtoken::decode::<WireClaims>(token, &self.key, &self.validation)
            .map_err(|e| self.classify(e.kind()))?
            .claims;

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
                AuthError::Invalid(format!("wrong algorithm, this server accepts only {:?}", self.algorithm()))
            }
            ErrorKind::MissingRequiredClaim(claim) => AuthError::Invalid(format!("missing claim `{claim}`")),
            ErrorKind::InvalidClaimFormat(claim) => AuthError::Invalid(format!("malformed claim `{claim}`")),
            ErrorKind::ImmatureSignature => invalid("not valid yet (`nbf` is in the future)"),
            // Bad base64 or JSON, a wrong claim type, an unknown `alg` such as
            // `none`: serde's messages may quote the payload, so say less.
            _ => invalid("malformed token"),
        }
    }
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

/// The label of the first PEM block, e.g. `PUBLIC KEY`.
fn pem_label(pem: &[u8]) -> Option<&str> {
    const BEGIN: &str = "-----BEGIN ";
    let text = std::str::from_utf8(pem).ok()?;
    let rest = &text[text.find(BEGIN)? + BEGIN.len()..];
    Some(&rest[..rest.find("-----")?])
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
