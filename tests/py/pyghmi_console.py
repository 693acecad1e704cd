#!/usr/bin/env python3
"""Open pyghmi's SOL Console on a BMC, wait for the guest's prompt, type a line, wait for the
simulated guest's `echo: LINE`, close. Prints what the console received, then `OK`.

Used by tests/it/sol.rs; also handy by hand:

    OVBMC_PASSWORD=secret python tests/py/pyghmi_console.py 127.0.0.1 6230 admin 'hello'

Every wait is bounded (20 s each); exit status 0 on success, 1 on a timeout or an error the
console reported, 2 for a usage error. The password comes from OVBMC_PASSWORD (never argv).
"""
import os
import sys
import time


def main():
    if len(sys.argv) != 5 or "OVBMC_PASSWORD" not in os.environ:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, user, line = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    password = os.environ["OVBMC_PASSWORD"]

    from pyghmi.ipmi import console

    got = bytearray()
    errors = []

    def handler(data):
        if isinstance(data, dict):
            errors.append(data)
        elif isinstance(data, str):
            got.extend(data.encode())
        else:
            got.extend(data)

    def wait_for(needle):
        deadline = time.monotonic() + 20
        while needle not in got and not errors and time.monotonic() < deadline:
            console.Console.wait_for_rsp(0.2)
        return needle in got

    con = console.Console(bmc=host, userid=user, password=password,
                          iohandler=handler, port=port)
    ok = wait_for(b"login: ")
    if ok:
        con.send_data((line + "\r").encode())
        ok = wait_for(("echo: " + line).encode())
    con.close()
    sys.stdout.write(got.decode("utf-8", "replace"))
    sys.stdout.write("\n")
    if errors:
        print("console errors: %r" % errors)
    if not ok or errors:
        print("FAILED")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
