//! The deploy files (`deploy/`, `.dockerignore`, `.yamllint`) checked offline,
//! without a Docker engine or a Kubernetes cluster: hadolint on the
//! Dockerfile; the real Compose v2 parser on the Compose file; kustomize and
//! the Kubernetes schemas (`--strict`) on both overlays; promtool and a real
//! Prometheus server on the Prometheus config and alerts; `haproxy -c`,
//! `nats-server -t` and yamllint on the rest. Every flag and `SB_` variable
//! the files pass must exist in the binaries' `--help`, and every metric the
//! Grafana dashboard and the alerts query must be exported by the binaries.
//! The tools come from `make deps`; a missing tool fails the test.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use loadtest::client::Client;
use serde_json::{json, Value};
use support::cluster::{retry_on_port, Cluster};
use support::process::{binary, docker_compose, nats_server, tool, Proc};
use support::*;

/// The binaries the image ships; the ones with flags are run by the files.
const IMAGE_BINARIES: [&str; 4] = ["gateway", "router", "presence", "loadtest"];
const SERVICES: [&str; 3] = ["gateway", "router", "presence"];
/// After its drain window a gateway waits this long for closing sessions to
/// finish (`GRACE` in gateway/src/drain.rs).
const GATEWAY_DRAIN_GRACE_SECS: f64 = 5.0;
/// Read by `proto::telemetry` rather than by clap, so not in `--help`.
const LOGGING_ENV: [&str; 2] = ["RUST_LOG", "SB_LOG_FORMAT"];
/// Metrics the issue asks the dashboard to show.
const DASHBOARD_MUST_SHOW: [&str; 12] = [
    "switchboard_gateway_connections",
    "switchboard_gateway_connections_accepted_total",
    "switchboard_gateway_connections_rejected_total",
    "switchboard_gateway_frames_in_total",
    "switchboard_gateway_messages_delivered_total",
    "switchboard_gateway_op_duration_seconds_bucket",
    "switchboard_gateway_drops_total",
    "switchboard_router_rooms",
    "switchboard_router_members",
    "switchboard_router_handoffs_total",
    "switchboard_presence_users_online",
    "switchboard_gateway_nats_reconnects_total",
];
/// Alerts the issue asks for.
const ALERTS_REQUIRED: [&str; 6] = [
    "SwitchboardGatewayDown",
    "SwitchboardRingShrank",
    "SwitchboardHighOpLatency",
    "SwitchboardHighDropRate",
    "SwitchboardPresenceDown",
    "SwitchboardPresenceUnreachable",
];
// ---------------------------------------------------------------------------
// Docker

#[test]
fn dockerfile_passes_hadolint_and_ships_every_binary() {
    let file = "deploy/docker/Dockerfile";
    let out = run(Command::new(tool("hadolint")).arg("--no-color").arg(path(file)), None);
    assert!(out.status.success(), "hadolint {file}:\n{}", text(&out));

    let docker = read(file);
    let build = docker.lines().find(|l| l.contains("cargo build")).expect("a cargo build step");
    assert!(build.contains("--release") && build.contains("--locked"), "{build}");
    let members = workspace_members();
    for bin in IMAGE_BINARIES {
        assert!(members.contains(&bin.to_owned()), "{bin} is not a workspace member");
        assert!(path(&format!("{bin}/src/main.rs")).exists(), "{bin} has no binary");
        assert!(build.contains(&format!("-p {bin}")), "the image does not build {bin}: {build}");
        assert!(docker.contains(&format!("target/release/{bin}")), "the image does not copy {bin}");
    }
    // Every crate with a binary is in the image.
    for m in &members {
        if path(&format!("{m}/src/main.rs")).exists() {
            assert!(IMAGE_BINARIES.contains(&m.as_str()), "binary crate {m} is missing from the image");
        }
    }
    // Multi-stage, a slim runtime, a non-root user, no secrets.
    let froms: Vec<&str> = docker.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "not a multi-stage build: {froms:?}");
    assert!(froms.last().unwrap().contains("-slim"), "the runtime image is not slim: {froms:?}");
    let user = docker.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert!(!["root", "0"].contains(&user.split(':').next().unwrap().trim()), "runs as root: {user}");
    for l in docker.lines().filter(|l| l.starts_with("ENV ") || l.starts_with("ARG ")) {
        let upper = l.to_uppercase();
        assert!(
            !["SECRET", "TOKEN", "PASSWORD", "KEY"].iter().any(|s| upper.contains(s)),
            "a secret in the image: {l}"
        );
    }
    // The toolchain is at least the workspace's rust-version.
    let wanted = toml_value(&read("Cargo.toml"), "rust-version");
    let have = docker.lines().find_map(|l| l.strip_prefix("ARG RUST_VERSION=")).expect("ARG RUST_VERSION=");
    assert!(version(have) >= version(&wanted), "Rust {have} in the image, the workspace needs {wanted}");
    // The image's variables mean something to every binary, and the default
    // command is a valid gateway invocation.
    let clis = Clis::default();
    let env: BTreeMap<String, Option<String>> = docker
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
        .collect();
    for bin in SERVICES {
        let vars = clis.get(bin).vars;
        let unknown: Vec<&String> =
            env.keys().filter(|v| !vars.contains(*v) && !LOGGING_ENV.contains(&v.as_str())).collect();
        assert!(unknown.is_empty(), "the image sets {unknown:?}, which `{bin} --help` does not list");
    }
    let cmd = docker.lines().find_map(|l| l.strip_prefix("CMD ")).expect("a CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec form");
    let inv = Invocation::new("Dockerfile CMD", &cmd, env);
    assert_eq!(inv.problems(&clis, true), Vec::<String>::new());

    let ignore = read(".dockerignore");
    for needed in [".git", "target"] {
        assert!(ignore.lines().any(|l| l.trim() == needed), ".dockerignore does not exclude {needed}");
    }
}

// ---------------------------------------------------------------------------
// YAML

#[test]
fn yaml_files_pass_yamllint() {
    let mut files = Vec::new();
    collect_yaml(&root(), &mut files);
    files.push(path(".yamllint"));
    assert!(files.len() >= 15, "found only {files:?}");
    let out = run(
        Command::new(tool("yamllint")).args(["--strict", "-f", "parsable", "-c"]).arg(path(".yamllint")).args(&files),
        None,
    );
    assert!(out.status.success(), "yamllint:\n{}", text(&out));
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if !["target", ".git", "node_modules"].contains(&name.as_str()) {
                collect_yaml(&p, out);
            }
        } else if name.ends_with(".yml") || name.ends_with(".yaml") {
            out.push(p);
        }
    }
}

// ---------------------------------------------------------------------------
// Docker Compose

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
    std::fs::write(&env, "SB_JWT_SECRET=test-jwt\nSB_API_TOKEN=test-token\nGRAFANA_ADMIN_PASSWORD=test-pw\n").unwrap();
    let config = compose_config(&compose, &file, Some(&env), &[]);
    let services = config["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for expected in
        ["nats", "presence", "router-1", "router-2", "gateway-1", "gateway-2", "lb", "prometheus", "grafana"]
    {
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

    // NATS: the mounted config is valid, and JetStream stays off.
    let nats = &services["nats"];
    let mounts = volumes(nats);
    let conf_in = strings(&nats["command"]).into_iter().skip_while(|a| a != "--config").nth(1).expect("--config");
    let conf = mounts.get(&conf_in).unwrap_or_else(|| panic!("{conf_in} is not mounted: {mounts:?}"));
    nats_check(&path(conf), 1, "");
    assert!(!strings(&nats["command"]).iter().any(|a| a == "-js" || a == "--jetstream"), "JetStream is on");

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
fn compose_config(compose: &Path, file: &Path, env: Option<&Path>, extra: &[&str]) -> Value {
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
fn volumes(svc: &Value) -> BTreeMap<String, String> {
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
fn scrape_jobs(prom: &Value) -> BTreeMap<String, BTreeSet<String>> {
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
    let gw = Gateway::start(&[]);
    let ws_port = gw.ws.trim_start_matches("ws://127.0.0.1:").trim_end_matches("/ws").to_owned();
    let admin_port = gw.admin.rsplit(':').next().unwrap().to_owned();
    // Loopback addresses for the Compose service names and ports; Docker's
    // DNS resolver and the FD-hungry maxconn have no place here.
    let config = |lb_port: u16| -> String {
        read("deploy/haproxy/haproxy.cfg")
            .lines()
            .filter(|l| {
                !l.contains("maxconn") && !l.trim_start().starts_with("nameserver") && !l.contains("hold valid")
            })
            .map(|l| match l.trim() {
                "resolvers docker" => String::new(),
                "bind :8080" => format!("    bind 127.0.0.1:{lb_port}"),
                "bind :8404" => "    bind 127.0.0.1:0".into(),
                t if t.starts_with("default-server") => {
                    format!("    default-server check port {admin_port} inter 200ms")
                }
                t if t.starts_with("server gateway-1") => format!("    server gateway-1 127.0.0.1:{ws_port}"),
                t if t.starts_with("server gateway-2") => String::new(),
                _ => l.to_owned(),
            })
            .map(|l| l + "\n")
            .collect()
    };
    assert!(config(1).contains(&format!("127.0.0.1:{ws_port}")), "the config's server lines changed");
    let tmp = TempDir::new("haproxy");
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
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        // Until HAProxy has seen the gateway ready.
        match Client::connect(loadtest::client::ConnectOptions::new(&url)).await {
            Ok(mut c) => match c.next_json(T).await {
                Ok(hello) if hello["type"] == "hello" => break c,
                other => assert!(Instant::now() < deadline, "{other:?}"),
            },
            Err(e) => assert!(Instant::now() < deadline, "{e}; haproxy: {}", lb.log_text()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    join(&mut c, "lobby").await;
    c.close(1000).await.unwrap();
    let _ = c.wait_close(T).await;
    drop(c);
    // HAProxy logs a TCP session when it ends.
    let logged = lb.wait_line_containing("websocket gateways/gateway-1", Duration::from_secs(10));
    let text = format!("{}\n{}", lb.stdout.join("\n"), lb.log_text());
    assert!(logged.starts_with("127.0.0.1:"), "the log names the client: {logged}");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!text.contains(signature) && !text.contains("token="), "a token in HAProxy's log: {text}");
}

fn haproxy_check(cfg: &Path) {
    let out = run(Command::new(tool("haproxy")).arg("-c").arg("-f").arg(cfg), None);
    let t = text(&out);
    assert!(out.status.success(), "haproxy -c:\n{t}");
    // Service names resolve only inside Compose's network.
    for l in t.lines().filter(|l| l.contains("[WARNING]") || l.contains("[ALERT]")) {
        assert!(l.contains("could not resolve address"), "haproxy -c: {l}");
    }
}

/// `nats-server -t`, and the cluster routes name every one of `replicas`
/// servers through `service`.
fn nats_check(conf: &Path, replicas: u64, service: &str) {
    let out = run(Command::new(nats_server()).arg("-t").arg("-c").arg(conf).env("POD_NAME", "nats-0"), None);
    assert!(out.status.success(), "nats-server -t -c {}:\n{}", conf.display(), text(&out));
    let text = std::fs::read_to_string(conf).unwrap();
    let settings: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    assert!(!settings.iter().any(|l| l.starts_with("jetstream")), "{}: JetStream is configured", conf.display());
    if replicas > 1 {
        for i in 0..replicas {
            let route = format!("nats://nats-{i}.{service}:6222");
            assert!(settings.contains(&route.as_str()), "{}: no route {route}", conf.display());
        }
    }
}

// ---------------------------------------------------------------------------
// Kubernetes

#[test]
fn kubernetes_overlays_render_validate_and_match_the_binaries() {
    let clis = Clis::default();
    let tmp = TempDir::new("k8s");
    let mut kinds_seen = BTreeSet::new();
    for overlay in ["dev", "production"] {
        let dir = path(&format!("deploy/k8s/overlays/{overlay}"));
        let out = run(Command::new(tool("kubectl")).arg("kustomize").arg(&dir), None);
        assert!(out.status.success(), "kubectl kustomize {overlay}:\n{}", text(&out));
        let manifests = String::from_utf8(out.stdout).expect("UTF-8 manifests");
        let rendered = tmp.path.join(format!("{overlay}.yaml"));
        std::fs::write(&rendered, &manifests).unwrap();

        let out = run(Command::new(tool("kubernetes-validate")).args(["--strict", "--quiet"]).arg(&rendered), None);
        let report = text(&out);
        assert!(out.status.success(), "kubernetes-validate --strict ({overlay}):\n{report}");
        // Only the Prometheus Operator's CRD has no bundled schema; it is
        // checked against the Services below instead.
        for l in report.lines().filter(|l| !l.trim().is_empty()) {
            assert!(l.contains("kind ServiceMonitor"), "kubernetes-validate ({overlay}): {l}");
        }

        let docs = yaml_docs(&manifests);
        kinds_seen.extend(docs.iter().map(|d| d["kind"].as_str().unwrap_or_default().to_owned()));
        let problems = check_manifests(overlay, &docs, &clis, &tmp.path);
        assert_eq!(problems, Vec::<String>::new(), "the {overlay} overlay disagrees with the binaries");
    }
    for kind in [
        "StatefulSet",
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "Namespace",
    ] {
        assert!(kinds_seen.contains(kind), "no overlay renders a {kind}");
    }
}

fn of_kind<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    docs.iter().filter(move |d| d["kind"] == kind)
}

/// Cross-checks of one rendered overlay; returns the problems found.
fn check_manifests(overlay: &str, docs: &[Value], clis: &Clis, tmp: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let named = |kind: &str, name: &str| of_kind(docs, kind).find(|d| d["metadata"]["name"] == name).cloned();
    let namespace = of_kind(docs, "Namespace").next().and_then(|n| n["metadata"]["name"].as_str()).map(str::to_owned);
    let Some(namespace) = namespace else {
        return vec![format!("{overlay}: no Namespace")];
    };
    for d in docs.iter().filter(|d| d["kind"] != "Namespace") {
        if d["metadata"]["namespace"] != namespace.as_str() {
            problems.push(format!("{} {} is not in namespace {namespace}", d["kind"], d["metadata"]["name"]));
        }
    }

    let workloads: Vec<&Value> =
        docs.iter().filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet").collect();
    let pod_labels = |w: &Value| w["spec"]["template"]["metadata"]["labels"].clone();
    let selects = |selector: &Value, labels: &Value| {
        selector.as_object().is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k] == *v))
    };
    let mut admin_ports = BTreeMap::new();
    for w in &workloads {
        let name = w["metadata"]["name"].as_str().unwrap();
        let what = format!("{overlay}: {} {name}", w["kind"].as_str().unwrap());
        let pod = &w["spec"]["template"]["spec"];
        if !selects(&w["spec"]["selector"]["matchLabels"], &pod_labels(w)) {
            problems.push(format!("{what}: the selector does not match the pod labels"));
        }
        if w["kind"] == "StatefulSet" {
            let svc = w["spec"]["serviceName"].as_str().unwrap_or_default();
            match named("Service", svc) {
                Some(s) if s["spec"]["clusterIP"] == "None" => {}
                _ => problems.push(format!("{what}: serviceName {svc} is no headless Service")),
            }
        }
        for c in pod["containers"].as_array().unwrap() {
            let ports: BTreeMap<String, u64> = c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| (p["name"].as_str().unwrap_or_default().to_owned(), p["containerPort"].as_u64().unwrap()))
                .collect();
            let port_of = |p: &Value| p.as_u64().or_else(|| p.as_str().and_then(|n| ports.get(n).copied()));
            // Every ConfigMap and Secret it reads exists (a Secret may be
            // the one the operator creates: docs/operations.md).
            let mut env = BTreeMap::new();
            for from in c["envFrom"].as_array().into_iter().flatten() {
                if let Some(cm) = from["configMapRef"]["name"].as_str() {
                    match named("ConfigMap", cm) {
                        Some(cm) => {
                            for (k, v) in cm["data"].as_object().into_iter().flatten() {
                                env.insert(k.clone(), v.as_str().map(str::to_owned));
                            }
                        }
                        None => problems.push(format!("{what}: no ConfigMap {cm}")),
                    }
                } else {
                    problems.push(format!("{what}: envFrom other than a ConfigMap: {from}"));
                }
            }
            for e in c["env"].as_array().into_iter().flatten() {
                let key = e["name"].as_str().unwrap().to_owned();
                if let Some(v) = e["value"].as_str() {
                    env.insert(key, Some(v.to_owned()));
                    continue;
                }
                let secret = &e["valueFrom"]["secretKeyRef"];
                if let (Some(s), Some(k)) = (secret["name"].as_str(), secret["key"].as_str()) {
                    match named("Secret", s) {
                        Some(sec) if sec["data"].get(k).is_none() => {
                            problems.push(format!("{what}: Secret {s} has no {k}"))
                        }
                        Some(_) => {}
                        None if s == "switchboard-secrets" => {}
                        None => problems.push(format!("{what}: no Secret {s}")),
                    }
                }
                env.insert(key, None);
            }
            let image = c["image"].as_str().unwrap_or_default();
            if image.starts_with("nats:") {
                let conf = c["command"].as_array().and_then(|a| {
                    a.iter().skip_while(|x| *x != "--config").nth(1).and_then(Value::as_str).map(str::to_owned)
                });
                let conf = conf.unwrap_or_default();
                let mount = c["volumeMounts"].as_array().into_iter().flatten().find(|m| {
                    conf.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap_or_default().trim_end_matches('/')))
                });
                let cm = mount.and_then(|m| {
                    let vol = pod["volumes"].as_array()?.iter().find(|v| v["name"] == m["name"])?;
                    named("ConfigMap", vol["configMap"]["name"].as_str()?)
                });
                let file = conf.rsplit('/').next().unwrap_or_default();
                match cm.as_ref().and_then(|cm| cm["data"][file].as_str()) {
                    Some(text) => {
                        let p = tmp.join(format!("{overlay}-{file}"));
                        std::fs::write(&p, text).unwrap();
                        let replicas = w["spec"]["replicas"].as_u64().unwrap_or(1);
                        nats_check(&p, replicas, w["spec"]["serviceName"].as_str().unwrap_or_default());
                    }
                    None => problems.push(format!("{what}: the NATS config {conf} is not mounted from a ConfigMap")),
                }
                continue;
            }
            if !image.starts_with("switchboard") {
                problems.push(format!("{what}: unexpected image {image}"));
                continue;
            }
            let command: Vec<String> = strings(&c["command"]).into_iter().chain(strings(&c["args"])).collect();
            let inv = Invocation::new(&what, &command, env);
            problems.extend(inv.problems(clis, true));
            let Some(admin) = inv.port("--admin-listen", "SB_ADMIN_LISTEN") else { continue };
            admin_ports.insert(inv.binary.clone(), admin);
            // Probes ask /readyz and /healthz on the admin port.
            for (probe, want) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
                let get = &c[probe]["httpGet"];
                if get["path"] != want || port_of(&get["port"]) != Some(u64::from(admin)) {
                    problems.push(format!("{what}: {probe} is not GET {want} on admin port {admin}: {get}"));
                }
            }
            let notes = &w["spec"]["template"]["metadata"]["annotations"];
            if notes["prometheus.io/scrape"] != "true" || notes["prometheus.io/port"] != admin.to_string().as_str() {
                problems.push(format!("{what}: no Prometheus scrape annotations for port {admin}"));
            }
            // The grace period outlasts preStop plus the drain.
            let grace = pod["terminationGracePeriodSeconds"].as_f64().unwrap_or(30.0);
            let pre_stop = strings(&c["lifecycle"]["preStop"]["exec"]["command"]);
            let pre_stop = match pre_stop.as_slice() {
                [sleep, n] if sleep == "sleep" => secs(n),
                [] => 0.0,
                other => {
                    problems.push(format!("{what}: a preStop hook the test cannot time: {other:?}"));
                    0.0
                }
            };
            let drain = match inv.binary.as_str() {
                "gateway" => {
                    if pre_stop == 0.0 {
                        problems.push(format!("{what}: no preStop hook"));
                    }
                    secs(&inv.setting("--drain-window", "SB_DRAIN_WINDOW").flatten().unwrap_or("10s".into()))
                        + GATEWAY_DRAIN_GRACE_SECS
                }
                "router" => secs(&inv.setting("--drain-timeout", "SB_DRAIN_TIMEOUT").flatten().unwrap_or("10s".into())),
                _ => 0.0,
            };
            if grace <= pre_stop + drain {
                problems
                    .push(format!("{what}: grace {grace}s is not longer than preStop {pre_stop}s + drain {drain}s"));
            }
        }
    }
    for b in SERVICES {
        if !admin_ports.contains_key(b) {
            problems.push(format!("{overlay}: no {b} workload"));
        }
    }

    // Services select pods and name ports those pods have.
    for s in of_kind(docs, "Service") {
        let name = s["metadata"]["name"].as_str().unwrap();
        let Some(w) = workloads.iter().find(|w| selects(&s["spec"]["selector"], &pod_labels(w))) else {
            problems.push(format!("{overlay}: Service {name} selects no pods"));
            continue;
        };
        let names: BTreeSet<String> = w["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        for p in s["spec"]["ports"].as_array().unwrap() {
            if let Some(t) = p["targetPort"].as_str() {
                if !names.contains(t) {
                    problems.push(format!("{overlay}: Service {name} targets port {t}, which its pods lack"));
                }
            }
        }
    }
    // PodDisruptionBudgets and the autoscaler point at workloads.
    for pdb in of_kind(docs, "PodDisruptionBudget") {
        if !workloads.iter().any(|w| selects(&pdb["spec"]["selector"]["matchLabels"], &pod_labels(w))) {
            problems.push(format!("{overlay}: PodDisruptionBudget {} selects no pods", pdb["metadata"]["name"]));
        }
    }
    let hpas: Vec<&Value> = of_kind(docs, "HorizontalPodAutoscaler").collect();
    for hpa in &hpas {
        let target = &hpa["spec"]["scaleTargetRef"];
        match named(target["kind"].as_str().unwrap_or_default(), target["name"].as_str().unwrap_or_default()) {
            Some(w) if w["spec"].get("replicas").is_some() => {
                problems.push(format!("{overlay}: {} sets replicas, which its autoscaler owns", w["metadata"]["name"]))
            }
            Some(_) => {}
            None => problems.push(format!("{overlay}: the autoscaler targets nothing: {target}")),
        }
    }
    let gateway = workloads.iter().find(|w| w["metadata"]["name"] == "gateway");
    if gateway.is_none_or(|g| g["kind"] != "Deployment") || hpas.is_empty() {
        problems.push(format!("{overlay}: gateways are not a Deployment with an autoscaler"));
    }
    // Presence runs one replica; a budget would only block node drains.
    for name in ["gateway", "router", "nats"] {
        if !of_kind(docs, "PodDisruptionBudget").any(|p| p["metadata"]["name"] == name) {
            problems.push(format!("{overlay}: no PodDisruptionBudget for {name}"));
        }
    }

    // The ServiceMonitor scrapes the admin port of every service under the
    // job names the alerts use.
    for sm in of_kind(docs, "ServiceMonitor") {
        let selected: Vec<&Value> = of_kind(docs, "Service")
            .filter(|s| selects(&sm["spec"]["selector"]["matchLabels"], &s["metadata"]["labels"]))
            .collect();
        let job_label = sm["spec"]["jobLabel"].as_str().unwrap_or_default();
        let jobs: BTreeSet<&str> =
            selected.iter().filter_map(|s| s["metadata"]["labels"][job_label].as_str()).collect();
        if jobs != BTreeSet::from(SERVICES) || selected.len() != SERVICES.len() {
            problems
                .push(format!("{overlay}: the ServiceMonitor's jobs are {jobs:?} from {} Services", selected.len()));
        }
        for e in sm["spec"]["endpoints"].as_array().into_iter().flatten() {
            for s in &selected {
                let port = s["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == e["port"]);
                let job = s["metadata"]["labels"][job_label].as_str().unwrap_or_default();
                if port.and_then(|p| p["port"].as_u64()) != admin_ports.get(job).map(|p| u64::from(*p)) {
                    problems.push(format!(
                        "{overlay}: Service {} has no port {} on the admin port",
                        s["metadata"]["name"], e["port"]
                    ));
                }
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// Prometheus and Grafana

#[test]
fn prometheus_config_and_alerts_pass_promtool() {
    let promtool = tool("promtool");
    for args in [
        vec!["check", "config", "deploy/prometheus/prometheus.yml"],
        vec!["check", "rules", "deploy/prometheus/alerts.yml"],
        vec!["test", "rules", "deploy/prometheus/alerts_test.yml"],
    ] {
        let out = run(Command::new(&promtool).args(&args).current_dir(root()), None);
        assert!(out.status.success(), "promtool {}:\n{}", args.join(" "), text(&out));
    }
    let names: BTreeSet<String> = alert_rules().into_iter().map(|(n, _)| n).collect();
    for a in ALERTS_REQUIRED {
        assert!(names.contains(a), "no alert {a}");
    }
    // Alerts and dashboard select jobs by the names the scrape config uses.
    let jobs = scrape_jobs(&yaml_file("deploy/prometheus/prometheus.yml"));
    for (what, expr) in queries() {
        for job in label_values(&expr, "job") {
            assert!(jobs.contains_key(&job), "{what}: no scrape job {job}");
        }
    }
}

#[test]
fn dashboard_is_well_formed_and_shows_what_operators_need() {
    let dash: Value = serde_json::from_str(&read("deploy/grafana/switchboard.json")).expect("dashboard JSON");
    assert_eq!(dash["uid"], "switchboard");
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"));
    let mut ids = BTreeSet::new();
    for p in panels(&dash) {
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id {}", p["id"]);
        assert!(p["gridPos"]["w"].as_u64().is_some() && p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {}", p["title"]);
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {} has no targets", p["title"]));
        assert!(!targets.is_empty(), "panel {} has no targets", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {}", p["title"]);
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "panel {}", p["title"]);
        }
    }
    let used: BTreeSet<String> =
        queries().into_iter().filter(|(w, _)| w.starts_with("dashboard")).flat_map(|(_, e)| metric_names(&e)).collect();
    for m in DASHBOARD_MUST_SHOW {
        assert!(used.contains(m), "the dashboard does not query {m}");
    }
}

/// Every panel, including those inside collapsed rows.
fn panels(dash: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        out.push(p.clone());
        out.extend(p["panels"].as_array().cloned().unwrap_or_default());
    }
    out
}

/// (where, PromQL) for every dashboard query and alert expression.
fn queries() -> Vec<(String, String)> {
    let dash: Value = serde_json::from_str(&read("deploy/grafana/switchboard.json")).unwrap();
    let mut out = Vec::new();
    for p in panels(&dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("dashboard panel {:?}", p["title"].as_str().unwrap()),
                t["expr"].as_str().unwrap().into(),
            ));
        }
    }
    out.extend(alert_rules().into_iter().map(|(n, e)| (format!("alert {n}"), e)));
    out
}

fn alert_rules() -> Vec<(String, String)> {
    let rules = yaml_file("deploy/prometheus/alerts.yml");
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| (r["alert"].as_str().unwrap().to_owned(), r["expr"].as_str().unwrap().to_owned()))
        .collect()
}

/// The `switchboard_…` metric names in a PromQL expression (outside strings).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    let mut quoted = false;
    for ch in expr.chars().chain([' ']) {
        if ch == '"' {
            quoted = !quoted;
        }
        if !quoted && (ch.is_ascii_alphanumeric() || ch == '_' || ch == ':') {
            word.push(ch);
            continue;
        }
        if word.starts_with("switchboard_") {
            out.insert(std::mem::take(&mut word));
        }
        word.clear();
    }
    out
}

/// Values of `label="…"` matchers in a PromQL expression.
fn label_values(expr: &str, label: &str) -> BTreeSet<String> {
    let needle = format!("{label}=\"");
    expr.match_indices(&needle)
        .filter(|(i, _)| !expr[..*i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
        .filter_map(|(i, _)| expr[i + needle.len()..].split('"').next().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------
// The metrics the binaries really export, and a real Prometheus

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_export_every_metric_the_dashboard_and_alerts_query() {
    let started = Instant::now();
    let mut queried: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (what, expr) in queries() {
        for m in metric_names(&expr) {
            queried.entry(m).or_default().insert(what.clone());
        }
    }

    // A standalone gateway's /metrics passes promtool too.
    {
        let gw = Gateway::start(&[]);
        let mut c = gw.json("solo").await;
        join(&mut c, "lobby").await;
        publish(&mut c, "lobby", json!("hi")).await;
        let text = get(&format!("{}/metrics", gw.admin)).await.1;
        promtool_check_metrics("standalone gateway", &text);
    }

    let mut cluster = Cluster::start(1, 1).await;
    // A NATS restart: every process reconnects (nats_reconnects_total).
    cluster.nats.kill9();
    cluster.nats.restart();
    let admins = admin_urls(&cluster);
    for (service, url) in &admins {
        let name = format!("switchboard_{service}_nats_reconnects_total");
        wait_for(&format!("{service} to count its NATS reconnect"), Duration::from_secs(20), || async {
            families(&get(&format!("{url}/metrics")).await.1).contains_key(&name)
        })
        .await;
    }
    cluster.wait_ring(1).await;
    cluster.wait_gateways_ready().await;

    // Traffic, so that labelled metrics appear.
    let gw = &cluster.gateways[0];
    let mut intruder = Client::connect(gw.options(Some("not-a-token"))).await.unwrap();
    assert_eq!(intruder.wait_close(T).await.unwrap(), Some(4500));
    let mut alice = gw.json("alice").await;
    let mut bob = gw.json("bob").await;
    for i in 0..32 {
        let room = format!("room-{i}");
        join(&mut alice, &room).await;
        publish(&mut alice, &room, json!({"n": i})).await;
    }
    join(&mut bob, "room-0").await;
    publish(&mut alice, "room-0", json!("hello bob")).await;
    bob.next_of_type("message", T).await.unwrap();
    for op in [
        json!({"op": "members", "room": "room-0"}),
        json!({"op": "presence", "users": ["bob"]}),
        json!({"op": "send", "user": "bob", "data": "psst"}),
        json!({"op": "leave", "room": "room-31"}),
    ] {
        let r = alice.request(op.clone()).await.unwrap();
        assert_eq!(r["ok"], true, "{op}: {r}");
    }
    // A burst past the rate limit (burst 100): drops{reason="rate_limited"}.
    for _ in 0..150 {
        bob.send_json(&json!({"op": "ping"})).await.unwrap();
    }
    bob.close(1000).await.unwrap();

    // A second router: rooms move to it by handoff.
    cluster.start_router();
    cluster.wait_ring(2).await;
    let admins = admin_urls(&cluster);
    let first_router = admins.iter().find(|(s, _)| *s == "router").unwrap().1.clone();
    wait_for("a room handoff", Duration::from_secs(20), || async {
        metric(&get(&format!("{first_router}/metrics")).await.1, "switchboard_router_handoffs_total") > 0.0
    })
    .await;

    // Every metric queried is exported by the service its name belongs to.
    let mut missing = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut exported: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
        for (service, url) in &admins {
            exported.entry(service).or_default().extend(families(&get(&format!("{url}/metrics")).await.1));
        }
        missing.clear();
        for (name, users) in &queried {
            let service = SERVICES.iter().find(|s| name.starts_with(&format!("switchboard_{s}_"))).copied();
            let Some(service) = service else {
                missing.insert(name.clone(), format!("belongs to no service; used by {users:?}"));
                continue;
            };
            if !exports(&exported[service], name) {
                missing.insert(name.clone(), format!("not exported by {service}; used by {users:?}"));
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(missing.is_empty(), "metrics the dashboard or alerts query but the binaries do not export: {missing:#?}");
    for (service, url) in &admins {
        promtool_check_metrics(&format!("{service} at {url}"), &get(&format!("{url}/metrics")).await.1);
    }

    // A real Prometheus, scraping the cluster under the deploy config's job
    // names, with the deploy alerts loaded.
    prometheus_against(&mut cluster, &admins).await;
    drop(alice);
    eprintln!("deploy metrics test took {:?}", started.elapsed());
}

/// (service, admin base URL) of every process in the cluster.
fn admin_urls(cluster: &Cluster) -> Vec<(&'static str, String)> {
    let base = |p: &Proc| p.printed("admin").expect("admin line").trim_end_matches("/metrics").to_owned();
    let mut out: Vec<(&'static str, String)> = cluster.gateways.iter().map(|g| ("gateway", g.admin.clone())).collect();
    out.extend(cluster.routers.iter().map(|r| ("router", r.admin.clone())));
    out.extend(cluster.presence.iter().map(|p| ("presence", base(p))));
    out
}

async fn prometheus_against(cluster: &mut Cluster, admins: &[(&'static str, String)]) {
    let deploy_jobs = scrape_jobs(&yaml_file("deploy/prometheus/prometheus.yml"));
    let tmp = TempDir::new("prometheus");
    let mut scrape = Vec::new();
    for service in SERVICES {
        assert!(deploy_jobs.contains_key(service), "deploy/prometheus/prometheus.yml has no job {service}");
        let targets: Vec<String> = admins
            .iter()
            .filter(|(s, _)| *s == service)
            .map(|(_, url)| url.trim_start_matches("http://").to_owned())
            .collect();
        scrape.push(json!({"job_name": service, "static_configs": [{"targets": targets}]}));
    }
    let config = json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [path("deploy/prometheus/alerts.yml")],
        "scrape_configs": scrape,
    });
    let config_file = tmp.path.join("prometheus.yml");
    std::fs::write(&config_file, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let (mut prometheus, port) = retry_on_port(
        |port| {
            let args: Vec<String> = vec![
                format!("--config.file={}", config_file.display()),
                format!("--storage.tsdb.path={}", tmp.path.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ];
            Proc::start("prometheus", &tool("prometheus"), &args, None)
        },
        |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    let api = format!("http://127.0.0.1:{port}");

    wait_for("Prometheus to be ready", Duration::from_secs(30), || async {
        try_get(&format!("{api}/-/ready")).await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    wait_for("every target to be up", Duration::from_secs(30), || async {
        let targets = api_get(&api, "/api/v1/targets").await["data"]["activeTargets"].clone();
        let targets = targets.as_array().cloned().unwrap_or_default();
        targets.len() == admins.len() && targets.iter().all(|t| t["health"] == "up")
    })
    .await;
    // Rules evaluated without error.
    wait_for("every alert rule to be evaluated", Duration::from_secs(30), || async {
        let groups = api_get(&api, "/api/v1/rules").await["data"]["groups"].clone();
        let rules: Vec<Value> = groups
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        for r in &rules {
            assert_ne!(r["health"], "err", "rule {} fails: {}", r["name"], r["lastError"]);
        }
        !rules.is_empty() && rules.iter().all(|r| r["health"] == "ok")
    })
    .await;
    // A few scrapes, so that rate() has samples, then every dashboard query
    // runs and returns data.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut empty = Vec::new();
    for (what, expr) in queries().into_iter().filter(|(w, _)| w.starts_with("dashboard")) {
        let promql = expr.replace("$__rate_interval", "30s");
        assert!(!promql.contains('$'), "{what}: a dashboard variable the test does not know: {expr}");
        let answer = api_get(&api, &format!("/api/v1/query?query={}", percent_encode(&promql))).await;
        assert_eq!(answer["status"], "success", "{what}: {promql}: {answer}");
        if answer["data"]["result"].as_array().is_none_or(Vec::is_empty) {
            empty.push(format!("{what}: {promql}"));
        }
    }
    assert!(empty.is_empty(), "dashboard queries with no data on a live cluster: {empty:#?}");
    // A healthy cluster raises no alert but informational ones.
    let alerts = api_get(&api, "/api/v1/alerts").await["data"]["alerts"].clone();
    let loud: Vec<&Value> = alerts.as_array().unwrap().iter().filter(|a| a["labels"]["severity"] != "info").collect();
    assert!(loud.is_empty(), "alerts on a healthy cluster: {loud:#?}");
    // Stopping presence raises SwitchboardPresenceDown.
    if let Some(mut p) = cluster.presence.take() {
        p.kill9();
    }
    wait_for("SwitchboardPresenceDown", Duration::from_secs(20), || async {
        let alerts = api_get(&api, "/api/v1/alerts").await["data"]["alerts"].clone();
        alerts.as_array().into_iter().flatten().any(|a| a["labels"]["alertname"] == "SwitchboardPresenceDown")
    })
    .await;
    prometheus.terminate(Duration::from_secs(10));
}

/// `promtool check metrics`: no finding but a missing HELP on a known metric.
fn promtool_check_metrics(what: &str, text: &str) {
    assert!(text.contains("switchboard_"), "{what}: no Switchboard metrics:\n{text}");
    let out = run(Command::new(tool("promtool")).args(["check", "metrics"]), Some(text));
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let findings: Vec<&str> = report.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert!(
        findings.is_empty() && matches!(out.status.code(), Some(0) | Some(3)),
        "promtool check metrics ({what}, {}): {findings:#?}\n(a metric without HELP needs a describe_…! call)",
        out.status
    );
}

/// Metric families in exposition text: name → type.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_owned(), t.trim().to_owned()))
        .collect()
}

/// Whether `name` is a family, or a series of a histogram or summary family.
fn exports(families: &BTreeMap<String, String>, name: &str) -> bool {
    families.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .and_then(|base| families.get(base))
                .is_some_and(|t| t == "histogram" || (t == "summary" && *suffix != "_bucket"))
        })
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An HTTP/1.0 GET on loopback (no chunked bodies): (status, body).
async fn try_get(url: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
    };
    tokio::time::timeout(Duration::from_secs(10), fetch).await.ok().flatten()
}

async fn get(url: &str) -> (u16, String) {
    try_get(url).await.unwrap_or_else(|| panic!("GET {url} failed"))
}

async fn api_get(api: &str, path: &str) -> Value {
    let (status, body) = get(&format!("{api}{path}")).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {status} {e}: {body}"))
}

// ---------------------------------------------------------------------------
// Flags and variables against `--help`

/// The flags and variables a binary's `--help` lists.
#[derive(Clone)]
struct Help {
    flags: BTreeSet<String>,
    vars: BTreeSet<String>,
}

/// `--help` of each binary, run once.
#[derive(Default)]
struct Clis(std::sync::Mutex<BTreeMap<String, Help>>);

impl Clis {
    fn get(&self, name: &str) -> Help {
        let mut cache = self.0.lock().unwrap();
        cache
            .entry(name.to_owned())
            .or_insert_with(|| {
                let out = run(Command::new(binary(name)).arg("--help"), None);
                assert!(out.status.success(), "{name} --help:\n{}", text(&out));
                let help = String::from_utf8_lossy(&out.stdout).into_owned();
                let word =
                    |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
                let flags = help
                    .split_whitespace()
                    .filter_map(|w| w.strip_prefix("--"))
                    .map(word)
                    .filter(|w: &String| !w.is_empty())
                    .map(|w| format!("--{w}"))
                    .collect();
                let vars = help.split("[env: ").skip(1).map(word).collect();
                Help { flags, vars }
            })
            .clone()
    }
}

/// How a file runs one of the binaries: argv and environment (`None` for a
/// value from a Secret or the downward API).
struct Invocation {
    what: String,
    binary: String,
    args: Vec<String>,
    env: BTreeMap<String, Option<String>>,
}

impl Invocation {
    fn new(what: &str, argv: &[String], env: BTreeMap<String, Option<String>>) -> Self {
        let binary = argv.first().map(|b| b.rsplit('/').next().unwrap().to_owned()).unwrap_or_default();
        Self { what: what.to_owned(), binary, args: argv.iter().skip(1).cloned().collect(), env }
    }

    /// The value given by `--flag v`, `--flag=v` or the variable.
    fn setting(&self, flag: &str, var: &str) -> Option<Option<String>> {
        for (i, a) in self.args.iter().enumerate() {
            if a == flag {
                return Some(self.args.get(i + 1).cloned());
            }
            if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
                return Some(Some(v.to_owned()));
            }
        }
        self.env.get(var).cloned()
    }

    fn port(&self, flag: &str, var: &str) -> Option<u16> {
        self.setting(flag, var).flatten()?.rsplit(':').next()?.parse().ok()
    }

    /// Flags and variables unknown to the binary, listen addresses a
    /// container cannot be reached on, and settings cluster mode needs.
    fn problems(&self, clis: &Clis, in_container: bool) -> Vec<String> {
        // in_container: every listen address must be given, as 0.0.0.0.
        let what = &self.what;
        if !IMAGE_BINARIES.contains(&self.binary.as_str()) || self.binary == "loadtest" {
            return vec![format!("{what}: runs {:?}, not gateway, router or presence", self.binary)];
        }
        let telemetry = read("shell/src/telemetry.rs");
        let Help { flags, vars } = clis.get(&self.binary);
        let mut out = Vec::new();
        for a in self.args.iter().filter(|a| a.starts_with("--")) {
            let flag = a.split('=').next().unwrap();
            if !flags.contains(flag) {
                out.push(format!("{what}: `{} --help` has no {flag}", self.binary));
            }
        }
        for var in self.env.keys() {
            let logging = LOGGING_ENV.contains(&var.as_str()) && telemetry.contains(var.as_str());
            if !vars.contains(var) && !logging {
                out.push(format!("{what}: `{} --help` has no variable {var}", self.binary));
            }
        }
        let standalone = self.setting("--standalone", "SB_STANDALONE").is_some();
        // (flag, variable, is a gRPC API): an API may stay on the container's
        // loopback; off loopback it needs --api-token (or --api-insecure).
        let listens: &[(&str, &str, bool)] = match self.binary.as_str() {
            "gateway" => &[
                ("--listen", "SB_LISTEN", false),
                ("--admin-listen", "SB_ADMIN_LISTEN", false),
                ("--grpc-listen", "SB_GRPC_LISTEN", true),
            ],
            "router" => &[("--admin-listen", "SB_ADMIN_LISTEN", false), ("--grpc-listen", "SB_GRPC_LISTEN", true)],
            _ => &[("--listen", "SB_LISTEN", true), ("--admin-listen", "SB_ADMIN_LISTEN", false)],
        };
        let token = self.setting("--api-token", "SB_API_TOKEN").is_some();
        let insecure = self.setting("--api-insecure", "SB_API_INSECURE").is_some();
        for (flag, var, api) in listens {
            let any = |a: &str| a.starts_with("0.0.0.0:") || a.starts_with("[::]:");
            let loopback = |a: &str| a.starts_with("127.") || a.starts_with("[::1]:");
            match self.setting(flag, var).flatten() {
                Some(a) if any(&a) && *api && !token => {
                    out.push(format!("{what}: {flag} ({var}) is {a} without --api-token (SB_API_TOKEN)"))
                }
                Some(a) if any(&a) || (*api && loopback(&a)) => {}
                other if in_container || other.is_some() => {
                    out.push(format!("{what}: {flag} ({var}) is {other:?}; a container must bind 0.0.0.0"))
                }
                _ => {}
            }
        }
        if insecure {
            out.push(format!("{what}: --api-insecure serves an API without a token"));
        }
        if !standalone {
            let mut needed = vec![("--nats-url", "SB_NATS_URL"), ("--id", "SB_ID")];
            if self.binary == "gateway" {
                needed.push(("--presence-url", "SB_PRESENCE_URL"));
                if self.setting("--jwt-public-key", "SB_JWT_PUBLIC_KEY").is_none() {
                    needed.push(("--jwt-secret", "SB_JWT_SECRET"));
                }
            }
            for (flag, var) in needed {
                if self.setting(flag, var).is_none() {
                    out.push(format!("{what}: cluster mode needs {flag} ({var})"));
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Small helpers

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).canonicalize().unwrap()
}

fn path(rel: &str) -> PathBuf {
    root().join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A YAML file's first document, as JSON.
fn yaml_file(rel: &str) -> Value {
    yaml_docs(&read(rel)).into_iter().next().unwrap_or_else(|| panic!("{rel} is empty"))
}

/// The documents of a YAML stream, as JSON, parsed by PyYAML (installed with
/// yamllint into the tools' virtualenv).
fn yaml_docs(text: &str) -> Vec<Value> {
    let script =
        "import json, sys, yaml\njson.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)";
    let out = run(Command::new(tool("python3")).args(["-c", script]), Some(text));
    assert!(out.status.success(), "parsing YAML with PyYAML (run `make deps`):\n{}", self::text(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("YAML as JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
}

/// Seconds in a duration such as `500ms`, `10s`, `2m`, `1m30s` or `30`.
fn secs(s: &str) -> f64 {
    let (mut total, mut number) = (0.0, String::new());
    let mut chars = s.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let n: f64 = std::mem::take(&mut number).parse().unwrap_or_else(|_| panic!("duration {s:?}"));
        total += n * match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => panic!("duration {s:?}"),
        };
    }
    total + if number.is_empty() { 0.0 } else { number.parse::<f64>().unwrap() }
}

fn workspace_members() -> Vec<String> {
    let cargo = read("Cargo.toml");
    let line = cargo.lines().find(|l| l.trim_start().starts_with("members")).expect("workspace members");
    line.split('"').skip(1).step_by(2).map(str::to_owned).collect()
}

/// A `key = "value"` of a TOML file.
fn toml_value(toml: &str, key: &str) -> String {
    toml.lines()
        .find_map(|l| {
            l.strip_prefix(key)?.trim_start().strip_prefix('=').map(|v| v.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no {key}"))
}

fn version(v: &str) -> Vec<u32> {
    v.trim().split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Runs a command with optional standard input, for at most two minutes.
fn run(cmd: &mut Command, input: Option<&str>) -> Output {
    let limit = Duration::from_secs(120);
    let desc = format!("{cmd:?}");
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {desc}: {e}"));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_owned();
        std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
    }
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{desc} took longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// stdout and stderr of a finished command.
fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A directory under the system's temp dir, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "switchboard-deploy-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
