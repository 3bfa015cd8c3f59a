"""INVITEs to tenant a (127.0.0.1:27060) from one UDP socket, and the
answers they got; shared by hammer.py and bomb.py."""
import socket

TO = ("127.0.0.1", 27060)
ERROR = "SIP/2.0 500 Server Error"


class Invites:
    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0)
        self.local = "%s:%d" % self.socket.getsockname()
        self.got = {}  # Call-ID -> first lines of the answers

    def send(self, call):
        local = self.local
        self.socket.sendto(
            ("INVITE sip:x@127.0.0.1:27060 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s\r\n"
             "Max-Forwards: 70\r\nFrom: <sip:l@%s>;tag=%s\r\nTo: <sip:x@127.0.0.1:27060>\r\n"
             "Call-ID: %s\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
             % (local, call, local, call, call)).encode(), TO)

    def drain(self):
        """Read every answer waiting on the socket."""
        while True:
            try:
                d = self.socket.recv(65535).decode(errors="replace")
            except BlockingIOError:
                return
            cid = [x[9:] for x in d.split("\r\n") if x.startswith("Call-ID: ")][0]
            self.got.setdefault(cid, []).append(d.split("\r\n")[0])

    def errors(self):
        """INVITEs answered `500 Server Error`."""
        return sum(1 for v in self.got.values() if ERROR in v)

    def others(self):
        """Answers other than `500 Server Error`."""
        return sum(1 for v in self.got.values() for x in v if x != ERROR)
