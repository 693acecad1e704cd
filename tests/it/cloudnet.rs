//! `ovbmc cloud plan | apply | destroy` against the lab's real Neutron (`tests/lab/openstack`
//! with `neutron = real`), checked with the `openstack` CLI of the lab venv, field by field.
//! Skips (as the nova tier does) without the lab. The test makes its own ports (a BMC port and
//! an undercloud port, unique names) and uses `baremetal_3`'s provisioning port; everything is
//! removed at the end.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{LabCli, ScratchDir, lab_env, ovbmc_bin, run};

fn openstack(clouds: &Path, args: &[&str]) -> Value {
    LabCli::with(clouds).json(args)
}

fn openstack_do(clouds: &Path, args: &[&str]) {
    LabCli::with(clouds).text(args);
}

fn cloud(clouds: &Path, verb: &str, fleet: &Path) -> String {
    let r = run(
        &ovbmc_bin(),
        &[
            "cloud".into(),
            verb.into(),
            "--config".into(),
            fleet.display().to_string(),
        ],
        &[
            ("OS_CLIENT_CONFIG_FILE", clouds.to_str().unwrap()),
            ("OVBMC_LOG", "warn"),
        ],
        Duration::from_secs(300),
    );
    r.expect_success().to_string()
}

fn pairs(port: &Value) -> Vec<String> {
    port["allowed_address_pairs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["ip_address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn tags(v: &Value) -> Vec<String> {
    v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The ingress rules of security group `group` that say they are fleet `fleet`'s (their
/// description `ovbmc:FLEET`: Neutron cannot tag rules), each as "PROTO PORT REMOTE ETHERTYPE",
/// sorted; read rule by rule with the CLI.
fn fleet_rules(clouds: &Path, group: &str, fleet: &str) -> Vec<String> {
    let list = openstack(clouds, &["security", "group", "rule", "list", group]);
    let mut out = Vec::new();
    for r in list.as_array().into_iter().flatten() {
        let id = r["ID"].as_str().expect("rule ID");
        let r = openstack(clouds, &["security", "group", "rule", "show", id]);
        if r["description"] != format!("ovbmc:{fleet}").as_str() {
            continue;
        }
        assert_eq!(r["direction"], "ingress", "{r}");
        assert_eq!(r["port_range_min"], r["port_range_max"], "{r}");
        out.push(format!(
            "{} {} {} {}",
            r["protocol"].as_str().unwrap_or("any"),
            r["port_range_min"],
            r["remote_ip_prefix"].as_str().unwrap_or("anywhere"),
            r["ether_type"].as_str().unwrap_or("?")
        ));
    }
    out.sort();
    out
}

/// A scratch directory `name` with an IPMI password file and a fleet file: the lab cloud's
/// `[defaults]` and `[cloud]`, then `rest` (its `[cloud.network]` and BMCs).
fn fleet_file(name: &str, rest: &str) -> (ScratchDir, std::path::PathBuf) {
    let dir = ScratchDir::new(name);
    dir.write_secret("ipmi-password", "pw");
    let file = dir.path().join("fleet.toml");
    std::fs::write(
        &file,
        format!(
            "[defaults]\npassword_file = \"ipmi-password\"\n[cloud]\nos_cloud = \"lab\"\n{rest}"
        ),
    )
    .unwrap();
    (dir, file)
}

/// The lab's clouds.yaml when the lab runs a real Neutron; else None (the test SKIPs, saying
/// why).
fn neutron_lab() -> Option<std::path::PathBuf> {
    let clouds = crate::nova::lab()?;
    if lab_env("openstack", "neutron").as_deref() != Some("real") {
        crate::support::skip("cloudnet", "the lab's Neutron is not the real one");
        return None;
    }
    Some(clouds)
}

#[test]
fn plan_apply_again_and_destroy_against_the_lab_neutron() {
    let Some(clouds) = neutron_lab() else {
        return;
    };
    let id = std::process::id();
    let fleet = format!("it{id}");
    let (bmc, uc) = (format!("it-{id}-bmc"), format!("it-{id}-uc"));
    openstack(&clouds, &["port", "create", "--network", "provision", &bmc]);
    let ucp = openstack(&clouds, &["port", "create", "--network", "provision", &uc]);
    let uc_ip = ucp["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    // The Redfish face's port, its own per run (the rule is matched by port).
    let redfish_port = 30000 + id % 10000;
    let (_dir, file) = fleet_file(
        "cloudnet",
        &format!(
            "[cloud.network]\nfleet = \"{fleet}\"\nnetwork = \"provision\"\n\
             subnet = \"provision-subnet\"\nbmc_port = \"{bmc}\"\n\
             undercloud_port = \"{uc}\"\nipxe_file = \"inspector.ipxe\"\n\
             [redfish]\naddress = \"192.168.24.241:{redfish_port}\"\n\
             [[bmc]]\naddress = \"192.168.24.241\"\ninstance = \"baremetal_3\"\n\
             [[bmc]]\naddress = \"192.168.24.242\"\ninstance = \"baremetal_3\"\nport = 624\n"
        ),
    );
    // Plan on a clean project: every change listed, exit 0, nothing made.
    let plan = cloud(&clouds, "plan", &file);
    for want in [
        "add allowed_address_pair 192.168.24.241",
        "add allowed_address_pair 192.168.24.242",
        "add allowed_address_pair 169.254.169.254",
        "set extra_dhcp_opt bootfile-name=inspector.ipxe",
        &format!("set extra_dhcp_opt tftp-server={uc_ip}"),
        &format!("add host_route 169.254.169.254/32 via {uc_ip}"),
        "rule ingress udp 623 from",
        "rule ingress udp 624 from",
        &format!("rule ingress tcp {redfish_port} from"),
    ] {
        assert!(plan.contains(want), "plan lacks {want:?}:\n{plan}");
    }
    assert!(fleet_rules(&clouds, "default", &fleet).is_empty());
    assert!(pairs(&openstack(&clouds, &["port", "show", &bmc])).is_empty());
    // Apply, then check field by field.
    cloud(&clouds, "apply", &file);
    let p = openstack(&clouds, &["port", "show", &bmc]);
    assert_eq!(pairs(&p), ["192.168.24.241", "192.168.24.242"]);
    assert!(tags(&p).contains(&format!("ovbmc:{fleet}")));
    assert_eq!(
        pairs(&openstack(&clouds, &["port", "show", &uc])),
        ["169.254.169.254"]
    );
    let sub = openstack(&clouds, &["subnet", "show", "provision-subnet"]);
    assert!(
        sub["host_routes"]
            .to_string()
            .contains("169.254.169.254/32")
            && sub["host_routes"].to_string().contains(&uc_ip),
        "{sub}"
    );
    let server = openstack(&clouds, &["server", "show", "baremetal_3"]);
    let sid = server["id"].as_str().unwrap().to_string();
    let ports = openstack(
        &clouds,
        &[
            "port",
            "list",
            "--device-id",
            &sid,
            "--network",
            "provision",
        ],
    );
    let port_id = ports[0]["ID"].as_str().unwrap().to_string();
    let bm = openstack(&clouds, &["port", "show", &port_id]);
    // The three DHCP options by name (docs/deploy.md: iPXE's file from the undercloud).
    let mut opts: Vec<String> = bm["extra_dhcp_opts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            format!(
                "{}={}",
                o["opt_name"].as_str().unwrap_or("?"),
                o["opt_value"].as_str().unwrap_or("?")
            )
        })
        .collect();
    opts.sort();
    for want in [
        "bootfile-name=inspector.ipxe".to_string(),
        format!("server-ip-address={uc_ip}"),
        format!("tftp-server={uc_ip}"),
    ] {
        assert!(
            opts.contains(&want),
            "extra_dhcp_opts lack {want}: {opts:?}"
        );
    }
    // The faces' rules in the BMC port's group, field by field: UDP 623 and 624 (the two
    // BMCs' ports) and the Redfish TCP port, from the provisioning subnet.
    let cidr = sub["cidr"].as_str().unwrap().to_string();
    let mut want_rules = vec![
        format!("tcp {redfish_port} {cidr} IPv4"),
        format!("udp 623 {cidr} IPv4"),
        format!("udp 624 {cidr} IPv4"),
    ];
    want_rules.sort();
    assert_eq!(fleet_rules(&clouds, "default", &fleet), want_rules);
    // Every resource ovbmc edited carries the fleet's tag (rules: the description above).
    for (kind, name) in [("port", uc.as_str()), ("port", port_id.as_str())] {
        let v = openstack(&clouds, &[kind, "show", name]);
        assert!(
            tags(&v).contains(&format!("ovbmc:{fleet}")),
            "{kind} {name}: {v}"
        );
    }
    assert!(
        tags(&sub).contains(&format!("ovbmc:{fleet}")),
        "provision-subnet: {sub}"
    );
    // Apply again: nothing to do.
    assert!(
        cloud(&clouds, "apply", &file).contains("apply: nothing to do"),
        "second apply did something"
    );
    // A pair and a rule added by hand survive apply and destroy.
    openstack_do(
        &clouds,
        &[
            "port",
            "set",
            "--allowed-address",
            "ip-address=192.168.24.243",
            &bmc,
        ],
    );
    let rule = openstack(
        &clouds,
        &[
            "security",
            "group",
            "rule",
            "create",
            "--protocol",
            "tcp",
            "--dst-port",
            &format!("{}", 20000 + id % 10000),
            "default",
        ],
    );
    let rule_id = rule["id"].as_str().unwrap().to_string();
    assert!(cloud(&clouds, "apply", &file).contains("apply: nothing to do"));
    cloud(&clouds, "destroy", &file);
    assert_eq!(
        pairs(&openstack(&clouds, &["port", "show", &bmc])),
        ["192.168.24.243"]
    );
    openstack(&clouds, &["security", "group", "rule", "show", &rule_id]);
    let tag = format!("ovbmc:{fleet}");
    for kind in [["port", "list"], ["subnet", "list"], ["security", "group"]] {
        let mut a: Vec<&str> = kind.to_vec();
        if kind[0] == "security" {
            a.push("list");
        }
        a.extend(["--tags", tag.as_str()]);
        let v = openstack(&clouds, &a);
        assert_eq!(v.as_array().map(Vec::len), Some(0), "{a:?}: {v}");
    }
    assert!(
        !openstack(&clouds, &["subnet", "show", "provision-subnet"])["host_routes"]
            .to_string()
            .contains("169.254.169.254")
    );
    let bm = openstack(&clouds, &["port", "show", &port_id]);
    assert!(
        !bm["extra_dhcp_opts"].to_string().contains("inspector.ipxe"),
        "{bm}"
    );
    assert!(
        fleet_rules(&clouds, "default", &fleet).is_empty(),
        "destroy left the fleet's rules"
    );
    assert!(cloud(&clouds, "destroy", &file).contains("destroy: nothing to do"));
    openstack_do(&clouds, &["security", "group", "rule", "delete", &rule_id]);
    openstack_do(&clouds, &["port", "delete", &bmc, &uc]);
}

/// Layout B with a subnet per port (docs/deploy.md §1, for clouds that refuse a server two
/// NICs on one subnet), against the lab's real Neutron and Nova: plan, apply (a /30 subnet and
/// a port per address, attached to a BMC VM the test boots), apply again (nothing), destroy
/// (nothing tagged left). Its own security group and addresses, so it runs beside the test
/// above.
#[test]
fn layout_b_with_a_subnet_per_port_against_the_lab() {
    let Some(clouds) = neutron_lab() else {
        return;
    };
    let id = std::process::id();
    let fleet = format!("itb{id}");
    let (vm, sg) = (format!("it-{id}-bmcvm"), format!("it-{id}-sg"));
    openstack(&clouds, &["security", "group", "create", &sg]);
    let server = openstack(
        &clouds,
        &[
            "server",
            "create",
            "--flavor",
            "baremetal",
            "--image",
            "lab-disk",
            "--network",
            "provision",
            "--wait",
            &vm,
        ],
    );
    let sid = server["id"].as_str().unwrap().to_string();
    // Outside the provisioning subnet (192.168.24.0/24), which the subnets must not overlap.
    let net = 32 + id % 200;
    let (a1, a2) = (format!("192.168.{net}.5"), format!("192.168.{net}.9"));
    let (_dir, file) = fleet_file(
        "cloudnet-b",
        &format!(
            "[cloud.network]\nfleet = \"{fleet}\"\nlayout = \"B\"\nnetwork = \"provision\"\n\
             subnet = \"provision-subnet\"\nbmc_server = \"{vm}\"\nsecurity_group = \"{sg}\"\n\
             subnet_per_port = true\n\
             [[bmc]]\naddress = \"{a1}\"\ninstance = \"baremetal_3\"\n\
             [[bmc]]\naddress = \"{a2}\"\ninstance = \"baremetal_3\"\n"
        ),
    );
    let plan = cloud(&clouds, "plan", &file);
    for want in [
        format!("create subnet ovbmc-{fleet}-{a1} 192.168.{net}.4/30"),
        format!("create subnet ovbmc-{fleet}-{a2} 192.168.{net}.8/30"),
        format!("create port ovbmc-{fleet}-{a1}: IPMI address {a1}"),
        format!("create port ovbmc-{fleet}-{a2}: IPMI address {a2}"),
    ] {
        assert!(plan.contains(&want), "plan lacks {want:?}:\n{plan}");
    }
    cloud(&clouds, "apply", &file);
    let tag = format!("ovbmc:{fleet}");
    let subnets = openstack(&clouds, &["subnet", "list", "--tags", &tag, "--long"]);
    assert_eq!(subnets.as_array().map(Vec::len), Some(2), "{subnets}");
    for (addr, cidr) in [
        (&a1, format!("192.168.{net}.4/30")),
        (&a2, format!("192.168.{net}.8/30")),
    ] {
        let s = openstack(
            &clouds,
            &["subnet", "show", &format!("ovbmc-{fleet}-{addr}")],
        );
        assert_eq!(s["cidr"], cidr.as_str(), "{s}");
        assert_eq!(s["enable_dhcp"], false, "{s}");
        assert!(s["gateway_ip"].is_null(), "{s}");
        assert_eq!(
            s["allocation_pools"],
            serde_json::json!([{ "start": addr, "end": addr }]),
            "{s}"
        );
        assert!(tags(&s).contains(&format!("ovbmc:{fleet}:subnet")), "{s}");
        // Its address is for its own port only: no other port gets it.
        assert_eq!(
            s["service_types"],
            serde_json::json!(["compute:ovbmc-ipmi"]),
            "{s}"
        );
        let p = openstack(&clouds, &["port", "show", &format!("ovbmc-{fleet}-{addr}")]);
        assert_eq!(p["fixed_ips"][0]["subnet_id"], s["id"], "{p}");
        assert_eq!(p["fixed_ips"][0]["ip_address"], addr.as_str(), "{p}");
        assert_eq!(
            p["device_id"],
            sid.as_str(),
            "not attached to the BMC VM: {p}"
        );
        // Nova took the port over (its own owner), and the address stayed.
        assert_eq!(p["device_owner"], "compute:nova", "{p}");
    }
    // The IPMI rule in the group named, from the provisioning subnet.
    let prov = openstack(&clouds, &["subnet", "show", "provision-subnet"]);
    let cidr = prov["cidr"].as_str().unwrap();
    assert_eq!(
        fleet_rules(&clouds, &sg, &fleet),
        [format!("udp 623 {cidr} IPv4")]
    );
    assert!(
        cloud(&clouds, "apply", &file).contains("apply: nothing to do"),
        "second apply did something"
    );
    cloud(&clouds, "destroy", &file);
    assert!(
        fleet_rules(&clouds, &sg, &fleet).is_empty(),
        "destroy left the rule"
    );
    for kind in ["port", "subnet"] {
        let v = openstack(&clouds, &[kind, "list", "--tags", &tag]);
        assert_eq!(v.as_array().map(Vec::len), Some(0), "{kind}: {v}");
    }
    assert!(cloud(&clouds, "destroy", &file).contains("destroy: nothing to do"));
    openstack_do(&clouds, &["server", "delete", "--wait", &vm]);
    openstack_do(&clouds, &["security", "group", "delete", &sg]);
}

/// TripleO needs an MTU of 1500 on the provisioning network: against the lab's real Neutron,
/// `plan` on a network made with MTU 1400 fails and says why, and goes ahead with
/// `--allow-small-mtu`.
#[test]
fn a_small_mtu_is_refused_unless_allowed_against_the_lab() {
    let Some(clouds) = neutron_lab() else {
        return;
    };
    let id = std::process::id();
    let (net, sub, port) = (
        format!("it-{id}-mtu"),
        format!("it-{id}-mtu-subnet"),
        format!("it-{id}-mtu-bmc"),
    );
    openstack(&clouds, &["network", "create", "--mtu", "1400", &net]);
    let third = 100 + id % 100;
    openstack(
        &clouds,
        &[
            "subnet",
            "create",
            "--network",
            &net,
            "--subnet-range",
            &format!("10.{third}.0.0/24"),
            &sub,
        ],
    );
    openstack(&clouds, &["port", "create", "--network", &net, &port]);
    let (_dir, file) = fleet_file(
        "cloudnet-mtu",
        &format!(
            "[cloud.network]\nfleet = \"itm{id}\"\nnetwork = \"{net}\"\nsubnet = \"{sub}\"\n\
             bmc_port = \"{port}\"\n\
             [[bmc]]\naddress = \"10.{third}.0.200\"\ninstance = \"baremetal_3\"\n"
        ),
    );
    let plan = |extra: &[&str]| {
        let mut args: Vec<String> = ["cloud", "plan", "--config"].map(String::from).to_vec();
        args.push(file.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        run(
            &ovbmc_bin(),
            &args,
            &[
                ("OS_CLIENT_CONFIG_FILE", clouds.to_str().unwrap()),
                ("OVBMC_LOG", "warn"),
            ],
            Duration::from_secs(300),
        )
    };
    let refused = plan(&[]);
    refused.expect_failure();
    assert!(
        refused.stderr.contains("1400") && refused.stderr.contains("allow-small-mtu"),
        "{refused}"
    );
    let allowed = plan(&["--allow-small-mtu"]);
    assert!(
        allowed
            .expect_success()
            .contains("add allowed_address_pair 10."),
        "{allowed}"
    );
    openstack_do(&clouds, &["port", "delete", &port]);
    openstack_do(&clouds, &["network", "delete", &net]);
}
