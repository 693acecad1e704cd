"""Smoke test of a running lab: ``tests/lab/openstack/smoke``.

It asks of the lab what ovbmc asks of a cloud, over plain HTTP with
``requests`` (no SDK, so what is checked is the wire): a project-scoped
token and its catalog, list and show, os-stop/os-start and their 409s,
reboot SOFT and HARD, rebuild (running and stopped), a hard reboot that
powers a stopped server on, and server metadata.  Each check prints one
PASS or FAIL line; the last line is "N passed, M failed" and the exit
status is 1 on any failure.  The server it uses (``SMOKE_SERVER``,
baremetal_0) ends as it began: ACTIVE, image lab-disk, metadata
``libvirt:pxe-first`` empty.

Then the consoles: the console log (os-getConsoleOutput) has the boot
banner and grows; with the serial console on (lab.conf), POST
/servers/{id}/remote-consoles (microversion 2.6, protocol serial) gives a
ws:// URL, and a WebSocket client (websockify's, from the venv) gets the
banner through the real nova-serialproxy, sees a typed line echoed, and
receives a ``burst`` complete and in order; with it off, Nova refuses the
serial console (400).

Transitional task states are checked only when the fake hypervisor's delay
is long enough to see them (``SMOKE_FAKE_DELAY``, which ``smoke`` reads
from the running Nova's state).
"""
import os
import sys
import time

import requests

from ovbmc_lab import settings
from ovbmc_lab import smoke_neutron
from ovbmc_lab_report import Report

SERVER = os.environ.get("SMOKE_SERVER", "baremetal_0")
TIMEOUT = float(os.environ.get("SMOKE_TIMEOUT", "60"))
PXE_KEY = "libvirt:pxe-first"


def project_token(conf):
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": conf.user, "domain": {"id": "default"},
            "password": conf.user_password}}},
        "scope": {"project": {"name": conf.project, "domain": {"id": "default"}}}}}
    return requests.post(conf.auth_url + "/auth/tokens", json=body, timeout=10)


def public_url(catalog, stype):
    for svc in catalog:
        if svc["type"] == stype:
            for ep in svc["endpoints"]:
                if ep["interface"] == "public":
                    return ep["url"]
    return None


class Compute:
    """The few compute calls a virtual BMC makes."""

    def __init__(self, url, token):
        self.url = url.rstrip("/")
        self.http = requests.Session()
        self.http.headers.update({"X-Auth-Token": token, "Accept": "application/json"})

    def call(self, method, path, body=None, headers=None):
        return self.http.request(method, self.url + path, json=body,
                                 headers=headers, timeout=15)

    def server(self, sid):
        return self.call("GET", "/servers/" + sid).json()["server"]

    def action(self, sid, body):
        return self.call("POST", "/servers/%s/action" % sid, body)

    def settle(self, sid, status, image=None):
        """Poll until ``status`` with no task; the (status, task, power) seen."""
        seen = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            s = self.server(sid)
            state = (s["status"], s["OS-EXT-STS:task_state"], s["OS-EXT-STS:power_state"])
            if not seen or seen[-1] != state:
                seen.append(state)
            done = (s["status"] == status and state[1] is None and
                    (image is None or s["image"]["id"] == image))
            if done or s["status"] == "ERROR" or time.monotonic() > deadline:
                return s, seen
            time.sleep(0.1)


def trail(seen):
    return " -> ".join("%s/%s/%s" % x for x in seen)


class Smoke:
    def __init__(self, conf, report, fake_delay):
        self.conf, self.r, self.fake_delay = conf, report, fake_delay

    def run(self):
        tok = project_token(self.conf)
        if not self.r.check("keystone: POST /v3/auth/tokens (password, project scope)",
                            tok.status_code == 201 and "X-Subject-Token" in tok.headers,
                            "HTTP %s" % tok.status_code):
            return
        token = tok.headers["X-Subject-Token"]
        catalog = tok.json()["token"]["catalog"]
        compute_url, image_url = public_url(catalog, "compute"), public_url(catalog, "image")
        self.r.check("keystone: catalog has a public compute endpoint",
                     compute_url is not None, str(compute_url))
        self.r.check("keystone: catalog has a public image endpoint",
                     image_url is not None, str(image_url))
        if compute_url is None or image_url is None:
            return
        bad = requests.get(compute_url + "/servers", headers={"X-Auth-Token": "bogus"}, timeout=10)
        self.r.check("nova: a bad token is refused with 401", bad.status_code == 401,
                     "HTTP %s" % bad.status_code)
        listed = requests.get(image_url + "/v2/images", headers={"X-Auth-Token": token},
                              timeout=10).json().get("images", [])
        self.images = {i["name"]: i["id"] for i in listed}
        self.r.check("glance: images lab-disk and ipxe-boot are listed",
                     {"lab-disk", "ipxe-boot"} <= set(self.images), str(sorted(self.images)))
        self.nova = Compute(compute_url, token)
        network_url = public_url(catalog, "network")
        if self.r.check("keystone: catalog has a public network endpoint",
                        network_url is not None, str(network_url)):
            servers = {s["name"]: s["id"] for s in
                       self.nova.call("GET", "/servers").json().get("servers", [])}
            smoke_neutron.Network(network_url, token, self.r).run(
                self.conf, self.nova, servers, tok.json()["token"]["project"]["id"])
        if self.read():
            self.power()
            self.metadata()
            self.console_log()
            if self.conf.serial_console:
                self.serial_console()
            else:
                self.serial_console_off()

    def read(self):
        r = self.nova.call("GET", "/servers")
        names = {s["name"]: s["id"] for s in r.json().get("servers", [])}
        self.r.check("nova: GET /servers lists baremetal_0 and baremetal_1",
                     r.status_code == 200 and {"baremetal_0", "baremetal_1"} <= set(names),
                     str(sorted(names)))
        r = self.nova.call("GET", "/servers/detail",
                           headers={"OpenStack-API-Version": "compute latest"})
        self.r.check('nova: GET /servers/detail at microversion "latest"',
                     r.status_code == 200 and len(r.json()["servers"]) >= 2,
                     "HTTP %s, %s" % (r.status_code, r.headers.get("OpenStack-API-Version")))
        self.sid = names.get(SERVER)
        if not self.r.check("nova: %s exists" % SERVER, self.sid is not None):
            return False
        s = self.nova.server(self.sid)
        state = (s["status"], s["OS-EXT-STS:task_state"], s["OS-EXT-STS:power_state"])
        self.r.check("nova: GET /servers/{id} shows ACTIVE, power_state 1 (RUNNING)",
                     state == ("ACTIVE", None, 1), trail([state]))
        r = self.nova.call("GET", "/servers/00000000-0000-0000-0000-000000000000")
        self.r.check("nova: GET /servers/<unknown> is 404", r.status_code == 404,
                     "HTTP %s" % r.status_code)
        return True

    def act(self, label, body, status, power, task=None, image=None):
        """One server action: 202, then settled in ``status``/``power``."""
        t0 = time.monotonic()
        r = self.nova.action(self.sid, body)
        if not self.r.check("nova: %s accepted (202)" % label, r.status_code == 202,
                            ("HTTP %s" % r.status_code) +
                            ("" if r.status_code == 202 else " " + r.text[:300])):
            return None
        s, seen = self.nova.settle(self.sid, status, image)
        self.r.check("nova: %s -> %s, power_state %s (%.1fs)" % (label, status, power,
                                                                 time.monotonic() - t0),
                     s["status"] == status and s["OS-EXT-STS:power_state"] == power and
                     s["OS-EXT-STS:task_state"] is None, trail(seen))
        if task and self.fake_delay >= 0.3:
            self.r.check("nova: %s showed task_state %s on the way" % (label, task),
                         task in {x[1] for x in seen}, trail(seen))
        elif task:
            self.r.skip("nova: %s task_state check" % label,
                        "fake delay %.1fs is too short to see it" % self.fake_delay)
        return s

    def conflict(self, label, body):
        r = self.nova.action(self.sid, body)
        self.r.check("nova: %s is 409 Conflict" % label, r.status_code == 409,
                     "HTTP %s" % r.status_code)

    def power(self):
        ipxe, disk = self.images["ipxe-boot"], self.images["lab-disk"]
        self.act("os-stop", {"os-stop": None}, "SHUTOFF", 4, "powering-off")
        self.conflict("os-stop on a SHUTOFF server", {"os-stop": None})
        self.act("os-start", {"os-start": None}, "ACTIVE", 1, "powering-on")
        self.conflict("os-start on an ACTIVE server", {"os-start": None})
        self.act("reboot SOFT", {"reboot": {"type": "SOFT"}}, "ACTIVE", 1, "reboot_started")
        self.act("reboot HARD", {"reboot": {"type": "HARD"}}, "ACTIVE", 1, "reboot_started_hard")
        s = self.act("rebuild with ipxe-boot", {"rebuild": {"imageRef": ipxe}}, "ACTIVE", 1,
                     "rebuild_spawning", ipxe)
        self.r.check("nova: server image is ipxe-boot after rebuild",
                     s is not None and s["image"]["id"] == ipxe)
        # a stopped server is rebuilt and stays stopped
        self.act("os-stop (before rebuild)", {"os-stop": None}, "SHUTOFF", 4)
        s = self.act("rebuild of a SHUTOFF server with lab-disk",
                     {"rebuild": {"imageRef": disk}}, "SHUTOFF", 4, image=disk)
        self.r.check("nova: server image is lab-disk again",
                     s is not None and s["image"]["id"] == disk)
        # what a BMC's "power reset" of a stopped machine turns into
        r = self.nova.action(self.sid, {"reboot": {"type": "HARD"}})
        self.r.check("nova: reboot HARD of a SHUTOFF server is accepted (202)",
                     r.status_code == 202, "HTTP %s" % r.status_code)
        s, seen = self.nova.settle(self.sid, "ACTIVE")
        self.r.check("nova: ...and powers it on (ACTIVE, power_state 1)",
                     s["status"] == "ACTIVE" and s["OS-EXT-STS:power_state"] == 1, trail(seen))

    def metadata(self):
        item = "/servers/%s/metadata/%s" % (self.sid, PXE_KEY)
        r = self.nova.call("PUT", item, {"meta": {PXE_KEY: "1"}})
        self.r.check("nova: PUT metadata %s=1" % PXE_KEY, r.status_code == 200,
                     "HTTP %s %s" % (r.status_code, r.text[:200]))
        r = self.nova.call("GET", item)
        self.r.check("nova: GET metadata item returns 1",
                     r.status_code == 200 and r.json()["meta"].get(PXE_KEY) == "1", r.text[:200])
        r = self.nova.call("POST", "/servers/%s/metadata" % self.sid, {"metadata": {PXE_KEY: ""}})
        self.r.check("nova: POST metadata (merge) %s=''" % PXE_KEY,
                     r.status_code == 200 and r.json()["metadata"].get(PXE_KEY) == "", r.text[:200])
        md = self.nova.server(self.sid)["metadata"]
        self.r.check("nova: GET /servers/{id} shows the metadata", md.get(PXE_KEY) == "", str(md))
        r = self.nova.call("GET", "/servers/%s/metadata" % self.sid)
        self.r.check("nova: GET /servers/{id}/metadata",
                     r.status_code == 200 and PXE_KEY in r.json()["metadata"], r.text[:200])
        r = self.nova.call("DELETE", item)
        r2 = self.nova.call("GET", item)
        self.r.check("nova: DELETE metadata item, then GET is 404",
                     r.status_code == 204 and r2.status_code == 404,
                     "HTTP %s / %s" % (r.status_code, r2.status_code))
        self.nova.call("PUT", item, {"meta": {PXE_KEY: ""}})  # as bootstrap left it


    # ------------------------------------------------------------ consoles
    def console_output(self, lines=None):
        body = {"os-getConsoleOutput": {} if lines is None else {"length": lines}}
        r = self.nova.action(self.sid, body)
        return r.status_code, (r.json().get("output", "") if r.status_code == 200 else r.text)

    def console_log(self):
        code, out = self.console_output(50)
        self.r.check("nova: os-getConsoleOutput has the boot banner",
                     code == 200 and "ovbmc lab guest serial console (%s)" % SERVER in out,
                     "HTTP %s, %d bytes, ends %r" % (code, len(out), out[-80:]))
        tick = self.conf.console_tick
        if tick <= 0:
            self.r.skip("nova: the console log grows", "OVBMC_LAB_CONSOLE_TICK=0")
            return
        _, before = self.console_output()
        time.sleep(tick + 1)
        code, after = self.console_output()
        self.r.check("nova: the console log grows (%.0f s later)" % (tick + 1),
                     code == 200 and len(after) > len(before) and after.startswith(before[:200]),
                     "%d -> %d bytes, last line %r" % (len(before), len(after),
                                                      after.strip().splitlines()[-1:]))

    def remote_console(self):
        return self.nova.call("POST", "/servers/%s/remote-consoles" % self.sid,
                              {"remote_console": {"protocol": "serial", "type": "serial"}},
                              headers={"OpenStack-API-Version": "compute 2.6"})

    def serial_console(self):
        r = self.remote_console()
        url = r.json().get("remote_console", {}).get("url", "") if r.status_code == 200 else ""
        if not self.r.check("nova: POST remote-consoles (2.6, serial) gives a ws:// URL",
                            url.startswith("ws://") and "token=" in url,
                            "HTTP %s %s" % (r.status_code, url.split("token=")[0] + "token=..."
                                            if url else r.text[:200])):
            return
        from ovbmc_lab import wsclient
        try:
            ws = wsclient.Serial(url)
        except Exception as e:
            self.r.check("serialproxy: WebSocket connection (subprotocol binary)", False,
                         "%s: %s" % (type(e).__name__, e))
            return
        with ws:
            self.r.check("serialproxy: WebSocket connection (subprotocol binary)", True,
                         "subprotocol %r" % ws.protocol)
            got = ws.read_until(b"%s login: " % SERVER.encode())
            self.r.check("serialproxy: the guest's banner and login prompt arrive",
                         b"ovbmc lab guest serial console" in got and got.endswith(b"login: "),
                         repr(got[-80:]))
            ws.send(b"hello lab\r")
            got = ws.read_until(b"echo: hello lab\r\n")
            self.r.check("serialproxy: a typed line comes back echoed",
                         got.endswith(b"echo: hello lab\r\n"), repr(got[-80:]))
            ws.read_until(b"login: ")
            n = 100000
            t0 = time.monotonic()
            ws.send(b"burst %d\r" % n)
            ws.read_until(b"burst %d\r\n" % n)
            data = ws.read_exactly(n)
            want = bytes(wsclient.PATTERN[k % 64] for k in range(n))
            self.r.check("serialproxy: burst %d arrives complete and in order (%.2fs)" % (
                n, time.monotonic() - t0), data == want,
                "%d bytes%s" % (len(data), "" if data == want else ", first difference at %d" % next(
                    (i for i, (a, b) in enumerate(zip(data, want)) if a != b), len(data))))
            # a hard reboot destroys the "domain": the proxy's session ends ...
            self.nova.action(self.sid, {"reboot": {"type": "HARD"}})
            try:
                ws.read_until(b"\x00never\x00", limit=1 << 30)
                closed = False
            except EOFError:
                closed = True
            except OSError as e:  # a timeout: still open
                closed = False
                ws.error = e
            self.r.check("serialproxy: a hard reboot ends the session", closed,
                         "" if closed else str(getattr(ws, "error", "")))
        self.nova.settle(self.sid, "ACTIVE")
        # ... and a fresh URL reaches the guest again, as a console client must do
        r2 = self.remote_console()
        url2 = r2.json().get("remote_console", {}).get("url", "") if r2.status_code == 200 else ""
        if self.r.check("nova: remote-consoles after the reboot gives a fresh token",
                        url2.startswith("ws://") and url2 != url, "HTTP %s" % r2.status_code):
            with wsclient.Serial(url2) as ws:
                got = ws.read_until(b"%s login: " % SERVER.encode())
                self.r.check("serialproxy: after the reboot the banner arrives again",
                             b"ovbmc lab guest serial console" in got, repr(got[-60:]))

    def serial_console_off(self):
        r = self.remote_console()
        self.r.check("nova: serial console off: remote-consoles is refused (400)",
                     r.status_code == 400, "HTTP %s %s" % (r.status_code, r.text[:200]))


def main():
    conf = settings.load()
    fake_delay = float(os.environ.get("SMOKE_FAKE_DELAY", conf.fake_delay))
    report = Report()
    t0 = time.monotonic()
    try:
        Smoke(conf, report, fake_delay).run()
    except Exception as e:  # a crash is a failure, with what it was
        report.check("smoke ran to the end", False, "%s: %s" % (type(e).__name__, e))
    print("smoke: %.1fs" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (report.passed, report.failed))
    return 1 if report.failed or not report.passed else 0


if __name__ == "__main__":
    sys.exit(main())
