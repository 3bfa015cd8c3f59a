"""Send N INVITEs to tenant a (127.0.0.1:27060), GAP seconds apart on
average, in bursts of BURST (default 1), and count the answers.

    hammer.py N GAP [BURST]
"""
import socket, sys, time

n, gap = int(sys.argv[1]), float(sys.argv[2])
burst = int(sys.argv[3]) if len(sys.argv) > 3 else 1
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
    c = "loop-%d" % i
    s.sendto(("INVITE sip:x@127.0.0.1:27060 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s\r\n"
              "Max-Forwards: 70\r\nFrom: <sip:l@%s>;tag=%s\r\nTo: <sip:x@127.0.0.1:27060>\r\n"
              "Call-ID: %s\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n" % (local, c, local, c, c)).encode(),
             ("127.0.0.1", 27060))
    if (i + 1) % burst == 0:
        time.sleep(gap * burst)
    drain()
ERROR = "SIP/2.0 500 Server Error"
end = time.time() + 20
while time.time() < end and sum(1 for v in got.values() if ERROR in v) < n:
    time.sleep(0.05)
    drain()
print("a: %d INVITEs sent, %d answered 500 Server Error, %d other answers"
      % (n, sum(1 for v in got.values() if ERROR in v), sum(1 for v in got.values() for x in v if x != ERROR)))
