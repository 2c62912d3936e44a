//! Keys: rotation with several configured at once, secrets from files,
//! `aud`/`iss`, and a JWKS served by a real HTTP server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::DecodingKey;

use super::*;
use support::backend::{Backend, Reply};

const SECRET: &str = "security-test-secret-of-32-bytes-or-more";
const OTHER_SECRET: &str = "the-next-secret-of-32-bytes-or-more-too";

fn hs(secret: &str, sub: &str) -> String {
    token(Algorithm::HS256, &EncodingKey::from_secret(secret.as_bytes()), None, sub, json!({}))
}

fn rs(kid: Option<&str>, sub: &str) -> String {
    token(Algorithm::RS256, &rsa_private(), kid, sub, json!({}))
}

fn es(kid: Option<&str>, sub: &str) -> String {
    token(Algorithm::ES256, &ec_private(), kid, sub, json!({}))
}

fn rejected(metrics: &str, reason: &str) -> f64 {
    metric(metrics, &format!("switchboard_gateway_connections_rejected_total{{reason=\"{reason}\"}}"))
}

#[tokio::test]
async fn rotation_from_hs256_to_rs256_with_both_keys_configured() {
    let public = format!("{KEYS}/rsa_public.pem");
    let both = Gateway::start_raw(&["--jwt-secret", SECRET, "--jwt-public-key", &public], String::new());
    assert_eq!(outcome(&both, &hs(SECRET, "old")).await, None, "HS256 while both are configured");
    assert_eq!(outcome(&both, &rs(None, "new")).await, None, "RS256 while both are configured");
    assert_eq!(outcome(&both, &hs(OTHER_SECRET, "eve")).await, Some(4500), "a secret not configured");
    drop(both);

    // The secret removed: its tokens close 4500, the key's still work.
    let rs_only = Gateway::start_raw(&["--jwt-public-key", &public], String::new());
    assert_eq!(outcome(&rs_only, &hs(SECRET, "old")).await, Some(4500));
    assert_eq!(outcome(&rs_only, &rs(None, "new")).await, None);
    // The demo minter exists only for a generated secret.
    assert!(rs_only.stdout.iter().all(|l| !l.contains("token=")), "{:?}", rs_only.stdout);
}

#[tokio::test]
async fn secrets_are_read_from_files_one_per_line() {
    let dir = std::env::temp_dir().join(format!("sb-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwt-secrets");
    std::fs::write(&file, format!("{SECRET}\n{OTHER_SECRET}\n")).unwrap();
    let gw = Gateway::start_raw_env(&[], String::new(), &[("SB_JWT_SECRET_FILE", file.to_str().unwrap())]);
    assert_eq!(outcome(&gw, &hs(SECRET, "a")).await, None);
    assert_eq!(outcome(&gw, &hs(OTHER_SECRET, "b")).await, None);
    assert_eq!(outcome(&gw, &hs("a-third-secret-of-32-bytes-or-more-long", "c")).await, Some(4500));
    // The file's secrets are not printed, and no demo token is minted.
    let text = gw.proc.log_text() + &gw.stdout.join("\n");
    assert!(!text.contains(SECRET) && !text.contains(OTHER_SECRET) && !text.contains("token="), "{text}");
    drop(gw);

    // A short secret in the file is refused like one on the command line,
    // and a file beside the variable is ambiguous.
    std::fs::write(&file, "short\n").unwrap();
    let run = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(process::binary("gateway"))
            .args(["--standalone", "--listen", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let f = file.to_str().unwrap();
    assert!(run(&[("SB_JWT_SECRET_FILE", f)]).contains("32"));
    assert!(run(&[("SB_JWT_SECRET_FILE", f), ("SB_JWT_SECRET", SECRET)]).contains("not both"));
    assert!(run(&[("SB_API_TOKEN_FILE", "/nonexistent/token")]).contains("SB_API_TOKEN_FILE"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn audience_and_issuer_mismatches_close_4500_with_their_reason() {
    let gw = Gateway::start(&["--jwt-audience", "chat,games", "--jwt-issuer", "https://id.example"]);
    let key = EncodingKey::from_secret(gw.secret.as_bytes());
    let with = |extra: Value| token(Algorithm::HS256, &key, None, "u", extra);
    assert_eq!(outcome(&gw, &with(json!({"aud": "games", "iss": "https://id.example"}))).await, None);
    let cases = [
        (json!({"aud": "mail", "iss": "https://id.example"}), "wrong_audience"),
        (json!({"iss": "https://id.example"}), "wrong_audience"),
        (json!({"aud": "chat", "iss": "https://evil.example"}), "wrong_issuer"),
        (json!({"aud": "chat"}), "wrong_issuer"),
    ];
    for (i, (claims, reason)) in cases.iter().enumerate() {
        let before = rejected(&gw.metrics().await, reason);
        assert_eq!(outcome(&gw, &with(claims.clone())).await, Some(4500), "{claims}");
        assert_eq!(rejected(&gw.metrics().await, reason), before + 1.0, "case {i}: {claims}");
    }
    // The same in an auth frame: an unauthorized reply naming the claim.
    let mut c = Client::connect(gw.options(None)).await.unwrap();
    c.send_json(&json!({"op": "auth", "token": with(json!({"aud": "mail", "iss": "https://id.example"})), "id": 1}))
        .await
        .unwrap();
    let r = c.next_json(T).await.unwrap();
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("`aud`"), "{r}");
    assert_eq!(c.wait_close(T).await.unwrap(), Some(4500));
}

/// A JWKS endpoint whose answer the test changes; counts its requests.
struct Issuer {
    backend: Backend,
    answer: Arc<Mutex<(u16, Value)>>,
}

const JWKS_PATH: &str = "/.well-known/jwks.json";

impl Issuer {
    async fn start(keys: Vec<Jwk>) -> Self {
        let answer = Arc::new(Mutex::new((200, set(keys))));
        let a = answer.clone();
        let backend = Backend::start(move |_, _| {
            let (status, body) = a.lock().unwrap().clone();
            Reply { status, body, delay: Duration::ZERO }
        })
        .await;
        Self { backend, answer }
    }

    fn url(&self) -> String {
        format!("{}{JWKS_PATH}", self.backend.url)
    }

    fn publish(&self, keys: Vec<Jwk>) {
        *self.answer.lock().unwrap() = (200, set(keys));
    }

    fn fail(&self) {
        *self.answer.lock().unwrap() = (503, json!({"error": "down"}));
    }

    fn fetches(&self) -> usize {
        self.backend.requests(JWKS_PATH).len()
    }
}

fn set(keys: Vec<Jwk>) -> Value {
    serde_json::to_value(JwkSet { keys }).unwrap()
}

fn jwk(pem: &str, alg: Algorithm, kid: &str) -> Jwk {
    let pem = std::fs::read(format!("{KEYS}/{pem}")).unwrap();
    let key = match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem).unwrap(),
        _ => DecodingKey::from_ec_pem(&pem).unwrap(),
    };
    let mut jwk = Jwk::from_decoding_key(&key, Some(alg)).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk
}

// Multi-threaded: the issuer must answer while the test thread waits for
// the gateway to start (it fetches the set before it listens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_rotation_unknown_kid_floods_and_outages() {
    const MIN_INTERVAL: Duration = Duration::from_secs(2);
    let k1 = || jwk("rsa_public.pem", Algorithm::RS256, "k1");
    let k2 = || jwk("ec_public.pem", Algorithm::ES256, "k2");
    let issuer = Issuer::start(vec![k1()]).await;
    let gw = Gateway::start_raw(
        &[
            "--jwks-url",
            &issuer.url(),
            "--jwks-min-interval",
            "2s",
            "--jwks-refresh",
            "1h",
            "--auth-failure-rate",
            "10000",
            "--auth-failure-ip-rate",
            "10000",
        ],
        String::new(),
    );
    assert_eq!(issuer.fetches(), 1, "fetched once at start");
    assert_eq!(outcome(&gw, &rs(Some("k1"), "a")).await, None);
    // A token without a kid is tried against every key of its algorithm.
    assert_eq!(outcome(&gw, &rs(None, "a")).await, None);
    assert!(gw.stdout.iter().all(|l| !l.contains("token=")), "no demo token: {:?}", gw.stdout);

    // Rotation: the issuer publishes k2 and signs with it at once. The
    // first k2 token makes the gateway fetch again, and is accepted.
    tokio::time::sleep(MIN_INTERVAL).await;
    issuer.publish(vec![k1(), k2()]);
    assert_eq!(outcome(&gw, &es(Some("k2"), "b")).await, None, "a new kid after a fetch");
    assert_eq!(issuer.fetches(), 2);
    assert_eq!(outcome(&gw, &rs(Some("k1"), "a")).await, None, "k1 is still published");

    // k1 goes. A flood of made-up kids, all at once: one fetch (which also
    // drops k1), every one of them closed 4500.
    issuer.publish(vec![k2()]);
    tokio::time::sleep(MIN_INTERVAL).await;
    let before = rejected(&gw.metrics().await, "unknown_key");
    let flood = (0..40).map(|i| {
        let t = rs(Some(&format!("made-up-{i}")), "eve");
        let gw = &gw;
        async move { outcome(gw, &t).await }
    });
    let outcomes = futures::future::join_all(flood).await;
    assert!(outcomes.iter().all(|o| *o == Some(4500)), "{outcomes:?}");
    assert_eq!(issuer.fetches(), 3, "one fetch for the whole flood");
    assert_eq!(rejected(&gw.metrics().await, "unknown_key"), before + 40.0);
    assert_eq!(outcome(&gw, &rs(Some("k1"), "a")).await, Some(4500), "k1 was withdrawn");
    assert_eq!(outcome(&gw, &es(Some("k2"), "b")).await, None);
    assert_eq!(issuer.fetches(), 3, "within the interval: no fetch");

    // The issuer goes down: a fetch fails, the cached k2 still works.
    issuer.fail();
    tokio::time::sleep(MIN_INTERVAL).await;
    assert_eq!(outcome(&gw, &rs(Some("k3"), "eve")).await, Some(4500));
    assert_eq!(issuer.fetches(), 4);
    assert_eq!(outcome(&gw, &es(Some("k2"), "b")).await, None, "cached keys survive an outage");
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "switchboard_gateway_jwks_fetches_total{result=\"error\"}"), 1.0);
    assert_eq!(metric(&m, "switchboard_gateway_jwks_fetches_total{result=\"ok\"}"), 3.0);
    assert_eq!(metric(&m, "switchboard_gateway_jwks_keys"), 1.0);
}
