//! `cargo fuzz run edits`: see docs/fuzzing.md. The checks live in
//! crates/sip/tests/fuzz_support, shared with the stable replay test.
#![no_main]

#[path = "../../crates/sip/tests/fuzz_support/mod.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| support::check_edits(data));
