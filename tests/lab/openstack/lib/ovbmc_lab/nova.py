"""All of Nova in one process: ``python -m ovbmc_lab.nova``.

A real cloud runs nova-api, nova-conductor, nova-scheduler and nova-compute
as separate programs that talk over RabbitMQ.  The lab runs Nova's real code
for all four in one process instead, for two reasons: no message broker to
install and start, and one pid for ``down`` to stop.

* nova-conductor, nova-scheduler and nova-compute are Nova's own
  ``nova.service.Service`` objects with their real managers, connected by
  oslo.messaging's in-process ``fake://`` transport (how Nova's functional
  tests run them).  nova-compute drives ``ovbmc_lab.fakevirt.LabDriver``.
* The compute API is Nova's real WSGI application (api-paste pipeline,
  keystonemiddleware, microversions, policy), served on the lab's Nova port
  by ``ovbmc_lab.serve``.

Nova reads ``$OS_NOVA_CONFIG_DIR/{nova.conf,api-paste.ini}`` (``up`` writes
them).  It runs in native-thread mode, Nova 34's default, not eventlet.
"""
import os
import sys
import time

# Before anything of Nova is imported: no eventlet, threads.
os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")
from nova import monkey_patch  # noqa: E402

monkey_patch.patch(backend="threading")

from ovbmc_lab import settings  # noqa: E402
from ovbmc_lab import sqlite  # noqa: E402,F401  (before any engine exists)
from ovbmc_lab import fakevirt  # noqa: E402
from ovbmc_lab.serve import serve  # noqa: E402

# nova.conf says compute_driver = ovbmc_lab_fake.LabDriver, and Nova imports
# "nova.virt.<compute_driver>": answer that import with our module.
sys.modules["nova.virt.ovbmc_lab_fake"] = fakevirt

from oslo_log import log as logging  # noqa: E402

from nova import context  # noqa: E402
from nova import objects  # noqa: E402
from nova import service  # noqa: E402
from nova.api.openstack import wsgi_app  # noqa: E402
from nova.compute import rpcapi as compute_rpcapi  # noqa: E402
from nova.conductor import rpcapi as conductor_rpcapi  # noqa: E402
from nova.objects import host_mapping  # noqa: E402
from nova.scheduler import rpcapi as scheduler_rpcapi  # noqa: E402

LOG = logging.getLogger("ovbmc_lab.nova")

# In the order they must start: compute registers with the conductor, and
# the scheduler must be there before the first boot request.
SERVICES = (
    dict(binary="nova-conductor", topic=conductor_rpcapi.RPC_TOPIC),
    dict(binary="nova-scheduler", topic=scheduler_rpcapi.RPC_TOPIC),
    dict(binary="nova-compute", topic=compute_rpcapi.RPC_TOPIC,
         topic_alt=compute_rpcapi.RPC_TOPIC_ALT),
)


def say(msg):
    print("ovbmc-lab: nova: %s" % msg, flush=True)


def start_services():
    started = []
    for kwargs in SERVICES:
        t0 = time.monotonic()
        svc = service.Service.create(**kwargs)
        svc.start()
        started.append(svc)
        say("%s started in %.1f s" % (kwargs["binary"], time.monotonic() - t0))
    return started


def map_compute_host():
    """What ``nova-manage cell_v2 discover_hosts`` does, at every start.

    A new compute node must be mapped to cell1 before the scheduler will
    place anything on it; doing it here saves ``up`` a second program and
    the wait for ``discover_hosts_in_cells_interval``.  Idempotent.
    """
    for hm in host_mapping.discover_hosts(context.get_admin_context()):
        say("host %s mapped to cell %s" % (hm.host, hm.cell_mapping.name))


def main():
    conf = settings.load()
    sys.argv = ["ovbmc-lab-nova"]  # init_application parses sys.argv
    # parses nova.conf, sets up logging, RPC (fake://) and the databases
    app = wsgi_app.init_application("osapi_compute", "nova-api-os-compute")
    objects.Service.enable_min_version_cache()
    services = start_services()
    map_compute_host()
    try:
        serve(app, "nova-api", conf.host, conf.ports["nova"], threads=16)
    finally:
        for svc in reversed(services):
            try:
                svc.stop()
            except Exception as e:  # on the way out: report, go on
                say("stopping %s: %s" % (svc.binary, e))
        say("stopped")
        # the services' RPC and periodic threads would keep us alive
        os._exit(0)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        # a Nova that failed half-way must not linger with its threads
        import traceback
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
