//! Namespaces (`--config`) and the token's `publish`, `send` and `watch`
//! claims, against a real standalone gateway and a real 2-gateway cluster:
//! the same cases in both, on rooms the cases do not share.

mod support;

use std::time::{Duration, Instant};

use loadtest::token::{SigningKey, TokenSpec};
use serde_json::{json, Value};
use support::cluster::{Cluster, API_TOKEN};
use support::process::{binary, TempDir};
use support::target::Target;
use support::*;

const POLICY: &str = r#"
[[namespace]]
prefix = "news:"
publish = "none"

[[namespace]]
prefix = "quiet:"
join_leave = "off"
members = false

[[namespace]]
prefix = "tiny:"
history_size = 3
history_ttl = "1s"

[[namespace]]
prefix = "small:"
max_members = 2

[[namespace]]
prefix = "big:"
join_leave = "batched"
join_leave_window = "100ms"
"#;

/// Flags every gateway of these tests gets: the defaults the claims fall back to.
const DEFAULTS: [&str; 4] = ["--default-send", "friend:*", "--default-watch", "team:*"];

fn config_file(dir: &TempDir) -> String {
    let path = dir.path.join("switchboard.toml");
    std::fs::write(&path, POLICY).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_and_claims_in_standalone_mode() {
    let dir = TempDir::new("ns-standalone");
    let config = config_file(&dir);
    let mut args = vec!["--config", &config, "--api-token", API_TOKEN];
    args.extend(DEFAULTS);
    let gw = Gateway::start(&args);
    let target = Target { urls: vec![gw.ws.clone()], key: gw.key(), rooms_api: gw.grpc.clone() };
    every_case(&target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_and_claims_in_a_two_gateway_cluster() {
    let dir = TempDir::new("ns-cluster");
    let config = config_file(&dir);
    // Routers take no --default-* flags: those go to the gateways alone.
    let mut cluster = Cluster::start_with(2, 0, &["--config", &config]).await;
    for i in 1..=2 {
        let nats = cluster.nats.url.clone();
        cluster.start_gateway_with(&format!("gw-{i}"), &nats, &DEFAULTS);
    }
    cluster.wait_gateways_ready().await;
    let target = Target {
        urls: cluster.urls(),
        key: SigningKey::hs256(cluster.secret.as_bytes().to_vec()),
        rooms_api: cluster.routers[0].grpc.clone(),
    };
    every_case(&target).await;
}

async fn every_case(t: &Target) {
    read_only(t).await;
    quiet(t).await;
    history(t).await;
    member_cap(t).await;
    claims(t).await;
    batched(t, 2_000).await;
    announced(t, 400).await;
}

/// `publish = "none"`: forbidden from a client, naming the rule; fine from the server API.
async fn read_only(t: &Target) {
    let mut alice = t.user(0, "alice").await;
    let mut bob = t.user(1, "bob").await;
    join(&mut alice, "news:today").await;
    join(&mut bob, "news:today").await;
    let r = alice.request(json!({"op": "publish", "room": "news:today", "data": 1})).await.unwrap();
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    assert_eq!(r["error"]["message"], "namespace \"news:\" has publish = \"none\"", "{r}");
    assert_eq!(t.server_publish("news:today", json!({"text": "from the backend"})).await, 1);
    for c in [&mut alice, &mut bob] {
        let m = c.next_of_type("message", T).await.unwrap();
        assert_eq!((m["seq"].as_u64(), &m["data"]["text"]), (Some(1), &json!("from the backend")), "{m}");
    }
}

/// `join_leave = "off"` sends no membership events; `members = false` refuses the op.
async fn quiet(t: &Target) {
    let mut alice = t.user(0, "alice").await;
    join(&mut alice, "quiet:room").await;
    let mut bob = t.user(1, "bob").await;
    join(&mut bob, "quiet:room").await;
    bob.request(json!({"op": "leave", "room": "quiet:room"})).await.unwrap();
    let r = alice.request(json!({"op": "members", "room": "quiet:room"})).await.unwrap();
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    assert_eq!(r["error"]["message"], "namespace \"quiet:\" has members = false", "{r}");
    assert_quiet(alice.wait_json(Duration::from_millis(500), |v| v["type"] != "reply").await, "no events in quiet:");
}

/// A namespace's own history: 3 messages and 1 s here, against the default's.
async fn history(t: &Target) {
    let mut alice = t.user(0, "alice").await;
    let epoch = join(&mut alice, "tiny:log").await["epoch"].as_str().unwrap().to_owned();
    join(&mut alice, "plain-log").await;
    for i in 1..=5 {
        publish(&mut alice, "tiny:log", json!(i)).await;
        publish(&mut alice, "plain-log", json!(i)).await;
    }
    let plain_epoch = {
        let mut b = t.user(1, "bob").await;
        join(&mut b, "plain-log").await["epoch"].as_str().unwrap().to_owned()
    };
    let resume =
        |room: &str, epoch: &str, seq: u64| json!({"op": "join", "room": room, "since": {"epoch": epoch, "seq": seq}});
    let mut bob = t.user(1, "bob").await;
    let r = bob.request(resume("tiny:log", &epoch, 1)).await.unwrap();
    assert_eq!(r["recovered"], false, "four missed, three kept: {r}");
    let mut carol = t.user(0, "carol").await;
    let r = carol.request(resume("tiny:log", &epoch, 2)).await.unwrap();
    assert_eq!(r["recovered"], true, "{r}");
    let r = carol.request(resume("plain-log", &plain_epoch, 1)).await.unwrap();
    assert_eq!(r["recovered"], true, "the default namespace keeps more: {r}");
    // Past its TTL (and a sweep), the small namespace's history is gone.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut dave = t.user(1, "dave").await;
    let r = dave.request(resume("tiny:log", &epoch, 4)).await.unwrap();
    assert_eq!(r["recovered"], false, "{r}");
}

/// `max_members = 2` counts users: a third user gets `room_full`, a second tab does not.
async fn member_cap(t: &Target) {
    let mut a = t.user(0, "alice").await;
    let mut b = t.user(1, "bob").await;
    join(&mut a, "small:table").await;
    join(&mut b, "small:table").await;
    let mut c = t.user(0, "carol").await;
    let r = c.request(json!({"op": "join", "room": "small:table"})).await.unwrap();
    assert_eq!(r["error"]["code"], "room_full", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("max_members = 2"), "{r}");
    let mut a2 = t.user(1, "alice").await;
    assert_eq!(join(&mut a2, "small:table").await["count"], 2);
    b.request(json!({"op": "leave", "room": "small:table"})).await.unwrap();
    join(&mut c, "small:table").await;
}

/// `publish`, `send` and `watch` claims allow and refuse as written; absent
/// ones fall back to the room claim and the flags.
async fn claims(t: &Target) {
    let globs = |l: &[&str]| Some(l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let scoped = TokenSpec {
        publish: globs(&["chat:*"]),
        send: globs(&["bob"]),
        watch: globs(&["boss"]),
        ..TokenSpec::new("claimant", 3600)
    };
    let mut c = t.client(0, scoped).await;
    let mut plain = t.user(1, "plain").await;
    join(&mut c, "chat:1").await;
    join(&mut c, "lobby-claims").await;
    join(&mut plain, "lobby-claims").await;
    publish(&mut c, "chat:1", json!(1)).await;
    publish(&mut plain, "lobby-claims", json!(1)).await;
    let expect = |r: &Value, refusal: Option<&str>| match refusal {
        None => assert_eq!(r["ok"], true, "{r}"),
        Some(why) => {
            assert_eq!(r["error"]["code"], "forbidden", "{r}");
            assert_eq!(r["error"]["message"], why, "{r}");
        }
    };
    let r = c.request(json!({"op": "publish", "room": "lobby-claims", "data": 1})).await.unwrap();
    expect(&r, Some("the token's `publish` claim does not allow publishing to lobby-claims"));
    let r = c.request(json!({"op": "send", "user": "bob", "data": 1})).await.unwrap();
    expect(&r, None);
    let r = c.request(json!({"op": "send", "user": "friend:1", "data": 1})).await.unwrap();
    expect(&r, Some("the token's `send` claim does not allow messaging friend:1"));
    let r = plain.request(json!({"op": "send", "user": "friend:1", "data": 1})).await.unwrap();
    expect(&r, None);
    let r = plain.request(json!({"op": "send", "user": "bob", "data": 1})).await.unwrap();
    expect(&r, Some("--default-send does not allow messaging bob"));
    let r = c.request(json!({"op": "presence", "users": ["boss"]})).await.unwrap();
    expect(&r, None);
    let r = c.request(json!({"op": "watch", "users": ["team:a"]})).await.unwrap();
    expect(&r, Some("the token's `watch` claim does not allow watching team:a"));
    let r = plain.request(json!({"op": "watch", "users": ["team:a"]})).await.unwrap();
    expect(&r, None);
    let r = plain.request(json!({"op": "presence", "users": ["team:a", "boss"]})).await.unwrap();
    expect(&r, Some("--default-watch does not allow watching boss"));
    // The namespace wins over any claim.
    let anything = TokenSpec { publish: globs(&["*"]), ..TokenSpec::new("claimant", 3600) };
    let mut any = t.client(1, anything).await;
    join(&mut any, "news:claims").await;
    let r = any.request(json!({"op": "publish", "room": "news:claims", "data": 1})).await.unwrap();
    expect(&r, Some("namespace \"news:\" has publish = \"none\""));
}

/// `join_leave = "batched"`: `n` distinct users seat with the right count,
/// and no member gets more than one `members_changed` per window.
async fn batched(t: &Target, n: usize) {
    let room = "big:hall";
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        clients.push(t.user(i, &format!("u{i:05}")).await);
    }
    let started = Instant::now();
    // Joins in flight together, replies read later: the seating takes as
    // long as the server needs, not n round trips.
    for (i, c) in clients.iter().enumerate() {
        c.send_json(&json!({"op": "join", "room": room, "id": i})).await.unwrap();
    }
    let window = Duration::from_millis(100);
    let mut readers = Vec::new();
    for mut c in clients {
        readers.push(tokio::spawn(async move {
            // (members_changed frames, the last count, joined/left frames)
            let (mut batches, mut count, mut singles) = (0u64, 0u64, 0u64);
            let mut seated_at = None;
            // Until seated (however loaded the machine), then 3 s more for
            // frames a window too many would bring.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let seated = seated_at.is_some() && count == n as u64;
                let wait =
                    if seated { Duration::from_secs(3) } else { deadline.saturating_duration_since(Instant::now()) };
                match c.next_json(wait).await {
                    Ok(v) if v["type"] == "members_changed" => {
                        batches += 1;
                        count = v["count"].as_u64().unwrap();
                        assert!(v["joined"].as_array().unwrap().len() <= 100, "lists hold at most 100");
                    }
                    Ok(v) if v["type"] == "reply" => {
                        assert_eq!(v["ok"], true, "{v}");
                        // The client's count starts from its answer, as the JS client's does.
                        count = v["count"].as_u64().unwrap();
                        seated_at = Some(Instant::now());
                    }
                    Ok(v) if v["type"] == "joined" || v["type"] == "left" => singles += 1,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            (batches, count, singles, seated_at.expect("a join reply"), c)
        }));
    }
    let mut results = Vec::new();
    for r in readers {
        results.push(r.await.unwrap());
    }
    let seated = results.iter().map(|r| r.3).max().unwrap() - started;
    let windows = (seated.as_millis() / window.as_millis()) as u64 + 2;
    let frames: u64 = results.iter().map(|r| r.0).sum();
    let mut counts: Vec<u64> = results.iter().map(|r| r.1).collect();
    counts.sort_unstable();
    eprintln!(
        "seated {n} in {seated:?}: {frames} members_changed frames, last counts {:?}…{:?}",
        &counts[..3],
        &counts[counts.len() - 3..]
    );
    assert_eq!(results.iter().map(|r| r.2).sum::<u64>(), 0, "no joined/left in a batched room");
    assert!(results.iter().all(|r| r.1 == n as u64), "every member's last count is {n}");
    assert!(
        frames <= n as u64 * windows + n as u64,
        "{frames} members_changed frames for {n} members over {windows} windows ({seated:?})"
    );
    let mut first = results.pop().unwrap().4;
    let m = first.request(json!({"op": "members", "room": room})).await.unwrap();
    assert_eq!(m["count"], n as u64, "{m}");
}

/// `join_leave = "all"` (the default namespace) under a join storm: the
/// owner answers joins faster than gateways attach their members, so most
/// `joined` events reach a gateway before the member they are for. Each
/// member still ends with the exact count: the events after its answer, or
/// a count-only `members_changed` when more came than the gateway keeps.
async fn announced(t: &Target, n: usize) {
    let room = "crowd:hall";
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        clients.push(t.user(i, &format!("a{i:05}")).await);
    }
    for (i, c) in clients.iter().enumerate() {
        c.send_json(&json!({"op": "join", "room": room, "id": i})).await.unwrap();
    }
    let mut readers = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        readers.push(tokio::spawn(async move {
            let me = format!("a{i:05}");
            let (mut count, mut heard, mut count_only) = (None, std::collections::HashSet::new(), 0);
            // Until seated; the client stays open until everyone is, or its
            // leave would reach the others.
            while count != Some(n as u64) {
                let Ok(v) = c.next_json(Duration::from_secs(10)).await else { break };
                match v["type"].as_str().unwrap() {
                    "reply" => count = Some(v["count"].as_u64().unwrap()),
                    "joined" => {
                        let user = v["user"].as_str().unwrap().to_owned();
                        assert_ne!(user, me, "not told of itself");
                        assert!(heard.insert(user), "each join once: {v}");
                        assert!(count.is_some(), "no event before the join answer: {v}");
                        count = Some(v["count"].as_u64().unwrap());
                    }
                    "members_changed" => {
                        assert_eq!(
                            (v["truncated"].as_bool(), v["joined"].as_array().map(Vec::len)),
                            (Some(true), Some(0))
                        );
                        count_only += 1;
                        count = Some(v["count"].as_u64().unwrap());
                    }
                    other => panic!("unexpected {other}: {v}"),
                }
            }
            (count, count_only, c)
        }));
    }
    let (mut count_only, mut open) = (0, Vec::new());
    for r in readers {
        let (count, c, client) = r.await.unwrap();
        assert_eq!(count, Some(n as u64), "every member's last count is {n}");
        count_only += c;
        open.push(client);
    }
    eprintln!("{n} members seated in an `all` room; {count_only} caught up by count alone");
}

/// A bad `--config` stops a gateway and a router at once, with one line
/// naming the file and the key.
#[test]
fn a_bad_config_exits_non_zero_with_one_line_naming_the_key_and_the_file() {
    let dir = TempDir::new("ns-bad");
    let cases = [
        ("unknown.toml", "[[namespace]]\nprefix = \"a:\"\npublsh = \"none\"\n", "publsh"),
        ("value.toml", "[[namespace]]\nprefix = \"a:\"\njoin_leave = \"sometimes\"\n", "join_leave"),
        ("ttl.toml", "[[namespace]]\nprefix = \"a:\"\nhistory_ttl = \"soon\"\n", "history_ttl"),
        ("twice.toml", "[[namespace]]\nprefix = \"a:\"\n[[namespace]]\nprefix = \"a:\"\n", "prefix"),
    ];
    for (name, text, key) in cases {
        let path = dir.path.join(name);
        std::fs::write(&path, text).unwrap();
        let path = path.to_string_lossy().into_owned();
        let runs: [(&str, Vec<&str>); 2] = [
            (
                "gateway",
                vec!["--standalone", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config", &path],
            ),
            // No NATS to reach: the file is read first.
            ("router", vec!["--nats-url", "nats://127.0.0.1:1", "--config", &path]),
        ];
        for (bin, args) in runs {
            let out = std::process::Command::new(binary(bin)).args(&args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert!(!out.status.success(), "{bin} accepted {name}");
            assert_eq!(lines.len(), 1, "{bin} {name}: {stderr}");
            assert!(lines[0].contains(&path) && lines[0].contains(key), "{bin} {name}: {}", lines[0]);
        }
    }
    let missing = dir.path.join("missing.toml").to_string_lossy().into_owned();
    let out =
        std::process::Command::new(binary("gateway")).args(["--standalone", "--config", &missing]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains(&missing));
}
