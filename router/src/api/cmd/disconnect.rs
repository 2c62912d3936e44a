//! `disconnect {user, code?, reason?}` → `{closed}`: closes every
//! connection of a user on every gateway, with `code` (default 1000; 1001,
//! 1008, 1011, 1013 or 4000–4999) and `reason`. A code of 4500 or above
//! tells clients not to reconnect with the same credentials (a ban).

use proto::client::close;
use proto::{internal, pb};
use serde::{Deserialize, Serialize};

use super::{check_user, parse, render};
use crate::api::{Api, ApiError, Command};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    user: String,
    #[serde(default)]
    code: u32,
    #[serde(default)]
    reason: String,
}

#[derive(Serialize)]
struct Out {
    closed: u64,
}

impl Command for pb::DisconnectUserCall {
    const NAME: &'static str = "disconnect";
    type Output = pb::DisconnectResult;

    fn target(&self) -> Option<String> {
        Some(format!("user {}", self.user))
    }

    async fn run(self, api: &Api) -> Result<pb::DisconnectResult, ApiError> {
        check_user(&self.user)?;
        let code = if self.code == 0 { close::NORMAL as u32 } else { self.code };
        if !u16::try_from(code).is_ok_and(close::operator_may_send) {
            return Err(ApiError::bad_request("code must be 1000, 1001, 1008, 1011, 1013 or 4000-4999"));
        }
        if self.reason.len() > close::MAX_REASON_BYTES {
            return Err(ApiError::bad_request("reason is over 123 bytes"));
        }
        let order = internal::DisconnectUser { user: self.user, code, reason: self.reason };
        let kind = internal::gateway_command::Kind::Disconnect(order);
        let reply = api.each_gateway(internal::GatewayCommand { kind: Some(kind) }).await?;
        Ok(pb::DisconnectResult { closed: reply.connections.into() })
    }

    fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let j: Json = parse(body)?;
        Ok(Self { user: j.user, code: j.code, reason: j.reason })
    }

    fn to_json(r: &pb::DisconnectResult) -> Vec<u8> {
        render(&Out { closed: r.closed })
    }
}
