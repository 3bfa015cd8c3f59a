#!/usr/bin/env bash
# One-time set-up of a fresh Debian 12 machine for building kemibox.
#
# Installs what the machine lacks and nothing else, idempotently:
#   - the wasm32-wasip2 Rust target (the Lua guest is built for it);
#   - python3-venv (Debian's python3 needs it to create a venv);
#   - SIPp, which the end-to-end tests drive calls with;
#   - zig 0.17 (the ziglang Python package) in build/zig-venv: its clang 22
#     compiles Lua with the wasm exception-handling the guest needs
#     (Debian's clang-19 cannot; see docs/architecture.md).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/build/zig-venv"
zig_version=0.17.0

step() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

step "Rust target wasm32-wasip2"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
else
    echo "already installed"
fi

step "python3 with venv support"
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    as_root apt-get update
    as_root apt-get install -y python3-venv
else
    echo "already available"
fi

step "SIPp (sip-tester), for the end-to-end tests"
if ! command -v sipp >/dev/null 2>&1; then
    as_root apt-get update
    as_root apt-get install -y sip-tester
else
    echo "already installed"
fi

step "zig $zig_version (ziglang) in build/zig-venv"
if [ -x "$venv/bin/python" ] && [ "$("$venv/bin/python" -m ziglang version 2>/dev/null)" = "$zig_version" ]; then
    echo "already installed"
else
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "ziglang==$zig_version"
    echo "installed: zig $("$venv/bin/python" -m ziglang version)"
fi

step "done: cargo build now builds the guest and the kemibox binary"
