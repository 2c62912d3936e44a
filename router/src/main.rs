//! `router`: a Switchboard room owner.
//!
//! Joins the ring over NATS, owns the rooms the ring gives it, serves the
//! `Rooms` server API, and on SIGTERM hands every room to its new owner
//! before exiting 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bus::Bus;
use clap::Parser;
use router::api::grpc::RoomsApi;
use router::api::Api;
use router::client::{CallConfig, RouterClient};
use router::membership::MembershipConfig;
use router::namespace::PolicyFlags;
use router::node::{Node, NodeConfig};
use router::owner::OwnerConfig;
use shell::cli::{duration, node_id};

/// Switchboard router: owns rooms by consistent hash and serves the server API.
#[derive(Parser, Debug)]
#[command(name = "router", version, about, long_about = None)]
struct Config {
    /// NATS server, e.g. nats://127.0.0.1:4222.
    #[arg(long, env = "SB_NATS_URL")]
    nats_url: String,

    /// Node id ([A-Za-z0-9_-]); default: host name plus a random suffix.
    #[arg(long, env = "SB_ID", value_parser = node_id)]
    id: Option<String>,

    /// Admin address: /metrics, /healthz, /readyz.
    #[arg(long, env = "SB_ADMIN_LISTEN", default_value = "127.0.0.1:9091")]
    admin_listen: SocketAddr,

    /// Server API (gRPC `Rooms`) address.
    #[arg(long, env = "SB_GRPC_LISTEN", default_value = "127.0.0.1:7072")]
    grpc_listen: SocketAddr,

    /// Server API over HTTP/JSON: POST /api/<method>.
    #[arg(long, env = "SB_API_LISTEN", default_value = "127.0.0.1:8091")]
    api_listen: SocketAddr,

    /// Presence service, e.g. http://127.0.0.1:7070: the API's `presence`,
    /// and `send` to users who are offline.
    #[arg(long, env = "SB_PRESENCE_URL")]
    presence_url: Option<String>,

    /// Bearer token for calls to presence; default: --api-token.
    #[arg(long, env = "SB_PRESENCE_TOKEN", hide_env_values = true)]
    presence_token: Option<String>,

    #[command(flatten)]
    api: shell::grpc::ApiAccess,

    #[command(flatten)]
    tls: shell::tls::TlsFlags,

    #[command(flatten)]
    nats: bus::NatsFlags,

    #[command(flatten)]
    policy: PolicyFlags,

    #[command(flatten)]
    webhooks: shell::webhook::WebhookFlags,

    #[command(flatten)]
    store: router::store::StoreFlags,

    /// Virtual nodes per router on the ring (every router must agree).
    #[arg(long, env = "SB_VNODES", default_value_t = 128)]
    vnodes: u32,

    /// On SIGTERM, how long to wait for every room to be handed off.
    #[arg(long, env = "SB_DRAIN_TIMEOUT", default_value = "10s", value_parser = duration)]
    drain_timeout: Duration,
}

fn main() {
    shell::cli::main(run);
}

async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = shell::telemetry::init();
    shell::heap::spawn_trimmer();
    let auth = config.api.guard("--grpc-listen", config.grpc_listen)?;
    let http_auth = config.api.guard("--api-listen", config.api_listen)?;
    let (tls, admin_tls) = (config.tls.server()?, config.tls.admin()?);
    let (api_scheme, admin_scheme) = (shell::tls::scheme(&tls), shell::tls::scheme(&admin_tls));
    router::metrics::describe();
    let id = config.id.clone().unwrap_or_else(|| shell::cli::default_id("router"));
    // Before any connection: a bad file stops the router at once.
    let namespaces = Arc::new(config.policy.namespaces(None)?);
    let bus = Bus::nats(&config.nats_url, &config.nats, &id, "router").await.context("--nats-url")?;
    let store = config.store.open(&config.nats_url, &config.nats, &id, namespaces.largest_history()).await?;
    let membership = MembershipConfig { vnodes: config.vnodes, ..MembershipConfig::default() };
    let owner = OwnerConfig {
        namespaces,
        history_budget: config.policy.history.history_budget,
        vnodes: config.vnodes,
        webhooks: shell::webhook::Webhooks::start(&config.webhooks, &id)?,
        store,
        ..OwnerConfig::default()
    };
    let node = Node::start(bus.clone(), NodeConfig { id: id.clone(), membership, owner }).await?;

    let client = RouterClient::new(bus.clone(), node.membership.clone(), CallConfig::default());
    let presence = match &config.presence_url {
        Some(url) => {
            let token = config.presence_token.as_deref().unwrap_or(&config.api.api_token);
            let dial = presence::Dial { token: token.to_owned(), tls: config.tls.client()? };
            let gauge = "switchboard_router_presence_ring_size";
            Some(presence::PresenceClient::cluster(&bus, url, dial, gauge).await.context("--presence-url")?)
        }
        None => None,
    };
    let api = Arc::new(Api::new(id.clone(), client, bus.clone(), presence, node.stats.clone()).await?);
    let http = router::api::http::serve(config.api_listen, api.clone(), http_auth, tls.clone())
        .await
        .with_context(|| format!("--api-listen {}", config.api_listen))?;
    let routes = tonic::transport::Server::builder()
        .add_service(router::rpc::rooms_server::RoomsServer::with_interceptor(RoomsApi::new(api), auth));
    let grpc = shell::grpc::serve(config.grpc_listen, routes, tls)
        .await
        .with_context(|| format!("--grpc-listen {}", config.grpc_listen))?;

    let (ready_bus, ready_membership, ready_id) = (bus.clone(), node.membership.clone(), id.clone());
    let ready: shell::admin::ReadyCheck = Arc::new(move || {
        vec![
            ("nats", ready_bus.is_connected().into()),
            ("in_ring", ready_membership.ring().contains(&ready_id).into()),
            ("settled", ready_membership.is_settled().into()),
        ]
    });
    let admin = shell::admin::serve(config.admin_listen, metrics, ready, admin_tls)
        .await
        .with_context(|| format!("--admin-listen {}", config.admin_listen))?;
    println!("switchboard router {id}");
    println!("  grpc       {grpc}");
    println!("  api        {api_scheme}://{http}/api/");
    println!("  admin      {admin_scheme}://{admin}/metrics");

    shell::cli::shutdown_signal().await;
    tracing::info!("draining: handing rooms to their new owners");
    let left = node.hand_off_all(config.drain_timeout).await;
    if left > 0 {
        tracing::warn!(rooms = left, "rooms not handed off before the drain timeout");
    }
    Ok(())
}
