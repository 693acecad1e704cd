"""The lab's hypervisor: Nova's fake virt driver, slow and restart-safe.

nova.conf names it ``compute_driver = ovbmc_lab_fake.LabDriver``; Nova only
loads drivers from the ``nova.virt`` package, so ``ovbmc_lab.nova`` makes
this module importable under that name before Nova starts.

Three things differ from Nova's own fake driver, each because ovbmc's
tests need it:

* Power operations take time.  Spawn, power off, power on and reboot each
  sleep ``OVBMC_LAB_FAKE_DELAY`` seconds (lab.conf; 1.0) before the fake's
  instant state change (delete stays instant: nothing waits on it).  A real
  hypervisor takes seconds, and a BMC in front of Nova must cope with the
  transitional task states (spawning, powering-off, rebooting_hard,
  rebuild_spawning ...) that an instant fake never shows.
* The hypervisor survives a restart.  The stock fake keeps its guests in
  memory only, so after ``down`` and ``up`` Nova's periodic power sync would
  find every instance gone and stop it.  ``init_host`` reads this host's
  instances back from Nova's database with the power state they had.
* The guests have consoles (``ovbmc_lab.console``): a console log for
  ``os-getConsoleOutput`` and, when lab.conf's ``OVBMC_LAB_SERIAL_CONSOLE``
  is on, a TCP serial port that ``get_serial_console`` points
  nova-serialproxy at.  The stock fake answers with a made-up host
  (fakerdpconsole.com:6969) and a fixed console text.

The base class is ``FakeDriverWithoutFakeNodes``, which keeps its node UUID
in ``$state_path/compute_id`` as real drivers do (the plain ``FakeDriver``
makes up a new node at every start, and Nova refuses to start a compute
whose node changed).
"""
import time

from oslo_log import log as logging

import nova.conf
from nova import context as nova_context
from nova import objects
from nova.compute import power_state
from nova.compute import vm_states
from nova.console import type as console_type
from nova.virt import fake

from ovbmc_lab import console
from ovbmc_lab import settings

LOG = logging.getLogger(__name__)


class LabDriver(fake.FakeDriverWithoutFakeNodes):
    """FakeDriver with a power delay, consoles, and guests that outlive the process."""

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self._conf = settings.load()
        self._delay = self._conf.fake_delay
        # [serial_console]enabled is what Nova itself checks before it asks
        # us for a serial console; lab.conf's switch sets it in nova.conf
        self.consoles = console.Consoles(
            self._conf.host, self._conf.console_port, self._conf.console_tick,
            serial=nova.conf.CONF.serial_console.enabled)

    def _take_time(self, what, instance):
        if self._delay > 0:
            LOG.info("lab hypervisor: %s of %s takes %.1f s",
                     what, instance.uuid, self._delay)
            time.sleep(self._delay)

    # ------------------------------------------------------------ restart
    def init_host(self, host):
        super().init_host(host)
        self.consoles.start()
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
        if state == power_state.RUNNING:
            self.consoles.powered_on(inst)
        LOG.info("lab hypervisor: restored %s (%s), power state %s",
                 inst.uuid, inst.display_name, state)

    # ------------------------------------------------------------ power
    def spawn(self, context, instance, *args, **kwargs):
        self._take_time("spawn", instance)
        super().spawn(context, instance, *args, **kwargs)
        if kwargs.get("power_on", True):
            self.consoles.powered_on(instance)

    def power_off(self, instance, *args, **kwargs):
        self._take_time("power off", instance)
        super().power_off(instance, *args, **kwargs)
        self.consoles.powered_off(instance)

    def power_on(self, context, instance, *args, **kwargs):
        self._take_time("power on", instance)
        super().power_on(context, instance, *args, **kwargs)
        self.consoles.powered_on(instance)

    def reboot(self, context, instance, network_info, reboot_type, *args, **kwargs):
        # the fake's reboot ends in power_on() (or spawn()), which takes its
        # own time and prints the banner: a reboot takes twice the delay
        self._take_time("reboot", instance)
        if reboot_type.lower() == "hard":
            # libvirt destroys the domain: its serial port goes with it
            self.consoles.powered_off(instance, "hard reboot")
        else:
            self.consoles.note(instance, "reboots")
        return super().reboot(context, instance, network_info, reboot_type, *args, **kwargs)

    def destroy(self, context, instance, *args, **kwargs):
        # delete, and the first half of a rebuild
        super().destroy(context, instance, *args, **kwargs)
        self.consoles.powered_off(instance, "destroyed")

    def rescue(self, context, instance, network_info, image_meta, *args, **kwargs):
        super().rescue(context, instance, network_info, image_meta, *args, **kwargs)
        # Name the rescue image (and the stable-device-rescue properties a
        # libvirt host would read: nova/virt/libvirt/driver.py, rescue) in
        # the console log, where a test can see what Nova booted the guest
        # from: the API shows a rescued server's own image only.
        self.consoles.powered_off(instance, "rescue from image %s (%s)" % (
            _image_id(image_meta), _rescue_props(image_meta)))
        self.consoles.powered_on(instance)

    def unrescue(self, context, instance):
        super().unrescue(context, instance)
        self.consoles.powered_off(instance, "unrescue")
        self.consoles.powered_on(instance)

    # ------------------------------------------------------------ consoles
    def get_serial_console(self, context, instance):
        """Where nova-serialproxy connects: the lab's console server, which
        tells the guests apart by the CONNECT path (the instance's uuid)."""
        return console_type.ConsoleSerial(
            internal_access_path=instance.uuid, host=self._conf.host,
            port=self._conf.console_port)

    def get_console_output(self, context, instance):
        return self.consoles.output(instance)


def _image_id(image_meta):
    if image_meta is not None and image_meta.obj_attr_is_set("id"):
        return image_meta.id
    return "unknown"


def _rescue_props(image_meta):
    """hw_rescue_device/hw_rescue_bus of the rescue image, or "plain"."""
    props = getattr(image_meta, "properties", None)
    found = []
    for name in ("hw_rescue_device", "hw_rescue_bus"):
        if props is not None and props.obj_attr_is_set(name):
            found.append("%s=%s" % (name, getattr(props, name)))
    return ", ".join(found) or "plain"
