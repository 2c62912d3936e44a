//! `gateway --standalone`: a router and presence in this process.
//!
//! The embedded router and presence service are the same code the cluster
//! runs, on an in-process broker instead of NATS; only the transport differs.

use std::sync::Arc;
use std::time::Duration;

use presence::{PresenceClient, PresenceService, StoreConfig};
use proto::bus::{Bus, BusError};
use router::client::{CallConfig, RouterClient};
use router::history::HistoryConfig;
use router::membership::MembershipConfig;
use router::node::{Node, NodeConfig};
use router::owner::OwnerConfig;

use crate::config::Config;

/// How the gateway reaches rooms and presence, and what must stay alive.
pub struct Backends {
    pub bus: Bus,
    pub router: RouterClient,
    pub presence: PresenceClient,
    /// The embedded router, kept alive for the life of the gateway.
    pub _node: Option<Node>,
    pub _presence: Option<Arc<PresenceService>>,
}

/// Starts the embedded router and presence on a fresh in-process bus.
pub async fn start(id: &str, config: &Config) -> Result<Backends, BusError> {
    let bus = Bus::local(id, "gateway");
    let owner = OwnerConfig {
        history: HistoryConfig { max_len: config.embedded.history_size, max_age: config.embedded.history_ttl },
        ..OwnerConfig::default()
    };
    let node = Node::start(
        bus.clone(),
        NodeConfig { id: format!("{id}-router"), membership: MembershipConfig::default(), owner },
    )
    .await?;
    let store = StoreConfig { offline_grace: config.embedded.offline_grace, lease_ttl: Duration::from_secs(15) };
    let service = PresenceService::start(bus.clone(), store);
    Ok(Backends {
        router: RouterClient::new(bus.clone(), node.membership.clone(), CallConfig::default()),
        presence: PresenceClient::local(service.clone()),
        bus,
        _node: Some(node),
        _presence: Some(service),
    })
}

/// A random HS256 secret for a standalone gateway started without a key.
pub fn generate_secret() -> String {
    (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// A token for user `demo`, valid for a day, to print in the connect URL.
pub fn demo_token(secret: &str) -> String {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: i64,
    }
    let exp = proto::now_ms() / 1000 + 86_400;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &Claims { sub: "demo", exp },
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}
