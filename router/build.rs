//! Generates the `rooms` gRPC service of `proto/switchboard/v1/rooms.proto`
//! (server and client) with `protox`, so building needs no system `protoc`.
//! Its messages are `proto`'s (`extern_path`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "switchboard/v1/rooms.proto";
    println!("cargo:rerun-if-changed=../proto/{file}");
    let mut fds = protox::compile([file], ["../proto"])?;
    // Only this file's service: the files it imports have their own servers.
    fds.file.retain(|f| f.name() == file);
    tonic_prost_build::configure().extern_path(".switchboard.v1", "::proto::pb").compile_fds(fds)?;
    Ok(())
}
