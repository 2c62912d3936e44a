//! `rooms {prefix?, limit?, cursor?}` → `{rooms: [{room, users, seq}],
//! cursor?}`: the cluster's rooms (those with members or retained history)
//! in id order, `limit` (1–1000, default 100) per page. Every router lists
//! its own after the cursor (the last id of the previous page), and the
//! pages are merged: while no room moves between routers, paging returns
//! each room exactly once.

use proto::{internal, pb};
use serde::{Deserialize, Serialize};

use super::{parse, render};
use crate::api::{Api, ApiError, Command};

/// Most rooms in one page.
pub const MAX_LIMIT: u32 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    limit: u32,
    #[serde(default)]
    cursor: String,
}

#[derive(Serialize)]
struct Room<'a> {
    room: &'a str,
    users: u32,
    seq: u64,
}

#[derive(Serialize)]
struct Out<'a> {
    rooms: Vec<Room<'a>>,
    #[serde(skip_serializing_if = "str::is_empty")]
    cursor: &'a str,
}

/// A prefix may be empty, or the start of a room id.
fn valid_prefix(prefix: &str) -> bool {
    prefix.is_empty() || proto::subject::valid_id(prefix)
}

impl Command for pb::RoomsCall {
    const NAME: &'static str = "rooms";
    type Output = pb::RoomsResult;

    async fn run(self, api: &Api) -> Result<pb::RoomsResult, ApiError> {
        let limit = match self.limit {
            0 => 100,
            n if n > MAX_LIMIT => return Err(ApiError::bad_request(format!("limit is at most {MAX_LIMIT}"))),
            n => n,
        };
        if !valid_prefix(&self.prefix) {
            return Err(ApiError::bad_request("invalid prefix"));
        }
        if !valid_prefix(&self.cursor) {
            return Err(ApiError::bad_request("invalid cursor"));
        }
        let list = internal::ListRequest { prefix: self.prefix, after: self.cursor, limit };
        let lists = api.each_router(list).await?;
        let more = lists.iter().any(|l| l.more);
        let mut rooms: Vec<pb::RoomInfo> = lists.into_iter().flat_map(|l| l.rooms).collect();
        rooms.sort_unstable_by(|a, b| a.room.cmp(&b.room));
        // A room caught mid-handoff may be listed by both routers.
        rooms.dedup_by(|a, b| a.room == b.room);
        let more = more || rooms.len() > limit as usize;
        rooms.truncate(limit as usize);
        let cursor = match rooms.last() {
            Some(last) if more => last.room.clone(),
            _ => String::new(),
        };
        Ok(pb::RoomsResult { rooms, cursor })
    }

    fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let j: Json = parse(body)?;
        Ok(Self { prefix: j.prefix, limit: j.limit, cursor: j.cursor })
    }

    fn to_json(r: &pb::RoomsResult) -> Vec<u8> {
        let rooms = r.rooms.iter().map(|i| Room { room: &i.room, users: i.users, seq: i.seq }).collect();
        render(&Out { rooms, cursor: &r.cursor })
    }
}
