//! `gateway`: the Switchboard WebSocket gateway binary.

fn main() {
    shell::cli::main(gateway::node::server::run);
}
