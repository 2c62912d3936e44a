//! The server API for backends: `Rooms` on every router.
//!
//! Any router accepts any call and forwards it to the room's owner with the
//! same router client gateways use, so a backend can talk to whichever
//! router is nearest.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use proto::client::ErrorCode;
use proto::internal::{self, router_reply, router_request};
use proto::pb;
use proto::subject;
use tonic::{Request, Response, Status};

use crate::client::{CallError, RouterClient};
use crate::owner::OwnerStats;

/// The `Rooms` service of one router.
pub struct RoomsApi {
    id: String,
    client: RouterClient,
    stats: Arc<OwnerStats>,
}

impl RoomsApi {
    pub fn new(id: String, client: RouterClient, stats: Arc<OwnerStats>) -> Self {
        Self { id, client, stats }
    }

    async fn call(&self, room: &str, kind: router_request::Kind) -> Result<router_reply::Kind, Status> {
        if !subject::valid_id(room) {
            return Err(Status::invalid_argument(format!("invalid_room: {}", subject::INVALID_ROOM)));
        }
        self.client.call(room, kind).await.map_err(|e| match e {
            CallError::Unavailable => Status::unavailable("unavailable: room owner unavailable; retry"),
            CallError::Refused { code, message } => status(code, &message),
        })
    }
}

fn status(code: ErrorCode, message: &str) -> Status {
    let text = format!("{code}: {message}");
    match code {
        ErrorCode::Unavailable => Status::unavailable(text),
        ErrorCode::Internal => Status::internal(text),
        _ => Status::invalid_argument(text),
    }
}

fn unexpected() -> Status {
    Status::internal("internal: unexpected reply from owner")
}

#[tonic::async_trait]
impl crate::rpc::rooms_server::Rooms for RoomsApi {
    async fn publish(&self, request: Request<pb::PublishCall>) -> Result<Response<pb::PublishResult>, Status> {
        let call = request.into_inner();
        if call.data.len() > proto::client::MAX_DATA_BYTES {
            return Err(status(ErrorCode::TooLarge, "data is over 64 KiB"));
        }
        if serde_json::from_slice::<serde::de::IgnoredAny>(&call.data).is_err() {
            return Err(status(ErrorCode::BadRequest, "data must be JSON text"));
        }
        if !call.from.is_empty() && !subject::valid_id(&call.from) {
            return Err(status(ErrorCode::BadRequest, "invalid `from`"));
        }
        let kind = router_request::Kind::Publish(internal::PublishRequest { from: call.from, data: call.data });
        match self.call(&call.room, kind).await? {
            router_reply::Kind::Publish(p) => Ok(Response::new(pb::PublishResult { seq: p.seq })),
            _ => Err(unexpected()),
        }
    }

    async fn members(&self, request: Request<pb::MembersCall>) -> Result<Response<pb::MembersResult>, Status> {
        let call = request.into_inner();
        let kind = router_request::Kind::Members(internal::MembersRequest { limit: call.limit.max(1), max_bytes: 0 });
        match self.call(&call.room, kind).await? {
            router_reply::Kind::Members(m) => {
                Ok(Response::new(pb::MembersResult { members: m.members, count: m.count, truncated: m.truncated }))
            }
            _ => Err(unexpected()),
        }
    }

    async fn history(&self, request: Request<pb::HistoryCall>) -> Result<Response<pb::HistoryResult>, Status> {
        let call = request.into_inner();
        let kind = router_request::Kind::History(internal::HistoryRequest { since: call.since, limit: call.limit });
        match self.call(&call.room, kind).await? {
            router_reply::Kind::History(h) => Ok(Response::new(pb::HistoryResult {
                epoch: h.epoch,
                seq: h.seq,
                recovered: h.recovered,
                messages: h
                    .messages
                    .into_iter()
                    .map(|m| pb::HistoryMessage { seq: m.seq, from: m.from, data: m.data, ts: m.ts })
                    .collect(),
            })),
            _ => Err(unexpected()),
        }
    }

    async fn stats(&self, _: Request<pb::StatsCall>) -> Result<Response<pb::RouterStats>, Status> {
        let ring = self.client.membership().ring();
        Ok(Response::new(pb::RouterStats {
            id: self.id.clone(),
            ring_size: ring.len() as u32,
            ring_version: ring.version(),
            rooms: self.stats.rooms.load(Ordering::Relaxed) as u64,
            members: self.stats.members.load(Ordering::Relaxed) as u64,
        }))
    }
}
