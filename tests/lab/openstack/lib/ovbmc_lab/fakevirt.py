"""The lab's hypervisor: Nova's fake virt driver, slow and restart-safe.

nova.conf names it ``compute_driver = ovbmc_lab_fake.LabDriver``; Nova only
loads drivers from the ``nova.virt`` package, so ``ovbmc_lab.nova`` makes
this module importable under that name before Nova starts.

Two things differ from Nova's own fake driver, each because ovbmc's tests
need it:

* Power operations take time.  Spawn, power off, power on and reboot each
  sleep ``OVBMC_LAB_FAKE_DELAY`` seconds (lab.conf; 1.0) before the fake's
  instant state change (delete stays instant: nothing waits on it).  A real hypervisor takes seconds, and a
  BMC in front of Nova must cope with the transitional task states
  (spawning, powering-off, rebooting_hard, rebuild_spawning ...) that an
  instant fake never shows.
* The hypervisor survives a restart.  The stock fake keeps its guests in
  memory only, so after ``down`` and ``up`` Nova's periodic power sync would
  find every instance gone and stop it.  ``init_host`` reads this host's
  instances back from Nova's database with the power state they had.

The base class is ``FakeDriverWithoutFakeNodes``, which keeps its node UUID
in ``$state_path/compute_id`` as real drivers do (the plain ``FakeDriver``
makes up a new node at every start, and Nova refuses to start a compute
whose node changed).
"""
import time

from oslo_log import log as logging

from nova import context as nova_context
from nova import objects
from nova.compute import power_state
from nova.compute import vm_states
from nova.virt import fake

from ovbmc_lab import settings

LOG = logging.getLogger(__name__)


class LabDriver(fake.FakeDriverWithoutFakeNodes):
    """FakeDriver with a power delay and guests that outlive the process."""

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self._delay = settings.load().fake_delay

    def _take_time(self, what, instance):
        if self._delay > 0:
            LOG.info("lab hypervisor: %s of %s takes %.1f s",
                     what, instance.uuid, self._delay)
            time.sleep(self._delay)

    # ------------------------------------------------------------ restart
    def init_host(self, host):
        super().init_host(host)
        ctx = nova_context.get_admin_context()
        try:
            instances = objects.InstanceList.get_by_host(
                ctx, host, expected_attrs=["flavor"])
        except Exception as e:  # a new lab: cell1 not mapped yet
            LOG.info("lab hypervisor: no guests to restore (%s)", e)
            return
        for inst in instances:
            if inst.vm_state in (vm_states.DELETED, vm_states.SOFT_DELETED):
                continue
            self._restore(inst)

    def _restore(self, inst):
        """Put one guest of the database back into the fake hypervisor."""
        if inst.power_state in (power_state.RUNNING, power_state.SHUTDOWN):
            state = inst.power_state
        elif inst.vm_state == vm_states.ACTIVE:
            state = power_state.RUNNING
        else:  # stopped, rescued mid-way, error: a guest that is not running
            state = power_state.SHUTDOWN
        self.instances[inst.uuid] = fake.FakeInstance(inst.name, state, inst.uuid)
        # the fake hypervisor's free resources, which placement is told about
        self.resources.claim(vcpus=inst.flavor.vcpus, mem=inst.flavor.memory_mb,
                             disk=inst.flavor.root_gb)
        LOG.info("lab hypervisor: restored %s (%s), power state %s",
                 inst.uuid, inst.display_name, state)

    # ------------------------------------------------------------ power
    def spawn(self, context, instance, *args, **kwargs):
        self._take_time("spawn", instance)
        return super().spawn(context, instance, *args, **kwargs)

    def power_off(self, instance, *args, **kwargs):
        self._take_time("power off", instance)
        return super().power_off(instance, *args, **kwargs)

    def power_on(self, context, instance, *args, **kwargs):
        self._take_time("power on", instance)
        return super().power_on(context, instance, *args, **kwargs)

    def reboot(self, context, instance, *args, **kwargs):
        # the fake's reboot ends in power_on(), which takes its own time:
        # a reboot takes twice the delay, like off-then-on
        self._take_time("reboot", instance)
        return super().reboot(context, instance, *args, **kwargs)
