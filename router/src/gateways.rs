//! The live gateways, as their announcements on `sb.ctl.gateway` tell.
//!
//! The server API's cluster-wide orders (`disconnect`, `subscribe`) go to
//! every gateway on `sb.gateway.<id>`; this is how the API knows whom to
//! ask. A gateway unheard for [`GATEWAY_TTL`] is gone (owners drop its
//! members after the same time).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus::{Bus, BusError};
use prost::Message as _;
use proto::{internal, subject};

/// A gateway unheard for this long is not asked.
pub const GATEWAY_TTL: Duration = Duration::from_secs(5);

/// Live gateway ids; cheap to clone. Listening stops when the last clone drops.
#[derive(Clone)]
pub struct Gateways {
    heard: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Gateways {
    /// Starts listening to announcements.
    pub async fn start(bus: &Bus) -> Result<Self, BusError> {
        let mut sub = bus.subscribe(subject::GATEWAY_ANNOUNCE.into()).await?;
        let heard = Arc::new(Mutex::new(HashMap::new()));
        let weak = Arc::downgrade(&heard);
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(heard) = weak.upgrade() else { return };
                let Ok(a) = internal::GatewayAnnounce::decode(msg.payload) else { continue };
                if subject::valid_node_id(&a.id) {
                    let now = Instant::now();
                    let mut heard = heard.lock().unwrap();
                    heard.insert(a.id, now);
                    // Bounded by the gateways of the last TTL.
                    heard.retain(|_, at| now.duration_since(*at) <= GATEWAY_TTL);
                }
            }
        });
        Ok(Self { heard })
    }

    /// Gateways heard within the TTL, in id order.
    pub fn live(&self) -> Vec<String> {
        let now = Instant::now();
        let heard = self.heard.lock().unwrap();
        let mut ids: Vec<String> =
            heard.iter().filter(|(_, at)| now.duration_since(**at) <= GATEWAY_TTL).map(|(id, _)| id.clone()).collect();
        ids.sort_unstable();
        ids
    }
}
