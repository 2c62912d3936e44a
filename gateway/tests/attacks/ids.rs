//! Ids that would widen a NATS subject, and duplicate watches.

use super::*;

// Ids that would widen a NATS subject. (bad_input.rs covers join with a few
// of them and publish with `a.b`; protocol.rs `send` to `a.b`.)

#[tokio::test]
async fn wildcard_dot_and_malformed_ids_are_refused_by_every_op() {
    // Every refusal counts as a bad frame, and against the frame rate; this
    // test sends a few hundred.
    let gw = Gateway::start(&["--bad-frame-limit", "100000", "--rate-per-sec", "100000", "--rate-burst", "100000"]);
    let mut bystander = Bystander::start(&gw).await;
    let mut c = gw.json("mallory").await;
    let mut p = gw.proto("mallory").await;
    join(&mut c, &"r".repeat(128)).await;
    for id in bad_ids() {
        for op in ["join", "publish", "members", "leave"] {
            let r = c.request(json!({"op": op, "room": id, "data": 1})).await.unwrap();
            assert_eq!(r["error"]["code"], "invalid_room", "{op} {id:?}: {r}");
        }
        let ops = [
            json!({"op": "send", "user": id, "data": 1}),
            json!({"op": "presence", "users": ["ok-user", id]}),
            json!({"op": "watch", "users": [id]}),
            json!({"op": "unwatch", "users": [id]}),
        ];
        for op in ops {
            let r = c.request(op.clone()).await.unwrap();
            assert_eq!(r["error"]["code"], "bad_request", "{op}: {r}");
        }

        use pb::client_frame::Op;
        let room_ops = [
            Op::Join(pb::JoinOp { room: id.clone(), since: None }),
            Op::Publish(pb::PublishOp { room: id.clone(), data: b"1".to_vec().into(), ..Default::default() }),
            Op::Members(pb::MembersOp { room: id.clone() }),
            Op::Leave(pb::LeaveOp { room: id.clone() }),
        ];
        for op in room_ops {
            let r = p.request_proto(op.clone()).await.unwrap();
            assert_eq!(r.error.map(|e| e.code).as_deref(), Some("invalid_room"), "{op:?}");
        }
        let user_ops = [
            Op::Send(pb::SendOp { user: id.clone(), data: b"1".to_vec().into() }),
            Op::Presence(pb::PresenceOp { users: vec![id.clone()] }),
            Op::Watch(pb::WatchOp { users: vec![id.clone()] }),
            Op::Unwatch(pb::WatchOp { users: vec![id.clone()] }),
        ];
        for op in user_ops {
            let r = p.request_proto(op.clone()).await.unwrap();
            assert_eq!(r.error.map(|e| e.code).as_deref(), Some("bad_request"), "{op:?}");
        }
    }
    still_served(&mut c).await;
    bystander.check(&gw).await;
}

#[tokio::test]
async fn a_watch_naming_one_user_many_times_delivers_each_event_once() {
    let gw = Gateway::start(&[]);
    let mut watcher = gw.json("watcher").await;
    let r = watcher.request(json!({"op": "watch", "users": vec!["target"; 100]})).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let _target = gw.json("target").await;
    let ev = watcher.next_of_type("presence", T).await.unwrap();
    assert_eq!((ev["user"].as_str(), ev["online"].as_bool()), (Some("target"), Some(true)), "{ev}");
    assert_quiet(watcher.next_of_type("presence", Duration::from_millis(500)).await, "one event, once");
}
