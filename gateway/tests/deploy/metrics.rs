//! The metrics the binaries really export, scraped by a real Prometheus.

use super::*;

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
pub(super) fn admin_urls(cluster: &Cluster) -> Vec<(&'static str, String)> {
    let base = |p: &Proc| p.printed("admin").expect("admin line").trim_end_matches("/metrics").to_owned();
    let mut out: Vec<(&'static str, String)> = cluster.gateways.iter().map(|g| ("gateway", g.admin.clone())).collect();
    out.extend(cluster.routers.iter().map(|r| ("router", r.admin.clone())));
    out.extend(cluster.presence.iter().map(|p| ("presence", base(p))));
    out
}

pub(super) async fn prometheus_against(cluster: &mut Cluster, admins: &[(&'static str, String)]) {
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
pub(super) fn promtool_check_metrics(what: &str, text: &str) {
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
pub(super) fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_owned(), t.trim().to_owned()))
        .collect()
}

/// Whether `name` is a family, or a series of a histogram or summary family.
pub(super) fn exports(families: &BTreeMap<String, String>, name: &str) -> bool {
    families.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .and_then(|base| families.get(base))
                .is_some_and(|t| t == "histogram" || (t == "summary" && *suffix != "_bucket"))
        })
}

pub(super) async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
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
pub(super) async fn try_get(url: &str) -> Option<(u16, String)> {
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

pub(super) async fn get(url: &str) -> (u16, String) {
    try_get(url).await.unwrap_or_else(|| panic!("GET {url} failed"))
}

pub(super) async fn api_get(api: &str, path: &str) -> Value {
    let (status, body) = get(&format!("{api}{path}")).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {status} {e}: {body}"))
}
