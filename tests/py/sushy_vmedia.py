"""sushy's virtual media, as Ironic's redfish-virtual-media boot interface drives it, against
ovbmc's Redfish face: insert and eject with the actions, then with the PATCH form sushy falls
back to when a BMC has no actions (sushy/resources/manager/virtual_media.py).

Usage: sushy_vmedia.py BASE_URL CA_FILE USER PASSWORD SYSTEM_PATH IMAGE_URL. Prints OK on
success; any failure raises (non-zero exit with a traceback).
"""
import sys
import time

import sushy
from sushy import auth


def wait_media(vm, image, inserted):
    # The insert runs as a task (202); the slot shows the image once it has ended. Bounded
    # polling, no timing asserted.
    for _ in range(200):
        vm.refresh()
        if vm.image == image and bool(vm.inserted) == inserted:
            return
        time.sleep(0.1)
    raise AssertionError(f"image {vm.image!r} inserted {vm.inserted}, wanted {image!r} {inserted}")


def main():
    base, ca, user, password, path, image = sys.argv[1:7]
    root = sushy.Sushy(base, verify=ca,
                       auth=auth.SessionAuth(username=user, password=password))
    system = root.get_system(path)
    managers = system.managers
    assert managers, "no Links.ManagedBy"
    vmc = managers[0].virtual_media
    assert len(vmc.members_identities) == 1, vmc.members_identities
    vm = vmc.get_member(vmc.members_identities[0])
    assert sushy.VIRTUAL_MEDIA_CD in vm.media_types, vm.media_types
    # Ironic ejects first (a no-op on an empty slot), then inserts.
    vm.eject_media()
    vm.insert_media(image, inserted=True, write_protected=True)
    wait_media(vm, image, True)
    vm.eject_media()
    wait_media(vm, None, False)
    # The PATCH form: what sushy does for a BMC without the actions.
    vm.refresh()
    vm._actions = None
    vm.insert_media(image, inserted=True, write_protected=True)
    wait_media(vm, image, True)
    vm._actions = None
    vm.eject_media()
    wait_media(vm, None, False)
    print("OK")


if __name__ == "__main__":
    main()
