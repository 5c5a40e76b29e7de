//! Replays the fuzz corpus: every input kept in `rust/fuzz/corpus/<target>/` (seeds, inputs
//! that reached new paths, and the inputs of fixed bugs) must still satisfy the harness's
//! invariant; then a short deterministic run of freshly generated inputs per target. This is
//! also what `make memcheck` runs under valgrind.
//!
//! The harness is the fuzz crate's own source file, included here so that `cargo test`
//! checks the same invariant as `make fuzz` without building the fuzz crate.

#[allow(dead_code)]
#[path = "../../fuzz/src/harness.rs"]
mod harness;

use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

#[test]
fn fuzz_corpus_still_passes() {
    let mut replayed = 0;
    let mut failures = Vec::new();
    for target in harness::TARGETS {
        let dir = corpus_dir().join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus directory {} unreadable: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for path in files {
            let data = std::fs::read(&path).expect("corpus file");
            replayed += 1;
            if let Err(report) = harness::run(target, &data) {
                failures.push(format!("{}:\n{report}", path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {replayed} corpus inputs fail:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(replayed >= 40, "only {replayed} corpus inputs found");
}

/// A few hundred generated inputs per target, always the same ones (valgrind runs this too,
/// so keep it short).
#[test]
fn generated_inputs_pass() {
    let mut state = 0x5eed_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for target in harness::TARGETS {
        for k in 0..300 {
            let len = (next() % 96) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Err(report) = harness::run(target, &data) {
                panic!("{target}, generated input {k} ({data:?}):\n{report}");
            }
        }
    }
}
