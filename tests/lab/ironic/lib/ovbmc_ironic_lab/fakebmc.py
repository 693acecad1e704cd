"""A stand-in BMC on loopback: ``tests/lab/ironic/fakebmc-lo PORT [ADDRESS]``.

pyghmi's server side with an in-memory machine, user ``admin`` password
``password``.  pyghmi's own ``fakebmc`` command binds every interface
(``::``); the lab sends traffic to loopback only, so this one binds ADDRESS
(127.0.0.1 unless told).  It is what the e2e's ``--profile fakebmc`` was
calibrated against, and what ``smoke`` points an ipmi node at to see that
Ironic's ipmitool path works without ovbmc.
"""
import sys

from pyghmi.ipmi import bmc

USERS = {"admin": "password"}


class LoopbackBmc(bmc.Bmc):
    """Power and boot device in memory; a cold reset ends the program."""

    def __init__(self, port, address):
        super().__init__(USERS, port=port, address=address)
        self.powerstate = "off"
        self.bootdevice = "default"

    def get_power_state(self):
        return self.powerstate

    def power_on(self):
        self.powerstate = "on"

    def power_off(self):
        self.powerstate = "off"

    def power_shutdown(self):  # soft off: the guest "shuts down" at once
        self.powerstate = "off"

    def power_reset(self):  # a reset keeps the power as it is
        pass

    def is_active(self):
        return self.powerstate == "on"

    def get_boot_device(self):
        return self.bootdevice

    def set_boot_device(self, bootdevice):
        self.bootdevice = bootdevice

    def cold_reset(self):
        print("fakebmc: cold reset: exiting", flush=True)
        sys.exit(0)


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit("usage: fakebmc-lo PORT [ADDRESS]")
    port, address = int(argv[1]), argv[2] if len(argv) == 3 else "127.0.0.1"
    server = LoopbackBmc(port, address)
    print("fakebmc listening on %s:%d" % (address, port), flush=True)
    server.listen()


if __name__ == "__main__":
    main(sys.argv)
