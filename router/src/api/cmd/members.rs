//! `members {room, limit?}` → `{members: [{user, info, conns, read_seq}],
//! count, truncated}`: the room's users in id order (at most `limit`, and
//! at most the owner's cap of 100), with the exact count.

use proto::internal::{self, router_reply, router_request};
use proto::pb;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{check_room, parse, raw, render, unexpected};
use crate::api::{Api, ApiError, Command};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    room: String,
    #[serde(default)]
    limit: u32,
}

#[derive(Serialize)]
struct Member<'a> {
    user: &'a str,
    info: &'a RawValue,
    conns: u32,
    read_seq: u64,
}

#[derive(Serialize)]
struct Out<'a> {
    members: Vec<Member<'a>>,
    count: u32,
    truncated: bool,
}

impl Command for pb::MembersCall {
    const NAME: &'static str = "members";
    type Output = pb::MembersResult;

    async fn run(self, api: &Api) -> Result<pb::MembersResult, ApiError> {
        check_room(&self.room)?;
        let limit = if self.limit == 0 { 100 } else { self.limit };
        let kind = router_request::Kind::Members(internal::MembersRequest { limit, max_bytes: 0 });
        match api.owner(&self.room, kind).await? {
            router_reply::Kind::Members(m) => {
                Ok(pb::MembersResult { members: m.members, count: m.count, truncated: m.truncated })
            }
            _ => unexpected(),
        }
    }

    fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let j: Json = parse(body)?;
        Ok(Self { room: j.room, limit: j.limit })
    }

    fn to_json(r: &pb::MembersResult) -> Vec<u8> {
        let members = r
            .members
            .iter()
            .map(|m| Member { user: &m.user, info: raw(&m.info), conns: m.conns, read_seq: m.read_seq })
            .collect();
        render(&Out { members, count: r.count, truncated: r.truncated })
    }
}
