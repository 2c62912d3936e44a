//! `history {room, since?, limit?, cursor?}` → `{epoch, seq, recovered,
//! messages: [{seq, from, data, ts}], cursor?}`: a room's retained
//! messages, oldest first. Without `since` it starts at the latest `limit`;
//! with `since: {epoch, seq}` it continues after that position
//! (`recovered: false` when the history no longer reaches back so far).
//! Pages hold at most `limit` (1–1000, default 100) messages and what fits
//! one reply; `cursor`, when present, fetches the next page.

use proto::internal::{self, router_reply, router_request};
use proto::pb;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{check_room, parse, raw, render, unexpected};
use crate::api::{Api, ApiError, Command};

/// Most messages in one page.
pub const MAX_LIMIT: u32 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    room: String,
    since: Option<Since>,
    #[serde(default)]
    limit: u32,
    #[serde(default)]
    cursor: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Since {
    epoch: String,
    seq: u64,
}

#[derive(Serialize)]
struct Message<'a> {
    seq: u64,
    from: &'a str,
    data: &'a RawValue,
    ts: i64,
}

#[derive(Serialize)]
struct Out<'a> {
    epoch: &'a str,
    seq: u64,
    recovered: bool,
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "str::is_empty")]
    cursor: &'a str,
}

/// A page's cursor: the position of its last message.
fn cursor_of(epoch: &str, seq: u64) -> String {
    format!("{epoch}:{seq}")
}

fn since_of(cursor: &str) -> Result<pb::Since, ApiError> {
    let bad = || ApiError::bad_request("invalid cursor");
    let (epoch, seq) = cursor.rsplit_once(':').ok_or_else(bad)?;
    Ok(pb::Since { epoch: epoch.to_owned(), seq: seq.parse().map_err(|_| bad())? })
}

impl Command for pb::HistoryCall {
    const NAME: &'static str = "history";
    type Output = pb::HistoryResult;

    async fn run(self, api: &Api) -> Result<pb::HistoryResult, ApiError> {
        check_room(&self.room)?;
        let limit = match self.limit {
            0 => 100,
            n if n > MAX_LIMIT => return Err(ApiError::bad_request(format!("limit is at most {MAX_LIMIT}"))),
            n => n,
        };
        let since = if self.cursor.is_empty() { self.since } else { Some(since_of(&self.cursor)?) };
        // After a position, one more than asked: whether another page follows.
        let asked = if since.is_some() { limit + 1 } else { limit };
        let kind = router_request::Kind::History(internal::HistoryRequest { since, limit: asked });
        let router_reply::Kind::History(mut h) = api.owner(&self.room, kind).await? else { return unexpected() };
        let more = h.truncated || h.messages.len() > limit as usize;
        h.messages.truncate(limit as usize);
        let cursor = match h.messages.last() {
            Some(last) if more => cursor_of(&h.epoch, last.seq),
            _ => String::new(),
        };
        let messages =
            h.messages.into_iter().map(|m| pb::HistoryMessage { seq: m.seq, from: m.from, data: m.data, ts: m.ts });
        Ok(pb::HistoryResult {
            epoch: h.epoch,
            seq: h.seq,
            recovered: h.recovered,
            messages: messages.collect(),
            cursor,
        })
    }

    fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let j: Json = parse(body)?;
        let since = j.since.map(|s| pb::Since { epoch: s.epoch, seq: s.seq });
        Ok(Self { room: j.room, since, limit: j.limit, cursor: j.cursor })
    }

    fn to_json(r: &pb::HistoryResult) -> Vec<u8> {
        let messages =
            r.messages.iter().map(|m| Message { seq: m.seq, from: &m.from, data: raw(&m.data), ts: m.ts }).collect();
        render(&Out { epoch: &r.epoch, seq: r.seq, recovered: r.recovered, messages, cursor: &r.cursor })
    }
}
