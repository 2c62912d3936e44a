//! `loadtest`: load scenarios against a Switchboard gateway or cluster.

fn main() {
    eprintln!("loadtest: scenarios are not built yet; the crate currently provides the client library");
    std::process::exit(2);
}
