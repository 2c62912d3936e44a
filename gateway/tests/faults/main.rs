//! Fault injection over a real local cluster (nats-server, presence, two
//! routers, two gateways as separate processes) with a chat load running.
//!
//! Every case asserts the same three things: no message acknowledged to a
//! publisher is lost for members that stay connected or resume within the
//! history window; every loss of continuity reaches clients as `resync`,
//! never silently; and service returns within the stated time.
//!
//! `SB_FAULT_ROUNDS=N` repeats each fault N times in one cluster (the long
//! version; run it with `--test-threads 1`).

#[path = "../support/mod.rs"]
mod support;

mod durable;
mod gateways;
mod presence;
mod routers;
mod services;
mod storm;

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadtest::scenario::reconnect::Reconnect;
use loadtest::scenario::{Protocol, Target};
use loadtest::stats::Stats;
use loadtest::token::SigningKey;
use proto::pb;
use serde_json::json;
use support::cluster::Cluster;
use support::load::{assert_flawless, assert_nothing_lost_outside, chat, outage, wait_rooms_serve, ROOMS};
use support::partition::Partition;
use support::*;

/// How many times each fault is injected (`SB_FAULT_ROUNDS`, default 1).
fn rounds() -> usize {
    std::env::var("SB_FAULT_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1)
}

/// Waits until `/readyz` of `admin` answers `want` (200 or 503); returns the body.
async fn wait_readyz(admin: &str, want: u16, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (status, body) = http_get(&format!("{admin}/readyz")).await;
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "{admin}/readyz never answered {want} within {limit:?}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resyncs the gateways sent, from their metrics.
async fn gateway_resyncs(cluster: &Cluster) -> f64 {
    let mut sum = 0.0;
    for g in &cluster.gateways {
        sum += metric(&g.metrics().await, "switchboard_gateway_resyncs_total");
    }
    sum
}

/// Waits until the owner lists all `members` members of every load room.
async fn wait_members_listed(cluster: &Cluster, members: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut api = cluster.rooms_api(0).await;
    for i in 0..ROOMS {
        loop {
            let call = pb::MembersCall { room: format!("chat-{i}"), limit: 10 };
            let count = api.members(call).await.map(|r| r.into_inner().count).unwrap_or(0);
            if count == members {
                break;
            }
            assert!(Instant::now() < deadline, "chat-{i} lists {count} members, not {members}, after {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
