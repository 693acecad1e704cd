//! `ovbmc nodes-json --config FLEET`: the enrollment file for the fleet's nodes.
//!
//! Where the shape comes from:
//! * `--format ironic` (default) is what `openstack baremetal create FILE` takes
//!   (python-ironicclient `ironicclient/v1/create_resources.py`): a JSON object with only
//!   `nodes` (and `chassis`; the schema has `additionalProperties: false`), each node's keys
//!   but `ports`/`portgroups` POSTed to `/v1/nodes` as they are, so only real node fields may
//!   appear (`name`, `driver`, `driver_info`, `properties`); each of `ports` is POSTed to
//!   `/v1/ports` with the new node's UUID. The boot mode is a node capability, the string
//!   `properties.capabilities` ("boot_mode:uefi"), not a key of its own.
//! * `--format tripleo` is the instackenv shape OVB's `build-nodes-json` wrote and TripleO's
//!   `overcloud node import` reads (tripleo-common `tripleo_common/utils/nodes.py`): `pm_type`
//!   (required there), `pm_addr`, `pm_port`, `pm_user`, `pm_password`, `pm_system_id`
//!   (Redfish), `cpu`, `memory`, `disk`, `arch`, `capabilities`, `ports`; keys starting with
//!   the driver's prefix (`redfish_verify_ca`) are passed into `driver_info` as they are.
//!   The two cannot share one file: Ironic refuses `pm_*` node fields, TripleO requires
//!   `pm_type`.
//!
//! Per BMC: the driver is `ipmi`, or `redfish` when the fleet serves the Redfish face; the
//! ports are the instance's MACs and the sizes its flavor's, where the backend knows them
//! (`Machine::inventory`: Nova does, the simulator does not, and then they are left out);
//! `cpu_arch` is `x86_64` (nothing tells ovbmc otherwise); `boot_mode` is given where the
//! machine's stored boot flags say (IPMI v2.0 §28.13 parameter 5 data 1 bit 5: EFI, else
//! legacy when the flags are valid).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use crate::backend::{BootFlags, Inventory, SharedMachine};
use crate::cli::{Cli, NodesFormat, NodesJsonArgs};
use crate::config::{BmcEntry, Fleet, PasswordSource};
use crate::settings::{RedfishSettings, Settings};

/// IPMI's RMCP port (IPMI v2.0 §13.1.1): Ironic's `ipmi_port` default, left out when used.
const RMCP_PORT: u16 = 623;

/// How long to wait for one machine's inventory and boot flags (each call is answered from
/// the shared server view; this only bounds a cloud that stopped answering).
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Everything one node of the file is made from.
#[derive(Clone, Debug)]
pub struct NodeFacts {
    /// The instance name.
    pub name: String,
    /// The BMC's IPMI address and port.
    pub addr: std::net::SocketAddr,
    /// The BMC's user.
    pub user: String,
    /// The password, only with `--password-inline`.
    pub password: Option<String>,
    /// The Redfish face: `https://ADDR:PORT` and the CA file Ironic should trust (the
    /// self-signed certificate), if the fleet serves one.
    pub redfish: Option<(String, Option<PathBuf>)>,
    /// The machine's UUID (the instance UUID), text form.
    pub uuid: String,
    /// What the backend knows of the hardware.
    pub inventory: Option<Inventory>,
    /// The stored boot flags.
    pub boot: Option<BootFlags>,
}

/// `boot_mode` from boot flags: `uefi` when the EFI bit is set, `bios` when valid flags ask
/// for a legacy boot, nothing when no flags were ever set (a client never said).
pub fn boot_mode(f: &BootFlags) -> Option<&'static str> {
    if f.efi() {
        Some("uefi")
    } else if f.valid() {
        Some("bios")
    } else {
        None
    }
}

/// One node in the `--format ironic` shape.
pub fn ironic_node(n: &NodeFacts) -> Value {
    let mut info = Map::new();
    let driver = match &n.redfish {
        Some((url, ca)) => {
            info.insert("redfish_address".into(), json!(url));
            info.insert(
                "redfish_system_id".into(),
                json!(format!("/redfish/v1/Systems/{}", n.uuid)),
            );
            info.insert("redfish_username".into(), json!(n.user));
            if let Some(p) = &n.password {
                info.insert("redfish_password".into(), json!(p));
            }
            if let Some(ca) = ca {
                info.insert("redfish_verify_ca".into(), json!(ca.display().to_string()));
            }
            "redfish"
        }
        None => {
            info.insert("ipmi_address".into(), json!(n.addr.ip().to_string()));
            if n.addr.port() != RMCP_PORT {
                info.insert("ipmi_port".into(), json!(n.addr.port()));
            }
            info.insert("ipmi_username".into(), json!(n.user));
            if let Some(p) = &n.password {
                info.insert("ipmi_password".into(), json!(p));
            }
            "ipmi"
        }
    };
    let mut props = Map::new();
    if let Some(inv) = &n.inventory {
        if let Some(c) = inv.cpus {
            props.insert("cpus".into(), json!(c));
        }
        if let Some(m) = inv.memory_mib {
            props.insert("memory_mb".into(), json!(m));
        }
        if let Some(d) = inv.disk_gib {
            props.insert("local_gb".into(), json!(d));
        }
    }
    props.insert("cpu_arch".into(), json!("x86_64"));
    if let Some(m) = n.boot.as_ref().and_then(boot_mode) {
        props.insert("capabilities".into(), json!(format!("boot_mode:{m}")));
    }
    let mut node = Map::new();
    node.insert("name".into(), json!(n.name));
    node.insert("driver".into(), json!(driver));
    node.insert("driver_info".into(), Value::Object(info));
    node.insert("properties".into(), Value::Object(props));
    if let Some(ports) = ports(n) {
        node.insert("ports".into(), ports);
    }
    Value::Object(node)
}

/// One node in the `--format tripleo` shape (instackenv, as OVB's build-nodes-json).
pub fn tripleo_node(n: &NodeFacts) -> Value {
    let mut node = Map::new();
    node.insert("name".into(), json!(n.name));
    match &n.redfish {
        Some((url, ca)) => {
            node.insert("pm_type".into(), json!("redfish"));
            node.insert("pm_addr".into(), json!(url));
            node.insert(
                "pm_system_id".into(),
                json!(format!("/redfish/v1/Systems/{}", n.uuid)),
            );
            if let Some(ca) = ca {
                node.insert("redfish_verify_ca".into(), json!(ca.display().to_string()));
            }
        }
        None => {
            node.insert("pm_type".into(), json!("ipmi"));
            node.insert("pm_addr".into(), json!(n.addr.ip().to_string()));
            if n.addr.port() != RMCP_PORT {
                node.insert("pm_port".into(), json!(n.addr.port()));
            }
        }
    }
    node.insert("pm_user".into(), json!(n.user));
    if let Some(p) = &n.password {
        node.insert("pm_password".into(), json!(p));
    }
    if let Some(inv) = &n.inventory {
        if let Some(c) = inv.cpus {
            node.insert("cpu".into(), json!(c));
        }
        if let Some(m) = inv.memory_mib {
            node.insert("memory".into(), json!(m));
        }
        if let Some(d) = inv.disk_gib {
            node.insert("disk".into(), json!(d));
        }
    }
    node.insert("arch".into(), json!("x86_64"));
    if let Some(m) = n.boot.as_ref().and_then(boot_mode) {
        node.insert("capabilities".into(), json!(format!("boot_mode:{m}")));
    }
    if let Some(ports) = ports(n) {
        node.insert("ports".into(), ports);
    }
    Value::Object(node)
}

/// The MACs of `inv` on one of `networks`, in their order.
pub fn only_on(inv: &Inventory, networks: &[String]) -> Vec<String> {
    inv.macs
        .iter()
        .filter(|m| {
            inv.mac_networks
                .iter()
                .any(|(mac, net)| mac == *m && networks.contains(net))
        })
        .cloned()
        .collect()
}

/// `ports`: one `{address}` per MAC; `None` (the key left out) when none is known.
fn ports(n: &NodeFacts) -> Option<Value> {
    let macs = &n.inventory.as_ref()?.macs;
    (!macs.is_empty()).then(|| macs.iter().map(|m| json!({"address": m})).collect())
}

/// The whole file: `{"nodes": [...]}` (the only key either importer accepts for nodes).
pub fn document(format: NodesFormat, nodes: &[NodeFacts]) -> Value {
    let f = match format {
        NodesFormat::Ironic => ironic_node,
        NodesFormat::Tripleo => tripleo_node,
    };
    json!({"nodes": nodes.iter().map(f).collect::<Vec<_>>()})
}

/// The Redfish URL and CA file for BMC `e`: the face's address, or the BMC's own address
/// with the face's port when the face listens on every address (0.0.0.0 or ::).
fn redfish_of(r: &RedfishSettings, e: &BmcEntry) -> (String, Option<PathBuf>) {
    let ip = if r.addr.ip().is_unspecified() {
        e.addr.ip()
    } else {
        r.addr.ip()
    };
    let at = std::net::SocketAddr::new(ip, r.addr.port());
    if r.insecure_http {
        (format!("http://{at}"), None)
    } else {
        let ca = r
            .cert_key
            .is_none()
            .then(|| r.state_dir.join(crate::redfish::tls::CERT_FILE));
        (format!("https://{at}"), ca)
    }
}

/// How a password left out of the file is found, for the message on stderr.
fn password_hint(p: &PasswordSource) -> String {
    match p {
        PasswordSource::File(f) => format!("\"$(cat {})\"", f.display()),
        PasswordSource::Env(v) => format!("\"${v}\""),
        PasswordSource::Inline(_) => "PASSWORD (the fleet file's insecure_inline_password)".into(),
        PasswordSource::Preloaded(_) => "PASSWORD".into(),
    }
}

/// `ovbmc nodes-json`: build the machines as the daemon does (read-only: a server list, no
/// change to any instance), ask each for its inventory and boot flags, and write the file.
pub async fn nodes_json(cli: &Cli, args: &NodesJsonArgs) -> anyhow::Result<()> {
    let fleet = Fleet::load(&args.config)?;
    let settings = Settings::resolve(cli, Some(&fleet));
    let machines = crate::daemon::fleet_machines(&settings, &args.config, &fleet).await?;
    let networks = port_networks(args, &fleet);
    let mut nodes = Vec::with_capacity(fleet.bmcs.len());
    for (e, m) in fleet.bmcs.iter().zip(&machines) {
        nodes.push(facts(&settings, args, &networks, e, m).await?);
    }
    let text = serde_json::to_string_pretty(&document(args.format, &nodes))? + "\n";
    match &args.output {
        Some(path) => write_file(path, text.as_bytes(), args.password_inline)?,
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    if !args.password_inline {
        // The Ironic field the password goes in, whichever importer made the node.
        let key = if settings.redfish.is_some() {
            "redfish_password"
        } else {
            "ipmi_password"
        };
        let field = match args.format {
            NodesFormat::Tripleo => "pm_password".to_string(),
            NodesFormat::Ironic => format!("driver_info/{key}"),
        };
        eprintln!(
            "nodes-json: the passwords are not in the file ({field} left out; \
             --password-inline puts them in). After enrolling, set them:"
        );
        for (e, n) in fleet.bmcs.iter().zip(&nodes) {
            eprintln!(
                "  baremetal node set {} --driver-info {key}={}",
                n.name,
                password_hint(&e.password)
            );
        }
    }
    Ok(())
}

/// The networks whose ports are the nodes' `ports`: `--network`, else the provisioning
/// network of `[cloud.network]` (the fleet file says which network the nodes PXE-boot on, and
/// Ironic tries every port it is given), else all (empty). Nova's `addresses` name networks,
/// so a network given by its UUID there cannot be matched: all ports, and a line says so.
fn port_networks(args: &NodesJsonArgs, fleet: &Fleet) -> Vec<String> {
    if !args.network.is_empty() {
        return args.network.clone();
    }
    let Some(net) = fleet.cloud.network.as_ref().map(|n| n.network.clone()) else {
        return Vec::new();
    };
    if crate::cloud::parse_uuid(&net).is_some() {
        tracing::info!(
            "nodes-json: [cloud.network] network is a UUID ({net}), which Nova's addresses do \
             not show: the ports of every network are listed (--network NAME to choose)"
        );
        return Vec::new();
    }
    vec![net]
}

async fn facts(
    settings: &Settings,
    args: &NodesJsonArgs,
    networks: &[String],
    e: &BmcEntry,
    m: &SharedMachine,
) -> anyhow::Result<NodeFacts> {
    let at = || format!("{}: bmc #{} ({})", args.config.display(), e.index, e.addr);
    let password = if args.password_inline {
        let p = e
            .password
            .load()
            .with_context(|| format!("{}: reading the password", at()))?;
        Some(
            String::from_utf8(p.to_vec())
                .map_err(|_| anyhow::anyhow!("{}: the password is not UTF-8", at()))?,
        )
    } else {
        None
    };
    let mut inventory = tokio::time::timeout(CALL_TIMEOUT, m.inventory())
        .await
        .ok()
        .flatten();
    if let Some(inv) = inventory.as_mut()
        && !networks.is_empty()
    {
        let all = inv.macs.len();
        inv.macs = only_on(inv, networks);
        if all > 0 && inv.macs.is_empty() {
            tracing::warn!(
                "{}: none of the {all} ports of {} is on {networks:?}: no ports",
                at(),
                m.name(),
            );
        }
    }
    let boot = match tokio::time::timeout(CALL_TIMEOUT, m.boot_flags()).await {
        Ok(Ok(f)) => Some(f),
        Ok(Err(err)) => {
            tracing::warn!("{}: boot flags not read ({err}): no boot_mode", at());
            None
        }
        Err(_) => {
            tracing::warn!("{}: boot flags not read (timeout): no boot_mode", at());
            None
        }
    };
    Ok(NodeFacts {
        name: m.name(),
        addr: e.addr,
        user: e.user.clone(),
        password,
        redfish: settings.redfish.as_ref().map(|r| redfish_of(r, e)),
        uuid: crate::redfish::uuid_string(&m.uuid()),
        inventory,
        boot,
    })
}

/// Replace `path` whole: written to a temporary file beside it and renamed over it, created
/// 0600 when it holds passwords (never readable by others, not even for a moment), else 0644.
fn write_file(path: &Path, data: &[u8], secret: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mode = if secret { 0o600 } else { 0o644 };
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have taken bits away from 0644; never added any to 0600.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipmi_proto::machine::BootDevice;

    /// `--network`, else `[cloud.network] network` by name, else every port.
    #[test]
    fn port_networks_default_to_the_provisioning_network() {
        let fleet = |net: &str| {
            let section = if net.is_empty() {
                String::new()
            } else {
                format!(
                    "[cloud]\nos_cloud = \"c\"\n[cloud.network]\nfleet = \"f\"\n\
                     network = \"{net}\"\nsubnet = \"s\"\nbmc_port = \"p\"\n"
                )
            };
            let text = format!(
                "{section}[[bmc]]\naddress = \"192.0.2.1\"\ninstance = \"a\"\n\
                 password_env = \"X\"\n"
            );
            Fleet::parse(&text, Path::new("/etc/ovbmc/fleet.toml")).unwrap()
        };
        let args = |extra: &[&str]| {
            let mut words = vec!["ovbmc", "nodes-json", "--config", "/etc/ovbmc/fleet.toml"];
            words.extend_from_slice(extra);
            match Cli::try_from_args(words).unwrap().command {
                Some(crate::cli::Command::NodesJson(a)) => a,
                _ => unreachable!(),
            }
        };
        assert_eq!(
            port_networks(&args(&[]), &fleet("provision")),
            ["provision"]
        );
        assert_eq!(
            port_networks(&args(&["--network", "ctlplane"]), &fleet("provision")),
            ["ctlplane"]
        );
        assert!(port_networks(&args(&[]), &fleet("")).is_empty());
        let by_id = fleet("5b0d4a76-1f3e-4c4e-9a8e-2f6e1c0a7d21");
        assert!(port_networks(&args(&[]), &by_id).is_empty());
    }

    fn sim_facts() -> NodeFacts {
        NodeFacts {
            name: "node-0".into(),
            addr: "127.0.0.1:6230".parse().unwrap(),
            user: "admin".into(),
            password: None,
            redfish: None,
            uuid: "00000000-0000-4000-8000-00000000000a".into(),
            inventory: None,
            boot: None,
        }
    }

    #[test]
    fn a_sim_node_has_no_ports_and_no_sizes() {
        let v = ironic_node(&sim_facts());
        assert_eq!(
            v,
            json!({"name": "node-0", "driver": "ipmi",
                   "driver_info": {"ipmi_address": "127.0.0.1", "ipmi_port": 6230,
                                   "ipmi_username": "admin"},
                   "properties": {"cpu_arch": "x86_64"}})
        );
        let t = tripleo_node(&sim_facts());
        assert_eq!(
            t,
            json!({"name": "node-0", "pm_type": "ipmi", "pm_addr": "127.0.0.1",
                   "pm_port": 6230, "pm_user": "admin", "arch": "x86_64"})
        );
    }

    #[test]
    fn port_623_is_left_out_and_a_password_is_only_there_when_asked() {
        let mut n = sim_facts();
        n.addr = "192.0.2.45:623".parse().unwrap();
        let v = ironic_node(&n);
        assert!(v["driver_info"].get("ipmi_port").is_none(), "{v}");
        assert!(v["driver_info"].get("ipmi_password").is_none(), "{v}");
        n.password = Some("pw-1".into());
        assert_eq!(ironic_node(&n)["driver_info"]["ipmi_password"], "pw-1");
        assert_eq!(tripleo_node(&n)["pm_password"], "pw-1");
    }

    #[test]
    fn boot_mode_follows_the_stored_flags() {
        assert_eq!(boot_mode(&BootFlags::default()), None);
        assert_eq!(
            boot_mode(&BootFlags::new(BootDevice::Pxe, true, true)),
            Some("uefi")
        );
        assert_eq!(
            boot_mode(&BootFlags::new(BootDevice::Pxe, true, false)),
            Some("bios")
        );
        let mut n = sim_facts();
        n.boot = Some(BootFlags::new(BootDevice::Disk, true, true));
        assert_eq!(
            ironic_node(&n)["properties"]["capabilities"],
            "boot_mode:uefi"
        );
        assert_eq!(tripleo_node(&n)["capabilities"], "boot_mode:uefi");
    }

    #[test]
    fn redfish_nodes_name_the_system_and_the_ca() {
        let r = RedfishSettings {
            addr: "0.0.0.0:8443".parse().unwrap(),
            cert_key: None,
            state_dir: "/var/lib/ovbmc".into(),
            insecure_http: false,
            session_timeout: std::time::Duration::from_secs(60),
            backend_timeout: std::time::Duration::from_secs(20),
        };
        let e = crate::config::Fleet::parse(
            "[[bmc]]\naddress = \"192.0.2.45\"\ninstance = \"n\"\nbackend = \"sim\"\n\
             password_env = \"X\"\n",
            Path::new("f.toml"),
        )
        .unwrap()
        .bmcs
        .remove(0);
        let mut n = sim_facts();
        n.redfish = Some(redfish_of(&r, &e));
        let v = ironic_node(&n);
        assert_eq!(v["driver"], "redfish");
        assert_eq!(
            v["driver_info"],
            json!({"redfish_address": "https://192.0.2.45:8443",
                   "redfish_system_id": "/redfish/v1/Systems/00000000-0000-4000-8000-00000000000a",
                   "redfish_username": "admin",
                   "redfish_verify_ca": "/var/lib/ovbmc/redfish-cert.pem"})
        );
        let t = tripleo_node(&n);
        assert_eq!(t["pm_type"], "redfish");
        assert_eq!(t["pm_addr"], "https://192.0.2.45:8443");
    }

    /// A Nova instance with a flavor (2.47+ embedded) and two ports, through the fake cloud:
    /// its sizes and MACs land in `properties` and `ports`.
    #[tokio::test]
    async fn a_nova_node_has_its_flavor_and_macs() {
        use crate::cloud::fake::Fake;
        let f = Fake::start().await;
        let id = "00000000-0000-4000-8000-00000000000a";
        f.add_server(id, "baremetal-0", "ACTIVE");
        {
            let mut st = f.lock();
            let s = st.servers.get_mut(id).unwrap();
            s["flavor"] = json!({"original_name": "bm.small", "vcpus": 2, "ram": 4096,
                                 "disk": 40, "ephemeral": 0, "swap": 0, "extra_specs": {}});
            s["addresses"] = json!({"prov": [{"addr": "192.0.2.5", "version": 4,
                                              "OS-EXT-IPS-MAC:mac_addr": "FA:16:3E:00:00:01"}],
                                    "ext": [{"addr": "198.51.100.5", "version": 4,
                                             "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:02"}]});
            s["metadata"] = json!({"ovbmc:boot": "e004000000"});
        }
        let s = crate::cloud::fake_tests::session(&f, crate::cloud::fake_tests::fast()).await;
        let m = crate::cloud::build_on(
            &s,
            &crate::cloud::machine::MachineOptions::default(),
            &[id.to_string()],
        )
        .await
        .unwrap()
        .remove(0) as SharedMachine;
        let n = NodeFacts {
            name: m.name(),
            addr: "192.0.2.45:623".parse().unwrap(),
            user: "admin".into(),
            uuid: crate::redfish::uuid_string(&m.uuid()),
            inventory: m.inventory().await,
            boot: m.boot_flags().await.ok(),
            ..sim_facts()
        };
        let v = ironic_node(&n);
        assert_eq!(v["name"], "baremetal-0");
        assert_eq!(
            v["properties"],
            json!({"cpus": 2, "memory_mb": 4096, "local_gb": 40, "cpu_arch": "x86_64",
                   "capabilities": "boot_mode:uefi"})
        );
        let macs: Vec<&str> = v["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["address"].as_str().unwrap())
            .collect();
        let mut sorted = macs.clone();
        sorted.sort();
        assert_eq!(sorted, ["fa:16:3e:00:00:01", "fa:16:3e:00:00:02"]);
        let inv = n.inventory.clone().unwrap();
        assert_eq!(only_on(&inv, &["prov".to_string()]), ["fa:16:3e:00:00:01"]);
        assert!(only_on(&inv, &["other".to_string()]).is_empty());
        let t = tripleo_node(&n);
        assert_eq!(
            (t["cpu"].clone(), t["memory"].clone(), t["disk"].clone()),
            (json!(2), json!(4096), json!(40))
        );
        // Read-only: nothing but reads went to the cloud.
        let log = f.lock().log.clone();
        assert!(
            log.iter()
                .all(|l| l.starts_with("GET") || l.contains("/auth/tokens")),
            "{log:?}"
        );
    }
}
