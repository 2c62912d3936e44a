//! Answers bigger than a connection's queue: a `members` list of large
//! `info` claims, and a recovery of more history than the queue holds.
//! Neither may close the client that asked.

use super::*;

/// A token for `user` whose `info` claim is a JSON string of `len` bytes.
fn token_with_info(gw: &Gateway, user: &str, len: usize) -> String {
    let mut spec = spec(user, 3600);
    spec.info = Some(json!("i".repeat(len - 2)));
    gw.token_with(spec)
}

async fn connect_with(gw: &Gateway, token: &str) -> Client {
    let mut c = Client::connect(gw.options(Some(token))).await.unwrap();
    c.next_of_type("hello", T).await.unwrap();
    c
}

#[tokio::test]
async fn members_replies_are_bounded_in_bytes_with_an_exact_count() {
    // 30 members with 11 KB of info each: 330 KB, more than the 256 KiB queue.
    let gw = Gateway::start(&["--queue-bytes", "262144", "--max-info-bytes", "16384"]);
    let mut members = Vec::new();
    for i in 0..30 {
        let mut m = connect_with(&gw, &token_with_info(&gw, &format!("m{i:02}"), 11_000)).await;
        join(&mut m, "crowd").await;
        members.push(m);
    }
    let mut asker = gw.json("asker").await;
    let r = asker.request(json!({"op": "members", "room": "crowd"})).await.expect("a reply, not a close");
    assert_eq!((r["ok"].as_bool(), r["count"].as_u64(), r["truncated"].as_bool()), (Some(true), Some(30), Some(true)));
    let listed = r["members"].as_array().unwrap();
    assert!(!listed.is_empty() && listed.len() < 30, "{} listed", listed.len());
    assert!(listed.iter().all(|m| m["info"].as_str().map(str::len) == Some(10_998)), "whole entries only");
    assert_eq!(listed[0]["user"], "m00", "in id order");
    still_served(&mut asker).await;

    let mut p = gw.proto("asker-proto").await;
    let r = p.request_proto(pb::client_frame::Op::Members(pb::MembersOp { room: "crowd".into() })).await.unwrap();
    let Some(pb::reply::Result::Members(m)) = r.result else { panic!("{r:?}") };
    assert_eq!((m.count, m.truncated, m.members.len()), (30, true, listed.len()));

    // A room that fits says so.
    let r = asker.request(json!({"op": "members", "room": "calm"})).await.unwrap();
    assert_eq!((r["count"].as_u64(), r["truncated"].as_bool()), (Some(0), Some(false)), "{r}");
}

#[tokio::test]
async fn an_info_claim_over_the_bound_is_refused_at_auth_with_4500() {
    let gw = Gateway::start(&[]);
    let mut bystander = Bystander::start(&gw).await;
    // Up to 1 KiB of JSON text is fine.
    let ok = token_with_info(&gw, "modest", 1024);
    let mut c = connect_with(&gw, &ok).await;
    still_served(&mut c).await;

    let big = token_with_info(&gw, "boaster", 1025);
    let mut c = Client::connect(gw.options(Some(&big))).await.expect("the upgrade completes");
    assert_eq!(c.wait_close(T).await.unwrap(), Some(4500));

    // In an auth frame, the reply says why.
    let mut c = Client::connect(gw.options(None)).await.unwrap();
    let r = c.request(json!({"op": "auth", "token": big})).await.unwrap();
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("info"), "{r}");
    assert_eq!(c.wait_close(T).await.unwrap(), Some(4500));
    bystander.check(&gw).await;
}

/// Joins `room` with `since`, stalls reading for a second (a slow link),
/// then collects the reply and the next `n` messages.
async fn resume(c: &mut Client, room: &str, epoch: &str, seq: u64, n: usize) -> (Value, Vec<u64>) {
    c.pause_reading(true);
    c.send_json(&json!({"op": "join", "room": room, "since": {"epoch": epoch, "seq": seq}, "id": "resume"}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.pause_reading(false);
    let r = c.wait_json(T, |v| v["id"] == "resume").await.expect("the reply, not a close");
    let mut seqs = Vec::new();
    while seqs.len() < n {
        match c.wait_json(T, |v| v["type"] == "message").await {
            Ok(m) => seqs.push(m["seq"].as_u64().unwrap()),
            Err(e) => panic!("after {} messages: {e:?}", seqs.len()),
        }
    }
    (r, seqs)
}

#[tokio::test]
async fn a_resume_bigger_than_the_queue_arrives_paced_and_never_closes_the_client() {
    let gw = Gateway::start(&[]);
    let mut bob = gw.json("bob").await;
    join(&mut bob, "deep").await;
    let mut alice = gw.json("alice").await;
    let epoch = join(&mut alice, "deep").await["epoch"].as_str().unwrap().to_owned();
    drop(alice);
    // 20 messages of 60 KB: 1.2 MB, more than the 1 MiB queue, at under 50/s.
    let big = "x".repeat(60_000);
    for _ in 0..20 {
        publish(&mut bob, "deep", json!(big)).await;
    }
    let mut opts = gw.options(Some(&gw.token("alice")));
    opts.recv_buffer = Some(4096);
    let mut alice = Client::connect(opts).await.unwrap();
    alice.next_of_type("hello", T).await.unwrap();
    let (r, seqs) = resume(&mut alice, "deep", &epoch, 0, 20).await;
    assert_eq!((r["ok"].as_bool(), r["recovered"].as_bool()), (Some(true), Some(true)), "{r}");
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    // Newer messages follow the recovered ones.
    let seq = publish(&mut bob, "deep", json!("fresh")).await;
    let m = alice.next_of_type("message", T).await.unwrap();
    assert_eq!(m["seq"].as_u64(), Some(seq));
    still_served(&mut alice).await;
    // The same over protobuf, resuming from the middle.
    let mut p = gw.proto("carol").await;
    let since = Some(pb::Since { epoch: epoch.clone(), seq: 2 });
    let r = p.request_proto(pb::client_frame::Op::Join(pb::JoinOp { room: "deep".into(), since })).await.unwrap();
    let Some(pb::reply::Result::Join(j)) = r.result else { panic!("{r:?}") };
    assert!(j.recovered, "{j:?}");
    for want in 3..=21 {
        let f = p.wait_proto(T, |f| matches!(f.kind, Some(pb::server_frame::Kind::Message(_)))).await.unwrap();
        let Some(pb::server_frame::Kind::Message(m)) = f.kind else { unreachable!() };
        assert_eq!(m.seq, want);
    }
}
