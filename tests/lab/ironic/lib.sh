# shellcheck shell=bash
# Settings of the Ironic lab scripts (sourced): everything comes from ../lab.conf through
# ../lib/common.sh; this file only names the Ironic paths the scripts use.
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
