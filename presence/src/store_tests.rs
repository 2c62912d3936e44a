//! Tests of [`super`] (store.rs).

use super::*;
use crate::users::LAST_SEEN_RETENTION;

const LEASE: Duration = Duration::from_secs(15);
const GRACE: Duration = Duration::from_secs(5);
/// Wall clock at `t0`; tests advance it in step with the `Instant`.
const T0_MS: i64 = 1_700_000_000_000;

/// A store plus a controllable clock.
struct Harness {
    store: Store,
    t0: Instant,
    /// Time since `t0`.
    elapsed: Duration,
}

impl Harness {
    fn new() -> Self {
        Self {
            store: Store::new(StoreConfig { lease_ttl: LEASE, offline_grace: GRACE, ..StoreConfig::default() }),
            t0: Instant::now(),
            elapsed: Duration::ZERO,
        }
    }

    fn now(&self) -> (Instant, i64) {
        (self.t0 + self.elapsed, self.now_ms())
    }

    fn now_ms(&self) -> i64 {
        T0_MS + self.elapsed.as_millis() as i64
    }

    /// Advances the clock and sweeps, returning what the sweep emitted.
    fn advance(&mut self, by: Duration) -> Vec<Change> {
        self.elapsed += by;
        let (now, now_ms) = self.now();
        self.store.sweep(now, now_ms)
    }

    fn report(&mut self, req: pb::ReportRequest) -> Vec<Change> {
        let (now, now_ms) = self.now();
        self.store.report(now, now_ms, &req)
    }

    fn connect(&mut self, gateway: &str, user: &str, conn: &str) -> Vec<Change> {
        self.report(pb::ReportRequest {
            gateway: gateway.into(),
            connected: vec![session(user, conn)],
            ..Default::default()
        })
    }

    fn disconnect(&mut self, gateway: &str, user: &str, conn: &str) -> Vec<Change> {
        self.report(pb::ReportRequest {
            gateway: gateway.into(),
            disconnected: vec![session(user, conn)],
            ..Default::default()
        })
    }

    fn renew(&mut self, gateway: &str) {
        let changes = self.report(pb::ReportRequest { gateway: gateway.into(), ..Default::default() });
        assert!(changes.is_empty());
    }

    fn presence(&self, user: &str) -> pb::UserPresence {
        self.store.query(self.now_ms(), &[user.to_owned()]).pop().unwrap()
    }

    fn online(&self, user: &str) -> bool {
        self.presence(user).online
    }
}

fn session(user: &str, conn: &str) -> pb::Session {
    pb::Session { user: user.into(), conn: conn.into(), ..Default::default() }
}

fn online_at(user: &str, ts: i64) -> Change {
    Change { user: user.into(), online: true, ts, status: String::new(), status_only: false }
}

fn offline_at(user: &str, ts: i64) -> Change {
    Change { user: user.into(), online: false, ts, status: String::new(), status_only: false }
}

#[test]
fn the_latest_status_set_on_any_session_wins_until_the_user_goes_offline() {
    let mut h = Harness::new();
    h.connect("g1", "alice", "c1");
    h.connect("g2", "alice", "c2");
    let with = |conn: &str, status: &str, at_ms: i64| pb::Session {
        user: "alice".into(),
        conn: conn.into(),
        status: status.into(),
        status_ms: at_ms,
    };
    let set = |h: &mut Harness, gateway: &str, s: pb::Session| {
        let changes = h.report(pb::ReportRequest { gateway: gateway.into(), connected: vec![s], ..Default::default() });
        changes.into_iter().map(|c| c.status).collect::<Vec<_>>()
    };
    // (gateway, session as reported) → status events, and the status after.
    let cases: &[(&str, pb::Session, &[&str], &str)] = &[
        ("g1", with("c1", "away", 10), &["away"], "away"),
        // The other device set busy later: it wins.
        ("g2", with("c2", "busy", 20), &["busy"], "busy"),
        // An older set that arrives late changes nothing.
        ("g1", with("c1", "online", 15), &[], "busy"),
        // The same status again is no news.
        ("g2", with("c2", "busy", 30), &[], "busy"),
        ("g1", with("c1", "online", 40), &["online"], "online"),
    ];
    for (gateway, s, events, after) in cases {
        assert_eq!(set(&mut h, gateway, s.clone()), *events, "{s:?}");
        assert_eq!(h.presence("alice").status, *after);
    }
    // A snapshot carries statuses too.
    let snap = pb::ReportRequest {
        gateway: "g2".into(),
        snapshot: true,
        connected: vec![with("c2", "dnd", 50)],
        ..Default::default()
    };
    assert_eq!(h.report(snap).into_iter().map(|c| c.status).collect::<Vec<_>>(), ["dnd"]);
    // A new session does not reset it; going offline does.
    h.connect("g1", "alice", "c3");
    assert_eq!(h.presence("alice").status, "dnd");
    for (g, c) in [("g1", "c1"), ("g2", "c2"), ("g1", "c3")] {
        h.disconnect(g, "alice", c);
    }
    assert_eq!(h.presence("alice").status, "dnd", "still online in grace");
    let gone = h.advance(GRACE);
    assert_eq!(gone, vec![offline_at("alice", T0_MS + GRACE.as_millis() as i64)]);
    assert_eq!((h.presence("alice").online, h.presence("alice").status.as_str()), (false, ""));
    h.connect("g1", "alice", "c4");
    assert_eq!(h.presence("alice").status, "", "back online: `online` again");
}

#[test]
fn first_session_turns_user_online_immediately() {
    let mut h = Harness::new();
    assert_eq!(h.connect("g1", "alice", "c1"), vec![online_at("alice", T0_MS)]);
    assert!(h.online("alice"));
    assert_eq!(h.store.online_users(), 1);
    assert_eq!(h.store.sessions(), 1);
}

#[test]
fn duplicate_connect_is_idempotent() {
    let mut h = Harness::new();
    h.connect("g1", "alice", "c1");
    assert!(h.connect("g1", "alice", "c1").is_empty());
    assert_eq!(h.store.sessions(), 1);
    // One disconnect ends the one session.
    h.disconnect("g1", "alice", "c1");
    assert_eq!(h.advance(GRACE).len(), 1);
    assert!(!h.online("alice"));
}

#[test]
fn unknown_disconnects_are_ignored() {
    let mut h = Harness::new();
    assert!(h.disconnect("g1", "alice", "c1").is_empty());
    h.connect("g1", "alice", "c1");
    // Wrong user for the conn, and the right conn on another gateway.
    assert!(h.disconnect("g1", "bob", "c1").is_empty());
    assert!(h.disconnect("g2", "alice", "c1").is_empty());
    assert!(h.advance(GRACE * 2).is_empty());
    assert!(h.online("alice"));
}

#[test]
fn reconnect_within_grace_emits_nothing() {
    let mut h = Harness::new();
    h.connect("g1", "alice", "c1");
    assert!(h.disconnect("g1", "alice", "c1").is_empty());
    assert!(h.advance(GRACE / 2).is_empty());
    assert!(h.online("alice"), "online during grace");
    assert_eq!(h.store.online_users(), 1);
    // Reconnected through another gateway: still nothing.
    assert!(h.connect("g2", "alice", "c9").is_empty());
    assert!(h.advance(GRACE * 3).is_empty());
    assert!(h.online("alice"));
}

#[test]
fn grace_expiry_turns_user_offline_at_end_of_grace() {
    let mut h = Harness::new();
    h.connect("g1", "alice", "c1");
    h.advance(Duration::from_secs(1));
    let ended_ms = h.now_ms();
    h.disconnect("g1", "alice", "c1");
    assert!(h.advance(GRACE - Duration::from_millis(1)).is_empty());
    // The sweep runs late; the timestamp is still the end of grace.
    let changes = h.advance(Duration::from_millis(200));
    let offline_ms = ended_ms + GRACE.as_millis() as i64;
    assert_eq!(changes, vec![offline_at("alice", offline_ms)]);
    assert!(!h.online("alice"));
    assert_eq!(h.store.online_users(), 0);
    assert!(h.advance(GRACE).is_empty(), "offline is reported once");
}

#[test]
fn reconnect_after_grace_turns_user_online_again() {
    let mut h = Harness::new();
    h.connect("g1", "alice", "c1");
    h.disconnect("g1", "alice", "c1");
    assert_eq!(h.advance(GRACE).len(), 1);
    h.advance(Duration::from_secs(1));
    let now_ms = h.now_ms();
    assert_eq!(h.connect("g1", "alice", "c2"), vec![online_at("alice", now_ms)]);
}

#[test]
fn second_grace_supersedes_first() {
    let mut h = Harness::new();
    h.connect("g1", "alice", "c1");
    h.disconnect("g1", "alice", "c1");
    h.advance(GRACE / 2);
    h.connect("g1", "alice", "c2");
    h.advance(Duration::from_secs(1));
    let ended_ms = h.now_ms();
    h.disconnect("g1", "alice", "c2");
    // The first grace's deadline passes: alice is in her second grace.
    assert!(h.advance(GRACE / 2 + Duration::from_millis(100)).is_empty());
    assert!(h.online("alice"));
    let changes = h.advance(GRACE);
    assert_eq!(changes, vec![offline_at("alice", ended_ms + GRACE.as_millis() as i64)]);
}

#[test]
fn user_stays_online_while_any_session_lives() {
    let mut h = Harness::new();
    assert_eq!(h.connect("g1", "alice", "c1").len(), 1);
    assert!(h.connect("g1", "alice", "c2").is_empty());
    assert!(h.connect("g2", "alice", "c1").is_empty(), "same conn id, other gateway");
    assert_eq!(h.store.sessions(), 3);
    assert_eq!(h.store.online_users(), 1);
    h.disconnect("g1", "alice", "c1");
    h.disconnect("g2", "alice", "c1");
    assert!(h.advance(GRACE * 2).is_empty());
    assert!(h.online("alice"));
    h.disconnect("g1", "alice", "c2");
    assert_eq!(h.advance(GRACE).len(), 1);
    assert!(!h.online("alice"));
    assert_eq!(h.store.sessions(), 0);
}

#[test]
fn lease_expiry_drops_gateway_sessions_then_grace_applies() {
    let mut h = Harness::new();
    h.connect("g1", "alice", "c1");
    h.connect("g2", "bob", "c1");
    // g2 keeps renewing, g1 goes silent.
    for _ in 0..3 {
        assert!(h.advance(Duration::from_secs(5) - Duration::from_millis(1)).is_empty());
        h.renew("g2");
    }
    // g1's lease (15 s from t=0) lapses now; g2 renewed at 14.997 s.
    let changes = h.advance(Duration::from_millis(10));
    assert!(changes.is_empty(), "grace starts at expiry");
    assert_eq!(h.store.sessions(), 1);
    assert_eq!(h.store.gateways(), 1);
    let expired_ms = h.now_ms();
    let changes = h.advance(GRACE);
    assert_eq!(changes, vec![offline_at("alice", expired_ms + GRACE.as_millis() as i64)]);
    assert!(h.online("bob"));
}

#[test]
fn every_report_renews_the_lease() {
    let mut h = Harness::new();
    h.connect("g1", "alice", "c1");
    h.advance(LEASE - Duration::from_secs(1));
    h.connect("g1", "bob", "c2");
    h.advance(LEASE - Duration::from_secs(2));
    assert_eq!(h.store.sessions(), 2, "renewed at 14 s, expires at 29 s");
    h.advance(Duration::from_secs(2));
    assert_eq!(h.store.sessions(), 0);
}

#[test]
fn snapshot_replaces_gateway_sessions() {
    let mut h = Harness::new();
    h.connect("g1", "alice", "c1");
    h.connect("g1", "bob", "c2");
    h.connect("g2", "carol", "c1");
    let changes = h.report(pb::ReportRequest {
        gateway: "g1".into(),
        snapshot: true,
        connected: vec![session("alice", "c1"), session("dave", "c3")],
        ..Default::default()
    });
    assert_eq!(changes, vec![online_at("dave", T0_MS)]);
    assert_eq!(h.store.sessions(), 3);
    let changes = h.advance(GRACE);
    assert_eq!(changes, vec![offline_at("bob", T0_MS + GRACE.as_millis() as i64)]);
    assert!(h.online("alice"));
    assert!(h.online("carol"), "other gateways are untouched");
}

#[test]
fn snapshot_for_unknown_gateway_restores_state() {
    let mut h = Harness::new();
    let changes = h.report(pb::ReportRequest {
        gateway: "g1".into(),
        snapshot: true,
        connected: vec![session("alice", "c1"), session("alice", "c2")],
        ..Default::default()
    });
    assert_eq!(changes, vec![online_at("alice", T0_MS)]);
    assert_eq!(h.store.sessions(), 2);
    // An empty snapshot ends everything.
    h.report(pb::ReportRequest { gateway: "g1".into(), snapshot: true, ..Default::default() });
    assert_eq!(h.store.sessions(), 0);
    assert_eq!(h.advance(GRACE).len(), 1);
}

#[test]
fn leaving_drops_sessions_and_lease_now() {
    let mut h = Harness::new();
    h.connect("g1", "alice", "c1");
    h.connect("g1", "bob", "c2");
    h.connect("g2", "bob", "c1");
    let changes = h.report(pb::ReportRequest { gateway: "g1".into(), leaving: true, ..Default::default() });
    assert!(changes.is_empty());
    assert_eq!(h.store.gateways(), 1);
    assert_eq!(h.store.sessions(), 1);
    let changes = h.advance(GRACE);
    assert_eq!(changes, vec![offline_at("alice", T0_MS + GRACE.as_millis() as i64)]);
    assert!(h.online("bob"));
}

#[test]
fn reused_conn_id_moves_session_to_new_user() {
    let mut h = Harness::new();
    h.connect("g1", "alice", "c1");
    assert_eq!(h.connect("g1", "bob", "c1"), vec![online_at("bob", T0_MS)]);
    assert_eq!(h.store.sessions(), 1);
    assert_eq!(h.advance(GRACE).len(), 1);
    assert!(!h.online("alice"));
    assert!(h.online("bob"));
}

#[test]
fn last_seen_follows_online_state() {
    let mut h = Harness::new();
    assert_eq!(h.presence("alice").last_seen_ms, 0, "never seen");
    h.connect("g1", "alice", "c1");
    h.advance(Duration::from_secs(30));
    h.renew("g1");
    assert_eq!(h.presence("alice").last_seen_ms, h.now_ms(), "now while online");
    let ended_ms = h.now_ms();
    h.disconnect("g1", "alice", "c1");
    h.advance(Duration::from_secs(2));
    let p = h.presence("alice");
    assert!(p.online);
    assert_eq!(p.last_seen_ms, h.now_ms(), "still now during grace");
    h.advance(Duration::from_secs(60));
    let p = h.presence("alice");
    assert!(!p.online);
    assert_eq!(p.last_seen_ms, ended_ms + GRACE.as_millis() as i64);
}

#[test]
fn offline_users_are_forgotten_after_retention() {
    let mut h = Harness::new();
    for i in 0..100 {
        h.connect("g1", &format!("u{i}"), &format!("c{i}"));
        h.disconnect("g1", &format!("u{i}"), &format!("c{i}"));
    }
    assert_eq!(h.advance(GRACE).len(), 100);
    assert_eq!(h.store.users.len(), 100);
    h.renew("g1");
    h.advance(LAST_SEEN_RETENTION - Duration::from_secs(1));
    assert_eq!(h.store.users.len(), 100);
    assert_ne!(h.presence("u7").last_seen_ms, 0);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.store.users.len(), 0);
    assert_eq!(h.presence("u7").last_seen_ms, 0);
}

#[test]
fn returning_user_is_not_forgotten_by_stale_entry() {
    let mut h = Harness::new();
    h.connect("g1", "alice", "c1");
    h.disconnect("g1", "alice", "c1");
    h.advance(GRACE);
    h.advance(LAST_SEEN_RETENTION / 2);
    h.connect("g1", "alice", "c2");
    // Stay connected past the first offline entry's forget time.
    let until = h.elapsed + LAST_SEEN_RETENTION;
    while h.elapsed < until {
        assert!(h.advance(LEASE / 2).is_empty());
        h.renew("g1");
    }
    assert!(h.online("alice"));
    assert_eq!(h.store.online_users(), 1);
    assert_eq!(h.store.users.len(), 1);
}

#[test]
fn query_answers_in_request_order() {
    let mut h = Harness::new();
    h.connect("g1", "bob", "c1");
    let users = ["alice", "bob", "alice"].map(String::from);
    let got = h.store.query(h.now_ms(), &users);
    let summary: Vec<_> = got.iter().map(|p| (p.user.as_str(), p.online)).collect();
    assert_eq!(summary, [("alice", false), ("bob", true), ("alice", false)]);
}

#[test]
fn users_handed_off_to_another_replica_leave_without_a_change() {
    let mut h = Harness::new();
    h.connect("g1", "alice", "c1");
    h.connect("g2", "alice", "c2");
    h.connect("g1", "bob", "c3");
    h.connect("g1", "carol", "c4");
    h.disconnect("g1", "carol", "c4"); // carol is in grace
                                       // (users kept, users handed off, online after)
    let moved = h.store.hand_off(|u| u == "bob");
    assert_eq!(moved, 2, "alice and carol went");
    assert_eq!(h.store.sessions(), 1, "only bob's session is left");
    assert_eq!(h.store.online_users(), 1);
    assert!(!h.online("alice") && !h.online("carol") && h.online("bob"));
    // Carol's grace ends here without an offline: her new replica says so.
    assert!(h.advance(GRACE * 2).is_empty());
    // A user back on this replica is announced again.
    assert_eq!(h.connect("g1", "alice", "c1"), vec![online_at("alice", h.now_ms())]);
    // And leaves normally: the old grace deadline is skipped, the new one counts.
    h.disconnect("g1", "alice", "c1");
    assert!(h.advance(GRACE / 2).is_empty());
    let ends = h.now_ms() + (GRACE / 2).as_millis() as i64;
    assert_eq!(h.advance(GRACE / 2), vec![offline_at("alice", ends)]);
}

#[test]
fn a_user_coming_and_going_leaves_bounded_deadlines() {
    // Every grace ends offline, and each offline is remembered for an hour:
    // the deadlines must follow the users, not the visits (here 10 users,
    // 1,000 offlines each within the hour, 5 visits per grace).
    let mut h = Harness::new();
    for step in 0..1_000 {
        for visit in 0..50 {
            let (user, conn) = (format!("u{}", visit % 10), format!("c{step}-{visit}"));
            h.connect("g1", &user, &conn);
            h.disconnect("g1", &user, &conn);
        }
        h.advance(GRACE);
        assert!(h.store.deadlines() <= 2 * (2 * 10 + 1024), "{} deadlines at step {step}", h.store.deadlines());
    }
    assert_eq!(h.store.known_users(), 10);
    h.advance(LAST_SEEN_RETENTION);
    assert_eq!(h.store.known_users(), 0, "every current deadline still fires");
}
