#!/bin/bash
# The memory bomb (docs/isolation.md): tenant a appends 64 KiB strings to a
# global forever (memory cap 16 MiB), tenant b relays 1,000 SIPp calls
# (cap 8 MiB); kemibox's RSS is sampled meanwhile, and the instances each
# tenant created are read from /metrics at the end.
#
#   bomb.sh OUTDIR               KBIN: the kemibox binary (default: release)
set -eu
T=$(cd "$(dirname "$0")" && pwd -P); R=$(cd "$T/../.." && pwd -P)
D=$1; rm -rf "$D"; mkdir -p "$D"; cd "$D"
cat > kemibox.toml <<TOML
listen = ["udp:127.0.0.1:27060", "udp:127.0.0.1:27061"]
log = "info"
error_reply = { code = 500, reason = "Server Error" }
[metrics]
listen = "127.0.0.1:29090"
[[tenant]]
id = "a"
script = "$R/tests/fixtures/scripts/isolation-bomb.lua"
listen = ["udp:127.0.0.1:27060"]
[tenant.limits]
memory = 16777216
fuel = 100000000
[[tenant]]
id = "b"
script = "$R/tests/fixtures/scripts/isolation-relay.lua"
listen = ["udp:127.0.0.1:27061"]
[tenant.limits]
memory = 8388608
TOML
NO_COLOR=1 KEMIBOX_DATA_DIR=$D "${KBIN:-$R/target/release/kemibox}" run --config kemibox.toml 2>kemibox.log & P=$!
until grep -q "kemibox proxy started" kemibox.log 2>/dev/null; do sleep 0.1; done
mkdir uas; (cd uas && exec sipp -i 127.0.0.1 -nostdin -sf "$R/tests/sipp/uas_rr.xml" -p 27080 >/dev/null 2>&1) & U=$!
sleep 0.5
python3 "$T/bomb.py" 200 10 0.5 $P > bomb.txt & H=$!
sipp -i 127.0.0.1 -nostdin -buff_size 4194304 -sf "$R/tests/sipp/uac_rr.xml" 127.0.0.1:27061 -p 27070 -r 100 -m 1000 \
   -timeout 90s -timeout_error -trace_err >/dev/null 2>&1 </dev/null && echo "b: sipp exit 0" || echo "b: sipp exit $?"
wait $H; cat bomb.txt
grep -o 'outcome="[a-z-]*"' kemibox.log | sort | uniq -c
python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:29090/metrics').read().decode())" | grep instances_created
kill $P $U; wait
