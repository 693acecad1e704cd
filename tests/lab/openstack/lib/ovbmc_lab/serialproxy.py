"""Nova's real nova-serialproxy for the lab: ``python -m ovbmc_lab.serialproxy``.

Usage: python -m ovbmc_lab.serialproxy --config-file nova.conf [nova-serialproxy options]

This is nova/cmd/serialproxy.py (websockify, the token check in the
database, the Origin check, the ``CONNECT <path>`` handshake, the byte
proxy) with one difference.  For each connection the proxy asks the
instance's nova-compute, over RPC, whether the token's port is still the
instance's console port (``validate_console_port``).  The lab's RPC is
oslo.messaging's in-process ``fake://`` transport inside the one Nova
process (``ovbmc_lab.nova``), which a second process cannot reach.  So that
one question is answered here with what the lab's compute would say: the
instance exists and the port is the lab's console port (lab.conf's
``OVBMC_LAB_CONSOLE_PORT``, which ``LabDriver.get_serial_console`` gives
every guest).  Everything else is Nova's code, unchanged.
"""
import os
import sys

os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")

from nova.cmd import serialproxy  # noqa: E402  (patches threading first)
from nova.console import websocketproxy  # noqa: E402
from nova import exception  # noqa: E402
from nova import objects  # noqa: E402

from ovbmc_lab import settings  # noqa: E402

CONSOLE_PORT = str(settings.load().console_port)


def _check_console_port(self, ctxt, instance_uuid, port, console_type):
    """validate_console_port as the lab's compute answers it."""
    try:
        objects.Instance.get_by_uuid(ctxt, instance_uuid)
    except exception.InstanceNotFound:
        return None
    return console_type == "serial" and str(port) == CONSOLE_PORT


websocketproxy.NovaProxyRequestHandler._check_console_port = _check_console_port

if __name__ == "__main__":
    sys.argv[0] = "nova-serialproxy"
    serialproxy.main()
