//! The `loadtest` command line: what it refuses and what it offers. (Building
//! this test also builds the binary that the cluster tests and
//! `loadtest/scale.sh` run.)

use std::process::Command;

fn loadtest(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest")).args(args).output().expect("loadtest runs")
}

#[test]
fn help_lists_every_scenario() {
    let out = loadtest(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for scenario in ["connect", "chat", "broadcast", "presence", "reconnect", "slow", "seat", "soak", "api"] {
        assert!(help.contains(scenario), "{scenario} missing from:\n{help}");
    }
    for flag in ["--workers", "--server-pid", "--sources"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn only_loopback_is_a_target_for_one_process_or_several() {
    for workers in ["1", "2"] {
        let out = loadtest(&["--workers", workers, "chat", "--url", "ws://10.1.2.3:8080/ws", "--secret", "s"]);
        assert!(!out.status.success(), "--workers {workers}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("only targets loopback"), "--workers {workers}: {err}");
    }
}
