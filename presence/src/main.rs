//! `presence`: the Switchboard presence service.
//!
//! Serves `Presence` (Report, Query, Watch) over gRPC to gateways and
//! backends, and publishes every online/offline change on
//! `sb.presence.<user>` for gateways whose clients watch that user. With
//! `--advertise`, it is one of several replicas that split the users.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bus::membership::{Membership, MembershipConfig};
use bus::Bus;
use clap::Parser;
use presence::{PresenceService, StoreConfig};
use prost::Message as _;
use proto::{internal, subject};
use shell::cli::{duration, node_id};

/// Switchboard presence service: TTL-based online state.
#[derive(Parser, Debug)]
#[command(name = "presence", version, about, long_about = None)]
struct Config {
    /// gRPC address for gateways and backends.
    #[arg(long, env = "SB_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,

    /// Admin address: /metrics, /healthz, /readyz.
    #[arg(long, env = "SB_ADMIN_LISTEN", default_value = "127.0.0.1:9092")]
    admin_listen: SocketAddr,

    /// NATS server for presence events, e.g. nats://127.0.0.1:4222.
    #[arg(long, env = "SB_NATS_URL")]
    nats_url: String,

    /// Node id ([A-Za-z0-9_-]); default: host name plus a random suffix.
    #[arg(long, env = "SB_ID", value_parser = node_id)]
    id: Option<String>,

    /// host:port at which gateways and routers reach this replica's gRPC
    /// listener. Given, it announces itself on sb.ctl.presence and the
    /// replicas split the users between them; without it, it is the only one.
    #[arg(long, env = "SB_ADVERTISE", value_parser = advertise)]
    advertise: Option<String>,

    /// On shutdown, how long a replica keeps answering after leaving the
    /// ring, while gateways move its users to the others.
    #[arg(long, env = "SB_DRAIN_WINDOW", default_value = "2s", value_parser = duration)]
    drain_window: Duration,

    /// A gateway's sessions expire this long after its last report.
    #[arg(long, env = "SB_LEASE_TTL", default_value = "15s", value_parser = duration)]
    lease_ttl: Duration,

    /// How long a user stays online after their last session ends.
    #[arg(long, env = "SB_OFFLINE_GRACE", default_value = "5s", value_parser = duration)]
    offline_grace: Duration,

    #[command(flatten)]
    inbox: presence::InboxFlags,

    #[command(flatten)]
    inbox_store: presence::InboxStoreFlags,

    #[command(flatten)]
    webhooks: shell::webhook::WebhookFlags,

    #[command(flatten)]
    api: shell::grpc::ApiAccess,

    #[command(flatten)]
    tls: shell::tls::TlsFlags,

    #[command(flatten)]
    nats: bus::NatsFlags,
}

fn main() {
    shell::cli::main(run);
}

async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = shell::telemetry::init();
    shell::heap::spawn_trimmer();
    let auth = config.api.guard("--listen", config.listen)?;
    let (tls, admin_tls) = (config.tls.server()?, config.tls.admin()?);
    let admin_scheme = shell::tls::scheme(&admin_tls);
    presence::metrics::describe();
    let id = config.id.clone().unwrap_or_else(|| shell::cli::default_id("presence"));
    let bus = Bus::nats(&config.nats_url, &config.nats, &id, "presence").await.context("--nats-url")?;
    let store =
        StoreConfig { lease_ttl: config.lease_ttl, offline_grace: config.offline_grace, inbox: config.inbox.config() };
    let webhooks = shell::webhook::Webhooks::start(&config.webhooks, &id)?;
    let inbox = config.inbox_store.open(&config.nats_url, &config.nats, &id, store.inbox).await?;
    let service = PresenceService::start_with(bus.clone(), store, webhooks, inbox);
    let draining = Arc::new(AtomicBool::new(false));
    let announcer = match &config.advertise {
        Some(addr) => {
            let membership =
                Membership::start(&bus, MembershipConfig::presence("switchboard_presence_ring_size")).await?;
            service.join_ring(id.clone(), membership);
            let (id, addr, draining) = (id.clone(), addr.clone(), draining.clone());
            Some(bus::announce::spawn(bus.clone(), subject::PRESENCE_ANNOUNCE, ANNOUNCE_EVERY, move || {
                let draining = draining.load(Ordering::Relaxed);
                internal::PresenceAnnounce { id: id.clone(), addr: addr.clone(), draining }.encode_to_vec().into()
            }))
        }
        None => None,
    };
    let routes = tonic::transport::Server::builder().add_service(service.clone().into_server(auth));
    let grpc =
        shell::grpc::serve(config.listen, routes, tls).await.with_context(|| format!("--listen {}", config.listen))?;
    let ready_bus = bus.clone();
    let ready: shell::admin::ReadyCheck = Arc::new(move || vec![("nats", ready_bus.is_connected().into())]);
    let admin = shell::admin::serve(config.admin_listen, metrics, ready, admin_tls)
        .await
        .with_context(|| format!("--admin-listen {}", config.admin_listen))?;
    println!("switchboard presence {id} (instance {})", service.instance());
    println!("  grpc       {grpc}");
    println!("  admin      {admin_scheme}://{admin}/metrics");
    if let Some(addr) = &config.advertise {
        println!("  replica    {addr} (sb.ctl.presence)");
    }
    shell::cli::shutdown_signal().await;
    if announcer.is_some() {
        // Out of the ring, still answering: gateways move our users away.
        draining.store(true, Ordering::Relaxed);
        tracing::info!(window = ?config.drain_window, "draining: leaving the presence ring");
        tokio::time::sleep(config.drain_window).await;
    }
    Ok(())
}

/// How often a replica announces itself (the ring's TTL is 2 s).
const ANNOUNCE_EVERY: Duration = Duration::from_millis(500);

/// `host:port`, as a URL authority: no scheme, path or user.
fn advertise(s: &str) -> Result<String, String> {
    let (host, port) = s.rsplit_once(':').ok_or("expected host:port")?;
    port.parse::<u16>().map_err(|_| format!("bad port in {s:?}"))?;
    let ok = !host.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic() && !b"/@?#".contains(&b));
    ok.then(|| s.to_owned()).ok_or_else(|| format!("expected host:port, got {s:?}"))
}
