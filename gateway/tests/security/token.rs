//! `gateway token`: tokens it mints are accepted by a gateway with the same
//! keys, `--check` explains what a gateway would say, and a gateway that
//! only verifies refuses to mint with a clear line.

use std::process::{Command, Output};

use loadtest::token::{mint, SigningKey, TokenSpec};

use super::*;

const SECRET: &str = "token-cli-secret-of-32-bytes-or-more";

fn gateway_cmd(args: &[&str]) -> Output {
    Command::new(process::binary("gateway")).args(args).env_remove("SB_JWT_SECRET").output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn minted(args: &[&str]) -> String {
    let out = gateway_cmd(args);
    assert!(out.status.success(), "gateway {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    stdout(&out).trim().to_owned()
}

/// `gateway token --check` with `flags`: (accepted, what it printed).
fn check(flags: &[&str], token: &str) -> (bool, String) {
    let out = gateway_cmd(&[&["token"], flags, &["--check", token]].concat());
    (out.status.success(), stdout(&out))
}

#[tokio::test]
async fn minted_tokens_are_accepted_by_a_gateway_with_the_same_keys() {
    let token = minted(&["token", "--jwt-secret", SECRET, "--sub", "alice", "--rooms", "lobby,team:*", "--ttl", "10m"]);
    let gw = Gateway::start_raw(&["--jwt-secret", SECRET], SECRET.to_owned());
    let mut c = Client::connect(gw.options(Some(&token))).await.unwrap();
    let hello = c.next_json(T).await.unwrap();
    assert_eq!((hello["type"].as_str(), hello["user"].as_str()), (Some("hello"), Some("alice")), "{hello}");
    join(&mut c, "team:red").await;
    let refused = c.request(json!({"op": "join", "room": "elsewhere"})).await.unwrap();
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");

    // ES256 from --jwt-private-key, for a gateway that holds the public half.
    let es = minted(&["token", "--jwt-private-key", &format!("{KEYS}/ec_private.pem"), "--sub", "bob"]);
    let gw = Gateway::start_raw(&["--jwt-public-key", &format!("{KEYS}/ec_public.pem")], String::new());
    assert_eq!(outcome(&gw, &es).await, None, "the ES256 token is accepted");
    // A minted token names the audience and issuer the gateway asks for.
    let rules = ["--jwt-secret", SECRET, "--jwt-audience", "chat", "--jwt-issuer", "https://id.example"];
    let token = minted(&[&["token"], &rules[..], &["--sub", "carol"]].concat());
    let (ok, said) = check(&rules, &token);
    assert!(ok, "{said}");
}

#[test]
fn check_explains_why_a_gateway_would_refuse_a_token() {
    let key = SigningKey::hs256(SECRET.as_bytes().to_vec());
    let good = mint(&key, &TokenSpec::new("dave", 600));
    let (ok, said) = check(&["--jwt-secret", SECRET], &good);
    assert!(ok && said.starts_with("accepted: user \"dave\""), "{said}");

    let expired = mint(&key, &TokenSpec::new("dave", -60));
    let forged =
        mint(&SigningKey::hs256(b"another-secret-of-32-bytes-or-more!!".to_vec()), &TokenSpec::new("dave", 600));
    for (what, flags, token, says) in [
        ("expired", &["--jwt-secret", SECRET][..], &expired, ["expired", "4501"]),
        ("forged", &["--jwt-secret", SECRET][..], &forged, ["signature", "4500"]),
        ("wrong audience", &["--jwt-secret", SECRET, "--jwt-audience", "chat"][..], &good, ["aud", "wrong_audience"]),
    ] {
        let (ok, said) = check(flags, token);
        assert!(!ok, "{what}: accepted: {said}");
        assert!(said.starts_with("refused:") && says.iter().all(|s| said.contains(s)), "{what}: {said}");
    }
}

#[test]
fn a_gateway_that_only_verifies_cannot_mint() {
    let out = gateway_cmd(&["token", "--jwt-public-key", &format!("{KEYS}/rsa_public.pem"), "--sub", "eve"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only verifies") && err.contains("--jwt-private-key"), "{err}");
    assert!(stdout(&out).is_empty(), "nothing that looks like a token: {}", stdout(&out));
}
