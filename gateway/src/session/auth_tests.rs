//! Tests of [`super`] (auth.rs).

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
    assert_eq!(verifier.algorithms(), [Algorithm::RS256]);
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
    assert_eq!(verifier.algorithms(), [Algorithm::ES256]);
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

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap()
}

/// A JWK of `public` (PEM) with `kid`.
fn jwk(public: &[u8], alg: Algorithm, kid: &str) -> jsonwebtoken::jwk::Jwk {
    let key = Key::from_public_key_pem(public).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_decoding_key(&key.key, Some(alg)).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk
}

fn with_kid(alg: Algorithm, key: &EncodingKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

#[test]
fn several_keys_of_several_kinds() {
    // A rotation from one secret to another and from HS256 to RS256: every
    // configured key verifies its own tokens, whatever the order.
    let other = b"another-secret-of-a-reasonable-length";
    let verifier = Verifier::new(vec![
        Key::hs256(other),
        Key::from_public_key_pem(RSA_PUBLIC).unwrap(),
        Key::hs256(SECRET),
        Key::from_public_key_pem(EC_PUBLIC).unwrap(),
    ]);
    assert_eq!(verifier.algorithms(), [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256]);
    let ec_key = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
    for token in [
        hs(&claims("u", 60)),
        sign(Algorithm::HS256, &EncodingKey::from_secret(other), &claims("u", 60)),
        sign(Algorithm::RS256, &rsa_key(), &claims("u", 60)),
        sign(Algorithm::ES256, &ec_key, &claims("u", 60)),
    ] {
        assert_eq!(verifier.verify(&token).unwrap().sub, "u");
    }
    // A signature no key makes is still a bad signature; a genuine token's
    // own fault (expired) is reported even when another key came first.
    assert!(refused(&verifier, &sign(Algorithm::HS256, &EncodingKey::from_secret(b"x"), &claims("u", 60)))
        .contains("bad signature"));
    assert_eq!(verifier.verify(&hs(&claims("u", -5))).unwrap_err(), AuthError::Expired);
    // Still no algorithm crossing: an HS256 token made with a public key's
    // text is tried only against the secrets.
    refused(&verifier, &sign(Algorithm::HS256, &EncodingKey::from_secret(RSA_PUBLIC), &claims("admin", 60)));
    // With only an RS256 key left (the secret removed), HS256 tokens fail.
    let rs_only = Verifier::new(vec![Key::from_public_key_pem(RSA_PUBLIC).unwrap()]);
    assert!(refused(&rs_only, &hs(&claims("u", 60))).contains("accepts only RS256"));
}

#[test]
fn keys_are_chosen_by_kid() {
    let keys = vec![
        Key::from_jwk(&jwk(RSA_PUBLIC, Algorithm::RS256, "rsa-1")).unwrap(),
        Key::from_jwk(&jwk(EC_PUBLIC, Algorithm::ES256, "ec-1")).unwrap(),
    ];
    let verifier = Verifier::new(keys);
    let token = |kid| with_kid(Algorithm::RS256, &rsa_key(), kid, &claims("u", 60));
    assert_eq!(verifier.verify(&token("rsa-1")).unwrap().sub, "u");
    // A kid nobody has: the JWKS may know it (Verifier::check asks again).
    assert_eq!(verifier.verify(&token("rsa-2")).unwrap_err(), AuthError::UnknownKey);
    // The kid of a key of another algorithm is no help either.
    assert_eq!(verifier.verify(&token("ec-1")).unwrap_err(), AuthError::UnknownKey);
    assert_eq!(AuthError::UnknownKey.reason(), "unknown_key");
    assert_eq!(AuthError::UnknownKey.close().code, 4500);
    // A token without a kid is tried against every key of its algorithm.
    assert_eq!(verifier.verify(&sign(Algorithm::RS256, &rsa_key(), &claims("u", 60))).unwrap().sub, "u");
    // Configured keys (no kid) are tried for tokens with any kid.
    let configured = Verifier::new(vec![Key::hs256(SECRET)]);
    let hs_kid = with_kid(Algorithm::HS256, &EncodingKey::from_secret(SECRET), "whatever", &claims("u", 60));
    assert_eq!(configured.verify(&hs_kid).unwrap().sub, "u");
}

#[test]
fn audience_and_issuer() {
    let verifier =
        Verifier::hs256(SECRET).with_claims(&["chat".into(), "games".into()], &["https://id.example".into()]);
    let token = |extra: Value| {
        let mut c = claims("u", 60);
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        hs(&c)
    };
    // (claims, the error or None for accepted)
    let cases: Vec<(Value, Option<AuthError>)> = vec![
        (json!({"aud": "chat", "iss": "https://id.example"}), None),
        (json!({"aud": ["other", "games"], "iss": "https://id.example"}), None),
        (json!({"aud": "other", "iss": "https://id.example"}), Some(AuthError::Claim("aud"))),
        (json!({"iss": "https://id.example"}), Some(AuthError::Claim("aud"))),
        (json!({"aud": "chat", "iss": "https://evil.example"}), Some(AuthError::Claim("iss"))),
        (json!({"aud": "chat"}), Some(AuthError::Claim("iss"))),
    ];
    for (extra, want) in cases {
        let got = verifier.verify(&token(extra.clone()));
        match want {
            None => assert_eq!(got.unwrap().sub, "u", "{extra}"),
            Some(want) => assert_eq!(got.unwrap_err(), want, "{extra}"),
        }
    }
    assert_eq!(AuthError::Claim("aud").reason(), "wrong_audience");
    assert_eq!(AuthError::Claim("iss").reason(), "wrong_issuer");
    assert_eq!(AuthError::Claim("aud").close().code, 4500);
    // Without --jwt-audience an `aud` claim is ignored, as before.
    assert!(Verifier::hs256(SECRET).verify(&token(json!({"aud": "anything"}))).is_ok());
}

#[test]
fn jwks_bodies() {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    let rsa = jwk(RSA_PUBLIC, Algorithm::RS256, "r");
    let ec = jwk(EC_PUBLIC, Algorithm::ES256, "e");
    let mut enc = rsa.clone();
    enc.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Encryption);
    let mut mislabeled = rsa.clone();
    mislabeled.common.key_algorithm = Some(jsonwebtoken::jwk::KeyAlgorithm::HS256);
    let oct: Jwk = serde_json::from_value(json!({"kty": "oct", "k": "c2VjcmV0", "kid": "o"})).unwrap();
    let set = |keys: Vec<Jwk>| serde_json::to_vec(&JwkSet { keys }).unwrap();
    let kids = |body: &[u8]| {
        super::super::jwks::parse(body).map(|ks| ks.iter().map(|k| k.kid.clone().unwrap()).collect::<Vec<_>>())
    };
    assert_eq!(kids(&set(vec![rsa.clone(), ec.clone()])).unwrap(), ["r", "e"]);
    // Keys it cannot use are skipped, not fatal.
    assert_eq!(kids(&set(vec![oct.clone(), enc.clone(), mislabeled.clone(), ec])).unwrap(), ["e"]);
    let mut unknown_kty = serde_json::to_value(JwkSet { keys: vec![rsa] }).unwrap();
    unknown_kty["keys"].as_array_mut().unwrap().push(json!({"kty": "PQC", "kid": "q"}));
    assert_eq!(kids(&serde_json::to_vec(&unknown_kty).unwrap()).unwrap(), ["r"]);
    // No usable key, or not a JWKS at all: an error (the cached keys stay).
    for body in [set(vec![oct, enc, mislabeled]), b"{}".to_vec(), b"<html>".to_vec(), b"{\"keys\": 5}".to_vec()] {
        assert!(kids(&body).is_err(), "{}", String::from_utf8_lossy(&body));
    }
}
