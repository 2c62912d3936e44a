//! Minting client tokens for tests and load scenarios.
//!
//! In production the application backend issues tokens; the load generator
//! and the integration tests have to play that part themselves, with the same
//! claims the gateway reads (`sub`, `exp`, `rooms`, `info`, `publish`,
//! `send`, `watch`). They also need
//! tokens the gateway must refuse: expired ones (a negative
//! [`TokenSpec::exp_in`]) and unsigned `alg: none` ones
//! ([`mint_unsigned_none`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// A key to sign tokens with, and so the algorithm to sign them for.
#[derive(Clone)]
pub enum SigningKey {
    /// HS256 with a shared secret.
    Hs256(Vec<u8>),
    /// RS256 with an RSA private key.
    Rs256(EncodingKey),
    /// ES256 with an EC P-256 private key.
    Es256(EncodingKey),
}

/// Shows the algorithm only: the key is a secret.
impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({:?})", self.algorithm())
    }
}

/// Why a private key file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a PKCS#1 RSA or PKCS#8 RSA / EC private key.
    #[error(
        "expected an RSA or EC P-256 private key in PEM form \
         (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)"
    )]
    Unsupported,
    /// An EC key on a curve other than P-256.
    #[error("only EC P-256 (ES256) private keys are supported")]
    UnsupportedCurve,
}

/// What to put in a token.
#[derive(Clone, Debug, Default)]
pub struct TokenSpec {
    /// The user id.
    pub sub: String,
    /// Seconds from now until `exp`; zero or negative for a token that is
    /// already expired.
    pub exp_in: i64,
    /// Room globs the user may join; `None` leaves the claim out so the
    /// gateway's `--default-rooms` apply.
    pub rooms: Option<Vec<String>>,
    /// Opaque JSON shown to room members; `None` leaves the claim out.
    pub info: Option<serde_json::Value>,
    /// Room globs the user may publish to; `None`: the rooms it may join.
    pub publish: Option<Vec<String>>,
    /// User globs the user may message; `None`: the gateway's `--default-send`.
    pub send: Option<Vec<String>>,
    /// User globs whose presence the user may see; `None`: `--default-watch`.
    pub watch: Option<Vec<String>>,
}

impl TokenSpec {
    /// `sub`, valid for `exp_in` seconds, without optional claims.
    pub fn new(sub: impl Into<String>, exp_in: i64) -> Self {
        Self { sub: sub.into(), exp_in, ..Self::default() }
    }
}

/// The claims as serialized into the token.
#[derive(Serialize)]
struct WireClaims<'a> {
    sub: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rooms: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    send: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    watch: Option<&'a [String]>,
}

impl SigningKey {
    /// HS256 with `secret`, which must be the gateway's secret too.
    pub fn hs256(secret: impl Into<Vec<u8>>) -> SigningKey {
        SigningKey::Hs256(secret.into())
    }

    /// RS256 or ES256, whichever the private key in `pem` is for.
    pub fn from_private_key_pem(pem: &[u8]) -> Result<SigningKey, KeyError> {
        // `from_rsa_pem` also takes public keys and only fails when signing,
        // so deriving the public half checks that this really is a usable
        // private key, now rather than on the first token.
        if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
            return match Jwk::from_encoding_key(&key, Algorithm::RS256) {
                Ok(_) => Ok(SigningKey::Rs256(key)),
                Err(_) => Err(KeyError::Unsupported),
            };
        }
        if let Ok(key) = EncodingKey::from_ec_pem(pem) {
            // Deriving the ES256 public key parses the key as P-256, so this
            // also refuses other curves.
            return match Jwk::from_encoding_key(&key, Algorithm::ES256) {
                Ok(_) => Ok(SigningKey::Es256(key)),
                Err(_) => Err(KeyError::UnsupportedCurve),
            };
        }
        Err(KeyError::Unsupported)
    }

    /// The algorithm tokens are signed with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            SigningKey::Hs256(_) => Algorithm::HS256,
            SigningKey::Rs256(_) => Algorithm::RS256,
            SigningKey::Es256(_) => Algorithm::ES256,
        }
    }
}

/// Signs a token for `spec`.
///
/// # Panics
///
/// If signing fails, which only a key that [`SigningKey`]'s constructors
/// would have refused can cause.
pub fn mint(key: &SigningKey, spec: &TokenSpec) -> String {
    let claims = wire_claims(spec);
    let header = Header::new(key.algorithm());
    let result = match key {
        SigningKey::Hs256(secret) => jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)),
        SigningKey::Rs256(key) | SigningKey::Es256(key) => jsonwebtoken::encode(&header, &claims, key),
    };
    result.expect("signing a token with a validated key")
}

/// An unsigned `alg: none` token for `spec`: the gateway must refuse it.
pub fn mint_unsigned_none(spec: &TokenSpec) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = serde_json::to_vec(&wire_claims(spec)).expect("claims serialize");
    // The signature is empty, so the token ends with its last dot.
    format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims))
}

fn wire_claims(spec: &TokenSpec) -> WireClaims<'_> {
    let now = now_secs();
    WireClaims {
        sub: &spec.sub,
        iat: now,
        exp: now + spec.exp_in,
        rooms: spec.rooms.as_deref(),
        info: spec.info.as_ref(),
        publish: spec.publish.as_deref(),
        send: spec.send.as_deref(),
        watch: spec.watch.as_deref(),
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};
    use serde_json::{json, Value};

    const RSA_PRIVATE: &[u8] = include_bytes!("../../gateway/tests/keys/rsa_private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../../gateway/tests/keys/rsa_public.pem");
    const EC_PRIVATE: &[u8] = include_bytes!("../../gateway/tests/keys/ec_private.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("../../gateway/tests/keys/ec_public.pem");

    fn spec() -> TokenSpec {
        TokenSpec {
            sub: "user:1".into(),
            exp_in: 60,
            rooms: Some(vec!["chat:*".into()]),
            info: Some(json!({ "name": "Ann" })),
            ..TokenSpec::default()
        }
    }

    fn decode(token: &str, key: &DecodingKey, alg: Algorithm) -> Value {
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        jsonwebtoken::decode::<Value>(token, key, &validation).unwrap().claims
    }

    #[test]
    fn hs256_round_trip() {
        let token = mint(&SigningKey::hs256("s3cret"), &spec());
        let claims = decode(&token, &DecodingKey::from_secret(b"s3cret"), Algorithm::HS256);
        assert_eq!(claims["sub"], "user:1");
        assert_eq!(claims["rooms"], json!(["chat:*"]));
        assert_eq!(claims["info"], json!({ "name": "Ann" }));
        let exp = claims["exp"].as_i64().unwrap();
        assert!((now_secs() + 58..=now_secs() + 60).contains(&exp));
    }

    #[test]
    fn absent_options_are_left_out() {
        let spec = TokenSpec { rooms: None, info: None, ..spec() };
        let token = mint(&SigningKey::hs256("s"), &spec);
        let claims = decode(&token, &DecodingKey::from_secret(b"s"), Algorithm::HS256);
        assert!(claims.get("rooms").is_none());
        assert!(claims.get("info").is_none());
    }

    #[test]
    fn rs256_and_es256_round_trip() {
        let rsa = SigningKey::from_private_key_pem(RSA_PRIVATE).unwrap();
        assert_eq!(rsa.algorithm(), Algorithm::RS256);
        let public = DecodingKey::from_rsa_pem(RSA_PUBLIC).unwrap();
        assert_eq!(decode(&mint(&rsa, &spec()), &public, Algorithm::RS256)["sub"], "user:1");

        let ec = SigningKey::from_private_key_pem(EC_PRIVATE).unwrap();
        assert_eq!(ec.algorithm(), Algorithm::ES256);
        let public = DecodingKey::from_ec_pem(EC_PUBLIC).unwrap();
        assert_eq!(decode(&mint(&ec, &spec()), &public, Algorithm::ES256)["sub"], "user:1");
    }

    #[test]
    fn public_keys_and_garbage_are_refused() {
        for pem in [RSA_PUBLIC, EC_PUBLIC, b"nonsense".as_slice()] {
            assert!(SigningKey::from_private_key_pem(pem).is_err());
        }
    }

    #[test]
    fn expired_tokens() {
        let spec = TokenSpec { exp_in: -30, ..spec() };
        let token = mint(&SigningKey::hs256("s"), &spec);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        let err = jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(b"s"), &validation).unwrap_err();
        assert_eq!(*err.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature);
    }

    #[test]
    fn unsigned_none_token_shape() {
        let token = mint_unsigned_none(&spec());
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0");
        assert!(parts[2].is_empty());
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "user:1");
        // And no verifier accepts it.
        assert!(jsonwebtoken::decode::<Value>(
            &token,
            &DecodingKey::from_secret(b""),
            &Validation::new(Algorithm::HS256)
        )
        .is_err());
    }
}
