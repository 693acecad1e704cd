"""The lab's settings, as lab.conf and its environment overrides gave them.

lab.conf is the one place for ports, credentials and service lists.  It is
shell, so the bash layer (lib/common.sh ``export_settings``) resolves it and
exports every ``OVBMC_LAB_*`` value; Python reads them here and nowhere
else.  A value that is missing means the program was not started by the
lab's scripts, which is an error worth a clear message rather than a
default that might point at somebody else's service.
"""
import dataclasses
import os


class NotFromLab(RuntimeError):
    """A setting is missing: the program was not started by the lab."""


def _get(env, name):
    try:
        return env[name]
    except KeyError:
        raise NotFromLab(
            "%s is not set: run this through tests/lab/openstack/up or "
            "smoke, which export lab.conf" % name) from None


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str
    state: str
    services: tuple
    ports: dict
    region: str
    user: str
    user_password: str
    project: str
    admin_password: str
    service_password: str
    fake_delay: float
    servers: int
    serial_console: bool
    console_port: int
    console_tick: float
    neutron: str          # "real" or "null"
    provision_net: str
    provision_cidr: str
    bmc_net: str
    bmc_cidr: str

    @classmethod
    def from_env(cls, env=None):
        env = os.environ if env is None else env
        services = tuple(_get(env, "OVBMC_LAB_OPENSTACK_SERVICES").split())
        # a service's port is OVBMC_LAB_<NAME>_PORT; a service added to the
        # list in lab.conf shows up here without an edit
        ports = {s: int(_get(env, "OVBMC_LAB_%s_PORT" % s.upper().replace("-", "_")))
                 for s in services}
        return cls(
            host=_get(env, "OVBMC_LAB_HOST"),
            state=_get(env, "OVBMC_LAB_STATE"),
            services=services,
            ports=ports,
            region=_get(env, "OVBMC_LAB_REGION"),
            user=_get(env, "OVBMC_LAB_USER"),
            user_password=_get(env, "OVBMC_LAB_USER_PASSWORD"),
            project=_get(env, "OVBMC_LAB_PROJECT"),
            admin_password=_get(env, "OVBMC_LAB_ADMIN_PASSWORD"),
            service_password=_get(env, "OVBMC_LAB_SERVICE_PASSWORD"),
            fake_delay=float(_get(env, "OVBMC_LAB_FAKE_DELAY")),
            servers=int(_get(env, "OVBMC_LAB_SERVERS")),
            serial_console=_get(env, "OVBMC_LAB_SERIAL_CONSOLE") == "on",
            console_port=int(_get(env, "OVBMC_LAB_CONSOLE_PORT")),
            console_tick=float(_get(env, "OVBMC_LAB_CONSOLE_TICK")),
            neutron=_get(env, "OVBMC_LAB_NEUTRON"),
            provision_net=_get(env, "OVBMC_LAB_PROVISION_NET"),
            provision_cidr=_get(env, "OVBMC_LAB_PROVISION_CIDR"),
            bmc_net=_get(env, "OVBMC_LAB_BMC_NET"),
            bmc_cidr=_get(env, "OVBMC_LAB_BMC_CIDR"),
        )

    def url(self, service, path=""):
        """The base URL of a service of the lab (loopback, its lab.conf port)."""
        return "http://%s:%d%s" % (self.host, self.ports[service], path)

    @property
    def auth_url(self):
        return self.url("keystone", "/v3")

    @property
    def nova_url(self):
        return self.url("nova", "/v2.1")

    @property
    def real_neutron(self):
        if self.neutron not in ("real", "null"):
            raise NotFromLab("OVBMC_LAB_NEUTRON=%r: real or null" % self.neutron)
        return self.neutron == "real"

    @property
    def run_dir(self):
        return os.path.join(self.state, "run")


def load():
    """The settings of the running program (from its environment)."""
    return Settings.from_env()
