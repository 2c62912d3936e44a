//! `loadtest`: load scenarios against a Switchboard gateway, a cluster, or
//! the `ws` peer. Every scenario checks correctness as well as speed, and a
//! run with a correctness error exits non-zero.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loadtest::scenario::{api, broadcast, chat, connect, presence, reconnect, seat, slow, Protocol, Target};
use loadtest::stats::Stats;
use loadtest::token::SigningKey;
use loadtest::workers::{self, Shard};

/// Switchboard load generator.
#[derive(Parser, Debug)]
#[command(name = "loadtest", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,

    /// Gateway WebSocket URL (repeat for several gateways), loopback only.
    #[arg(long, global = true, env = "SB_LOADTEST_URL", value_delimiter = ',')]
    url: Vec<String>,

    /// HS256 secret to mint tokens with.
    #[arg(long, global = true, env = "SB_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,

    /// PEM private key (RSA or EC P-256) to mint tokens with.
    #[arg(long, global = true, env = "SB_TOKEN_KEY")]
    token_key: Option<PathBuf>,

    /// What the server speaks.
    #[arg(long, global = true, value_enum, default_value_t = Protocol::Switchboard)]
    protocol: Protocol,

    /// How long the load runs (connect: see --hold).
    #[arg(long, global = true, default_value = "10s", value_parser = shell::cli::duration)]
    duration: Duration,

    /// Handshakes started per second.
    #[arg(long, global = true, default_value_t = 1000.0)]
    connect_rate: f64,

    /// Spread client sockets over 127.0.0.1 … 127.0.0.N (past 28k connections).
    #[arg(long, global = true, default_value_t = 1)]
    sources: u8,

    /// Run the scenario in this many worker processes at once (each with the
    /// sizes given, its own names and source addresses from 127.0.0.2) and
    /// merge their figures: for runs past one process's descriptor limit.
    #[arg(long, global = true, default_value_t = 1)]
    workers: usize,

    /// Write every figure to this JSON file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,

    /// Draw throughput over time and the latency distribution to this SVG file.
    #[arg(long, global = true)]
    plot: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Ramp connections up, hold them; handshake latency and memory per connection.
    Connect(connect::Connect),
    /// Rooms of members all publishing; end-to-end latency and deliveries/s.
    Chat(chat::Chat),
    /// One room, many members, few publishers; fanout deliveries/s and latency.
    Broadcast(broadcast::Broadcast),
    /// Users come and go while others watch; time to presence events.
    Presence(presence::Presence),
    /// Everyone drops at once and comes back with backoff; time to recover.
    Reconnect(reconnect::Reconnect),
    /// A share of members stop reading; the others' latency, and 4000 for the slow.
    Slow(slow::Slow),
    /// Distinct users join one room at once; time to seat them and the cost of announcing joins.
    Seat(seat::Seat),
    /// The server API's publish over HTTP/JSON or gRPC: calls/s and latency (no --url).
    Api(api::Api),
}

fn main() {
    shell::cli::main(run);
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let shard = Shard::from_env();
    if shard.is_none() && cli.workers > 1 {
        let dir = std::env::temp_dir().join(format!("loadtest-workers-{}", std::process::id()));
        eprintln!("{} workers; their output in {}", cli.workers, dir.display());
        let report = workers::coordinate(cli.workers, &dir).await?;
        return finish(&cli, report);
    }
    if let Scenario::Api(s) = &cli.scenario {
        let stats = Arc::new(Stats::new());
        let progress = loadtest::progress::start("api", stats.clone());
        let report = s.run(cli.duration, stats).await;
        progress.abort();
        return finish(&cli, report?);
    }
    if cli.url.is_empty() {
        anyhow::bail!("--url is required (e.g. --url ws://127.0.0.1:8080/ws)");
    }
    for url in &cli.url {
        let host = url.strip_prefix("ws://").and_then(|r| r.split(['/', ':']).next()).unwrap_or_default();
        if !host.starts_with("127.") && host != "localhost" {
            anyhow::bail!("--url {url}: loadtest only targets loopback addresses (127.0.0.0/8)");
        }
    }
    let key = match (&cli.secret, &cli.token_key) {
        (Some(s), _) => Some(SigningKey::hs256(s.as_bytes().to_vec())),
        (None, Some(path)) => {
            let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("--token-key {}: {e}", path.display()))?;
            Some(
                SigningKey::from_private_key_pem(&pem)
                    .map_err(|e| anyhow::anyhow!("--token-key {}: {e:?}", path.display()))?,
            )
        }
        (None, None) if cli.protocol == Protocol::Peer => None,
        (None, None) => anyhow::bail!("--secret or --token-key is required to mint tokens"),
    };
    let sources = cli.sources.max(1);
    let target = Target {
        urls: cli.url.clone(),
        protocol: cli.protocol,
        key,
        sources,
        first_source: shard.map_or(1, |s| s.first_source(sources)),
        prefix: shard.map(|s| s.prefix()).unwrap_or_default(),
        connect_rate: cli.connect_rate,
    };
    let stats = Arc::new(Stats::new());
    let name = match &cli.scenario {
        Scenario::Connect(_) => "connect",
        Scenario::Chat(_) => "chat",
        Scenario::Broadcast(_) => "broadcast",
        Scenario::Presence(_) => "presence",
        Scenario::Reconnect(_) => "reconnect",
        Scenario::Slow(_) => "slow",
        Scenario::Seat(_) => "seat",
        Scenario::Api(_) => unreachable!("run above"),
    };
    let progress = loadtest::progress::start(name, stats.clone());
    let d = cli.duration;
    let report = match &cli.scenario {
        Scenario::Connect(s) => s.run(&target, stats.clone()).await,
        Scenario::Chat(s) => s.run(&target, d, stats.clone()).await,
        Scenario::Broadcast(s) => s.run(&target, d, stats.clone()).await,
        Scenario::Presence(s) => {
            if cli.protocol == Protocol::Peer {
                anyhow::bail!("the peer has no presence");
            }
            s.run(&target, d, stats.clone()).await
        }
        Scenario::Reconnect(s) => s.run(&target, d, stats.clone()).await,
        Scenario::Slow(s) => s.run(&target, d, stats.clone()).await,
        Scenario::Seat(s) => s.run(&target, stats.clone()).await,
        Scenario::Api(_) => unreachable!("run above"),
    };
    progress.abort();
    finish(&cli, report)
}

/// Prints the report, writes its files (a worker: its report for the
/// coordinator), and fails on correctness errors.
fn finish(cli: &Cli, report: loadtest::report::Report) -> anyhow::Result<()> {
    print!("{}", report.table());
    if let Some(path) = workers::output() {
        std::fs::write(path, serde_json::to_string(&report.worker_json())?)?;
    } else if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)?;
    }
    if let Some(path) = &cli.plot {
        std::fs::write(path, report.svg())?;
    }
    let errors = report.correctness_errors();
    if !errors.is_empty() {
        anyhow::bail!("correctness errors: {}", errors.join("; "));
    }
    Ok(())
}
