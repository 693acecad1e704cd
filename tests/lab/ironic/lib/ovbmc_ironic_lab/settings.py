"""Where the lab's Ironic is, from the environment lib.sh exports.

lab.conf is the one place for the lab's port, host and state directory; the
scripts resolve it (lib/common.sh ``export_settings``) and export the
``OVBMC_LAB_*`` values.  The files ``up`` writes are named here once.
"""
import configparser
import os


class NotFromLab(RuntimeError):
    """A setting is missing: the program was not started by the lab."""


def _get(name):
    try:
        return os.environ[name]
    except KeyError:
        raise NotFromLab("%s is not set: run this through the scripts in "
                         "tests/lab/ironic, which export lab.conf" % name) from None


class Settings:
    def __init__(self):
        self.host = _get("OVBMC_LAB_HOST")
        self.port = int(_get("OVBMC_LAB_IRONIC_PORT"))
        self.state = _get("OVBMC_LAB_STATE")
        self.url = "http://%s:%d" % (self.host, self.port)
        self.conf_file = os.path.join(self.state, "etc", "ironic.conf")
        self.log_file = os.path.join(self.state, "log", "ironic.log")
        # bin/ipmitool appends one line per call Ironic makes
        self.ipmitool_log = os.path.join(self.state, "log", "ipmitool-argv.log")

    def ironic_conf(self):
        """``up``'s ironic.conf, or an empty one if there is none (yet)."""
        conf = configparser.ConfigParser(interpolation=None, strict=False)
        conf.read(self.conf_file)
        return conf


def load():
    return Settings()


def truthy(value):
    return str(value).strip().lower() in ("1", "true", "yes", "on")
