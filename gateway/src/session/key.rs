//! One key a token may be signed with, and the one algorithm it is for.
//!
//! A key is bound to its algorithm when it is loaded (HS256 for a secret,
//! RS256 for an RSA public key, ES256 for a P-256 one), never by the token:
//! letting the token's header choose is how JWT libraries got broken (`alg:
//! none`, or an HS256 token "signed" with the RSA public key as the HMAC
//! secret). Keys come from the command line (no `kid`: tried for any token
//! of their algorithm) or from a JWKS (by `kid`).

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Shortest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// A verification key for exactly one algorithm.
#[derive(Clone)]
pub struct Key {
    pub(super) alg: Algorithm,
    /// The JWKS `kid`; `None` for a key given on the command line.
    pub(super) kid: Option<String>,
    pub(super) key: DecodingKey,
}

impl std::fmt::Debug for Key {
    // Never the key material: a secret must stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("alg", &self.alg).field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// Why a key cannot be used.
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
    /// Neither RSA nor EC, or a JWK whose `alg` or `use` says it is not for
    /// RS256/ES256 signatures.
    #[error("unsupported public key type; only RSA (RS256) and EC P-256 (ES256) are accepted")]
    Unsupported,
}

impl Key {
    /// An HS256 secret. The caller refuses short secrets at configuration time.
    pub fn hs256(secret: &[u8]) -> Key {
        Key { alg: Algorithm::HS256, kid: None, key: DecodingKey::from_secret(secret) }
    }

    /// The public key in `pem`: RS256 for an RSA key, ES256 for an EC P-256
    /// key. Anything else, private keys included, is refused.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Key, KeyError> {
        let label = pem_label(pem).ok_or(KeyError::NotPem)?;
        if label != "PUBLIC KEY" && label != "RSA PUBLIC KEY" {
            return Err(KeyError::NotPublicKey(label.to_owned()));
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            // `from_rsa_pem` only slices the DER out of the file; parse it now
            // so that a bad key fails at startup rather than on every token.
            let jwk = Jwk::from_decoding_key(&key, Some(Algorithm::RS256))
                .map_err(|e| KeyError::InvalidRsa(e.to_string()))?;
            check(&jwk)?;
            return Ok(Key { alg: Algorithm::RS256, kid: None, key });
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            let jwk = Jwk::from_decoding_key(&key, Some(Algorithm::ES256))
                .map_err(|_| KeyError::UnsupportedCurve("unknown".into()))?;
            check(&jwk)?;
            return Ok(Key { alg: Algorithm::ES256, kid: None, key });
        }
        Err(KeyError::Unsupported)
    }

    /// A key from a JWKS. Only RSA and P-256 signature keys: a symmetric
    /// key in a published set would be a shared secret made public.
    pub fn from_jwk(jwk: &Jwk) -> Result<Key, KeyError> {
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            return Err(KeyError::Unsupported);
        }
        let alg = check(jwk)?;
        // The key's own `alg`, when it states one, must agree with its type.
        match &jwk.common.key_algorithm {
            None => {}
            Some(KeyAlgorithm::RS256) if alg == Algorithm::RS256 => {}
            Some(KeyAlgorithm::ES256) if alg == Algorithm::ES256 => {}
            Some(_) => return Err(KeyError::Unsupported),
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| KeyError::Unsupported)?;
        Ok(Key { alg, kid: jwk.common.key_id.clone(), key })
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// The algorithm a public key is for, once it is known to be strong enough.
fn check(jwk: &Jwk) -> Result<Algorithm, KeyError> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            // `n` is unpadded base64url: 4 characters per 3 bytes.
            let modulus_bytes = rsa.n.len() * 3 / 4;
            if modulus_bytes < MIN_RSA_MODULUS_BYTES {
                return Err(KeyError::InvalidRsa(format!(
                    "{}-bit modulus, at least 2048 bits required",
                    modulus_bytes * 8
                )));
            }
            Ok(Algorithm::RS256)
        }
        // The key alone does not say which ES* algorithm it is for; the
        // curve does, and ES256 means P-256.
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Ok(Algorithm::ES256),
        AlgorithmParameters::EllipticCurve(ec) => Err(KeyError::UnsupportedCurve(format!("{:?}", ec.curve))),
        _ => Err(KeyError::Unsupported),
    }
}

/// The label of the first PEM block, e.g. `PUBLIC KEY`.
fn pem_label(pem: &[u8]) -> Option<&str> {
    const BEGIN: &str = "-----BEGIN ";
    let text = std::str::from_utf8(pem).ok()?;
    let rest = &text[text.find(BEGIN)? + BEGIN.len()..];
    Some(&rest[..rest.find("-----")?])
}
