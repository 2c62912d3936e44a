//! `subscribe {user, room}` / `unsubscribe {user, room}` →
//! `{connections, failed, error?}`: joins every live connection of a user,
//! on every gateway, to a room (or takes them out). The backend decides,
//! so the token's `rooms` and the namespace's join hook do not apply (and a
//! refreshed token keeps the room); the room's `max_members` and the
//! connection's room limit do. It makes the user a member: publishing still
//! takes the token's `publish` permission. Each connection
//! hears `subscribed {room, epoch, seq, count}` (or `removed` with reason
//! `server`) and is then a member as after a join; the call returns once
//! the joins are done. Connections opened later are not subscribed.

use proto::{internal, pb};
use serde::{Deserialize, Serialize};

use super::{check_room, check_user, error_json, parse, render};
use crate::api::{Api, ApiError, Command};

/// `subscribe` (`true`) or `unsubscribe` (`false`): one order, two directions.
pub struct Subscription<const SUBSCRIBE: bool>(pub pb::SubscriptionCall);
pub type Subscribe = Subscription<true>;
pub type Unsubscribe = Subscription<false>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    user: String,
    room: String,
}

#[derive(Serialize)]
struct Out {
    connections: u32,
    failed: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

impl<const SUBSCRIBE: bool> Command for Subscription<SUBSCRIBE> {
    const NAME: &'static str = if SUBSCRIBE { "subscribe" } else { "unsubscribe" };
    type Output = pb::SubscriptionResult;

    fn target(&self) -> Option<String> {
        Some(format!("user {} room {}", self.0.user, self.0.room))
    }

    async fn run(self, api: &Api) -> Result<pb::SubscriptionResult, ApiError> {
        check_user(&self.0.user)?;
        check_room(&self.0.room)?;
        let order = internal::Subscription { user: self.0.user, room: self.0.room };
        let kind = match SUBSCRIBE {
            true => internal::gateway_command::Kind::Subscribe(order),
            false => internal::gateway_command::Kind::Unsubscribe(order),
        };
        let reply = api.each_gateway(internal::GatewayCommand { kind: Some(kind) }).await?;
        Ok(pb::SubscriptionResult { connections: reply.connections, failed: reply.failed, error: reply.error })
    }

    fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let j: Json = parse(body)?;
        Ok(Self(pb::SubscriptionCall { user: j.user, room: j.room }))
    }

    fn to_json(r: &pb::SubscriptionResult) -> Vec<u8> {
        let error = r.error.as_ref().map(error_json);
        render(&Out { connections: r.connections, failed: r.failed, error })
    }
}
