//! `loadtest`: load scenarios against a Switchboard gateway, a cluster, or
//! the `ws` peer. Every scenario checks correctness as well as speed, and a
//! run with a correctness error exits non-zero.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loadtest::scenario::{api, broadcast, chat, connect, presence, reconnect, seat, slow, soak, Protocol, Target};
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

    /// PEM CA certificates to trust for wss:// URLs.
    #[arg(long, global = true, env = "SB_LOADTEST_CA")]
    ca: Option<PathBuf>,

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

    /// Server processes whose CPU the run reports, in total and per unit of
    /// work (delivery, handshake, call): repeat or separate with commas.
    #[arg(long, global = true, value_delimiter = ',')]
    server_pid: Vec<u32>,

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
    /// Connections come and go, join, leave and publish, some never read;
    /// nothing may leak (server RSS, gauges back to idle).
    Soak(soak::Soak),
    /// The server API's publish over HTTP/JSON or gRPC: calls/s and latency (no --url).
    Api(api::Api),
}

fn main() {
    shell::cli::main(run);
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Before any worker starts: N copies of one mistake say less than one.
    check_urls(&cli.url)?;
    let shard = Shard::from_env();
    // The coordinator measures the servers: workers would each count all of it.
    let cpu_before = if shard.is_none() { server_cpu(&cli.server_pid) } else { None };
    let mut report = if shard.is_none() && cli.workers > 1 {
        let dir = std::env::temp_dir().join(format!("loadtest-workers-{}", std::process::id()));
        eprintln!("{} workers; their output in {}", cli.workers, dir.display());
        workers::coordinate(cli.workers, &dir).await?
    } else {
        scenario(&cli, shard).await?
    };
    if let (Some(before), Some(after)) = (cpu_before, server_cpu(&cli.server_pid)) {
        cpu_figures(&mut report, after - before);
    }
    finish(&cli, report)
}

/// Every target is on loopback: load never leaves this machine.
fn check_urls(urls: &[String]) -> anyhow::Result<()> {
    for url in urls {
        let rest = url.strip_prefix("ws://").or_else(|| url.strip_prefix("wss://"));
        let host = rest.and_then(|r| r.split(['/', ':']).next()).unwrap_or_default();
        if !host.starts_with("127.") && host != "localhost" {
            anyhow::bail!("--url {url}: loadtest only targets loopback addresses (127.0.0.0/8)");
        }
    }
    Ok(())
}

/// CPU seconds the `--server-pid` processes have used so far.
fn server_cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| loadtest::procfs::cpu_secs(*pid)).sum()
}

/// The servers' CPU over the run, and per unit of the work the scenario
/// counts: what a throughput figure measured at the client hides.
fn cpu_figures(report: &mut loadtest::report::Report, secs: f64) {
    report.figure("servers' CPU", secs, "s");
    let units = [("deliveries", "delivery"), ("connected", "handshake"), ("calls", "call"), ("seated", "join")];
    let found = units.iter().find_map(|(figure, unit)| {
        let n = report.figures.iter().find(|(name, _, _)| name == figure)?.1;
        (n > 0.0).then_some((n, *unit))
    });
    if let Some((n, unit)) = found {
        report.figure(&format!("servers' CPU per {unit}"), secs * 1e6 / n, "µs");
    }
}

/// Runs the scenario in this process.
async fn scenario(cli: &Cli, shard: Option<Shard>) -> anyhow::Result<loadtest::report::Report> {
    if let Scenario::Api(s) = &cli.scenario {
        let stats = Arc::new(Stats::new());
        let progress = loadtest::progress::start("api", stats.clone());
        let report = s.run(cli.duration, stats).await;
        progress.abort();
        return report;
    }
    if cli.url.is_empty() {
        anyhow::bail!("--url is required (e.g. --url ws://127.0.0.1:8080/ws)");
    }
    check_urls(&cli.url)?;
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
        tls: match &cli.ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("--ca {}: {e}", path.display()))?;
                Some(
                    loadtest::client::tls_trusting(&pem)
                        .map_err(|e| anyhow::anyhow!("--ca {}: {e}", path.display()))?,
                )
            }
            None => None,
        },
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
        Scenario::Soak(_) => "soak",
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
        Scenario::Soak(s) => s.run(&target, d, stats.clone()).await,
        Scenario::Api(_) => unreachable!("run above"),
    };
    progress.abort();
    Ok(report)
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

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_targets_are_accepted() {
        for (url, ok) in [
            ("ws://127.0.0.1:8080/ws", true),
            ("wss://127.0.0.2:8443/ws", true),
            ("wss://localhost:8443/ws", true),
            ("ws://10.0.0.1:8080/ws", false),
            ("wss://example.com/ws", false),
            ("http://127.0.0.1/ws", false),
        ] {
            assert_eq!(super::check_urls(&[url.to_owned()]).is_ok(), ok, "{url}");
        }
    }
}
