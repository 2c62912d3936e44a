//! `gateway`: the Switchboard WebSocket gateway binary.

use gateway::config::{Command, Config};

fn main() {
    shell::cli::main(|mut config: Config| async move {
        match config.command.take() {
            Some(Command::Token(args)) => gateway::cmd::token::run(&config, &args).await,
            None => gateway::node::server::run(config).await,
        }
    });
}
