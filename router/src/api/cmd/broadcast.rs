//! `broadcast {rooms[], data}` → `{results: [{room, seq} | {room, error}]}`:
//! one message into each of up to [`MAX_ROOMS`] rooms, each sequenced by
//! its own owner, at most [`CONCURRENCY`] at a time. Every room id is
//! checked before anything is published; then each room succeeds or fails
//! on its own, in the order given.

use futures::StreamExt as _;
use proto::pb;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{check_data, check_room, data_of, error_json, parse, render};
use crate::api::{Api, ApiError, Command};

/// Most rooms in one call.
pub const MAX_ROOMS: usize = 1000;
/// Publishes in flight at once for one call.
const CONCURRENCY: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    rooms: Vec<String>,
    data: Box<RawValue>,
}

#[derive(Serialize)]
struct Outcome<'a> {
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

impl Command for pb::BroadcastCall {
    const NAME: &'static str = "broadcast";
    type Output = pb::BroadcastResult;

    fn target(&self) -> Option<String> {
        Some(format!("{} rooms", self.rooms.len()))
    }

    async fn run(self, api: &Api) -> Result<pb::BroadcastResult, ApiError> {
        if self.rooms.is_empty() || self.rooms.len() > MAX_ROOMS {
            return Err(ApiError::bad_request(format!("rooms must list 1 to {MAX_ROOMS} rooms")));
        }
        self.rooms.iter().try_for_each(|r| check_room(r))?;
        check_data(&self.data)?;
        let data = self.data;
        let publishes = self.rooms.into_iter().map(|room| {
            let call = pb::PublishCall { room: room.clone(), data: data.clone(), ..Default::default() };
            async move {
                match call.run(api).await {
                    Ok(r) => pb::BroadcastOutcome { room, seq: r.seq, error: None },
                    Err(e) => pb::BroadcastOutcome { room, seq: 0, error: Some(e.to_pb()) },
                }
            }
        });
        let results = futures::stream::iter(publishes).buffered(CONCURRENCY).collect().await;
        Ok(pb::BroadcastResult { results })
    }

    fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let j: Json = parse(body)?;
        Ok(Self { rooms: j.rooms, data: data_of(j.data) })
    }

    fn to_json(r: &pb::BroadcastResult) -> Vec<u8> {
        let results: Vec<Outcome> = r
            .results
            .iter()
            .map(|o| Outcome {
                room: &o.room,
                seq: o.error.is_none().then_some(o.seq),
                error: o.error.as_ref().map(error_json),
            })
            .collect();
        render(&serde_json::json!({ "results": results }))
    }
}
