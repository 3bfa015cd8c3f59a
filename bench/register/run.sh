#!/usr/bin/env bash
# REGISTER-with-digest-auth benchmark: Kamailio 5.6 (A) and kemibox (B), same
# machine, same run, the same register.lua in both.
#
#   bench/register/run.sh [--rates "500 1000 2000 3000"] [--duration 10] [--reps 2]
#       [--users 2000] [--kemibox PATH] [--kemibox-args "ARGS"] [--kamailio PATH]
#       [--kamailio-workers 4]
#       [--only kamailio|kemibox] [--out DIR] [--grace S] [--stop-after N]
#       [--db-dir DIR | --db-on-disk] [--journal delete|wal]
#
# --rates       registrations per second to try (each registration = REGISTER,
#               401, REGISTER with credentials, 200: 2 transactions, 4 messages)
# --duration    seconds per point: rate x duration registrations are sent
# --reps        A B pairs per rate (A B A B ... so drift hits both alike)
# --users       subscribers; SIPp cycles through them (users.csv, SEQUENTIAL)
# --kemibox     kemibox binary (default: <repo>/target/release/kemibox)
# --kemibox-args extra arguments for `kemibox run` (word-split)
# --kamailio    kamailio binary (default: kamailio from PATH)
# --kamailio-workers  Kamailio UDP worker processes (-n, default 4)
# --only        run one proxy only (e.g. --only kamailio while kemibox is not built)
# --out         results base dir (default: bench/register/results); every run
#               makes its own sub-dir there
# --grace       seconds SIPp may run past --duration before it is stopped (20)
# --stop-after  stop raising the rate for a proxy after N rates in a row that
#               were not clean (default 0: run every rate)
# --db-dir      where each point's database copy lives while the proxy runs
#               (default /dev/shm, i.e. tmpfs: see README, "Where the databases
#               live"); it is moved into the point's folder afterwards
# --db-on-disk  keep the databases in the point's folder (under --out) instead:
#               every write-through commit then waits for fsync
# --journal     SQLite journal mode of both databases (default: delete, which
#               is SQLite's own default; wal is stored in the file, so both
#               proxies then use it)
#
# Per point: a fresh copy of the proxy's database, the proxy started under
# `timeout`, one OPTIONS to see it answer, SIPp (reg_uac.xml) at the rate,
# then SIGTERM to the proxy and a count of the rows in its location table.
# Output: <out>/register-<date>-<pid>/ with points.tsv (one line per point),
# table.md (also printed), setup.txt and one folder per point (SIPp stats,
# RTTs, errors, proxy.log, result.tsv).
# Exit status: 0 = the points ran (clean or not), 2 = usage, 3 = setup failure.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
DOMAIN=127.0.0.1   # subscriber domain = digest realm = From host in reg_uac.xml

RATES="500 1000 2000 3000" DUR=10 REPS=2 USERS=2000 GRACE=20 STOP=0
KEMIBOX="$REPO/target/release/kemibox" KEMIBOX_ARGS="" KAMAILIO=kamailio KWORKERS=4
ONLY="" OUT="$HERE/results" DBDIR=/dev/shm JOURNAL=delete
SCHEMA_DIR=${KAMAILIO_SCHEMA_DIR:-/usr/share/kamailio/db_sqlite}

die() { echo "run.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rates) RATES=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --users) USERS=$2; shift 2 ;;
    --kemibox) KEMIBOX=$2; shift 2 ;;
    --kemibox-args) KEMIBOX_ARGS=$2; shift 2 ;;
    --kamailio) KAMAILIO=$2; shift 2 ;;
    --kamailio-workers) KWORKERS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --grace) GRACE=$2; shift 2 ;;
    --stop-after) STOP=$2; shift 2 ;;
    --db-dir) DBDIR=$2; [ -n "$DBDIR" ] || die "--db-dir needs a directory"; shift 2 ;;
    --db-on-disk) DBDIR=""; shift ;;
    --journal) JOURNAL=$2; shift 2 ;;
    -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
for r in $RATES; do [[ "$r" =~ ^[1-9][0-9]*$ ]] || die "bad rate: $r"; done
[ -n "$RATES" ] || die "--rates is empty"
[[ "$DUR" =~ ^[1-9][0-9]*$ ]] || die "--duration must be a positive integer"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer"
[[ "$USERS" =~ ^[1-9][0-9]*$ ]] || die "--users must be a positive integer"
[[ "$KWORKERS" =~ ^[1-9][0-9]*$ ]] || die "--kamailio-workers must be a positive integer"
[[ "$GRACE" =~ ^[0-9]+$ ]] || die "--grace must be an integer"
[[ "$STOP" =~ ^[0-9]+$ ]] || die "--stop-after must be an integer"
case "$ONLY" in ""|kamailio|kemibox) ;; *) die "--only kamailio|kemibox" ;; esac
case "$JOURNAL" in delete|wal) ;; *) die "--journal delete|wal" ;; esac
SIDES="A B"; [ "$ONLY" = kamailio ] && SIDES="A"; [ "$ONLY" = kemibox ] && SIDES="B"
case "$KEMIBOX" in /*) ;; *) KEMIBOX="$PWD/$KEMIBOX" ;; esac

# ---------------------------------------------------------------------------
# Python helpers (stdlib only): process-tree CPU, sockets, databases, results.
read -r -d '' PYHELP <<'PYEOF'
import csv, glob, hashlib, os, re, shutil, socket, sqlite3, statistics, sys, time

def stat(pid):
    try:
        s = open("/proc/%s/stat" % pid).read()
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()        # fields from "state" on
    return f[0], int(f[1]), int(f[11]) + int(f[12])   # state, ppid, utime+stime

def alive(pid):
    st = stat(pid)
    return st is not None and st[0] != "Z"

def tree(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = stat(d)
            if st:
                kids.setdefault(st[1], []).append(int(d))
    out, todo = [], [int(root)]
    while todo:
        p = todo.pop(0)
        if p not in out:
            out.append(p)
            todo.extend(kids.get(p, []))
    return [p for p in out if stat(p)]

def udp_sockets():
    res = []
    for fn in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = open(fn).read().splitlines()[1:]
        except OSError:
            continue
        for l in lines:
            f = l.split()
            res.append((int(f[1].rsplit(":", 1)[1], 16), int(f[-1])))
    return res

def probe(port, secs, pid):
    """send OPTIONS until any SIP response arrives; 0 = answered, 1 = timeout, 2 = pid died"""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.3)
    lport = s.getsockname()[1]
    end, n = time.time() + float(secs), 0
    while time.time() < end:
        if not alive(pid):
            return 2
        n += 1
        msg = ("OPTIONS sip:probe@127.0.0.1:%s SIP/2.0\r\n"
               "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-regprobe-%d-%d\r\n"
               "From: <sip:probe@127.0.0.1>;tag=rp%d\r\nTo: <sip:probe@127.0.0.1>\r\n"
               "Call-ID: regprobe-%d-%d@127.0.0.1\r\nCSeq: %d OPTIONS\r\n"
               "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
               % (port, lport, os.getpid(), n, n, os.getpid(), n, n))
        try:
            s.sendto(msg.encode(), ("127.0.0.1", int(port)))
            data = s.recv(65535)
            if data.startswith(b"SIP/2.0 "):
                print(data.split(b"\r\n", 1)[0].decode(errors="replace"))
                return 0
        except OSError:
            time.sleep(0.2)
    return 1

def md5(s):
    return hashlib.md5(s.encode()).hexdigest()

def users(path):
    rows = [l.rstrip("\n").split(";") for l in open(path)][1:]
    return [(r[0], r[1]) for r in rows if len(r) >= 2]

def make_users(path, n):
    w = max(4, len(str(n)))
    with open(path, "w") as f:
        f.write("SEQUENTIAL\n")
        for i in range(1, n + 1):
            f.write("user%0*d;pw%0*d-regbench\n" % (w, i, w, i))

def kamailio_db(db, schema_dir, users_csv, domain, journal):
    con = sqlite3.connect(db)
    for name in ("standard-create.sql", "auth_db-create.sql", "usrloc-create.sql"):
        con.executescript(open(os.path.join(schema_dir, name)).read())
    # ha1 = MD5(user:realm:password), ha1b = MD5(user@domain:realm:password)
    con.executemany("INSERT INTO subscriber (username, domain, password, ha1, ha1b) VALUES (?, ?, '', ?, ?)",
                    [(u, domain, md5("%s:%s:%s" % (u, domain, p)), md5("%s@%s:%s:%s" % (u, domain, domain, p)))
                     for u, p in users(users_csv)])
    con.commit()
    con.execute("PRAGMA journal_mode=%s" % journal)
    con.close()

def kemibox_db(db, users_csv, domain, journal):
    """the first user was added by `kemibox user add`: check our hashes match its, add the rest"""
    con = sqlite3.connect(db)
    cols = {r[1] for r in con.execute("PRAGMA table_info(subscriber)")}
    need = {"tenant", "username", "domain", "ha1", "ha1_sha256"}
    if not need <= cols:
        sys.exit("kemibox subscriber table has columns %s, expected at least %s" % (sorted(cols), sorted(need)))
    us = users(users_csv)
    sha = lambda s: hashlib.sha256(s.encode()).hexdigest()
    row = con.execute("SELECT tenant, ha1, ha1_sha256 FROM subscriber WHERE username = ? AND domain = ?",
                      (us[0][0], domain)).fetchone()
    u, p = us[0]
    want = ("default", md5("%s:%s:%s" % (u, domain, p)), sha("%s:%s:%s" % (u, domain, p)))
    if row is None or tuple(row) != want:
        sys.exit("kemibox stored %r for %s@%s, this script computes %r" % (row, u, domain, want))
    con.executemany("INSERT OR REPLACE INTO subscriber (tenant, username, domain, ha1, ha1_sha256) VALUES (?, ?, ?, ?, ?)",
                    [("default", u, domain, md5("%s:%s:%s" % (u, domain, p)), sha("%s:%s:%s" % (u, domain, p)))
                     for u, p in us[1:]])
    con.commit()
    con.execute("PRAGMA journal_mode=%s" % journal)
    n = con.execute("SELECT count(*) FROM subscriber").fetchone()[0]
    con.close()
    if n != len(us):
        sys.exit("kemibox database has %d subscribers, expected %d" % (n, len(us)))

def count_rows(db, table):
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        return con.execute("SELECT count(*) FROM %s" % table).fetchone()[0]
    finally:
        con.close()

COLS = ["side", "label", "rate", "rep", "planned", "attempted", "successful", "failed", "retrans",
        "unexpected", "messages", "proxy_cpu_pct", "cpu_us_per_reg", "uac_cpu_pct", "rtt_p50_ms",
        "rtt_p99_ms", "rtt_samples", "stored", "expected", "log_warn_err", "udp_rcvbuf_err",
        "sock_drops", "achieved_rate", "loadavg1", "clean", "rundir"]
MSGS_PER_REG = 4   # REGISTER, 401, REGISTER, 200 at the UAC

def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]

def summarize(a):
    run = a["rundir"]
    wall = float(a["t1"]) - float(a["t0"])
    clk = float(os.sysconf("SC_CLK_TCK"))
    try:
        rows = list(csv.DictReader(open(os.path.join(run, "uac.stat.csv"), errors="replace"), delimiter=";"))
        st = rows[-1] if rows else {}
    except OSError:
        st = {}
    g = lambda k: int(st.get(k, 0) or 0)
    planned, attempted, ok = int(a["planned"]), g("TotalCallCreated"), g("SuccessfulCall(C)")
    failed = attempted - ok          # SIPp failures + registrations still open at the end
    retrans = g("Retransmissions(C)")
    elapsed = 0.0
    if st.get("ElapsedTime(C)"):
        h, m, s = st["ElapsedTime(C)"].split(":")
        elapsed = int(h) * 3600 + int(m) * 60 + float(s)
    rt = []
    for fn in glob.glob(os.path.join(run, "*_rtt.csv")):
        for line in open(fn, errors="replace"):
            p = line.strip().split(";")
            if len(p) >= 3 and p[2] == "1" and p[1][:1].isdigit():
                rt.append(float(p[1]))
    unexpected = 0
    try:
        unexpected = open(os.path.join(run, "uac_err.log"), errors="replace").read().count("unexpected message")
    except OSError:
        pass
    logerr = 0
    try:
        for line in open(os.path.join(run, "proxy.log"), errors="replace"):
            # (Kamailio's "child process N exited normally" ALERTs at SIGTERM are not problems)
            if re.search(r"\b(ERROR|WARN|WARNING|CRITICAL|BUG|ALERT)\b", line) and "exited normally" not in line:
                logerr += 1
    except OSError:
        pass
    cpu_s = (int(a["pt1"]) - int(a["pt0"])) / clk
    try:
        u = open(os.path.join(run, "uac.cpu")).read().split()
        uac = "%.0f" % (float(u[0]) / wall * 100)
    except Exception:
        uac = "NA"
    msgs = attempted * MSGS_PER_REG
    stored = int(a["stored"]) if a.get("stored", "").isdigit() else -1
    expected = min(int(a["users"]), attempted)
    clean = attempted == planned and failed == 0 and retrans * 1000 < msgs and stored == expected
    row = dict(side=a["side"], label=a["label"], rate=a["rate"], rep=a["rep"], planned=planned,
               attempted=attempted, successful=ok, failed=failed, retrans=retrans, unexpected=unexpected,
               messages=msgs, proxy_cpu_pct="%.1f" % (cpu_s / wall * 100),
               cpu_us_per_reg="%.0f" % (cpu_s * 1e6 / ok) if ok else "NA", uac_cpu_pct=uac,
               rtt_p50_ms="%.0f" % pct(rt, .5) if rt else "NA",
               rtt_p99_ms="%.0f" % pct(rt, .99) if rt else "NA", rtt_samples=len(rt),
               stored=stored if stored >= 0 else "NA", expected=expected, log_warn_err=logerr,
               udp_rcvbuf_err=int(a["e1"]) - int(a["e0"]), sock_drops=a.get("drops", "NA"),
               achieved_rate="%.0f" % (ok / elapsed) if elapsed else "NA", loadavg1=a.get("load", "NA"),
               clean="yes" if clean else "no", rundir=run)
    return "\t".join(str(row[c]) for c in COLS)

def table(points, la, lb):
    rows = [r for r in csv.DictReader(open(points), delimiter="\t")]
    rates = []
    for r in rows:
        if r["rate"] not in rates:
            rates.append(r["rate"])
    J = " · "
    out = ["| rate (reg/s) | proxy | reps | successful / failed | retrans | CPU % | CPU µs / registration "
           "| p50 / p99 ms | stored / expected | log warn+err | clean |", "|" + "---|" * 11]
    for rate in rates:
        for side, label in (("A", la), ("B", lb)):
            rs = sorted((r for r in rows if r["rate"] == rate and r["side"] == side), key=lambda r: int(r["rep"]))
            if not rs:
                continue
            nclean = sum(r["clean"] == "yes" for r in rs)
            f = lambda fmt: J.join("ERROR" if r["attempted"] == "ERROR" else fmt(r) for r in rs)
            out.append("| " + " | ".join([
                rate, label, str(len(rs)),
                f(lambda r: "%s / %s" % (r["successful"], r["failed"])),
                f(lambda r: r["retrans"]),
                f(lambda r: r["proxy_cpu_pct"]),
                f(lambda r: r["cpu_us_per_reg"]),
                f(lambda r: "%s / %s" % (r["rtt_p50_ms"], r["rtt_p99_ms"])),
                f(lambda r: "%s / %s" % (r["stored"], r["expected"])),
                f(lambda r: r["log_warn_err"]),
                "yes" if nclean == len(rs) else "no (%d of %d clean)" % (nclean, len(rs)),
            ]) + " |")
    out.append("")
    out.append("Values of several repetitions are listed in order (rep 1 · rep 2 ...). "
               "CPU %: proxy process tree, utime+stime over the SIPp run's wall time, in % of one core. "
               "CPU µs / registration: that CPU time divided by the successful registrations "
               "(each = two REGISTER transactions, 401 then 200). "
               "stored: rows in the proxy's location table after it stopped; expected: distinct users SIPp "
               "registered. log warn+err: warning and error lines in the proxy's log.")
    def best(side):
        ok = [int(r) for r in rates
              if [x for x in rows if x["rate"] == r and x["side"] == side]
              and all(x["clean"] == "yes" for x in rows if x["rate"] == r and x["side"] == side)]
        return "%d reg/s" % max(ok) if ok else "none"
    sides = {r["side"] for r in rows}
    out.append("")
    out.append("Highest clean rate (every repetition: all planned registrations attempted, 0 failed, "
               "retransmissions < 0.1 % of messages, every user's contact in the location table): "
               + ", ".join("**%s: %s**" % (l, best(s)) for s, l in (("A", la), ("B", lb)) if s in sides))
    ratios, us_ratios = [], []
    for rate in rates:
        for rep in sorted({r["rep"] for r in rows if r["rate"] == rate}, key=int):
            A = next((r for r in rows if r["rate"] == rate and r["rep"] == rep and r["side"] == "A"), None)
            B = next((r for r in rows if r["rate"] == rate and r["rep"] == rep and r["side"] == "B"), None)
            if not (A and B) or "ERROR" in (A["attempted"], B["attempted"]):
                continue
            if A["clean"] == "yes" and B["clean"] == "yes" and float(A["proxy_cpu_pct"]) > 0:
                ratios.append((rate, rep, float(B["proxy_cpu_pct"]) / float(A["proxy_cpu_pct"])))
            if all(x["successful"] == x["planned"] and x["cpu_us_per_reg"] not in ("NA", "0") for x in (A, B)):
                us_ratios.append(float(B["cpu_us_per_reg"]) / float(A["cpu_us_per_reg"]))
    if ratios:
        out.append("Proxy CPU ratio %s/%s at equal rate, median over %d (rate, rep) pairs where both were clean: "
                   "**%.2f** (%s)" % (lb, la, len(ratios), statistics.median(x for _, _, x in ratios),
                                      ", ".join("%s/%s: %.2f" % (r, p, x) for r, p, x in ratios)))
    elif sides == {"A", "B"}:
        out.append("Proxy CPU ratio %s/%s: no (rate, rep) pair where both were clean." % (lb, la))
    if us_ratios:
        out.append("CPU per registration ratio %s/%s, median over %d (rate, rep) pairs where both completed every "
                   "registration (clean or not; retransmissions handled count as cost): **%.2f**"
                   % (lb, la, len(us_ratios), statistics.median(us_ratios)))
    return "\n".join(out)

def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ticks":
        print(sum(stat(p)[2] for p in tree(args[0]) if stat(p)))
    elif cmd == "tree":
        print(" ".join(str(p) for p in tree(args[0])))
    elif cmd == "alive":
        sys.exit(0 if alive(args[0]) else 1)
    elif cmd == "port-used":
        sys.exit(0 if any(p == int(args[0]) for p, _ in udp_sockets()) else 1)
    elif cmd == "sock-drops":
        print(sum(d for p, d in udp_sockets() if p == int(args[0])))
    elif cmd == "rcvbuf-errors":
        rows = [l.split() for l in open("/proc/net/snmp") if l.startswith("Udp:")]
        print(rows[1][rows[0].index("RcvbufErrors")])
    elif cmd == "probe":
        sys.exit(probe(*args))
    elif cmd == "make-users":
        make_users(args[0], int(args[1]))
    elif cmd == "kamailio-db":
        kamailio_db(*args)
    elif cmd == "kemibox-db":
        kemibox_db(*args)
    elif cmd == "count":
        print(count_rows(*args))
    elif cmd == "header":
        print("\t".join(COLS))
    elif cmd == "summarize":
        print(summarize(dict(x.split("=", 1) for x in args)))
    elif cmd == "table":
        print(table(*args))
    else:
        sys.exit("unknown helper command " + cmd)

main()
PYEOF
py() { python3 -c "$PYHELP" "$@"; }

# ---------------------------------------------------------------------------
for b in sipp timeout python3; do command -v $b >/dev/null || { echo "run.sh: $b not found" >&2; exit 3; }; done
if [[ " $SIDES " == *" A "* ]]; then
  command -v "$KAMAILIO" >/dev/null || { echo "run.sh: kamailio not found ($KAMAILIO); --only kemibox skips it" >&2; exit 3; }
  for f in standard auth_db usrloc; do
    [ -r "$SCHEMA_DIR/$f-create.sql" ] || { echo "run.sh: $SCHEMA_DIR/$f-create.sql missing (set KAMAILIO_SCHEMA_DIR)" >&2; exit 3; }
  done
fi
if [[ " $SIDES " == *" B "* ]]; then
  [ -x "$KEMIBOX" ] || { echo "run.sh: $KEMIBOX is not an executable; build it or pass --kemibox PATH (--only kamailio skips it)" >&2; exit 3; }
fi
for p in 5060 5070; do
  py port-used $p && { echo "run.sh: udp port $p is already in use; not starting" >&2; exit 3; }
done

mkdir -p "$OUT" || exit 3
DIR="$(cd "$OUT" && pwd -P)/register-$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$DIR/template" || exit 3
if [ -n "$DBDIR" ]; then
  [ -d "$DBDIR" ] && [ -w "$DBDIR" ] || { echo "run.sh: --db-dir $DBDIR is not a writable directory (--db-on-disk avoids it)" >&2; exit 3; }
  DBDIR=$(cd "$DBDIR" && pwd -P)
fi
log() { echo "[register $(date +%T)] $*" >&2; }
log "results in $DIR"

# users and template databases
py make-users "$DIR/users.csv" "$USERS" || exit 3
if [[ " $SIDES " == *" A "* ]]; then
  py kamailio-db "$DIR/template/kamailio.sqlite" "$SCHEMA_DIR" "$DIR/users.csv" "$DOMAIN" "$JOURNAL" \
    || { echo "run.sh: could not create the Kamailio database" >&2; exit 3; }
fi
if [[ " $SIDES " == *" B "* ]]; then
  first=$(sed -n 2p "$DIR/users.csv")
  "$KEMIBOX" user add --db "$DIR/template/kemibox.sqlite" "${first%%;*}@$DOMAIN" "${first#*;}" >"$DIR/template/user-add.log" 2>&1 \
    || { echo "run.sh: '$KEMIBOX user add' failed:" >&2; cat "$DIR/template/user-add.log" >&2; exit 3; }
  py kemibox-db "$DIR/template/kemibox.sqlite" "$DIR/users.csv" "$DOMAIN" "$JOURNAL" \
    || { echo "run.sh: could not fill the kemibox database" >&2; exit 3; }
fi
{
  echo "date: $(date -Is)  host: $(uname -n)  cores: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rates=$RATES duration=$DUR reps=$REPS users=$USERS grace=$GRACE journal=$JOURNAL db-dir=${DBDIR:-<point folder, on disk>} only=${ONLY:-both}"
  echo "sipp: $(sipp -v 2>&1 | grep -m1 -o 'SIPp v[^ ]*')"
  [[ " $SIDES " == *" A "* ]] && echo "A=kamailio: $("$KAMAILIO" -v 2>&1 | head -1), $KWORKERS UDP workers"
  [[ " $SIDES " == *" B "* ]] && echo "B=kemibox: $KEMIBOX $KEMIBOX_ARGS ($("$KEMIBOX" --version 2>&1 | head -1))"
  [[ " $SIDES " == *" B "* ]] && git -C "$REPO" log -1 --format='kemibox tree: %h %s' 2>/dev/null && \
    echo "uncommitted changes in the tree: $(git -C "$REPO" status --porcelain 2>/dev/null | wc -l) files"
} > "$DIR/setup.txt"

# ---------------------------------------------------------------------------
STARTED=()   # PIDs we started (each the root of one tool's process tree)
alive() { [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
stop_tree() { # ROOT: SIGTERM the root (timeout relays it), wait <= 15 s, then TERM/KILL what is left, by PID
  local root=$1 pids p x i
  pids=$(py tree "$root")
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
cleanup() { local i; for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_tree "${STARTED[$i]}"; done; STARTED=(); }
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

child_cpu() { # FILE: user+sys seconds of this shell's reaped children (`times`, line 2) into FILE.
  # `times` must run in this shell: in a $(...) subshell the children's counters start at 0.
  times > "$1.times"
  awk 'NR==2 { t=0; for (i=1;i<=2;i++) { split($i,a,"m"); t+=a[1]*60+a[2] } printf "%.3f\n", t }' "$1.times" > "$1"
  rm -f "$1.times"
}

# park_db: move the point's database (run_point's $db) from --db-dir into its folder ($run)
park_db() {
  [ -n "$DBDIR" ] || return 0
  mv "$db" "$run/$label.sqlite" 2>/dev/null || rm -f "$db"
  rm -f "$db-journal" "$db-wal" "$db-shm"
}

# run_point SIDE RATE REP: one point; appends one line to points.tsv
run_point() {
  local side=$1 rate=$2 rep=$3 label run db n limit ppid rc e0 e1 pt0 pt1 t0 t1 drops stored load ans
  if [ "$side" = A ]; then label=kamailio; else label=kemibox; fi
  run="$DIR/r$rate-rep$rep-$label"; mkdir -p "$run"
  if [ -n "$DBDIR" ]; then db="$DBDIR/regbench-$$-r$rate-rep$rep-$label.sqlite"; else db="$run/$label.sqlite"; fi
  cp "$DIR/template/$label.sqlite" "$db" || return 1
  n=$((rate * DUR)); limit=$((DUR + GRACE + 90))
  local cmd
  if [ "$side" = A ]; then
    cmd=(env REGBENCH_LUA="$HERE/register.lua" REGBENCH_DB_URL="sqlite://$db"
         "$KAMAILIO" -f "$HERE/kamailio-register.cfg" -DD -E -m 1024 -M 16 -n "$KWORKERS" -Y "$run" -P "$run/kamailio.pid")
  else
    # shellcheck disable=SC2206
    cmd=("$KEMIBOX" run --script "$HERE/register.lua" --listen udp:127.0.0.1:5060 --log warn --db "$db" $KEMIBOX_ARGS)
  fi
  printf '%q ' "${cmd[@]}" > "$run/proxy.cmd"; echo >> "$run/proxy.cmd"
  for p in 5060 5070; do
    py port-used $p && { log "udp port $p in use before $label rate=$rate rep=$rep"; park_db; return 1; }
  done
  load=$(cut -d' ' -f1 /proc/loadavg)
  log "$label rate=$rate rep=$rep: $n registrations, loadavg $load"

  timeout -k 5 $limit "${cmd[@]}" >"$run/proxy.log" 2>&1 </dev/null &
  ppid=$!; STARTED+=("$ppid")
  ans=$(py probe 5060 30 "$ppid"); rc=$?
  if [ $rc -ne 0 ]; then
    log "$label did not answer an OPTIONS on udp 127.0.0.1:5060 (rc=$rc); see $run/proxy.log"
    tail -5 "$run/proxy.log" >&2; cleanup; park_db; return 1
  fi
  echo "$ans" > "$run/probe.txt"
  sleep 1   # let the other workers finish starting too
  alive "$ppid" || { log "$label exited after start; see $run/proxy.log"; cleanup; park_db; return 1; }

  e0=$(py rcvbuf-errors); pt0=$(py ticks "$ppid"); t0=$(date +%s.%N)
  # SIPp writes response times in batches of -rtt_freq and drops a last partial batch: use a divisor of n
  local rf; for rf in 500 400 250 200 125 100 50 40 25 20 10 8 5 4 2 1; do [ $((n % rf)) = 0 ] && break; done
  child_cpu "$run/uac.cpu0"   # the UAC's CPU = growth of the reaped-children times across its run
  ( cd "$run" && exec timeout -k 5 $((DUR + GRACE + 5)) sipp -sf "$HERE/reg_uac.xml" 127.0.0.1:5060 -p 5070 \
      -i 127.0.0.1 -nostdin -buff_size 4194304 -default_behaviors all,-abortunexp \
      -inf "$DIR/users.csv" -r "$rate" -m "$n" -l 20000 -timeout $((DUR + GRACE))s -timeout_error \
      -trace_stat -stf uac.stat.csv -fd 1 -trace_rtt -rtt_freq "$rf" -trace_err -error_file uac_err.log ) \
    >"$run/uac.out" 2>&1 </dev/null &
  local spid=$!; STARTED+=("$spid")
  wait "$spid"; rc=$?
  child_cpu "$run/uac.cpu1"
  t1=$(date +%s.%N); pt1=$(py ticks "$ppid"); e1=$(py rcvbuf-errors); drops=$(py sock-drops 5060)
  awk 'NR==1 {a=$1} NR==2 {printf "%.3f\n", $1 - a}' "$run/uac.cpu0" "$run/uac.cpu1" > "$run/uac.cpu"
  rm -f "$run/uac.cpu0" "$run/uac.cpu1"
  echo "$rc" > "$run/uac.rc"
  alive "$ppid" || log "WARNING: $label died during the run (see $run/proxy.log)"
  cleanup     # SIGTERM the proxy (and whatever is left)
  stored=$(py count "$db" location 2>"$run/count.err") || stored=NA
  py summarize side="$side" label="$label" rate="$rate" rep="$rep" planned="$n" users="$USERS" \
    rundir="$run" t0="$t0" t1="$t1" pt0="$pt0" pt1="$pt1" e0="$e0" e1="$e1" drops="$drops" \
    load="$load" stored="$stored" > "$run/result.tsv"
  park_db   # keep the final database with the point's other files
  cat "$run/result.tsv" >> "$DIR/points.tsv"
  awk -F'\t' '{ printf "[register] %s rate=%s rep=%s: ok %s/%s, retrans %s, unexpected %s, CPU %s%% (%s us/reg), p50/p99 %s/%s ms, stored %s/%s, log warn/err %s, clean=%s\n",
                $2, $3, $4, $7, $6, $9, $10, $12, $13, $15, $16, $18, $19, $20, $25 }' "$run/result.tsv" >&2
  return 0
}

py header > "$DIR/points.tsv"
declare -A BAD=([A]=0 [B]=0)
for rate in $RATES; do
  for rep in $(seq "$REPS"); do
    for side in $SIDES; do
      if [ "$STOP" -gt 0 ] && [ "${BAD[$side]}" -ge "$STOP" ]; then
        log "side $side: skipping rate $rate (not clean at $STOP rates in a row)"; continue
      fi
      if ! run_point "$side" "$rate" "$rep"; then
        label=kamailio; [ "$side" = B ] && label=kemibox
        printf "%s\t%s\t%s\t%s\t%s\tERROR\n" "$side" "$label" "$rate" "$rep" $((rate * DUR)) >> "$DIR/points.tsv"
      fi
      sleep 1
    done
  done
  for side in $SIDES; do
    if awk -F'\t' -v s="$side" -v r="$rate" '$1==s && $3==r && $25!="yes" {b=1} END {exit !b}' "$DIR/points.tsv"; then
      BAD[$side]=$((BAD[$side] + 1)); else BAD[$side]=0; fi
  done
done
py table "$DIR/points.tsv" kamailio kemibox | tee "$DIR/table.md"
log "results in $DIR"
