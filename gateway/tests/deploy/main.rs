//! The deploy files (`deploy/`, `.dockerignore`, `.yamllint`) checked offline,
//! without a Docker engine or a Kubernetes cluster: hadolint on the
//! Dockerfile; the real Compose v2 parser on the Compose file; kustomize and
//! the Kubernetes schemas (`--strict`) on both overlays; promtool and a real
//! Prometheus server on the Prometheus config and alerts; `haproxy -c`,
//! `nats-server -t` and yamllint on the rest. Every flag and `SB_` variable
//! the files pass must exist in the binaries' `--help`, and every metric the
//! Grafana dashboard and the alerts query must be exported by the binaries.
//! The tools come from `make deps`; a missing tool fails the test.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod compose;
mod dashboards;
mod docker;
mod kubernetes;
mod local;
mod metrics;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use loadtest::client::Client;
use serde_json::{json, Value};
use support::cluster::{retry_on_port, Cluster};
use support::process::{binary, docker_compose, nats_server, tool, Proc, TempDir};
use support::*;
#[allow(unused_imports)]
use {cli::*, compose::*, dashboards::*, metrics::*};

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
