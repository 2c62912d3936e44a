//! The gateway process: set-up, serving, and shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use presence::Reporter;
use prost::Message as _;
use proto::internal;
use proto::subject;
use shell::admin::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::edge::demo::{Demo, Minter};
use crate::edge::http;
use crate::node::backends::Backends;
use crate::node::control::Control;
use crate::node::drain;
use crate::node::hub::{Hub, Parts};
use crate::session::auth::{Jwks, Key, Verifier};
use crate::session::glob::Globs;
use crate::session::grants::Defaults;

/// Shortest HS256 secret accepted: a shorter one can be brute-forced from
/// any token (RFC 7518 3.2 asks for a key at least as long as the hash).
const MIN_SECRET_BYTES: usize = 32;

/// How often this gateway announces itself to room owners.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// Runs the gateway until SIGTERM or Ctrl-C, then drains and returns.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = shell::telemetry::init();
    shell::heap::spawn_trimmer();
    let api_auth = config.api.guard("--grpc-listen", config.grpc_listen)?;
    // The HTTP server API is the embedded router's: standalone only.
    let http_auth =
        config.standalone.then(|| config.api.guard("--api-listen", config.embedded.api_listen)).transpose()?;
    crate::metrics::describe(config.standalone);
    if config.conformance_echo {
        tracing::warn!("--conformance-echo: WebSocket clients are not authenticated and get their messages echoed");
    }
    let id = config.id.clone().unwrap_or_else(|| shell::cli::default_id("gateway"));

    let (verifier, generated) = verifier(&config).await?;
    let verifier = verifier.with_max_info_bytes(config.limits.max_info_bytes);
    // Standalone without --config: a built-in example with a read-only news: namespace.
    let builtin = config.standalone.then_some(router::namespace::STANDALONE_EXAMPLE);
    let namespaces = Arc::new(config.policy.namespaces(builtin)?);
    let backends = if config.standalone {
        Backends::standalone(&id, &config, namespaces.clone()).await?
    } else {
        Backends::cluster(&id, &config).await?
    };
    let reporter = Reporter::start(backends.presence.clone(), id.clone());
    let hub = Hub::new(Parts {
        id: id.clone(),
        limits: config.limits.clone(),
        bus: backends.bus.clone(),
        router: backends.router.clone(),
        presence: backends.presence.clone(),
        reporter: reporter.clone(),
        verifier,
        defaults: Defaults {
            rooms: Arc::new(Globs::parse_list(&config.default_rooms)),
            send: Arc::new(Globs::parse_list(&config.default_send)),
            watch: Arc::new(Globs::parse_list(&config.default_watch)),
        },
        namespaces: namespaces.clone(),
        hooks: crate::hooks::Hooks::new(&config.hooks)?.map(Arc::new),
        allowed_origins: list(&config.allowed_origins),
        conformance_echo: config.conformance_echo,
    });
    crate::node::orders::spawn(hub.clone()).await.context("orders subject")?;
    crate::delivery::direct::spawn(hub.clone()).await.context("direct message subjects")?;
    crate::sse::forward::spawn(hub.clone()).await.context("SSE forwarding subject")?;
    let api = match &backends.node {
        Some(node) => Some(Arc::new(
            router::api::Api::new(
                node.id.clone(),
                backends.router.clone(),
                backends.bus.clone(),
                Some(backends.presence.clone()),
                node.stats.clone(),
            )
            .await?,
        )),
        None => None,
    };
    // Announced once orders are served and the embedded API listens for it.
    let announce_id = id.clone();
    let _announcer = router::announce::spawn(hub.bus.clone(), subject::GATEWAY_ANNOUNCE, ANNOUNCE_EVERY, move || {
        Bytes::from(internal::GatewayAnnounce { id: announce_id.clone() }.encode_to_vec())
    });

    let (tls, admin_tls) = (config.tls.server()?, config.tls.admin()?);
    let (scheme, admin_scheme) = (shell::tls::scheme(&tls), shell::tls::scheme(&admin_tls));
    let ws_scheme = if tls.is_some() { "wss" } else { "ws" };
    let grpc = serve_grpc(&config, api_auth, &hub, api.clone(), tls.clone()).await?;
    let http_api = match (api, http_auth) {
        (Some(api), Some(auth)) => {
            let addr = config.embedded.api_listen;
            let bound = router::api::http::serve(addr, api, auth, tls.clone())
                .await
                .with_context(|| format!("--api-listen {addr}"))?;
            Some(bound)
        }
        _ => None,
    };
    let ready_hub = hub.clone();
    let ready: shell::admin::ReadyCheck = Arc::new(move || {
        // Presence down degrades answers (see ops/presence.rs), nothing more.
        let presence = if ready_hub.reporter.reachable() { Readiness::Ready } else { Readiness::Degraded };
        vec![
            ("broker", ready_hub.bus.is_connected().into()),
            ("ring", (!ready_hub.router.membership().ring().is_empty()).into()),
            ("presence", presence),
            ("not_draining", (!ready_hub.is_draining()).into()),
        ]
    });
    let admin = shell::admin::serve(config.admin_listen, metrics, ready, admin_tls)
        .await
        .with_context(|| format!("--admin-listen {}", config.admin_listen))?;
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("--listen {}", config.listen))?;
    let addr = listener.local_addr()?;

    // Only a secret the gateway generated may mint or print tokens: a
    // configured one belongs to an application that decides who is who, and
    // a token printed with it would end up in container logs.
    let minter = generated.as_deref().map(|s| Minter::new(s.as_bytes()));
    let printed_token = minter.as_ref().map(|m| m.demo_token().to_owned());
    let demo = Arc::new(Demo::new(minter));

    // Tools and tests read these lines; `admin` comes last.
    println!("switchboard gateway {id} ({})", if config.standalone { "standalone" } else { "cluster" });
    if let Some(token) = &printed_token {
        println!("  connect    {ws_scheme}://{addr}/ws?token={token}   (user \"demo\", valid 24 h)");
        println!("  demo       {scheme}://{addr}/?token={token}");
    } else {
        println!("  demo       {scheme}://{addr}/");
    }
    println!("  websocket  {ws_scheme}://{addr}/ws");
    println!("  grpc       {grpc}");
    if let Some(http_api) = http_api {
        println!("  api        {scheme}://{http_api}/api/");
    }
    println!("  admin      {admin_scheme}://{admin}/metrics");

    let stop = CancellationToken::new();
    let edge = Arc::new(http::Edge {
        hub: hub.clone(),
        demo,
        tls: tls.map(|c| c.acceptor(&[b"http/1.1"])),
        proxies: config.proxies.clone(),
    });
    let serving = tokio::spawn(http::serve(edge, listener, stop.clone()));
    shell::cli::shutdown_signal().await;
    tracing::info!("shutting down");
    stop.cancel();
    let _ = serving.await;
    drain::run(&hub, config.limits.drain_window).await;
    reporter.leave().await;
    Ok(())
}

/// The admin API, and in standalone mode the embedded router's server API.
async fn serve_grpc(
    config: &Config,
    auth: shell::grpc::BearerAuth,
    hub: &Arc<Hub>,
    api: Option<Arc<router::api::Api>>,
    tls: Option<Arc<shell::tls::Certificate>>,
) -> anyhow::Result<std::net::SocketAddr> {
    let control = Control::new(hub.clone(), config.limits.drain_window);
    let mut routes = tonic::transport::Server::builder()
        .add_service(crate::rpc::gateway_admin_server::GatewayAdminServer::with_interceptor(control, auth.clone()));
    if let Some(api) = api {
        let api = router::api::grpc::RoomsApi::new(api);
        routes = routes.add_service(router::rpc::rooms_server::RoomsServer::with_interceptor(api, auth));
    }
    shell::grpc::serve(config.grpc_listen, routes, tls)
        .await
        .with_context(|| format!("--grpc-listen {}", config.grpc_listen))
}

/// The token verifier, and the HS256 secret when the gateway generated it
/// (to mint the demo token).
pub(crate) async fn verifier(config: &Config) -> anyhow::Result<(Verifier, Option<String>)> {
    let t = &config.tokens;
    let mut keys = Vec::new();
    for secret in &t.jwt_secrets {
        if secret.len() < MIN_SECRET_BYTES {
            anyhow::bail!(
                "--jwt-secret is {} bytes; HS256 secrets must be at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)",
                secret.len()
            );
        }
        keys.push(Key::hs256(secret.as_bytes()));
    }
    for path in &t.jwt_public_keys {
        let pem = std::fs::read(path).with_context(|| format!("--jwt-public-key {}", path.display()))?;
        keys.push(Key::from_public_key_pem(&pem).with_context(|| format!("--jwt-public-key {}", path.display()))?);
    }
    let mut generated = None;
    if keys.is_empty() && t.jwks_url.is_none() {
        if !config.standalone {
            anyhow::bail!("--jwt-secret, --jwt-public-key or --jwks-url is required outside --standalone");
        }
        let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        keys.push(Key::hs256(secret.as_bytes()));
        generated = Some(secret);
    }
    let mut verifier = Verifier::new(keys).with_claims(&t.jwt_audience, &t.jwt_issuer);
    if let Some(url) = &t.jwks_url {
        let jwks = Jwks::new(url, t.jwks_min_interval)?;
        // Start even if the issuer is down: the configured keys work, and
        // the JWKS is fetched again on the first token that needs it.
        if !jwks.refresh().await {
            tracing::warn!(%url, "starting without JWKS keys");
        }
        jwks.spawn_refresh(t.jwks_refresh);
        verifier = verifier.with_jwks(jwks);
    }
    Ok((verifier, generated))
}

fn list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}
