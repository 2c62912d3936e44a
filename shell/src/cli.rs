//! Conventions every binary's command line follows.
//!
//! Each flag has an `SB_…` environment twin and a default shown by `--help`;
//! a bad value exits non-zero with one line naming the flag; durations read
//! like `500ms`, `10s`, `2m`; node ids are `[A-Za-z0-9_-]`; SIGTERM and
//! Ctrl-C both mean "drain and exit 0".

use std::time::Duration;

/// A binary's `main`: parses the command line, runs `body` on a Tokio
/// runtime, and exits 1 with one line if it fails.
pub fn main<C, F>(body: impl FnOnce(C) -> F)
where
    C: clap::Parser,
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let config = parse::<C>();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a Tokio runtime");
    if let Err(e) = runtime.block_on(body(config)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Parses flags and environment; on a bad value prints one line naming the
/// flag and exits 2 (help and version print as usual).
pub fn parse<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(c) => c,
        Err(e) => exit_on(e),
    }
}

/// Exits for a clap error the way the design asks: one clear line.
pub fn exit_on(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("error: invalid arguments");
    eprintln!("{}", line.trim_end());
    std::process::exit(2);
}

/// A duration such as `500ms`, `10s`, `2m` or `1h`.
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 500ms, 10s or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?} has an unknown unit (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A node id: `[A-Za-z0-9_-]`, 1–64 bytes.
pub fn node_id(s: &str) -> Result<String, String> {
    if proto::subject::valid_node_id(s) {
        Ok(s.to_owned())
    } else {
        Err("must be 1-64 characters of [A-Za-z0-9_-]".into())
    }
}

/// This host's name made into a node id, plus a random suffix.
pub fn default_id(fallback: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String =
        host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(40).collect();
    let host = if host.is_empty() { fallback.to_owned() } else { host };
    format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(duration("fast").is_err());
        assert!(duration("5 parsecs").is_err());
    }

    #[test]
    fn default_ids_are_node_ids() {
        assert!(proto::subject::valid_node_id(&default_id("x")));
    }
}
