"""Direct ipmitool calls to a BMC, past Ironic, to check what Ironic did.

The password goes through the environment (``-E``), never the command line.
"""
import os
import re
import subprocess
import time


class Bmc:
    def __init__(self, host, port, user, password, ipmitool="/usr/bin/ipmitool",
                 cipher_suite=""):
        self.base = [ipmitool, "-I", "lanplus", "-H", host, "-p", str(port), "-U", user, "-E"]
        if cipher_suite:
            self.base += ["-C", cipher_suite]
        self.base += ["-R", "3", "-N", "2"]
        self.env = dict(os.environ, IPMI_PASSWORD=password)

    def run(self, *args):
        """ipmitool's output (stdout and stderr), '' if it hung."""
        try:
            p = subprocess.run(self.base + list(args), env=self.env, timeout=30,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        except subprocess.TimeoutExpired:
            return ""
        return p.stdout

    def power(self, patience=15):
        """'power on', 'power off' (Ironic's words for them) or '?'.

        A BMC that cannot say now (ovbmc answers C0 "node busy" while its cloud's server list
        is slower than the IPMI budget, or the instance is in a transition) is asked again for
        up to `patience` seconds, as Ironic's own ipmitool calls are retried ([ipmi]
        command_retry_timeout); the last answer is kept in `last_output`.
        """
        deadline = time.monotonic() + patience
        while True:
            out = self.last_output = self.run("power", "status")
            for state in ("on", "off"):
                if "Chassis Power is %s" % state in out:
                    return "power %s" % state
            if time.monotonic() >= deadline:
                return "?"
            time.sleep(1)

    def boot_param(self):
        """Boot flags (parameter 5): (selector, EFI?, persistent?, raw text)."""
        out = self.run("chassis", "bootparam", "get", "5")
        m = re.search(r"Boot Device Selector : *(.*)", out)
        return (m.group(1).strip() if m else "", "BIOS EFI boot" in out,
                "Options apply to all future boots" in out, out)
