//! How a gateway reaches presence: over gRPC, or in-process when standalone,
//! or spread over [`Replicas`] by user.
//!
//! Every variant ends in the same `Presence` implementation, so a standalone
//! gateway gets exactly the semantics (validation included) of a cluster; the
//! local one merely skips the network.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::rpc::presence_server::Presence as _;
use proto::pb;
use shell::grpc::BearerToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::replicas::{Replicas, Target};
use crate::service::PresenceService;
use bus::ring::Ring;

/// Bound on connecting and on each call, so a dead presence service costs a
/// gateway a short wait, never a hang.
const TIMEOUT: Duration = Duration::from_secs(2);

/// How a gRPC client calls presence: the bearer token it presents (none
/// when empty) and, with `--tls-ca`, TLS (then `http://` URLs and replica
/// addresses are called as `https://`).
#[derive(Clone, Debug, Default)]
pub struct Dial {
    pub token: String,
    pub tls: Option<ClientTlsConfig>,
}

impl Dial {
    /// A dial with `token` and no TLS.
    pub fn token(token: &str) -> Self {
        Self { token: token.to_owned(), tls: None }
    }

    /// `url` (or a bare `host:port`) with the scheme this dial speaks.
    pub fn url(&self, url: &str) -> String {
        let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or(url);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{rest}")
    }
}

/// A handle to the presence service; cheap to clone.
#[derive(Clone)]
pub enum PresenceClient {
    /// The service in this process (`gateway --standalone`).
    Local(Arc<PresenceService>),
    /// A remote service over gRPC.
    Grpc(crate::rpc::presence_client::PresenceClient<InterceptedService<Channel, BearerToken>>),
    /// Replicas that split the users: each call goes to the user's replica.
    Replicas(Arc<Replicas>),
}

impl PresenceClient {
    /// A client for a service in this process.
    pub fn local(service: Arc<PresenceService>) -> Self {
        Self::Local(service)
    }

    /// A gRPC client for `url` (e.g. `http://127.0.0.1:7070`) called as
    /// `dial` says. Connects on first use and reconnects by itself, so a
    /// gateway can start before presence does.
    pub fn connect_lazy(url: &str, dial: &Dial) -> anyhow::Result<Self> {
        let mut endpoint = Endpoint::from_shared(dial.url(url))?.connect_timeout(TIMEOUT).timeout(TIMEOUT);
        if let Some(tls) = &dial.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        let token = BearerToken::new(&dial.token).map_err(|e| anyhow::anyhow!("--presence-token: {e}"))?;
        Ok(Self::Grpc(crate::rpc::presence_client::PresenceClient::with_interceptor(endpoint.connect_lazy(), token)))
    }

    /// A client for presence in a cluster: `url` (`--presence-url`) is the
    /// first contact, and replicas heard on `bus` take over by user (the
    /// ring's size shown in the gauge `gauge`), all called as `dial` says.
    pub async fn cluster(bus: &bus::Bus, url: &str, dial: Dial, gauge: &'static str) -> anyhow::Result<Self> {
        let first = Self::connect_lazy(url, &dial)?;
        Ok(Self::Replicas(Arc::new(Replicas::start(bus, first, dial, gauge).await?)))
    }

    /// Where reports go: every replica (each gets its users' sessions), or
    /// this one service.
    pub fn targets(&self) -> Vec<Target> {
        match self {
            Self::Replicas(replicas) => replicas.targets(),
            _ => vec![Target { id: Arc::from(""), client: self.clone() }],
        }
    }

    /// The replicas' ring (none for a single service): which target id
    /// owns a user (see [`owner`]), and a version that changes exactly when
    /// users may have moved.
    pub fn ring(&self) -> Option<Arc<Ring>> {
        match self {
            Self::Replicas(replicas) => Some(replicas.ring()),
            _ => None,
        }
    }

    /// The target that owns `user`.
    pub fn route(&self, user: &str) -> Target {
        match self {
            Self::Replicas(replicas) => replicas.route(user),
            _ => Target { id: Arc::from(""), client: self.clone() },
        }
    }

    /// Sends a gateway's session report to this one service. A report
    /// names one lease, so replicas are reported to through
    /// [`targets`](Self::targets), each with its own users.
    pub async fn report(&self, req: pb::ReportRequest) -> Result<pb::ReportReply, Status> {
        let reply = match self {
            Self::Local(service) => service.report(Request::new(req)).await?,
            Self::Grpc(client) => client.clone().report(req).await?,
            Self::Replicas(_) => return Err(Status::internal("a report goes to one replica: use targets()")),
        };
        Ok(reply.into_inner())
    }

    /// The presence of each of `users`, in order (at most
    /// [`MAX_USERS_PER_REQUEST`](crate::MAX_USERS_PER_REQUEST)), asking
    /// each user's replica; fails if any replica does.
    pub async fn query(&self, users: Vec<String>) -> Result<Vec<pb::UserPresence>, Status> {
        let reply = match self {
            Self::Local(service) => service.query(Request::new(pb::QueryRequest { users })).await?,
            Self::Grpc(client) => client.clone().query(pb::QueryRequest { users }).await?,
            Self::Replicas(replicas) => return query_split(replicas, users).await,
        };
        Ok(reply.into_inner().users)
    }
}

/// The id of the target that owns `user` on `ring`: "" for the first
/// contact (no ring, or an empty one).
pub fn owner<'a>(ring: Option<&'a Ring>, user: &str) -> &'a str {
    ring.and_then(|r| r.owner(user)).unwrap_or("")
}

/// Asks each replica about its users at once and puts the answers back in
/// the order asked.
async fn query_split(replicas: &Replicas, users: Vec<String>) -> Result<Vec<pb::UserPresence>, Status> {
    let mut groups: HashMap<Arc<str>, (PresenceClient, Vec<usize>, Vec<String>)> = HashMap::new();
    for (i, user) in users.iter().enumerate() {
        let target = replicas.route(user);
        let group = groups.entry(target.id).or_insert_with(|| (target.client, Vec::new(), Vec::new()));
        group.1.push(i);
        group.2.push(user.clone());
    }
    let asks = groups.into_values().map(|(client, at, users)| async move { (at, client.query(users).await) });
    let mut answer = vec![pb::UserPresence::default(); users.len()];
    for (at, part) in futures::future::join_all(asks).await {
        for (i, user) in at.into_iter().zip(part?) {
            answer[i] = user;
        }
    }
    Ok(answer)
}

impl PresenceClient {
    /// Keeps a direct message for a user who had no live connection (at
    /// the recipient's replica).
    pub async fn enqueue(&self, msg: pb::QueuedDirect) -> Result<pb::EnqueueReply, Status> {
        let reply = match self {
            Self::Local(service) => service.enqueue(Request::new(msg)).await?,
            Self::Grpc(client) => client.clone().enqueue(msg).await?,
            Self::Replicas(replicas) => return Box::pin(replicas.route(&msg.to).client.enqueue(msg)).await,
        };
        Ok(reply.into_inner())
    }

    /// The gateways holding a live session of `user` (at the user's replica).
    pub async fn locate(&self, user: &str) -> Result<Vec<String>, Status> {
        let req = pb::LocateRequest { user: user.to_owned() };
        let reply = match self {
            Self::Local(service) => service.locate(Request::new(req)).await?,
            Self::Grpc(client) => client.clone().locate(req).await?,
            Self::Replicas(replicas) => return Box::pin(replicas.route(user).client.locate(user)).await,
        };
        Ok(reply.into_inner().gateways)
    }

    /// Takes `user`'s waiting direct messages, oldest first.
    pub async fn take_inbox(&self, user: &str) -> Result<Vec<pb::QueuedDirect>, Status> {
        let req = pb::TakeInboxRequest { user: user.to_owned() };
        let reply = match self {
            Self::Local(service) => service.take_inbox(Request::new(req)).await?,
            Self::Grpc(client) => client.clone().take_inbox(req).await?,
            Self::Replicas(replicas) => return Box::pin(replicas.route(user).client.take_inbox(user)).await,
        };
        Ok(reply.into_inner().messages)
    }
}

impl std::fmt::Debug for PresenceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(service) => f.debug_tuple("Local").field(&service.instance()).finish(),
            Self::Grpc(_) => f.debug_tuple("Grpc").finish(),
            Self::Replicas(_) => f.debug_tuple("Replicas").finish(),
        }
    }
}
