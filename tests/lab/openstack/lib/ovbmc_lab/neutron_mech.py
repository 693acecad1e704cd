"""The lab's ML2 mechanism driver: binds every port on the lab's compute host.

A real cloud binds a port for a compute host through a mechanism driver
that knows the host's L2 agent (Open vSwitch, OVN ...).  The lab has no
agents and no switch: Nova's fake hypervisor plugs nothing.  Without a
driver that binds, ML2 sets ``binding:vif_type`` to ``binding_failed`` and
Nova puts the server in ERROR (PortBindingFailed).  Neutron's own test
drivers (``neutron.tests``: ``test`` binds only for magic host names such as
``host-ovs-no_filter``; ``fake_agent`` wants an agent record) do not fit, so
this one binds what ML2 offers it on the host(s) in
``OVBMC_LAB_NEUTRON_BIND_HOSTS`` (default: Nova's ``host = ovbmc-lab``).

It binds the first flat, vlan or local segment with vif_type ``ovs`` (what
Nova's network model most often sees, and what the fake driver ignores) and
sets the port ACTIVE at once, as an agent would report once the port is
wired; Neutron then sends Nova its ``network-vif-plugged`` event as it does
in a real cloud.  Registered as ML2 mechanism driver ``ovbmc_lab`` by the
entry point in ``../ovbmc_lab_neutron-0.dist-info`` (ML2 loads drivers by
entry point name only, neutron/plugins/ml2/managers.py MechanismManager).
"""
import os

from neutron_lib.api.definitions import portbindings
from neutron_lib import constants
from neutron_lib.plugins.ml2 import api
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

BINDABLE_TYPES = (constants.TYPE_FLAT, constants.TYPE_VLAN, constants.TYPE_LOCAL)


class LabMechanismDriver(api.MechanismDriver):

    def initialize(self):
        hosts = os.environ.get("OVBMC_LAB_NEUTRON_BIND_HOSTS", "ovbmc-lab")
        self.hosts = frozenset(h for h in hosts.split(",") if h)
        LOG.info("ovbmc_lab mechanism driver: binding ports on hosts %s",
                 ", ".join(sorted(self.hosts)))

    @property
    def connectivity(self):
        return portbindings.CONNECTIVITY_L2

    def bind_port(self, context):
        if context.host not in self.hosts:
            LOG.info("ovbmc_lab: not binding port %s for unknown host %r",
                     context.current["id"], context.host)
            return
        vnic = context.current.get(portbindings.VNIC_TYPE, portbindings.VNIC_NORMAL)
        if vnic not in (portbindings.VNIC_NORMAL, portbindings.VNIC_BAREMETAL):
            LOG.info("ovbmc_lab: not binding port %s with vnic_type %s",
                     context.current["id"], vnic)
            return
        for segment in context.segments_to_bind:
            if segment[api.NETWORK_TYPE] in BINDABLE_TYPES:
                context.set_binding(segment[api.ID], portbindings.VIF_TYPE_OVS,
                                    {portbindings.CAP_PORT_FILTER: True},
                                    status=constants.PORT_STATUS_ACTIVE)
                LOG.info("ovbmc_lab: bound port %s on %s (segment %s, %s)",
                         context.current["id"], context.host, segment[api.ID],
                         segment[api.NETWORK_TYPE])
                return
        LOG.info("ovbmc_lab: no bindable segment for port %s", context.current["id"])
