//! `seat`: N distinct users join one room at once. Measures how long until
//! every member knows the room's full count, how many membership frames each
//! member received on the way, and the server's CPU per join.
//!
//! This is the cost of announcing joins: with `join_leave = "all"` every join
//! goes to every member already there, N²/2 frames in all; with `batched` a
//! member gets one `members_changed` per window; with `off`, none. A member is
//! seated when its join was answered and (unless the room is `off`) the count
//! it keeps from the reply and the events says everyone is in. A member
//! whose join answer more events overtook than its gateway keeps gets one
//! count-only `members_changed` (`truncated`) in any room: counted apart.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connect::ramp;
use super::Target;
use crate::conn::{Conn, Received};
use crate::procfs::cpu_secs;
use crate::report::Report;
use crate::scan::Frame;
use crate::stats::Stats;

/// Request id of the join.
const JOIN_ID: u64 = 1;

/// How the room announces joins: its namespace's `join_leave`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Announce {
    /// `joined`/`left` per user (the `ws` peer with `--announce`).
    All,
    /// `members_changed` once per window.
    Batched,
    /// Nothing (the `ws` peer without `--announce`).
    Off,
}

/// Parameters of a seat run.
#[derive(Debug, Clone, clap::Args)]
pub struct Seat {
    /// Distinct users that join the room.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// The room; its namespace on the server decides how joins are announced.
    #[arg(long, default_value = "big:seat")]
    pub room: String,
    /// What the room's namespace announces (its `join_leave`).
    #[arg(long, value_enum, default_value_t = Announce::Batched)]
    pub join_leave: Announce,
    /// Give up on seating everyone after this long; the run then reports
    /// how many were seated.
    #[arg(long, default_value = "30s", value_parser = shell::cli::duration)]
    pub timeout: Duration,
    /// The server's process id (gateway or peer), to read its CPU time from /proc.
    #[arg(long)]
    pub gateway_pid: Option<u32>,
}

/// What every member task adds up.
#[derive(Default)]
struct Shared {
    seated: AtomicUsize,
    /// Latest seating time, µs after the joins were sent.
    last_seated_us: AtomicU64,
    /// Membership events (`joined`, `left`, `members_changed`) received.
    frames: AtomicU64,
    /// Count-only `members_changed` of members attaching far behind.
    count_only: AtomicU64,
    /// Events of a kind the room should not send.
    unexpected: AtomicU64,
}

impl Seat {
    pub async fn run(&self, target: &Target, stats: Arc<Stats>) -> Report {
        let conns = ramp(target, self.members, "s", &stats).await;
        let expect = conns.len() as u64;
        let shared = Arc::new(Shared::default());
        let cpu_before = self.gateway_pid.and_then(cpu_secs);
        let started = Instant::now();
        let mut senders = Vec::with_capacity(conns.len());
        let mut readers = Vec::with_capacity(conns.len());
        for (_, conn) in conns {
            senders.push(conn.sender());
            let (room, shared, stats, mode) = (self.room.clone(), shared.clone(), stats.clone(), self.join_leave);
            readers.push(tokio::spawn(seat(conn, room, expect, mode, started, shared, stats)));
        }
        let deadline = started + self.timeout;
        while shared.seated.load(Ordering::Relaxed) < expect as usize && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let cpu_after = self.gateway_pid.and_then(cpu_secs);
        let seated = shared.seated.load(Ordering::Relaxed);
        // Late frames (a batch too many, a duplicate) still count; the
        // leaves of the close do not.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let frames = shared.frames.load(Ordering::Relaxed);
        let count_only = shared.count_only.load(Ordering::Relaxed);
        for s in &senders {
            let _ = s.close(1000).await;
        }
        for r in readers {
            if tokio::time::timeout(Duration::from_secs(5), r).await.is_err() {
                break; // a flooded reader; dropping the run ends it
            }
        }

        let params = vec![
            ("members".into(), self.members.to_string()),
            ("room".into(), self.room.clone()),
            ("join_leave".into(), format!("{:?}", self.join_leave).to_lowercase()),
            ("timeout".into(), format!("{:?}", self.timeout)),
        ];
        let mut report = Report::new("seat", &target.urls.join(","), params, &stats);
        report.figure("connected", expect as f64, "");
        report.figure("seated", seated as f64, "");
        if seated as u64 == expect && expect > 0 {
            report.figure("time to seat", shared.last_seated_us.load(Ordering::Relaxed) as f64 / 1e6, "s");
        } else {
            report.errors.push(format!(
                "{} of {expect} members not seated within {:?}",
                expect - seated as u64,
                self.timeout
            ));
        }
        report.figure("membership frames", frames as f64, "");
        report.figure("count-only catch-ups", count_only as f64, "");
        report.figure("frames per member", frames as f64 / expect.max(1) as f64, "");
        if let (Some(b), Some(a)) = (cpu_before, cpu_after) {
            report.figure("server CPU", a - b, "s");
            report.figure("server CPU per join", (a - b) * 1e6 / expect.max(1) as f64, "µs");
        }
        let unexpected = shared.unexpected.load(Ordering::Relaxed);
        if unexpected > 0 {
            let mode = format!("{:?}", self.join_leave).to_lowercase();
            report.errors.push(format!("{unexpected} membership events a `{mode}` room does not send"));
        }
        if (expect as usize) < self.members {
            report.errors.push(format!("{} of {} connections failed", self.members - expect as usize, self.members));
        }
        report
    }
}

/// One member: joins, keeps the room's count, and reads until closed.
async fn seat(
    mut conn: Conn,
    room: String,
    expect: u64,
    mode: Announce,
    started: Instant,
    shared: Arc<Shared>,
    stats: Arc<Stats>,
) {
    let sent = Instant::now();
    if conn.send(format!(r#"{{"op":"join","room":"{room}","id":{JOIN_ID}}}"#)).await.is_err() {
        stats.fail("join not sent");
        return;
    }
    let (mut count, mut replied, mut seated) = (0u64, false, false);
    while let Received::Text(t) = conn.recv().await {
        let Some(f) = Frame::parse(&t) else { continue };
        let allowed = match f.ty {
            "reply" if f.id == Some(JOIN_ID) => {
                if f.ok != Some(true) {
                    stats.fail(format!("join {}", f.error.as_ref().map_or("refused", |e| e.code)));
                    continue;
                }
                stats.record("join", sent.elapsed().as_micros() as u64);
                replied = true;
                count = f.count.unwrap_or(0);
                true
            }
            "joined" => {
                count += 1;
                mode == Announce::All
            }
            "left" => {
                count = count.saturating_sub(1);
                mode == Announce::All
            }
            "members_changed" => {
                count = f.count.unwrap_or(count);
                let count_only = f.truncated == Some(true) && mode == Announce::All;
                if count_only {
                    shared.count_only.fetch_add(1, Ordering::Relaxed);
                }
                mode == Announce::Batched || count_only
            }
            "error" => {
                stats.fail(format!("error {}", f.error.as_ref().map_or("?", |e| e.code)));
                true
            }
            _ => true,
        };
        if f.ty != "reply" && f.ty != "error" {
            shared.frames.fetch_add(1, Ordering::Relaxed);
        }
        if !allowed {
            shared.unexpected.fetch_add(1, Ordering::Relaxed);
        }
        if !seated && replied && (mode == Announce::Off || count == expect) {
            seated = true;
            shared.last_seated_us.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            shared.seated.fetch_add(1, Ordering::Relaxed);
        }
    }
}
