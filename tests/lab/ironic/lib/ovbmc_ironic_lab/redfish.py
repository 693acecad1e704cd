"""Direct Redfish calls to a BMC, past Ironic, to check what Ironic did.

The same role for the ``redfish`` profile as ``ipmi.Bmc`` has for the
``ipmi`` one: read the ComputerSystem (DSP0266 / ComputerSystem schema:
``PowerState``, ``Boot``) with the CA Ironic is given, so that a check and
Ironic trust the same certificate.  Basic authentication (DSP0266 §13.2);
the password is never printed.
"""
import json
import subprocess
import time

import requests


class Bmc:
    def __init__(self, base, system, user, password, ca=None, oob_power=None, nova=None):
        self.base = base.rstrip("/")
        self.system = system
        self.http = requests.Session()
        self.http.auth = (user, password)
        # True: the system's trust store; a path: that CA (or the self-signed cert itself).
        # Given per request: requests lets REQUESTS_CA_BUNDLE from the environment beat a
        # Session's verify (psf/requests issue 3829), and CI machines set it.
        self.verify = ca or True
        self.http.headers.update({"Accept": "application/json", "OData-Version": "4.0"})
        self.oob_power = oob_power
        self.nova_cmd = nova

    def get(self, path):
        """The JSON document at path, or {} (the error then in ``self.error``)."""
        try:
            r = self.http.get(self.base + path, timeout=30, verify=self.verify)
        except requests.RequestException as e:
            self.error = str(e)
            return {}
        if r.status_code != 200:
            self.error = "GET %s -> HTTP %s %s" % (path, r.status_code, r.text[:200])
            return {}
        return r.json()

    def reset(self, reset_type):
        r = self.http.post(self.base + self.system + "/Actions/ComputerSystem.Reset",
                           json={"ResetType": reset_type}, timeout=30, verify=self.verify)
        return r.status_code

    def sys(self):
        return self.get(self.system)

    def power(self):
        """'power on', 'power off' (Ironic's words for them) or '?'."""
        state = self.sys().get("PowerState")
        return {"On": "power on", "Off": "power off"}.get(state, "?")

    def boot(self):
        """(BootSourceOverrideTarget, BootSourceOverrideEnabled, BootSourceOverrideMode)."""
        b = self.sys().get("Boot") or {}
        return (b.get("BootSourceOverrideTarget"), b.get("BootSourceOverrideEnabled"),
                b.get("BootSourceOverrideMode"))

    def set_power_out_of_band(self, want):
        """Change the power behind Ironic's back: the E2E_OOB_POWER command (ovbmc's tests:
        Nova's os-start/os-stop), else a Redfish Reset straight to the BMC."""
        if self.oob_power:
            p = subprocess.run([self.oob_power, want], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=120)
            said = "%s %s: rc %s %s" % (self.oob_power, want, p.returncode,
                                        p.stdout.strip()[-200:])
        else:
            said = "Redfish Reset %s: HTTP %s" % (
                want, self.reset("On" if want == "on" else "ForceOff"))
        # Return once the BMC shows the change, as a BMC's own power command would: Nova's
        # os-stop answers 202 before the instance stops, and a check made before the BMC
        # sees the change would pass without Ironic's sync ever having had to correct it.
        # (Ironic's sync may switch it back first; then it is never seen, not an error.)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            if self.power() == "power " + want:
                return said + " (the BMC showed power %s after %.0fs)" % (
                    want, time.monotonic() - t0)
            time.sleep(0.5)
        return said + " (the BMC did not show power %s within 60s)" % want

    def nova(self):
        """The E2E_NOVA command's JSON (``openstack server show -f json`` of the instance
        behind the BMC), or None when there is no such command."""
        if not self.nova_cmd:
            return None
        p = subprocess.run([self.nova_cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=120)
        try:
            return json.loads(p.stdout)
        except ValueError:
            return {"error": (p.stdout + p.stderr)[-300:]}
