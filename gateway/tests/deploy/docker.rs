//! The image: hadolint, every binary shipped, no secrets, a valid default command.

use super::*;

#[test]
fn dockerfile_passes_hadolint_and_ships_every_binary() {
    let file = "deploy/docker/Dockerfile";
    let out = run(Command::new(tool("hadolint")).arg("--no-color").arg(path(file)), None);
    assert!(out.status.success(), "hadolint {file}:\n{}", text(&out));

    let docker = read(file);
    let build = docker.lines().find(|l| l.contains("cargo build")).expect("a cargo build step");
    assert!(build.contains("--release") && build.contains("--locked"), "{build}");
    let members = workspace_members();
    for bin in IMAGE_BINARIES {
        assert!(members.contains(&bin.to_owned()), "{bin} is not a workspace member");
        assert!(path(&format!("{bin}/src/main.rs")).exists(), "{bin} has no binary");
        assert!(build.contains(&format!("-p {bin}")), "the image does not build {bin}: {build}");
        assert!(docker.contains(&format!("target/release/{bin}")), "the image does not copy {bin}");
    }
    // Every crate with a binary is in the image.
    for m in &members {
        if path(&format!("{m}/src/main.rs")).exists() {
            assert!(IMAGE_BINARIES.contains(&m.as_str()), "binary crate {m} is missing from the image");
        }
    }
    // Multi-stage, a slim runtime, a non-root user, no secrets.
    let froms: Vec<&str> = docker.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "not a multi-stage build: {froms:?}");
    assert!(froms.last().unwrap().contains("-slim"), "the runtime image is not slim: {froms:?}");
    let user = docker.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert!(!["root", "0"].contains(&user.split(':').next().unwrap().trim()), "runs as root: {user}");
    for l in docker.lines().filter(|l| l.starts_with("ENV ") || l.starts_with("ARG ")) {
        let upper = l.to_uppercase();
        assert!(
            !["SECRET", "TOKEN", "PASSWORD", "KEY"].iter().any(|s| upper.contains(s)),
            "a secret in the image: {l}"
        );
    }
    // The toolchain is at least the workspace's rust-version.
    let wanted = toml_value(&read("Cargo.toml"), "rust-version");
    let have = docker.lines().find_map(|l| l.strip_prefix("ARG RUST_VERSION=")).expect("ARG RUST_VERSION=");
    assert!(version(have) >= version(&wanted), "Rust {have} in the image, the workspace needs {wanted}");
    // The image's variables mean something to every binary, and the default
    // command is a valid gateway invocation.
    let clis = Clis::default();
    let env: BTreeMap<String, Option<String>> = docker
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
        .collect();
    for bin in SERVICES {
        let vars = clis.get(bin).vars;
        let unknown: Vec<&String> =
            env.keys().filter(|v| !vars.contains(*v) && !LOGGING_ENV.contains(&v.as_str())).collect();
        assert!(unknown.is_empty(), "the image sets {unknown:?}, which `{bin} --help` does not list");
    }
    let cmd = docker.lines().find_map(|l| l.strip_prefix("CMD ")).expect("a CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec form");
    let inv = Invocation::new("Dockerfile CMD", &cmd, env);
    assert_eq!(inv.problems(&clis, true), Vec::<String>::new());

    let ignore = read(".dockerignore");
    for needed in [".git", "target"] {
        assert!(ignore.lines().any(|l| l.trim() == needed), ".dockerignore does not exclude {needed}");
    }
}
