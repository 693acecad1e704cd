# shellcheck shell=bash
# Per-service pieces of the OpenStack lab, sourced by ../up. For each name in
# OVBMC_LAB_OPENSTACK_SERVICES (lab.conf):
#   conf_<svc>     write $S/<svc>/*.conf (regenerated on every `up`)
#   init_<svc>     one-time database/key setup (optional; marked by $S/<svc>/.initialized)
#   start_<svc>    start the process (start_bg) ; health_<svc>: the URL `up` waits for
# Adding a service (nova-serialproxy, a real neutron) = a name and a port in lab.conf and these
# functions here.

ksauth() {  # username -> keystoneauth password settings
  cat <<EOC
auth_type = password
auth_url = $KEYSTONE_URL
username = $1
password = $OVBMC_LAB_SERVICE_PASSWORD
project_name = service
user_domain_name = Default
project_domain_name = Default
region_name = $OVBMC_LAB_REGION
EOC
}
authtoken() { echo "www_authenticate_uri = $KEYSTONE_URL"; ksauth "$1"; echo "service_token_roles_required = true"; }

# ------------------------------------------------------------------ keystone
conf_keystone() {
  cat > "$S/keystone/keystone.conf" <<EOC
[DEFAULT]
log_dir = $LOGS
log_file = keystone.log
[database]
connection = sqlite:///$S/keystone/keystone.sqlite
sqlite_synchronous = false
[token]
provider = fernet
expiration = 86400
[fernet_tokens]
key_repository = $S/keystone/fernet-keys
[fernet_receipts]
key_repository = $S/keystone/fernet-keys
[credential]
key_repository = $S/keystone/credential-keys
[identity]
# lab only: cheap password hashing keeps token requests fast
password_hash_rounds = 4
[cache]
enabled = true
backend = dogpile.cache.memory
EOC
}
init_keystone() {
  local K="$V/keystone-manage --config-file $S/keystone/keystone.conf"
  $K db_sync
  $K fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
  $K credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
  $K bootstrap --bootstrap-password "$OVBMC_LAB_ADMIN_PASSWORD" \
    --bootstrap-admin-url "$KEYSTONE_URL/v3" --bootstrap-public-url "$KEYSTONE_URL/v3" \
    --bootstrap-internal-url "$KEYSTONE_URL/v3" --bootstrap-region-id "$OVBMC_LAB_REGION"
}
start_keystone() {
  OS_KEYSTONE_CONFIG_DIR="$S/keystone" OS_KEYSTONE_CONFIG_FILES=keystone.conf \
    start_bg keystone "$PY" -m ovbmc_lab.serve keystone keystone.wsgi.api:application keystone 8
}
health_keystone() { echo "$KEYSTONE_URL/v3"; }

# ------------------------------------------------------------------ placement
conf_placement() {
  cat > "$S/placement/placement.conf" <<EOC
[DEFAULT]
log_dir = $LOGS
log_file = placement.log
[api]
auth_strategy = keystone
[placement_database]
connection = sqlite:///$S/placement/placement.sqlite
sqlite_synchronous = false
sync_on_startup = true
[keystone_authtoken]
$(authtoken placement)
EOC
}
start_placement() {
  OS_PLACEMENT_CONFIG_DIR="$S/placement" \
    start_bg placement "$PY" -m ovbmc_lab.serve placement placement.wsgi.api:application placement 1
}
health_placement() { echo "$PLACEMENT_URL/"; }

# ------------------------------------------------------------------ neutron
# OVBMC_LAB_NEUTRON=real: Neutron's neutron-server API (ML2; no L2/L3/DHCP agents; ports bound
# by ovbmc_lab/neutron_mech.py), its schema built by ovbmc_lab/neutron_db.py.
# OVBMC_LAB_NEUTRON=null: ovbmc_lab/neutron.py, the null Networking API (an empty cloud).
conf_neutron() {
  [ "$OVBMC_LAB_NEUTRON" = real ] || return 0
  mkdir -p "$S/neutron/lock"
  cp "$VENV/etc/neutron/api-paste.ini" "$S/neutron/api-paste.ini"
  cat > "$S/neutron/neutron.conf" <<EOC
[DEFAULT]
log_dir = $LOGS
log_file = neutron.log
state_path = $S/neutron
api_paste_config = $S/neutron/api-paste.ini
auth_strategy = keystone
core_plugin = ml2
# router: the L3 API (routers, floating IPs: Nova asks for a port's floating IPs); no L3 agent.
# The defaults (tag, timestamp, revisions, auto_allocate, ...) are always loaded beside it.
service_plugins = router
# no agents: RPC casts to them go to oslo.messaging's in-process fake transport and nowhere
transport_url = fake://
dhcp_agent_notification = false
allow_overlapping_ips = true
global_physnet_mtu = 1500
# port status and data changes go to Nova's os-server-external-events, as in a real cloud
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
[database]
connection = sqlite:///$S/neutron/neutron.sqlite
sqlite_synchronous = false
[keystone_authtoken]
$(authtoken neutron)
[nova]
$(ksauth neutron)
endpoint_type = public
[oslo_concurrency]
lock_path = $S/neutron/lock
[oslo_messaging_notifications]
driver = noop
[oslo_policy]
enforce_new_defaults = true
enforce_scope = true
[quotas]
quota_network = 100
quota_subnet = 100
quota_port = 500
EOC
  cat > "$S/neutron/ml2_conf.ini" <<EOC
[ml2]
type_drivers = flat,vlan,local
# a plain project's networks are VLANs on the physical network "lab"
tenant_network_types = vlan
mechanism_drivers = ovbmc_lab
# tag_ports_during_bulk_creation: "tags" in a POST /v2.0/ports body are kept (tag-creation)
extension_drivers = port_security,tag_ports_during_bulk_creation
[ml2_type_flat]
flat_networks = *
[ml2_type_vlan]
network_vlan_ranges = lab:1000:1999
[securitygroup]
enable_security_group = true
EOC
}
init_neutron() {
  [ "$OVBMC_LAB_NEUTRON" = real ] || return 0
  "$PY" -m ovbmc_lab.neutron_db "$S/neutron/neutron.conf" "$S/neutron/ml2_conf.ini" &&
    "$V/neutron-db-manage" --config-file "$S/neutron/neutron.conf" \
      --config-file "$S/neutron/ml2_conf.ini" stamp heads
}
start_neutron() {
  if [ "$OVBMC_LAB_NEUTRON" = real ]; then
    OS_NEUTRON_CONFIG_DIR="$S/neutron" OS_NEUTRON_CONFIG_FILES="neutron.conf;ml2_conf.ini" \
      start_bg neutron "$PY" -m ovbmc_lab.serve neutron neutron.wsgi.api:application neutron 8
  else
    start_bg neutron "$PY" -m ovbmc_lab.serve null-neutron ovbmc_lab.neutron:application neutron 4
  fi
}
health_neutron() { echo "$NEUTRON_URL/"; }

# ------------------------------------------------------------------ glance
conf_glance() {
  cat > "$S/glance/glance-api.conf" <<EOC
[DEFAULT]
log_dir = $LOGS
log_file = glance.log
worker_self_reference_url = $GLANCE_URL
enabled_backends = fs:file
image_cache_dir = $S/glance/cache
[database]
connection = sqlite:///$S/glance/glance.sqlite
sqlite_synchronous = false
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $S/glance/images/
[os_glance_staging_store]
filesystem_store_datadir = $S/glance/staging/
[os_glance_tasks_store]
filesystem_store_datadir = $S/glance/tasks/
[paste_deploy]
flavor = keystone
config_file = $VENV/etc/glance/glance-api-paste.ini
[keystone_authtoken]
$(authtoken glance)
[oslo_concurrency]
lock_path = $S/glance/lock
[import_filtering_opts]
# web-download (ovbmc --vmedia-import web-download) fetches from the tests' HTTP servers on
# 127.0.0.1, on ports of their own. Glance refuses loopback and link-local hosts unless
# allowed_hosts names them (glance/common/utils.py resolve_pinned_address), and allows only
# ports 80 and 443 by default; an empty allowed_ports is no allowlist (then the blocklist,
# empty): every port (get_validated_address). Both are bounded lists: written in brackets.
allowed_hosts = [127.0.0.1]
allowed_ports = []
EOC
}
init_glance() { "$V/glance-manage" --config-file "$S/glance/glance-api.conf" db_sync; }
start_glance() {
  OS_GLANCE_CONFIG_DIR="$S/glance" \
    start_bg glance "$PY" -m ovbmc_lab.serve glance glance.wsgi.api:application glance 8
}
health_glance() { echo "$GLANCE_URL/versions"; }

# ------------------------------------------------------------------ nova
conf_nova() {
  cp "$VENV/etc/nova/api-paste.ini" "$S/nova/api-paste.ini"
  cat > "$S/nova/nova.conf" <<EOC
[DEFAULT]
host = ovbmc-lab
# ovbmc_lab/fakevirt.py, registered under this name by ovbmc_lab/nova.py
compute_driver = ovbmc_lab_fake.LabDriver
transport_url = fake://
concurrency_backend = threading
state_path = $S/nova
instances_path = $S/nova/instances
log_dir = $LOGS
log_file = nova.log
my_ip = 127.0.0.1
enabled_apis = osapi_compute
# no L2 agent: nothing wires a port, so Nova must not wait for network-vif-plugged (the fake
# driver never waits; ovbmc_lab/neutron_mech.py sets ports ACTIVE, so Neutron sends it anyway)
vif_plugging_is_fatal = false
vif_plugging_timeout = 0
[api]
auth_strategy = keystone
[api_database]
connection = sqlite:///$S/nova/nova_api.sqlite
sqlite_synchronous = false
[database]
connection = sqlite:///$S/nova/nova.sqlite
sqlite_synchronous = false
[keystone_authtoken]
$(authtoken nova)
[placement]
$(ksauth nova)
valid_interfaces = public
[neutron]
$(ksauth nova)
valid_interfaces = public
[glance]
valid_interfaces = public
[cinder]
os_region_name = $OVBMC_LAB_REGION
[service_user]
send_service_user_token = true
$(ksauth nova)
[oslo_concurrency]
lock_path = $S/nova/lock
[oslo_messaging_notifications]
driver = noop
[scheduler]
discover_hosts_in_cells_interval = 30
[vnc]
enabled = false
[serial_console]
enabled = $([ "$OVBMC_LAB_SERIAL_CONSOLE" = on ] && echo true || echo false)
base_url = ws://$H:$OVBMC_LAB_SERIALPROXY_PORT/
serialproxy_host = $H
serialproxy_port = $OVBMC_LAB_SERIALPROXY_PORT
proxyclient_address = $H
[quota]
instances = 100
cores = 1000
ram = 10240000
EOC
}
init_nova() {
  local M="$V/nova-manage --config-file $S/nova/nova.conf"
  $M api_db sync
  $M cell_v2 map_cell0 --database_connection "sqlite:///$S/nova/nova_cell0.sqlite"
  $M cell_v2 list_cells | grep -q ' cell1 ' ||
    $M cell_v2 create_cell --name cell1 --transport-url "none:///cell1" \
      --database_connection "sqlite:///$S/nova/nova.sqlite"
  $M db sync
}
start_nova() {
  is_running nova || echo "$OVBMC_LAB_FAKE_DELAY" > "$RUN/fake_delay"
  OS_NOVA_CONFIG_DIR="$S/nova" start_bg nova "$PY" -m ovbmc_lab.nova
}
health_nova() { echo "$NOVA_URL/"; }

# ------------------------------------------------------------------ serialproxy (nova-serialproxy)
# Nova's own proxy (see ovbmc_lab/serialproxy.py for its one lab difference), on nova.conf:
# conf_nova wrote its [serial_console] section; its log is serialproxy.log.
conf_serialproxy() {
  port_busy "$OVBMC_LAB_CONSOLE_PORT" && ! is_running nova &&
    die "$H:$OVBMC_LAB_CONSOLE_PORT (the guests' serial ports) is taken; set OVBMC_LAB_CONSOLE_PORT"
  return 0
}
start_serialproxy() {
  start_bg serialproxy "$PY" -m ovbmc_lab.serialproxy --config-file "$S/nova/nova.conf" \
    --log-file "$LOGS/serialproxy.log"
}
health_serialproxy() { echo "http://$H:$OVBMC_LAB_SERIALPROXY_PORT/"; }
# websockify answers a plain GET (no WebSocket upgrade) with 405: it is up
health_codes_serialproxy() { echo 405; }
