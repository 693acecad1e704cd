//! Issue 14 item 3, "How it is checked": `ovbmc nodes-json` output imported by the lab's real
//! Ironic with python-ironicclient's `baremetal create FILE`, and every node's power and boot
//! device driven through it, over IPMI and, with the Redfish face on, over Redfish.
//!
//! The Nova fleet is two servers this test boots itself in the OpenStack lab (`enroll-it-0`,
//! `enroll-it-1`, flavor `baremetal`, one port on `provision`) and deletes afterwards: the
//! lab's `baremetal_0..4` belong to the nova and ironic tiers, which run at the same time.
//! Each node's fields are checked against the real services: driver and driver_info against
//! the fleet file, ports against the MACs the lab's Neutron gives the instance, properties
//! against the flavor Nova reports. Then, per node: `manage` (Ironic validates the power
//! credentials and reads the power state), power off and on (Nova's status follows), boot
//! device pxe persistent (set, read back, Nova's metadata), back to disk; the nodes are
//! deleted. The simulator fleet (no cloud) is imported the same way and its power driven.
//!
//! Skips (prints SKIP) without the labs unless `OVBMC_REQUIRE_LABS=1`. No timed assertions:
//! every wait has a deadline only so a hang fails.
//!
//! Seen on 2026-12-03 (load 5-7 on the 2-core machine): the Nova test passed alone once
//! (190 s), then failed twice: once ovbmc's Redfish face answered 503
//! ServiceTemporarilyUnavailable on the System for the whole of sushy's retries, once
//! `baremetal node boot device set enroll-it-0 pxe --persistent` failed over IPMI. Both were
//! the Nova session's wait for a coalesced server list, then a fixed 500 ms whichever face
//! asked; since 665a369 each face waits its own budget (Redfish 20 s, IPMI 500 ms, where
//! Ironic retries a busy answer), the enrollment tests run after the parallel run, one after
//! the other (scripts/test-all), and they have passed in every CI run since (2026-12-03 and
//! 2026-12-04).

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fleet::FleetProc;
use crate::ironic::{Lab, NodeGuard};
use crate::support::{Ran, ScratchDir, free_udp_port, ovbmc_bin, run};

/// The Nova fleet's BMC addresses and the instances the test boots for them.
const NOVA_BMCS: [(Ipv4Addr, &str); 2] = [
    (Ipv4Addr::new(127, 0, 14, 1), "enroll-it-0"),
    (Ipv4Addr::new(127, 0, 14, 2), "enroll-it-1"),
];
/// The Redfish face of the Nova fleet (one HTTPS listener for both systems).
const REDFISH_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 14, 3);
/// The simulator fleet's BMC addresses (instance names become the Ironic node names).
const SIM_BMCS: [(Ipv4Addr, &str); 2] = [
    (Ipv4Addr::new(127, 0, 14, 5), "enroll-sim-0"),
    (Ipv4Addr::new(127, 0, 14, 6), "enroll-sim-1"),
];
const USER: &str = "admin";
const PASSWORD: &str = "enroll-it-pw-1414";
/// One CLI call (`openstack`, `baremetal`, `ovbmc nodes-json`).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long Ironic or Nova may take to settle after one action.
const DEADLINE: Duration = Duration::from_secs(240);

/// The Ironic lab's `baremetal` CLI (python-ironicclient) against its noauth API, set up as
/// the lab's `ironic/lib.sh` does.
struct Baremetal {
    bin: PathBuf,
    url: String,
}

impl Baremetal {
    fn find(url: &str) -> Result<Self, String> {
        let venv = crate::support::lab_env("ironic", "venv")
            .ok_or("tests/lab/env ironic venv: no answer")?;
        let bin = Path::new(&venv).join("bin/baremetal");
        if !bin.is_file() {
            return Err(format!("{} not found (run ironic/setup)", bin.display()));
        }
        Ok(Self {
            bin,
            url: url.to_string(),
        })
    }

    fn run(&self, args: &[&str]) -> Ran {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        run(
            &self.bin,
            &a,
            &[
                ("OS_AUTH_TYPE", "none"),
                ("OS_ENDPOINT", self.url.as_str()),
                ("OS_BAREMETAL_API_VERSION", "latest"),
                ("OS_CLOUD", ""),
                ("OS_AUTH_URL", ""),
                ("PYTHONWARNINGS", "ignore"),
            ],
            CALL_TIMEOUT,
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert!(r.success(), "baremetal {args:?} failed:\n{r}");
        r.stdout.clone()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-f", "json"]);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("baremetal {a:?}: {e}:\n{out}"))
    }

    fn node(&self, name: &str) -> Value {
        self.json(&["node", "show", name])
    }

    /// Wait until the node has no action running, then return it (its last_error must be
    /// empty).
    fn settled(&self, name: &str, what: &str) -> Value {
        let end = Instant::now() + DEADLINE;
        loop {
            let n = self.node(name);
            if n["target_power_state"].is_null()
                && n["target_provision_state"].is_null()
                && n["reservation"].is_null()
            {
                assert!(
                    n["last_error"].is_null(),
                    "{name}: {what}: {}",
                    n["last_error"]
                );
                return n;
            }
            assert!(Instant::now() < end, "{name}: {what} did not settle: {n}");
            thread::sleep(Duration::from_secs(1));
        }
    }

    /// `baremetal node power on|off NAME`, then wait until Ironic reports it.
    fn power(&self, name: &str, on: bool) {
        let verb = if on { "on" } else { "off" };
        self.ok(&["node", "power", verb, name]);
        let want = format!("power {verb}");
        let end = Instant::now() + DEADLINE;
        loop {
            let n = self.settled(name, &want);
            if n["power_state"] == want.as_str() {
                return;
            }
            assert!(Instant::now() < end, "{name}: not {want}: {n}");
            thread::sleep(Duration::from_secs(1));
        }
    }

    /// `boot device set NAME DEV --persistent`, then `boot device show` reads it back.
    fn boot_device(&self, name: &str, dev: &str) {
        self.ok(&["node", "boot", "device", "set", name, dev, "--persistent"]);
        let v = self.json(&["node", "boot", "device", "show", name]);
        assert_eq!(
            (v["boot_device"].as_str(), v["persistent"].as_bool()),
            (Some(dev), Some(true)),
            "{name}: {v}"
        );
    }
}

/// `ovbmc nodes-json ARGS`.
fn nodes_json(args: &[&str]) -> Ran {
    let a: Vec<String> = std::iter::once("nodes-json")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    run(&ovbmc_bin(), &a, &[("OS_CLOUD", "")], CALL_TIMEOUT)
}

/// The lab servers this test boots, deleted on drop (also when the test fails).
struct Servers<'a> {
    lab: &'a Lab,
    names: Vec<&'static str>,
}

impl Drop for Servers<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let r = openstack(self.lab, &["server", "delete", "--wait", name]);
            if !r.success() {
                eprintln!("could not delete lab server {name}:\n{r}");
            }
        }
    }
}

/// `openstack ARGS` as the lab's user, for commands with no output (`server delete`).
fn openstack(lab: &Lab, args: &[&str]) -> Ran {
    lab.cli().ran(args)
}

/// Boot `name` (flavor `baremetal`, image `lab-disk`, network `provision`, as the lab's
/// bootstrap boots baremetal_N), replacing one left by an earlier run; again once if the
/// fake hypervisor's scheduler lost it (the bootstrap retries for the same reason).
fn boot_server(lab: &Lab, name: &str) -> Value {
    if lab
        .openstack_json(&["server", "show", name, "-c", "id"])
        .is_ok()
    {
        openstack(lab, &["server", "delete", "--wait", name]);
    }
    let mut last = String::new();
    for _ in 0..2 {
        match lab.openstack_json(&[
            "server",
            "create",
            "--flavor",
            "baremetal",
            "--image",
            "lab-disk",
            "--network",
            "provision",
            "--property",
            "libvirt:pxe-first=",
            "--wait",
            name,
        ]) {
            Ok(v) if v["status"] == "ACTIVE" => return v,
            Ok(v) => last = v.to_string(),
            Err(e) => last = e,
        }
        openstack(lab, &["server", "delete", "--wait", name]);
    }
    panic!("could not boot lab server {name}: {last}");
}

/// The fleet file for the Nova fleet, with the Redfish face when `redfish` is
/// `Some((port, state_dir))`.
fn nova_fleet(lab: &Lab, pw: &Path, ports: &[u16], redfish: Option<(u16, &Path)>) -> String {
    let mut t = format!(
        "[defaults]\nbackend = \"nova\"\nuser = \"{USER}\"\npassword_file = \"{}\"\n\n\
         [cloud]\nos_cloud = \"lab\"\nos_client_config_file = \"{}\"\n\
         boot_strategy = \"metadata\"\n",
        pw.display(),
        lab.clouds.display()
    );
    if let Some((port, state)) = redfish {
        t += &format!(
            "\n[redfish]\naddress = \"{REDFISH_ADDR}:{port}\"\nstate_dir = \"{}\"\n",
            state.display()
        );
    }
    for ((addr, name), port) in NOVA_BMCS.iter().zip(ports) {
        t += &format!("\n[[bmc]]\naddress = \"{addr}\"\nport = {port}\ninstance = \"{name}\"\n");
    }
    t
}

/// Start ovbmc on `cfg` (written by `make` with fresh ports; again if another process took
/// one meanwhile). Returns the process and the IPMI ports and the Redfish port.
fn start(
    dir: &ScratchDir,
    tag: &str,
    addrs: &[Ipv4Addr],
    make: impl Fn(&[u16], u16) -> String,
) -> (FleetProc, PathBuf) {
    let cfg = dir.path().join(format!("fleet-{tag}.toml"));
    let mut last = String::new();
    for attempt in 0..3 {
        let ports: Vec<u16> = addrs.iter().map(|a| free_udp_port(*a)).collect();
        let rf_port = std::net::TcpListener::bind((REDFISH_ADDR, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free TCP port");
        fs::write(&cfg, make(&ports, rf_port)).expect("write fleet file");
        let mut p = FleetProc::spawn(
            &[],
            &["--config".into(), cfg.display().to_string()],
            dir.path().join(format!("ovbmc-{tag}-{attempt}.log")),
        );
        match p.wait_log("serving", 1, Duration::from_secs(60)) {
            Ok(()) => return (p, cfg),
            Err(log) if log.contains("cannot bind") || log.contains("in use") => last = log,
            Err(log) => panic!("{log}"),
        }
    }
    panic!("could not find free ports:\n{last}");
}

/// `nodes-json` without `--password-inline`: no password in the file, and stderr says so and
/// how to set it. Returns the document.
fn check_without_password(cfg: &Path, field: &str) -> Value {
    let r = nodes_json(&["--config", &cfg.display().to_string()]);
    let out = r.expect_success().to_string();
    assert!(!r.output().contains(PASSWORD), "{r}");
    assert!(
        r.stderr.contains("passwords are not in the file") && r.stderr.contains(field),
        "{r}"
    );
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {r}"));
    for n in v["nodes"].as_array().expect("nodes") {
        assert!(n["driver_info"].get(field).is_none(), "{n}");
    }
    v
}

/// `nodes-json --password-inline -o FILE`, then `baremetal create FILE`; returns the file's
/// document and deletes the nodes (by name) when the guards drop.
fn import<'a>(lab: &'a Lab, bm: &Baremetal, cfg: &Path, out: &Path) -> (Value, Vec<NodeGuard<'a>>) {
    let r = nodes_json(&[
        "--config",
        &cfg.display().to_string(),
        "--password-inline",
        "-o",
        &out.display().to_string(),
    ]);
    r.expect_success();
    assert!(!r.output().contains(PASSWORD), "{r}");
    let doc: Value = serde_json::from_str(&fs::read_to_string(out).unwrap()).unwrap();
    let names: Vec<String> = doc["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["name"].as_str().expect("name").to_string())
        .collect();
    // Left over from an interrupted run: the guard of this run deletes them.
    for n in &names {
        drop(NodeGuard {
            lab,
            name: n.clone(),
        });
    }
    let guards = names
        .iter()
        .map(|n| NodeGuard {
            lab,
            name: n.clone(),
        })
        .collect();
    bm.ok(&["create", &out.display().to_string()]);
    (doc, guards)
}

/// The node as Ironic has it matches the file's entry: driver, driver_info (the password
/// masked), properties; and its ports are `macs`.
fn check_node(bm: &Baremetal, want: &Value, macs: &[String]) {
    let name = want["name"].as_str().unwrap();
    let n = bm.node(name);
    assert_eq!(n["driver"], want["driver"], "{name}: {n}");
    for (k, v) in want["driver_info"].as_object().unwrap() {
        if k.ends_with("_password") {
            assert_eq!(n["driver_info"][k], "******", "{name}: {k}: {n}");
        } else {
            assert_eq!(&n["driver_info"][k], v, "{name}: {k}: {n}");
        }
    }
    assert_eq!(n["properties"], want["properties"], "{name}: {n}");
    let ports = bm.json(&["port", "list", "--node", name, "--fields", "address"]);
    let mut got: Vec<String> = ports
        .as_array()
        .unwrap()
        .iter()
        // `--fields address` names the column `address`, the default listing `Address`.
        .map(|p| {
            p.get("address")
                .or_else(|| p.get("Address"))
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{name}: no address in {p}"))
                .to_string()
        })
        .collect();
    got.sort();
    let mut macs = macs.to_vec();
    macs.sort();
    assert_eq!(got, macs, "{name}: Ironic's ports");
}

/// manage, power off/on with Nova's status checked, boot device pxe (Nova's metadata checked)
/// and back to disk.
fn drive_nova_node(lab: &Lab, bm: &Baremetal, name: &str) {
    bm.ok(&["node", "manage", name, "--wait", "240"]);
    let n = bm.settled(name, "manage");
    assert_eq!(n["provision_state"], "manageable", "{name}: {n}");
    assert_eq!(n["power_state"], "power on", "{name}: {n}");
    bm.power(name, false);
    lab.until_nova(name, "SHUTOFF", |s| s.settled("SHUTOFF"));
    bm.power(name, true);
    lab.until_nova(name, "ACTIVE", |s| s.settled("ACTIVE"));
    bm.boot_device(name, "pxe");
    lab.until_nova(name, "PXE first", |s| s.pxe_first.as_deref() == Some("1"));
    bm.boot_device(name, "disk");
    lab.until_nova(name, "disk first", |s| s.pxe_first.as_deref() == Some(""));
}

#[test]
// In CI on 2026-12-03 Ironic's `boot device set ... disk --persistent` over Redfish got a 503
// (Retry-After 2) here because one Nova server list took over 500 ms, and Ironic does not retry
// a PATCH; the Redfish face now waits for Nova up to its own budget (`--redfish-backend-timeout-ms`,
// 20 s), and this test is back in scripts/test-all.
#[ignore = "drives the Ironic lab with the rest of the machine quiet: scripts/test-all runs it after the parallel run"]
fn nodes_json_of_a_nova_fleet_is_enrolled_and_driven_by_ironic() {
    let Some(lab) = crate::ironic::lab() else {
        return;
    };
    let bm = Baremetal::find(&lab.ironic_url).expect("the Ironic lab's baremetal CLI");
    let t0 = Instant::now();
    let dir = ScratchDir::new("enroll");
    let pw = dir.write_secret("password", PASSWORD);
    let servers = Servers {
        lab: &lab,
        names: NOVA_BMCS.iter().map(|(_, n)| *n).collect(),
    };
    let flavor = lab
        .openstack_json(&["flavor", "show", "baremetal"])
        .expect("flavor");
    let mut macs = Vec::new();
    for (_, name) in NOVA_BMCS {
        let s = boot_server(&lab, name);
        let id = s["id"].as_str().expect("id");
        let ports = lab
            .openstack_json(&["port", "list", "--server", id])
            .expect("port list");
        let m: Vec<String> = ports
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["MAC Address"].as_str().unwrap().to_lowercase())
            .collect();
        assert!(!m.is_empty(), "{name} has no Neutron port: {ports}");
        macs.push((name, id.to_string(), m));
    }
    let props = json!({"cpus": flavor["vcpus"], "memory_mb": flavor["ram"],
                       "local_gb": flavor["disk"], "cpu_arch": "x86_64"});
    let addrs: Vec<Ipv4Addr> = NOVA_BMCS.iter().map(|(a, _)| *a).collect();

    // 1. IPMI only.
    {
        let (ovbmc, cfg) = start(&dir, "ipmi", &addrs, |p, _| nova_fleet(&lab, &pw, p, None));
        let bare = check_without_password(&cfg, "ipmi_password");
        let (doc, guards) = import(&lab, &bm, &cfg, &dir.path().join("nodes-ipmi.json"));
        assert_eq!(bare["nodes"].as_array().unwrap().len(), 2, "{bare}");
        for ((n, (addr, name)), (_, _, m)) in doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .zip(NOVA_BMCS)
            .zip(&macs)
        {
            assert_eq!(n["name"], name, "{n}");
            assert_eq!(n["driver"], "ipmi", "{n}");
            assert_eq!(n["driver_info"]["ipmi_address"], addr.to_string(), "{n}");
            assert_eq!(n["driver_info"]["ipmi_username"], USER, "{n}");
            assert_eq!(n["driver_info"]["ipmi_password"], PASSWORD, "{n}");
            // Fresh servers: no boot flags stored yet, so no boot_mode capability.
            assert_eq!(n["properties"], props, "{n}");
            check_node(&bm, n, m);
        }
        for (_, name) in NOVA_BMCS {
            drive_nova_node(&lab, &bm, name);
        }
        drop(guards);
        drop(ovbmc);
    }

    // 2. The Redfish face on (HTTPS with the generated certificate).
    {
        let state = dir.path().join("state");
        let (ovbmc, cfg) = start(&dir, "redfish", &addrs, |p, rf| {
            nova_fleet(&lab, &pw, p, Some((rf, &state)))
        });
        check_without_password(&cfg, "redfish_password");
        let (doc, guards) = import(&lab, &bm, &cfg, &dir.path().join("nodes-redfish.json"));
        let ca = state.join("redfish-cert.pem");
        assert!(ca.is_file(), "{} not written", ca.display());
        for (n, (_, id, m)) in doc["nodes"].as_array().unwrap().iter().zip(&macs) {
            let d = &n["driver_info"];
            assert_eq!(n["driver"], "redfish", "{n}");
            assert!(
                d["redfish_address"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("https://{REDFISH_ADDR}:")),
                "{n}"
            );
            assert_eq!(
                d["redfish_system_id"],
                format!("/redfish/v1/Systems/{id}"),
                "{n}"
            );
            assert_eq!(d["redfish_verify_ca"], ca.display().to_string(), "{n}");
            assert_eq!(d["redfish_username"], USER, "{n}");
            assert_eq!(d["redfish_password"], PASSWORD, "{n}");
            // The IPMI run left persistent UEFI disk boot flags: boot_mode uefi.
            let mut p = props.clone();
            p["capabilities"] = json!("boot_mode:uefi");
            assert_eq!(n["properties"], p, "{n}");
            check_node(&bm, n, m);
        }
        for (_, name) in NOVA_BMCS {
            drive_nova_node(&lab, &bm, name);
        }
        drop(guards);
        drop(ovbmc);
    }
    drop(servers);
    eprintln!(
        "enroll: nova fleet of {} imported and driven over ipmi and redfish in {:.0} s",
        NOVA_BMCS.len(),
        t0.elapsed().as_secs_f64()
    );
}

/// The simulator fleet (no cloud): the file has no ports and no sizes, Ironic imports it and
/// drives each node's power and boot device over IPMI.
#[test]
#[ignore = "drives the Ironic lab with the rest of the machine quiet: scripts/test-all runs it after the parallel run"]
fn nodes_json_of_a_sim_fleet_is_enrolled_and_driven_by_ironic() {
    let Some(lab) = crate::ironic::lab() else {
        return;
    };
    let bm = Baremetal::find(&lab.ironic_url).expect("the Ironic lab's baremetal CLI");
    let dir = ScratchDir::new("enroll-sim");
    let pw = dir.write_secret("password", PASSWORD);
    let addrs: Vec<Ipv4Addr> = SIM_BMCS.iter().map(|(a, _)| *a).collect();
    let (ovbmc, cfg) = start(&dir, "sim", &addrs, |ports, _| {
        let mut t = format!(
            "[defaults]\nbackend = \"sim\"\nuser = \"{USER}\"\npassword_file = \"{}\"\n",
            pw.display()
        );
        for ((addr, name), port) in SIM_BMCS.iter().zip(ports) {
            t +=
                &format!("\n[[bmc]]\naddress = \"{addr}\"\nport = {port}\ninstance = \"{name}\"\n");
        }
        t
    });
    check_without_password(&cfg, "ipmi_password");
    let (doc, guards) = import(&lab, &bm, &cfg, &dir.path().join("nodes.json"));
    for n in doc["nodes"].as_array().unwrap() {
        assert!(n.get("ports").is_none(), "{n}");
        assert_eq!(n["properties"], json!({"cpu_arch": "x86_64"}), "{n}");
        check_node(&bm, n, &[]);
    }
    for (_, name) in SIM_BMCS {
        bm.ok(&["node", "manage", name, "--wait", "240"]);
        let n = bm.settled(name, "manage");
        assert_eq!(n["provision_state"], "manageable", "{name}: {n}");
        bm.power(name, true);
        bm.power(name, false);
        bm.power(name, true);
        bm.boot_device(name, "pxe");
        bm.boot_device(name, "disk");
    }
    drop(guards);
    drop(ovbmc);
}
