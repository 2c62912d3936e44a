//! The kustomize overlays, rendered and validated against the binaries.

use super::*;

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
        "NetworkPolicy",
        "ServiceAccount",
    ] {
        assert!(kinds_seen.contains(kind), "no overlay renders a {kind}");
    }
}

pub(super) fn of_kind<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    docs.iter().filter(move |d| d["kind"] == kind)
}

/// Cross-checks of one rendered overlay; returns the problems found.
pub(super) fn check_manifests(overlay: &str, docs: &[Value], clis: &Clis, tmp: &Path) -> Vec<String> {
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
                        None if OPERATOR_SECRETS.contains(&s) => {}
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
                        let service = w["spec"]["serviceName"].as_str().unwrap_or_default();
                        // JetStream exactly where routers keep rooms in it, on a
                        // claimed volume, with as many servers as replicas.
                        let durable = stores(docs);
                        let includes: Vec<(String, String)> = cm.as_ref().unwrap()["data"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(name, _)| *name != file)
                            .map(|(name, body)| (name.clone(), body.as_str().unwrap_or_default().to_owned()))
                            .collect();
                        if let Some(store) = nats_check(&p, &includes, replicas, service, durable.is_some()) {
                            let claims: Vec<&str> = w["spec"]["volumeClaimTemplates"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|t| t["metadata"]["name"].as_str())
                                .collect();
                            let on_claim = c["volumeMounts"].as_array().into_iter().flatten().any(|m| {
                                claims.contains(&m["name"].as_str().unwrap_or_default())
                                    && store.starts_with(m["mountPath"].as_str().unwrap_or("?"))
                            });
                            if !on_claim {
                                problems.push(format!("{what}: JetStream's {store} is not on a volume claim"));
                            }
                            if durable.is_some_and(|r| r > replicas) {
                                problems.push(format!("{what}: {durable:?} store replicas on {replicas} servers"));
                            }
                        }
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
            // Files the process reads its secrets from are keys of mounted Secrets.
            for (var, file) in inv.env.iter().filter(|(k, _)| k.ends_with("_FILE") || *k == "SB_NATS_TLS_CA") {
                let Some(file) = file else { continue };
                match secret_file(pod, c, file) {
                    Some((name, key)) => match named("Secret", &name) {
                        Some(sec) if sec["data"].get(&key).is_none() => {
                            problems.push(format!("{what}: {var}: Secret {name} has no {key}"))
                        }
                        Some(_) => {}
                        None if OPERATOR_SECRETS.contains(&name.as_str()) => {}
                        None => problems.push(format!("{what}: {var}: no Secret {name}")),
                    },
                    None => problems.push(format!("{what}: {var} {file} is not a key of a mounted Secret")),
                }
            }
            if let Some(Some(config)) = inv.setting("--config", "SB_CONFIG") {
                let (dir, file) = config.rsplit_once('/').unwrap_or_default();
                let mount = c["volumeMounts"].as_array().into_iter().flatten().find(|m| m["mountPath"] == dir);
                let cm = mount.and_then(|m| {
                    let vol = pod["volumes"].as_array()?.iter().find(|v| v["name"] == m["name"])?;
                    named("ConfigMap", vol["configMap"]["name"].as_str()?)
                });
                if cm.as_ref().and_then(|cm| cm["data"][file].as_str()) != Some(read(POLICY).as_str()) {
                    problems.push(format!("{what}: {config} is not {POLICY} mounted from a ConfigMap"));
                }
            }
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

    problems.extend(check_hardening(overlay, docs, &workloads));

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

/// Secrets the operator creates (docs/operations.md); an overlay may
/// generate them instead.
const OPERATOR_SECRETS: [&str; 3] = ["switchboard-secrets", "switchboard-nats", "switchboard-nats-tls"];

/// The Secret and key a container reads at `file`, through a `secret` or
/// `projected` volume mounted above it.
fn secret_file(pod: &Value, container: &Value, file: &str) -> Option<(String, String)> {
    let mount = container["volumeMounts"].as_array()?.iter().find(|m| {
        m["mountPath"].as_str().is_some_and(|dir| file.starts_with(&format!("{}/", dir.trim_end_matches('/'))))
    })?;
    let rel = &file[mount["mountPath"].as_str()?.trim_end_matches('/').len() + 1..];
    let volume = pod["volumes"].as_array()?.iter().find(|v| v["name"] == mount["name"])?;
    let sources: Vec<(&Value, &Value)> = if volume["secret"].is_object() {
        vec![(&volume["secret"]["secretName"], &volume["secret"]["items"])]
    } else {
        let projected = volume["projected"]["sources"].as_array()?;
        projected
            .iter()
            .filter(|s| s["secret"].is_object())
            .map(|s| (&s["secret"]["name"], &s["secret"]["items"]))
            .collect()
    };
    sources.into_iter().find_map(|(name, items)| {
        let key = match items.as_array() {
            Some(items) => items.iter().find(|i| i["path"] == rel)?["key"].as_str()?.to_owned(),
            None => rel.to_owned(),
        };
        Some((name.as_str()?.to_owned(), key))
    })
}

/// Labels on everything, no service account tokens, and network policies
/// that open only the client and API ports beyond the release.
fn check_hardening(overlay: &str, docs: &[Value], workloads: &[&Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let version = toml_value(&read("Cargo.toml"), "version");
    for d in docs.iter().filter(|d| d["kind"] != "Namespace") {
        let labels = &d["metadata"]["labels"];
        let what = format!("{overlay}: {} {}", d["kind"].as_str().unwrap_or_default(), d["metadata"]["name"]);
        for (label, want) in [
            ("app.kubernetes.io/instance", None),
            ("app.kubernetes.io/version", Some(version.as_str())),
            ("app.kubernetes.io/managed-by", None),
        ] {
            match labels[label].as_str() {
                Some(v) if want.is_none_or(|w| w == v) => {}
                other => problems.push(format!("{what}: label {label} is {other:?}")),
            }
        }
    }
    let policies: Vec<&Value> = of_kind(docs, "NetworkPolicy").collect();
    // Ports open to anyone (a rule without `from`), and who may reach NATS
    // and presence, by component.
    let mut open = BTreeSet::new();
    let mut callers: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for w in workloads {
        let what = format!("{overlay}: {} {}", w["kind"].as_str().unwrap(), w["metadata"]["name"]);
        let pod = &w["spec"]["template"]["spec"];
        let account = pod["serviceAccountName"].as_str().unwrap_or_default();
        let sa = of_kind(docs, "ServiceAccount").find(|a| a["metadata"]["name"] == account);
        if sa.is_none_or(|a| a["automountServiceAccountToken"] != false) || pod["automountServiceAccountToken"] != false
        {
            problems.push(format!("{what}: no own ServiceAccount {account:?} without a mounted token"));
        }
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        let component = labels["app.kubernetes.io/component"].as_str().unwrap_or_default().to_owned();
        let selecting: Vec<&&Value> = policies
            .iter()
            .filter(|p| {
                let want = p["spec"]["podSelector"]["matchLabels"].as_object();
                want.is_some_and(|m| m.iter().all(|(k, v)| labels[k] == *v))
            })
            .collect();
        if selecting.len() != 1 || selecting[0]["spec"]["policyTypes"] != json!(["Ingress"]) {
            problems.push(format!("{what}: {} ingress NetworkPolicies select it", selecting.len()));
            continue;
        }
        for rule in selecting[0]["spec"]["ingress"].as_array().into_iter().flatten() {
            let ports: Vec<String> = rule["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["port"].to_string().replace('"', ""))
                .collect();
            let Some(from) = rule["from"].as_array() else {
                open.extend(ports.iter().map(|p| format!("{component}:{p}")));
                continue;
            };
            for f in from {
                let who: BTreeSet<String> = if f["namespaceSelector"].is_object() {
                    BTreeSet::from(["other namespaces".to_owned()])
                } else if let Some(c) = f["podSelector"]["matchLabels"]["app.kubernetes.io/component"].as_str() {
                    BTreeSet::from([c.to_owned()])
                } else if let Some(exprs) = f["podSelector"]["matchExpressions"].as_array() {
                    let of = exprs.iter().find(|e| e["key"] == "app.kubernetes.io/component");
                    of.map(|e| strings(&e["values"]).into_iter().collect()).unwrap_or_default()
                } else {
                    BTreeSet::from(["the release".to_owned()])
                };
                for p in &ports {
                    callers.entry((component.clone(), p.clone())).or_default().extend(who.clone());
                }
            }
        }
    }
    let want_open: BTreeSet<String> = ["gateway:ws", "router:grpc", "router:api"].map(str::to_owned).into();
    if open != want_open {
        problems.push(format!("{overlay}: ports open beyond the release are {open:?}, not {want_open:?}"));
    }
    let kinds: BTreeSet<String> = SERVICES.map(str::to_owned).into();
    for (component, port) in [("nats", "client"), ("presence", "grpc")] {
        let who = callers.get(&(component.to_owned(), port.to_owned())).cloned().unwrap_or_default();
        if who != kinds {
            problems.push(format!("{overlay}: {component}'s {port} port is reachable from {who:?}, not {kinds:?}"));
        }
    }
    problems
}

/// The store replicas routers and presence ask of JetStream, when either
/// keeps its state there (`SB_HISTORY_STORE` / `SB_INBOX_STORE`).
fn stores(docs: &[Value]) -> Option<u64> {
    // Generated ConfigMaps carry a hash suffix.
    let data = |name: &str| {
        let generated = |n: &str| n == name || n.strip_prefix(name).is_some_and(|rest| rest.starts_with('-'));
        of_kind(docs, "ConfigMap")
            .find(|c| c["metadata"]["name"].as_str().is_some_and(generated))
            .map(|c| c["data"].clone())
    };
    let (router, presence) = (data("router-config")?, data("presence-config")?);
    let durable = router["SB_HISTORY_STORE"] == "jetstream" || presence["SB_INBOX_STORE"] == "jetstream";
    let replicas = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(1);
    durable.then(|| replicas(&router["SB_HISTORY_REPLICAS"]).max(replicas(&presence["SB_INBOX_REPLICAS"])))
}
