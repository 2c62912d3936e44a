//! The `presence` binary's command line.

use std::process::Command;

#[test]
fn help_lists_flags_with_env_vars_and_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_presence")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in [
        ("--listen", "SB_LISTEN"),
        ("--admin-listen", "SB_ADMIN_LISTEN"),
        ("--nats-url", "SB_NATS_URL"),
        ("--id", "SB_ID"),
        ("--offline-grace", "SB_OFFLINE_GRACE"),
    ] {
        assert!(help.contains(flag) && help.contains(&format!("env: {env}")), "{flag}/{env} missing:\n{help}");
    }
    assert!(help.contains("default: 127.0.0.1:7070") && help.contains("default: 127.0.0.1:9092"), "{help}");
}

#[test]
fn bad_values_exit_non_zero_with_one_line() {
    for args in [vec!["--listen", "nowhere"], vec!["--offline-grace", "soon"], vec![]] {
        let out = Command::new(env!("CARGO_BIN_EXE_presence")).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().filter(|l| !l.trim().is_empty()).count(), 1, "{args:?}: {err}");
    }
}
