#!/usr/bin/env python3
"""Helpers for bench/dispatcher/run.sh (stdlib only, Linux /proc).

Builds on the shared harness's lib/benchlib.py (process-tree CPU, sockets,
the standard result columns), found through BENCH_LIB, and adds what a point with three UAS, a dispatcher and dialogs
needs:

  probe PORT SECS PID     send OPTIONS to 127.0.0.1:PORT until a SIP reply
                          comes back (exit 0), SECS pass (1) or PID dies (2)
  rpc-int                 the count in an RPC answer on stdin (kamcmd's text
                          or kemibox ctl's JSON) for dlg.profile_get_size
  stat FILE NAME          a counter from `kamcmd stats.get_statistics` output
  summarize K=V...        one result line (columns: header)
  header                  the column names
  table POINTS LABEL...   the Markdown table of a run, LABEL per side A, B
"""
import csv
import json
import os
import re
import socket
import statistics
import sys
import time

LIB = os.environ.get("BENCH_LIB")
if LIB:
    sys.path.insert(0, LIB)
import benchlib  # noqa: E402  (the shared harness's library)

EXTRA = ["uas_invites", "uas_retrans", "uas_failed", "spread_ok", "dlg_peak", "dlg_expected",
         "dlg_after", "dlg_after_s", "dlg_processed", "dlg_ok", "cpu_us_per_call",
         "harness_clean", "hold_ms", "down_uas", "log_warn_err", "unknown_bye"]
COLS = ["side", "rep"] + benchlib.COLS + EXTRA


def alive(pid):
    try:
        with open("/proc/%s/stat" % pid) as f:
            s = f.read()
    except OSError:
        return False
    return s[s.rindex(")") + 2:].split()[0] != "Z"


def probe(port, secs, pid):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.3)
    lport = s.getsockname()[1]
    end, n = time.time() + float(secs), 0
    while time.time() < end:
        if not alive(pid):
            return 2
        n += 1
        msg = ("OPTIONS sip:127.0.0.1:%s SIP/2.0\r\n"
               "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-dsprobe-%d-%d\r\n"
               "From: <sip:probe@127.0.0.1>;tag=dp%d\r\nTo: <sip:127.0.0.1>\r\n"
               "Call-ID: dsprobe-%d-%d@127.0.0.1\r\nCSeq: %d OPTIONS\r\n"
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


def rpc_int(text):
    """The profile size in an RPC answer: a JSON number or object (kemibox
    ctl), or kamcmd's text (`count: 12` in a struct, or a bare number)."""
    text = text.strip()
    try:
        v = json.loads(text)
    except ValueError:
        v = None
    if isinstance(v, int):
        return v
    if isinstance(v, dict):
        for k in ("count", "size", "value"):
            if isinstance(v.get(k), int):
                return v[k]
    m = re.search(r"\bcount\b\W*(\d+)", text) or re.fullmatch(r"(\d+)", text)
    if not m:
        raise SystemExit("no count in RPC answer: %r" % text[:200])
    return int(m.group(1))


def kam_stat(path, name):
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return "NA"
    m = re.search(r"%s\s*=\s*(\d+)" % re.escape(name), text)
    return m.group(1) if m else "NA"


def profile_samples(path):
    vals = []
    try:
        for line in open(path):
            f = line.split("\t")
            if len(f) == 2 and f[1].strip().isdigit():
                vals.append(int(f[1]))
    except OSError:
        pass
    return vals


def log_counts(path):
    """Warning and error lines in the proxy's log (both proxies' level
    words), and the script's own warning for a BYE of no known dialog."""
    warn = bye = 0
    try:
        for line in open(path, errors="replace"):
            # (Kamailio's main process reports each child that exits at
            # SIGTERM as an ALERT: that is its shutdown, not the run.)
            if re.search(r"\b(WARN|WARNING|ERROR|ERR|CRITICAL|CRIT|BUG|ALERT)\b", line) \
                    and "exited normally" not in line:
                warn += 1
            if "BYE of an unknown dialog" in line:
                bye += 1
    except OSError:
        return "NA", "NA"
    return warn, bye


def summarize(a):
    run = a["rundir"]
    row = dict(zip(benchlib.COLS, benchlib.summarize(a).split("\t")))
    g = lambda r, k: int(r.get(k, 0) or 0)
    ports = a["uas_ports"].split(",")
    down = [p for p in a.get("down", "").split(",") if p]
    invites, uretrans, ufailed = [], 0, 0
    for p in ports:
        if p in down:
            invites.append("down")
            continue
        st = benchlib.last_stat_row(os.path.join(run, "uas-%s" % p, "uas.stat.csv")) or {}
        invites.append(g(st, "TotalCallCreated"))
        uretrans += g(st, "Retransmissions(C)")
        ufailed += g(st, "FailedCall(C)")
    # The shared summary counts the retransmissions of one UAS
    # (uas.stat.csv in the point's folder); here there are three.
    retrans = int(row["retrans"]) + uretrans
    attempted, failed, planned = int(row["attempted"]), int(row["failed"]), int(row["planned"])
    harness_clean = attempted == planned and failed == 0 and retrans * 1000 < int(row["messages"])
    row["retrans"] = retrans
    live = [n for n in invites if n != "down"]
    # Round robin over the live destinations: each gets a third of the
    # calls (1 % slack for the order in which parallel workers pick). With
    # a destination down, its turns fail over to the next one, so the
    # shares are not even and only the failed-call count tells.
    if down:
        spread_ok = "n/a"
    else:
        mean = sum(live) / len(live) if live else 0
        spread_ok = "yes" if live and mean > 0 and max(live) - min(live) <= max(2, 0.01 * mean) else "no"
    hold = int(a["hold_ms"])
    expected = int(a["rate"]) * hold / 1000.0
    samples = profile_samples(os.path.join(run, "profile.tsv"))
    peak = max(samples) if samples else "NA"
    after = a.get("dlg_after", "NA")
    # While calls are held the profile holds rate x hold of them (within
    # 25 %: the samples are 1 s apart and calls take a few ms to set up);
    # once the last BYE is answered it is empty again.
    # With a destination down, a third of the calls wait 2 s for the
    # failover, so only the emptying is checked.
    dlg_ok = bool(after == "0" and peak != "NA"
                  and (down or expected < 20 or 0.75 * expected <= peak <= 1.25 * expected))
    clk = float(os.sysconf("SC_CLK_TCK"))
    cpu_s = (int(a["pt1"]) - int(a["pt0"])) / clk
    ok = int(row["successful"])
    if a.get("rpc") == "0":
        dlg_ok = "n/a"
    checks = spread_ok != "no" and dlg_ok in (True, "n/a")
    warn, bye = log_counts(os.path.join(run, "proxy.log"))
    row.update({
        "side": a["side"], "rep": a["rep"],
        "uas_invites": "/".join(str(n) for n in invites), "uas_retrans": uretrans,
        "uas_failed": ufailed, "spread_ok": spread_ok, "dlg_peak": peak,
        "dlg_expected": "%.0f" % expected, "dlg_after": after,
        "dlg_after_s": a.get("dlg_after_s", "NA"), "dlg_processed": a.get("dlg_processed", "NA"),
        "dlg_ok": dlg_ok if dlg_ok == "n/a" else "yes" if dlg_ok else "no",
        "cpu_us_per_call": "%.0f" % (cpu_s / ok * 1e6) if ok else "NA",
        "harness_clean": "yes" if harness_clean else "no",
        "clean": "yes" if harness_clean and checks else "no",
        "hold_ms": hold, "down_uas": ",".join(down) or "-",
        "log_warn_err": warn, "unknown_bye": bye,
    })
    return "\t".join(str(row[c]) for c in COLS)


def table(path, labels):
    rows = [r for r in csv.DictReader(open(path), delimiter="\t")]
    rates = []
    for r in rows:
        if r["rate"] not in rates:
            rates.append(r["rate"])
    sides = [s for s in ("A", "B") if any(r["side"] == s for r in rows)]
    name = {"A": labels[0], "B": labels[1] if len(labels) > 1 else "B"}
    out = ["| rate (cps) | rep | proxy | ok / attempted | failed | retrans | CPU % proxy / UAC / UAS "
           "| CPU µs / call | p50 / p99 ms | INVITEs per UAS | dialogs peak / expected | dialogs after "
           "| log warn+err (unknown BYE) | clean |",
           "|" + "---|" * 14]
    for rate in rates:
        reps = sorted({r["rep"] for r in rows if r["rate"] == rate}, key=int)
        for rep in reps:
            for side in sides:
                r = next((x for x in rows if x["rate"] == rate and x["rep"] == rep and x["side"] == side), None)
                if r is None:
                    continue
                if r.get("attempted", "ERROR").startswith("ERROR") or r.get("attempted") is None:
                    out.append("| %s | %s | %s | ERROR |  |  |  |  |  |  |  |  |  | no |" % (rate, rep, name[side]))
                    continue
                why = []
                if r["harness_clean"] != "yes":
                    why.append("harness")
                if r["spread_ok"] == "no":
                    why.append("spread")
                if r["dlg_ok"] == "no":
                    why.append("dialogs")
                out.append("| " + " | ".join([
                    rate, rep, name[side], "%s / %s" % (r["successful"], r["attempted"]), r["failed"],
                    r["retrans"], "%s / %s / %s" % (r["proxy_cpu_pct"], r["uac_cpu_pct"], r["uas_cpu_pct"]),
                    r["cpu_us_per_call"], "%s / %s" % (r["rtt_p50_ms"], r["rtt_p99_ms"]), r["uas_invites"],
                    "%s / %s" % (r["dlg_peak"], r["dlg_expected"]),
                    "%s (%s s)%s" % (r["dlg_after"], r["dlg_after_s"],
                                     "" if r["dlg_processed"] == "NA" else ", %s processed" % r["dlg_processed"]),
                    "%s (%s)" % (r["log_warn_err"], r["unknown_bye"]),
                    "yes" if r["clean"] == "yes" else "no (%s)" % ", ".join(why),
                ]) + " |")
    out.append("")
    out.append("CPU: utime+stime of the process tree over the UAC's run, in % of one core; CPU µs / call: "
               "the proxy's CPU time divided by the successful calls. INVITEs per UAS: new calls each UAS "
               "saw (failovers included). Dialogs: size of the profile `calls` sampled every second "
               "(peak; expected = rate x hold time) and after the last call (seconds until it was 0; "
               "Kamailio also counts the dialogs it processed). log warn+err: warning and error lines in the "
               "proxy's log; unknown BYE: the script's warning for a BYE that is_known_dlg did not match.")

    def best(side):
        ok = [int(r) for r in rates
              if [x for x in rows if x["rate"] == r and x["side"] == side]
              and all(x.get("clean") == "yes" for x in rows if x["rate"] == r and x["side"] == side)]
        return "%d cps" % max(ok) if ok else "none"
    out.append("")
    out.append("Highest clean rate (every repetition: all planned calls attempted, 0 failed, retransmissions "
               "< 0.1 % of messages, even spread, profile back to 0): "
               + ", ".join("**%s: %s**" % (name[s], best(s)) for s in sides))
    if len(sides) == 2:
        cpu, us = [], []
        for rate in rates:
            for rep in sorted({r["rep"] for r in rows if r["rate"] == rate}, key=int):
                A = next((r for r in rows if r["rate"] == rate and r["rep"] == rep and r["side"] == "A"), None)
                B = next((r for r in rows if r["rate"] == rate and r["rep"] == rep and r["side"] == "B"), None)
                if A and B and A.get("clean") == "yes" and B.get("clean") == "yes":
                    if float(A["proxy_cpu_pct"]) > 0:
                        cpu.append(float(B["proxy_cpu_pct"]) / float(A["proxy_cpu_pct"]))
                    if A["cpu_us_per_call"] not in ("NA", "0"):
                        us.append(float(B["cpu_us_per_call"]) / float(A["cpu_us_per_call"]))
        if us:
            out.append("CPU per call %s / %s, median over %d (rate, rep) pairs where both were clean: **%.2f** "
                       "(proxy CPU %% ratio %.2f)" % (name["B"], name["A"], len(us), statistics.median(us),
                                                      statistics.median(cpu)))
        else:
            out.append("CPU per call %s / %s: no (rate, rep) pair where both were clean." % (name["B"], name["A"]))
    return "\n".join(out)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "probe":
        sys.exit(probe(*args))
    elif cmd == "rpc-int":
        print(rpc_int(sys.stdin.read()))
    elif cmd == "stat":
        print(kam_stat(*args))
    elif cmd == "header":
        print("\t".join(COLS))
    elif cmd == "summarize":
        print(summarize(dict(x.split("=", 1) for x in args)))
    elif cmd == "table":
        print(table(args[0], args[1:]))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
