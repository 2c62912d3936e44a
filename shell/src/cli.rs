//! Conventions every binary's command line follows.
//!
//! Each flag has an `SB_…` environment twin and a default shown by `--help`;
//! a bad value exits non-zero with one line naming the flag; durations read
//! like `500ms`, `10s`, `2m`; node ids are `[A-Za-z0-9_-]`; SIGTERM and
//! Ctrl-C both mean "drain and exit 0". A secret flag (one whose env value
//! `--help` hides) may also be read from the file `SB_…_FILE` names, one
//! secret per line, the way container platforms mount secrets.

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
    let args = with_secret_files(&T::command(), std::env::args_os().collect(), |k| std::env::var_os(k))
        .unwrap_or_else(|e| exit_on(e));
    match T::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => exit_on(e),
    }
}

/// `args` with each secret read from a `SB_…_FILE` put after the program
/// name as `--flag=secret` (in memory: it never shows in the process list).
/// A file that is missing, empty, holds several lines for a one-value flag,
/// or is set beside the variable itself is an error naming the variable.
pub fn with_secret_files(
    cmd: &clap::Command,
    mut args: Vec<std::ffi::OsString>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Vec<std::ffi::OsString>, clap::Error> {
    let bad = |msg: String| cmd.clone().error(clap::error::ErrorKind::ValueValidation, msg);
    let mut at = 1.min(args.len());
    for arg in cmd.get_arguments().filter(|a| a.is_hide_env_values_set()) {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else { continue };
        let var = var.to_string_lossy();
        let file_var = format!("{var}_FILE");
        let Some(path) = env(&file_var) else { continue };
        if env(&var).is_some() {
            return Err(bad(format!("set {var} or {file_var}, not both")));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad(format!("{file_var} {}: {e}", std::path::Path::new(&path).display())))?;
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let many = matches!(arg.get_action(), clap::ArgAction::Append);
        if lines.is_empty() || (lines.len() > 1 && !many) {
            let want = if many { "one or more lines" } else { "exactly one line" };
            return Err(bad(format!("{file_var} {}: expected {want}", std::path::Path::new(&path).display())));
        }
        for line in lines {
            args.insert(at, format!("--{long}={line}").into());
            at += 1;
        }
    }
    Ok(args)
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

    #[derive(clap::Parser, Debug)]
    struct Secrets {
        #[arg(long, env = "T_ONE", hide_env_values = true)]
        one: Option<String>,
        #[arg(long = "many", env = "T_MANY", hide_env_values = true)]
        many: Vec<String>,
        #[arg(long, env = "T_PLAIN")]
        plain: Option<String>,
    }

    #[test]
    fn secrets_come_from_files() {
        use clap::{CommandFactory, Parser};
        let dir = std::env::temp_dir().join(format!("sb-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p.into_os_string()
        };
        let (one, two, empty) = (file("one", "s3cret,x\n"), file("two", " a \n\n-b\n"), file("empty", "\n"));
        let parse = |vars: &[(&str, &std::ffi::OsString)]| {
            let env = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).clone());
            with_secret_files(&Secrets::command(), vec!["bin".into(), "--plain=p".into()], env)
                .map(|args| Secrets::try_parse_from(args).unwrap())
                .map_err(|e| e.to_string())
        };
        // (variables, one, many) or the error's words.
        let ok = parse(&[("T_ONE_FILE", &one), ("T_MANY_FILE", &two)]).unwrap();
        assert_eq!(
            (ok.one.as_deref(), ok.many.clone(), ok.plain.as_deref()),
            (Some("s3cret,x"), vec!["a".into(), "-b".into()], Some("p"))
        );
        for (vars, words) in [
            (vec![("T_ONE_FILE", &two)], "exactly one line"),
            (vec![("T_MANY_FILE", &empty)], "one or more lines"),
            (vec![("T_ONE_FILE", &one), ("T_ONE", &one)], "not both"),
            (vec![("T_ONE_FILE", &dir.join("missing").into_os_string())], "T_ONE_FILE"),
        ] {
            let err = parse(&vars).unwrap_err();
            assert!(err.contains(words), "{vars:?}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
        // Only secret flags read files.
        let plain = file("plain", "q");
        assert_eq!(parse(&[("T_PLAIN_FILE", &plain)]).unwrap().plain.as_deref(), Some("p"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
