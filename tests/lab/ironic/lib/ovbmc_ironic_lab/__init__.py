"""ovbmc's Ironic lab, the Python half.

The bash scripts (tests/lab/ironic/{setup,up,down}) own the Ironic process
and its ironic.conf; the programs here run in the lab's venv (python -m
ovbmc_ironic_lab.<module>, started by the thin scripts beside ``up``):

settings   where the lab's Ironic is and what its ironic.conf says
api        Ironic's REST API (noauth) as the e2e and the smoke use it
ipmi       the direct ipmitool calls that cross-check a BMC
e2e        drive one BMC through the real Ironic, every result cross-checked
smoke      a quick check that the running Ironic answers and keeps nodes
fakebmc    pyghmi's fake BMC, on loopback only
commands   the ipmitool command lines Ironic ran, grouped by e2e step
"""
