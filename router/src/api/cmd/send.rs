//! `send {user, data}` → `{delivered}`: a direct message from the server
//! (`from` is empty) to every connection of a user on every gateway; when
//! the user has none it waits in their inbox (`delivered: false`), which
//! needs presence (`--presence-url` on routers).

use presence::direct::SendError;
use proto::pb;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{check_data, check_user, data_of, parse, render};
use crate::api::{Api, ApiError, Command};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    user: String,
    data: Box<RawValue>,
}

#[derive(Serialize)]
struct Out {
    delivered: bool,
}

impl Command for pb::SendCall {
    const NAME: &'static str = "send";
    type Output = pb::SendResult;

    fn target(&self) -> Option<String> {
        Some(format!("user {}", self.user))
    }

    async fn run(self, api: &Api) -> Result<pb::SendResult, ApiError> {
        check_user(&self.user)?;
        check_data(&self.data)?;
        match presence::direct::send(&api.bus, api.presence.as_ref(), &self.user, "", self.data).await {
            Ok(delivered) => Ok(pb::SendResult { delivered }),
            Err(SendError::InboxUnavailable) if api.presence.is_none() => Err(ApiError::unavailable(
                "the user is offline and this router has no presence service (--presence-url) to keep the message",
            )),
            Err(e) => Err(ApiError::unavailable(e.to_string())),
        }
    }

    fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let j: Json = parse(body)?;
        Ok(Self { user: j.user, data: data_of(j.data) })
    }

    fn to_json(r: &pb::SendResult) -> Vec<u8> {
        render(&Out { delivered: r.delivered })
    }
}
