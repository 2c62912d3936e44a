//! How a gateway reaches rooms and presence.
//!
//! `--standalone` embeds a router and the presence service in this process
//! on an in-process broker; otherwise the gateway joins a cluster over NATS
//! (`--nats-url`) and reaches presence over gRPC (`--presence-url`). Either
//! way the rest of the gateway sees the same three things: a bus, a router
//! client, and a presence client.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bus::Bus;
use presence::{PresenceClient, PresenceService, StoreConfig};
use router::client::{CallConfig, RouterClient};
use router::membership::{Membership, MembershipConfig};
use router::namespace::Namespaces;
use router::node::{Node, NodeConfig};
use router::owner::OwnerConfig;

use crate::config::Config;

/// What the gateway talks to.
pub struct Backends {
    pub bus: Bus,
    pub router: RouterClient,
    pub presence: PresenceClient,
    /// The embedded router (standalone), kept alive with the gateway.
    pub node: Option<Node>,
    /// The embedded presence service (standalone).
    pub _presence: Option<Arc<PresenceService>>,
}

impl Backends {
    /// A router and presence in this process, on a fresh in-process bus.
    pub async fn standalone(id: &str, config: &Config, namespaces: Arc<Namespaces>) -> anyhow::Result<Self> {
        let bus = Bus::local(id, "gateway");
        let webhooks = shell::webhook::Webhooks::start(&config.embedded.webhooks, id)?;
        let owner = OwnerConfig {
            namespaces,
            history_budget: config.policy.history.history_budget,
            vnodes: config.vnodes,
            webhooks: webhooks.clone(),
            ..OwnerConfig::default()
        };
        // Alone on its own bus, the embedded router has nobody to wait for.
        let membership =
            MembershipConfig { settle: Duration::ZERO, vnodes: config.vnodes, ..MembershipConfig::default() };
        let node = Node::start(bus.clone(), NodeConfig { id: format!("{id}-router"), membership, owner }).await?;
        let store = StoreConfig {
            offline_grace: config.embedded.offline_grace,
            lease_ttl: Duration::from_secs(15),
            inbox: config.embedded.inbox.config(),
        };
        let inbox = std::sync::Arc::new(presence::inbox::MemoryInbox::new(store.inbox));
        let service = PresenceService::start_with(bus.clone(), store, webhooks, inbox);
        Ok(Self {
            router: RouterClient::new(bus.clone(), node.membership.clone(), CallConfig::default()),
            presence: PresenceClient::local(service.clone()),
            bus,
            node: Some(node),
            _presence: Some(service),
        })
    }

    /// NATS to the routers, gRPC to presence.
    pub async fn cluster(id: &str, config: &Config) -> anyhow::Result<Self> {
        let (Some(nats), Some(presence)) = (&config.nats_url, &config.presence_url) else {
            anyhow::bail!("--nats-url and --presence-url are required without --standalone");
        };
        let bus = Bus::nats(nats, &config.nats, id, "gateway").await.context("--nats-url")?;
        let membership = Membership::start(
            &bus,
            MembershipConfig {
                gauge: "switchboard_gateway_ring_size",
                vnodes: config.vnodes,
                ..MembershipConfig::default()
            },
        )
        .await?;
        let token = config.presence_token.as_deref().unwrap_or(&config.api.api_token);
        let dial = presence::Dial { token: token.to_owned(), tls: config.tls.client()? };
        let gauge = "switchboard_gateway_presence_ring_size";
        let presence = PresenceClient::cluster(&bus, presence, dial, gauge).await.context("--presence-url")?;
        Ok(Self {
            router: RouterClient::new(bus.clone(), membership, CallConfig::default()),
            presence,
            bus,
            node: None,
            _presence: None,
        })
    }
}
