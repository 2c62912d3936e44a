//! How a gateway reaches presence: over gRPC, or in-process when standalone.
//!
//! Both variants call the same `Presence` implementation, so a standalone
//! gateway gets exactly the semantics (validation included) of a cluster; the
//! local one merely skips the network.

use std::sync::Arc;
use std::time::Duration;

use crate::rpc::presence_server::Presence as _;
use proto::pb;
use shell::grpc::BearerToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::service::PresenceService;

/// Bound on connecting and on each call, so a dead presence service costs a
/// gateway a short wait, never a hang.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A handle to the presence service; cheap to clone.
#[derive(Clone)]
pub enum PresenceClient {
    /// The service in this process (`gateway --standalone`).
    Local(Arc<PresenceService>),
    /// A remote service over gRPC.
    Grpc(crate::rpc::presence_client::PresenceClient<InterceptedService<Channel, BearerToken>>),
}

impl PresenceClient {
    /// A client for a service in this process.
    pub fn local(service: Arc<PresenceService>) -> Self {
        Self::Local(service)
    }

    /// A gRPC client for `url` (e.g. `http://127.0.0.1:7070`) that presents
    /// `token` (none when empty). Connects on first use and reconnects by
    /// itself, so a gateway can start before presence does.
    pub fn connect_lazy(url: &str, token: &str) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())?.connect_timeout(TIMEOUT).timeout(TIMEOUT).connect_lazy();
        let token = BearerToken::new(token).map_err(|e| anyhow::anyhow!("--presence-token: {e}"))?;
        Ok(Self::Grpc(crate::rpc::presence_client::PresenceClient::with_interceptor(channel, token)))
    }

    /// Sends a gateway's session report.
    pub async fn report(&self, req: pb::ReportRequest) -> Result<pb::ReportReply, Status> {
        let reply = match self {
            Self::Local(service) => service.report(Request::new(req)).await?,
            Self::Grpc(client) => client.clone().report(req).await?,
        };
        Ok(reply.into_inner())
    }

    /// The presence of each of `users`, in order (at most
    /// [`MAX_USERS_PER_REQUEST`](crate::MAX_USERS_PER_REQUEST)).
    pub async fn query(&self, users: Vec<String>) -> Result<Vec<pb::UserPresence>, Status> {
        let req = pb::QueryRequest { users };
        let reply = match self {
            Self::Local(service) => service.query(Request::new(req)).await?,
            Self::Grpc(client) => client.clone().query(req).await?,
        };
        Ok(reply.into_inner().users)
    }
}

impl PresenceClient {
    /// Keeps a direct message for a user who had no live connection.
    pub async fn enqueue(&self, msg: pb::QueuedDirect) -> Result<pb::EnqueueReply, Status> {
        let reply = match self {
            Self::Local(service) => service.enqueue(Request::new(msg)).await?,
            Self::Grpc(client) => client.clone().enqueue(msg).await?,
        };
        Ok(reply.into_inner())
    }

    /// Takes `user`'s waiting direct messages, oldest first.
    pub async fn take_inbox(&self, user: &str) -> Result<Vec<pb::QueuedDirect>, Status> {
        let req = pb::TakeInboxRequest { user: user.to_owned() };
        let reply = match self {
            Self::Local(service) => service.take_inbox(Request::new(req)).await?,
            Self::Grpc(client) => client.clone().take_inbox(req).await?,
        };
        Ok(reply.into_inner().messages)
    }
}

impl std::fmt::Debug for PresenceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(service) => f.debug_tuple("Local").field(&service.instance()).finish(),
            Self::Grpc(_) => f.debug_tuple("Grpc").finish(),
        }
    }
}
