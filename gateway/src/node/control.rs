//! The gateway's admin API (gRPC `GatewayAdmin`): stats, disconnects, drain.
//!
//! For operators and backends on the internal network, behind the optional
//! `--api-token`.

use std::sync::Arc;
use std::time::Duration;

use proto::client::close::{self, Close};
use proto::pb;
use tonic::{Request, Response, Status};

use crate::node::hub::Hub;

/// The `GatewayAdmin` service.
pub struct Control {
    hub: Arc<Hub>,
    drain_window: Duration,
}

impl Control {
    pub fn new(hub: Arc<Hub>, drain_window: Duration) -> Self {
        Self { hub, drain_window }
    }
}

#[tonic::async_trait]
impl crate::rpc::gateway_admin_server::GatewayAdmin for Control {
    async fn stats(&self, _: Request<pb::GatewayStatsCall>) -> Result<Response<pb::GatewayStats>, Status> {
        Ok(Response::new(pb::GatewayStats {
            id: self.hub.id.clone(),
            connections: self.hub.conn_count() as u64,
            rooms: self.hub.rooms.len() as u64,
            users: self.hub.direct.len() as u64,
            draining: self.hub.is_draining(),
        }))
    }

    async fn disconnect(&self, request: Request<pb::DisconnectCall>) -> Result<Response<pb::DisconnectResult>, Status> {
        let call = request.into_inner();
        let code = if call.code == 0 { close::NORMAL } else { u16::try_from(call.code).unwrap_or(0) };
        if !close::operator_may_send(code) {
            return Err(Status::invalid_argument("code must be 1000, 1001, 1008, 1011, 1013 or 4000-4999"));
        }
        let matches: Box<dyn Fn(&str, &str) -> bool + Send> = match call.target {
            Some(pb::disconnect_call::Target::User(u)) => Box::new(move |_, user| user == u),
            Some(pb::disconnect_call::Target::Conn(c)) => Box::new(move |conn, _| conn == c),
            None => return Err(Status::invalid_argument("name a user or a conn")),
        };
        let mut closed = 0;
        for (id, conn) in self.hub.conns() {
            if matches(&id, &conn.user) {
                conn.outbox.close(Close::new(code, "disconnected by operator"));
                closed += 1;
            }
        }
        Ok(Response::new(pb::DisconnectResult { closed }))
    }

    async fn drain(&self, _: Request<pb::DrainCall>) -> Result<Response<pb::DrainResult>, Status> {
        let connections = self.hub.conn_count() as u64;
        let (hub, window) = (self.hub.clone(), self.drain_window);
        tokio::spawn(async move { crate::node::drain::run(&hub, window).await });
        Ok(Response::new(pb::DrainResult { connections }))
    }
}
