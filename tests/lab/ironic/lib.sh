# shellcheck shell=bash
# Settings of the Ironic lab scripts (sourced): everything comes from ../lab.conf through
# ../lib/common.sh; this file only names the Ironic paths the scripts use, and runs the
# Python half (lib/ovbmc_ironic_lab) with the lab's settings exported.
LAB_KIND=ironic
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$LAB_DIR/../lib/common.sh"
IRONIC_PORT="$OVBMC_LAB_IRONIC_PORT"
IRONIC_CONF="$STATE/etc/ironic.conf"
IPMITOOL_LOG="$STATE/log/ipmitool-argv.log"
IRONIC_LOG="$STATE/log/ironic.log"
PIDFILE="$STATE/run/ironic.pids"
pid_start() { proc_start "$1"; }
# baremetal CLI (python-ironicclient) against a noauth Ironic
export OS_AUTH_TYPE=none
export OS_ENDPOINT="$IRONIC_URL"
export OS_BAREMETAL_API_VERSION=${OS_BAREMETAL_API_VERSION:-latest}
unset OS_CLOUD OS_AUTH_URL OS_TOKEN 2>/dev/null || true

# lab_python MODULE ARGS...: run ovbmc_ironic_lab.MODULE in the lab's venv (replaces the shell)
lab_python() {
  local mod="$1"; shift
  [ -x "$VENV/bin/python" ] || { echo "${0##*/}: no venv at $VENV: run $LAB_DIR/setup" >&2; exit 2; }
  export_settings
  export OVBMC_LAB_IRONIC_DIR="$LAB_DIR" PYTHONPATH="$LAB_DIR/lib:$LAB_DIR/../lib" PYTHONWARNINGS=ignore
  exec "$VENV/bin/python" -u -m "ovbmc_ironic_lab.$mod" "$@"
}
