"""Make the lab's cloud: ``python -m ovbmc_lab.bootstrap STEP...``.

Steps, in the order ``up`` runs them (each idempotent, so ``up`` on a lab
that already has everything only checks):

identity  service users, the catalog, the lab project and its user
images    the two Glance images ovbmc's tests boot and rebuild with
network   (real Neutron only) the provisioning and BMC networks and subnets
          of the lab project
compute   the flavor and the servers baremetal_0 .. baremetal_{N-1} (each
          with a port on the provisioning network, with a real Neutron)
clouds    $state/clouds.yaml with clouds ``lab`` and ``lab-admin``

Keystone's own bootstrap (``keystone-manage bootstrap`` in ``up``) has made
the admin user and the identity endpoint; everything else goes through the
real APIs with openstacksdk, as an operator would.  Names, ports and
passwords come from lab.conf through ``ovbmc_lab.settings``.
"""
import hashlib
import os
import sys
import time

import openstack

from ovbmc_lab import settings

# The API services of the lab that belong in Keystone's catalog:
# name -> (service type, path under the service's port).  A service in
# lab.conf's list that is not here (keystone itself, a console proxy) gets
# no endpoint; one that is here gets a service user and an endpoint.
CATALOG = {
    "nova": ("compute", "/v2.1"),
    "placement": ("placement", ""),
    "glance": ("image", ""),
    "neutron": ("network", ""),
}
ROLES = ("admin", "member", "reader", "service")
FLAVOR = dict(name="baremetal", ram=1024, vcpus=1, disk=10)
# ovbmc's tests boot from the first and rebuild to the second and back
IMAGES = (("lab-disk", "raw"), ("ipxe-boot", "iso"))
# metadata OVB's Nova patch reads; ovbmc's metadata boot strategy sets it
SERVER_METADATA = {"libvirt:pxe-first": ""}
BOOT_TRIES = 3
BOOT_TIMEOUT = 120


def log(msg):
    print("bootstrap: %s" % msg, flush=True)


def connect(conf, user, password, project):
    return openstack.connect(
        auth_url=conf.auth_url, username=user, password=password,
        project_name=project, user_domain_id="default",
        project_domain_id="default", region_name=conf.region,
        identity_api_version="3",
        # only what we say here: no clouds.yaml, no OS_* from the caller
        load_yaml_config=False, load_envvars=False)


def as_admin(conf):
    return connect(conf, "admin", conf.admin_password, "admin")


def as_user(conf):
    return connect(conf, conf.user, conf.user_password, conf.project)


# ---------------------------------------------------------------- identity
def _project(idc, name, description):
    return (idc.find_project(name, domain_id="default") or
            idc.create_project(name=name, domain_id="default",
                               description=description))


def _user(idc, name, password, project):
    """The user, with this password even if it existed with another."""
    user = idc.find_user(name, domain_id="default")
    if user is None:
        return idc.create_user(name=name, password=password, domain_id="default",
                               default_project_id=project.id)
    idc.update_user(user, password=password)
    return user


def _endpoints(idc, conf, name, stype, url):
    svc = idc.find_service(name) or idc.create_service(
        name=name, type=stype, description="ovbmc lab %s" % name)
    have = {(ep.interface, ep.url) for ep in idc.endpoints(service_id=svc.id)}
    for interface in ("public", "internal", "admin"):
        if (interface, url) not in have:
            idc.create_endpoint(service_id=svc.id, interface=interface, url=url,
                                region_id=conf.region)


def identity(conf):
    idc = as_admin(conf).identity
    roles = {n: idc.find_role(n) or idc.create_role(name=n) for n in ROLES}
    service_project = _project(idc, "service", "the lab's service users")
    for name in conf.services:
        if name not in CATALOG:
            continue
        stype, path = CATALOG[name]
        # keystonemiddleware in each service checks tokens as this user, and
        # Nova calls Placement, Glance and Neutron as "nova"
        user = _user(idc, name, conf.service_password, service_project)
        for role in ("admin", "service"):
            idc.assign_project_role_to_user(service_project, user, roles[role])
        _endpoints(idc, conf, name, stype, conf.url(name, path))
    project = _project(idc, conf.project, "ovbmc lab project")
    user = _user(idc, conf.user, conf.user_password, project)
    # a plain member, as ovbmc runs on a real cloud: no admin-only API
    idc.assign_project_role_to_user(project, user, roles["member"])
    # admin in the lab project too, for the smoke's and the tests' checks
    admin = idc.find_user("admin", domain_id="default")
    idc.assign_project_role_to_user(project, admin, roles["admin"])
    log("identity ready: project %s (%s), user %s" % (project.name, project.id, conf.user))


# ---------------------------------------------------------------- images
def image_bytes(disk_format):
    """Small, recognisable image data; the fake hypervisor never reads it.

    Glance (and tools that sniff formats) check that an ``iso`` looks like
    one, so the iso image is the skeleton of an ISO 9660 volume: 16 empty
    system sectors, a primary volume descriptor, the set terminator.
    """
    if disk_format == "iso":
        sector, sectors = 2048, 20
        data = bytearray(sector * sectors)
        pvd = 16 * sector
        data[pvd:pvd + 7] = b"\x01CD001\x01"
        data[pvd + 40:pvd + 72] = b"OVBMC_LAB_IPXE".ljust(32)
        data[pvd + 80:pvd + 88] = sectors.to_bytes(4, "little") + sectors.to_bytes(4, "big")
        data[pvd + 128:pvd + 132] = sector.to_bytes(2, "little") + sector.to_bytes(2, "big")
        data[17 * sector:17 * sector + 7] = b"\xffCD001\x01"
        return bytes(data)
    data = bytearray(1 << 20)  # raw: 1 MiB of zeros with a label
    data[4096:4096 + 15] = b"ovbmc-lab-disk\n"
    return bytes(data)


def images(conf):
    cloud = as_admin(conf)
    for name, disk_format in IMAGES:
        img = cloud.image.find_image(name)
        if img is not None and img.status == "active":
            continue
        if img is not None:  # a half-made upload from an interrupted up
            cloud.image.delete_image(img)
        data = image_bytes(disk_format)
        img = cloud.image.create_image(
            name=name, disk_format=disk_format, container_format="bare",
            visibility="public", data=data, validate_checksum=False,
            allow_duplicates=False, wait=True, timeout=60)
        log("image %s (%s): %s, sha256 %s" % (
            name, disk_format, img.id, hashlib.sha256(data).hexdigest()[:16]))
    log("images ready")


# ---------------------------------------------------------------- network
def _network(user, name, cidr, dhcp):
    """A network of the lab project with one IPv4 subnet ``<name>-subnet``.

    Made by the project's own (member) user, as OVB's stacks make them in a
    tenant: the project then owns it, so Neutron's default policy lets the
    member set port_security_enabled and allowed_address_pairs on its ports
    (neutron/conf/policies/port.py).  MTU 1500, the lab's physnet MTU.
    """
    net = user.network.find_network(name)
    if net is None:
        net = user.network.create_network(name=name, mtu=1500)
        log("network %s: %s" % (name, net.id))
    subnet_name = "%s-subnet" % name
    subnet = user.network.find_subnet(subnet_name, network_id=net.id)
    if subnet is None:
        subnet = user.network.create_subnet(
            name=subnet_name, network_id=net.id, ip_version=4, cidr=cidr,
            is_dhcp_enabled=dhcp)
        log("subnet %s %s: %s" % (subnet_name, cidr, subnet.id))
    return net


def network(conf):
    if not conf.real_neutron:
        log("network: null Neutron, no networks")
        return
    user = as_user(conf)
    # provisioning: DHCP off, as in OVB, where the undercloud serves DHCP
    # and PXE on it; there is no DHCP agent here either way
    _network(user, conf.provision_net, conf.provision_cidr, dhcp=False)
    _network(user, conf.bmc_net, conf.bmc_cidr, dhcp=True)
    log("network ready: %s, %s" % (conf.provision_net, conf.bmc_net))


# ---------------------------------------------------------------- compute
def _settled(server):
    return server.status in ("ACTIVE", "SHUTOFF") and server.task_state is None


def _boot(user, name, flavor, image, networks):
    """Boot one server until it settles; None if it did not.

    One at a time, and again after a failure: SQLite-backed services on a
    loaded two-core machine sometimes lose a scheduling race that MySQL
    would not, and the lab must come up the same way every time.
    """
    server = user.compute.find_server(name)
    if server is None:
        server = user.compute.create_server(
            name=name, flavor_id=flavor.id, image_id=image.id,
            networks=networks, metadata=SERVER_METADATA)
        log("server %s booting (%s)" % (name, server.id))
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        server = user.compute.get_server(server.id)
        if _settled(server):
            return server
        if server.status == "ERROR" or time.monotonic() > deadline:
            log("server %s ended %s/%s (%s); deleting it" % (
                name, server.status, server.task_state, getattr(server, "fault", None)))
            user.compute.delete_server(server.id)
            user.compute.wait_for_delete(server, wait=BOOT_TIMEOUT)
            return None
        time.sleep(0.5)


def compute(conf):
    admin = as_admin(conf)
    flavor = admin.compute.find_flavor(FLAVOR["name"])
    if flavor is None:
        flavor = admin.compute.create_flavor(is_public=True, **FLAVOR)
        log("flavor %s: %s" % (FLAVOR["name"], flavor.id))
    user = as_user(conf)
    image = user.image.find_image(IMAGES[0][0])
    if conf.real_neutron:
        # one port each, made by Nova, on the provisioning network
        networks = [{"uuid": user.network.find_network(conf.provision_net, ignore_missing=False).id}]
    else:
        networks = "none"
    for i in range(conf.servers):
        name = "baremetal_%d" % i
        for _ in range(BOOT_TRIES):
            server = _boot(user, name, flavor, image, networks)
            if server is not None:
                break
        else:
            raise SystemExit("bootstrap: server %s did not boot in %d tries" % (name, BOOT_TRIES))
        log("server %s: %s %s" % (name, server.id, server.status))
    log("compute ready: %d servers" % conf.servers)


# ---------------------------------------------------------------- clouds.yaml
def clouds(conf):
    """clouds.yaml for ovbmc (``--os-cloud lab``) and the openstack CLI."""
    def cloud(user, password, project):
        return ("    auth:\n"
                "      auth_url: %s\n"
                "      username: %s\n"
                "      password: %s\n"
                "      project_name: %s\n"
                "      user_domain_name: Default\n"
                "      project_domain_name: Default\n"
                "    region_name: %s\n"
                "    interface: public\n"
                "    identity_api_version: 3\n"
                % (conf.auth_url, user, password, project, conf.region))
    text = ("# ovbmc OpenStack lab (written by tests/lab/openstack/up)\n"
            "clouds:\n"
            "  lab:\n" + cloud(conf.user, conf.user_password, conf.project) +
            "  lab-admin:\n" + cloud("admin", conf.admin_password, "admin"))
    path = os.path.join(conf.state, "clouds.yaml")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    log("wrote %s" % path)


STEPS = {"identity": identity, "images": images, "network": network,
         "compute": compute, "clouds": clouds}


def main(argv):
    if len(argv) < 2 or any(a not in STEPS for a in argv[1:]):
        sys.exit("usage: python -m ovbmc_lab.bootstrap %s..." % "|".join(STEPS))
    conf = settings.load()
    for step in argv[1:]:
        STEPS[step](conf)


if __name__ == "__main__":
    main(sys.argv)
