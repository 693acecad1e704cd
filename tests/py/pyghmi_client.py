#!/usr/bin/env python3
"""Drive a BMC with pyghmi's IPMI client and print one JSON object with every result.

Used by tests/it/pyghmi.rs; also handy by hand:

    OVBMC_PASSWORD=secret python tests/py/pyghmi_client.py 127.0.0.1 6230 admin

Each step is recorded as {"ok": true, "result": ...} or {"ok": false, "error": "..."}, so the
caller sees which step failed and why. Exit status: 0 when every step ran without an exception,
1 otherwise, 2 for a usage error. The password comes from OVBMC_PASSWORD (never argv, which
other users can read in the process list).
"""
import json
import os
import sys
import time


def main():
    if len(sys.argv) != 4 or "OVBMC_PASSWORD" not in os.environ:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, user = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    password = os.environ["OVBMC_PASSWORD"]

    from pyghmi.ipmi import command

    out = {}

    def step(name, fn):
        try:
            out[name] = {"ok": True, "result": fn()}
            return True
        except Exception as e:  # report every failure, keep going where it makes sense
            out[name] = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
            return False

    c = None

    def connect():
        nonlocal c
        c = command.Command(bmc=host, port=port, userid=user, password=password)
        return True

    if step("connect", connect):
        step("get_power_initial", c.get_power)
        # wait=True polls Get Chassis Status until the machine reports "on".
        step("set_power_on", lambda: c.set_power("on", wait=True))
        step("get_power_after_on", c.get_power)
        step("set_power_off", lambda: c.set_power("off"))

        def power_after_off():
            # set_power('off') without wait returns once the BMC accepted the action;
            # poll briefly for the state (the simulator in the test has zero delay).
            deadline = time.monotonic() + 10
            while True:
                p = c.get_power()
                if p.get("powerstate") == "off" or time.monotonic() > deadline:
                    return p
                time.sleep(0.2)

        step("get_power_after_off", power_after_off)
        step("set_bootdev", lambda: c.set_bootdev("network", persist=True, uefiboot=True))
        step("get_bootdev", c.get_bootdev)

        def logout():
            # Close Session, so the BMC frees the session at once instead of on timeout.
            c.ipmi_session.logout()

        step("logout", logout)

    print(json.dumps(out, sort_keys=True))
    return 0 if all(v["ok"] for v in out.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
