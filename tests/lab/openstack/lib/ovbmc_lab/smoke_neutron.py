"""The Neutron part of the openstack smoke (``ovbmc_lab.smoke`` runs it).

Over plain HTTP, as the project's member user (what ovbmc's cloud kit
will be): the Networking API is in the catalog and checks tokens, the
extensions the kit relies on are listed, the bootstrap's networks exist
with MTU 1500, every lab server has one ACTIVE port on the provisioning
network whose MAC is the one Nova shows (``OS-EXT-IPS-MAC:mac_addr``), and
a port is made, changed and deleted with allowed_address_pairs,
extra_dhcp_opts and tags; a scratch network and subnet with host_routes,
a port without port security, and a security group with a rule are made
and deleted.  Request/response shapes: Networking API v2.0
(https://docs.openstack.org/api-ref/network/v2/).
With ``OVBMC_LAB_NEUTRON=null`` it checks only that the null API answers.
"""
import requests

# what the cloud kit uses (issue 14 item 5): port-security,
# allowed-address-pairs, extra_dhcp_opt, standard-attr-tag, security-group,
# quotas, and binding (Nova's port binding)
EXTENSIONS = ("port-security", "allowed-address-pairs", "extra_dhcp_opt",
              "standard-attr-tag", "security-group", "quotas", "binding",
              "binding-extended", "net-mtu", "router")
SCRATCH = "ovbmc-lab-smoke"
# a port's fields a failed check prints
SHOWN = ("mac_address", "allowed_address_pairs", "extra_dhcp_opts", "tags",
         "port_security_enabled")


class Network:
    def __init__(self, url, token, report):
        self.url = url.rstrip("/")
        self.r = report
        self.http = requests.Session()
        self.http.headers.update({"X-Auth-Token": token, "Accept": "application/json"})

    def call(self, method, path, body=None):
        return self.http.request(method, self.url + path, json=body, timeout=30)

    def get(self, path):
        r = self.call("GET", path)
        return r.json() if r.status_code == 200 else {}

    def check_status(self, what, r, want):
        return self.r.check("%s (%d)" % (what, want), r.status_code == want,
                            "HTTP %s %s" % (r.status_code, r.text[:300]))

    def run(self, conf, nova, servers, project_id):
        r = requests.get(self.url + "/", timeout=10)
        self.r.check("neutron: GET / lists API v2.0", r.status_code == 200 and
                     any(v.get("id") == "v2.0" for v in r.json().get("versions", [])),
                     "HTTP %s" % r.status_code)
        bad = requests.get(self.url + "/v2.0/ports", headers={"X-Auth-Token": "bogus"},
                           timeout=10)
        if not conf.real_neutron:
            self.r.check("neutron (null): GET /v2.0/ports is an empty list",
                         self.get("/v2.0/ports") == {"ports": []}, "")
            return
        self.r.check("neutron: a bad token is refused with 401", bad.status_code == 401,
                     "HTTP %s" % bad.status_code)
        have = {e["alias"] for e in self.get("/v2.0/extensions").get("extensions", [])}
        missing = [e for e in EXTENSIONS if e not in have]
        self.r.check("neutron: extensions %s listed" % ", ".join(EXTENSIONS), not missing,
                     "missing %s" % missing)
        nets = {n["name"]: n for n in self.get("/v2.0/networks").get("networks", [])}
        for name in (conf.provision_net, conf.bmc_net):
            net = nets.get(name, {})
            self.r.check("neutron: network %s exists, MTU 1500, with a subnet" % name,
                         net.get("mtu") == 1500 and len(net.get("subnets", [])) == 1,
                         str({k: net.get(k) for k in ("id", "mtu", "subnets")}))
        prov = nets.get(conf.provision_net, {}).get("id")
        self.server_ports(nova, servers, prov)
        if prov:
            self.port_lifecycle(prov)
        self.scratch_network()
        self.security_group()
        q = self.call("GET", "/v2.0/quotas/%s" % project_id)
        quota = q.json().get("quota", {}) if q.status_code == 200 else {}
        self.r.check("neutron: GET /v2.0/quotas/{project} has port, network, security_group",
                     {"port", "network", "security_group"} <= set(quota),
                     "HTTP %s %s" % (q.status_code, quota))

    def server_ports(self, nova, servers, prov):
        """Each server: one ACTIVE port on the provisioning network, MAC as Nova shows it."""
        bad = []
        for name, sid in sorted(servers.items()):
            if not name.startswith("baremetal_"):
                continue
            ports = self.get("/v2.0/ports?device_id=%s" % sid).get("ports", [])
            addrs = nova.server(sid).get("addresses", {})
            macs = {a.get("OS-EXT-IPS-MAC:mac_addr") for net in addrs.values() for a in net}
            if (len(ports) != 1 or ports[0]["network_id"] != prov or
                    ports[0]["status"] != "ACTIVE" or ports[0]["mac_address"] not in macs or
                    ports[0]["device_owner"] != "compute:nova"):
                bad.append((name, [(p["network_id"], p["status"], p["mac_address"])
                                   for p in ports], sorted(m for m in macs if m)))
        self.r.check("neutron: every server has one ACTIVE port on the provisioning network,"
                     " its MAC in Nova's OS-EXT-IPS-MAC:mac_addr", not bad and servers,
                     str(bad))

    def port_lifecycle(self, net_id):
        body = {"port": {
            "network_id": net_id, "name": SCRATCH,
            "allowed_address_pairs": [{"ip_address": "192.168.24.250",
                                       "mac_address": "52:54:00:aa:bb:01"}],
            "extra_dhcp_opts": [{"opt_name": "bootfile-name", "opt_value": "ipxe.efi"},
                                {"opt_name": "tftp-server", "opt_value": "192.168.24.1"}],
            "tags": ["ovbmc-lab", "smoke"]}}
        r = self.call("POST", "/v2.0/ports", body)
        if not self.check_status("neutron: POST /v2.0/ports with allowed_address_pairs,"
                                 " extra_dhcp_opts and tags", r, 201):
            return
        port = r.json()["port"]
        pid = port["id"]
        try:
            opts = {o["opt_name"]: o["opt_value"] for o in port["extra_dhcp_opts"]}
            self.r.check("neutron: the new port has them, a MAC and port security",
                         port["allowed_address_pairs"][0]["ip_address"] == "192.168.24.250"
                         and opts.get("bootfile-name") == "ipxe.efi"
                         and sorted(port["tags"]) == ["ovbmc-lab", "smoke"]
                         and port["port_security_enabled"] is True
                         and port["mac_address"],
                         str({k: port.get(k) for k in SHOWN}))
            r = self.call("PUT", "/v2.0/ports/%s" % pid, {"port": {
                "allowed_address_pairs": [{"ip_address": "192.168.24.0/28"}],
                "extra_dhcp_opts": [{"opt_name": "bootfile-name", "opt_value": "snp.efi"},
                                    {"opt_name": "tftp-server", "opt_value": None}]}})
            self.check_status("neutron: PUT /v2.0/ports/{id} new address pair, dhcp opt"
                              " changed and one removed", r, 200)
            r = self.call("PUT", "/v2.0/ports/%s/tags/bmc" % pid)
            self.check_status("neutron: PUT /v2.0/ports/{id}/tags/bmc", r, 201)
            port = self.get("/v2.0/ports/%s" % pid).get("port", {})
            opts = {o["opt_name"]: o["opt_value"] for o in port.get("extra_dhcp_opts", [])}
            pairs = port.get("allowed_address_pairs", [])
            self.r.check("neutron: GET shows the pair (the port's MAC), the options, 3 tags",
                         len(pairs) == 1 and pairs[0]["ip_address"] == "192.168.24.0/28"
                         and pairs[0]["mac_address"] == port.get("mac_address")
                         and opts == {"bootfile-name": "snp.efi"}
                         and sorted(port.get("tags", [])) == ["bmc", "ovbmc-lab", "smoke"],
                         str({k: port.get(k) for k in SHOWN}))
            r = self.call("GET", "/v2.0/ports?tags=bmc")
            self.r.check("neutron: GET /v2.0/ports?tags=bmc finds it",
                         r.status_code == 200 and
                         [p["id"] for p in r.json()["ports"]] == [pid], r.text[:300])
            r = self.call("PUT", "/v2.0/ports/%s" % pid, {"port": {
                "allowed_address_pairs": [{"ip_address": "not-an-ip"}]}})
            self.check_status("neutron: a bad address pair is refused", r, 400)
        finally:
            r = self.call("DELETE", "/v2.0/ports/%s" % pid)
        self.check_status("neutron: DELETE /v2.0/ports/{id}", r, 204)
        self.check_status("neutron: the deleted port is gone",
                          self.call("GET", "/v2.0/ports/%s" % pid), 404)

    def scratch_network(self):
        r = self.call("POST", "/v2.0/networks", {"network": {"name": SCRATCH}})
        if not self.check_status("neutron: POST /v2.0/networks (a project VLAN)", r, 201):
            return
        net = r.json()["network"]
        try:
            r = self.call("POST", "/v2.0/subnets", {"subnet": {
                "network_id": net["id"], "name": SCRATCH, "ip_version": 4,
                "cidr": "172.31.0.0/24", "enable_dhcp": False,
                "host_routes": [{"destination": "10.99.0.0/16", "nexthop": "172.31.0.254"}]}})
            ok = self.check_status("neutron: POST /v2.0/subnets with host_routes", r, 201)
            if ok:
                sub = r.json()["subnet"]
                r = self.call("PUT", "/v2.0/subnets/%s" % sub["id"], {"subnet": {
                    "host_routes": [{"destination": "10.98.0.0/16", "nexthop": "172.31.0.253"}]}})
                self.r.check("neutron: PUT /v2.0/subnets/{id} replaces host_routes",
                             r.status_code == 200 and r.json()["subnet"]["host_routes"] ==
                             [{"destination": "10.98.0.0/16", "nexthop": "172.31.0.253"}],
                             r.text[:300])
                r = self.call("POST", "/v2.0/ports", {"port": {
                    "network_id": net["id"], "port_security_enabled": False,
                    "security_groups": []}})
                self.r.check("neutron: a port without port security (no security groups)",
                             r.status_code == 201 and
                             r.json()["port"]["port_security_enabled"] is False,
                             "HTTP %s %s" % (r.status_code, r.text[:300]))
                if r.status_code == 201:
                    self.call("DELETE", "/v2.0/ports/%s" % r.json()["port"]["id"])
        finally:
            r = self.call("DELETE", "/v2.0/networks/%s" % net["id"])
        self.check_status("neutron: DELETE /v2.0/networks/{id} (with its subnet)", r, 204)

    def security_group(self):
        groups = self.get("/v2.0/security-groups").get("security_groups", [])
        self.r.check("neutron: the project has its default security group",
                     any(g["name"] == "default" for g in groups), str([g["name"] for g in groups]))
        r = self.call("POST", "/v2.0/security-groups", {"security_group": {"name": SCRATCH}})
        if not self.check_status("neutron: POST /v2.0/security-groups", r, 201):
            return
        sg = r.json()["security_group"]
        try:
            r = self.call("POST", "/v2.0/security-group-rules", {"security_group_rule": {
                "security_group_id": sg["id"], "direction": "ingress", "ethertype": "IPv4",
                "protocol": "udp", "port_range_min": 623, "port_range_max": 623,
                "remote_ip_prefix": "10.0.1.0/24"}})
            self.check_status("neutron: POST /v2.0/security-group-rules (udp 623, IPMI)", r, 201)
        finally:
            r = self.call("DELETE", "/v2.0/security-groups/%s" % sg["id"])
        self.check_status("neutron: DELETE /v2.0/security-groups/{id}", r, 204)
