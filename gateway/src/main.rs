//! `gateway`: the Switchboard WebSocket gateway binary.

use gateway::config::Config;

#[tokio::main]
async fn main() {
    let config = Config::load();
    if let Err(e) = gateway::server::run(config).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
