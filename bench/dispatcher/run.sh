#!/usr/bin/env bash
# The dispatcher + dialog benchmark: Kamailio 5.6 (A) and kemibox (B) run the
# same bench/dispatcher/dispatcher.lua, unchanged, side by side, on the shared
# harness (../shared/bench: its SIPp scenarios and lib/benchlib.py).
#
#   bench/dispatcher/run.sh [--rates "250 500 1000 2000"] [--duration 10] [--reps 2]
#       [--hold-ms 1000] [--servers "kamailio kemibox"] [--kemibox PATH]
#       [--kemibox-config FILE] [--kemibox-args "ARGS"]
#       [--kamailio-workers 4] [--down-uas PORT] [--no-rpc] [--stop-after N] [--grace 20]
#       [--out DIR]
#
# --servers   which proxies, in A B order (also from the SERVERS variable):
#             `kamailio`, `kemibox` or both (default); SERVERS=kamailio runs
#             Kamailio alone, e.g. while kemibox is not built
# --kemibox-config  kemibox's configuration (default: kemibox.toml here; its
#             [admin] must stay listen 127.0.0.1:5069, token "dsbench": run.sh
#             queries it)
# --kemibox-args  extra arguments for `kemibox run` (word-split)
# --hold-ms   how long each call stays up between ACK and BYE (SIPp -d), so
#             that rate x hold calls are in the dialog profile at once
# --down-uas  do not start the UAS on this port (5080, 5081 or 5082): its
#             calls must fail over through ds_next_dst with 0 failed calls
# --no-rpc    do not read the profile over the admin RPC (nor check it): for a
#             proxy without dlg.profile_get_size
# --stop-after  stop raising the rate for a proxy after N rates in a row that
#             were not clean (default 0: every rate)
#
# Topology, all on 127.0.0.1 over UDP:
#   SIPp UAC :5070 -> proxy :5060 -> SIPp UAS :5080, :5081, :5082 (set 1 of
#   dispatcher.list, chosen round robin by ds_select_dst(1, 4))
# A call is INVITE, 100, 180, 200, ACK, hold, BYE, 200 (the harness's
# uac_rr.xml / uas_rr.xml). The proxy tracks it as a dialog (dlg_manage) in
# the profile `calls`, record-routes it and relays ACK and BYE by
# loose_route.
#
# Per point: three fresh UAS, the proxy (Kamailio: kamailio-dispatcher.cfg,
# -n workers as bench/reference; kemibox: kemibox.toml), one OPTIONS to see
# it answer, SIPp at the rate while the profile size is read every second
# over the proxy's admin RPC (kamcmd / kemibox ctl: dlg.profile_get_size
# calls), then, after the last call, the time until the profile is empty,
# `dispatcher.list` (and Kamailio's dialog statistics), and SIGTERM to all.
# A point is clean when the harness calls it clean (every planned call
# attempted, 0 failed, retransmissions of the UAC and the three UAS < 0.1 %
# of messages) and the script did its work: every UAS got a third of the
# calls, the profile held rate x hold calls (+-25 %) and was empty after.
#
# Output: <out>/dispatcher-<date>-<pid>/ with points.tsv, table.md (also
# printed), setup.txt and one folder per point (SIPp statistics of the UAC
# and of each UAS, proxy.log, profile.tsv, the RPC answers, result.tsv).
# Exit status: 0 = the points ran (clean or not), 2 = usage, 3 = setup failure.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
SHARED=${BENCH_HARNESS:-$REPO/../shared/bench}

RATES="250 500 1000 2000" DUR=10 REPS=2 HOLD=1000 GRACE=20 STOP=0 KWORKERS=4
SERVERS=${SERVERS:-"kamailio kemibox"} KEMIBOX="$REPO/target/release/kemibox" KEMIBOX_ARGS=""
DOWN="" RPC=1 OUT="$HERE/results" KCONF="$HERE/kemibox.toml"
UAS_PORTS="5080 5081 5082" ADMIN_PORT=5069 ADMIN_TOKEN=dsbench   # kemibox.toml's [admin]

die() { echo "run.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rates) RATES=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --hold-ms) HOLD=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --kemibox) KEMIBOX=$2; shift 2 ;;
    --kemibox-args) KEMIBOX_ARGS=$2; shift 2 ;;
    --kemibox-config) KCONF=$2; shift 2 ;;
    --kamailio-workers) KWORKERS=$2; shift 2 ;;
    --down-uas) DOWN=$2; shift 2 ;;
    --no-rpc) RPC=0; shift ;;
    --stop-after) STOP=$2; shift 2 ;;
    --grace) GRACE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[ -n "$RATES" ] || die "--rates is empty"
for r in $RATES; do [[ "$r" =~ ^[1-9][0-9]*$ ]] || die "bad rate: $r"; done
[[ "$DUR" =~ ^[1-9][0-9]*$ ]] || die "--duration must be a positive integer"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer"
[[ "$HOLD" =~ ^[0-9]+$ ]] || die "--hold-ms must be an integer"
[[ "$GRACE" =~ ^[0-9]+$ ]] || die "--grace must be an integer"
[[ "$STOP" =~ ^[0-9]+$ ]] || die "--stop-after must be an integer"
[[ "$KWORKERS" =~ ^[1-9][0-9]*$ ]] || die "--kamailio-workers must be a positive integer"
[ -z "$DOWN" ] || [[ " $UAS_PORTS " == *" $DOWN "* ]] || die "--down-uas must be one of $UAS_PORTS"
SIDES=""
for s in $SERVERS; do
  case "$s" in
    kamailio) [[ " $SIDES " == *" A "* ]] || { SIDES="$SIDES A"; } ;;
    kemibox) [[ " $SIDES " == *" B "* ]] || { SIDES="$SIDES B"; } ;;
    *) die "--servers: kamailio and/or kemibox, not $s" ;;
  esac
done
[ -n "$SIDES" ] || die "--servers is empty"
case "$KEMIBOX" in /*) ;; *) KEMIBOX="$PWD/$KEMIBOX" ;; esac
case "$KCONF" in /*) ;; *) KCONF="$PWD/$KCONF" ;; esac

LIB="$SHARED/lib"
export BENCH_LIB="$LIB"
py() { python3 "$HERE/dsbench.py" "$@"; }
bl() { python3 "$LIB/benchlib.py" "$@"; }
for b in sipp timeout python3; do command -v $b >/dev/null || { echo "run.sh: $b not found ($SHARED/install.sh)" >&2; exit 3; }; done
[ -r "$LIB/benchlib.py" ] && [ -r "$SHARED/scenarios/uac_rr.xml" ] \
  || { echo "run.sh: no shared harness at $SHARED (set BENCH_HARNESS)" >&2; exit 3; }
if [[ " $SIDES " == *" A "* ]]; then
  command -v kamailio >/dev/null && command -v kamcmd >/dev/null \
    || { echo "run.sh: kamailio or kamcmd missing ($SHARED/install.sh); SERVERS=kemibox skips it" >&2; exit 3; }
fi
if [[ " $SIDES " == *" B "* ]]; then
  [ -x "$KEMIBOX" ] || { echo "run.sh: no kemibox at $KEMIBOX (cargo build --release -p kemibox, or --kemibox PATH; SERVERS=kamailio skips it)" >&2; exit 3; }
  [ -r "$KCONF" ] || { echo "run.sh: no kemibox configuration at $KCONF" >&2; exit 3; }
fi
for p in 5060 5070 $UAS_PORTS; do
  bl port-used "$p" && { echo "run.sh: udp port $p is already in use; not starting" >&2; exit 3; }
done

mkdir -p "$OUT" || exit 3
DIR="$(cd "$OUT" && pwd -P)/dispatcher-$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$DIR" || exit 3
# The binrpc socket lives in /tmp: a unix socket path must stay short.
CTL=/tmp/dsbench-$$.ctl
log() { echo "[dispatcher $(date +%T)] $*" >&2; }
log "results in $DIR"
{
  echo "date: $(date -Is)  host: $(uname -n)  cores: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rates=$RATES duration=$DUR reps=$REPS hold_ms=$HOLD grace=$GRACE servers=$SERVERS down_uas=${DOWN:--} rpc=$RPC"
  echo "sipp: $(sipp -v 2>&1 | grep -m1 -o 'SIPp v[^ ]*')"
  [[ " $SIDES " == *" A "* ]] && echo "A=kamailio: $(kamailio -v 2>&1 | head -1), $KWORKERS UDP workers"
  [[ " $SIDES " == *" B "* ]] && echo "B=kemibox: $KEMIBOX --config $KCONF $KEMIBOX_ARGS ($("$KEMIBOX" --version 2>&1 | head -1))"
  git -C "$REPO" log -1 --format='tree: %h %s' 2>/dev/null
} > "$DIR/setup.txt"

# ---------------------------------------------------------------------------
STARTED=()   # PIDs we started (each the root of one tool's process tree)
alive() { [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
stop_tree() { # ROOT: SIGTERM the root (timeout relays it), wait <= 15 s, then TERM/KILL what is left, by PID
  local root=$1 pids p x i
  pids=$(bl tree "$root")
  [ -n "$pids" ] || { wait "$root" 2>/dev/null; return 0; }
  kill -TERM "$root" 2>/dev/null
  for i in $(seq 150); do
    p=""; for x in $pids; do alive "$x" && p="$p $x"; done
    [ -z "$p" ] && break
    sleep 0.1
    [ "$i" = 100 ] && kill -TERM $p 2>/dev/null
  done
  [ -n "$p" ] && { log "KILL left-overs:$p"; kill -KILL $p 2>/dev/null; }
  wait "$root" 2>/dev/null
  return 0
}
cleanup() { local i; for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_tree "${STARTED[$i]}"; done; STARTED=(); rm -f "$CTL"; }
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

wait_port() { # PORT SECONDS PID: until PORT is bound (and PID alive)
  local i=0
  while [ $i -lt $(($2 * 10)) ]; do
    bl port-used "$1" && return 0
    alive "$3" || return 1
    sleep 0.1; i=$((i + 1))
  done
  return 1
}
child_cpu() { # FILE: user+sys seconds of this shell's reaped children (`times`, line 2) into FILE.
  # `times` must run in this shell: in a $(...) subshell the children's counters start at 0.
  times > "$1.times"
  awk 'NR==2 { t=0; for (i=1;i<=2;i++) { split($i,a,"m"); t+=a[1]*60+a[2] } printf "%.3f\n", t }' "$1.times" > "$1"
  rm -f "$1.times"
}

# rpc LABEL METHOD [ARGS...]: the proxy's admin RPC, answer on stdout
rpc() {
  local label=$1; shift
  if [ "$label" = kamailio ]; then
    timeout 5 kamcmd -s "unix:$CTL" "$@"
  else
    timeout 5 "$KEMIBOX" ctl --url "http://127.0.0.1:$ADMIN_PORT/" --token "$ADMIN_TOKEN" --timeout 3 "$@"
  fi
}
# profile_size LABEL: the size of the profile `calls`, or nothing
profile_size() { rpc "$1" dlg.profile_get_size calls 2>/dev/null | py rpc-int 2>/dev/null; }

# run_point SIDE RATE REP: one point; appends one line to points.tsv
run_point() {
  local side=$1 rate=$2 rep=$3 label run n limit ppid rc e0 e1 pt0 pt1 st0 st1 t0 t1 drops load ans
  local upids="" p cmd spid sampler after after_s processed i
  if [ "$side" = A ]; then label=kamailio; else label=kemibox; fi
  run="$DIR/r$rate-rep$rep-$label"; mkdir -p "$run"
  n=$((rate * DUR)); limit=$((DUR + GRACE + HOLD / 1000 + 90))
  for p in 5060 5070 $UAS_PORTS; do
    bl port-used "$p" && { log "udp port $p in use before $label rate=$rate rep=$rep"; return 1; }
  done
  load=$(cut -d' ' -f1 /proc/loadavg)
  log "$label rate=$rate rep=$rep: $n calls held ${HOLD} ms, loadavg $load"

  # 1. the three UAS (each in its own folder: SIPp names its files after the scenario)
  for p in $UAS_PORTS; do
    [ "$p" = "$DOWN" ] && continue
    mkdir -p "$run/uas-$p"
    ( cd "$run/uas-$p" && exec timeout -k 5 $limit sipp -sf "$SHARED/scenarios/uas_rr.xml" -p "$p" \
        -i 127.0.0.1 -nostdin -buff_size 4194304 -default_behaviors all,-abortunexp \
        -trace_stat -stf uas.stat.csv -fd 1 -trace_err -error_file uas_err.log ) \
      >"$run/uas-$p/uas.out" 2>&1 </dev/null &
    STARTED+=("$!"); upids="$upids $!"
    wait_port "$p" 10 "$!" || { log "UAS on $p did not start; see $run/uas-$p/uas.out"; cleanup; return 1; }
  done

  # 2. the proxy
  if [ "$side" = A ]; then
    cmd=(env DSBENCH_LUA="$HERE/dispatcher.lua" DSBENCH_LIST="$HERE/dispatcher.list" DSBENCH_CTL="unix:$CTL"
         kamailio -f "$HERE/kamailio-dispatcher.cfg" -DD -E -m 1024 -M 16 -n "$KWORKERS" -Y "$run" -P "$run/kamailio.pid")
  else
    # shellcheck disable=SC2206
    cmd=(env KEMIBOX_CACHE_DIR="$DIR/kemibox-cache" "$KEMIBOX" run --config "$KCONF" $KEMIBOX_ARGS)
  fi
  printf '%q ' "${cmd[@]}" > "$run/proxy.cmd"; echo >> "$run/proxy.cmd"
  timeout -k 5 $limit "${cmd[@]}" >"$run/proxy.log" 2>&1 </dev/null &
  ppid=$!; STARTED+=("$ppid")
  ans=$(py probe 5060 30 "$ppid"); rc=$?
  if [ $rc -ne 0 ]; then
    log "$label did not answer an OPTIONS on udp 127.0.0.1:5060 (rc=$rc); see $run/proxy.log"
    tail -5 "$run/proxy.log" >&2; cleanup; return 1
  fi
  echo "$ans" > "$run/probe.txt"
  sleep 1   # let the other workers finish starting too
  alive "$ppid" || { log "$label exited after start; see $run/proxy.log"; cleanup; return 1; }
  if [ "$RPC" = 1 ] && ! { rpc "$label" dlg.profile_get_size calls > "$run/profile-before.txt" 2>&1 \
                            && py rpc-int < "$run/profile-before.txt" > /dev/null; }; then
    log "$label: no profile size from its admin RPC (dlg.profile_get_size calls; --no-rpc skips it): $(head -c 300 "$run/profile-before.txt")"
    cleanup; return 1
  fi

  # 3. the UAC, with the profile sampled every second beside it. The UAC's
  # CPU = growth of the reaped-children times across its run (the sampler
  # is reaped only after that reading).
  sampler=""
  if [ "$RPC" = 1 ]; then
    ( while :; do echo "$(date +%s.%N)	$(profile_size "$label")"; sleep 1; done ) > "$run/profile.tsv" 2>/dev/null &
    sampler=$!
  fi
  e0=$(bl udp-rcvbuf-errors); pt0=$(bl ticks "$ppid"); st0=$(bl ticks $upids); t0=$(date +%s.%N)
  child_cpu "$run/uac.cpu0"
  ( cd "$run" && exec timeout -k 5 $((DUR + GRACE + HOLD / 1000 + 5)) sipp -sf "$SHARED/scenarios/uac_rr.xml" 127.0.0.1:5060 \
      -p 5070 -i 127.0.0.1 -nostdin -buff_size 4194304 -default_behaviors all,-abortunexp \
      -r "$rate" -m "$n" -d "$HOLD" -l 20000 -max_socket 100 -timeout $((DUR + GRACE + HOLD / 1000))s -timeout_error \
      -trace_stat -stf uac.stat.csv -fd 1 -trace_rtt -rtt_freq 500 -trace_err -error_file uac_err.log ) \
    >"$run/uac.out" 2>&1 </dev/null &
  spid=$!; STARTED+=("$spid")
  wait "$spid"; rc=$?
  child_cpu "$run/uac.cpu1"
  t1=$(date +%s.%N); pt1=$(bl ticks "$ppid"); st1=$(bl ticks $upids); e1=$(bl udp-rcvbuf-errors); drops=$(bl sock-drops 5060)
  [ -n "$sampler" ] && { kill -TERM "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null; }
  awk 'NR==1 {a=$1} NR==2 {printf "%.3f 0 0\n", $1 - a}' "$run/uac.cpu0" "$run/uac.cpu1" > "$run/uac.time"
  rm -f "$run/uac.cpu0" "$run/uac.cpu1"
  echo "$rc" > "$run/uac.rc"
  alive "$ppid" || log "WARNING: $label died during the run (see $run/proxy.log)"

  # 4. after the last call: the profile must empty (poll up to 10 s; this
  # also gives the UAS the 1.2 s to write their last statistics row)
  after=NA after_s=NA processed=NA
  [ "$RPC" = 1 ] || sleep 1.5
  for i in $(seq 0 $((RPC * 20 - 1))); do
    sleep 0.5
    after=$(profile_size "$label"); after=${after:-NA}
    [ "$after" = 0 ] && [ "$i" -ge 2 ] && { after_s=$(awk -v i="$i" 'BEGIN { printf "%.1f", (i + 1) / 2 }'); break; }
  done
  [ "$RPC" = 1 ] && rpc "$label" dispatcher.list > "$run/dispatcher-list.txt" 2>&1
  if [ "$RPC" = 1 ] && [ "$side" = A ]; then
    rpc "$label" stats.get_statistics dialog: > "$run/dialog-stats.txt" 2>&1
    processed=$(py stat "$run/dialog-stats.txt" dialog:processed_dialogs)
  fi
  cleanup
  py summarize side="$side" rep="$rep" label="$label" rate="$rate" planned="$n" scenario=call duration="$DUR" \
    rundir="$run" t0="$t0" t1="$t1" pt0="$pt0" pt1="$pt1" st0="$st0" st1="$st1" e0="$e0" e1="$e1" \
    drops="$drops" load="$load" uas_ports="$(echo $UAS_PORTS | tr ' ' ,)" down="$DOWN" hold_ms="$HOLD" \
    dlg_after="$after" dlg_after_s="$after_s" dlg_processed="$processed" rpc="$RPC" > "$run/result.tsv" || return 1
  cat "$run/result.tsv" >> "$DIR/points.tsv"
  awk -F'\t' -v OFS=' ' 'NR==1 { for (i = 1; i <= NF; i++) h[i] = $i; next }
       { for (i = 1; i <= NF; i++) v[h[i]] = $i
         printf "[dispatcher] %s rate=%s rep=%s: ok %s/%s, retrans %s, CPU %s%% (%s us/call), p50/p99 %s/%s ms, UAS %s, dialogs peak %s/%s after %s, log warn+err %s, clean=%s\n",
           v["label"], v["rate"], v["rep"], v["successful"], v["attempted"], v["retrans"], v["proxy_cpu_pct"],
           v["cpu_us_per_call"], v["rtt_p50_ms"], v["rtt_p99_ms"], v["uas_invites"], v["dlg_peak"],
           v["dlg_expected"], v["dlg_after"], v["log_warn_err"], v["clean"] }' "$DIR/points.tsv.header" "$run/result.tsv" >&2
  return 0
}

py header > "$DIR/points.tsv"
cp "$DIR/points.tsv" "$DIR/points.tsv.header"
declare -A BAD=([A]=0 [B]=0)
for rate in $RATES; do
  for rep in $(seq "$REPS"); do
    for side in $SIDES; do
      if [ "$STOP" -gt 0 ] && [ "${BAD[$side]}" -ge "$STOP" ]; then
        log "side $side: skipping rate $rate (not clean at $STOP rates in a row)"; continue
      fi
      if ! run_point "$side" "$rate" "$rep"; then
        label=kamailio; [ "$side" = B ] && label=kemibox
        printf "%s\t%s\t%s\t%s\tERROR\n" "$side" "$rep" "$label" "$rate" >> "$DIR/points.tsv"
      fi
      sleep 1
    done
  done
  for side in $SIDES; do
    if awk -F'\t' -v s="$side" -v r="$rate" 'NR==1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
         $1==s && $(c["rate"])==r && $(c["clean"])!="yes" {b=1} END {exit !b}' "$DIR/points.tsv"; then
      BAD[$side]=$((BAD[$side] + 1)); else BAD[$side]=0; fi
  done
done
rm -f "$DIR/points.tsv.header"
py table "$DIR/points.tsv" kamailio kemibox | tee "$DIR/table.md"
log "results in $DIR"
