//! NATS with TLS and a user per service kind: the cluster works within its
//! permissions, a process with the wrong kind's credentials is refused (and
//! says so), wrong credentials stop the start, and `.creds` files from an
//! operator/account/user chain work.

use std::time::Duration;

use support::cluster::{Cluster, Nats};
use support::nats_auth::{users_conf, Operator};
use support::pki::Ca;

use super::*;

fn password(kind: &str) -> String {
    format!("{kind}-password-for-the-test")
}

fn user_args(kind: &str, ca: &Ca) -> Vec<String> {
    ["--nats-user", kind, "--nats-password", &password(kind), "--nats-tls-ca", &ca.file()].map(str::to_owned).into()
}

/// NATS with TLS from `ca` and the three service users.
fn secured_nats(ca: &Ca) -> Nats {
    let leaf = ca.leaf("nats", 30);
    let permissions = proto::permissions::nats_conf();
    Nats::start_conf(&users_conf(&leaf.cert, &leaf.key, password), &[("permissions.conf", &permissions)])
}

async fn denied(metrics_url: &str, kind: &str) -> f64 {
    let text = http_get(&format!("{metrics_url}/metrics")).await.1;
    metric(&text, &format!("switchboard_{kind}_nats_permission_denied_total"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_nats_with_tls_and_service_users_stays_within_its_permissions() {
    let ca = Ca::new("nats");
    let nats = secured_nats(&ca);
    let kinds = [user_args("gateway", &ca), user_args("router", &ca), user_args("presence", &ca)];
    let cluster = Cluster::start_on(nats, 2, 2, kinds).await;

    // Everything that crosses NATS: joins and room events, presence, a
    // direct message to a user on the other gateway, the server API's orders.
    let (g1, g2) = (&cluster.gateways[0], &cluster.gateways[1]);
    let mut ann = g1.json("ann").await;
    let mut ben = g2.json("ben").await;
    join(&mut ann, "secure").await;
    join(&mut ben, "secure").await;
    let seq = publish(&mut ann, "secure", json!("hi")).await;
    let m = ben.next_of_type("message", T).await.unwrap();
    assert_eq!(m["seq"].as_u64(), Some(seq), "{m}");
    ann.send_json(&json!({"op": "send", "user": "ben", "data": "psst", "id": 5})).await.unwrap();
    let direct = ben.next_of_type("direct", T).await.unwrap();
    assert_eq!(direct["data"], "psst", "{direct}");
    ann.send_json(&json!({"op": "presence", "users": ["ben"], "id": 6})).await.unwrap();
    let r = ann.wait_json(T, |v| v["id"] == 6).await.unwrap();
    assert_eq!(r["users"][0]["online"], true, "{r}");
    let mut api = cluster.rooms_api(0).await;
    let call = pb::SubscriptionCall { user: "ann".into(), room: "ordered".into() };
    api.subscribe(call).await.expect("an order reaches the gateway");

    // Nobody was refused anything.
    for g in &cluster.gateways {
        assert_eq!(denied(&g.admin, "gateway").await, 0.0, "a gateway was refused");
    }
    for r in &cluster.routers {
        assert_eq!(denied(&r.admin, "router").await, 0.0, "a router was refused");
    }

    // Gateway credentials cannot announce a router: NATS drops the
    // announcement, the routers' ring stays as it was.
    let flags = bus::NatsFlags {
        nats_user: Some("gateway".into()),
        nats_password: Some(password("gateway")),
        nats_tls_ca: Some(ca.file().into()),
        ..Default::default()
    };
    let evil = bus::Bus::nats(&cluster.nats.url, &flags, "evil", "test").await.unwrap();
    let fake = proto::internal::RouterAnnounce { id: "r-evil".into(), ..Default::default() };
    for _ in 0..10 {
        evil.publish_msg(proto::subject::ROUTER_ANNOUNCE.into(), &fake).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..cluster.routers.len() {
        let stats = cluster.rooms_api(i).await.stats(pb::StatsCall {}).await.unwrap().into_inner();
        assert_eq!(stats.ring_size, 2, "a fake router joined the ring");
    }

    // A gateway started with presence's credentials: NATS refuses its
    // announcement; it logs and counts that.
    let mut args = cluster.gateway_args("gw-wrong", &cluster.nats.url);
    args.extend(user_args("presence", &ca));
    let wrong = Gateway::from_proc(
        process::Proc::start("gw-wrong", &process::binary("gateway"), &args, Some("admin")),
        cluster.secret.clone(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while denied(&wrong.admin, "gateway").await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the refusal was never counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(wrong.proc.log_text().contains("nats refused a publish or subscribe"), "{}", wrong.proc.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_nats_credentials_stop_the_start() {
    let ca = Ca::new("nats-wrong");
    let nats = secured_nats(&ca);
    let start = |extra: Vec<String>| {
        let mut args: Vec<String> =
            ["--nats-url", &nats.url, "--id", "r-x", "--admin-listen", "127.0.0.1:0"].map(str::to_owned).into();
        args.extend(["--grpc-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"].map(str::to_owned));
        args.extend(extra);
        let started = std::time::Instant::now();
        let out = std::process::Command::new(process::binary("router")).args(&args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), started.elapsed())
    };
    let mut bad = user_args("router", &ca);
    bad[3] = "not-the-password".into();
    let (ok, err, took) = start(bad);
    // Logs come first; the last line says why the process stopped.
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(!ok && last.starts_with("error:") && last.contains("refused the credentials"), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // A CA file that is not one is refused before connecting.
    let (ok, err, _) = start(["--nats-tls-ca", "/dev/null"].map(str::to_owned).into());
    assert!(!ok && err.contains("--nats-tls-ca"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_files_from_an_operator_account_and_users_work() {
    let operator = Operator::new();
    let nats = Nats::start_conf(&operator.server_conf(), &[]);
    let dir = std::env::temp_dir().join(format!("sb-creds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let creds = |name: &str, signer: &nkeys::KeyPair, perms: &proto::permissions::Permissions| {
        let path = dir.join(format!("{name}.creds"));
        std::fs::write(&path, Operator::creds(signer, name, perms)).unwrap();
        vec!["--nats-creds".to_owned(), path.display().to_string()]
    };
    use proto::permissions::{GATEWAY, PRESENCE, ROUTER};
    let kinds = [
        creds("gateway", &operator.account, &GATEWAY),
        creds("router", &operator.account, &ROUTER),
        creds("presence", &operator.account, &PRESENCE),
    ];
    let cluster = Cluster::start_on(nats, 1, 1, kinds).await;
    let gw = &cluster.gateways[0];
    let mut a = gw.json("a").await;
    let mut b = gw.json("b").await;
    join(&mut a, "creds").await;
    join(&mut b, "creds").await;
    let seq = publish(&mut a, "creds", json!(1)).await;
    assert_eq!(b.next_of_type("message", T).await.unwrap()["seq"].as_u64(), Some(seq));
    assert_eq!(denied(&gw.admin, "gateway").await, 0.0);

    // A user JWT signed by a key the operator never vouched for.
    let stranger = nkeys::KeyPair::new_account();
    let forged = creds("forged", &stranger, &ROUTER);
    let mut args: Vec<String> = ["--nats-url", &cluster.nats.url, "--id", "r-forged", "--admin-listen", "127.0.0.1:0"]
        .map(str::to_owned)
        .into();
    args.extend(["--grpc-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"].map(str::to_owned));
    args.extend(forged);
    let out = std::process::Command::new(process::binary("router")).args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("refused the credentials"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The permission lists the deploy files give NATS (Compose and the local
/// cluster, Kubernetes) are the ones the code uses
/// (`SB_WRITE_PERMISSIONS=1` writes the files anew).
#[test]
fn the_deployed_permissions_are_the_codes() {
    let want = proto::permissions::nats_conf();
    for file in ["deploy/nats/permissions.conf", "deploy/k8s/base/nats-permissions.conf"] {
        let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("SB_WRITE_PERMISSIONS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(have, want, "{file} is stale: rerun with SB_WRITE_PERMISSIONS=1");
    }
}
