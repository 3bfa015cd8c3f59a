#!/bin/bash
# Tenant isolation latency (docs/isolation.md): one `kemibox run` with two
# tenants, `a` on 127.0.0.1:27060 and `b` on 127.0.0.1:27061, and a SIPp UAS
# for b's calls; then, for each MODE in order, 1,000 SIPp calls to b at
# 100/s, with (`loop`) or without (`idle`) 1,000 INVITEs sent to a
# meanwhile, 10 ms apart; b's INVITE->200 percentiles printed per run.
#
#   run.sh OUTDIR MODE...        MODE = idle | loop
#
# Environment: KBIN (the kemibox binary; default target/release/kemibox),
# ASCRIPT (a's script; default the looping one), AFUEL and AREC (a's `fuel`
# and `recreations_per_second`), ABURST (send a's INVITEs in bursts of this
# many, same average rate; default 1). Needs sipp and python3.
set -eu
T=$(cd "$(dirname "$0")" && pwd -P); R=$(cd "$T/../.." && pwd -P)
D=$1; shift; rm -rf "$D"; mkdir -p "$D"; cd "$D"
cat > kemibox.toml <<TOML
listen = ["udp:127.0.0.1:27060", "udp:127.0.0.1:27061"]
log = "info"
error_reply = { code = 500, reason = "Server Error" }
[[tenant]]
id = "a"
script = "${ASCRIPT:-$R/tests/fixtures/scripts/isolation-loop.lua}"
listen = ["udp:127.0.0.1:27060"]
[tenant.limits]
deadline_ms = 50
${AFUEL:+fuel = $AFUEL}
${AREC:+recreations_per_second = $AREC}
[[tenant]]
id = "b"
script = "$R/tests/fixtures/scripts/isolation-relay.lua"
listen = ["udp:127.0.0.1:27061"]
TOML
NO_COLOR=1 KEMIBOX_DATA_DIR=$D "${KBIN:-$R/target/release/kemibox}" run --config kemibox.toml 2>kemibox.log & P=$!
until grep -q "kemibox proxy started" kemibox.log; do sleep 0.1; done
mkdir uas; (cd uas && exec sipp -i 127.0.0.1 -nostdin -sf "$R/tests/sipp/uas_rr.xml" -p 27080 >/dev/null 2>&1) & U=$!
sleep 0.5
i=0
for m in "$@"; do
  i=$((i+1)); d=$i-$m; mkdir $d
  if [ "$m" = loop ]; then python3 "$T/hammer.py" 1000 0.01 "${ABURST:-1}" > $d/hammer.txt & H=$!; fi
  (cd $d && sipp -i 127.0.0.1 -nostdin -buff_size 4194304 -sf "$R/tests/sipp/uac_rr.xml" 127.0.0.1:27061 \
     -p 27070 -r 100 -m 1000 -timeout 90s -timeout_error -trace_err -trace_msg >/dev/null 2>&1 </dev/null \
     && echo "$d: sipp exit 0" || echo "$d: sipp exit $?")
  if [ "$m" = loop ]; then wait $H; cat $d/hammer.txt; fi
  python3 "$T/rtt.py" $d/*_messages.log
  sleep 1
done
kill $P $U; wait
