//! `gateway token`: mint a client token with this gateway's own key, or say
//! whether the gateway would accept one and why not.
//!
//! It reads the same flags as the server (`--jwt-secret`, `--jwt-public-key`,
//! `--jwks-url`, `--jwt-audience`, `--jwt-issuer`, their `SB_…` variables and
//! `_FILE` twins), so `--check` answers with the server's own verifier,
//! JWKS included, and a minted token carries the audience and issuer the
//! server asks for. Minting needs a signing key: a secret or
//! `--jwt-private-key`; a gateway that only verifies (public keys, a JWKS)
//! cannot mint, and says so.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

use crate::config::Config;

/// `gateway token` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct TokenArgs {
    /// Check this token against the gateway's keys and claim rules instead of minting one.
    #[arg(long, value_name = "JWT")]
    pub check: Option<String>,
    /// The user id (`sub`).
    #[arg(long, required_unless_present = "check")]
    pub sub: Option<String>,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = shell::cli::duration)]
    pub ttl: Duration,
    /// Room globs the user may join (comma-separated); default: the gateway's --default-rooms.
    #[arg(long, value_delimiter = ',')]
    pub rooms: Option<Vec<String>>,
    /// Room globs the user may publish to; default: the rooms it may join.
    #[arg(long, value_delimiter = ',')]
    pub publish: Option<Vec<String>>,
    /// User globs the user may message; default: --default-send.
    #[arg(long, value_delimiter = ',')]
    pub send: Option<Vec<String>>,
    /// User globs whose presence the user may see; default: --default-watch.
    #[arg(long, value_delimiter = ',')]
    pub watch: Option<Vec<String>>,
    /// JSON shown to the members of the user's rooms.
    #[arg(long)]
    pub info: Option<String>,
    /// PEM private key (RSA: RS256, P-256: ES256) to sign with instead of --jwt-secret.
    #[arg(long, env = "SB_JWT_PRIVATE_KEY")]
    pub jwt_private_key: Option<PathBuf>,
}

/// Prints a token, or the verdict on one (exit status 1 when refused).
pub async fn run(config: &Config, args: &TokenArgs) -> anyhow::Result<()> {
    match &args.check {
        Some(token) => check(config, token).await,
        None => {
            println!("{}", mint(config, args)?);
            Ok(())
        }
    }
}

async fn check(config: &Config, token: &str) -> anyhow::Result<()> {
    let (verifier, _) = crate::node::server::verifier(config).await?;
    let verifier = verifier.with_max_info_bytes(config.limits.max_info_bytes);
    match verifier.check(token.trim()).await {
        Ok(claims) => {
            let left = claims.exp - now();
            println!("accepted: user {:?}, expires in {left} s", claims.sub);
            let globs = |name: &str, v: &Option<Vec<String>>, default: &str| match v {
                Some(list) => println!("  {name:<8} {}", list.join(", ")),
                None => println!("  {name:<8} (not in the token: {default})"),
            };
            globs("rooms", &claims.rooms, &format!("--default-rooms {}", config.default_rooms));
            globs("publish", &claims.publish, "the rooms it may join");
            globs("send", &claims.send, &format!("--default-send {}", config.default_send));
            globs("watch", &claims.watch, &format!("--default-watch {}", config.default_watch));
            Ok(())
        }
        Err(e) => {
            let close = e.close();
            let why = match &e {
                crate::session::auth::AuthError::Expired => "its exp has passed: mint a new one",
                crate::session::auth::AuthError::Invalid(_) => {
                    "not signed by a key this gateway has, malformed, or missing a required claim"
                }
                crate::session::auth::AuthError::Claim("aud") => "its aud names none of --jwt-audience",
                crate::session::auth::AuthError::Claim(_) => "its iss is none of --jwt-issuer",
                crate::session::auth::AuthError::UnknownKey => "its kid names no key, even in a fresh JWKS",
                crate::session::auth::AuthError::InfoTooLarge { .. } => "its info claim is over --max-info-bytes",
            };
            println!("refused: {e} ({why}); a client would be closed {} ({})", close.code, e.reason());
            std::process::exit(1);
        }
    }
}

fn mint(config: &Config, args: &TokenArgs) -> anyhow::Result<String> {
    let (alg, key) = signing_key(config, args)?;
    let sub = args.sub.as_deref().expect("clap requires --sub without --check");
    let now = now();
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(sub));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + args.ttl.as_secs().max(1) as i64));
    for (name, value) in
        [("rooms", &args.rooms), ("publish", &args.publish), ("send", &args.send), ("watch", &args.watch)]
    {
        if let Some(list) = value {
            claims.insert(name.into(), json!(list));
        }
    }
    if let Some(info) = &args.info {
        let info: Value = serde_json::from_str(info).context("--info is not JSON")?;
        claims.insert("info".into(), info);
    }
    // What this gateway asks of tokens, so that it accepts its own.
    if let Some(aud) = config.tokens.jwt_audience.first() {
        claims.insert("aud".into(), json!(aud));
    }
    if let Some(iss) = config.tokens.jwt_issuer.first() {
        claims.insert("iss".into(), json!(iss));
    }
    Ok(jsonwebtoken::encode(&Header::new(alg), &Value::Object(claims), &key)?)
}

/// `--jwt-private-key`, else the first `--jwt-secret`.
fn signing_key(config: &Config, args: &TokenArgs) -> anyhow::Result<(Algorithm, EncodingKey)> {
    if let Some(path) = &args.jwt_private_key {
        let pem = std::fs::read(path).with_context(|| format!("--jwt-private-key {}", path.display()))?;
        if let Ok(key) = EncodingKey::from_ec_pem(&pem) {
            return Ok((Algorithm::ES256, key));
        }
        let key = EncodingKey::from_rsa_pem(&pem)
            .with_context(|| format!("--jwt-private-key {}: neither a P-256 nor an RSA private key", path.display()))?;
        return Ok((Algorithm::RS256, key));
    }
    match config.tokens.jwt_secrets.first() {
        Some(secret) => Ok((Algorithm::HS256, EncodingKey::from_secret(secret.as_bytes()))),
        None if !config.tokens.jwt_public_keys.is_empty() || config.tokens.jwks_url.is_some() => bail!(
            "this gateway only verifies tokens (--jwt-public-key, --jwks-url): minting needs the private half, \
             --jwt-private-key, or a --jwt-secret"
        ),
        None => bail!("no key to sign with: give --jwt-secret or --jwt-private-key"),
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
