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
