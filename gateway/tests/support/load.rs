//! The chat load the cluster and fault tests run, and what they assert of it.

use std::ops::Range;
use std::time::{Duration, Instant};

use loadtest::chat::{Chat, ChatConfig, ChatReport};
use loadtest::token::SigningKey;
use proto::pb;

use super::cluster::Cluster;

/// Rooms of the load: `chat-0` … `chat-11`.
pub const ROOMS: usize = 12;

/// A chat load over every gateway of `cluster`: 12 rooms of 4 members, two
/// publishers each, a message every 100 ms per publisher.
pub async fn chat(cluster: &Cluster) -> Chat {
    Chat::start(ChatConfig {
        urls: cluster.urls(),
        key: SigningKey::hs256(cluster.secret.as_bytes().to_vec()),
        rooms: ROOMS,
        members_per_room: 4,
        publishers_per_room: 2,
        publish_every: Duration::from_millis(100),
        room_prefix: "chat-".into(),
    })
    .await
}

/// Asserts the load saw no gap, duplicate, silent epoch change or resync,
/// and that every acknowledged message reached every member.
pub fn assert_flawless(report: &ChatReport) {
    let errors: u64 = report.members.iter().map(|m| m.publish_errors).sum();
    let reconnects: u64 = report.members.iter().map(|m| m.reconnects).sum();
    eprintln!("acked {} publish errors {errors} reconnects {reconnects}", report.acked());
    assert!(report.acked() > 100, "too little traffic: {}", report.acked());
    assert_eq!(report.resyncs(), 0, "no client may see a resync");
    assert_nothing_lost_outside(report, &[]);
}

/// How long before a fault a message may be acknowledged and still be on
/// its way to the members: the owner publishes the event before it acks,
/// but NATS flushes each connection on its own, so a `kill -9` of NATS (or
/// a cut link) can drop an event whose ack got out first (CI saw one acked
/// 1 ms before the kill). Members learn of such a loss by `resync`.
const IN_FLIGHT: Duration = Duration::from_millis(250);

/// The stretch of a run in which an acknowledged message may be lost (with
/// `resync`): from just before the fault at `fault_at` until `until`.
pub fn outage(fault_at: Instant, until: Instant) -> Range<Instant> {
    fault_at - IN_FLIGHT..until
}

/// Asserts that no loss of continuity went unannounced, and that every
/// message acknowledged outside the `excused` outages reached every member.
pub fn assert_nothing_lost_outside(report: &ChatReport, excused: &[Range<Instant>]) {
    assert_eq!(report.continuity_errors(), Vec::<String>::new(), "losses are announced, never silent");
    let missing = report.missing_outside(excused);
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Waits until publishing to every room of the load succeeds again through
/// the last router's server API; returns how long that took.
pub async fn wait_rooms_serve(cluster: &Cluster, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut api = cluster.rooms_api(cluster.routers.len() - 1).await;
    for i in 0..ROOMS {
        loop {
            let call = pb::PublishCall {
                room: format!("chat-{i}"),
                data: b"\"probe\"".to_vec().into(),
                from: String::new(),
                ..Default::default()
            };
            if api.publish(call).await.is_ok() {
                break;
            }
            assert!(started.elapsed() < limit, "chat-{i} did not serve again within {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    started.elapsed()
}
