//! One run from several processes: `loadtest --workers N <scenario> …`.
//!
//! A process here holds at most 20,000 descriptors, and one source address
//! reaches a gateway port from about 28,000 local ports, so a run past that
//! is split. The coordinator starts N copies of itself; each is a worker
//! with its own user and room names (`w<i>-…`) and its own source addresses
//! (127.0.0.2 onwards, `--sources` of them each), and runs the scenario as
//! given: sizes are per worker. The coordinator then merges what the
//! workers wrote: counts, rates and continuity add up, latency histograms
//! merge exactly (a worker writes every recorded value and its count),
//! timelines add up second by second, and any worker's correctness error
//! fails the run.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context as _;
use serde_json::Value;

use crate::report::Report;

/// Set in a worker's environment: `<index>/<count>`.
pub const WORKER_ENV: &str = "SB_LOADTEST_WORKER";
/// Set in a worker's environment: where it writes its report.
const OUTPUT_ENV: &str = "SB_LOADTEST_WORKER_JSON";

/// This process's share of a split run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The shard this process runs, when it is a worker.
    pub fn from_env() -> Option<Self> {
        let v = std::env::var(WORKER_ENV).ok()?;
        let (index, count) = v.split_once('/')?;
        let shard = Self { index: index.parse().ok()?, count: count.parse().ok()? };
        (shard.index < shard.count).then_some(shard)
    }

    /// The names of this worker's users and rooms start with this.
    pub fn prefix(&self) -> String {
        format!("w{}-", self.index)
    }

    /// Its first source address's last octet: workers take consecutive
    /// blocks of `sources` addresses from 127.0.0.2.
    pub fn first_source(&self, sources: u8) -> u8 {
        let octet = 2 + self.index * usize::from(sources.max(1));
        u8::try_from(octet).unwrap_or(254).min(254)
    }
}

/// Where a worker writes its report, if it is one.
pub fn output() -> Option<PathBuf> {
    std::env::var_os(OUTPUT_ENV).map(PathBuf::from)
}

/// Runs `count` workers with this process's arguments and merges their reports.
pub async fn coordinate(count: usize, dir: &Path) -> anyhow::Result<Report> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    let exe = std::env::current_exe().context("the loadtest binary")?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let mut children = Vec::new();
    for index in 0..count {
        let out = dir.join(format!("worker-{index}.json"));
        let _ = std::fs::remove_file(&out);
        let log = std::fs::File::create(dir.join(format!("worker-{index}.txt")))?;
        let child = tokio::process::Command::new(&exe)
            .args(&args)
            .env(WORKER_ENV, format!("{index}/{count}"))
            .env(OUTPUT_ENV, &out)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker")?;
        children.push((index, out, child));
    }
    let mut reports = Vec::new();
    for (index, out, mut child) in children {
        let status = child.wait().await?;
        let Ok(text) = std::fs::read_to_string(&out) else {
            let log = std::fs::read_to_string(dir.join(format!("worker-{index}.txt"))).unwrap_or_default();
            let last: Vec<&str> = log.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
            anyhow::bail!("worker {index} ({status}) wrote no report; it said:\n{}", last.join("\n"));
        };
        reports.push(serde_json::from_str::<Value>(&text).with_context(|| format!("{}", out.display()))?);
    }
    Ok(Report::merge(&reports))
}
