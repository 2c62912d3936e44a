//! Compiles the `.proto` files with `protox` (pure Rust), so building needs no
//! system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "switchboard/v1/client.proto",
        "switchboard/v1/bus.proto",
        "switchboard/v1/presence.proto",
        "switchboard/v1/rooms.proto",
        "switchboard/v1/admin.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure().bytes(".switchboard.v1").compile_fds(fds)?;
    Ok(())
}
