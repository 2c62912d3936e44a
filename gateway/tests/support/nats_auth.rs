//! NATS with security, started for real: a server configuration with TLS
//! and one user per service kind (permissions from `proto::permissions`),
//! and decentralized auth — operator, account and user JWTs signed with
//! nkeys, served by a memory resolver — for `.creds` files (there is no
//! `nsc` here, so this is what it would write).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

/// A NATS JWT: `{"typ":"JWT","alg":"ed25519-nkey"}`, `claims` completed
/// with `iss`, `sub`, `iat`, `jti`, signed by `issuer`.
pub fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let iat = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({
        "jti": format!("{:032X}", rand::random::<u128>()),
        "iat": iat,
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let signed = format!("{header}.{body}");
    let sig = URL_SAFE_NO_PAD.encode(issuer.sign(signed.as_bytes()).unwrap());
    format!("{signed}.{sig}")
}

/// No limit, in NATS JWT limits.
const NO_LIMIT: i64 = -1;

/// An operator, one account, and users of that account.
pub struct Operator {
    operator: nkeys::KeyPair,
    pub account: nkeys::KeyPair,
}

impl Operator {
    pub fn new() -> Self {
        Self { operator: nkeys::KeyPair::new_operator(), account: nkeys::KeyPair::new_account() }
    }

    /// The server configuration: operator mode, the account preloaded in a
    /// memory resolver.
    pub fn server_conf(&self) -> String {
        let op = jwt(
            &self.operator,
            &self.operator.public_key(),
            "switchboard-test",
            json!({"type": "operator", "version": 2}),
        );
        let limits = json!({
            "subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT, "imports": NO_LIMIT,
            "exports": NO_LIMIT, "wildcards": true, "conn": NO_LIMIT, "leaf": NO_LIMIT,
        });
        let account = jwt(
            &self.operator,
            &self.account.public_key(),
            "switchboard",
            json!({"type": "account", "version": 2, "limits": limits}),
        );
        format!(
            "operator: \"{op}\"\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{account}\"\n}}\n",
            self.account.public_key()
        )
    }

    /// A `.creds` file's text for a user of `signer` (the account, or a
    /// stranger's key for a forged one) with `perms`' permissions.
    pub fn creds(signer: &nkeys::KeyPair, name: &str, perms: &proto::permissions::Permissions) -> String {
        let user = nkeys::KeyPair::new_user();
        let nats = json!({
            "type": "user", "version": 2,
            "pub": {"allow": perms.publish}, "sub": {"allow": perms.subscribe},
            "subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT,
        });
        let token = jwt(signer, &user.public_key(), name, nats);
        format!(
            "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        )
    }
}

/// A server configuration with TLS (`cert`, `key`) and one password user
/// per service kind, each with its kind's permissions (included from
/// `permissions.conf`, which the caller writes beside it).
pub fn users_conf(cert: &str, key: &str, password: impl Fn(&str) -> String) -> String {
    let users: Vec<String> = proto::permissions::ALL
        .iter()
        .map(|p| {
            format!(
                "    {{ user: \"{}\", password: \"{}\", permissions: ${}_PERMISSIONS }}",
                p.kind,
                password(p.kind),
                p.kind.to_uppercase()
            )
        })
        .collect();
    format!(
        "include ./permissions.conf\ntls {{\n  cert_file: \"{cert}\"\n  key_file: \"{key}\"\n}}\n\
         authorization {{\n  users = [\n{}\n  ]\n}}\n",
        users.join("\n")
    )
}
