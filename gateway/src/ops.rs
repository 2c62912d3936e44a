//! The client operations, as a session carries them out.
//!
//! Room operations go to the room's owner through the router client; direct
//! messages go straight onto `sb.user.<user>`; presence goes to the presence
//! service. Each returns the reply body, or the design's error code.

use proto::client::{ErrorCode, Event, Op, ReplyBody, RequestId};
use proto::internal::{self, router_reply, router_request};
use proto::pb;
use proto::subject;
use router::client::CallError;

use crate::auth::AuthError;
use crate::fanout::Attach;
use crate::glob::RoomGlobs;
use crate::rooms::RoomHandle;
use crate::session::Session;
use crate::topics::Listener;

/// A failed op: the code and a message for the client.
pub type Failure = (ErrorCode, String);

fn fail<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Failure> {
    Err((code, message.into()))
}

/// The client's view of a failed call to a room owner.
fn call_failure(e: CallError) -> Failure {
    match e {
        CallError::Unavailable => (ErrorCode::Unavailable, "room owner unavailable; retry".into()),
        CallError::Refused { code, message } => (code, message),
    }
}

impl Session {
    /// Carries out one op. `Ok(None)` means the answer was already queued.
    pub(crate) async fn dispatch(&mut self, id: &RequestId, op: Op) -> Result<Option<ReplyBody>, Failure> {
        match op {
            Op::Auth { .. } => fail(ErrorCode::BadRequest, "already authenticated"),
            Op::Join { room, since } => self.join(id, room, since).await,
            Op::Leave { room } => {
                if !self.rooms.contains_key(&room) {
                    return self.not_member(&room);
                }
                self.take_join()?;
                let handle = self.rooms.remove(&room).expect("checked");
                self.leave_room(&room, &handle).await;
                self.unhold(self.room_cost(&room));
                Ok(Some(ReplyBody::Empty))
            }
            Op::Publish { room, data } => {
                if !self.rooms.contains_key(&room) {
                    return self.not_member(&room);
                }
                let from = self.user.to_string();
                let kind = router_request::Kind::Publish(internal::PublishRequest { from, data });
                match self.hub.router.call(&room, kind).await.map_err(call_failure)? {
                    router_reply::Kind::Publish(p) => Ok(Some(ReplyBody::Publish { seq: p.seq })),
                    _ => fail(ErrorCode::Internal, "unexpected reply from owner"),
                }
            }
            Op::Send { user, data } => {
                if !subject::valid_id(&user) {
                    return fail(ErrorCode::BadRequest, "invalid user id");
                }
                let dm = internal::DirectMessage {
                    to: user.clone(),
                    from: self.user.to_string(),
                    data,
                    ts: proto::now_ms(),
                };
                match self.hub.bus.publish_msg(subject::user(&user), &dm).await {
                    Ok(()) => Ok(Some(ReplyBody::Empty)),
                    Err(_) => fail(ErrorCode::Unavailable, "message bus unavailable; retry"),
                }
            }
            Op::Members { room } => {
                self.check_room(&room)?;
                // A quarter of the queue: the reply must fit beside what
                // the connection's rooms are delivering meanwhile.
                let max_bytes = (self.hub.limits.queue_bytes / 4).min(u32::MAX as usize) as u32;
                let kind = router_request::Kind::Members(internal::MembersRequest { limit: 100, max_bytes });
                match self.hub.router.call(&room, kind).await.map_err(call_failure)? {
                    router_reply::Kind::Members(m) => {
                        Ok(Some(ReplyBody::Members { members: m.members, count: m.count, truncated: m.truncated }))
                    }
                    _ => fail(ErrorCode::Internal, "unexpected reply from owner"),
                }
            }
            Op::Presence { users } => match self.query_presence(users).await {
                Some(users) => Ok(Some(ReplyBody::Presence { users })),
                None => fail(ErrorCode::Unavailable, "presence unavailable; retry"),
            },
            Op::Watch { users } => {
                let mut new: Vec<&String> = users.iter().filter(|u| !self.watching.contains(*u)).collect();
                // A user named twice is one listener: two would deliver each
                // event twice (100 times, for a request naming one user 100 times).
                new.sort_unstable();
                new.dedup();
                if self.watching.len() + new.len() > self.hub.limits.max_watches_per_conn {
                    return fail(ErrorCode::BadRequest, "too many watched users");
                }
                if self.hub.watches.listeners() + new.len() > self.hub.limits.max_watches {
                    return fail(ErrorCode::BadRequest, "this gateway watches too many users (--max-watches)");
                }
                let listener = Listener { outbox: self.outbox.clone(), encoding: self.encoding };
                for user in new {
                    if !self.hold(Session::watch_cost(user)) {
                        return fail(ErrorCode::BadRequest, "this client address holds too much (--max-bytes-per-ip)");
                    }
                    if self.hub.watches.add(user, self.conn.clone(), listener.clone()).await.is_err() {
                        self.unhold(Session::watch_cost(user));
                        return fail(ErrorCode::Unavailable, "message bus unavailable; retry");
                    }
                    self.watching.insert(user.clone());
                }
                // The current state, so the watcher needs no separate query.
                match self.query_presence(users).await {
                    Some(users) => Ok(Some(ReplyBody::Presence { users })),
                    None => Ok(Some(ReplyBody::Empty)),
                }
            }
            Op::Unwatch { users } => {
                for user in users {
                    if self.watching.remove(&user) {
                        self.hub.watches.remove(&user, &self.conn);
                        self.unhold(Session::watch_cost(&user));
                    }
                }
                Ok(Some(ReplyBody::Empty))
            }
            Op::Refresh { token } => match self.hub.verifier.verify(&token) {
                Ok(claims) if *claims.sub == *self.user => {
                    self.exp = claims.exp;
                    self.globs = match claims.rooms {
                        Some(rooms) => std::sync::Arc::new(RoomGlobs::new(rooms)),
                        None => self.hub.default_rooms.clone(),
                    };
                    self.leave_revoked_rooms().await;
                    Ok(Some(ReplyBody::Refresh { exp: claims.exp }))
                }
                Ok(_) => fail(ErrorCode::Forbidden, "token is for another user"),
                Err(AuthError::Expired) => fail(ErrorCode::Unauthorized, "token expired"),
                Err(AuthError::Invalid(_)) => fail(ErrorCode::Unauthorized, "invalid token"),
                Err(e @ AuthError::InfoTooLarge { .. }) => fail(ErrorCode::Unauthorized, e.to_string()),
            },
            Op::Ping => {
                self.send(Event::Pong);
                Ok(None)
            }
        }
    }

    /// Asks presence, then corrects for users connected here: their reports
    /// may still be in the current batch, and a client asking about a user
    /// it can see on this gateway must not be told they are offline.
    async fn query_presence(&self, users: Vec<String>) -> Option<Vec<pb::UserPresence>> {
        let mut answer = self.hub.presence.query(users).await.ok()?;
        for u in answer.iter_mut().filter(|u| !u.online && self.hub.direct.contains(&u.user)) {
            u.online = true;
            u.last_seen_ms = proto::now_ms();
        }
        Some(answer)
    }

    /// A room id the token allows, or the error to answer.
    fn check_room(&self, room: &str) -> Result<(), Failure> {
        if !subject::valid_id(room) {
            return fail(ErrorCode::InvalidRoom, "room ids are 1-128 characters of [A-Za-z0-9_:@-]");
        }
        if !self.globs.allows(room) {
            return fail(ErrorCode::Forbidden, "the token does not allow this room");
        }
        Ok(())
    }

    /// Takes a join or leave from the connection's allowance.
    fn take_join(&mut self) -> Result<(), Failure> {
        if self.joins.take(std::time::Instant::now()) {
            return Ok(());
        }
        metrics::counter!("switchboard_gateway_drops_total", "reason" => "join_rate").increment(1);
        fail(ErrorCode::RateLimited, "over the join and leave rate (--join-rate)")
    }

    fn not_member<T>(&self, room: &str) -> Result<T, Failure> {
        if !subject::valid_id(room) {
            return fail(ErrorCode::InvalidRoom, "room ids are 1-128 characters of [A-Za-z0-9_:@-]");
        }
        fail(ErrorCode::NotMember, "join the room first")
    }

    /// Joins a room: subscribe locally, register with the owner, then attach
    /// to the fanout with the reply and any recovered messages in front.
    async fn join(
        &mut self,
        id: &RequestId,
        room: String,
        since: Option<pb::Since>,
    ) -> Result<Option<ReplyBody>, Failure> {
        self.check_room(&room)?;
        let rejoin = self.rooms.contains_key(&room);
        if !rejoin && self.rooms.len() >= self.hub.limits.max_rooms_per_conn {
            return fail(
                ErrorCode::TooManyRooms,
                format!("at most {} rooms per connection", self.hub.limits.max_rooms_per_conn),
            );
        }
        self.take_join()?;
        let cost = if rejoin { 0 } else { self.room_cost(&room) };
        if !self.hold(cost) {
            return fail(
                ErrorCode::TooManyRooms,
                "this client address holds too many memberships (--max-bytes-per-ip)",
            );
        }
        let handle = match self.hub.rooms.enter(&room).await {
            Ok(h) => h,
            Err(_) => {
                self.unhold(cost);
                return fail(ErrorCode::Unavailable, "message bus unavailable; retry");
            }
        };
        let member = internal::MemberRef {
            gateway: self.hub.id.clone(),
            conn: self.conn.to_string(),
            user: self.user.to_string(),
            info: self.info.clone(),
        };
        let kind = router_request::Kind::Join(internal::JoinRequest { member: Some(member), since: since.clone() });
        let join = match self.hub.router.call(&room, kind).await {
            Ok(router_reply::Kind::Join(j)) => j,
            other => {
                self.hub.rooms.exit(&room);
                self.unhold(cost);
                return match other {
                    Err(e) => Err(call_failure(e)),
                    Ok(_) => fail(ErrorCode::Internal, "unexpected reply from owner"),
                };
            }
        };
        let reply = id.is_some().then(|| {
            let body = ReplyBody::Join {
                epoch: join.epoch.clone(),
                seq: join.seq,
                recovered: since.as_ref().map(|_| join.recovered),
            };
            Event::Reply { id, body }.encode(self.encoding)
        });
        // What it missed arrives paced by its queue, page by page after the first.
        let resume = since.filter(|_| join.recovered).map(|s| (s.seq, join.missed));
        let listener = Listener { outbox: self.outbox.clone(), encoding: self.encoding };
        handle.attach(Attach {
            conn: self.conn.clone(),
            user: self.user.clone(),
            info: self.info.clone(),
            listener,
            epoch: join.epoch,
            seq: join.seq,
            reply,
            resume,
        });
        if rejoin {
            // Keep one reference per joined room.
            self.hub.rooms.exit(&room);
        }
        self.rooms.insert(room, handle);
        Ok(None)
    }

    /// Leaves the joined rooms the token no longer allows, telling the
    /// client with `removed` (before the refresh reply).
    async fn leave_revoked_rooms(&mut self) {
        let revoked: Vec<String> = self.rooms.keys().filter(|r| !self.globs.allows(r)).cloned().collect();
        for room in revoked {
            if let Some(handle) = self.rooms.remove(&room) {
                self.leave_room(&room, &handle).await;
                self.unhold(self.room_cost(&room));
                self.send(Event::Removed { room: &room, reason: "token" });
            }
        }
    }

    /// Stops delivery, drops the local reference, and tells the owner.
    pub(crate) async fn leave_room(&self, room: &str, handle: &RoomHandle) {
        handle.detach(self.conn.clone());
        self.hub.rooms.exit(room);
        let kind = router_request::Kind::Leave(internal::LeaveRequest {
            gateway: self.hub.id.clone(),
            conn: self.conn.to_string(),
        });
        if let Err(e) = self.hub.router.call(room, kind).await {
            tracing::warn!(error = %e, room, "leave not acknowledged by the owner");
        }
    }
}
