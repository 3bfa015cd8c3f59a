"""INVITE->200 times from SIPp -trace_msg logs (microsecond stamps): per
Call-ID, the first INVITE sent to the first 200 (CSeq INVITE) received.

    rtt.py LOG...             percentiles of each log
    rtt.py NAME=GLOB...       percentiles of all the calls of each group
                              of logs together (several runs pooled)
"""
import datetime, glob, math, sys

def parse(path):
    sent, got = {}, {}
    text = open(path, errors="replace").read()
    for block in text.split("----------------------------------------------- ")[1:]:
        head, _, rest = block.partition("\n")
        ts = datetime.datetime.strptime(head.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        lines = rest.split("\n")
        kind = lines[0]
        msg = [l.rstrip("\r") for l in lines[2:]]
        if not msg:
            continue
        cid = next((l.split(":", 1)[1].strip() for l in msg if l.lower().startswith("call-id:")), None)
        cseq = next((l.split(":", 1)[1].strip() for l in msg if l.lower().startswith("cseq:")), "")
        if kind.startswith("UDP message sent") and msg[0].startswith("INVITE "):
            sent.setdefault(cid, ts)
        elif kind.startswith("UDP message received") and msg[0].startswith("SIP/2.0 200") and cseq.endswith("INVITE"):
            got.setdefault(cid, ts)
    return [(got[c] - sent[c]) * 1e6 for c in got if c in sent]

def pct(v, q):
    return v[max(0, math.ceil(len(v) * q) - 1)]

for arg in sys.argv[1:]:
    name, pooled, pattern = arg.partition("=")
    files = sorted(glob.glob(pattern)) if pooled else [arg]
    v = sorted(x for f in files for x in parse(f))
    print("%s: %d calls, p50 %.0f us, p90 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us"
          % (name, len(v), pct(v, .5), pct(v, .9), pct(v, .99), pct(v, .999), v[-1]))
