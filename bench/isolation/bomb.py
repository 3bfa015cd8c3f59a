"""INVITEs to the bomb tenant (127.0.0.1:27060): N in bursts of B every
GAP seconds, sampling kemibox's VmRSS (process PID) every 20 ms
meanwhile; counts the answers and prints RSS before, at its peak, after.

    bomb.py N B GAP PID
"""
import socket, sys, threading, time

n, burst, gap, pid = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]

def rss(field="VmRSS"):
    for line in open("/proc/%s/status" % pid):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

peak, running = [0], [True]

def sample():
    while running[0]:
        peak[0] = max(peak[0], rss())
        time.sleep(0.02)

before = rss()
sampler = threading.Thread(target=sample)
sampler.start()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(0)
local = "%s:%d" % s.getsockname()
got = {}

def drain():
    while True:
        try:
            d = s.recv(65535).decode(errors="replace")
        except BlockingIOError:
            return
        cid = [x[9:] for x in d.split("\r\n") if x.startswith("Call-ID: ")][0]
        got.setdefault(cid, []).append(d.split("\r\n")[0])

for i in range(n):
    c = "bomb-%d" % i
    s.sendto(("INVITE sip:x@127.0.0.1:27060 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s\r\n"
              "Max-Forwards: 70\r\nFrom: <sip:l@%s>;tag=%s\r\nTo: <sip:x@127.0.0.1:27060>\r\n"
              "Call-ID: %s\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n" % (local, c, local, c, c)).encode(),
             ("127.0.0.1", 27060))
    if (i + 1) % burst == 0:
        time.sleep(gap)
        drain()
end = time.time() + 10
while time.time() < end and len(got) < n:
    time.sleep(0.05)
    drain()
time.sleep(1)
running[0] = False
sampler.join()
ERROR = "SIP/2.0 500 Server Error"
print("bomb: %d INVITEs, %d answered 500 Server Error, %d other answers"
      % (n, sum(1 for v in got.values() if ERROR in v), sum(1 for v in got.values() for x in v if x != ERROR)))
print("kemibox RSS: before %.1f MiB, peak %.1f MiB sampled / %.1f MiB VmHWM, after %.1f MiB"
      % (before, peak[0], rss("VmHWM"), rss()))
