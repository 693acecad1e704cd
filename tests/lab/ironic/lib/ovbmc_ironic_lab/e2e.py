"""Drive one BMC through the real Ironic, and check every result on the BMC.

Usage: e2e [--profile fakebmc] BMC_HOST BMC_PORT USER PASS
       e2e --profile redfish BMC_HOST REDFISH_PORT USER PASS   (e2e_redfish.py)

Ironic enrolls a node for the BMC (hardware type ``ipmi``), manages it,
switches its power every way Ironic knows, sets boot devices in UEFI and
legacy mode, sends an NMI, lets the periodic power sync find a change made
behind its back, repeats power and boot with given cipher suites, and makes
the node available.  After each step a direct ipmitool call asks the BMC
itself whether it happened: Ironic saying "done" is not enough.

Output: one line per step, ``RESULT STEP SECONDSs NOTE`` with RESULT one of
PASS, FAIL, SKIP, XFAIL (an expected failure) and XPASS; the output of a
failed step follows, indented.  Then ``e2e: total Ns`` and
``P passed, F failed, S skipped`` (XFAIL counts as skipped, XPASS as
passed).  Exit status 0 when nothing failed, 1 otherwise, 2 on bad usage.

Environment (all optional):
  E2E_IRONIC_URL        Ironic API (default: the lab's, from lab.conf)
  E2E_NODE_NAME         node name (default e2e-bmc-PORT); an old node of that
                        name is deleted first
  E2E_BASE_CIPHER_SUITE ipmi_cipher_suite for the main steps ("" = not set)
  E2E_CIPHER_SUITES     suites tried one by one near the end (default "3 17")
  E2E_ERROR_TESTS=1     also the wrong-password and no-BMC steps (each about
                        one [ipmi]command_retry_timeout)
  E2E_SYNC_WAIT         seconds to wait for the periodic power sync (default
                        2 x interval + retry timeout + 30, from ironic.conf);
                        skipped if above E2E_SYNC_MAX_WAIT (600)
  E2E_FORCE_POWER_SYNC  what [conductor]force_power_state_during_sync is
                        (default: from ironic.conf)
  E2E_XFAIL             step names whose failure is expected
  E2E_KEEP_NODE=1       leave the node enrolled at the end
  E2E_DIRECT_CS         cipher suite of the direct ipmitool checks
  E2E_MARK_LOG          file that gets "### e2e STEP" marks (default: the
                        lab's ipmitool argv log, for extract-commands)
  E2E_IPMITOOL          ipmitool of the direct checks (default
                        /usr/bin/ipmitool); ovbmc's tests give one whose
                        "power on|off" goes to Nova instead
  E2E_API_VERSION       microversion (default latest)
  E2E_HTTP_TIMEOUT      seconds per API call (default 300)
  E2E_CONSOLE_BANNER    enables the console step: text the guest's serial console
                        shows when SOL is activated (ovbmc against the OpenStack
                        lab: "ovbmc lab guest serial console"); unset = SKIP
  E2E_CONSOLE_ECHO      what the guest answers to a typed line, "%s" for the
                        line (default "echo: %s", the lab guest's and ovbmc's sim)
  E2E_CONSOLE_PORT      ipmi_terminal_port (default: a free port on 127.0.0.1)

``--profile fakebmc`` expects the steps pyghmi's fake BMC cannot pass to
fail: cipher-suite-17 (it offers suite 3 only), bootdev-persistent-readback
(it always answers "next boot only"), inject-nmi (chassis control 4 gets
0xCC) and sensors (it has no SDR repository).

Ironic's settings (sync interval, retry timeout, sensors) are read from the
lab's ironic.conf unless E2E_IRONIC_URL points at another Ironic.
"""
import datetime
import os
import socket
import sys
import time

from ovbmc_ironic_lab import api
from ovbmc_ironic_lab import ipmi
from ovbmc_ironic_lab import settings

PROFILES = {"fakebmc": {"cipher-suite-17", "bootdev-persistent-readback",
                        "inject-nmi", "sensors"},
            # Ironic's redfish hardware type (sushy) instead of ipmi: e2e_redfish.py
            "redfish": set()}
SETTLE = 240  # seconds a power or provision change may take in Ironic


class Fail(Exception):
    """The step failed; the message says what was seen."""


class Skip(Exception):
    """The step could not run here; the message says why."""


def env(name, default=""):
    return os.environ.get(name, default)


class Run:
    """One e2e run against one BMC: the node, the notes, the tallies."""

    def __init__(self, lab, host, port, user, password, xfail):
        self.lab = lab
        self.host, self.port, self.user, self.password = host, port, user, password
        self.ironic = api.Ironic(env("E2E_IRONIC_URL") or lab.url,
                                 env("E2E_API_VERSION", "latest"),
                                 float(env("E2E_HTTP_TIMEOUT", "300")))
        self.name = env("E2E_NODE_NAME") or "e2e-bmc-%s" % port
        self.base_cs = env("E2E_BASE_CIPHER_SUITE")
        self.bmc = ipmi.Bmc(host, port, user, password, env("E2E_IPMITOOL", "/usr/bin/ipmitool"),
                            env("E2E_DIRECT_CS"))
        self.xfail = xfail
        self.node = None  # uuid, once enrolled
        self.last = {}    # the node as last read
        self.notes, self.output = [], []
        self.passed = self.failed = self.skipped = 0
        self.failed_steps = []
        # set but empty: no marks
        mark = os.environ.get("E2E_MARK_LOG", lab.ipmitool_log)
        self.mark_log = mark if mark and os.access(mark, os.W_OK) else None
        # what this Ironic was configured with (only known for the lab's own)
        conf = lab.ironic_conf() if not env("E2E_IRONIC_URL") else None

        def ini(section, key, default):
            if conf is None or not conf.has_option(section, key):
                return default
            return conf.get(section, key).strip() or default
        self.ini = ini
        self.sync_interval = int(ini("conductor", "sync_power_state_interval", "120"))
        self.retry_timeout = int(ini("ipmi", "command_retry_timeout", "60"))
        self.sync_wait = int(env("E2E_SYNC_WAIT") or
                             2 * self.sync_interval + self.retry_timeout + 30)
        self.force_sync = env("E2E_FORCE_POWER_SYNC") or \
            ini("conductor", "force_power_state_during_sync", "True")
        self.sensors_on = ini("sensor_data", "send_sensor_data", "False")
        self.sensor_interval = int(ini("sensor_data", "interval", "600"))

    # ------------------------------------------------------------ plumbing
    def note(self, text):
        self.notes.append(text)

    def mark(self, step):
        if self.mark_log:
            with open(self.mark_log, "a") as f:
                f.write("### e2e %s node=%s %s\n" % (
                    step, self.node or "?", datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")))

    def step(self, name, fn):
        self.notes, self.output = [], []
        self.mark(name)
        t0 = time.monotonic()
        try:
            fn()
            outcome = "XPASS" if name in self.xfail else "PASS"
        except Skip as e:
            self.note(str(e))
            outcome = "SKIP"
        except Exception as e:  # Fail, or a crash: both are failures
            if not isinstance(e, Fail):
                self.output.append("%s: %s" % (type(e).__name__, e))
            if str(e) and isinstance(e, Fail):
                self.note(str(e))
            outcome = "XFAIL" if name in self.xfail else "FAIL"
        if outcome in ("PASS", "XPASS"):
            self.passed += 1
        elif outcome == "FAIL":
            self.failed += 1
            self.failed_steps.append(name)
        else:
            self.skipped += 1
        print("%-5s %-30s %6.1fs  %s" % (outcome, name, time.monotonic() - t0,
                                         " ".join(self.notes)), flush=True)
        if outcome == "FAIL":
            for line in "\n".join(self.output).splitlines()[:20]:
                print("      | %s" % line, flush=True)

    def need_node(self):
        if not self.node:
            raise Skip("no node (enroll failed)")

    def path(self, rest=""):
        return "/v1/nodes/%s%s" % (self.node, rest)

    def fetch(self):
        """Read the node; its fields then in self.last."""
        a = self.ironic.get(self.path())
        if a.code == 200:
            self.last = a.json()
        return a.code == 200

    def f(self, field):
        value = self.last
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def until(self, limit, done):
        """Poll the node each second until done() says True or False."""
        t0 = time.monotonic()
        while True:
            if self.fetch():
                verdict = done(time.monotonic() - t0)
                if verdict is not None:
                    return verdict
            if time.monotonic() - t0 >= limit:
                return False
            time.sleep(1)

    def wait_power(self, expect, limit=SETTLE):
        """No transition pending, the lock free, and power_state == expect."""
        def done(elapsed):
            if self.f("target_power_state") is None and self.f("reservation") is None:
                if self.f("power_state") == expect:
                    return True
                if self.f("last_error") is not None and elapsed >= 1:
                    return False
            return None
        return self.until(limit, done)

    def wait_provision(self, expect, limit=SETTLE):
        def done(_elapsed):
            state, target = self.f("provision_state"), self.f("target_provision_state")
            if target is None and state == expect:
                return True
            if state and (state.endswith("failed") or state == "error"):
                return False
            # a manage that failed falls back to enroll with last_error
            if target is None and state == "enroll" and expect != "enroll" \
                    and self.f("last_error") is not None:
                return False
            return None
        return self.until(limit, done)

    # ------------------------------------------------------------ steps
    def s_api(self):
        a = self.ironic.get("/")
        if a.code != 200:
            raise Fail("GET / -> HTTP %s %s" % (a.code, a.text[:200] if a.code == 0 else ""))
        root = a.json()
        version = (root.get("default_version") or {}).get("version") or \
            (root.get("versions") or [{}])[0].get("version")
        a = self.ironic.get("/v1/drivers?type=dynamic")
        if not any(d.get("name") == "ipmi" for d in a.json().get("drivers", [])):
            raise Fail("driver ipmi not enabled (HTTP %s)" % a.code)
        a = self.ironic.get("/v1/conductors")
        # alive=false is normal on SQLite, where Ironic sends no heartbeats
        conductors = ["%s (alive=%s)" % (c["hostname"], str(c.get("alive")).lower())
                      for c in a.json().get("conductors", [])]
        self.note("API max microversion %s; conductors: %s" % (version, ", ".join(conductors) or "?"))

    def create_node(self, fields):
        """POST the node named E2E_NODE_NAME with `fields` (resource class e2e), after
        deleting one an earlier run left under that name; self.node is its UUID."""
        a = self.ironic.get("/v1/nodes/%s" % self.name)
        if a.code == 200:
            old = a.json()["uuid"]
            self.ironic.patch("/v1/nodes/" + old,
                              {"op": "replace", "path": "/maintenance", "value": True})
            a = self.ironic.call("DELETE", "/v1/nodes/" + old)
            if a.code != 204:
                raise Fail("could not delete old node %s: HTTP %s %s" % (old, a.code, a.error()))
            self.note("deleted old node %s;" % old)
        a = self.ironic.call("POST", "/v1/nodes",
                             dict(fields, name=self.name, resource_class="e2e"))
        if a.code != 201:
            raise Fail("POST /v1/nodes -> HTTP %s %s" % (a.code, a.error()))
        self.last = a.json()
        self.node = self.last["uuid"]

    def s_enroll(self):
        info = {"ipmi_address": self.host, "ipmi_port": int(self.port),
                "ipmi_username": self.user, "ipmi_password": self.password,
                "ipmi_protocol_version": "2.0"}
        if self.base_cs:
            info["ipmi_cipher_suite"] = int(self.base_cs)
        self.create_node({"driver": "ipmi", "driver_info": info})
        self.note("node %s (%s; power=%s mgmt=%s boot=%s deploy=%s)" % (
            self.node, self.f("provision_state"), self.f("power_interface"),
            self.f("management_interface"), self.f("boot_interface"), self.f("deploy_interface")))
        if (self.f("power_interface"), self.f("management_interface")) != ("ipmitool", "ipmitool"):
            raise Fail()

    def s_validate(self):
        self.need_node()
        a = self.ironic.get(self.path("/validate"))
        if a.code != 200:
            raise Fail("HTTP %s %s" % (a.code, a.error()))
        power, mgmt = a.json()["power"]["result"], a.json()["management"]["result"]
        self.note("power=%s management=%s (validate does not contact the BMC)" % (
            str(power).lower(), str(mgmt).lower()))
        if not (power is True and mgmt is True):
            raise Fail()

    def s_manage(self):
        self.need_node()
        a = self.ironic.call("PUT", self.path("/states/provision"), {"target": "manage"})
        if a.code != 202:
            raise Fail("HTTP %s %s" % (a.code, a.error()))
        if not self.wait_provision("manageable"):
            raise Fail("state %s, last_error: %s" % (self.f("provision_state"), self.f("last_error")))
        self.note("manageable, power_state=%s (read during verify), vendor=%s" % (
            self.f("power_state"), self.f("properties.vendor")))
        if self.f("power_state") is None:
            raise Fail()

    def s_power_matches(self):
        self.need_node()
        if not self.fetch():
            raise Fail("GET node failed")
        ironic, bmc = self.f("power_state"), self.bmc.power()
        self.note("ironic=%s bmc=%s" % (ironic, bmc))
        if ironic != bmc:
            raise Fail()

    def power(self, target, expect, timeout=None):
        self.need_node()
        body = {"target": target}
        if timeout:
            body["timeout"] = timeout
        t0 = time.monotonic()
        a = self.ironic.call("PUT", self.path("/states/power"), body)
        if a.code != 202:
            raise Fail("PUT states/power %s -> HTTP %s %s" % (target, a.code, a.error()))
        if not self.wait_power(expect):
            raise Fail("ironic power_state=%s target=%s last_error: %s" % (
                self.f("power_state"), self.f("target_power_state"), self.f("last_error")))
        bmc = self.bmc.power()
        self.note("ironic=%s bmc=%s after %.1fs" % (self.f("power_state"), bmc,
                                                    time.monotonic() - t0))
        if bmc != expect or self.f("last_error") is not None:
            raise Fail()

    def set_bootdev(self, device, persistent):
        a = self.ironic.call("PUT", self.path("/management/boot_device"),
                             {"boot_device": device, "persistent": persistent})
        if a.code != 204:
            raise Fail("PUT boot_device %s -> HTTP %s %s" % (device, a.code, a.error()))

    def get_bootdev(self):
        a = self.ironic.get(self.path("/management/boot_device"))
        if a.code != 200:
            raise Fail("GET boot_device -> HTTP %s %s" % (a.code, a.error()))
        return a.json()["boot_device"], a.json()["persistent"]

    def s_bootdev_pxe(self):
        self.need_node()
        self.set_bootdev("pxe", True)
        dev, persistent = self.get_bootdev()
        selector, efi, bmc_persistent, _ = self.bmc.boot_param()
        self.note("ironic: %s persistent=%s; bmc: '%s' (%s,%s)" % (
            dev, str(persistent).lower(), selector, "EFI" if efi else "legacy",
            "persistent" if bmc_persistent else "next-boot-only"))
        if dev != "pxe" or "PXE" not in selector:
            raise Fail()

    def s_bootdev_persistent(self):
        self.need_node()
        _, persistent = self.get_bootdev()
        self.note("after 'set pxe --persistent' Ironic reads persistent=%s" % str(persistent).lower())
        if persistent is not True:
            raise Fail()

    def s_bootdev_disk(self):
        self.need_node()
        self.set_bootdev("disk", False)
        dev, persistent = self.get_bootdev()
        selector = self.bmc.boot_param()[0]
        self.note("ironic: %s persistent=%s; bmc: '%s'" % (dev, str(persistent).lower(), selector))
        if dev != "disk" or persistent is not False or "Hard-Drive" not in selector:
            raise Fail()

    def s_bootdev_more(self):
        self.need_node()
        seen, ok = [], True
        for device in ("cdrom", "bios", "safe"):
            try:
                self.set_bootdev(device, False)
                got = self.get_bootdev()[0]
            except Fail as e:
                self.output.append(str(e))
                ok = False
                continue
            seen.append("%s->%s" % (device, got))
            ok = ok and got == device
        self.note(" ".join(seen))
        if not ok:
            raise Fail()

    # The boot devices Ironic must list as supported (its redfish driver adds cdrom).
    SUPPORTED_BOOT_DEVICES = {"pxe", "disk"}

    def s_bootdev_supported(self):
        self.need_node()
        a = self.ironic.get(self.path("/management/boot_device/supported"))
        if a.code != 200:
            raise Fail("HTTP %s %s" % (a.code, a.error()))
        devices = a.json()["supported_boot_devices"]
        self.note(",".join(devices))
        if not self.SUPPORTED_BOOT_DEVICES <= set(devices):
            raise Fail()

    def s_bootdev_legacy(self):
        self.need_node()
        # boot_mode:bios makes Ironic send "chassis bootdev pxe
        # options=persistent" instead of the raw UEFI boot-flags request
        a = self.ironic.patch(self.path(), {"op": "add", "path": "/properties/capabilities",
                                            "value": "boot_mode:bios"})
        if a.code != 200:
            raise Fail("PATCH capabilities -> HTTP %s %s" % (a.code, a.error()))
        try:
            self.set_bootdev("pxe", True)
            dev, persistent = self.get_bootdev()
        finally:
            self.ironic.patch(self.path(), {"op": "remove", "path": "/properties/capabilities"})
        selector = self.bmc.boot_param()[0]
        self.note("boot_mode=bios: ironic %s persistent=%s; bmc: '%s'" % (
            dev, str(persistent).lower(), selector))
        if dev != "pxe" or "PXE" not in selector:
            raise Fail()

    def s_inject_nmi(self):
        self.need_node()
        a = self.ironic.call("PUT", self.path("/management/inject_nmi"), {})
        self.note("HTTP %s %s" % (a.code, "" if a.code == 204 else a.error()))
        if a.code != 204:
            raise Fail()

    def s_power_sync(self):
        """Change the power behind Ironic's back; its periodic sync must see it.

        With force_power_state_during_sync (Ironic's default) Ironic puts the
        BMC back to the state it believes in; without, it takes the BMC's.
        """
        self.need_node()
        if self.sync_wait > int(env("E2E_SYNC_MAX_WAIT", "600")):
            raise Skip("sync interval %ss too long to wait for" % self.sync_interval)
        if not self.fetch():
            raise Fail("GET node failed")
        before = self.f("power_state")
        if before not in ("power on", "power off"):
            raise Fail("node power_state %s" % before)
        flip = "off" if before == "power on" else "on"
        forced = settings.truthy(self.force_sync)
        self.bmc.run("power", flip)
        t0 = time.monotonic()
        while True:
            self.fetch()
            bmc = self.bmc.power()
            if forced:
                if bmc == before and self.f("target_power_state") is None:
                    break
            elif self.f("power_state") == "power " + flip:
                break
            if time.monotonic() - t0 >= self.sync_wait:
                raise Fail("after %ss: ironic=%s bmc=%s (force=%s)" % (
                    self.sync_wait, self.f("power_state"), bmc, self.force_sync))
            time.sleep(2)
        self.note("out-of-band 'power %s'; after %ds (sync interval %ss, "
                  "force_power_state_during_sync=%s): ironic=%s bmc=%s maintenance=%s" % (
                      flip, time.monotonic() - t0, self.sync_interval, self.force_sync,
                      self.f("power_state"), bmc, str(self.f("maintenance")).lower()))
        expect = before if forced else "power " + flip
        if self.f("power_state") != expect or self.f("maintenance") is not False:
            raise Fail()

    def set_cs(self, suite):
        if not suite:
            a = self.ironic.patch(self.path(), {"op": "remove",
                                                "path": "/driver_info/ipmi_cipher_suite"})
            return a.code in (200, 400)  # 400: it was not set
        a = self.ironic.patch(self.path(), {"op": "add", "path": "/driver_info/ipmi_cipher_suite",
                                            "value": int(suite)})
        return a.code == 200

    def cipher_suite(self, suite):
        """Boot device and power both ways with ipmi_cipher_suite = suite."""
        self.need_node()
        t0 = time.monotonic()
        if not self.set_cs(suite):
            raise Fail("PATCH ipmi_cipher_suite=%s failed" % suite)
        try:
            self.get_bootdev()
            self.fetch()
            first = "off" if self.f("power_state") == "power on" else "on"
            second = "on" if first == "off" else "off"
            self.power("power " + first, "power " + first)
            self.power("power " + second, "power " + second)
        except Fail as e:
            if str(e):
                self.note(str(e))  # what failed first, then the suite
            raise Fail() from None
        finally:
            direct = env("E2E_DIRECT_CS")
            self.note("(ipmi_cipher_suite=%s, %s%.1fs)" % (
                suite, "direct checks use -C %s, " % direct if direct else "",
                time.monotonic() - t0))
            self.set_cs(self.base_cs)

    def break_and_recover(self, what, field, bad, good):
        """Point the node at something wrong: Ironic must fail, then recover."""
        self.need_node()
        if env("E2E_ERROR_TESTS", "0") != "1":
            raise Skip("set E2E_ERROR_TESTS=1")
        self.ironic.patch(self.path(), {"op": "replace", "path": "/driver_info/" + field,
                                        "value": bad})
        t0 = time.monotonic()
        a = self.ironic.get(self.path("/management/boot_device"))
        self.ironic.patch(self.path(), {"op": "replace", "path": "/driver_info/" + field,
                                        "value": good})
        self.note("%s: GET boot_device -> HTTP %s after %.1fs: %s" % (
            what, a.code, time.monotonic() - t0, a.error()))
        if a.code in (200, 0):
            raise Fail()
        self.get_bootdev()

    def s_error_password(self):
        self.break_and_recover("wrong password", "ipmi_password", "e2e-wrong-password",
                               self.password)

    def s_error_no_bmc(self):
        dead = int(self.port) + 1
        while not self.udp_free(dead):
            dead += 1
        self.break_and_recover("nothing listening on UDP %d" % dead, "ipmi_port", dead,
                               int(self.port))

    def udp_free(self, port):
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.bind((self.host, port))
                return True
            except OSError:
                return False

    def s_sensors(self):
        self.need_node()
        if not settings.truthy(self.sensors_on):
            raise Skip("sensor collection is off: restart the lab with "
                       "OVBMC_LAB_IRONIC_SENSORS=1 up")
        log = self.lab.log_file
        if not os.access(log, os.R_OK):
            raise Skip("cannot read %s" % log)
        with open(log, errors="replace") as f:
            f.seek(0, os.SEEK_END)
            start = f.tell()
        limit = self.sensor_interval + self.retry_timeout + 30
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            with open(log, errors="replace") as f:
                f.seek(start)
                new = f.read()
            for line in new.splitlines():
                if self.node in line and "hardware.ipmi.metrics" in line:
                    self.note("sensor payload for the node logged by the notifier after %ds"
                              % (time.monotonic() - t0))
                    return
                if ("sensor data for node %s" % self.node) in line and "could not" in line:
                    raise Fail("Ironic: %s" % line[line.find("During get_sensors_data"):][:200])
            time.sleep(3)
        raise Fail("no sensor result for the node within %ss" % limit)

    def console_state(self):
        a = self.ironic.get(self.path("/states/console"))
        if a.code != 200:
            raise Fail("GET states/console -> HTTP %s %s" % (a.code, a.error()))
        return a.json()

    def set_console(self, enabled, limit=60):
        """`baremetal node console enable|disable`, waited for (it is asynchronous)."""
        a = self.ironic.call("PUT", self.path("/states/console"), {"enabled": enabled})
        if a.code != 202:
            raise Fail("PUT states/console enabled=%s -> HTTP %s %s" % (
                enabled, a.code, a.error()))
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            self.fetch()
            if self.f("console_enabled") is enabled:
                return
            if self.f("last_error"):
                raise Fail("console enabled=%s: last_error %s" % (enabled, self.f("last_error")))
            time.sleep(1)
        raise Fail("console_enabled still %s after %ss" % (self.f("console_enabled"), limit))

    def s_console(self):
        """ipmitool-socat: enable, connect to what `console show` says, banner, echo, disable."""
        self.need_node()
        banner = env("E2E_CONSOLE_BANNER")
        if not banner:
            raise Skip("E2E_CONSOLE_BANNER not set")
        # The guest's console needs a running guest.
        if self.bmc.power() != "power on":
            self.power("power on", "power on")
        port = env("E2E_CONSOLE_PORT")
        if not port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = str(s.getsockname()[1])
        a = self.ironic.patch(self.path(),
                              {"op": "replace", "path": "/console_interface",
                               "value": "ipmitool-socat"},
                              {"op": "add", "path": "/driver_info/ipmi_terminal_port",
                               "value": int(port)})
        if a.code != 200:
            raise Fail("PATCH console_interface=ipmitool-socat -> HTTP %s %s" % (
                a.code, a.error()))
        self.set_console(True)
        try:
            # `console show`; Ironic runs `sol deactivate` for it, so it comes before the
            # connection, whose `sol activate` socat starts when a client connects.
            info = self.console_state().get("console_info") or {}
            url = info.get("url") or ""
            if info.get("type") != "socat" or not url.startswith("tcp://"):
                raise Fail("console show: %s" % info)
            host, _, cport = url[len("tcp://"):].rstrip("/").rpartition(":")
            self.note("console %s;" % url)
            line = "e2e console %d" % os.getpid()
            echo = env("E2E_CONSOLE_ECHO", "echo: %s") % line
            with socket.create_connection((host.strip("[]"), int(cport)), timeout=10) as c:
                got = self.read_until(c, banner.encode(), 60)
                self.note("banner after %d bytes;" % len(got))
                # the prompt after the banner, then a typed line and its answer
                time.sleep(1)
                c.sendall(line.encode() + b"\r")
                self.read_until(c, echo.encode(), 30)
                self.note("%r came back;" % echo)
        finally:
            self.set_console(False)
        if "01 00 00" not in " ".join(self.bmc.run("raw", "0x06", "0x4a", "0x01").split()):
            raise Fail("SOL still active on the BMC after console disable")
        self.note("disabled; no SOL payload active on the BMC")

    def read_until(self, sock, needle, limit):
        """What the console sent until `needle` (bounded by `limit` seconds)."""
        got, t0 = b"", time.monotonic()
        while needle not in got:
            left = limit - (time.monotonic() - t0)
            if left <= 0:
                raise Fail("%r not seen within %ss; got %r" % (needle, limit, got[-300:]))
            sock.settimeout(min(left, 5))
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise Fail("console closed before %r; got %r" % (needle, got[-300:]))
            got += data
        return got

    def s_provide(self):
        self.need_node()
        self.fetch()
        if self.f("maintenance") is True:
            self.ironic.patch(self.path(), {"op": "replace", "path": "/maintenance", "value": False})
            self.note("(cleared maintenance: %s)" % self.f("maintenance_reason"))
        a = self.ironic.call("PUT", self.path("/states/provision"), {"target": "provide"})
        if a.code != 202:
            raise Fail("HTTP %s %s" % (a.code, a.error()))
        if not self.wait_provision("available"):
            raise Fail("state %s last_error: %s" % (self.f("provision_state"), self.f("last_error")))
        self.note("available (automated cleaning disabled), power_state=%s" % self.f("power_state"))

    def s_delete(self):
        self.need_node()
        if env("E2E_KEEP_NODE", "0") == "1":
            raise Skip("kept (E2E_KEEP_NODE=1)")
        a = self.ironic.call("DELETE", self.path())
        if a.code != 204:
            raise Fail("HTTP %s %s" % (a.code, a.error()))

    # ------------------------------------------------------------ the run
    def first_steps(self):
        """Enrollment and the power steps, the same for every profile."""
        yield "api", self.s_api
        yield "enroll", self.s_enroll
        yield "validate", self.s_validate
        yield "manage", self.s_manage
        yield "power-state-matches-bmc", self.s_power_matches
        yield "power-on", lambda: self.power("power on", "power on")
        yield "reboot", lambda: self.power("rebooting", "power on")
        yield "power-off", lambda: self.power("power off", "power off")
        yield "power-on-again", lambda: self.power("power on", "power on")
        yield "soft-reboot", lambda: self.power("soft rebooting", "power on", 30)
        yield "soft-power-off", lambda: self.power("soft power off", "power off", 30)

    def steps(self):
        yield from self.first_steps()
        yield "bootdev-set-pxe-persistent", self.s_bootdev_pxe
        yield "bootdev-persistent-readback", self.s_bootdev_persistent
        yield "bootdev-set-disk", self.s_bootdev_disk
        yield "bootdev-cdrom-bios-safe", self.s_bootdev_more
        yield "bootdev-supported", self.s_bootdev_supported
        yield "bootdev-legacy-bios-mode", self.s_bootdev_legacy
        yield "inject-nmi", self.s_inject_nmi
        yield "power-sync", self.s_power_sync
        for suite in env("E2E_CIPHER_SUITES", "3 17").split():
            if not suite.isdigit():
                print("e2e: bad cipher suite %r in E2E_CIPHER_SUITES" % suite, file=sys.stderr)
                continue
            yield "cipher-suite-" + suite, lambda s=suite: self.cipher_suite(s)
        yield "error-wrong-password", self.s_error_password
        yield "error-no-bmc", self.s_error_no_bmc
        yield "sensors", self.s_sensors
        yield "console", self.s_console
        yield "provide", self.s_provide
        yield "delete", self.s_delete

    def run(self, profile):
        t0 = time.monotonic()
        print("e2e: Ironic %s -> BMC %s:%s (user %s%s)%s" % (
            self.ironic.url, self.host, self.port, self.user,
            ", cipher suite %s" % self.base_cs if self.base_cs else "",
            ", profile %s" % profile if profile else ""), flush=True)
        if not env("E2E_IRONIC_URL") and os.path.exists(self.lab.conf_file):
            print("e2e: lab config: min_command_interval=%ss command_retry_timeout=%ss "
                  "use_ipmitool_retries=%s sync_power_state_interval=%ss "
                  "force_power_state_during_sync=%s sensors=%s" % (
                      self.ini("ipmi", "min_command_interval", "5"), self.retry_timeout,
                      self.ini("ipmi", "use_ipmitool_retries", "False"), self.sync_interval,
                      self.force_sync, self.sensors_on), flush=True)
        for name, fn in self.steps():
            self.step(name, fn)
        self.mark("end")
        print("e2e: total %.1fs%s" % (time.monotonic() - t0,
                                      "; failed: " + " ".join(self.failed_steps)
                                      if self.failed_steps else ""))
        print("%d passed, %d failed, %d skipped" % (self.passed, self.failed, self.skipped))
        return 0 if self.failed == 0 else 1


def usage(code):
    if code == 0:
        from ovbmc_ironic_lab import e2e_redfish
        print(__doc__ + "\n" + e2e_redfish.__doc__)
        return 0
    print("usage: e2e [--profile fakebmc|redfish] BMC_HOST BMC_PORT USER PASS",
          file=sys.stdout if code == 0 else sys.stderr)
    return code


def main(argv):
    args, profile = list(argv[1:]), ""
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("-h", "--help"):
            return usage(0)
        if opt == "--":
            break
        if opt == "--profile" and args:
            profile = args.pop(0)
        elif opt.startswith("--profile="):
            profile = opt.split("=", 1)[1]
        else:
            print("e2e: unknown option %s" % opt, file=sys.stderr)
            return 2
    if len(args) != 4:
        return usage(2)
    if profile and profile not in PROFILES:
        print("e2e: unknown profile %s" % profile, file=sys.stderr)
        return 2
    xfail = set(env("E2E_XFAIL").split()) | PROFILES.get(profile, set())
    if profile == "redfish":
        from ovbmc_ironic_lab import e2e_redfish
        return e2e_redfish.RedfishRun(settings.load(), *args, xfail=xfail).run(profile)
    return Run(settings.load(), *args, xfail=xfail).run(profile)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
