"""The ``redfish`` profile of the e2e: one BMC through Ironic's ``redfish`` hardware type.

Usage: e2e --profile redfish BMC_HOST REDFISH_PORT USER PASS

Ironic (sushy) enrolls a node with ``redfish_address https://BMC_HOST:REDFISH_PORT``,
``redfish_system_id`` and ``redfish_verify_ca``, manages it, switches its power every way
Ironic knows, sets boot devices once and persistent, sets the boot mode to uefi and bios,
sends an NMI, lets the periodic power sync find a change made behind its back, and makes
the node available.  After each step the BMC's own Redfish (``redfish.Bmc``: the
ComputerSystem's PowerState and Boot) and, when E2E_NOVA is given, Nova (the instance's
status and ovbmc's ``ovbmc:boot`` metadata, the IPMI boot flags of IPMI v2.0 §28.13
parameter 5) are asked whether it happened.

Output and exit status as the ipmi e2e (``e2e --help``).

Environment, beside the ipmi e2e's E2E_IRONIC_URL, E2E_NODE_NAME, E2E_XFAIL,
E2E_KEEP_NODE, E2E_SYNC_WAIT, E2E_FORCE_POWER_SYNC, E2E_API_VERSION, E2E_HTTP_TIMEOUT:
  E2E_REDFISH_CA        CA file for redfish_verify_ca and the direct checks (ovbmc: its
                        state directory's redfish-cert.pem); unset = the system's store
  E2E_REDFISH_SYSTEM_ID /redfish/v1/Systems/<id> (default: the only member of Systems)
  E2E_REDFISH_SCHEME    https (default) or http
  E2E_OOB_POWER         command run as `CMD on|off` for the power-sync step's change behind
                        Ironic's back (ovbmc's tests: Nova's os-start/os-stop); default: a
                        Redfish Reset straight to the BMC
  E2E_VMEDIA=force      run the vmedia-deploy step even when the BMC serves no Cd
                        VirtualMedia (else it is skipped)
  E2E_NOVA              command printing `openstack server show -f json` of the instance
                        behind the BMC; unset = no Nova cross-checks (noted)
  E2E_OPENSTACK         the host cloud's `openstack` CLI (with OS_CLOUD, or clouds.yaml's
                        `lab`), for the vmedia-deploy step's Glance and console-log checks:
                        the image ovbmc made of Ironic's ISO, Nova's rescue from it, its
                        deletion at undeploy; unset = not checked (noted)
"""
import json
import os
import subprocess
import time

from ovbmc_ironic_lab import redfish
from ovbmc_ironic_lab.e2e import Fail, Run, Skip, env

# IPMI v2.0 §28.13, boot flags data byte 2 bits 5:2: the device selector as ovbmc stores it
SELECTOR = {"pxe": 0x04, "disk": 0x08, "cdrom": 0x14, "bios": 0x18, "safe": 0x0c}
REDFISH_TARGET = {"pxe": "Pxe", "disk": "Hdd", "cdrom": "Cd", "bios": "BiosSetup"}


class RedfishRun(Run):
    def __init__(self, lab, host, port, user, password, xfail):
        super().__init__(lab, host, port, user, password, xfail)
        scheme = env("E2E_REDFISH_SCHEME", "https")
        self.address = "%s://%s:%s" % (scheme, "[%s]" % host if ":" in host else host, port)
        self.ca = env("E2E_REDFISH_CA")
        self.bmc = redfish.Bmc(self.address, env("E2E_REDFISH_SYSTEM_ID"), user, password,
                               self.ca or None, env("E2E_OOB_POWER") or None,
                               env("E2E_NOVA") or None)
        self.name = env("E2E_NODE_NAME") or "e2e-redfish-%s" % port
        # Redfish has no spacing of commands: the sync wait is interval-bound only
        self.retry_timeout = 30
        self.sync_wait = int(env("E2E_SYNC_WAIT") or 2 * self.sync_interval + 60)

    # ------------------------------------------------------------ Nova's side
    def nova(self, want_status=None, limit=90):
        """Nova's view of the instance; with want_status, polled until it is settled there."""
        t0 = time.monotonic()
        while True:
            n = self.bmc.nova()
            if n is None or want_status is None:
                return n
            if n.get("status") == want_status and not n.get("OS-EXT-STS:task_state"):
                return n
            if time.monotonic() - t0 >= limit:
                raise Fail("Nova: status %s task %s, not %s after %ss" % (
                    n.get("status"), n.get("OS-EXT-STS:task_state"), want_status, limit))
            time.sleep(1)

    def cloud(self, *args, as_json=True):
        """The host cloud's CLI (E2E_OPENSTACK): its JSON (or text) output, None without it.

        Without the Ironic lab's noauth settings, which are for the baremetal CLI."""
        cli = env("E2E_OPENSTACK")
        if not cli:
            return None
        e = {k: v for k, v in os.environ.items()
             if k not in ("OS_AUTH_TYPE", "OS_ENDPOINT", "OS_BAREMETAL_API_VERSION")}
        cmd = [cli, "--os-cloud", env("OS_CLOUD") or "lab", *args]
        if as_json:
            cmd += ["-f", "json"]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=120, env=e)
        if p.returncode != 0:
            raise Fail("openstack %s: %s" % (" ".join(args), p.stderr.strip()[-300:]))
        return json.loads(p.stdout) if as_json else p.stdout

    def media_images(self):
        """The ids of the Glance images ovbmc made for this instance (tag ovbmc-vmedia,
        property ovbmc_instance), or None without E2E_OPENSTACK."""
        # The ComputerSystem's Id is the instance's UUID (ovbmc's Redfish face).
        instance = self.bmc.sys().get("Id")
        v = self.cloud("image", "list", "--tag", "ovbmc-vmedia",
                       "--property", "ovbmc_instance=%s" % instance)
        return None if v is None else [i["ID"] for i in v]

    def nova_boot(self):
        """ovbmc's ``ovbmc:boot`` metadata on the instance (10 hex digits) or None."""
        n = self.nova()
        if n is None:
            return None
        props = n.get("properties") or {}
        return props.get("ovbmc:boot") if isinstance(props, dict) else None

    def check_nova_boot(self, device, persistent, efi=None):
        """The metadata agrees: valid, the persistent bit, the EFI bit, the selector."""
        flags = self.nova_boot()
        if flags is None:
            self.note("nova: %s;" % ("not checked (E2E_NOVA unset)" if not env("E2E_NOVA")
                                     else "no ovbmc:boot metadata"))
            return env("E2E_NOVA") == ""
        b1, b2 = int(flags[0:2], 16), int(flags[2:4], 16)
        ok = bool(b1 & 0x80) and bool(b1 & 0x40) == persistent \
            and (b2 & 0x3c) == SELECTOR[device] and (efi is None or bool(b1 & 0x20) == efi)
        self.note("nova ovbmc:boot=%s;" % flags)
        return ok

    # ------------------------------------------------------------ steps
    def s_api(self):
        a = self.ironic.get("/v1/drivers?type=dynamic")
        if not any(d.get("name") == "redfish" for d in a.json().get("drivers", [])):
            raise Fail("driver redfish not enabled (HTTP %s)" % a.code)
        a = self.ironic.get("/v1/drivers/redfish/properties")
        self.note("redfish driver properties: %d (HTTP %s)" % (len(a.json()), a.code))
        if not self.bmc.system:
            members = self.bmc.get("/redfish/v1/Systems").get("Members") or []
            if len(members) != 1:
                raise Fail("E2E_REDFISH_SYSTEM_ID unset and Systems has %d members (%s)" % (
                    len(members), getattr(self.bmc, "error", "")))
            self.bmc.system = members[0]["@odata.id"]
        s = self.bmc.sys()
        if not s:
            raise Fail("the BMC's %s: %s" % (self.bmc.system, getattr(self.bmc, "error", "")))
        self.note("BMC %s: %s Name=%s PowerState=%s" % (
            self.address, self.bmc.system, s.get("Name"), s.get("PowerState")))

    def s_enroll(self):
        info = {"redfish_address": self.address, "redfish_system_id": self.bmc.system,
                "redfish_username": self.user, "redfish_password": self.password}
        if self.ca:
            info["redfish_verify_ca"] = self.ca
        self.create_node({
            "driver": "redfish", "driver_info": info, "power_interface": "redfish",
            "management_interface": "redfish", "boot_interface": "redfish-virtual-media"})
        self.note("node %s (%s; power=%s mgmt=%s boot=%s deploy=%s; verify_ca=%s)" % (
            self.node, self.f("provision_state"), self.f("power_interface"),
            self.f("management_interface"), self.f("boot_interface"),
            self.f("deploy_interface"), self.ca or "system"))

    def s_validate(self):
        self.need_node()
        a = self.ironic.get(self.path("/validate"))
        if a.code != 200:
            raise Fail("HTTP %s %s" % (a.code, a.error()))
        v = a.json()
        power, mgmt = v["power"]["result"], v["management"]["result"]
        self.note("power=%s management=%s boot=%s (%s)" % (
            str(power).lower(), str(mgmt).lower(), str(v["boot"]["result"]).lower(),
            (v["boot"].get("reason") or "")[:80]))
        if not (power is True and mgmt is True):
            raise Fail()

    def s_manage(self):
        super().s_manage()
        self.note("properties: vendor=%s" % self.f("properties.vendor"))

    def s_power_matches(self):
        super().s_power_matches()
        n = self.nova()
        if n is not None:
            self.note("nova=%s" % n.get("status"))
            if {"power on": "ACTIVE", "power off": "SHUTOFF"}.get(self.f("power_state")) \
                    != n.get("status"):
                raise Fail()

    def power(self, target, expect, timeout=None):
        super().power(target, expect, timeout)
        n = self.nova({"power on": "ACTIVE", "power off": "SHUTOFF"}[expect])
        if n is not None:
            self.note("nova=%s" % n.get("status"))

    def bootdev(self, device, persistent):
        self.set_bootdev(device, persistent)
        dev, pers = self.get_bootdev()
        target, enabled, mode = self.bmc.boot()
        self.note("ironic: %s persistent=%s; bmc: %s/%s/%s;" % (
            dev, str(pers).lower(), target, enabled, mode))
        want_enabled = "Continuous" if persistent else "Once"
        ok = dev == device and pers == persistent and target == REDFISH_TARGET[device] \
            and enabled == want_enabled
        return self.check_nova_boot(device, persistent, mode == "UEFI" if mode else None) and ok

    def s_bootdev_pxe(self):
        self.need_node()
        if not self.bootdev("pxe", True):
            raise Fail()

    def s_bootdev_disk(self):
        self.need_node()
        if not self.bootdev("disk", False):
            raise Fail()

    def s_bootdev_cdrom_once(self):
        self.need_node()
        if not self.bootdev("cdrom", False):
            raise Fail()

    def s_bootdev_disk_persistent(self):
        self.need_node()
        if not self.bootdev("disk", True):
            raise Fail()

    SUPPORTED_BOOT_DEVICES = {"pxe", "disk", "cdrom"}

    def boot_mode(self, target, redfish_mode):
        """PUT states/boot_mode (API 1.76): asynchronous; then node.boot_mode and the BMC."""
        self.need_node()
        a = self.ironic.call("PUT", self.path("/states/boot_mode"), {"target": target})
        if a.code != 202:
            raise Fail("PUT states/boot_mode %s -> HTTP %s %s" % (target, a.code, a.error()))

        def done(_elapsed):
            if self.f("reservation") is None and self.f("boot_mode") == target:
                return True
            if self.f("reservation") is None and self.f("last_error"):
                return False
            return None
        ok = self.until(60, done)
        mode = self.bmc.boot()[2]
        self.note("ironic boot_mode=%s; bmc BootSourceOverrideMode=%s;" % (
            self.f("boot_mode"), mode))
        if not ok:
            raise Fail("last_error: %s" % self.f("last_error"))
        flags = self.nova_boot()
        if flags is not None:
            self.note("nova ovbmc:boot=%s" % flags)
            if bool(int(flags[0:2], 16) & 0x20) != (redfish_mode == "UEFI"):
                raise Fail()
        if mode != redfish_mode:
            raise Fail()

    def s_inject_nmi(self):
        self.need_node()
        before = self.bmc.power()
        super().s_inject_nmi()
        self.note("bmc power %s -> %s" % (before, self.bmc.power()))

    def s_power_sync(self):
        """As the ipmi profile's: the change goes through E2E_OOB_POWER (Nova) instead."""
        self.need_node()
        bmc = self.bmc

        class Oob:
            # the ipmi step calls self.bmc.run("power", on|off) and self.bmc.power()
            def run(_self, _verb, want):
                self.note(bmc.set_power_out_of_band(want) + ";")

            def power(_self):
                return bmc.power()
        self.bmc = Oob()
        try:
            super().s_power_sync()
        finally:
            self.bmc = bmc
        n = self.nova({"power on": "ACTIVE", "power off": "SHUTOFF"}[self.f("power_state")])
        if n is not None:
            self.note("nova=%s" % n.get("status"))

    def virtual_media(self):
        """The BMC's Cd VirtualMedia resource (Managers/{id}/VirtualMedia), or None."""
        sys_doc = self.bmc.sys()
        for m in (sys_doc.get("Links") or {}).get("ManagedBy") or []:
            vm = self.bmc.get(m["@odata.id"]).get("VirtualMedia")
            for member in self.bmc.get(vm["@odata.id"]).get("Members", []) if vm else []:
                doc = self.bmc.get(member["@odata.id"])
                if "CD" in (doc.get("MediaTypes") or []):
                    return member["@odata.id"]
        return None

    def s_vmedia_deploy(self):
        """Ironic builds an ISO, inserts it, boots the node from Cd; Nova rescues it.

        deploy_interface ramdisk with redfish-virtual-media boot, boot mode bios (Ironic
        builds an isolinux ISO from the instance kernel and ramdisk, which may be dummy
        files: nothing runs them on the lab's fake hypervisor); then undeploy: eject and
        back to disk.
        """
        self.need_node()
        media = self.virtual_media()
        if media is None and env("E2E_VMEDIA") != "force":
            raise Skip("the BMC serves no Cd VirtualMedia (issue 13 item 2); "
                       "E2E_VMEDIA=force tries anyway")
        http_root = self.ini("deploy", "http_root", "")
        http_url = self.ini("deploy", "http_url", "")
        if not (http_root and http_url):
            raise Skip("no [deploy]http_root/http_url in the lab's ironic.conf")
        files = {}
        for name in ("kernel", "ramdisk"):
            path = os.path.join(http_root, "e2e-dummy-%s" % name)
            with open(path, "wb") as f:
                f.write(b"ovbmc e2e dummy %s\n" % name.encode())
            # over the lab's HTTP server: Ironic refuses file:// outside
            # [conductor]file_url_allowed_paths
            files[name] = "%s/e2e-dummy-%s" % (http_url.rstrip("/"), name)
        a = self.ironic.patch(
            self.path(),
            {"op": "replace", "path": "/deploy_interface", "value": "ramdisk"},
            {"op": "add", "path": "/properties/capabilities", "value": "boot_mode:bios"},
            {"op": "add", "path": "/driver_info/deploy_kernel", "value": files["kernel"]},
            {"op": "add", "path": "/driver_info/deploy_ramdisk", "value": files["ramdisk"]},
            {"op": "add", "path": "/instance_info",
             "value": {"kernel": files["kernel"], "ramdisk": files["ramdisk"],
                       "image_source": files["kernel"]}})
        if a.code != 200:
            raise Fail("PATCH deploy_interface=ramdisk -> HTTP %s %s" % (a.code, a.error()))
        a = self.ironic.call("PUT", self.path("/states/provision"), {"target": "active"})
        if a.code != 202:
            raise Fail("deploy -> HTTP %s %s" % (a.code, a.error()))
        ok = self.wait_provision("active")
        image = self.bmc.get(media).get("Image") if media else None
        target = self.bmc.boot()
        n = self.nova() or {}
        self.note("provision_state=%s; media %s Image=%s; boot %s; nova %s;" % (
            self.f("provision_state"), media, image, "/".join(map(str, target)),
            n.get("status")))
        if not ok:
            raise Fail("last_error: %s" % self.f("last_error"))
        if not image or target[0] != "Cd" or n.get("status") != "RESCUE":
            raise Fail()
        # Nova rescued it from the Glance image ovbmc made of Ironic's ISO: one image for
        # the instance, and the lab hypervisor's console log names it as the rescue image.
        made = self.media_images()
        if made is None:
            self.note("Glance and the rescue image: not checked (E2E_OPENSTACK unset);")
        else:
            log = self.cloud("console", "log", "show", self.bmc.sys().get("Id"), as_json=False)
            rescues = [l for l in log.splitlines() if "rescue from image" in l]
            self.note("glance images %s; last rescue: %s;" % (
                made, rescues[-1].strip() if rescues else None))
            if len(made) != 1 or not rescues or made[0] not in rescues[-1]:
                raise Fail("not rescued from the one ovbmc-vmedia image")
        a = self.ironic.call("PUT", self.path("/states/provision"), {"target": "deleted"})
        if a.code != 202:
            raise Fail("undeploy -> HTTP %s %s" % (a.code, a.error()))
        ok = self.wait_provision("available")
        image = self.bmc.get(media).get("Image")
        self.set_bootdev("disk", True)
        n = self.nova() or {}
        self.note("undeployed: %s; media Image=%s; boot %s; nova %s" % (
            self.f("provision_state"), image, "/".join(map(str, self.bmc.boot())),
            n.get("status")))
        if not ok or image or n.get("status") == "RESCUE":
            raise Fail("last_error: %s" % self.f("last_error"))
        left = self.media_images()
        if left:
            raise Fail("ovbmc-vmedia images left after the eject: %s" % left)

    def steps(self):
        yield from self.first_steps()
        yield "power-on-for-boot", lambda: self.power("power on", "power on")
        yield "bootdev-set-pxe-persistent", self.s_bootdev_pxe
        yield "bootdev-persistent-readback", self.s_bootdev_persistent
        yield "bootdev-set-disk-once", self.s_bootdev_disk
        yield "bootdev-set-cdrom-once", self.s_bootdev_cdrom_once
        yield "bootdev-set-disk-persistent", self.s_bootdev_disk_persistent
        yield "bootdev-supported", self.s_bootdev_supported
        yield "boot-mode-bios", lambda: self.boot_mode("bios", "Legacy")
        yield "boot-mode-uefi", lambda: self.boot_mode("uefi", "UEFI")
        yield "inject-nmi", self.s_inject_nmi
        yield "power-sync", self.s_power_sync
        yield "provide", self.s_provide
        yield "vmedia-deploy", self.s_vmedia_deploy
        yield "delete", self.s_delete

