"""A WebSocket client for a Nova serial console URL, for the smoke.

It is websockify's own client (``websockify.websocket.WebSocket``, which the
nova venv has because nova-serialproxy is built on it), asking for the
``binary`` subprotocol and sending binary frames: websockify closes the
connection on a text frame.  Blocking, with a timeout on every read.

websockify's client sends only the URL's path in its request line, not the
query, and Nova's token is the query (``/?token=...``): ``_TokenWebSocket``
puts it back.
"""
from urllib.parse import urlparse

from websockify import websocket

PATTERN = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


class _TokenWebSocket(websocket.WebSocket):
    def __init__(self, url):
        super().__init__()
        u = urlparse(url)
        self._target = (u.path or "/") + ("?" + u.query if u.query else "")

    def send_request(self, method, _path):
        super().send_request(method, self._target)


class Serial:
    def __init__(self, url, timeout=15):
        self.ws = _TokenWebSocket(url)
        self.ws.connect(url, protocols=["binary"])
        self.ws.settimeout(timeout)
        self.protocol = getattr(self.ws, "protocol", None)
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.ws.close()
        except Exception:
            pass

    def send(self, data):
        self.ws.sendmsg(data)

    def _more(self):
        while True:
            try:
                data = self.ws.recv()
                break
            except websocket.WebSocketWantReadError:
                # half a frame arrived: websockify says so even when blocking
                continue
        if data is None:
            raise EOFError("the proxy closed the connection (%s %s)" % (
                self.ws.close_code, self.ws.close_reason))
        self.buf += data

    def read_until(self, marker, limit=1 << 20):
        """Everything up to and including marker."""
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("no %r in %d bytes" % (marker, len(self.buf)))
            self._more()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exactly(self, n):
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out
