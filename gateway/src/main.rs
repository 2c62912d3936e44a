//! `gateway`: the Switchboard WebSocket gateway binary.

fn main() {
    proto::cli::main(gateway::server::run);
}
