"""sushy (the Redfish client Ironic uses) against ovbmc's Redfish face.

Usage: sushy_client.py BASE_URL CA_FILE USER PASSWORD SYSTEM_PATH. Prints OK on success;
any failure raises (non-zero exit with a traceback).
"""
import sys
import time

import sushy
from sushy import auth


def wait_power(system, want):
    deadline = time.time() + 10
    while time.time() < deadline:
        system.refresh()
        if system.power_state == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"power state {system.power_state}, wanted {want}")


def main():
    base, ca, user, password, path = sys.argv[1:6]
    # SessionAuth, as Ironic's redfish_auth_type=session (and auto, which tries it first).
    root = sushy.Sushy(base, verify=ca,
                       auth=auth.SessionAuth(username=user, password=password))
    systems = root.get_system_collection()
    assert path in systems.members_identities, systems.members_identities
    system = root.get_system(path)
    assert system.uuid, "no UUID"
    assert sushy.RESET_ON in system.get_allowed_reset_system_values()
    system.reset_system(sushy.RESET_ON)
    wait_power(system, sushy.POWER_STATE_ON)
    system.reset_system(sushy.RESET_FORCE_OFF)
    wait_power(system, sushy.POWER_STATE_OFF)
    system.set_system_boot_options(sushy.BOOT_SOURCE_TARGET_PXE,
                                   enabled=sushy.BOOT_SOURCE_ENABLED_CONTINUOUS,
                                   mode=sushy.BOOT_SOURCE_MODE_UEFI)
    system.refresh()
    assert system.boot.target == sushy.BOOT_SOURCE_TARGET_PXE, system.boot.target
    assert system.boot.mode == sushy.BOOT_SOURCE_MODE_UEFI, system.boot.mode
    print("OK")


if __name__ == "__main__":
    main()
