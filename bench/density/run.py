#!/usr/bin/env python3
"""Density: N tenants in one `kemibox run`, each with its own small script
and domain (t0.example ... on one shared UDP socket). Records the start-up
time (spawn to "kemibox proxy started"), the RSS after start, the latency
of the first request to cold tenants (no instance yet) and of a second
request to the same tenants (warm), and the RSS after those calls.

    bench/density/run.py [--tenants 1000] [--cold 50] [--kemibox target/release/kemibox]

Results go to stdout as one summary; the directory it ran in is printed.
"""
import argparse, os, socket, statistics, subprocess, sys, tempfile, time

SCRIPT = """-- tenant {i}
function ksr_request_route()
    if KSR.is_OPTIONS() then
        KSR.sl.sl_send_reply(200, "t{i}")
        return
    end
    KSR.sl.sl_send_reply(404, "Not Here")
end
"""

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def options(sock, port, i, n):
    cid = f"density-{i}-{n}"
    me = "%s:%d" % sock.getsockname()
    msg = (f"OPTIONS sip:x@t{i}.example SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{cid}\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:a@x>;tag={n}\r\nTo: <sip:x@t{i}.example>\r\n"
           f"Call-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
    start = time.perf_counter()
    sock.sendto(msg, ("127.0.0.1", port))
    data = sock.recv(65535).decode(errors="replace")
    took = time.perf_counter() - start
    first = data.split("\r\n")[0]
    if first != f"SIP/2.0 200 t{i}":
        sys.exit(f"tenant t{i}: unexpected answer {first!r}")
    return took * 1000.0

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--cold", type=int, default=50)
    ap.add_argument("--port", type=int, default=27260)
    ap.add_argument("--kemibox", default="target/release/kemibox")
    a = ap.parse_args()
    kemibox = os.path.abspath(a.kemibox)
    d = tempfile.mkdtemp(prefix="kemibox-density-")
    os.makedirs(f"{d}/scripts")
    lines = [f'listen = ["udp:127.0.0.1:{a.port}"]', 'log = "info"', ""]
    for i in range(a.tenants):
        with open(f"{d}/scripts/t{i}.lua", "w") as f:
            f.write(SCRIPT.format(i=i))
        lines += ["[[tenant]]", f'id = "t{i}"', f'script = "scripts/t{i}.lua"',
                  f'domains = ["t{i}.example"]', ""]
    with open(f"{d}/kemibox.toml", "w") as f:
        f.write("\n".join(lines))
    log = open(f"{d}/kemibox.log", "w")
    env = dict(os.environ, KEMIBOX_DATA_DIR=d, NO_COLOR="1")
    env.pop("RUST_LOG", None)
    started = time.perf_counter()
    p = subprocess.Popen([kemibox, "run", "--config", f"{d}/kemibox.toml"], stderr=log,
                         stdout=subprocess.DEVNULL, env=env)
    try:
        while "kemibox proxy started" not in open(f"{d}/kemibox.log").read():
            if p.poll() is not None:
                sys.exit("kemibox exited: " + open(f"{d}/kemibox.log").read()[-2000:])
            time.sleep(0.01)
        startup = time.perf_counter() - started
        time.sleep(1.0)
        rss_start = rss_kib(p.pid)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        # Spread the cold tenants over the whole table.
        picks = [k * a.tenants // a.cold for k in range(a.cold)]
        cold = [options(s, a.port, i, 1) for i in picks]
        warm = [options(s, a.port, i, 2) for i in picks]
        rss_after = rss_kib(p.pid)
        def q(v, f): return sorted(v)[min(len(v) - 1, int(len(v) * f))]
        print(f"dir: {d}")
        print(f"tenants: {a.tenants}")
        print(f"start-up: {startup:.2f} s (spawn to 'kemibox proxy started')")
        print(f"RSS after start: {rss_start / 1024:.1f} MiB ({rss_start / a.tenants:.0f} KiB per tenant)")
        print(f"first request to a cold tenant ({a.cold} tenants): median {statistics.median(cold):.2f} ms, p90 {q(cold, 0.9):.2f} ms, max {max(cold):.2f} ms")
        print(f"second request, same tenants (warm): median {statistics.median(warm):.2f} ms, p90 {q(warm, 0.9):.2f} ms, max {max(warm):.2f} ms")
        print(f"RSS after those {2 * a.cold} requests: {rss_after / 1024:.1f} MiB")
    finally:
        p.terminate()
        p.wait()

if __name__ == "__main__":
    main()
