//! Calling a room's owner: ring lookup, `NotOwner` retries, and a time bound.
//!
//! Used by gateways for every room operation and by the server API to forward
//! to the owner. Retries are bounded in time and then answered `unavailable`,
//! which clients treat as retryable. A publish whose owner did not answer is
//! not retried against the same owner: it may have been applied, and a blind
//! retry would deliver it twice.

use std::time::{Duration, Instant};

use bus::{Bus, BusError};
use bytes::Bytes;
use prost::Message as _;
use proto::client::ErrorCode;
use proto::internal::{self, router_reply, router_request};
use proto::subject;

use crate::membership::Membership;

/// Time bounds for one call.
#[derive(Debug, Clone, Copy)]
pub struct CallConfig {
    /// How long one attempt waits for the owner.
    pub attempt_timeout: Duration,
    /// How long a call may take in all, retries included.
    pub total_timeout: Duration,
}

impl Default for CallConfig {
    fn default() -> Self {
        Self { attempt_timeout: Duration::from_secs(1), total_timeout: Duration::from_secs(5) }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No owner answered in time; the client may retry.
    #[error("room owner unavailable")]
    Unavailable,
    /// The owner refused the request.
    #[error("{code}: {message}")]
    Refused { code: ErrorCode, message: String },
}

/// A handle for calling room owners; cheap to clone.
#[derive(Clone)]
pub struct RouterClient {
    bus: Bus,
    membership: Membership,
    config: CallConfig,
}

impl RouterClient {
    /// A client routing with `membership`'s ring.
    pub fn new(bus: Bus, membership: Membership, config: CallConfig) -> Self {
        Self { bus, membership, config }
    }

    /// The ring view this client routes with.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Sends `kind` for `room` to its owner and returns the owner's answer.
    pub async fn call(&self, room: &str, kind: router_request::Kind) -> Result<router_reply::Kind, CallError> {
        let deadline = Instant::now() + self.config.total_timeout;
        // A publish with an idempotency key may be sent again: the owner
        // answers a repeat with the first message's seq.
        let idempotent = match &kind {
            router_request::Kind::Publish(p) => !p.idempotency_key.is_empty(),
            _ => true,
        };
        let mut membership = self.membership.clone();
        let mut ring = membership.ring();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError::Unavailable);
            }
            let Some(owner) = ring.owner(room).map(str::to_owned) else {
                ring = membership.changed(left.min(Duration::from_millis(250))).await;
                continue;
            };
            let req = internal::RouterRequest {
                ring_version: ring.version(),
                room: room.to_owned(),
                kind: Some(kind.clone()),
            };
            let answer = self
                .bus
                .request(
                    subject::router(&owner),
                    Bytes::from(req.encode_to_vec()),
                    self.config.attempt_timeout.min(left),
                )
                .await;
            match answer {
                Ok(bytes) => match decode_reply(&bytes) {
                    Some(router_reply::Kind::NotOwner(_)) => {
                        // Our ring or theirs is stale: wait briefly for ours to move.
                        ring = membership.changed(left.min(Duration::from_millis(100))).await;
                    }
                    Some(router_reply::Kind::Error(e)) => {
                        let code = ErrorCode::parse(&e.code).unwrap_or(ErrorCode::Internal);
                        return Err(CallError::Refused { code, message: e.message });
                    }
                    Some(kind) => return Ok(kind),
                    None => {
                        return Err(CallError::Refused {
                            code: ErrorCode::Internal,
                            message: "undecodable reply from owner".into(),
                        })
                    }
                },
                Err(BusError::NoResponders) => {
                    // Delivered to nobody (the owner is gone): safe to retry
                    // once the ring has moved on.
                    ring = membership.changed(left.min(Duration::from_millis(250))).await;
                }
                Err(BusError::Timeout) if !idempotent => {
                    // Only retry where the owner has changed: the old one may have applied it.
                    let next = membership.changed(Duration::ZERO).await;
                    if next.owner(room) == Some(owner.as_str()) {
                        return Err(CallError::Unavailable);
                    }
                    ring = next;
                }
                Err(_) => {
                    ring = membership.changed(left.min(Duration::from_millis(250))).await;
                }
            }
        }
    }
}

/// An owner's answer as its callers read it: the reply's kind, or `None`
/// when the payload is not a `RouterReply` or carries no kind (callers treat
/// both as an unusable answer). Bus payloads come from other processes, so
/// this must never panic, whatever the bytes.
pub fn decode_reply(payload: &[u8]) -> Option<router_reply::Kind> {
    internal::RouterReply::decode(payload).ok().and_then(|r| r.kind)
}
