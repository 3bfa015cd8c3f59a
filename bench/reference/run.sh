#!/usr/bin/env bash
# The reference script benchmark: Kamailio 5.6 (A) and kemibox (B) run the
# same scripts/reference.lua, unchanged, with the modules it calls (htable,
# pike, permissions, acc, auth_db, registrar, ...) on SQLite, side by side
# through ../shared/bench/compare.sh.
#
#   bench/reference/run.sh [--rates "500 1000 2000"] [--duration 10] [--reps 2]
#       [--kemibox PATH] [--out DIR]
#
# Calls (INVITE, 100, 180, 200, ACK, BYE, 200; the shared harness's
# uac_rr.xml / uas_rr.xml) go from SIPp at 127.0.0.1:5070 through the proxy
# to the callee `service`, registered (REGISTER with digest auth through the
# same script) with contact 127.0.0.1:5080 before the run, found by
# KSR.registrar.lookup, record-routed, and accounted: each call writes an
# `acc` row for its INVITE and one for its BYE.
#
# The caller's From is no local user, so the script does not challenge it
# (as Kamailio's example relays calls from other domains to local users);
# its source is the proxy's own address, so the htable ban and pike checks
# are skipped by `is_myself_srcip`, on both proxies alike.
#
# Output: the compare.sh table (stdout and OUT/compare-*/table.md).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
SHARED=${BENCH_HARNESS:-$REPO/../shared/bench}
RATES="500 1000 2000" DUR=10 REPS=2 KEMIBOX="$REPO/target/release/kemibox" OUT="$HERE/results"
SCHEMA_DIR=${KAMAILIO_SCHEMA_DIR:-/usr/share/kamailio/db_sqlite}
while [ $# -gt 0 ]; do
  case "$1" in
    --rates) RATES=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --kemibox) KEMIBOX=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -x "$KEMIBOX" ] || { echo "run.sh: no kemibox at $KEMIBOX (cargo build --release -p kemibox)" >&2; exit 3; }
command -v kamailio >/dev/null || { echo "run.sh: kamailio missing ($SHARED/install.sh)" >&2; exit 3; }
command -v sqlite3 >/dev/null || { echo "run.sh: sqlite3 missing (apt-get install sqlite3)" >&2; exit 3; }

WORK=$(mktemp -d /tmp/kemibox-refbench-XXXXXX)
PASSWORD=service-secret
SCRIPT="$REPO/scripts/reference.lua"

# Kamailio's database: its own schema files, the callee as a subscriber
# (HA1 only).
KDB="$WORK/kamailio.sqlite"
for f in standard auth_db usrloc htable permissions acc; do
  sqlite3 "$KDB" < "$SCHEMA_DIR/$f-create.sql"
done
HA1=$(printf 'service:127.0.0.1:%s' "$PASSWORD" | md5sum | cut -d' ' -f1)
sqlite3 "$KDB" "INSERT INTO subscriber(username, domain, password, ha1, ha1b) VALUES ('service', '127.0.0.1', '', '$HA1', '');"
export REFBENCH_LUA="$SCRIPT" REFBENCH_DB_URL="sqlite://$KDB"
KAMAILIO_CMD="kamailio -f $HERE/kamailio-reference.cfg -DD -E -m 1024 -M 16 -n 4 -Y $WORK/kamrun"
mkdir -p "$WORK/kamrun"

# kemibox's database and configuration: the same settings as the
# Kamailio side (ipban table in the database, pike, acc flags 1/2/3).
"$KEMIBOX" user add "service@127.0.0.1" "$PASSWORD" --db "$WORK/kemibox.sqlite" >/dev/null
cat > "$WORK/kemibox.toml" <<EOF
script = "$SCRIPT"
listen = ["udp:127.0.0.1:5060"]
log = "warn"
defines = ["WITH_AUTH", "WITH_NAT"]
[database]
sqlite = "$WORK/kemibox.sqlite"
[[htable]]
name = "ipban"
size = 8
autoexpire = 300
dbtable = "htable"
dbmode = 1
[pike]
sampling_time_unit = 2
reqs_density_per_unit = 16
remove_latency = 4
[acc]
log_flag = 1
db_flag = 1
log_missed_flag = 2
db_missed_flag = 2
failed_transaction_flag = 3
EOF
KEMIBOX_CMD="exec env KEMIBOX_CACHE_DIR=$WORK/cache $KEMIBOX run --config $WORK/kemibox.toml"

# Register `service` through each proxy once (401, then 200): its binding
# is written to the proxy's database and loaded by every later start.
register() {
  local name=$1 cmd=$2
  bash -c "$cmd" > "$WORK/$name-register.log" 2>&1 &
  local pid=$!
  sleep 2
  sipp -i 127.0.0.1 -nostdin -sf "$REPO/tests/sipp/reg_auth.xml" 127.0.0.1:5060 -p 5080 -m 1 \
    -au service -ap "$PASSWORD" -key user service -key contact_port 5080 -key expires 3600 \
    -timeout 10s -timeout_error > /dev/null 2>&1 \
    || { echo "run.sh: $name: REGISTER failed (see $WORK/$name-register.log)" >&2; kill -TERM $pid; exit 3; }
  kill -TERM $pid
  wait $pid 2>/dev/null || true
}
register kamailio "exec $KAMAILIO_CMD"
register kemibox "$KEMIBOX_CMD"

"$SHARED/compare.sh" \
  --label-a kamailio --proxy-a "exec $KAMAILIO_CMD -P \$BENCH_RUN/kamailio.pid" \
  --label-b kemibox --proxy-b "$KEMIBOX_CMD" \
  --scenario call --rates "$RATES" --duration "$DUR" --reps "$REPS" --out "$OUT"
echo "acc rows: kamailio $(sqlite3 "$KDB" 'SELECT count(*) FROM acc'), kemibox $(sqlite3 "$WORK/kemibox.sqlite" 'SELECT count(*) FROM acc')"
echo "work files in $WORK"
