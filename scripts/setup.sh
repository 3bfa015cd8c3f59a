#!/usr/bin/env bash
# One-time set-up of a fresh Debian 12 machine for building kemibox.
#
# Installs what the machine lacks and nothing else, idempotently:
#   - the wasm32-wasip2 Rust target (the Lua guest is built for it);
#   - python3-venv (Debian's python3 needs it to create a venv);
#   - SIPp, which the end-to-end tests drive calls with;
#   - redis-server and PostgreSQL, whose binaries the kemibox-store tests
#     run as private servers (no system service is left running or enabled);
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

# apt-get install without letting the packages start their services: the
# store tests start private servers on free ports and want none holding
# the default ones. policy-rc.d (see invoke-rc.d(8)) answering 101 vetoes
# the start; an existing one (Docker images have it) is left alone.
install_without_service() {
    as_root apt-get update
    if [ -e /usr/sbin/policy-rc.d ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
        return
    fi
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod 755 /usr/sbin/policy-rc.d
    trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
    as_root rm -f /usr/sbin/policy-rc.d
    trap - EXIT
}

# Stop the service a package installed and keep it from starting at boot,
# with systemd or without it (containers have no running systemd, but
# `systemctl disable` still removes the unit's links offline).
disable_service() {
    if command -v systemctl >/dev/null 2>&1; then
        as_root systemctl disable "$1" >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null 2>&1; then
        as_root update-rc.d "$1" disable >/dev/null 2>&1 || true
    fi
    if [ -d /run/systemd/system ]; then
        as_root systemctl stop "$1" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$1" ]; then
        as_root "/etc/init.d/$1" stop >/dev/null 2>&1 || true
    fi
}

step "redis-server, for the kemibox-store tests"
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
    install_without_service redis-server
    disable_service redis-server
    echo "installed: $(/usr/bin/redis-server --version)"
else
    echo "already installed"
fi

step "PostgreSQL, for the kemibox-store tests"
if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
    install_without_service postgresql
    disable_service postgresql
    echo "installed: $(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n1)"
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
