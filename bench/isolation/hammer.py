"""Send N INVITEs to tenant a (127.0.0.1:27060), GAP seconds apart on
average, in bursts of BURST (default 1), and count the answers.

    hammer.py N GAP [BURST]
"""
import sys, time

from invites import Invites

n, gap = int(sys.argv[1]), float(sys.argv[2])
burst = int(sys.argv[3]) if len(sys.argv) > 3 else 1
a = Invites()
for i in range(n):
    a.send("loop-%d" % i)
    if (i + 1) % burst == 0:
        time.sleep(gap * burst)
    a.drain()
end = time.time() + 20
while time.time() < end and a.errors() < n:
    time.sleep(0.05)
    a.drain()
print("a: %d INVITEs sent, %d answered 500 Server Error, %d other answers" % (n, a.errors(), a.others()))
