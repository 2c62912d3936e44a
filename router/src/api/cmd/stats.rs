//! `stats {}` → this router's ring and rooms, the live gateways, and the
//! rooms and member connections of every router together.

use std::sync::atomic::Ordering;

use proto::{internal, pb};
use serde::Deserialize;

use super::{parse, render};
use crate::api::{Api, ApiError, Command};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {}

impl Command for pb::StatsCall {
    const NAME: &'static str = "stats";
    type Output = pb::RouterStats;

    async fn run(self, api: &Api) -> Result<pb::RouterStats, ApiError> {
        let ring = api.router.membership().ring();
        // Counts only: an empty page from each router.
        let lists = api.each_router(internal::ListRequest { limit: 0, ..Default::default() }).await?;
        Ok(pb::RouterStats {
            id: api.id.clone(),
            ring_size: ring.len() as u32,
            ring_version: ring.version(),
            rooms: api.stats.rooms.load(Ordering::Relaxed) as u64,
            members: api.stats.members.load(Ordering::Relaxed) as u64,
            gateways: api.gateways.live().len() as u32,
            cluster_rooms: lists.iter().map(|l| l.total_rooms).sum(),
            cluster_members: lists.iter().map(|l| l.total_members).sum(),
        })
    }

    fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        parse::<Json>(body).map(|_| Self {})
    }

    fn to_json(r: &pb::RouterStats) -> Vec<u8> {
        render(&serde_json::json!({
            "id": r.id,
            "ring_size": r.ring_size,
            "ring_version": r.ring_version,
            "rooms": r.rooms,
            "members": r.members,
            "gateways": r.gateways,
            "cluster_rooms": r.cluster_rooms,
            "cluster_members": r.cluster_members,
        }))
    }
}
