//! Resuming a room after a disconnect with `join` + `since`.

mod support;

use std::time::Duration;

use proto::pb::{self, client_frame::Op, reply, server_frame::Kind};
use serde_json::{json, Value};
use support::*;

/// Collects the next `n` message events as (seq, data).
async fn messages(c: &mut loadtest::client::Client, n: usize) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = c.next_of_type("message", T).await.unwrap();
        out.push((m["seq"].as_u64().unwrap(), m["data"].clone()));
    }
    out
}

#[tokio::test]
async fn reconnect_with_since_gets_exactly_the_missed_messages() {
    let gw = Gateway::start(&[]);
    let mut bob = gw.json("bob").await;
    join(&mut bob, "r").await;
    let mut alice = gw.json("alice").await;
    let epoch = join(&mut alice, "r").await["epoch"].as_str().unwrap().to_owned();
    for i in 1..=3 {
        publish(&mut bob, "r", json!(i)).await;
    }
    let seen = messages(&mut alice, 3).await;
    let last = seen.last().unwrap().0;
    assert_eq!(last, 3);
    drop(alice);

    for i in 4..=7 {
        publish(&mut bob, "r", json!(i)).await;
    }
    let mut alice = gw.json("alice").await;
    let r = alice.request(json!({"op": "join", "room": "r", "since": {"epoch": epoch, "seq": last}})).await.unwrap();
    assert_eq!(
        (r["ok"].as_bool(), r["recovered"].as_bool(), r["seq"].as_u64()),
        (Some(true), Some(true), Some(7)),
        "{r}"
    );
    publish(&mut bob, "r", json!(8)).await;
    let got = messages(&mut alice, 5).await;
    assert_eq!(got, (4..=8).map(|i| (i, json!(i))).collect::<Vec<_>>(), "missed ones, in order, then new ones");
    assert_quiet(alice.next_of_type("message", Duration::from_millis(300)).await, "no duplicates");
}

#[tokio::test]
async fn since_beyond_the_history_or_from_another_epoch_is_not_recovered() {
    let gw = Gateway::start(&["--history-size", "3"]);
    let mut bob = gw.json("bob").await;
    let epoch = join(&mut bob, "r").await["epoch"].as_str().unwrap().to_owned();
    for i in 1..=7 {
        publish(&mut bob, "r", json!(i)).await;
    }
    let mut alice = gw.json("alice").await;
    let r = alice.request(json!({"op": "join", "room": "r", "since": {"epoch": epoch, "seq": 1}})).await.unwrap();
    assert_eq!(
        (r["ok"].as_bool(), r["recovered"].as_bool(), r["seq"].as_u64()),
        (Some(true), Some(false), Some(7)),
        "{r}"
    );
    publish(&mut bob, "r", json!(8)).await;
    let m = alice.next_of_type("message", T).await.unwrap();
    assert_eq!(m["seq"], 8, "nothing old is replayed when not recovered: {m}");

    let mut carol = gw.json("carol").await;
    let r = carol.request(json!({"op": "join", "room": "r", "since": {"epoch": "other", "seq": 8}})).await.unwrap();
    assert_eq!(r["recovered"], false, "{r}");
    // Within the window it still works.
    let mut dave = gw.json("dave").await;
    let r = dave.request(json!({"op": "join", "room": "r", "since": {"epoch": epoch, "seq": 6}})).await.unwrap();
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(messages(&mut dave, 2).await, vec![(7, json!(7)), (8, json!(8))]);
}

#[tokio::test]
async fn protobuf_resume() {
    let gw = Gateway::start(&[]);
    let mut bob = gw.json("bob").await;
    let epoch = join(&mut bob, "p").await["epoch"].as_str().unwrap().to_owned();
    for i in 1..=4 {
        publish(&mut bob, "p", json!(i)).await;
    }
    let mut carol = gw.proto("carol").await;
    let since = Some(pb::Since { epoch, seq: 2 });
    let r = carol.request_proto(Op::Join(pb::JoinOp { room: "p".into(), since })).await.unwrap();
    let Some(reply::Result::Join(j)) = r.result else { panic!("{r:?}") };
    assert!(j.recovered && j.seq == 4, "{j:?}");
    let mut seqs = Vec::new();
    while seqs.len() < 2 {
        let f = carol.wait_proto(T, |f| matches!(f.kind, Some(Kind::Message(_)))).await.unwrap();
        let Some(Kind::Message(m)) = f.kind else { unreachable!() };
        seqs.push(m.seq);
    }
    assert_eq!(seqs, [3, 4]);
}
