//! The owner's transitions, without I/O: requests and cluster changes in,
//! actions out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{BusError, Message};
use bytes::Bytes;
use prost::Message as _;
use proto::internal::{self, room_event, router_reply, router_request};

use super::state::PULL_WINDOW;
use super::*;
use crate::history::HistoryConfig;
use crate::namespace::Namespaces;
use crate::owner::Notice;
use crate::ring::Ring;

const ME: &str = "r-1";

/// A room id the two-router ring gives to `owner`.
fn room_of(owner: &str) -> String {
    room_in("room-", owner)
}

/// A room id starting with `prefix` that the two-router ring gives to `owner`.
fn room_in(prefix: &str, owner: &str) -> String {
    let ring = Ring::new(["r-1", "r-2"], 16);
    (0..).map(|i| format!("{prefix}{i}")).find(|r| ring.owner(r) == Some(owner)).unwrap()
}

fn cluster(members: &[&str]) -> Cluster {
    Cluster { ring: Arc::new(Ring::new(members.iter().copied(), 16)), cut_off: false, incarnation: 0, trusted: true }
}

fn request(room: &str, kind: router_request::Kind) -> Message {
    let req = internal::RouterRequest { ring_version: 0, room: room.into(), kind: Some(kind) };
    Message {
        subject: "sb.router.r-1".into(),
        reply: Some("inbox".into()),
        payload: req.encode_to_vec().into(),
        no_responders: false,
    }
}

fn member(conn: &str, user: &str) -> internal::MemberRef {
    internal::MemberRef { gateway: "gw".into(), conn: conn.into(), user: user.into(), info: Bytes::new() }
}

fn join(room: &str, conn: &str, user: &str) -> Message {
    request(room, router_request::Kind::Join(internal::JoinRequest { member: Some(member(conn, user)), since: None }))
}

fn publish(room: &str) -> Message {
    keyed(room, "u", "")
}

/// A publish by `from` with an idempotency key.
fn keyed(room: &str, from: &str, key: &str) -> Message {
    let p = internal::PublishRequest { from: from.into(), data: "1".into(), idempotency_key: key.into() };
    request(room, router_request::Kind::Publish(p))
}

fn list(prefix: &str, after: &str, limit: u32) -> Message {
    let l = internal::ListRequest { prefix: prefix.into(), after: after.into(), limit };
    request("", router_request::Kind::List(l))
}

fn read(room: &str, user: &str, seq: u64) -> Message {
    request(room, router_request::Kind::Read(internal::ReadRequest { user: user.into(), seq }))
}

fn signal(room: &str, from: &str) -> Message {
    let sig = internal::SignalRequest { from: from.into(), data: "1".into(), gateway: "gw".into(), conn: "c1".into() };
    request(room, router_request::Kind::Signal(sig))
}

/// An owner that has seen a two-router ring for longer than the pull window.
struct Case {
    owner: Owner,
    c: Cluster,
    now: Instant,
    out: Vec<Action>,
    /// Webhook notices, kept apart from the other actions.
    notices: Vec<Notice>,
}

impl Case {
    /// An owner whose ring has held both routers for longer than the pull window.
    fn new() -> Self {
        let mut case = Self::joined();
        case.now += PULL_WINDOW + Duration::from_secs(1);
        case
    }

    /// An owner that has just seen r-1 (itself) join r-2, which held every room.
    fn joined() -> Self {
        Self::with_config(OwnerConfig { vnodes: 16, ..OwnerConfig::default() })
    }

    /// [`Case::new`] with the namespaces of `toml`.
    fn with_namespaces(toml: &str) -> Self {
        let namespaces = Namespaces::parse(toml, "test.toml", HistoryConfig::default()).unwrap();
        let mut case =
            Self::with_config(OwnerConfig { vnodes: 16, namespaces: Arc::new(namespaces), ..Default::default() });
        case.now += PULL_WINDOW + Duration::from_secs(1);
        case
    }

    fn with_config(config: OwnerConfig) -> Self {
        let now = Instant::now();
        let mut case = Self {
            owner: Owner::new(ME.into(), config, 0, Arc::default(), now),
            c: cluster(&["r-1", "r-2"]),
            now,
            out: Vec::new(),
            notices: Vec::new(),
        };
        case.owner.on_view_change(&["r-1".into(), "r-2".into()], &case.c, now, &mut case.out);
        case
    }

    fn send(&mut self, msg: Message) -> Vec<String> {
        self.owner.on_request(msg, &self.c, self.now, &mut self.out);
        self.did()
    }

    /// The actions since last asked (webhook notices aside), named.
    fn did(&mut self) -> Vec<String> {
        let notices = self.out.iter().filter_map(|a| match a {
            Action::Notify(n) => Some(n.clone()),
            _ => None,
        });
        self.notices.extend(notices);
        self.out
            .drain(..)
            .filter(|a| !matches!(a, Action::Notify(_)))
            .map(|a| match a {
                Action::Reply(_, r) => match r.kind.unwrap() {
                    router_reply::Kind::NotOwner(_) => "not_owner".into(),
                    router_reply::Kind::Error(e) => format!("error:{}", e.code),
                    router_reply::Kind::Join(j) => format!("joined@{}/{}", j.seq, j.count),
                    router_reply::Kind::Ack(_) => "ack".into(),
                    router_reply::Kind::Publish(p) if p.duplicate => format!("duplicate:{}", p.seq),
                    router_reply::Kind::Publish(p) => format!("seq:{}", p.seq),
                    router_reply::Kind::List(l) => {
                        let rooms: Vec<String> =
                            l.rooms.iter().map(|r| format!("{}={}/{}", r.room, r.users, r.seq)).collect();
                        format!("list:[{}]{}/{}", rooms.join(","), if l.more { "+" } else { "" }, l.total_rooms)
                    }
                    router_reply::Kind::History(h) => format!("history:{}:{}", h.recovered, h.messages.len()),
                    router_reply::Kind::Members(m) => format!("members:{}", m.count),
                    router_reply::Kind::Pull(p) => format!("pull:{}:{}", p.state.is_some(), p.moved_to),
                },
                Action::Emit(e) => match e.kind.unwrap() {
                    room_event::Kind::Message(m) => format!("emit:message:{}", m.seq),
                    room_event::Kind::Signal(s) => format!("emit:signal:{}", s.from),
                    room_event::Kind::Read(r) => format!("emit:read:{}@{}", r.user, r.seq),
                    // user=count@membership version
                    room_event::Kind::Joined(j) => format!("emit:joined:{}={}@v{}", j.user, j.count, e.members_version),
                    room_event::Kind::Left(l) => format!("emit:left:{}={}@v{}", l.user, l.count, e.members_version),
                    room_event::Kind::MembersChanged(m) => {
                        let joined: Vec<&str> = m.joined.iter().map(|j| j.user.as_str()).collect();
                        format!("emit:changed:+{}-{}/{}", joined.join(","), m.left.join(","), m.count)
                    }
                },
                Action::Pull(p) => format!("pull-from:{}", p.from),
                Action::Push { to, .. } => format!("push-to:{to}"),
                Action::PushOverdue(_) => "overdue".into(),
                Action::Flush { after, .. } => format!("flush-in:{}ms", after.as_millis()),
                Action::Notify(_) => unreachable!("filtered out"),
                Action::Load { .. } => "load".into(),
                Action::Append { append, .. } => format!("append:{}@{}", append.msg.seq, append.fence.stream_seq),
                Action::SaveRead { user, seq, .. } => format!("save-read:{user}@{seq}"),
            })
            .collect()
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn room_ops_emit_their_events_before_the_reply() {
    let mine = room_of(ME);
    let mut t = Case::new();
    // (request, actions) in order, on one room.
    let cases: Vec<(Message, Vec<&str>)> = vec![
        (join(&mine, "c1", "alice"), vec!["emit:joined:alice=1@v1", "joined@0/1"]),
        (join(&mine, "c2", "alice"), vec!["joined@0/1"]),
        (join(&mine, "c3", "bob"), vec!["emit:joined:bob=2@v2", "joined@0/2"]),
        (publish(&mine), vec!["emit:message:1", "seq:1"]),
        (publish(&mine), vec!["emit:message:2", "seq:2"]),
        (signal(&mine, "alice"), vec!["emit:signal:alice", "ack"]),
        (publish(&mine), vec!["emit:message:3", "seq:3"]),
        // Read markers move forward only, never past the latest seq.
        (read(&mine, "alice", 2), vec!["emit:read:alice@2", "ack"]),
        (read(&mine, "alice", 1), vec!["ack"]),
        (read(&mine, "alice", 99), vec!["emit:read:alice@3", "ack"]),
        (read(&room_in("unjoined-", ME), "alice", 1), vec!["error:not_member"]),
        (
            request(&mine, router_request::Kind::History(internal::HistoryRequest { since: None, limit: 0 })),
            vec!["history:true:3"],
        ),
        (
            request(&mine, router_request::Kind::Members(internal::MembersRequest { limit: 10, max_bytes: 0 })),
            vec!["members:2"],
        ),
        (
            request(
                &mine,
                router_request::Kind::Leave(internal::LeaveRequest { gateway: "gw".into(), conn: "c1".into() }),
            ),
            vec!["ack"],
        ),
        (
            request(
                &mine,
                router_request::Kind::Leave(internal::LeaveRequest { gateway: "gw".into(), conn: "c2".into() }),
            ),
            vec!["emit:left:alice=1@v3", "ack"],
        ),
        (
            request("a.b", router_request::Kind::Publish(internal::PublishRequest::default())),
            vec!["error:invalid_room"],
        ),
        (request(&mine, router_request::Kind::Join(internal::JoinRequest::default())), vec!["error:bad_request"]),
    ];
    for (msg, want) in cases {
        assert_eq!(t.send(msg), names(&want));
    }
    let bad = Message {
        subject: "sb.router.r-1".into(),
        reply: None,
        payload: Bytes::from_static(b"\xff\xff"),
        no_responders: false,
    };
    assert_eq!(t.send(bad), ["error:bad_request"]);
}

#[test]
fn an_idempotency_key_repeated_by_the_same_sender_returns_the_first_seq() {
    let (mine, other) = (room_of(ME), room_in("other-", ME));
    let mut t = Case::new();
    // (request, actions) in order.
    let cases: Vec<(Message, Vec<&str>)> = vec![
        (keyed(&mine, "", "k1"), vec!["emit:message:1", "seq:1"]),
        (keyed(&mine, "", "k1"), vec!["duplicate:1"]),
        // Scoped to the sender and the room; no key, no dedupe.
        (keyed(&mine, "alice", "k1"), vec!["emit:message:2", "seq:2"]),
        (keyed(&other, "", "k1"), vec!["emit:message:1", "seq:1"]),
        (keyed(&mine, "", ""), vec!["emit:message:3", "seq:3"]),
        (keyed(&mine, "", ""), vec!["emit:message:4", "seq:4"]),
        (keyed(&mine, "alice", "k1"), vec!["duplicate:2"]),
    ];
    for (msg, want) in cases {
        assert_eq!(t.send(msg), names(&want));
    }
    // The key stays at the owner: members never see it.
    t.owner.on_request(keyed(&mine, "", "k2"), &t.c, t.now, &mut t.out);
    let Some(Action::Emit(e)) = t.out.first() else { panic!("an event") };
    let Some(room_event::Kind::Message(m)) = &e.kind else { panic!("a message") };
    assert!(m.idempotency_key.is_empty());
    t.did();
    // It travels with the room's state to a new owner.
    let state = t.owner.rooms[&mine].to_state(1 << 20);
    assert!(state.history.iter().any(|m| m.idempotency_key == "k2"));
    let mut next = Case::new();
    let push = internal::HandoffRequest { from: "r-2".into(), state: Some(state) };
    assert_eq!(next.send(request(&mine, router_request::Kind::Handoff(push))), ["ack"]);
    assert_eq!(next.send(keyed(&mine, "", "k2")), ["duplicate:5"]);
    assert_eq!(next.send(keyed(&mine, "", "k3")), ["emit:message:6", "seq:6"]);
}

#[test]
fn a_router_lists_the_rooms_it_owns_in_id_order_after_a_cursor() {
    let mut t = Case::new();
    t.c = cluster(&["r-1"]);
    for room in ["b-2", "a-1", "b-1", "c-1", "b-3"] {
        t.send(publish(room));
    }
    t.send(join("a-1", "c1", "alice"));
    // (prefix, after, limit) → the page.
    let cases: Vec<((&str, &str, u32), &str)> = vec![
        (("", "", 10), "list:[a-1=1/1,b-1=0/1,b-2=0/1,b-3=0/1,c-1=0/1]/5"),
        (("", "", 2), "list:[a-1=1/1,b-1=0/1]+/5"),
        (("", "b-1", 2), "list:[b-2=0/1,b-3=0/1]+/5"),
        (("", "b-3", 2), "list:[c-1=0/1]/5"),
        (("b-", "", 2), "list:[b-1=0/1,b-2=0/1]+/5"),
        (("b-", "b-2", 2), "list:[b-3=0/1]/5"),
        (("d-", "", 2), "list:[]/5"),
        // Counts only.
        (("", "", 0), "list:[]+/5"),
    ];
    for ((prefix, after, limit), want) in cases {
        assert_eq!(t.send(list(prefix, after, limit)), [want], "{prefix:?} {after:?} {limit}");
    }
}

#[test]
fn only_the_owner_serves_and_only_when_it_trusts_its_view() {
    let (mine, theirs) = (room_of(ME), room_of("r-2"));
    // (cluster, room, answer)
    let starting = Cluster { trusted: false, ..cluster(&["r-1", "r-2"]) };
    let cases: Vec<(Cluster, &str, &str)> = vec![
        (cluster(&["r-1", "r-2"]), &mine, "seq:1"),
        (cluster(&["r-1", "r-2"]), &theirs, "not_owner"),
        (starting, &mine, "not_owner"),
        (cluster(&[]), &mine, "not_owner"),
    ];
    for (c, room, want) in cases {
        let mut t = Case::new();
        t.c = c;
        let got = t.send(publish(room));
        assert_eq!(got.last().map(String::as_str), Some(want), "{room} {got:?}");
    }
}

#[test]
fn a_router_cut_off_drops_everything_and_refuses_handoffs() {
    let mine = room_of(ME);
    let mut t = Case::new();
    t.send(publish(&mine));
    t.c.cut_off = true;
    assert_eq!(t.send(publish(&mine)), ["not_owner"]);
    let state = internal::RoomState { epoch: "e".into(), seq: 5, ..Default::default() };
    let push = internal::HandoffRequest { from: "r-2".into(), state: Some(state) };
    assert_eq!(t.send(request(&mine, router_request::Kind::Handoff(push))), ["error:unavailable"]);
    // Back, as a new incarnation: the room starts over (seq 1 again).
    t.c = Cluster { incarnation: 1, ..cluster(&["r-1", "r-2"]) };
    assert_eq!(t.send(publish(&mine)), ["emit:message:1", "seq:1"]);
}

#[test]
fn after_a_ring_change_a_request_waits_for_the_room_pulled_from_its_previous_owner() {
    // r-2 held every room; now r-1 has joined the ring.
    let mine = room_of(ME);
    let mut t = Case::joined();
    assert_eq!(t.send(publish(&mine)), ["pull-from:r-2"], "held, not answered");
    assert!(t.send(publish(&mine)).is_empty(), "a second request waits too");
    // (answer of the pull, what follows)
    let state = internal::RoomState { epoch: "e".into(), seq: 7, ..Default::default() };
    let pull = Pull { room: mine.clone(), from: "r-2".into(), hops: 0 };
    let reply = internal::PullReply { state: Some(state), moved_to: String::new() };
    t.owner.on_pulled(pull, Ok(reply), &t.c, t.now, &mut t.out);
    assert_eq!(t.did(), ["emit:message:8", "seq:8", "emit:message:9", "seq:9"], "the same epoch goes on");

    // Other answers to a pull.
    let cases: Vec<(Result<internal::PullReply, BusError>, Vec<&str>)> = vec![
        (Ok(internal::PullReply { state: None, moved_to: String::new() }), vec!["emit:message:1", "seq:1"]),
        (Err(BusError::Timeout), vec!["emit:message:1", "seq:1"]),
        (Ok(internal::PullReply { state: None, moved_to: ME.into() }), vec!["overdue"]),
        (Ok(internal::PullReply { state: None, moved_to: "r-3".into() }), vec!["pull-from:r-3"]),
    ];
    for (answer, want) in cases {
        let mut t = Case::joined();
        t.send(publish(&mine));
        let pull = Pull { room: mine.clone(), from: "r-2".into(), hops: 0 };
        t.owner.on_pulled(pull, answer, &t.c, t.now, &mut t.out);
        let did = t.did();
        assert_eq!(did, names(&want));
        if did == ["overdue"] {
            // The push r-2 said was under way never came: start afresh.
            t.owner.on_push_overdue(mine.clone(), &t.c, t.now, &mut t.out);
            assert_eq!(t.did(), ["emit:message:1", "seq:1"]);
        }
    }
}

#[test]
fn a_push_that_arrives_first_serves_the_waiting_requests_after_its_ack() {
    let mine = room_of(ME);
    let mut t = Case::joined();
    assert_eq!(t.send(publish(&mine)), ["pull-from:r-2"]);
    let state = internal::RoomState { epoch: "e".into(), seq: 3, ..Default::default() };
    let push = internal::HandoffRequest { from: "r-2".into(), state: Some(state) };
    assert_eq!(t.send(request(&mine, router_request::Kind::Handoff(push))), ["ack", "emit:message:4", "seq:4"]);
    // The pull's late answer changes nothing.
    let pull = Pull { room: mine.clone(), from: "r-2".into(), hops: 0 };
    t.owner.on_pulled(pull, Err(BusError::Timeout), &t.c, t.now, &mut t.out);
    assert!(t.did().is_empty());
    assert_eq!(t.send(publish(&mine)), ["emit:message:5", "seq:5"]);
}

#[test]
fn rooms_the_ring_moves_away_are_pushed_and_given_to_a_pull() {
    let theirs = room_of("r-2");
    let mut t = Case::new();
    // Alone, r-1 serves every room.
    t.c = cluster(&["r-1"]);
    t.owner.on_view_change(&["r-1".into()], &t.c, t.now, &mut t.out);
    t.now += PULL_WINDOW + Duration::from_secs(1);
    assert_eq!(t.send(publish(&theirs)), ["emit:message:1", "seq:1"]);
    // r-2 joins: the room is pushed to it.
    t.c = cluster(&["r-1", "r-2"]);
    t.owner.on_view_change(&["r-1".into(), "r-2".into()], &t.c, t.now, &mut t.out);
    assert_eq!(t.did(), ["push-to:r-2"]);
    // Until the push is acknowledged, a pull from r-2 gets the same state;
    // a pull from anyone else learns where it went.
    let pull = |to: &str| request(&theirs, router_request::Kind::Pull(internal::PullRequest { to: to.into() }));
    assert_eq!(t.send(pull("r-2")), ["pull:true:"]);
    assert_eq!(t.send(pull("r-3")), ["pull:false:r-2"]);
    t.owner.on_pushed(theirs.clone(), None, t.now);
    assert_eq!(t.send(pull("r-2")), ["pull:false:r-2"], "acknowledged: the state is r-2's now");
    // Our ring is stale if we are asked to serve it: never start it again.
    t.c = cluster(&["r-1"]);
    assert_eq!(t.send(publish(&theirs)), ["not_owner"]);
    // A refused push takes the room back.
    let mut t = Case::new();
    t.c = cluster(&["r-1"]);
    t.send(publish(&theirs));
    t.c = cluster(&["r-1", "r-2"]);
    t.owner.on_view_change(&["r-1".into(), "r-2".into()], &t.c, t.now, &mut t.out);
    let Some(Action::Push { state, .. }) = t.out.pop() else { panic!("a push") };
    t.owner.on_pushed(theirs.clone(), Some(state), t.now);
    t.c = cluster(&["r-1"]);
    t.now += Duration::from_secs(1);
    t.owner.on_view_change(&["r-1".into()], &t.c, t.now, &mut t.out);
    assert_eq!(t.send(publish(&theirs)), ["emit:message:2", "seq:2"], "kept, same stream");
}

#[test]
fn a_pull_after_the_ring_gave_a_room_back_goes_to_where_it_went() {
    let theirs = room_of("r-2");
    let mut t = Case::new();
    t.c = cluster(&["r-1"]);
    t.owner.on_view_change(&["r-1".into()], &t.c, t.now, &mut t.out);
    t.send(publish(&theirs));
    t.c = cluster(&["r-1", "r-2"]);
    t.owner.on_view_change(&["r-1".into(), "r-2".into()], &t.c, t.now, &mut t.out);
    t.did();
    t.owner.on_pushed(theirs.clone(), None, t.now);
    // r-2 leaves later: the room is ours again, its state at r-2.
    t.now += Duration::from_secs(1);
    t.c = cluster(&["r-1"]);
    t.owner.on_view_change(&["r-1".into()], &t.c, t.now, &mut t.out);
    assert_eq!(t.send(publish(&theirs)), ["pull-from:r-2"]);
}

#[test]
fn the_sweep_drops_the_members_of_gateways_unheard_for_their_ttl() {
    let mine = room_of(ME);
    let mut t = Case::new();
    t.send(join(&mine, "c1", "alice"));
    t.owner.on_gateway("gw".into(), t.now);
    t.owner.sweep(&t.c, t.now + Duration::from_secs(1), &mut t.out);
    assert!(t.did().is_empty(), "heard recently");
    t.owner.sweep(&t.c, t.now + Duration::from_secs(6), &mut t.out);
    assert_eq!(t.did(), ["emit:left:alice=0@v2"]);
    t.now += Duration::from_secs(6);
    let members = request(&mine, router_request::Kind::Members(internal::MembersRequest { limit: 10, max_bytes: 0 }));
    assert_eq!(t.send(members), ["members:0"]);
}

fn leave(room: &str, conn: &str) -> Message {
    request(room, router_request::Kind::Leave(internal::LeaveRequest { gateway: "gw".into(), conn: conn.into() }))
}

const POLICY: &str = r#"
[[namespace]]
prefix = "big:"
join_leave = "batched"
join_leave_window = "250ms"

[[namespace]]
prefix = "quiet:"
join_leave = "off"
max_members = 2
"#;

#[test]
fn namespaces_decide_how_joins_and_leaves_are_told_and_cap_the_members() {
    let mut t = Case::with_namespaces(POLICY);
    let (big, quiet) = (room_in("big:", ME), room_in("quiet:", ME));
    // (request or window end, actions) in order.
    enum Step {
        Send(Message),
        Flush(String),
    }
    use Step::*;
    let steps: Vec<(Step, Vec<&str>)> = vec![
        // Batched: the first change of a window schedules its flush.
        (Send(join(&big, "c1", "alice")), vec!["flush-in:250ms", "joined@0/1"]),
        (Send(join(&big, "c2", "bob")), vec!["joined@0/2"]),
        (Send(join(&big, "c3", "carol")), vec!["joined@0/3"]),
        (Send(leave(&big, "c3")), vec!["ack"]),
        (Flush(big.clone()), vec!["emit:changed:+alice,bob-/2"]),
        (Flush(big.clone()), vec![]),
        (Send(leave(&big, "c1")), vec!["flush-in:250ms", "ack"]),
        (Send(join(&big, "c4", "alice")), vec!["joined@0/2"]),
        // Alice left and came back within the window: nothing to tell.
        (Flush(big.clone()), vec![]),
        (Send(leave(&big, "c2")), vec!["flush-in:250ms", "ack"]),
        (Flush(big.clone()), vec!["emit:changed:+-bob/1"]),
        // Off: no events; the cap counts users, not connections.
        (Send(join(&quiet, "q1", "alice")), vec!["joined@0/1"]),
        (Send(join(&quiet, "q2", "bob")), vec!["joined@0/2"]),
        (Send(join(&quiet, "q3", "bob")), vec!["joined@0/2"]),
        (Send(join(&quiet, "q4", "carol")), vec!["error:room_full"]),
        (Send(leave(&quiet, "q1")), vec!["ack"]),
        (Send(join(&quiet, "q4", "carol")), vec!["joined@0/2"]),
    ];
    for (i, (step, want)) in steps.into_iter().enumerate() {
        let got = match step {
            Send(msg) => t.send(msg),
            Flush(room) => {
                t.owner.on_flush(&room, &mut t.out);
                t.did()
            }
        };
        assert_eq!(got, names(&want), "step {i}");
    }
}

#[test]
fn a_batch_is_told_before_its_room_moves() {
    let mut t = Case::with_namespaces(POLICY);
    let big = room_in("big:", ME);
    assert_eq!(t.send(join(&big, "c1", "alice")), names(&["flush-in:250ms", "joined@0/1"]));
    // The ring gives every room to r-3: the batch goes out, then the push.
    t.c = cluster(&["r-3"]);
    t.owner.on_view_change(&["r-3".into()], &t.c.clone(), t.now, &mut t.out);
    assert_eq!(t.did(), names(&["emit:changed:+alice-/1", "push-to:r-3"]));
    // Its window's end finds nothing here.
    t.owner.on_flush(&big, &mut t.out);
    assert!(t.did().is_empty());
}

#[test]
fn membership_changes_become_webhook_notices_in_every_namespace() {
    let mine = room_of(ME);
    let mut t = Case::new();
    let leave = |conn: &str| {
        request(&mine, router_request::Kind::Leave(internal::LeaveRequest { gateway: "gw".into(), conn: conn.into() }))
    };
    for msg in [join(&mine, "c1", "alice"), join(&mine, "c2", "alice"), join(&mine, "c3", "bob"), leave("c1")] {
        t.send(msg);
    }
    t.send(leave("c2"));
    t.send(leave("c3"));
    let room = || mine.clone();
    assert_eq!(
        t.notices,
        [
            Notice::Occupied { room: room() },
            Notice::Joined { room: room(), user: "alice".into() },
            Notice::Joined { room: room(), user: "bob".into() },
            Notice::Left { room: room(), user: "alice".into() },
            Notice::Left { room: room(), user: "bob".into() },
            Notice::Vacated { room: room() },
        ],
        "a second connection of a user is no news"
    );
}

/// A store the machine only asks whether it is durable: loads and appends
/// are actions the tests answer themselves.
#[derive(Debug)]
struct Durable;

impl crate::store::Store for Durable {
    fn kind(&self) -> &'static str {
        "test"
    }
    fn durable(&self) -> bool {
        true
    }
    fn load(&self, _: String, _: String, _: HistoryConfig) -> bus::BoxFuture<'_, Result<Loaded, StoreError>> {
        unreachable!("the machine does no I/O")
    }
    fn append(&self, _: Append) -> bus::BoxFuture<'_, Result<internal::StoreFence, StoreError>> {
        unreachable!("the machine does no I/O")
    }
    fn save_read(&self, _: String, _: String, _: u64) -> bus::BoxFuture<'_, Result<(), StoreError>> {
        unreachable!("the machine does no I/O")
    }
}

use crate::store::{Append, Loaded, StoreError};

fn fence(stream_seq: u64, revision: u64) -> internal::StoreFence {
    internal::StoreFence { stream_seq, revision }
}

/// A room the store holds at `seq` (history 1..=seq) behind `fence`.
fn stored(seq: u64, f: internal::StoreFence) -> Loaded {
    let history = (1..=seq)
        .map(|s| internal::StoredMessage { seq: s, from: "u".into(), ts: proto::now_ms(), ..Default::default() })
        .collect();
    Loaded { epoch: "e1".into(), seq, history, reads: Default::default(), fence: f }
}

impl Case {
    fn durable() -> Self {
        let config = OwnerConfig { vnodes: 16, store: Arc::new(Durable), ..OwnerConfig::default() };
        let mut case = Self::with_config(config);
        case.now += PULL_WINDOW + Duration::from_secs(1);
        case
    }

    fn loaded(&mut self, room: &str, result: Result<Loaded, StoreError>) -> Vec<String> {
        self.owner.on_loaded(room.into(), result, &self.c, self.now, &mut self.out);
        self.did()
    }

    /// Answers the oldest append still unanswered in `out` (kept aside by
    /// [`Case::send_keep`]).
    fn appended(
        &mut self,
        pending: &mut Vec<(u64, Message, Append)>,
        result: Result<internal::StoreFence, StoreError>,
    ) -> Vec<String> {
        let (id, msg, append) = pending.remove(0);
        self.owner.on_appended(id, msg, append, result, &self.c, self.now, &mut self.out);
        self.take_appends(pending)
    }

    /// Like [`Case::send`], keeping the appends to answer later.
    fn send_keep(&mut self, msg: Message, pending: &mut Vec<(u64, Message, Append)>) -> Vec<String> {
        self.owner.on_request(msg, &self.c, self.now, &mut self.out);
        self.take_appends(pending)
    }

    fn take_appends(&mut self, pending: &mut Vec<(u64, Message, Append)>) -> Vec<String> {
        for a in &self.out {
            if let Action::Append { id, msg, append } = a {
                pending.push((*id, msg.clone(), append.clone()));
            }
        }
        self.did()
    }
}

#[test]
fn a_durable_room_is_loaded_on_its_first_request_and_continues_its_stream() {
    let mine = room_of(ME);
    let mut t = Case::durable();
    assert_eq!(t.send(join(&mine, "c1", "alice")), ["load"]);
    assert!(t.send(publish(&mine)).is_empty(), "waits for the load");
    let mut pending = Vec::new();
    t.owner.on_loaded(mine.clone(), Ok(stored(5, fence(10, 3))), &t.c, t.now, &mut t.out);
    let did = t.take_appends(&mut pending);
    assert!(did[0].starts_with("emit:joined:alice=1@v"), "{did:?}");
    assert_eq!(did[1..], ["joined@5/1", "append:6@10"]);
    // Acknowledged only once stored; the next waits for the one in flight.
    assert!(t.send_keep(publish(&mine), &mut pending).is_empty());
    assert_eq!(t.appended(&mut pending, Ok(fence(11, 4))), ["emit:message:6", "seq:6", "append:7@11"]);
    assert_eq!(t.appended(&mut pending, Ok(fence(12, 5))), ["emit:message:7", "seq:7"]);
    assert_eq!(t.owner.rooms[&mine].fence, fence(12, 5));
    // Gaps are filled from what was loaded.
    let since = proto::pb::Since { epoch: "e1".into(), seq: 2 };
    let h = internal::HistoryRequest { since: Some(since), limit: 0 };
    assert_eq!(t.send(request(&mine, router_request::Kind::History(h))), ["history:true:5"]);
    // A read is acknowledged once its marker is stored.
    assert_eq!(t.send(read(&mine, "alice", 6)), ["emit:read:alice@6", "save-read:alice@6"]);
    // The load failing answers everyone waiting, and starts nothing.
    let other = room_in("other-", ME);
    assert_eq!(t.send(join(&other, "c1", "alice")), ["load"]);
    assert_eq!(t.loaded(&other, Err(StoreError::Unavailable("down".into()))), ["error:unavailable"]);
    assert!(!t.owner.rooms.contains_key(&other), "never a fresh epoch in place of the stored one");
}

#[test]
fn a_repeated_idempotency_key_is_answered_from_the_stored_message() {
    let mine = room_of(ME);
    let mut t = Case::durable();
    let mut pending = Vec::new();
    assert_eq!(t.send_keep(keyed(&mine, "alice", "k1"), &mut pending), ["load"]);
    assert_eq!(t.loaded(&mine, Ok(stored(0, fence(0, 1)))), ["append:1@0"]);
    pending.clear();
    t.owner.on_request(keyed(&mine, "alice", "k1"), &t.c, t.now, &mut t.out);
    // (Re-take the first append: `loaded` named it without keeping it.)
    let first = t.owner.next_write;
    assert!(t.did().is_empty(), "the retry waits behind the original");
    let append = Append {
        room: mine.clone(),
        epoch: "e1".into(),
        msg: internal::StoredMessage {
            seq: 1,
            from: "alice".into(),
            idempotency_key: "k1".into(),
            ..Default::default()
        },
        ttl: Duration::from_secs(120),
        fence: fence(0, 1),
    };
    t.owner.on_appended(first, keyed(&mine, "alice", "k1"), append, Ok(fence(1, 2)), &t.c, t.now, &mut t.out);
    assert_eq!(t.did(), ["emit:message:1", "seq:1", "duplicate:1"]);
}

#[test]
fn a_fenced_append_steps_down_if_another_owner_wrote_and_goes_on_if_not() {
    let mine = room_of(ME);
    // (the reload's fence, then what the waiting publishes get)
    let cases: [(internal::StoreFence, &[&str]); 3] = [
        (fence(12, 4), &["not_owner", "not_owner"]),
        (fence(10, 9), &["not_owner", "not_owner"]),
        // Our newest message aged out of the stream: nobody else wrote.
        (fence(0, 4), &["append:6@0"]),
    ];
    for (reloaded, expect) in cases {
        let mut t = Case::durable();
        let mut pending = Vec::new();
        t.send(join(&mine, "c1", "alice"));
        t.loaded(&mine, Ok(stored(5, fence(10, 4))));
        t.send_keep(publish(&mine), &mut pending);
        t.send_keep(publish(&mine), &mut pending);
        pending.truncate(0);
        let id = t.owner.next_write;
        let append = Append {
            room: mine.clone(),
            epoch: "e1".into(),
            msg: internal::StoredMessage { seq: 6, ..Default::default() },
            ttl: Duration::from_secs(120),
            fence: fence(10, 4),
        };
        t.owner.on_appended(id, publish(&mine), append, Err(StoreError::Fenced), &t.c, t.now, &mut t.out);
        assert_eq!(t.did(), ["load"], "reloaded to learn who wrote");
        let mut reload = stored(5, reloaded);
        if reloaded.stream_seq == 0 {
            reload.history.clear();
        }
        assert_eq!(
            t.loaded(&mine, Ok(reload)),
            expect.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "{reloaded:?}"
        );
        if expect[0] != "not_owner" {
            assert_eq!(t.owner.rooms[&mine].user_count(), 1, "members kept across the reload");
        }
    }
    // An append whose outcome is unknown: the caller hears so, the room reloads.
    let mut t = Case::durable();
    t.send(join(&mine, "c1", "alice"));
    t.loaded(&mine, Ok(stored(5, fence(10, 4))));
    t.send(publish(&mine));
    let append = Append {
        room: mine.clone(),
        epoch: "e1".into(),
        msg: internal::StoredMessage { seq: 6, ..Default::default() },
        ttl: Duration::from_secs(120),
        fence: fence(10, 4),
    };
    let id = t.owner.next_write;
    t.owner.on_appended(
        id,
        publish(&mine),
        append,
        Err(StoreError::Unavailable("timeout".into())),
        &t.c,
        t.now,
        &mut t.out,
    );
    assert_eq!(t.did(), ["error:unavailable", "load"]);
}

#[test]
fn publishes_waiting_for_the_store_are_bounded_per_room() {
    let mine = room_of(ME);
    let mut t = Case::durable();
    t.send(join(&mine, "c1", "alice"));
    t.loaded(&mine, Ok(stored(0, fence(0, 1))));
    t.send(publish(&mine)); // in flight
    for _ in 0..durable::MAX_QUEUED {
        assert!(t.send(publish(&mine)).is_empty());
    }
    assert_eq!(t.send(publish(&mine)), ["error:unavailable"]);
}
