//! RFC 6455 conformance: the Autobahn|Testsuite cases, run by PyPI's
//! `kosoku` against a real gateway in `--conformance-echo` mode (see
//! docs/conformance.md).
//!
//! The echo mode swaps only the Switchboard protocol for "send it back": the
//! frame reader, close codes, UTF-8 checks, fragmentation, ping/pong and the
//! closing handshake the suite judges are the ones real clients get.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::process::{on_path, tools_dir};
use support::Gateway;

/// Verdicts that pass. NON-STRICT (a SHOULD not followed) fails the test: the
/// gateway follows every SHOULD the cases check, and must keep doing so.
/// INFORMATIONAL cases probe what the RFC leaves open; any answer is fine.
const PASSING: [&str; 2] = ["OK", "INFORMATIONAL"];
/// Sections 1–11 of the suite hold this many cases (kosoku's pinned version,
/// see PY_TOOLS in the Makefile); fewer means the run was cut short.
const CASES: usize = 301;
/// Upper bound for the whole run; it takes about 10 s on two cores.
const RUN_LIMIT: Duration = Duration::from_secs(100);

/// kosoku as `make deps` installs it (target/tools/venv), else on `PATH`.
fn kosoku() -> PathBuf {
    let local = tools_dir().join("venv/bin/kosoku");
    if local.is_file() {
        return local;
    }
    on_path("kosoku").unwrap_or_else(|| {
        panic!(
            "kosoku is required by the conformance tests and was not found: run `make deps` \
             (it installs PyPI's kosoku into target/tools/venv) or put kosoku on PATH"
        )
    })
}

/// A gateway in echo mode with limits the suite needs: section 9 sends
/// messages of up to 16 MiB (so the message cap and the outbound queue are
/// raised), and no heartbeat ping may land in the middle of a case.
fn echo_gateway() -> Gateway {
    let args =
        ["--conformance-echo", "--max-message-bytes", "16777216", "--queue-bytes", "33554432", "--heartbeat", "1h"];
    Gateway::start_raw(&args, String::new())
}

/// Runs kosoku against `ws` with `selection` flags; returns its
/// `index.json` (`{agent: {case id: {behavior, behaviorClose, …}}}`) and
/// the report directory.
fn run_kosoku(ws: &str, selection: &[&str], name: &str) -> (BTreeMap<String, Value>, PathBuf) {
    let out = std::env::temp_dir().join(format!("switchboard-conformance-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut child = Command::new(kosoku())
        .args(["-m", "fuzzingclient", "-p", "4", "-o"])
        .arg(&out)
        .args(selection)
        .arg(ws)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kosoku");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kosoku did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut log = String::new();
    child.stdout.take().unwrap().read_to_string(&mut log).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    let index = std::fs::read_to_string(out.join("index.json"))
        .unwrap_or_else(|e| panic!("kosoku ({status}) wrote no report: {e}\n{log}"));
    let index: BTreeMap<String, Value> = serde_json::from_str(&index).expect("index.json");
    eprintln!("kosoku ({status}) in {:?}: {}", started.elapsed(), log.lines().last().unwrap_or(""));
    (index, out)
}

/// The cases of the one agent (the gateway) in an index.
fn cases(index: &BTreeMap<String, Value>) -> Vec<(String, Value)> {
    assert_eq!(index.len(), 1, "one server under test: {:?}", index.keys());
    let cases = index.values().next().unwrap().as_object().expect("cases by id");
    let mut cases: Vec<(String, Value)> = cases.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    cases.sort_by_key(|(id, _)| id.split('.').map(|n| n.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>());
    cases
}

fn verdict(case: &Value, key: &str) -> String {
    case[key].as_str().unwrap_or("?").to_owned()
}

#[test]
fn autobahn_sections_1_to_11_pass() {
    let gw = echo_gateway();
    let (index, out) = run_kosoku(&gw.ws, &["-x", "12.*", "-x", "13.*"], "suite");
    let cases = cases(&index);

    // A table by section, for docs/conformance.md and for whoever reads the log.
    let mut table: BTreeMap<u32, [usize; 4]> = BTreeMap::new();
    let mut failures = Vec::new();
    for (id, case) in &cases {
        let section = id.split('.').next().unwrap().parse().unwrap();
        let (behavior, close) = (verdict(case, "behavior"), verdict(case, "behaviorClose"));
        let row = table.entry(section).or_default();
        row[0] += 1;
        match (behavior.as_str(), close.as_str()) {
            ("OK", "OK") => row[1] += 1,
            ("NON-STRICT", _) => row[2] += 1,
            ("INFORMATIONAL", _) | (_, "INFORMATIONAL") => row[3] += 1,
            _ => {}
        }
        if !PASSING.contains(&behavior.as_str()) || !PASSING.contains(&close.as_str()) {
            failures.push(format!(
                "{id}: behavior={behavior} behaviorClose={close} remoteCloseCode={} ({})",
                case["remoteCloseCode"],
                out.join(case["reportfile"].as_str().unwrap_or("?")).display()
            ));
        }
    }
    eprintln!("section | cases | OK | non-strict | informational");
    for (section, [n, ok, strict, info]) in &table {
        eprintln!("{section} | {n} | {ok} | {strict} | {info}");
    }
    assert!(failures.is_empty(), "{} of {} cases did not pass:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert_eq!(cases.len(), CASES, "kosoku ran {} cases, not the whole of sections 1-11", cases.len());
    for section in [1, 2, 3, 4, 5, 6, 7, 9, 10] {
        assert!(table.contains_key(&section), "section {section} did not run");
    }
}

/// Compression (sections 12 and 13) is not offered: the gateway must decline
/// permessage-deflate by leaving it out of the handshake, after which the
/// cases end cleanly as UNIMPLEMENTED rather than failing.
#[test]
fn permessage_deflate_offers_are_declined_cleanly() {
    let gw = echo_gateway();
    let (index, out) = run_kosoku(&gw.ws, &["-i", "12.1.1", "-i", "13.1.1"], "deflate");
    let cases = cases(&index);
    assert_eq!(cases.len(), 2);
    for (id, case) in &cases {
        let (behavior, close) = (verdict(case, "behavior"), verdict(case, "behaviorClose"));
        assert_eq!((behavior.as_str(), close.as_str()), ("UNIMPLEMENTED", "OK"), "{id}");
        // The case's own report holds the handshake as it went over the wire.
        let report = std::fs::read_to_string(out.join(case["reportfile"].as_str().expect("reportfile"))).unwrap();
        let report: Value = serde_json::from_str(&report).unwrap();
        let (request, response) = (report["httpRequest"].as_str().unwrap(), report["httpResponse"].as_str().unwrap());
        assert!(request.contains("permessage-deflate"), "{id} offered no compression:\n{request}");
        assert!(response.starts_with("HTTP/1.1 101"), "{id}:\n{response}");
        assert!(!response.to_ascii_lowercase().contains("sec-websocket-extensions"), "{id} accepted:\n{response}");
    }
}

/// The same for the real protocol path, without kosoku: a Switchboard
/// upgrade offering permessage-deflate gets a 101 with no extension.
#[test]
fn the_upgrade_never_accepts_an_extension() {
    let gw = Gateway::start(&[]);
    let addr = gw.ws.trim_start_matches("ws://").trim_end_matches("/ws");
    let token = gw.token("alice");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /ws?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-webkit-deflate-frame\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("sec-websocket-extensions"), "an extension was accepted:\n{head}");
}

/// The response head, up to the blank line.
fn read_head(s: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("response"), 1, "connection closed mid-head");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}
