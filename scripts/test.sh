#!/usr/bin/env bash
# The test command (README.md): set up what is missing, check formatting
# and lints, then run every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "==> cargo fmt --check"
cargo fmt --all -- --check
(cd guest-lua && cargo fmt -- --check)
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
(cd guest-lua && cargo clippy --release --locked --target-dir ../target/guest -- -D warnings)
echo "==> cargo test"
cargo test --workspace --locked
