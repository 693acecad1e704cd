"""The lab guests' consoles: a TCP "serial port" per guest and a console log.

A libvirt compute gives each guest a serial port as a TCP listener, and
nova-serialproxy connects WebSocket clients to it; it also keeps the
guest's console log, which ``os-getConsoleOutput`` reads.  The fake
hypervisor has neither, so this module provides both, for ovbmc's Serial
over LAN (issue 12) to have a real nova-serialproxy and a real log to talk
to:

* One TCP server on the lab's console port (``OVBMC_LAB_CONSOLE_PORT``)
  serves every guest.  ``fakevirt.LabDriver.get_serial_console`` points
  Nova at it with the guest's uuid as ``internal_access_path``, so the
  proxy's first words on a connection are ``CONNECT <uuid> HTTP/1.1`` and
  an ``HTTP/1.1 200 OK`` answer (nova/console/websocketproxy.py) selects the
  guest.  Unknown or stopped guests get 404 and the proxy gives up.
* Behind it each connection is the same console as ovbmc's simulator
  (src/console/sim.rs): a boot banner and a ``NAME login:`` prompt,
  characters echoed as a terminal does, each line answered with
  ``echo: LINE`` and the line ``burst N`` with N bytes of PATTERN (byte k
  is PATTERN[k % 64]) for throughput tests.  Writes block while the client
  reads slowly, which is the backpressure a real serial port has.
* Each guest's console log records its output: a banner at every boot,
  what its console echoed (bursts as one line saying so), a line when it
  stops, and while it runs a line every ``OVBMC_LAB_CONSOLE_TICK`` seconds
  (lab.conf; 0 = none) so that a reader of ``os-getConsoleOutput`` sees it
  grow.  The ticks go to the log only: in the serial stream they would cut
  into a burst.
* Power matters as on a real compute: a hard reboot, power off, rebuild or
  delete closes the guest's serial connections (libvirt destroys the
  domain, and its TCP listener with it); a soft reboot keeps them and
  prints the banner again.
"""
import socket
import socketserver
import threading
import time

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

PATTERN = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
MAX_BURST = 64 << 20
MAX_LINE = 1024
CHUNK = 4096
LOG_LIMIT = 256 << 10  # bytes of console log kept per guest (the newest)


def banner(name):
    return b"\r\novbmc lab guest serial console (%s)\r\n\r\n" % name.encode()


def prompt(name):
    return b"%s login: " % name.encode()


class Terminal:
    """One serial connection's line discipline; pure, so it is easy to test."""

    def __init__(self, name):
        self.name, self.line, self.after_cr = name, bytearray(), False

    def feed(self, data):
        """Bytes typed -> (output bytes, burst size or 0)."""
        out, burst = bytearray(), 0
        for b in data:
            after_cr, self.after_cr = self.after_cr, b == 0x0D
            if b == 0x0A and after_cr:
                continue
            if b in (0x0D, 0x0A):
                line = self.line.decode(errors="replace")
                self.line.clear()
                out += b"\r\n"
                words = line.split()
                if len(words) == 2 and words[0] == "burst" and words[1].isdigit() \
                        and int(words[1]) <= MAX_BURST:
                    burst += int(words[1])
                    continue  # the prompt follows the burst
                if words:
                    out += b"echo: %s\r\n" % line.encode()
                out += prompt(self.name)
            elif b in (0x7F, 0x08):
                if self.line:
                    self.line.pop()
                    out += b"\x08 \x08"
            elif len(self.line) < MAX_LINE:
                self.line.append(b)
                out.append(b)
        return bytes(out), burst


def burst_bytes(n):
    """The first n bytes of the burst pattern, as chunks."""
    at = 0
    while at < n:
        k = min(CHUNK, n - at)
        yield bytes(PATTERN[(at + i) % 64] for i in range(k))
        at += k


class Guest:
    def __init__(self, uuid, name):
        self.uuid, self.name = uuid, name
        self.running = False
        self.booted = time.monotonic()
        self.log = bytearray()
        self.conns = set()
        self.lock = threading.Lock()

    def record(self, data):
        with self.lock:
            self.log += data
            if len(self.log) > LOG_LIMIT:
                cut = self.log.find(b"\n", len(self.log) - LOG_LIMIT)
                del self.log[:cut + 1 if cut >= 0 else len(self.log) - LOG_LIMIT]

    def text(self):
        with self.lock:
            return self.log.decode(errors="replace")

    def hang_up(self):
        with self.lock:
            conns, self.conns = self.conns, set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Consoles:
    """Every guest's console, and the TCP server in front of them."""

    def __init__(self, host, port, tick, serial):
        self.host, self.port, self.tick, self.serial = host, port, tick, serial
        self.guests = {}
        self.lock = threading.Lock()
        self.server = None

    def start(self):
        if self.serial:
            consoles = self

            class Handler(socketserver.BaseRequestHandler):
                def handle(self):
                    consoles.serve(self.request)

            socketserver.ThreadingTCPServer.allow_reuse_address = True
            socketserver.ThreadingTCPServer.daemon_threads = True
            self.server = socketserver.ThreadingTCPServer((self.host, self.port), Handler)
            threading.Thread(target=self.server.serve_forever, name="lab-console",
                             daemon=True).start()
            LOG.info("lab consoles: guest serial ports on %s:%d", self.host, self.port)
        if self.tick > 0:
            threading.Thread(target=self._ticker, name="lab-console-tick", daemon=True).start()

    def guest(self, instance):
        with self.lock:
            g = self.guests.get(instance.uuid)
            if g is None:
                g = self.guests[instance.uuid] = Guest(instance.uuid, instance.display_name
                                                       or instance.uuid)
            return g

    # -- what the hypervisor tells us
    def powered_on(self, instance):
        """A boot: the banner, in the log and on any serial connection still open
        (only a soft reboot leaves one open)."""
        g = self.guest(instance)
        g.running, g.booted = True, time.monotonic()
        text = banner(g.name) + prompt(g.name)
        g.record(text)
        with g.lock:
            conns = list(g.conns)
        for c in conns:
            try:
                c.sendall(text)
            except OSError:
                pass

    def powered_off(self, instance, why="powered off"):
        g = self.guest(instance)
        g.running = False
        g.record(b"\r\n[ lab hypervisor: %s %s ]\r\n" % (g.name.encode(), why.encode()))
        g.hang_up()

    def note(self, instance, what):
        g = self.guest(instance)
        g.record(b"\r\n[ lab hypervisor: %s %s ]\r\n" % (g.name.encode(), what.encode()))

    def output(self, instance):
        return self.guest(instance).text()

    def _ticker(self):
        while True:
            time.sleep(self.tick)
            with self.lock:
                guests = list(self.guests.values())
            for g in guests:
                if g.running:
                    g.record(b"%s[ %6d s ] %s: the lab guest is up\r\n" % (
                        b"" if g.log.endswith(b"\n") else b"\r\n",
                        time.monotonic() - g.booted, g.name.encode()))

    # -- one serial connection
    def serve(self, sock):
        g = self._handshake(sock)
        if g is None:
            sock.close()
            return
        with g.lock:
            g.conns.add(sock)
        term = Terminal(g.name)
        try:
            sock.sendall(banner(g.name) + prompt(g.name))
            while True:
                data = sock.recv(CHUNK)
                if not data:
                    break
                out, burst = term.feed(data)
                if out:
                    g.record(out)
                    sock.sendall(out)
                if burst:
                    for chunk in burst_bytes(burst):
                        sock.sendall(chunk)
                    tail = b"\r\n" + prompt(g.name)
                    g.record(b"[ %d burst bytes ]" % burst + tail)
                    sock.sendall(tail)
        except OSError:
            pass
        finally:
            with g.lock:
                g.conns.discard(sock)
            sock.close()

    def _handshake(self, sock):
        """nova-serialproxy's ``CONNECT <path> HTTP/1.1``: the guest, or None."""
        sock.settimeout(10)
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < 4096:
                data = sock.recv(4096 - len(head))
                if not data:
                    return None
                head += data
        except OSError:
            return None
        sock.settimeout(None)
        words = head.split(b"\r\n", 1)[0].split()
        uuid = words[1].decode(errors="replace") if len(words) == 3 and words[0] == b"CONNECT" \
            else None
        with self.lock:
            g = self.guests.get(uuid)
        if g is None or not g.running:
            LOG.info("lab consoles: refused %r (unknown or stopped guest)", head[:80])
            try:
                sock.sendall(b"HTTP/1.1 404 Not Found\r\n\r\n")
            except OSError:
                pass
            return None
        sock.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
        LOG.info("lab consoles: serial connection to %s (%s)", g.name, g.uuid)
        return g
