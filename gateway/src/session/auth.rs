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
#[derive(Deserialize)]
struct WireClaims {
    sub: Option<String>,
    exp: Option<i64>,
    rooms: Option<Vec<String>>,
    info: Option<Box<RawValue>>,
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
        Ok(Claims { sub, exp, rooms: wire.rooms, info: wire.info })
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
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{json, Value};

    const SECRET: &[u8] = b"test-secret-of-a-reasonable-length";
    const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/keys/rsa_private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/keys/rsa_public.pem");
    const EC_PRIVATE: &[u8] = include_bytes!("../../tests/keys/ec_private.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("../../tests/keys/ec_public.pem");

    /// base64url of `{"alg":"none","typ":"JWT"}`.
    const NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

    fn claims(sub: &str, exp_in: i64) -> Value {
        json!({ "sub": sub, "exp": now_secs() + exp_in })
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
    }

    fn hs(claims: &Value) -> String {
        sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), claims)
    }

    fn rsa() -> Verifier {
        Verifier::from_public_key_pem(RSA_PUBLIC).unwrap()
    }

    fn ec() -> Verifier {
        Verifier::from_public_key_pem(EC_PUBLIC).unwrap()
    }

    /// Asserts `token` is refused as invalid, without the token in the
    /// message, and returns the message.
    fn refused(verifier: &Verifier, token: &str) -> String {
        match verifier.verify(token) {
            Err(err @ AuthError::Invalid(_)) => {
                let msg = err.to_string();
                assert!(token.is_empty() || !msg.contains(token), "{msg}");
                for part in token.split('.').filter(|p| p.len() > 8) {
                    assert!(!msg.contains(part), "{msg}");
                }
                assert_eq!(err.close().code, 4500);
                msg
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// The middle (claims) segment of a token.
    fn payload(token: &str) -> &str {
        token.split('.').nth(1).unwrap()
    }

    #[test]
    fn valid_hs256() {
        let mut c = claims("user:42", 60);
        c["rooms"] = json!(["chat:*", "news"]);
        c["info"] = json!({ "name": "Ann", "tags": [1, 2] });
        let claims = Verifier::hs256(SECRET).verify(&hs(&c)).unwrap();
        assert_eq!(claims.sub, "user:42");
        assert_eq!(claims.exp, c["exp"].as_i64().unwrap());
        assert_eq!(claims.rooms.as_deref().unwrap(), ["chat:*", "news"]);
        assert_eq!(&claims.info_bytes()[..], br#"{"name":"Ann","tags":[1,2]}"#.as_slice());
    }

    #[test]
    fn info_claims_are_bounded() {
        let mut c = claims("u", 60);
        c["info"] = json!("x".repeat(1020));
        let v = Verifier::hs256(SECRET);
        assert!(v.verify(&hs(&c)).is_ok(), "1022 bytes of JSON text");
        c["info"] = json!("x".repeat(1023));
        let err = v.verify(&hs(&c)).unwrap_err();
        assert_eq!((err.close().code, err.to_string()), (4500, "claim `info` is over 1024 bytes".to_owned()));
        assert!(v.with_max_info_bytes(4096).verify(&hs(&c)).is_ok(), "raised by the flag");
    }

    #[test]
    fn optional_claims_may_be_absent() {
        let verified = Verifier::hs256(SECRET).verify(&hs(&claims("u", 60))).unwrap();
        assert!(verified.rooms.is_none());
        assert!(verified.info.is_none());
        assert!(verified.info_bytes().is_empty());

        // An explicit `null` is the same as absent; unknown claims and `aud`
        // are ignored.
        let mut c = claims("u", 60);
        c["info"] = Value::Null;
        c["aud"] = json!("someone-else");
        c["iat"] = json!(now_secs());
        let verified = Verifier::hs256(SECRET).verify(&hs(&c)).unwrap();
        assert!(verified.info_bytes().is_empty());
    }

    #[test]
    fn expired() {
        let verifier = Verifier::hs256(SECRET);
        let err = verifier.verify(&hs(&claims("u", -10))).unwrap_err();
        assert_eq!(err, AuthError::Expired);
        assert_eq!(err.close().code, 4501);
        // Zero leeway: expired the moment `exp` is reached.
        assert_eq!(verifier.verify(&hs(&claims("u", 0))).unwrap_err(), AuthError::Expired);
        assert_eq!(verifier.verify(&hs(&claims("u", -1))).unwrap_err(), AuthError::Expired);
    }

    #[test]
    fn expired_but_forged_is_invalid_not_expired() {
        let token = sign(Algorithm::HS256, &EncodingKey::from_secret(b"other"), &claims("u", -10));
        refused(&Verifier::hs256(SECRET), &token);
    }

    #[test]
    fn not_before() {
        let verifier = Verifier::hs256(SECRET);
        let mut c = claims("u", 60);
        c["nbf"] = json!(now_secs() + 30);
        assert!(refused(&verifier, &hs(&c)).contains("nbf"));
        c["nbf"] = json!(now_secs() - 30);
        assert!(verifier.verify(&hs(&c)).is_ok());
    }

    #[test]
    fn forged_signature() {
        let genuine = hs(&claims("alice", 60));
        let mut forged_claims = claims("alice", 60);
        forged_claims["sub"] = json!("admin");
        let forged_payload = payload(&hs(&forged_claims)).to_owned();
        // Swap in another payload, keep the genuine header and signature.
        let mut parts: Vec<&str> = genuine.split('.').collect();
        parts[1] = &forged_payload;
        let token = parts.join(".");
        assert!(refused(&Verifier::hs256(SECRET), &token).contains("signature"));

        // Or keep the payload and corrupt the signature.
        let mut token = genuine.clone();
        let last = token.pop().unwrap();
        token.push(if last == 'A' { 'B' } else { 'A' });
        refused(&Verifier::hs256(SECRET), &token);
    }

    #[test]
    fn wrong_secret() {
        let token = sign(Algorithm::HS256, &EncodingKey::from_secret(b"not-the-secret"), &claims("u", 60));
        assert!(refused(&Verifier::hs256(SECRET), &token).contains("signature"));
    }

    #[test]
    fn alg_none_is_refused_by_every_verifier() {
        let genuine = hs(&claims("u", 60));
        let token = format!("{NONE_HEADER}.{}.", payload(&genuine));
        refused(&Verifier::hs256(SECRET), &token);
        refused(&rsa(), &token);
        refused(&ec(), &token);
        // Even with the genuine signature left on.
        let signature = genuine.rsplit('.').next().unwrap();
        refused(&Verifier::hs256(SECRET), &format!("{NONE_HEADER}.{}.{signature}", payload(&genuine)));
    }

    #[test]
    fn missing_claims() {
        let verifier = Verifier::hs256(SECRET);
        assert!(refused(&verifier, &hs(&json!({ "sub": "u" }))).contains("exp"));
        let exp = now_secs() + 60;
        assert!(refused(&verifier, &hs(&json!({ "exp": exp }))).contains("sub"));
        assert!(refused(&verifier, &hs(&json!({ "sub": null, "exp": exp }))).contains("sub"));
    }

    #[test]
    fn malformed_claims() {
        let verifier = Verifier::hs256(SECRET);
        let exp = now_secs() + 60;
        refused(&verifier, &hs(&json!({ "sub": 7, "exp": exp })));
        refused(&verifier, &hs(&json!({ "sub": "u", "exp": "soon" })));
        refused(&verifier, &hs(&json!({ "sub": "u", "exp": exp, "rooms": "*" })));
        refused(&verifier, &hs(&json!({ "sub": "u", "exp": -5 })));
    }

    #[test]
    fn invalid_sub() {
        let verifier = Verifier::hs256(SECRET);
        for sub in ["a.b", "", "a*", "a b", "é", &"x".repeat(129)] {
            assert!(refused(&verifier, &hs(&claims(sub, 60))).contains("sub"), "{sub}");
        }
        assert!(verifier.verify(&hs(&claims(&"x".repeat(128), 60))).is_ok());
    }

    #[test]
    fn malformed_tokens() {
        let verifier = Verifier::hs256(SECRET);
        for token in ["", "abc", "a.b", "a.b.c", "a.b.c.d", "...", "eyJ9.eyJ9.AAAA"] {
            refused(&verifier, token);
        }
    }

    #[test]
    fn valid_rs256() {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
        let verifier = rsa();
        assert_eq!(verifier.algorithm(), Algorithm::RS256);
        let token = sign(Algorithm::RS256, &key, &claims("u", 60));
        assert_eq!(verifier.verify(&token).unwrap().sub, "u");
        // RS256-family siblings are not accepted either.
        refused(&verifier, &sign(Algorithm::RS512, &key, &claims("u", 60)));
        refused(&verifier, &sign(Algorithm::PS256, &key, &claims("u", 60)));
    }

    #[test]
    fn valid_es256() {
        let key = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
        let verifier = ec();
        assert_eq!(verifier.algorithm(), Algorithm::ES256);
        let token = sign(Algorithm::ES256, &key, &claims("u", 60));
        assert_eq!(verifier.verify(&token).unwrap().sub, "u");
    }

    #[test]
    fn algorithms_do_not_cross() {
        let rsa_key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
        let ec_key = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
        let rs = sign(Algorithm::RS256, &rsa_key, &claims("u", 60));
        let es = sign(Algorithm::ES256, &ec_key, &claims("u", 60));
        let hs = hs(&claims("u", 60));

        assert!(refused(&Verifier::hs256(SECRET), &rs).contains("HS256"));
        refused(&Verifier::hs256(SECRET), &es);
        assert!(refused(&rsa(), &hs).contains("RS256"));
        refused(&rsa(), &es);
        refused(&ec(), &hs);
        refused(&ec(), &rs);
    }

    #[test]
    fn key_confusion_attack_is_refused() {
        // The classic attack: the public key is public, so sign an HS256
        // token with its PEM text as the HMAC secret and hope the server
        // verifies HS256 with "its key".
        for public in [RSA_PUBLIC, EC_PUBLIC] {
            let token = sign(Algorithm::HS256, &EncodingKey::from_secret(public), &claims("admin", 60));
            let verifier = Verifier::from_public_key_pem(public).unwrap();
            refused(&verifier, &token);
        }
    }

    #[test]
    fn rejects_unusable_key_files() {
        let err = |pem: &[u8]| Verifier::from_public_key_pem(pem).unwrap_err();

        assert_eq!(err(b"not a key"), KeyError::NotPem);
        assert_eq!(err(SECRET), KeyError::NotPem);
        assert_eq!(err(RSA_PRIVATE), KeyError::NotPublicKey("PRIVATE KEY".into()));
        assert_eq!(err(EC_PRIVATE), KeyError::NotPublicKey("PRIVATE KEY".into()));
        assert!(matches!(err(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), KeyError::Unsupported));

        let ed25519 = b"-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAkTEqQkXaMsaLgdI2DqVhe3V/pllIAOjSfJoXymCrn08=
-----END PUBLIC KEY-----
";
        assert_eq!(err(ed25519), KeyError::Unsupported);

        let p384 = b"-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEVetkLPu7ySdB+xWqFrJt9rDrg5Dje6z9
jxtxGfwrIk5YnVlNPWyT86sJQUhwJBquDRCz893oPRZIMdlY/vu6ZLsvNPylQ1Zo
D4k9AL90xt/uEm/6Y0fqUYfrTCrHe+gM
-----END PUBLIC KEY-----
";
        assert_eq!(err(p384), KeyError::UnsupportedCurve("P384".into()));

        let rsa_1024 = b"-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC8E52Jhgxxxx4I7Rk1KZH2Bmyz
vayg3n9ROWoTO61yxsgwPyfYg56HsozNlEhprnHLBMtC9QggyG6v7G1jak+beE5g
D+KMD5YzZxAtuKKnMZ7KPQktIPfHaoadH5ntX79jouuD7KAMNwkZm9jUlKYUKQnS
IcQuCTcoWr6lOSicDwIDAQAB
-----END PUBLIC KEY-----
";
        assert!(matches!(err(rsa_1024), KeyError::InvalidRsa(m) if m.contains("1024")));
    }

    fn headers(authorization: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in authorization {
            map.append(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn token_from_authorization_header() {
        for value in ["Bearer abc.def.ghi", "bearer abc.def.ghi", "BEARER  abc.def.ghi "] {
            assert_eq!(token_from_request(&headers(&[value]), None).as_deref(), Some("abc.def.ghi"), "{value}");
        }
        // The header wins over the query.
        assert_eq!(token_from_request(&headers(&["Bearer h"]), Some("token=q")).as_deref(), Some("h"));
        // Another scheme, or an empty bearer, falls back to the query.
        assert_eq!(token_from_request(&headers(&["Basic dXNlcjpwdw=="]), Some("token=q")).as_deref(), Some("q"));
        assert_eq!(token_from_request(&headers(&["Bearer "]), None), None);
        assert_eq!(token_from_request(&headers(&["Bearer"]), None), None);
        assert_eq!(token_from_request(&headers(&["Bearerabc"]), None), None);
        // A later Authorization header can still carry the bearer token.
        assert_eq!(token_from_request(&headers(&["Basic x", "Bearer b"]), None).as_deref(), Some("b"));
    }

    #[test]
    fn token_from_query() {
        let none = HeaderMap::new();
        let get = |q: &str| token_from_request(&none, Some(q));
        assert_eq!(get("token=abc.def.ghi").as_deref(), Some("abc.def.ghi"));
        assert_eq!(get("v=1&token=abc&x=2").as_deref(), Some("abc"));
        assert_eq!(get("token=a%2Eb%2ec%3d").as_deref(), Some("a.b.c="));
        assert_eq!(get("token=a+b").as_deref(), Some("a+b"));
        assert_eq!(get("token=a%zzb%4").as_deref(), Some("a%zzb%4"));
        assert_eq!(get("token=%E2%9C%93").as_deref(), Some("✓"));
        assert_eq!(get("token=%FF").as_deref(), Some("\u{FFFD}"));
        assert_eq!(get("token="), None);
        assert_eq!(get("token"), None);
        assert_eq!(get("xtoken=abc&tokens=def"), None);
        assert_eq!(get(""), None);
        assert_eq!(token_from_request(&none, None), None);
    }
}
