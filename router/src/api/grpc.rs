//! The API as gRPC `Rooms`: each method runs the [`Command`] of the same
//! name, so the checks and answers are those of the HTTP/JSON form.

use std::sync::Arc;

use proto::pb;
use tonic::{Request, Response, Status};

use super::cmd::subscription::{Subscribe, Subscription, Unsubscribe};
use super::{Api, Caller, Command};

/// The `Rooms` service over an [`Api`].
pub struct RoomsApi {
    api: Arc<Api>,
}

impl RoomsApi {
    pub fn new(api: Arc<Api>) -> Self {
        Self { api }
    }

    async fn run<C: Command>(&self, request: Request<impl Into<C>>) -> Result<Response<C::Output>, Status> {
        let caller = Caller { transport: "grpc", addr: request.remote_addr() };
        let call = request.into_inner().into();
        self.api.call(&caller, call).await.map(Response::new).map_err(|e| e.to_status())
    }
}

impl<const SUBSCRIBE: bool> From<pb::SubscriptionCall> for Subscription<SUBSCRIBE> {
    fn from(call: pb::SubscriptionCall) -> Self {
        Self(call)
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl crate::rpc::rooms_server::Rooms for RoomsApi {
    async fn publish(&self, r: Request<pb::PublishCall>) -> Answer<pb::PublishResult> {
        self.run::<pb::PublishCall>(r).await
    }

    async fn broadcast(&self, r: Request<pb::BroadcastCall>) -> Answer<pb::BroadcastResult> {
        self.run::<pb::BroadcastCall>(r).await
    }

    async fn send(&self, r: Request<pb::SendCall>) -> Answer<pb::SendResult> {
        self.run::<pb::SendCall>(r).await
    }

    async fn disconnect(&self, r: Request<pb::DisconnectUserCall>) -> Answer<pb::DisconnectResult> {
        self.run::<pb::DisconnectUserCall>(r).await
    }

    async fn subscribe(&self, r: Request<pb::SubscriptionCall>) -> Answer<pb::SubscriptionResult> {
        self.run::<Subscribe>(r).await
    }

    async fn unsubscribe(&self, r: Request<pb::SubscriptionCall>) -> Answer<pb::SubscriptionResult> {
        self.run::<Unsubscribe>(r).await
    }

    async fn members(&self, r: Request<pb::MembersCall>) -> Answer<pb::MembersResult> {
        self.run::<pb::MembersCall>(r).await
    }

    async fn history(&self, r: Request<pb::HistoryCall>) -> Answer<pb::HistoryResult> {
        self.run::<pb::HistoryCall>(r).await
    }

    async fn presence(&self, r: Request<pb::QueryRequest>) -> Answer<pb::QueryReply> {
        self.run::<pb::QueryRequest>(r).await
    }

    async fn rooms(&self, r: Request<pb::RoomsCall>) -> Answer<pb::RoomsResult> {
        self.run::<pb::RoomsCall>(r).await
    }

    async fn stats(&self, r: Request<pb::StatsCall>) -> Answer<pb::RouterStats> {
        self.run::<pb::StatsCall>(r).await
    }
}
