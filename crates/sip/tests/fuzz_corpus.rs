//! Replays, on stable Rust, what the cargo-fuzz targets check
//! (`fuzz/`, docs/fuzzing.md): the same `fuzz_support` checks over
//!
//! - `fuzz/regressions/<target>/*`: inputs that once crashed a target;
//! - `fuzz/seeds/<target>/*`: a small committed corpus;
//! - every SIP fixture (`tests/fixtures/messages`, the RFC 4475 messages),
//!   whole and cut at every length (parse, frame), and every fixture
//!   under a fixed set of edit sequences (edits).
//!
//! So CI exercises the fuzz checks without nightly or libFuzzer.

mod fuzz_support;

use std::path::{Path, PathBuf};

use fuzz_support::{check_edits, check_frame, check_parse, run_edits};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    files
}

fn fixtures() -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for dir in [
        "tests/fixtures/messages",
        "tests/fixtures/torture/valid",
        "tests/fixtures/torture/invalid",
    ] {
        for path in files_in(&root().join(dir)) {
            all.push(std::fs::read(path).unwrap());
        }
    }
    assert!(all.len() > 50, "fixtures found: {}", all.len());
    all
}

/// Runs `check` on every committed input of `target`; returns how many.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let mut n = 0;
    for kind in ["regressions", "seeds"] {
        for path in files_in(&root().join("fuzz").join(kind).join(target)) {
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(result.is_ok(), "{} fails", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn parse_target_checks_hold() {
    replay("parse", check_parse);
    for data in fixtures() {
        for end in 0..=data.len() {
            check_parse(&data[..end]);
        }
    }
}

#[test]
fn frame_target_checks_hold() {
    replay("frame", check_frame);
    for data in fixtures() {
        for end in 0..=data.len() {
            check_frame(&data[..end]);
        }
        // Two messages back to back, as on a TCP stream.
        let mut stream = data.clone();
        stream.extend_from_slice(&data);
        check_frame(&stream);
    }
}

#[test]
fn edits_target_checks_hold() {
    let seeds = replay("edits", check_edits);
    assert!(seeds > 0, "fuzz/seeds/edits is empty");
    for path in files_in(&root().join("fuzz/seeds/edits")) {
        let data = std::fs::read(&path).unwrap();
        assert!(
            run_edits(&data).is_some(),
            "{} edits no message",
            path.display()
        );
    }
    // Every fixture under 256 edit sequences, through the same arbitrary
    // decoding the fuzzer uses: byte patterns, not hand-built structs.
    let (mut runs, mut edited) = (0, 0);
    for fixture in 0..fuzz_support::FIXTURES.len() as u8 {
        for pattern in 0u8..=255 {
            let mut input = vec![0, 0, 0, 0, fixture];
            input.extend(
                (0..48u8).map(|i| pattern.wrapping_mul(31).wrapping_add(i.wrapping_mul(7))),
            );
            let applied = run_edits(&input).expect("fixtures parse");
            runs += 1;
            edited += usize::from(applied > 0);
        }
    }
    // The sequences really edit (they are not all refused by the API).
    assert!(edited * 4 > runs, "{edited} of {runs} runs applied an edit");
}
