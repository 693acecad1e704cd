//! Per-address policy routing (`--routing auto`), in network namespaces this test makes:
//!
//! ```text
//!  client ns            router/switch ns                      BMC-host ns (ovbmc)
//!  eth0 203.0.113.10 -- pc 203.0.113.1 | br0 198.51.100.1 -+- p1 --- eth1 198.51.100.10
//!                                                           +- p2 --- eth2 198.51.100.11 (+ .12)
//! ```
//!
//! The switch drops a frame from p1 whose source is not eth1's address, and from p2 unless it
//! is eth2's (nftables, bridge family): what Neutron port security does. The BMC host's main
//! table sends everything out of eth1, so without ovbmc's routing the BMC at .11 never gets
//! its replies through; with `--routing auto` both answer. See `docs/deploy.md`.
//!
//! Needs root, iproute2 (`ip netns`), nftables and ipmitool. Otherwise it prints
//! `SKIP routing tier: <why>` and passes, unless `OVBMC_REQUIRE_LABS=1`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::fleet::FleetProc;
use crate::support::{PASSWORD, Ran, ScratchDir, USER, find_program, run, skip};

const TIER: &str = "routing tier";

fn labs_required() -> bool {
    std::env::var("OVBMC_REQUIRE_LABS").is_ok_and(|v| v == "1")
}

/// Why the lab cannot run here, if it cannot.
fn lab_blocker() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        return Some("needs root (network namespaces)".into());
    }
    for p in ["ip", "nft", "ipmitool"] {
        if find_program(p).is_none() {
            return Some(format!("{p} not installed"));
        }
    }
    None
}

/// Run a command; panic with its output unless it succeeds.
#[track_caller]
fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The three namespaces; deleted on drop (even when the test panics).
struct Lab {
    bmc: String,
    router: String,
    client: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.bmc, &self.router, &self.client] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Lab {
    fn new() -> Self {
        let tag = format!("ovbmc-{}", std::process::id());
        let lab = Self {
            bmc: format!("{tag}-bmc"),
            router: format!("{tag}-rtr"),
            client: format!("{tag}-cli"),
        };
        let (b, r, c) = (lab.bmc.as_str(), lab.router.as_str(), lab.client.as_str());
        for ns in [b, r, c] {
            // A leftover from a killed run of the same pid would make `add` fail.
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // veth pairs created straight into their namespaces, so names never clash with the
        // host's or another test run's.
        for (a, an, bside, bn) in [
            ("eth1", b, "p1", r),
            ("eth2", b, "p2", r),
            ("eth0", c, "pc", r),
        ] {
            sh(&[
                "ip", "link", "add", a, "netns", an, "type", "veth", "peer", "name", bside,
                "netns", bn,
            ]);
        }
        sh(&["ip", "-n", r, "link", "add", "br0", "type", "bridge"]);
        for p in ["p1", "p2"] {
            sh(&["ip", "-n", r, "link", "set", p, "master", "br0"]);
        }
        for i in ["p1", "p2", "pc", "br0"] {
            sh(&["ip", "-n", r, "link", "set", i, "up"]);
        }
        sh(&[
            "ip",
            "-n",
            r,
            "addr",
            "add",
            "198.51.100.1/24",
            "dev",
            "br0",
        ]);
        sh(&["ip", "-n", r, "addr", "add", "203.0.113.1/24", "dev", "pc"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        // Port security: each switch port accepts only its own NIC's addresses.
        let rules = "table bridge portsec {\n chain pre {\n  type filter hook prerouting priority 0; policy accept;\n  \
             iifname \"p1\" ether type ip ip saddr != 198.51.100.10 drop\n  \
             iifname \"p2\" ether type ip ip saddr != { 198.51.100.11, 198.51.100.12 } drop\n }\n}\n";
        let nft = Command::new("ip")
            .args(["netns", "exec", r, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut ch| {
                use std::io::Write;
                ch.stdin
                    .take()
                    .expect("stdin")
                    .write_all(rules.as_bytes())?;
                ch.wait()
            })
            .expect("run nft");
        assert!(nft.success(), "nft -f failed");
        // BMC host: each NIC answers ARP only for its own address (arp_ignore=1), as a VM
        // with one Neutron port per NIC does; no reverse-path filter on its side.
        for i in ["all", "default"] {
            for (k, v) in [
                ("rp_filter", "0"),
                ("arp_ignore", "1"),
                ("arp_announce", "2"),
            ] {
                sh(&[
                    "ip",
                    "netns",
                    "exec",
                    b,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv4.conf.{i}.{k}={v}"),
                ]);
            }
        }
        for (dev, addr) in [("eth1", "198.51.100.10/24"), ("eth2", "198.51.100.11/24")] {
            sh(&["ip", "-n", b, "link", "set", dev, "up"]);
            sh(&["ip", "-n", b, "addr", "add", addr, "dev", dev]);
        }
        // The main table's default route goes via eth1 only: the trap.
        sh(&[
            "ip",
            "-n",
            b,
            "route",
            "add",
            "default",
            "via",
            "198.51.100.1",
            "dev",
            "eth1",
        ]);
        sh(&["ip", "-n", c, "link", "set", "eth0", "up"]);
        sh(&[
            "ip",
            "-n",
            c,
            "addr",
            "add",
            "203.0.113.10/24",
            "dev",
            "eth0",
        ]);
        sh(&[
            "ip",
            "-n",
            c,
            "route",
            "add",
            "default",
            "via",
            "203.0.113.1",
        ]);
        lab
    }

    fn ovbmc(&self, dir: &ScratchDir, cfg: &Path, extra: &[&str], log: &str) -> FleetProc {
        let mut args = vec!["--config".to_string(), cfg.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        FleetProc::spawn(
            &["ip", "netns", "exec", &self.bmc].map(String::from),
            &args,
            dir.path().join(log),
        )
    }

    /// `ipmitool power status` from the client namespace, with short retries (a lost reply
    /// is the expected failure here; a pass needs one round trip per step).
    fn power_status(&self, addr: &str, pw: &Path) -> Ran {
        let args: Vec<String> = [
            "netns",
            "exec",
            &self.client,
            "ipmitool",
            "-I",
            "lanplus",
            "-H",
            addr,
            "-U",
            USER,
            "-f",
            &pw.display().to_string(),
            "-C",
            "17",
            "-N",
            "1",
            "-R",
            "3",
            "power",
            "status",
        ]
        .map(String::from)
        .to_vec();
        run(
            &find_program("ip").expect("ip"),
            &args,
            &[],
            Duration::from_secs(60),
        )
    }

    fn rules(&self) -> String {
        sh(&["ip", "-n", &self.bmc, "rule", "show"])
    }
}

fn config(dir: &ScratchDir, name: &str, pw: &Path, bmcs: &[(&str, Option<&str>)]) -> PathBuf {
    let mut s = format!(
        "[defaults]\nbackend = \"sim\"\npassword_file = \"{}\"\nsim_power_on_ms = 0\n\n\
         [routing]\nadd_address = true\n",
        pw.display()
    );
    for (i, (addr, iface)) in bmcs.iter().enumerate() {
        s.push_str(&format!(
            "\n[[bmc]]\naddress = \"{addr}\"\ninstance = \"n{i}\"\n"
        ));
        if let Some(ifc) = iface {
            s.push_str(&format!("interface = \"{ifc}\"\n"));
        }
    }
    let p = dir.path().join(name);
    fs::write(&p, s).expect("write config");
    p
}

#[test]
fn routing_auto_answers_from_every_nic() {
    if let Some(why) = lab_blocker() {
        if labs_required() {
            panic!("{TIER}: {why} and OVBMC_REQUIRE_LABS=1");
        }
        skip(TIER, &why);
        return;
    }
    let dir = ScratchDir::new("routing");
    let pw = dir.write_secret("pw", PASSWORD);
    let lab = Lab::new();
    let two = config(
        &dir,
        "two.toml",
        &pw,
        &[("198.51.100.10", None), ("198.51.100.11", None)],
    );
    let three = config(
        &dir,
        "three.toml",
        &pw,
        &[
            ("198.51.100.10", None),
            ("198.51.100.11", None),
            ("198.51.100.12", Some("eth2")),
        ],
    );

    // 1. Without ovbmc's routing: the reply from .11 leaves by eth1 and the switch drops it.
    {
        let mut p = lab.ovbmc(&dir, &two, &["--routing", "off"], "off.log");
        p.wait_log("serving", 1, Duration::from_secs(30))
            .unwrap_or_else(|l| panic!("{l}"));
        let ok = lab.power_status("198.51.100.10", &pw);
        assert!(ok.expect_success().contains("Chassis Power is off"), "{ok}");
        lab.power_status("198.51.100.11", &pw).expect_failure();
    }

    // 2. The dry run shows the rules without changing anything.
    let dry = run(
        &find_program("ip").expect("ip"),
        &[
            "netns",
            "exec",
            &lab.bmc,
            &crate::support::ovbmc_bin().display().to_string(),
            "routes",
            "--dry-run",
            "--config",
            &three.display().to_string(),
        ]
        .map(String::from),
        &[],
        Duration::from_secs(30),
    );
    let out = dry.expect_success();
    for want in [
        "ip addr add 198.51.100.12/24 dev eth2",
        "ip route add default via 198.51.100.1 dev eth2 table",
        "ip rule add from 198.51.100.11 table",
    ] {
        assert!(out.contains(want), "dry run lacks {want:?}:\n{dry}");
    }
    assert!(
        !lab.rules().contains("198.51.100.11"),
        "the dry run changed the rules"
    );

    // 3. With --routing auto (and --add-address for .12): every address answers.
    let mut p = lab.ovbmc(&dir, &three, &["--routing", "auto"], "auto.log");
    p.wait_log("serving", 1, Duration::from_secs(30))
        .unwrap_or_else(|l| panic!("{l}"));
    for addr in ["198.51.100.10", "198.51.100.11", "198.51.100.12"] {
        let r = lab.power_status(addr, &pw);
        assert!(
            r.expect_success().contains("Chassis Power is off"),
            "{addr}: {r}"
        );
    }
    let rules = lab.rules();
    assert!(rules.contains("from 198.51.100.11 lookup"), "{rules}");

    // 4. SIGTERM: the rules, routes and the added address go away again.
    p.signal("TERM");
    let st = p
        .wait_exit(Duration::from_secs(30))
        .expect("ovbmc did not exit on SIGTERM");
    assert!(st.success(), "exit {st}:\n{}", p.log());
    let rules = lab.rules();
    assert!(
        !rules.contains("198.51.100."),
        "rules left behind:\n{rules}"
    );
    let addrs = sh(&["ip", "-n", &lab.bmc, "addr", "show", "dev", "eth2"]);
    assert!(
        !addrs.contains("198.51.100.12"),
        "added address left behind:\n{addrs}"
    );
    assert!(
        addrs.contains("198.51.100.11"),
        "a pre-existing address was removed:\n{addrs}"
    );
}
