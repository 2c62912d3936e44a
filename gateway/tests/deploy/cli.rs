//! The flags and variables of the files, checked against each binary's `--help`.

use super::*;

/// The flags and variables a binary's `--help` lists.
#[derive(Clone)]
pub(super) struct Help {
    pub(super) flags: BTreeSet<String>,
    pub(super) vars: BTreeSet<String>,
    /// Variables whose values `--help` hides: secrets, which also read a
    /// file named by `<VAR>_FILE`.
    pub(super) secrets: BTreeSet<String>,
}

/// `--help` of each binary, run once.
#[derive(Default)]
pub(super) struct Clis(std::sync::Mutex<BTreeMap<String, Help>>);

impl Clis {
    pub(super) fn get(&self, name: &str) -> Help {
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
                let secrets = help
                    .split("[env: ")
                    .skip(1)
                    .filter(|rest| rest[word(rest).len()..].starts_with(']'))
                    .map(word)
                    .collect();
                Help { flags, vars, secrets }
            })
            .clone()
    }
}

/// How a file runs one of the binaries: argv and environment (`None` for a
/// value from a Secret or the downward API).
pub(super) struct Invocation {
    pub(super) what: String,
    pub(super) binary: String,
    pub(super) args: Vec<String>,
    pub(super) env: BTreeMap<String, Option<String>>,
}

impl Invocation {
    pub(super) fn new(what: &str, argv: &[String], env: BTreeMap<String, Option<String>>) -> Self {
        let binary = argv.first().map(|b| b.rsplit('/').next().unwrap().to_owned()).unwrap_or_default();
        Self { what: what.to_owned(), binary, args: argv.iter().skip(1).cloned().collect(), env }
    }

    /// The value given by `--flag v`, `--flag=v` or the variable (`None`
    /// when it is in a file, `<VAR>_FILE`).
    pub(super) fn setting(&self, flag: &str, var: &str) -> Option<Option<String>> {
        for (i, a) in self.args.iter().enumerate() {
            if a == flag {
                return Some(self.args.get(i + 1).cloned());
            }
            if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
                return Some(Some(v.to_owned()));
            }
        }
        self.env.get(var).cloned().or_else(|| self.env.get(&format!("{var}_FILE")).map(|_| None))
    }

    pub(super) fn port(&self, flag: &str, var: &str) -> Option<u16> {
        self.setting(flag, var).flatten()?.rsplit(':').next()?.parse().ok()
    }

    /// Flags and variables unknown to the binary, listen addresses a
    /// container cannot be reached on, and settings cluster mode needs.
    pub(super) fn problems(&self, clis: &Clis, in_container: bool) -> Vec<String> {
        // in_container: every listen address must be given, as 0.0.0.0.
        let what = &self.what;
        if !IMAGE_BINARIES.contains(&self.binary.as_str()) || self.binary == "loadtest" {
            return vec![format!("{what}: runs {:?}, not gateway, router or presence", self.binary)];
        }
        let telemetry = read("shell/src/telemetry.rs");
        let Help { flags, vars, secrets } = clis.get(&self.binary);
        let mut out = Vec::new();
        for a in self.args.iter().filter(|a| a.starts_with("--")) {
            let flag = a.split('=').next().unwrap();
            if !flags.contains(flag) {
                out.push(format!("{what}: `{} --help` has no {flag}", self.binary));
            }
        }
        for var in self.env.keys() {
            let logging = LOGGING_ENV.contains(&var.as_str()) && telemetry.contains(var.as_str());
            let secret_file = var.strip_suffix("_FILE").is_some_and(|v| secrets.contains(v));
            if !vars.contains(var) && !logging && !secret_file {
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
            "router" => &[
                ("--admin-listen", "SB_ADMIN_LISTEN", false),
                ("--grpc-listen", "SB_GRPC_LISTEN", true),
                ("--api-listen", "SB_API_LISTEN", true),
            ],
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
            if self.binary != "presence" {
                // Gateways and routers must apply the same namespaces.
                needed.push(("--config", "SB_CONFIG"));
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

/// The example namespaces every deployment carries.
pub(super) const POLICY: &str = "deploy/switchboard.toml";

/// `deploy/switchboard.toml` parses as the binaries parse it and holds what
/// the deploy files promise: a read-only `news:`, a batched `big:`, the default.
#[test]
fn the_example_namespaces_parse_and_the_local_cluster_uses_them() {
    use router::history::HistoryConfig;
    use router::namespace::{JoinLeave, Namespaces, Publish};
    let parsed = Namespaces::parse(&read(POLICY), POLICY, HistoryConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.of("news:today").publish, Publish::None);
    assert_eq!(parsed.of("big:hall").join_leave, JoinLeave::Batched);
    let default = parsed.of("lobby");
    assert_eq!((default.prefix.as_str(), default.publish, default.join_leave), ("", Publish::Members, JoinLeave::All));
    assert_eq!(read("deploy/k8s/base/switchboard.toml"), read(POLICY), "the ConfigMap's copy differs");
    let script = read("deploy/local/cluster.sh");
    assert!(script.contains(&format!("CONFIG=${{CONFIG:-{POLICY}}}")), "cluster.sh does not default to {POLICY}");
    assert_eq!(script.matches("--config \"$CONFIG\"").count(), 2, "routers and gateways of cluster.sh read $CONFIG");
}
