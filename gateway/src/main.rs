//! `gateway`: the Switchboard WebSocket gateway binary.

fn main() {
    shell::cli::main(gateway::server::run);
}
