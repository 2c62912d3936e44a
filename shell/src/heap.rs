//! Giving freed heap back to the operating system.
//!
//! glibc's allocator returns memory by itself only from the top of a heap.
//! What a burst frees in the middle (a reconnect storm, a room announcing
//! thousands of joins, a catch-up) stays in the process's RSS, where an
//! operator, a memory limit and the sizing model all see it as used.
//! Measured (docs/benchmarks.md): one gateway holding 16,000 connections
//! in rooms of 100 after their joins were announced was at 86.5 MiB, and
//! 76.6 MiB after one `malloc_trim(0)`; without the announcements it was at
//! 70.1 MiB and the trim returned nothing.
//!
//! So every process trims every [`INTERVAL`], on a blocking thread (the trim
//! takes each arena's lock in turn, so it must not hold up a runtime
//! worker). What came back is counted from the RSS before and after
//! (`switchboard_heap_returned_bytes_total`), and each trim is timed
//! (`switchboard_heap_trim_seconds`). Other allocators (musl) return memory
//! their own way: there the task does nothing.

use std::time::Duration;

/// How often freed memory goes back. Long enough that pages a steady load
/// reuses are not given back and faulted in again many times a minute.
const INTERVAL: Duration = Duration::from_secs(10);

/// Trims every [`INTERVAL`], for the life of the runtime.
pub fn spawn_trimmer() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    metrics::describe_counter!(
        "switchboard_heap_returned_bytes_total",
        "Resident memory freed heap gave back to the OS at the periodic trims."
    );
    metrics::describe_histogram!("switchboard_heap_trim_seconds", "Time one trim of the freed heap took.");
    metrics::counter!("switchboard_heap_returned_bytes_total").absolute(0);
    tokio::spawn(async {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if tokio::task::spawn_blocking(trim).await.is_err() {
                return;
            }
        }
    });
}

/// One trim, measured.
fn trim() {
    let before = resident_bytes();
    let started = std::time::Instant::now();
    release();
    metrics::histogram!("switchboard_heap_trim_seconds").record(started.elapsed().as_secs_f64());
    if let (Some(before), Some(after)) = (before, resident_bytes()) {
        metrics::counter!("switchboard_heap_returned_bytes_total").increment(before.saturating_sub(after));
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release() {
    // SAFETY: malloc_trim has no preconditions; 0 keeps no padding at the top.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() {}

/// The process's resident set, from `/proc/self/statm` (pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Freed blocks in the middle of the heap come back only with a trim:
    /// a live block at the end keeps free() from returning them itself.
    #[test]
    fn a_trim_returns_what_a_burst_freed() {
        // Many small blocks (below the mmap threshold, so on the heap), then
        // one kept after them, then the rest freed.
        let burst: Vec<Box<[u8; 512]>> = (0..100_000).map(|i| Box::new([i as u8; 512])).collect();
        let kept = Box::new([1u8; 512]);
        let held = resident_bytes().expect("statm");
        drop(burst);
        let freed = resident_bytes().expect("statm");
        trim();
        let trimmed = resident_bytes().expect("statm");
        assert_eq!(kept[0], 1);
        assert!(
            freed.saturating_sub(trimmed) > 30 << 20,
            "the trim, not the free, gives back most of 50 MiB: held {held}, freed {freed}, trimmed {trimmed}"
        );
    }
}
