# shellcheck shell=bash
# tests/lab/lib/common.sh: sourced by every lab script. Reads lab.conf, derives URLs and paths
# for one lab kind, and holds the process helpers (pid files record "PID STARTTIME" so that a
# recycled pid is never signalled).
#   LAB_KIND=openstack|ironic must be set before sourcing.
OVBMC_LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../lab.conf
. "$OVBMC_LAB_DIR/lab.conf"
: "${LAB_KIND:?LAB_KIND must be set}"

LAB_ROOT="$OVBMC_LAB_HOME/$LAB_KIND"
VENV="${OVBMC_LAB_VENV:-$LAB_ROOT/venv}"
STATE="${OVBMC_LAB_STATE:-$LAB_ROOT/state}"
H="$OVBMC_LAB_HOST"
KEYSTONE_URL="http://$H:$OVBMC_LAB_KEYSTONE_PORT"
NOVA_URL="http://$H:$OVBMC_LAB_NOVA_PORT/v2.1"
PLACEMENT_URL="http://$H:$OVBMC_LAB_PLACEMENT_PORT"
GLANCE_URL="http://$H:$OVBMC_LAB_GLANCE_PORT"
NEUTRON_URL="http://$H:$OVBMC_LAB_NEUTRON_PORT"
IRONIC_URL="http://$H:$OVBMC_LAB_IRONIC_PORT"

# service_port NAME: the port of a service named in a *_SERVICES list
service_port() { local v="OVBMC_LAB_${1^^}_PORT"; echo "${!v}"; }

proc_start() {  # the start time of PID (field 22 of /proc/PID/stat), empty if not running
  [ -r "/proc/$1/stat" ] || return 0
  sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'
}
pidfile_alive() {  # FILE -> 0 if any "PID STARTTIME" line in it is a live process
  local pid st
  [ -f "$1" ] || return 1
  while read -r pid st; do
    [ -n "${pid:-}" ] && [ "$(proc_start "$pid")" = "$st" ] && return 0
  done < "$1"
  return 1
}
port_busy() { (exec 3<>"/dev/tcp/$H/$1") 2>/dev/null; }

# venv_setup STAMPNAME CONSTRAINTS PKG...: create/refresh $VENV when the constraints, the
# package list or the python changed; seconds when nothing needs doing.
venv_setup() {
  local stamp="$VENV/.$1" constraints="$2"; shift 2
  local want
  want="$( (cat "$constraints"; echo "$*"; "$OVBMC_LAB_PYTHON" -V) | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
    echo "setup: venv $VENV is up to date"; return 0
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    "$OVBMC_LAB_PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  echo "setup: pip install -c $(basename "$constraints") $*"
  "$VENV/bin/python" -m pip install -q -c "$constraints" "$@"
  echo "$want" > "$stamp"
}

# apt_need PKG...: install the missing Debian packages (root only).
apt_need() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || { echo "setup: missing ${missing[*]}; run as root" >&2; return 1; }
  ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# export_settings: export every lab.conf setting (OVBMC_LAB_*) and the resolved state dir, for
# the Python side (openstack/lib/ovbmc_lab/settings.py reads them, and only them).
export_settings() {
  local v
  for v in $(compgen -v OVBMC_LAB_); do
    # arrays (the pip package lists) stay in bash
    [[ "$(declare -p "$v")" == "declare -a"* ]] || export "${v?}"
  done
  export OVBMC_LAB_STATE="$STATE"
}
