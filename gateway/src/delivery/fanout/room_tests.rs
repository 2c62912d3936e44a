//! Tests of [`super`] (room.rs).

use super::*;
use serde_json::Value;

const E: &str = "e1";

fn message(epoch: &str, seq: u64, len: usize) -> internal::RoomEvent {
    let m = internal::StoredMessage {
        seq,
        from: "u".into(),
        data: format!("\"{}\"", "x".repeat(len)).into(),
        ts: 1,
        ..Default::default()
    };
    internal::RoomEvent {
        room: "r".into(),
        epoch: epoch.into(),
        kind: Some(room_event::Kind::Message(m)),
        ..Default::default()
    }
}

/// `user` joined; the room's count and membership version are `v`.
fn joined(user: &str, v: u64) -> internal::RoomEvent {
    let joined = pb::MemberJoined { room: "r".into(), user: user.into(), count: v as u32, ..Default::default() };
    internal::RoomEvent {
        room: "r".into(),
        epoch: E.into(),
        kind: Some(room_event::Kind::Joined(joined)),
        members_version: v,
    }
}

fn stored(seqs: std::ops::RangeInclusive<u64>) -> Vec<internal::StoredMessage> {
    sized(seqs, 1)
}

fn sized(seqs: std::ops::RangeInclusive<u64>, len: usize) -> Vec<internal::StoredMessage> {
    let data = Bytes::from(format!("\"{}\"", "x".repeat(len)));
    seqs.map(|seq| internal::StoredMessage { seq, from: "u".into(), data: data.clone(), ts: 1, ..Default::default() })
        .collect()
}

fn history(epoch: &str, seq: u64, recovered: bool, msgs: Vec<internal::StoredMessage>) -> internal::HistoryReply {
    internal::HistoryReply { epoch: epoch.into(), seq, recovered, messages: msgs, truncated: false }
}

/// A room with an owner, and the outboxes of its members.
struct Case {
    room: Room,
    outboxes: HashMap<&'static str, Arc<Outbox>>,
    actions: Vec<Action>,
    joins: Joins,
    /// Sessions that asked the owner and have not attached yet.
    joining: HashMap<&'static str, Joining>,
}

impl Case {
    fn new() -> Self {
        Self::with(Bounds::default())
    }

    fn with(bounds: Bounds) -> Self {
        let joins = Joins::default();
        let room = Room::new("r".into(), "gw".into(), Some("r-1".into()), bounds, joins.clone());
        Self { room, outboxes: HashMap::new(), actions: Vec::new(), joins, joining: HashMap::new() }
    }

    /// `conn` asks the owner to join (and attaches later).
    fn enter(&mut self, conn: &'static str) {
        self.joining.insert(conn, self.joins.start());
    }

    /// Attaches `conn` (user of the same name) with the owner's answer
    /// (epoch, seq) and an optional resume.
    fn attach(
        &mut self,
        conn: &'static str,
        queue: usize,
        seq: u64,
        resume: Option<(u64, Vec<internal::StoredMessage>)>,
    ) {
        self.attach_with(conn, queue, seq, resume, 0);
    }

    /// A member whose join answer carried membership version `version`.
    fn attach_at(&mut self, conn: &'static str, version: u64) {
        self.attach_with(conn, 1 << 20, 0, None, version);
    }

    fn attach_with(
        &mut self,
        conn: &'static str,
        queue: usize,
        seq: u64,
        resume: Option<(u64, Vec<internal::StoredMessage>)>,
        members_version: u64,
    ) {
        let outbox = Arc::new(Outbox::new(queue));
        self.outboxes.insert(conn, outbox.clone());
        let a = Attach {
            conn: conn.into(),
            user: conn.into(),
            info: Bytes::new(),
            listener: Listener { outbox, encoding: Encoding::Json },
            epoch: E.into(),
            seq,
            members_version,
            reply: None,
            resume,
            joining: self.joining.remove(conn).unwrap_or_else(|| self.joins.start()),
        };
        self.room.attach(a, &mut self.actions);
    }

    fn event(&mut self, ev: internal::RoomEvent) {
        self.room.on_event(ev, &mut self.actions);
    }

    /// What `conn` was sent since last asked: message seqs, or the type.
    fn got(&self, conn: &str) -> Vec<String> {
        self.outboxes[conn]
            .take()
            .frames
            .into_iter()
            .map(|o| match o {
                Out::Data(b) => {
                    let v: Value = serde_json::from_slice(&b).unwrap();
                    match v["type"].as_str().unwrap() {
                        "message" => v["seq"].to_string(),
                        "resync" => format!("resync@{}", v["seq"]),
                        t => t.to_owned(),
                    }
                }
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// The actions since last asked, named.
    fn did(&mut self) -> Vec<String> {
        self.actions
            .drain(..)
            .map(|a| match a {
                Action::Fill(s) => format!("fill@{}", s.seq),
                Action::Sync(m) => format!("sync:{}", m.len()),
                Action::Fetch(c, s) => format!("fetch:{c}@{}", s.seq),
                Action::AwaitRoom(c, _, _) => format!("await:{c}"),
            })
            .collect()
    }
}

fn seqs(s: &[u64]) -> Vec<String> {
    s.iter().map(u64::to_string).collect()
}

#[test]
fn live_messages_in_order_without_duplicates_gaps_held_until_filled() {
    // (events as seqs, then what the member got and what was asked).
    let cases: &[(&[u64], &[&str], &[&str])] = &[
        (&[1, 2, 3], &["1", "2", "3"], &[]),
        (&[1, 1, 2, 1], &["1", "2"], &[]),
        (&[1, 3, 4], &["1"], &["fill@1"]),
        (&[2], &[], &["fill@0"]),
    ];
    for (events, got, did) in cases {
        let mut c = Case::new();
        c.attach("a", 1 << 20, 0, None);
        for &seq in *events {
            c.event(message(E, seq, 1));
        }
        assert_eq!(c.got("a"), got.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{events:?}");
        assert_eq!(c.did(), did.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{events:?}");
    }
}

#[test]
fn a_fill_delivers_the_gap_then_what_was_held() {
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    c.event(message(E, 1, 1));
    c.event(message(E, 4, 1));
    c.event(message(E, 5, 1));
    assert_eq!(c.did(), ["fill@1"]);
    c.event(message(E, 6, 1));
    assert!(c.did().is_empty(), "one fill at a time");
    c.room.on_fill(Ok(history(E, 5, true, stored(2..=5))), &mut c.actions);
    assert_eq!(c.got("a"), seqs(&[1, 2, 3, 4, 5, 6]));
    assert!(c.did().is_empty());
}

#[test]
fn a_fill_that_cannot_reach_back_or_fails_ends_in_resync() {
    // The owner's history no longer reaches: resync at its position.
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    c.event(message(E, 1, 1));
    c.event(message(E, 9, 1));
    c.did();
    c.room.on_fill(Ok(history(E, 9, false, vec![])), &mut c.actions);
    assert_eq!(c.got("a"), ["1", "resync@9"], "9 is at the owner's position: not delivered again");
    // A failed fill: resync just before the first held message.
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    c.event(message(E, 1, 1));
    c.event(message(E, 5, 1));
    c.event(message(E, 6, 1));
    c.did();
    c.room.on_fill(Err(CallError::Unavailable), &mut c.actions);
    assert_eq!(c.got("a"), ["1", "resync@4", "5", "6"]);
}

#[test]
fn a_new_epoch_or_too_much_held_ends_in_resync() {
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    c.event(message(E, 1, 1));
    c.event(message("e2", 1, 1));
    assert_eq!(c.got("a"), ["1", "resync@0", "1"]);
    // A late event of the old owner's epoch is dropped, not a flap back.
    c.event(message(E, 2, 1));
    c.event(message("e2", 2, 1));
    assert_eq!(c.got("a"), ["2"]);
    // Unless the owner answers a sync on it: it is the room's stream again.
    c.room.on_sync(Ok(internal::JoinReply { epoch: E.into(), seq: 2, ..Default::default() }), &mut c.actions);
    c.event(message(E, 3, 1));
    assert_eq!(c.got("a"), ["resync@2", "3"]);
    let bounds = Bounds { held_len: 2, ..Bounds::default() };
    let mut c = Case::with(bounds);
    c.attach("a", 1 << 20, 0, None);
    c.event(message(E, 1, 1));
    for seq in [3, 4, 5] {
        c.event(message(E, seq, 1));
    }
    assert_eq!(c.got("a"), ["1", "resync@2", "3", "4", "5"], "given up on the gap past the held bound");
}

#[test]
fn ring_changes_resync_the_members_with_the_new_owner() {
    let mut c = Case::new();
    c.room.on_ring_change(Some("r-2".into()), &mut c.actions);
    assert!(c.did().is_empty(), "no members, nothing to sync");
    c.attach("a", 1 << 20, 0, None);
    c.attach("b", 1 << 20, 0, None);
    c.room.on_ring_change(Some("r-2".into()), &mut c.actions);
    assert!(c.did().is_empty(), "the same owner");
    c.room.on_ring_change(Some("r-3".into()), &mut c.actions);
    assert_eq!(c.did(), ["sync:2"]);
    // (answer, what members get, what is asked)
    type SyncCase<'a> = (Result<(&'a str, u64), ()>, &'a [&'a str], &'a [&'a str]);
    let cases: &[SyncCase] = &[
        (Ok((E, 0)), &[], &[]),
        (Ok((E, 3)), &[], &["fill@0"]),
        (Ok(("e2", 7)), &["resync@7"], &[]),
        (Err(()), &[], &[]),
    ];
    for (answer, got, did) in cases {
        let mut c = Case::new();
        c.attach("a", 1 << 20, 0, None);
        let reply = answer
            .map(|(epoch, seq)| internal::JoinReply { epoch: epoch.into(), seq, ..Default::default() })
            .map_err(|_| CallError::Unavailable);
        c.room.on_sync(reply, &mut c.actions);
        assert_eq!(c.got("a"), got.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{answer:?}");
        assert_eq!(c.did(), did.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{answer:?}");
    }
    // After a failed sync the same owner is synced again.
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    c.room.on_sync(Err(CallError::Unavailable), &mut c.actions);
    c.room.on_ring_change(Some("r-1".into()), &mut c.actions);
    assert_eq!(c.did(), ["sync:1"]);
    // Cut off (no owner), then back to the same owner: sync again.
    c.room.on_ring_change(None, &mut c.actions);
    c.room.on_ring_change(Some("r-1".into()), &mut c.actions);
    assert_eq!(c.did(), ["sync:1"]);
}

#[test]
fn joined_and_left_go_to_the_others() {
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    c.attach("b", 1 << 20, 0, None);
    c.event(joined("a", 2));
    assert_eq!((c.got("a"), c.got("b")), (vec![], vec!["joined".to_owned()]));
    c.room.detach("b");
    let left = pb::MemberLeft { room: "r".into(), user: "x".into(), count: 1 };
    c.event(internal::RoomEvent {
        room: "r".into(),
        epoch: E.into(),
        kind: Some(room_event::Kind::Left(left)),
        ..Default::default()
    });
    assert_eq!((c.got("a"), c.got("b")), (vec!["left".to_owned()], vec![]));
}

#[test]
fn a_member_whose_answer_a_batch_overtook_gets_that_batch_when_it_attaches() {
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    c.enter("b");
    c.enter("c");
    let changed = pb::MembersChanged { room: "r".into(), count: 7, ..Default::default() };
    let kind = Some(room_event::Kind::MembersChanged(changed));
    c.event(internal::RoomEvent { room: "r".into(), epoch: E.into(), kind, members_version: 5 });
    assert_eq!(c.got("a"), vec!["members_changed".to_owned()]);
    // Answered at version 3 (before the batch): the batch follows its attach.
    c.attach_at("b", 3);
    assert_eq!(c.got("b"), vec!["members_changed".to_owned()]);
    // Answered at version 5: it knows already.
    c.attach_at("c", 5);
    assert_eq!(c.got("c"), Vec::<String>::new());
}

#[test]
fn a_member_whose_answer_joins_overtook_gets_them_when_it_attaches() {
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    c.enter("x");
    for (v, user) in [(2, "b"), (3, "x"), (4, "c")] {
        let joined = pb::MemberJoined { room: "r".into(), user: user.into(), count: v as u32, ..Default::default() };
        let kind = Some(room_event::Kind::Joined(joined));
        c.event(internal::RoomEvent { room: "r".into(), epoch: E.into(), kind, members_version: v });
    }
    assert_eq!(c.got("a"), ["joined", "joined", "joined"]);
    // x's answer said version 1: b's join and c's follow, its own does not.
    c.attach_at("x", 1);
    assert_eq!(c.got("x"), ["joined", "joined"]);
}

#[test]
fn membership_events_are_kept_only_while_a_session_is_joining() {
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    c.event(joined("b", 1));
    assert_eq!((c.got("a"), c.room.changes.len()), (vec!["joined".to_owned()], 0), "nobody joining: not kept");
    c.enter("x");
    c.enter("y");
    c.event(joined("c", 2));
    c.event(joined("d", 3));
    assert_eq!(c.room.changes.len(), 2);
    c.attach_at("x", 2);
    assert_eq!((c.got("x"), c.room.changes.len()), (vec!["joined".to_owned()], 2), "y still joins");
    c.attach_at("y", 1);
    assert_eq!((c.got("y"), c.room.changes.len()), (vec!["joined".to_owned(), "joined".to_owned()], 0), "released");
    // A session that gives up (the owner refused it) stops counting too.
    c.enter("z");
    c.event(joined("e", 4));
    assert_eq!(c.room.changes.len(), 1);
    c.joining.remove("z");
    c.event(joined("f", 5));
    assert_eq!(c.room.changes.len(), 0);
}

#[test]
fn a_signal_goes_to_every_member_but_the_sending_connection_and_is_not_kept() {
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    c.attach("b", 1 << 20, 0, None);
    let signal = |gateway: &str, conn: &str| {
        let sig =
            internal::SignalRequest { from: "a".into(), data: "1".into(), gateway: gateway.into(), conn: conn.into() };
        internal::RoomEvent {
            room: "r".into(),
            epoch: E.into(),
            kind: Some(room_event::Kind::Signal(sig)),
            members_version: 0,
        }
    };
    c.event(signal("gw", "a"));
    assert_eq!((c.got("a"), c.got("b")), (vec![], vec!["signal".to_owned()]));
    // Another gateway's connection of the same name is someone else.
    c.event(signal("gw-2", "a"));
    assert_eq!((c.got("a"), c.got("b")), (vec!["signal".to_owned()], vec!["signal".to_owned()]));
    c.attach_at("late", 0);
    assert!(c.got("late").is_empty(), "never replayed");
    c.event(message(E, 1, 1));
    assert_eq!(c.got("b"), seqs(&[1]), "no seq taken");
}

#[test]
fn a_member_attaching_behind_catches_up_from_recent_or_the_owner() {
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    for seq in 1..=5 {
        c.event(message(E, seq, 1));
    }
    // Its answer said 3: 4 and 5 come from the recent buffer.
    c.attach("b", 1 << 20, 3, None);
    assert_eq!(c.got("b"), seqs(&[4, 5]));
    assert!(c.did().is_empty());
    c.event(message(E, 6, 1));
    assert_eq!(c.got("b"), seqs(&[6]), "then live");
    // Behind what the recent buffer holds: a page from the owner.
    let bounds = Bounds { recent_len: 2, ..Bounds::default() };
    let mut c = Case::with(bounds);
    c.attach("a", 1 << 20, 0, None);
    for seq in 1..=5 {
        c.event(message(E, seq, 1));
    }
    c.attach("b", 1 << 20, 1, None);
    assert_eq!(c.did(), ["fetch:b@1"]);
    c.event(message(E, 6, 1));
    assert!(c.got("b").is_empty(), "nothing live while catching up");
    c.room.on_fetch("b", Ok(history(E, 6, true, stored(2..=6))), &mut c.actions);
    assert_eq!(c.got("b"), seqs(&[2, 3, 4, 5, 6]));
    c.event(message(E, 7, 1));
    assert_eq!(c.got("b"), seqs(&[7]));
}

#[test]
fn a_resume_is_paced_by_the_members_queue() {
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    for seq in 1..=6 {
        c.event(message(E, seq, 300));
    }
    // A 1 KiB queue takes one 300-byte message at a time (half the bound).
    c.attach("b", 1024, 6, Some((0, sized(1..=4, 300))));
    assert_eq!(c.got("b"), seqs(&[1]));
    assert_eq!(c.did(), ["await:b"]);
    c.room.on_room("b", &mut c.actions);
    assert_eq!(c.got("b"), seqs(&[2]), "one more per drained queue");
    assert_eq!(c.did(), ["await:b"]);
    for _ in 0..10 {
        c.got("b");
        c.room.on_room("b", &mut c.actions);
    }
    c.event(message(E, 7, 1));
    assert_eq!(c.got("b"), seqs(&[7]), "caught up from recent (5, 6), then live");
    assert!(c.outboxes["b"].closing().is_none(), "never closed for its own recovery");
}

#[test]
fn a_paced_fill_moves_a_member_without_room_to_catch_up() {
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    c.attach("small", 1024, 0, None);
    c.event(message(E, 1, 1));
    c.event(message(E, 4, 1));
    c.did();
    c.got("a");
    c.got("small");
    c.room.on_fill(Ok(history(E, 4, true, sized(2..=4, 400))), &mut c.actions);
    assert_eq!(c.got("a"), seqs(&[2, 3, 4]));
    assert_eq!(c.got("small"), seqs(&[2]), "the rest waits for its queue");
    assert_eq!(c.did(), ["await:small"]);
    c.room.on_room("small", &mut c.actions);
    assert_eq!(c.got("small"), seqs(&[3]));
    c.did();
    c.room.on_room("small", &mut c.actions);
    assert_eq!(c.got("small"), seqs(&[4]));
    c.event(message(E, 5, 1));
    assert_eq!(c.got("small"), seqs(&[5]));
}

#[test]
fn a_catch_up_the_history_no_longer_covers_resyncs_that_member_alone() {
    let bounds = Bounds { recent_len: 1, fetches: 1, ..Bounds::default() };
    let mut c = Case::with(bounds);
    c.attach("a", 1 << 20, 0, None);
    for seq in 1..=5 {
        c.event(message(E, seq, 1));
    }
    c.attach("b", 1 << 20, 1, None);
    c.attach("c", 1 << 20, 2, None);
    assert_eq!(c.did(), ["fetch:b@1"], "one fetch at a time; c waits its turn");
    c.room.on_fetch("b", Ok(history(E, 5, false, vec![])), &mut c.actions);
    assert_eq!(c.got("b"), ["resync@5"]);
    assert_eq!(c.did(), ["fetch:c@2"]);
    c.room.on_fetch("c", Err(CallError::Unavailable), &mut c.actions);
    assert_eq!(c.got("c"), ["resync@5"]);
    assert!(c.got("a").len() == 5, "the others are untouched");
    c.event(message(E, 6, 1));
    for m in ["a", "b", "c"] {
        assert_eq!(c.got(m), seqs(&[6]), "{m} is live");
    }
    // A member gone before its page arrives is simply forgotten.
    c.attach("d", 1 << 20, 1, None);
    assert_eq!(c.did(), ["fetch:d@1"]);
    c.room.detach("d");
    c.room.on_fetch("d", Ok(history(E, 6, true, stored(2..=6))), &mut c.actions);
    assert!(c.did().is_empty());
}

#[test]
fn live_messages_wake_each_writer_once_after_the_burst() {
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    c.attach("b", 1 << 20, 0, None);
    let ready =
        |o: &Outbox| futures::executor::block_on(async { futures::poll!(std::pin::pin!(o.ready())).is_ready() });
    for o in c.outboxes.values() {
        ready(o);
        o.take();
    }
    c.event(message(E, 1, 1));
    c.event(message(E, 2, 1));
    assert!(!ready(&c.outboxes["a"]) && !ready(&c.outboxes["b"]), "queued, writers not woken yet");
    c.room.wake_writers();
    assert!(ready(&c.outboxes["a"]) && ready(&c.outboxes["b"]), "woken once the burst is taken");
    c.room.wake_writers();
    assert!(!ready(&c.outboxes["a"]), "and only once");
    assert_eq!(c.got("a"), seqs(&[1, 2]));
    assert_eq!(c.got("b"), seqs(&[1, 2]));
}

#[test]
fn a_burst_reaches_each_member_in_the_order_its_events_came() {
    let mut c = Case::new();
    c.attach("a", 1 << 20, 0, None);
    c.attach("b", 1 << 20, 0, None);
    // One burst, as the task takes it before waking writers.
    c.event(message(E, 1, 1));
    c.event(message(E, 2, 1));
    c.event(joined("x", 3));
    c.event(message(E, 3, 1));
    // A member that attaches mid-burst at seq 3 gets only what follows.
    c.attach("c", 1 << 20, 3, None);
    c.event(message(E, 4, 1));
    // A new owner's stream: resync, then its messages.
    c.event(message("e2", 1, 1));
    c.event(message("e2", 2, 1));
    c.room.wake_writers();
    let a = ["1", "2", "joined", "3", "4", "resync@0", "1", "2"];
    assert_eq!(c.got("a"), a);
    assert_eq!(c.got("b"), a);
    assert_eq!(c.got("c"), ["4", "resync@0", "1", "2"]);
}
