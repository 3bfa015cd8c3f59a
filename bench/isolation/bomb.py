"""INVITEs to the bomb tenant (127.0.0.1:27060): N in bursts of B every
GAP seconds, sampling kemibox's VmRSS (process PID) every 20 ms
meanwhile; counts the answers and prints RSS before, at its peak, after.

    bomb.py N B GAP PID
"""
import sys, threading, time

from invites import Invites

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
a = Invites()
for i in range(n):
    a.send("bomb-%d" % i)
    if (i + 1) % burst == 0:
        time.sleep(gap)
        a.drain()
end = time.time() + 10
while time.time() < end and len(a.got) < n:
    time.sleep(0.05)
    a.drain()
time.sleep(1)
running[0] = False
sampler.join()
print("bomb: %d INVITEs, %d answered 500 Server Error, %d other answers" % (n, a.errors(), a.others()))
print("kemibox RSS: before %.1f MiB, peak %.1f MiB sampled / %.1f MiB VmHWM, after %.1f MiB"
      % (before, peak[0], rss("VmHWM"), rss()))
