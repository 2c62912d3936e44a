//! The fuzz corpus, replayed on stable without libFuzzer.
//!
//! `fuzz/` holds cargo-fuzz targets for the decoders that read untrusted
//! bytes; `fuzz/corpus/<target>/` keeps their seeds and every input that once
//! crashed or hung one of them. This test feeds each file (and whatever a
//! local run left in `fuzz/artifacts/<target>/`) through the target's own
//! check, `fuzz/properties.rs`, so `cargo test` guards the fixes without
//! nightly or cargo-fuzz.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/properties.rs"]
mod properties;

/// The committed corpus stays small: `cargo fuzz cmin` it past this.
const MAX_CORPUS_FILES: usize = 400;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every input of `target`: its corpus (which must not be empty) and local artifacts.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in [fuzz_dir().join("corpus").join(target), fuzz_dir().join("artifacts").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten().filter(|e| e.path().is_file()) {
            files.push((entry.path(), std::fs::read(entry.path()).unwrap()));
        }
    }
    assert!(!files.is_empty(), "no corpus for {target} in {}", fuzz_dir().join("corpus").display());
    files
}

/// Runs `check` on every input, naming the file whose input panicked.
fn replay(target: &str, check: impl Fn(&[u8])) {
    for (path, data) in inputs(target) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data))).is_err() {
            panic!("{target}: {} panicked", path.display());
        }
    }
}

#[test]
fn the_committed_corpus_is_small_and_covers_every_target() {
    let corpus = fuzz_dir().join("corpus");
    let mut total = 0;
    for target in ["client_json", "client_proto", "token", "frame_reader", "bus_message"] {
        let n = std::fs::read_dir(corpus.join(target)).map(|d| d.count()).unwrap_or(0);
        assert!(n > 0, "fuzz/corpus/{target} is empty");
        assert!(fuzz_dir().join(format!("fuzz_targets/{target}.rs")).is_file(), "no fuzz target {target}");
        total += n;
    }
    assert!(total <= MAX_CORPUS_FILES, "{total} corpus files: minimise with `cargo fuzz cmin`");
}

#[test]
fn client_json() {
    replay("client_json", properties::client_json);
}

#[test]
fn client_proto() {
    replay("client_proto", properties::client_proto);
}

#[test]
fn token() {
    replay("token", properties::token);
}

#[test]
fn frame_reader() {
    replay("frame_reader", properties::frame_reader);
}

#[test]
fn bus_message() {
    replay("bus_message", properties::bus_message);
}
