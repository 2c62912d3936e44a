//! Docker Compose, and the HAProxy and NATS configs it mounts; HAProxy run for real.

use super::*;

#[test]
fn compose_file_is_valid_and_matches_the_binaries() {
    let compose = docker_compose();
    let file = path("deploy/docker-compose.yml");
    let tmp = TempDir::new("compose");

    // Without values for the secrets, Compose refuses the file.
    let out = run(
        Command::new(&compose)
            .arg("-f")
            .arg(&file)
            .arg("--env-file")
            .arg(path("deploy/.env.example"))
            .args(["config", "--quiet"]),
        None,
    );
    assert!(!out.status.success(), "Compose accepted the file with empty secrets");
    assert!(text(&out).contains("SB_") || text(&out).contains("PASSWORD"), "{}", text(&out));

    // Secrets are interpolated from the env file, never written in the file.
    let raw = compose_config(&compose, &file, None, &["--no-interpolate"]);
    for (name, svc) in raw["services"].as_object().unwrap() {
        for (k, v) in svc["environment"].as_object().into_iter().flatten() {
            if ["SECRET", "TOKEN", "PASSWORD"].iter().any(|s| k.contains(s)) {
                let v = v.as_str().unwrap_or_default();
                assert!(v.starts_with("${") && v.contains(":?"), "{name}: {k} is not a required ${{…}} variable: {v}");
            }
        }
    }

    let env = tmp.path.join("secrets.env");
    let secrets = "SB_JWT_SECRET=test-jwt\nSB_API_TOKEN=test-token\nGRAFANA_ADMIN_PASSWORD=test-pw\n\
                   NATS_GATEWAY_PASSWORD=g\nNATS_ROUTER_PASSWORD=r\nNATS_PRESENCE_PASSWORD=p\n";
    std::fs::write(&env, secrets).unwrap();
    let config = compose_config(&compose, &file, Some(&env), &[]);
    let services = config["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for expected in [
        "nats",
        "presence",
        "presence-2",
        "router-1",
        "router-2",
        "gateway-1",
        "gateway-2",
        "lb",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(expected), "no service {expected} in {names:?}");
    }

    let clis = Clis::default();
    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    // (service, binary, admin port, listen port)
    let mut switchboard = Vec::new();
    for (name, svc) in services {
        let restart = svc["restart"].as_str().unwrap_or("no");
        if restart == "no" {
            problems.push(format!("{name}: no restart policy"));
        }
        let test = svc["healthcheck"]["test"].as_array().cloned().unwrap_or_default();
        if test.is_empty() || svc["healthcheck"]["disable"] == true {
            problems.push(format!("{name}: no health check"));
        }
        if !svc["image"].as_str().unwrap_or_default().starts_with("switchboard:") {
            continue;
        }
        assert_eq!(svc["build"]["dockerfile"], "deploy/docker/Dockerfile", "{name}");
        let command: Vec<String> = strings(&svc["command"]);
        let env: BTreeMap<String, Option<String>> = svc["environment"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned)))
            .collect();
        let inv = Invocation::new(&format!("compose service {name}"), &command, env);
        problems.extend(inv.problems(&clis, true));
        ids.insert(inv.setting("--id", "SB_ID").flatten().unwrap_or_default());
        let admin = inv.port("--admin-listen", "SB_ADMIN_LISTEN").expect("admin port");
        // The health check asks the admin port.
        let check = test.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ");
        if !check.contains(&format!("127.0.0.1:{admin}/readyz"))
            && !check.contains(&format!("127.0.0.1:{admin}/healthz"))
        {
            problems.push(format!("{name}: the health check `{check}` does not ask admin port {admin}"));
        }
        // Stopping waits for the drain.
        let grace = secs(svc["stop_grace_period"].as_str().unwrap_or("10s"));
        let drain = match inv.binary.as_str() {
            "gateway" => {
                secs(&inv.setting("--drain-window", "SB_DRAIN_WINDOW").flatten().unwrap_or("10s".into()))
                    + GATEWAY_DRAIN_GRACE_SECS
            }
            "router" => secs(&inv.setting("--drain-timeout", "SB_DRAIN_TIMEOUT").flatten().unwrap_or("10s".into())),
            _ => 0.0,
        };
        if grace <= drain {
            problems.push(format!("{name}: stop_grace_period {grace}s is not longer than the drain ({drain}s)"));
        }
        if let Some(Some(config)) = inv.setting("--config", "SB_CONFIG") {
            let mounted = volumes(svc).get(&config).cloned();
            if mounted.as_deref() != Some(POLICY) {
                problems.push(format!("{name}: {config} is {mounted:?}, not a mount of {POLICY}"));
            }
        }
        let listen = inv.port("--listen", "SB_LISTEN");
        switchboard.push((name.clone(), inv.binary.clone(), admin, listen));
    }
    assert_eq!(problems, Vec::<String>::new(), "the Compose file disagrees with the binaries");
    assert_eq!(ids.len(), switchboard.len(), "node ids are not unique: {ids:?}");

    // Prometheus scrapes every Switchboard service under its binary's job.
    let prom = yaml_file("deploy/prometheus/prometheus.yml");
    let jobs = scrape_jobs(&prom);
    for (name, bin, admin, _) in &switchboard {
        let target = format!("{name}:{admin}");
        assert!(jobs.get(bin).is_some_and(|t| t.contains(&target)), "Prometheus job {bin} does not scrape {target}");
    }
    for (job, targets) in &jobs {
        for t in targets {
            let host = t.split(':').next().unwrap();
            assert!(host == "localhost" || services.contains_key(host), "job {job}: {t} is no service");
        }
    }
    for job in ["haproxy", "grafana", "prometheus"] {
        assert!(jobs.contains_key(job), "no Prometheus job {job}");
    }
    let mounts = volumes(&services["prometheus"]);
    assert_eq!(mounts.get("/etc/prometheus").map(String::as_str), Some("deploy/prometheus"), "{mounts:?}");

    // HAProxy balances exactly the gateways, on their WebSocket port, and
    // checks /readyz on their admin port; the config passes `haproxy -c`.
    let gateways: Vec<_> = switchboard.iter().filter(|s| s.1 == "gateway").collect();
    let mounts = volumes(&services["lb"]);
    assert_eq!(
        mounts.get("/usr/local/etc/haproxy/haproxy.cfg").map(String::as_str),
        Some("deploy/haproxy/haproxy.cfg")
    );
    let cfg = read("deploy/haproxy/haproxy.cfg");
    assert!(cfg.contains("option httpchk GET /readyz"), "HAProxy does not check /readyz");
    assert!(cfg.contains("timeout tunnel"), "HAProxy has no WebSocket tunnel timeout");
    let servers: BTreeMap<String, String> = cfg
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap().to_owned(), w.next().unwrap().to_owned())
        })
        .collect();
    let expected: BTreeMap<String, String> =
        gateways.iter().map(|(n, _, _, ws)| (n.clone(), format!("{n}:{}", ws.expect("gateway listen port")))).collect();
    assert_eq!(servers, expected, "HAProxy servers");
    for (_, _, admin, _) in &gateways {
        assert!(cfg.contains(&format!("check port {admin}")), "HAProxy does not check admin port {admin}");
    }
    haproxy_check(&path("deploy/haproxy/haproxy.cfg"));
    // HAProxy names each client with a PROXY v2 header and only its address
    // is trusted, so the per-IP limits are the gateway's own.
    let proxied = cfg.lines().any(|l| l.trim().starts_with("default-server") && l.contains("send-proxy-v2"));
    assert!(proxied, "HAProxy sends no PROXY v2 header");
    let lb_ip = services["lb"]["networks"]["default"]["ipv4_address"].as_str().expect("HAProxy's fixed address");
    for (name, ..) in &gateways {
        let env = &services[name.as_str()]["environment"];
        let trust = (env["SB_TRUSTED_PROXIES"].as_str(), env["SB_PROXY_PROTOCOL"].as_str());
        assert_eq!(trust, (Some(lb_ip), Some("true")), "{name}: trusted proxies");
        for var in ["SB_MAX_CONNECTIONS_PER_IP", "SB_MAX_BYTES_PER_IP", "SB_AUTH_FAILURE_IP_RATE"] {
            assert!(env.get(var).is_none(), "{name}: {var} is raised although clients count by their own address");
        }
    }

    // NATS: the mounted config is valid, with JetStream (on a volume) as
    // the routers and presence keep their state there.
    let nats = &services["nats"];
    let mounts = volumes(nats);
    let conf_in = strings(&nats["command"]).into_iter().skip_while(|a| a != "--config").nth(1).expect("--config");
    let conf = mounts.get(&conf_in).unwrap_or_else(|| panic!("{conf_in} is not mounted: {mounts:?}"));
    let includes = [("permissions.conf".to_owned(), read("deploy/nats/permissions.conf"))];
    let store = nats_check(&path(conf), &includes, 1, "", true).expect("a JetStream store_dir");
    assert_eq!(mounts.get("/etc/nats/permissions.conf").map(String::as_str), Some("deploy/nats/permissions.conf"));
    for file in ["nats.pem", "nats.key"] {
        let mounted = mounts.get(&format!("{NATS_TLS_DIR}{file}")).map(String::as_str);
        assert_eq!(mounted, Some(format!("deploy/tls/{file}").as_str()), "NATS's {file}: {mounts:?}");
    }
    let named: Vec<&str> = nats["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "volume")
        .filter_map(|v| v["target"].as_str())
        .collect();
    assert!(named.iter().any(|m| store.starts_with(&format!("{m}/"))), "{store} is not on a named volume: {named:?}");
    for (name, svc) in services {
        let env = &svc["environment"];
        // Each kind logs in to NATS as itself and verifies NATS's certificate.
        if let Some((_, bin, ..)) = switchboard.iter().find(|s| &s.0 == name) {
            assert_eq!(env["SB_NATS_USER"].as_str(), Some(bin.as_str()), "{name}: NATS user");
            let ca = env["SB_NATS_TLS_CA"].as_str().unwrap_or_else(|| panic!("{name}: no SB_NATS_TLS_CA"));
            assert_eq!(volumes(svc).get(ca).map(String::as_str), Some("deploy/tls/ca.pem"), "{name}: {ca}");
        }
        if name.starts_with("router") {
            assert_eq!(
                (env["SB_HISTORY_STORE"].as_str(), env["SB_HISTORY_REPLICAS"].as_str()),
                (Some("jetstream"), Some("1")),
                "{name}"
            );
        }
        if name.starts_with("presence") {
            assert_eq!(env["SB_INBOX_STORE"].as_str(), Some("jetstream"), "{name}");
            // Each replica advertises its own service name and gRPC port.
            assert_eq!(env["SB_ADVERTISE"].as_str(), Some(format!("{name}:7070").as_str()), "{name}");
        }
    }

    // Grafana gets the provisioning and the dashboard where the provider looks.
    let mounts = volumes(&services["grafana"]);
    assert_eq!(mounts.get("/etc/grafana/provisioning").map(String::as_str), Some("deploy/grafana/provisioning"));
    let provider = yaml_file("deploy/grafana/provisioning/dashboards/switchboard.yml");
    let dir = provider["providers"][0]["options"]["path"].as_str().unwrap();
    assert_eq!(
        mounts.get(&format!("{dir}/switchboard.json")).map(String::as_str),
        Some("deploy/grafana/switchboard.json"),
        "{mounts:?}"
    );
    let datasource = yaml_file("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(datasource["datasources"][0]["url"], "http://prometheus:9090");
}

/// `docker compose config --format json`.
pub(super) fn compose_config(compose: &Path, file: &Path, env: Option<&Path>, extra: &[&str]) -> Value {
    let mut cmd = Command::new(compose);
    cmd.arg("-f").arg(file);
    if let Some(env) = env {
        cmd.arg("--env-file").arg(env);
    } else {
        // Only the interpolation-free form is read without an env file; an
        // empty one keeps a developer's deploy/.env out of the check.
        cmd.args(["--env-file", "/dev/null"]);
    }
    cmd.args(["config", "--format", "json"]).args(extra);
    let out = run(&mut cmd, None);
    assert!(out.status.success(), "docker compose config:\n{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("compose JSON")
}

/// Bind mounts of a Compose service: container path → host path, relative
/// to the repository.
pub(super) fn volumes(svc: &Value) -> BTreeMap<String, String> {
    let root = root();
    svc["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "bind")
        .map(|v| {
            let source = Path::new(v["source"].as_str().unwrap());
            let rel = source.strip_prefix(&root).unwrap_or(source).to_string_lossy().into_owned();
            (v["target"].as_str().unwrap().to_owned(), rel)
        })
        .collect()
}

/// The targets of each static scrape job.
pub(super) fn scrape_jobs(prom: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut jobs = BTreeMap::new();
    for job in prom["scrape_configs"].as_array().expect("scrape_configs") {
        let targets = jobs.entry(job["job_name"].as_str().unwrap().to_owned()).or_insert_with(BTreeSet::new);
        for sc in job["static_configs"].as_array().into_iter().flatten() {
            targets.extend(strings(&sc["targets"]));
        }
    }
    jobs
}

/// The shipped HAProxy config, run for real on loopback in front of a
/// gateway: a client that puts its token in the URL (as browsers must) gets
/// through, and HAProxy's log records the connection but never the token.
#[tokio::test]
async fn haproxy_logs_connections_without_their_tokens() {
    // HAProxy (on 127.0.0.1) names each client with PROXY v2; clients come
    // from 127.0.0.2 and 127.0.0.3, one connection per address allowed.
    let gw = Gateway::start(&["--trusted-proxies", "127.0.0.1", "--proxy-protocol", "--max-connections-per-ip", "1"]);
    let ws_port = gw.ws.trim_start_matches("ws://127.0.0.1:").trim_end_matches("/ws").to_owned();
    let admin_port = gw.admin.rsplit(':').next().unwrap().to_owned();
    // Loopback addresses for the Compose service names and ports; Docker's
    // DNS resolver and the FD-hungry maxconn have no place here.
    let tmp = TempDir::new("haproxy");
    let stats = tmp.path.join("stats.sock");
    let config = |lb_port: u16| -> String {
        read("deploy/haproxy/haproxy.cfg")
            .lines()
            .filter(|l| {
                !l.contains("maxconn") && !l.trim_start().starts_with("nameserver") && !l.contains("hold valid")
            })
            .map(|l| match l.trim() {
                "resolvers docker" => String::new(),
                "bind :8080" => format!("    bind 127.0.0.1:{lb_port}"),
                // A socket file: HAProxy cannot take port 0.
                "bind :8404" => format!("    bind {}", stats.display()),
                t if t.starts_with("default-server") => {
                    let proxy = if t.contains("send-proxy-v2") { "send-proxy-v2 " } else { "" };
                    format!("    default-server {proxy}check port {admin_port} inter 200ms")
                }
                t if t.starts_with("server gateway-1") => format!("    server gateway-1 127.0.0.1:{ws_port}"),
                t if t.starts_with("server gateway-2") => String::new(),
                _ => l.to_owned(),
            })
            .map(|l| l + "\n")
            .collect()
    };
    assert!(config(1).contains(&format!("127.0.0.1:{ws_port}")), "the config's server lines changed");
    let file = tmp.path.join("haproxy.cfg");
    let (mut lb, lb_port) = retry_on_port(
        |port| {
            std::fs::write(&file, config(port)).unwrap();
            let args = ["-db", "-f", file.to_str().unwrap()].map(str::to_owned);
            Proc::start("haproxy", &tool("haproxy"), &args, None)
        },
        |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );

    let token = gw.token("alice");
    let url = format!("ws://127.0.0.1:{lb_port}/ws?token={token}");
    let from = |last: u8| {
        let mut opts = loadtest::client::ConnectOptions::new(&url);
        opts.source = Some(std::net::IpAddr::from([127, 0, 0, last]));
        opts
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        // Until HAProxy has seen the gateway ready.
        match Client::connect(from(2)).await {
            Ok(mut c) => match c.next_json(T).await {
                Ok(hello) if hello["type"] == "hello" => break c,
                other => assert!(Instant::now() < deadline, "{other:?}"),
            },
            Err(e) => assert!(Instant::now() < deadline, "{e}; haproxy: {}", lb.log_text()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    join(&mut c, "lobby").await;
    // The gateway counts clients, not HAProxy: 127.0.0.2 holds its one
    // connection, 127.0.0.3 gets in.
    let mut second = Client::connect(from(2)).await.unwrap();
    let refused = second.next_json(T).await;
    assert!(matches!(refused, Err(loadtest::client::ClientError::Closed(Some(1013)))), "{refused:?}");
    let mut other = Client::connect(from(3)).await.unwrap();
    assert_eq!(other.next_json(T).await.unwrap()["type"], "hello");
    drop((second, other));
    c.close(1000).await.unwrap();
    let _ = c.wait_close(T).await;
    drop(c);
    // HAProxy logs a TCP session when it ends.
    let logged = lb.wait_line_containing("websocket gateways/gateway-1", Duration::from_secs(10));
    let text = format!("{}\n{}", lb.stdout.join("\n"), lb.log_text());
    let client = logged.starts_with("127.0.0.2:") || logged.starts_with("127.0.0.3:");
    assert!(client, "the log names the client: {logged}");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!text.contains(signature) && !text.contains("token="), "a token in HAProxy's log: {text}");
}

pub(super) fn haproxy_check(cfg: &Path) {
    let out = run(Command::new(tool("haproxy")).arg("-c").arg("-f").arg(cfg), None);
    let t = text(&out);
    assert!(out.status.success(), "haproxy -c:\n{t}");
    // Service names resolve only inside Compose's network.
    for l in t.lines().filter(|l| l.contains("[WARNING]") || l.contains("[ALERT]")) {
        assert!(l.contains("could not resolve address"), "haproxy -c: {l}");
    }
}

/// Where the deploy files mount NATS's certificate and key.
const NATS_TLS_DIR: &str = "/etc/nats/tls/";

/// `nats-server -t`, the cluster routes name every one of `replicas`
/// servers through `service`, and JetStream is configured exactly when
/// `jetstream`; returns its `store_dir`. The config is checked beside its
/// `includes` (file name → text), with test certificates in place of
/// NATS's, and a password in each variable it takes from the environment.
/// Every deployed NATS requires TLS and holds each kind of process to its
/// permissions.
pub(super) fn nats_check(
    conf: &Path,
    includes: &[(String, String)],
    replicas: u64,
    service: &str,
    jetstream: bool,
) -> Option<String> {
    let conf_text = std::fs::read_to_string(conf).unwrap();
    let what = conf.display();
    let staged = TempDir::new("nats-conf");
    for (name, body) in includes {
        std::fs::write(staged.path.join(name), body).unwrap();
    }
    let ca = support::pki::Ca::new("nats-conf");
    let leaf = ca.leaf("nats", 30);
    let mut checked = conf_text.clone();
    for (setting, ours) in [("cert_file:", &leaf.cert), ("key_file:", &leaf.key)] {
        for line in conf_text.lines().filter(|l| l.trim_start().starts_with(setting)) {
            let theirs = line.split('"').nth(1).unwrap_or_else(|| panic!("{what}: unquoted {line}"));
            checked = checked.replace(theirs, ours);
        }
    }
    let file = staged.path.join("nats.conf");
    std::fs::write(&file, &checked).unwrap();
    let mut cmd = Command::new(nats_server());
    cmd.arg("-t").arg("-c").arg(&file).env("POD_NAME", "nats-0");
    for var in ["NATS_GATEWAY_PASSWORD", "NATS_ROUTER_PASSWORD", "NATS_PRESENCE_PASSWORD"] {
        cmd.env(var, format!("test-{var}"));
    }
    let out = run(&mut cmd, None);
    assert!(out.status.success(), "nats-server -t -c {what}:\n{}", text(&out));

    let settings: Vec<&str> = conf_text.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    assert!(settings.iter().any(|l| l.starts_with("tls {")), "{what}: NATS without TLS");
    for kind in ["GATEWAY", "ROUTER", "PRESENCE"] {
        let user =
            format!("user: {}, password: $NATS_{kind}_PASSWORD, permissions: ${kind}_PERMISSIONS", kind.to_lowercase());
        assert!(settings.iter().any(|l| l.contains(&user)), "{what}: no line with {user}");
    }
    let permissions = proto::permissions::nats_conf();
    assert!(
        conf_text.contains("include ./permissions.conf")
            && includes.iter().any(|(n, body)| n == "permissions.conf" && *body == permissions),
        "{what}: does not include the generated permissions.conf"
    );
    let configured = settings.iter().any(|l| l.starts_with("jetstream"));
    assert_eq!(configured, jetstream, "{what}: JetStream configured: {configured}");
    let store =
        settings.iter().find_map(|l| l.strip_prefix("store_dir:")).map(|d| d.trim().trim_matches('"').to_owned());
    if replicas > 1 {
        for i in 0..replicas {
            let route = format!("nats://nats-{i}.{service}:6222");
            assert!(settings.contains(&route.as_str()), "{what}: no route {route}");
        }
    }
    assert_eq!(store.is_some(), jetstream, "{what}: store_dir");
    store
}
