//! The `router` binary's command line.

use std::process::Command;

#[test]
fn help_lists_flags_with_env_vars_and_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_router")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in [
        ("--nats-url", "SB_NATS_URL"),
        ("--id", "SB_ID"),
        ("--admin-listen", "SB_ADMIN_LISTEN"),
        ("--grpc-listen", "SB_GRPC_LISTEN"),
        ("--api-token", "SB_API_TOKEN"),
    ] {
        assert!(help.contains(flag) && help.contains(&format!("env: {env}")), "{flag}/{env} missing:\n{help}");
    }
    assert!(help.contains("default: 127.0.0.1:9091") && help.contains("default: 127.0.0.1:7072"), "{help}");
}

#[test]
fn bad_values_exit_non_zero_with_one_line() {
    for args in [vec!["--nats-url", "nats://127.0.0.1:1", "--id", "a.b"], vec!["--history-ttl", "later"], vec![]] {
        let out = Command::new(env!("CARGO_BIN_EXE_router")).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().filter(|l| !l.trim().is_empty()).count(), 1, "{args:?}: {err}");
    }
}
