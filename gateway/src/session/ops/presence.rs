//! `presence {users}`, `watch {users}` and `unwatch {users}`: who is online,
//! and events when that changes, for the users the token's `watch` allows.
//! `status {status}`: this user's status, which presence keeps (the latest
//! set on any of the user's connections) and shows while the user is online.

use proto::client::{ErrorCode, ReplyBody};
use proto::pb;

use super::{fail, forbidden, Answer, Failure};
use crate::delivery::topics::Listener;
use crate::session::Session;

/// Longest status, in bytes.
pub const MAX_STATUS_BYTES: usize = 64;

pub fn status(s: &mut Session, status: String) -> Answer {
    if status.is_empty() || status.len() > MAX_STATUS_BYTES {
        return fail(ErrorCode::BadRequest, "`status` must be 1 to 64 bytes");
    }
    s.hub.reporter.status(&s.conn, &status, proto::now_ms());
    Ok(Some(ReplyBody::Empty))
}

pub async fn query(s: &mut Session, users: Vec<String>) -> Answer {
    check_watch(s, &users)?;
    Ok(Some(ask(s, users).await))
}

pub async fn watch(s: &mut Session, users: Vec<String>) -> Answer {
    check_watch(s, &users)?;
    let mut new: Vec<&String> = users.iter().filter(|u| !s.watching.contains(*u)).collect();
    // A user named twice is one listener: two would deliver each event
    // twice (100 times, for a request naming one user 100 times).
    new.sort_unstable();
    new.dedup();
    if s.watching.len() + new.len() > s.hub.limits.max_watches_per_conn {
        return fail(ErrorCode::BadRequest, "too many watched users");
    }
    if s.hub.watches.listeners() + new.len() > s.hub.limits.max_watches {
        return fail(ErrorCode::BadRequest, "this gateway watches too many users (--max-watches)");
    }
    let listener = Listener { outbox: s.outbox.clone(), encoding: s.encoding };
    for user in new {
        if !s.hold(Session::watch_cost(user)) {
            return fail(ErrorCode::BadRequest, "this client address holds too much (--max-bytes-per-ip)");
        }
        if s.hub.watches.add(user, s.conn.clone(), listener.clone()).await.is_err() {
            s.unhold(Session::watch_cost(user));
            return fail(ErrorCode::Unavailable, "message bus unavailable; retry");
        }
        s.watching.insert(user.clone());
    }
    // The current state, so the watcher needs no separate query.
    Ok(Some(ask(s, users).await))
}

pub fn unwatch(s: &mut Session, users: Vec<String>) -> Answer {
    for user in users {
        if s.watching.remove(&user) {
            s.hub.watches.remove(&user, &s.conn);
            s.unhold(Session::watch_cost(&user));
        }
    }
    Ok(Some(ReplyBody::Empty))
}

/// Every user in `users` must be one the token lets this connection watch.
fn check_watch(s: &Session, users: &[String]) -> Result<(), Failure> {
    users.iter().try_for_each(|u| s.grants.watch.check("watching", u)).map_err(forbidden)
}

/// Asks presence, then corrects for users connected here: their reports may
/// still be in the current batch, and a client asking about a user it can
/// see on this gateway must not be told they are offline. Without presence
/// (down, or a replica lost a moment ago) the answer degrades to this
/// gateway's own connections, and says so.
async fn ask(s: &Session, users: Vec<String>) -> ReplyBody {
    let (mut answer, degraded) = match s.hub.presence.query(users.clone()).await {
        Ok(answer) => (answer, false),
        Err(status) => {
            tracing::debug!(%status, "presence query failed: answering from this gateway");
            metrics::counter!("switchboard_gateway_presence_degraded_answers_total").increment(1);
            let unknown = users.into_iter().map(|user| pb::UserPresence { user, ..Default::default() });
            (unknown.collect(), true)
        }
    };
    for u in answer.iter_mut().filter(|u| !u.online && s.hub.direct.contains(&u.user)) {
        u.online = true;
        u.last_seen_ms = proto::now_ms();
    }
    ReplyBody::Presence { users: answer, degraded }
}
