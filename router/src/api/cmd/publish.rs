//! `publish {room, data, from?, idempotency_key?}` → `{seq, duplicate}`:
//! a message into a room, sequenced by its owner. Namespace rules for
//! clients (`publish = "none"`) do not apply: the backend may publish
//! anywhere. A repeated `idempotency_key` (same room and `from`) within the
//! room's history window returns the first message's seq and delivers
//! nothing.

use proto::internal::{self, router_reply, router_request};
use proto::pb;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{check_data, check_room, data_of, parse, render, unexpected};
use crate::api::{Api, ApiError, Command};

use proto::client::MAX_IDEMPOTENCY_KEY;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    room: String,
    data: Box<RawValue>,
    #[serde(default)]
    from: String,
    #[serde(default)]
    idempotency_key: String,
}

#[derive(Serialize)]
struct Out {
    seq: u64,
    duplicate: bool,
}

impl Command for pb::PublishCall {
    const NAME: &'static str = "publish";
    type Output = pb::PublishResult;

    fn target(&self) -> Option<String> {
        Some(format!("room {}", self.room))
    }

    async fn run(self, api: &Api) -> Result<pb::PublishResult, ApiError> {
        check_room(&self.room)?;
        check_data(&self.data)?;
        if !self.from.is_empty() {
            super::check_user(&self.from).map_err(|_| ApiError::bad_request("invalid `from`"))?;
        }
        if self.idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
            return Err(ApiError::bad_request("idempotency_key is over 64 bytes"));
        }
        let request =
            internal::PublishRequest { from: self.from, data: self.data, idempotency_key: self.idempotency_key };
        match api.owner(&self.room, router_request::Kind::Publish(request)).await? {
            router_reply::Kind::Publish(p) => Ok(pb::PublishResult { seq: p.seq, duplicate: p.duplicate }),
            _ => unexpected(),
        }
    }

    fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let j: Json = parse(body)?;
        Ok(Self { room: j.room, data: data_of(j.data), from: j.from, idempotency_key: j.idempotency_key })
    }

    fn to_json(r: &pb::PublishResult) -> Vec<u8> {
        render(&Out { seq: r.seq, duplicate: r.duplicate })
    }
}
