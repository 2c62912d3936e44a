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

use super::{check_room, check_user, parse, render};
use crate::api::{Api, ApiError, Command};

/// `subscribe`.
pub struct Subscribe(pub pb::SubscriptionCall);
/// `unsubscribe`.
pub struct Unsubscribe(pub pb::SubscriptionCall);

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

fn call_of(body: &[u8]) -> Result<pb::SubscriptionCall, ApiError> {
    let j: Json = parse(body)?;
    Ok(pb::SubscriptionCall { user: j.user, room: j.room })
}

async fn order(api: &Api, kind: internal::gateway_command::Kind) -> Result<pb::SubscriptionResult, ApiError> {
    let reply = api.each_gateway(internal::GatewayCommand { kind: Some(kind) }).await?;
    Ok(pb::SubscriptionResult { connections: reply.connections, failed: reply.failed, error: reply.error })
}

fn checked(call: pb::SubscriptionCall) -> Result<internal::Subscription, ApiError> {
    check_user(&call.user)?;
    check_room(&call.room)?;
    Ok(internal::Subscription { user: call.user, room: call.room })
}

fn json_of(r: &pb::SubscriptionResult) -> Vec<u8> {
    let error = r.error.as_ref().map(|e| serde_json::json!({"code": e.code, "message": e.message}));
    render(&Out { connections: r.connections, failed: r.failed, error })
}

impl Command for Subscribe {
    const NAME: &'static str = "subscribe";
    type Output = pb::SubscriptionResult;

    fn target(&self) -> Option<String> {
        Some(format!("user {} room {}", self.0.user, self.0.room))
    }

    async fn run(self, api: &Api) -> Result<pb::SubscriptionResult, ApiError> {
        order(api, internal::gateway_command::Kind::Subscribe(checked(self.0)?)).await
    }

    fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        call_of(body).map(Self)
    }

    fn to_json(r: &pb::SubscriptionResult) -> Vec<u8> {
        json_of(r)
    }
}

impl Command for Unsubscribe {
    const NAME: &'static str = "unsubscribe";
    type Output = pb::SubscriptionResult;

    fn target(&self) -> Option<String> {
        Some(format!("user {} room {}", self.0.user, self.0.room))
    }

    async fn run(self, api: &Api) -> Result<pb::SubscriptionResult, ApiError> {
        order(api, internal::gateway_command::Kind::Unsubscribe(checked(self.0)?)).await
    }

    fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        call_of(body).map(Self)
    }

    fn to_json(r: &pb::SubscriptionResult) -> Vec<u8> {
        json_of(r)
    }
}
