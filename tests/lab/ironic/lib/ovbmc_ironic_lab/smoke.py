"""Smoke test of the running Ironic lab: ``tests/lab/ironic/smoke``.

Quick (seconds, not the e2e's minutes) and needing nothing but the lab:

* the API answers, with the versions document and a microversion;
* the hardware types lab.conf names are enabled, and a conductor serves them;
* a node of the ``fake-hardware`` type can be created, found by name,
  validated, powered on, deleted, and is gone afterwards;
* an ``ipmi`` node pointed at a fake BMC on loopback (``fakebmc-lo``) is
  powered on through the real ipmitool, and the lab's ipmitool shim logged
  the call: Ironic's IPMI path works without ovbmc (``SMOKE_IPMI=0`` skips
  this part).

PASS/FAIL lines, then "N passed, M failed"; exit status 1 on a failure.
Nodes it makes are named ovbmc-lab-smoke-*, and deleted again.
"""
import os
import socket
import subprocess
import sys
import time

from ovbmc_ironic_lab import api
from ovbmc_lab_report import Report
from ovbmc_ironic_lab import settings

NAME = "ovbmc-lab-smoke"
SETTLE = 120


def wait_power(ironic, uuid, want, limit=SETTLE):
    """The node's power_state once no change is pending (or at the deadline)."""
    deadline = time.monotonic() + limit
    while True:
        node = ironic.get("/v1/nodes/" + uuid).json()
        settled = node.get("target_power_state") is None and node.get("reservation") is None
        if settled and (node.get("power_state") == want or node.get("last_error")):
            return node
        if time.monotonic() > deadline:
            return node
        time.sleep(0.5)


def remove(ironic, ident):
    """Delete a node whatever its state (maintenance first, as an operator)."""
    ironic.patch("/v1/nodes/" + ident, {"op": "replace", "path": "/maintenance", "value": True})
    return ironic.call("DELETE", "/v1/nodes/" + ident)


def free_udp_port(host):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_api(r, ironic):
    a = ironic.get("/")
    root = a.json()
    version = (root.get("default_version") or {}).get("version")
    if not r.check("ironic: GET / answers with the API versions", a.code == 200 and version,
                   "HTTP %s, max microversion %s" % (a.code, version)):
        return False
    a = ironic.get("/v1/drivers?type=dynamic")
    drivers = {d.get("name"): d.get("hosts", []) for d in a.json().get("drivers", [])}
    want = set(os.environ.get("OVBMC_LAB_IRONIC_HARDWARE_TYPES", "ipmi").split(","))
    r.check("ironic: hardware types %s are enabled" % ",".join(sorted(want)),
            a.code == 200 and want <= set(drivers), "HTTP %s: %s" % (a.code, sorted(drivers)))
    # Ironic on SQLite sends no conductor heartbeats (base_manager.py), so the API's
    # "alive" turns false [conductor]heartbeat_timeout (60 s) after the start: what shows
    # that the conductor is there is its registration and the hardware types it serves.
    a = ironic.get("/v1/conductors")
    hosts = {c["hostname"]: c.get("alive") for c in a.json().get("conductors", [])}
    serving = sorted(set(hosts) & set(drivers.get("ipmi", [])))
    r.check("ironic: a conductor is registered and serves ipmi", serving,
            ", ".join("%s (alive=%s)" % (h, str(hosts[h]).lower()) for h in serving)
            or "conductors %s, ipmi hosts %s (HTTP %s)" % (hosts, drivers.get("ipmi"), a.code))
    return True


def check_fake_node(r, ironic):
    name = NAME + "-fake"
    if ironic.get("/v1/nodes/" + name).code == 200:
        remove(ironic, name)  # left over from an interrupted smoke
    a = ironic.call("POST", "/v1/nodes", {"name": name, "driver": "fake-hardware"})
    if not r.check("ironic: POST /v1/nodes (fake-hardware) is 201", a.code == 201,
                   "HTTP %s %s" % (a.code, a.error() if a.code != 201 else a.json().get("uuid"))):
        return
    uuid = a.json()["uuid"]
    try:
        a = ironic.get("/v1/nodes/" + name)
        r.check("ironic: GET /v1/nodes/%s finds it by name" % name,
                a.code == 200 and a.json().get("uuid") == uuid, "HTTP %s" % a.code)
        a = ironic.get("/v1/nodes/%s/validate" % uuid)
        power = a.json().get("power", {})
        r.check("ironic: validate says its power interface is usable",
                a.code == 200 and power.get("result") is True, "HTTP %s %s" % (a.code, power))
        a = ironic.call("PUT", "/v1/nodes/%s/states/power" % uuid, {"target": "power on"})
        node = wait_power(ironic, uuid, "power on")
        r.check("ironic: power on (fake) is accepted and done",
                a.code == 202 and node.get("power_state") == "power on",
                "HTTP %s, power_state %s, last_error %s" % (
                    a.code, node.get("power_state"), node.get("last_error")))
    finally:
        a = remove(ironic, uuid)
        gone = ironic.get("/v1/nodes/" + uuid).code
        r.check("ironic: DELETE the node is 204, then GET is 404", a.code == 204 and gone == 404,
                "HTTP %s / %s" % (a.code, gone))


def check_ipmi_node(r, ironic, lab, here):
    """An ipmi node in front of pyghmi's fake BMC: Ironic runs ipmitool."""
    host = "127.0.0.1"
    port = free_udp_port(host)
    bmc = subprocess.Popen([os.path.join(here, "fakebmc-lo"), str(port), host],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    name = NAME + "-ipmi"
    uuid = None
    try:
        ready = bmc.stdout.readline()
        if not r.check("fakebmc-lo listens on %s:%d" % (host, port), "listening" in ready,
                       ready.strip()):
            return
        if ironic.get("/v1/nodes/" + name).code == 200:
            remove(ironic, name)
        logged = os.path.getsize(lab.ipmitool_log) if os.path.exists(lab.ipmitool_log) else 0
        info = {"ipmi_address": host, "ipmi_port": port, "ipmi_username": "admin",
                "ipmi_password": "password", "ipmi_protocol_version": "2.0"}
        a = ironic.call("POST", "/v1/nodes", {"name": name, "driver": "ipmi",
                                              "driver_info": info})
        if not r.check("ironic: POST /v1/nodes (ipmi) is 201", a.code == 201,
                       "HTTP %s %s" % (a.code, a.error() if a.code != 201 else "")):
            return
        uuid = a.json()["uuid"]
        t0 = time.monotonic()
        a = ironic.call("PUT", "/v1/nodes/%s/states/power" % uuid, {"target": "power on"})
        node = wait_power(ironic, uuid, "power on")
        r.check("ironic: power on over IPMI reaches the fake BMC (%.1fs)" % (time.monotonic() - t0),
                a.code == 202 and node.get("power_state") == "power on",
                "HTTP %s, power_state %s, last_error %s" % (
                    a.code, node.get("power_state"), node.get("last_error")))
        with open(lab.ipmitool_log, errors="replace") as f:
            f.seek(logged)
            calls = [ln for ln in f if ("-p %d " % port) in ln]
        r.check("ironic: the lab's ipmitool shim logged Ironic's calls", calls,
                "%d call(s) to port %d in %s" % (len(calls), port, lab.ipmitool_log))
    finally:
        if uuid:
            remove(ironic, uuid)
        bmc.terminate()
        try:
            bmc.wait(10)
        except subprocess.TimeoutExpired:
            bmc.kill()


def main():
    lab = settings.load()
    ironic = api.Ironic(lab.url, timeout=60)
    here = os.environ["OVBMC_LAB_IRONIC_DIR"]
    r = Report()
    t0 = time.monotonic()
    try:
        if check_api(r, ironic):
            check_fake_node(r, ironic)
            if os.environ.get("SMOKE_IPMI", "1") != "0":
                check_ipmi_node(r, ironic, lab, here)
    except Exception as e:
        r.check("smoke ran to the end", False, "%s: %s" % (type(e).__name__, e))
    print("smoke: %.1fs" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (r.passed, r.failed))
    return 1 if r.failed or not r.passed else 0


if __name__ == "__main__":
    sys.exit(main())
