//! The server API for backends: one set of methods, served as HTTP/JSON on
//! `--api-listen` ([`http`]) and as gRPC `Rooms` ([`grpc`]), by every
//! router and by the standalone gateway.
//!
//! Any router accepts any call. Room calls go to the room's owner with the
//! router client gateways use; `rooms` and `stats` ask every router;
//! `disconnect`, `subscribe` and `unsubscribe` go to every live gateway
//! ([`crate::gateways`]) on `sb.gateway.<id>`; `send` and `presence` reach
//! presence (`--presence-url`). Each method is one [`Command`] in [`cmd`]:
//! its checks, its work and its JSON form, so both transports behave the
//! same. Calls that change state are logged (method, caller, target; never
//! payloads or tokens) under the `switchboard::audit` target.

pub mod cmd;
mod error;
pub mod grpc;
pub mod http;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{Bus, BusError};
use bytes::Bytes;
use presence::PresenceClient;
use prost::Message as _;
use proto::client::ErrorCode;
use proto::internal::{self, router_reply, router_request};
use proto::subject;

pub use error::ApiError;

use crate::client::{CallError, RouterClient};
use crate::gateways::Gateways;
use crate::owner::OwnerStats;

/// How long a gateway has to carry out an order (a subscribe waits for its
/// joins, which the gateway bounds at 5 s).
const GATEWAY_TIMEOUT: Duration = Duration::from_secs(6);
/// How long a router has to list its rooms.
const LIST_TIMEOUT: Duration = Duration::from_secs(2);

/// What the API needs to reach the cluster.
pub struct Api {
    pub(crate) id: String,
    pub(crate) router: RouterClient,
    pub(crate) bus: Bus,
    /// `None` on a router started without `--presence-url`.
    pub(crate) presence: Option<PresenceClient>,
    pub(crate) gateways: Gateways,
    pub(crate) stats: Arc<OwnerStats>,
}

/// Who called, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub transport: &'static str,
    pub addr: Option<SocketAddr>,
}

/// One API method: its call type checks itself, does its work, and reads
/// and writes its JSON form.
pub trait Command: Sized + Send + 'static {
    /// The method's name: `POST /api/<NAME>`.
    const NAME: &'static str;
    type Output: Send;

    /// The room or user a state-changing call acts on (audited); `None` for reads.
    fn target(&self) -> Option<String> {
        None
    }

    fn run(self, api: &Api) -> impl Future<Output = Result<Self::Output, ApiError>> + Send;

    /// The call from a JSON request body.
    fn from_json(body: &[u8]) -> Result<Self, ApiError>;

    /// The result as a JSON response body.
    fn to_json(output: &Self::Output) -> Vec<u8>;
}

impl Api {
    /// The API of router `id`; `presence` is needed by `send` (for offline
    /// users) and `presence`.
    pub async fn new(
        id: String,
        router: RouterClient,
        bus: Bus,
        presence: Option<PresenceClient>,
        stats: Arc<OwnerStats>,
    ) -> Result<Self, BusError> {
        let gateways = Gateways::start(&bus).await?;
        Ok(Self { id, router, bus, presence, gateways, stats })
    }

    /// Runs `call`, counting it and auditing it when it changes state.
    pub async fn call<C: Command>(&self, caller: &Caller, call: C) -> Result<C::Output, ApiError> {
        let target = call.target();
        let started = Instant::now();
        let result = call.run(self).await;
        let outcome = result.as_ref().err().map_or("ok", |e| e.code.as_str());
        crate::metrics::api_call(C::NAME, outcome, started.elapsed());
        if let Some(target) = target {
            let caller_addr = caller.addr.map(|a| a.to_string()).unwrap_or_default();
            tracing::info!(
                target: "switchboard::audit",
                method = C::NAME,
                transport = caller.transport,
                caller = caller_addr,
                target,
                outcome,
                "api call"
            );
        }
        result
    }

    /// Calls `room`'s owner.
    pub(crate) async fn owner(&self, room: &str, kind: router_request::Kind) -> Result<router_reply::Kind, ApiError> {
        self.router.call(room, kind).await.map_err(|e| match e {
            CallError::Unavailable => ApiError::unavailable("room owner unavailable; retry"),
            CallError::Refused { code, message } => ApiError::new(code, message),
        })
    }

    /// Gives `command` to every live gateway and adds up their answers.
    /// A gateway that does not answer fails the call: every order is safe
    /// to repeat.
    pub(crate) async fn each_gateway(
        &self,
        command: internal::GatewayCommand,
    ) -> Result<internal::GatewayCommandReply, ApiError> {
        let payload = Bytes::from(command.encode_to_vec());
        let asks = self.gateways.live().into_iter().map(|id| {
            let payload = payload.clone();
            async move { (self.bus.request(subject::gateway(&id), payload, GATEWAY_TIMEOUT).await, id) }
        });
        let mut sum = internal::GatewayCommandReply::default();
        for (answer, id) in futures::future::join_all(asks).await {
            let reply = match answer {
                Ok(bytes) => internal::GatewayCommandReply::decode(bytes)
                    .map_err(|_| ApiError::new(ErrorCode::Internal, "undecodable gateway answer"))?,
                // It went away since it last announced itself.
                Err(BusError::NoResponders) => continue,
                Err(_) => {
                    return Err(ApiError::unavailable(format!(
                        "gateway {id} did not answer; the call is safe to retry"
                    )))
                }
            };
            sum.connections += reply.connections;
            sum.failed += reply.failed;
            if sum.error.is_none() {
                sum.error = reply.error;
            }
        }
        Ok(sum)
    }

    /// Asks every live router for its page of rooms.
    pub(crate) async fn each_router(&self, list: internal::ListRequest) -> Result<Vec<internal::RoomList>, ApiError> {
        let routers = self.router.membership().view().alive;
        let request = internal::RouterRequest {
            ring_version: self.router.membership().ring().version(),
            room: String::new(),
            kind: Some(router_request::Kind::List(list)),
        };
        let payload = Bytes::from(request.encode_to_vec());
        let asks = routers.iter().map(|id| self.bus.request(subject::router(id), payload.clone(), LIST_TIMEOUT));
        let mut lists = Vec::with_capacity(routers.len());
        for (answer, id) in futures::future::join_all(asks).await.into_iter().zip(&routers) {
            match answer.ok().and_then(|b| crate::client::decode_reply(&b)) {
                Some(router_reply::Kind::List(l)) => lists.push(l),
                _ => return Err(ApiError::unavailable(format!("router {id} did not list its rooms; retry"))),
            }
        }
        Ok(lists)
    }
}
