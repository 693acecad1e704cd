//! Per-address policy routing (`--routing auto` over netlink, `--routing ip` over iproute2),
//! in network namespaces this test makes:
//!
//! ```text
//!  client ns              router/switch ns                        BMC-host ns (ovbmc)
//!  eth0 203.0.113.10 --- pc 203.0.113.1 | br0 198.51.100.1 -+- p1 --- eth1 198.51.100.10
//!       2001:db8:2::10      2001:db8:2::1 |   2001:db8:1::1   |         2001:db8:1::10
//!                                                            +- p2 --- eth2 198.51.100.11 (+ .12)
//!                                                                      2001:db8:1::11
//! ```
//!
//! The switch drops a frame from p1 whose source is not eth1's address, and from p2 unless it
//! is eth2's (nftables, bridge family): what Neutron port security does. The BMC host's main
//! tables send everything out of eth1, so without ovbmc's routing the BMCs at .11 and
//! 2001:db8:1::11 never get their replies through; with `--routing auto` all answer. It also
//! checks that entries already on the host are neither duplicated nor removed, that a reload
//! with the same fleet changes nothing, and that after SIGTERM the host's addresses, rules and
//! routes are exactly as before. A second, flat topology (one bridge, no router) checks
//! layout B with a subnet per port: the IPMI addresses outside the provisioning subnet, each
//! added by ovbmc with a prefix that covers the undercloud, answer through their own NICs
//! ([`Lab::subnet_per_port`]). See `docs/deploy.md`.
//!
//! Needs root, iproute2 (`ip netns`), nftables and ipmitool. Otherwise it prints
//! `SKIP routing tier: <why>` and passes, unless `OVBMC_REQUIRE_LABS=1`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::fleet::FleetProc;
use crate::support::{PASSWORD, Ran, ScratchDir, USER, find_program, run, sh, skip};

const TIER: &str = "routing tier";

fn labs_required() -> bool {
    std::env::var("OVBMC_REQUIRE_LABS").is_ok_and(|v| v == "1")
}

/// Whether the namespace lab can run here; if not, says SKIP with the reason (or fails the
/// test when OVBMC_REQUIRE_LABS=1).
fn lab_ready() -> bool {
    let Some(why) = lab_blocker() else {
        return true;
    };
    if labs_required() {
        panic!("{TIER}: {why} and OVBMC_REQUIRE_LABS=1");
    }
    skip(TIER, &why);
    false
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
    /// The three namespaces, empty but for `lo`.
    fn namespaces() -> Self {
        // Pid and a per-process counter: the tests of this file run in parallel in one
        // process, each with its own lab.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("ovbmc-{}-{n}", std::process::id());
        let lab = Self {
            bmc: format!("{tag}-bmc"),
            router: format!("{tag}-rtr"),
            client: format!("{tag}-cli"),
        };
        for ns in [&lab.bmc, &lab.router, &lab.client] {
            // A leftover from a killed run of the same pid would make `add` fail.
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// Load an nftables ruleset into the switch namespace.
    fn nft(&self, rules: &str) {
        let nft = Command::new("ip")
            .args(["netns", "exec", &self.router, "nft", "-f", "-"])
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
    }

    /// BMC host: each NIC answers ARP only for its own address (arp_ignore=1), as a VM with
    /// one Neutron port per NIC does; no reverse-path filter on its side.
    fn bmc_sysctls(&self) {
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
                    &self.bmc,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv4.conf.{i}.{k}={v}"),
                ]);
            }
        }
    }

    fn new() -> Self {
        let lab = Self::namespaces();
        let (b, r, c) = (lab.bmc.as_str(), lab.router.as_str(), lab.client.as_str());
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
        // IPv6 addresses skip duplicate address detection (`nodad`): a tentative address
        // cannot be used for a second or more, and nothing else is on these links.
        for (addr, dev) in [("2001:db8:1::1/64", "br0"), ("2001:db8:2::1/64", "pc")] {
            sh(&[
                "ip", "-n", r, "-6", "addr", "add", addr, "dev", dev, "nodad",
            ]);
        }
        for k in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            sh(&["ip", "netns", "exec", r, "sysctl", "-qw", k]);
        }
        // Port security: each switch port accepts only its own NIC's addresses (and, for
        // IPv6, link-local ones, which neighbour discovery uses; Neutron allows them too).
        let rules = "table bridge portsec {\n chain pre {\n  type filter hook prerouting priority 0; policy accept;\n  \
             iifname \"p1\" ether type ip ip saddr != 198.51.100.10 drop\n  \
             iifname \"p2\" ether type ip ip saddr != { 198.51.100.11, 198.51.100.12 } drop\n  \
             iifname \"p1\" ether type ip6 ip6 saddr != { 2001:db8:1::10, fe80::/10 } drop\n  \
             iifname \"p2\" ether type ip6 ip6 saddr != { 2001:db8:1::11, fe80::/10 } drop\n }\n}\n";
        lab.nft(rules);
        lab.bmc_sysctls();
        for (dev, addr, addr6) in [
            ("eth1", "198.51.100.10/24", "2001:db8:1::10/64"),
            ("eth2", "198.51.100.11/24", "2001:db8:1::11/64"),
        ] {
            sh(&["ip", "-n", b, "link", "set", dev, "up"]);
            sh(&["ip", "-n", b, "addr", "add", addr, "dev", dev]);
            sh(&[
                "ip", "-n", b, "-6", "addr", "add", addr6, "dev", dev, "nodad",
            ]);
        }
        // The main tables' default routes go via eth1 only: the trap.
        for (fam, gw) in [("-4", "198.51.100.1"), ("-6", "2001:db8:1::1")] {
            sh(&[
                "ip", "-n", b, fam, "route", "add", "default", "via", gw, "dev", "eth1",
            ]);
        }
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
        sh(&[
            "ip",
            "-n",
            c,
            "-6",
            "addr",
            "add",
            "2001:db8:2::10/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        sh(&[
            "ip",
            "-n",
            c,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:2::1",
        ]);
        lab
    }

    /// Layout B with a subnet per port (docs/deploy.md): one L2 network, no router. The BMC
    /// VM's own port eth1 is on the provisioning subnet (192.0.2.10/24); eth2 and eth3 are the
    /// ports of 192.0.3.5 and 192.0.3.9, each on a /30 subnet of its own outside it, and come
    /// with no address (ovbmc adds them, with a /16 prefix that covers the undercloud). The
    /// undercloud (the client namespace, 192.0.2.2/24) has the on-link route 192.0.3.0/24 dev
    /// eth0. The switch keeps port security: each port passes only its own address.
    ///
    /// ```text
    ///  BMC VM ns                      switch ns              undercloud ns
    ///  eth1 192.0.2.10/24 ----- p1 -+
    ///  eth2 (192.0.3.5)   ----- p2 -+- br0 -+- pu ----- eth0 192.0.2.2/24
    ///  eth3 (192.0.3.9)   ----- p3 -+                          192.0.3.0/24 dev eth0
    /// ```
    fn subnet_per_port() -> Self {
        let lab = Self::namespaces();
        let (b, r, c) = (lab.bmc.as_str(), lab.router.as_str(), lab.client.as_str());
        // IPv4 only: without IPv6 no link-local addresses and routes come and go after the
        // links are up, so two snapshots of the BMC host compare equal.
        for k in ["all", "default"] {
            sh(&[
                "ip",
                "netns",
                "exec",
                b,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{k}.disable_ipv6=1"),
            ]);
        }
        for (a, an, bside, bn) in [
            ("eth1", b, "p1", r),
            ("eth2", b, "p2", r),
            ("eth3", b, "p3", r),
            ("eth0", c, "pu", r),
        ] {
            sh(&[
                "ip", "link", "add", a, "netns", an, "type", "veth", "peer", "name", bside,
                "netns", bn,
            ]);
        }
        sh(&["ip", "-n", r, "link", "add", "br0", "type", "bridge"]);
        for p in ["p1", "p2", "p3", "pu"] {
            sh(&["ip", "-n", r, "link", "set", p, "master", "br0"]);
            sh(&["ip", "-n", r, "link", "set", p, "up"]);
        }
        sh(&["ip", "-n", r, "link", "set", "br0", "up"]);
        lab.nft(
            "table bridge portsec {\n chain pre {\n  type filter hook prerouting priority 0; policy accept;\n  \
             iifname \"p1\" ether type ip ip saddr != 192.0.2.10 drop\n  \
             iifname \"p2\" ether type ip ip saddr != 192.0.3.5 drop\n  \
             iifname \"p3\" ether type ip ip saddr != 192.0.3.9 drop\n }\n}\n",
        );
        lab.bmc_sysctls();
        for dev in ["eth1", "eth2", "eth3"] {
            sh(&["ip", "-n", b, "link", "set", dev, "up"]);
        }
        sh(&["ip", "-n", b, "addr", "add", "192.0.2.10/24", "dev", "eth1"]);
        sh(&["ip", "-n", c, "link", "set", "eth0", "up"]);
        // A veth's carrier (its operstate in the snapshot) follows its peer's a moment later.
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while sh(&["ip", "-n", b, "-br", "link", "show"]).contains("DOWN") {
            assert!(
                std::time::Instant::now() < end,
                "the BMC host's links stay down"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sh(&["ip", "-n", c, "addr", "add", "192.0.2.2/24", "dev", "eth0"]);
        sh(&["ip", "-n", c, "route", "add", "192.0.3.0/24", "dev", "eth0"]);
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

    /// Both families' rules.
    fn rules(&self) -> String {
        let b = self.bmc.as_str();
        sh(&["ip", "-n", b, "-4", "rule", "show"]) + &sh(&["ip", "-n", b, "-6", "rule", "show"])
    }

    /// Everything policy routing can touch on the BMC host: addresses, rules, every table of
    /// both families. Two snapshots are equal iff nothing was left behind or taken away.
    fn snapshot(&self) -> String {
        let b = self.bmc.as_str();
        let mut s = self.rules();
        for fam in ["-4", "-6"] {
            s += &sh(&["ip", "-n", b, fam, "route", "show", "table", "all"]);
        }
        s + &sh(&["ip", "-n", b, "-br", "addr", "show"])
    }

    /// The rules and every table but `local` (whose link-local entries come and go with
    /// IPv6 autoconfiguration): what `ovbmc routes apply|remove` may change.
    fn policy(&self) -> String {
        let b = self.bmc.as_str();
        let mut s = self.rules();
        for fam in ["-4", "-6"] {
            let all = sh(&["ip", "-n", b, fam, "route", "show", "table", "all"]);
            for l in all.lines().filter(|l| !l.contains("table local")) {
                s += l;
                s.push('\n');
            }
        }
        s
    }

    /// Run an `ip` command (as `ovbmc routes --dry-run` prints it) in the BMC host.
    fn ip(&self, command: &str) {
        let mut args = vec!["ip", "-n", &self.bmc];
        args.extend(command.split_whitespace().skip(1));
        sh(&args);
    }

    /// Start ovbmc with `--routing mode`, check every BMC answers, reload with the same fleet
    /// (which must change nothing), stop it with SIGTERM; returns its log.
    fn serve_all(&self, dir: &ScratchDir, cfg: &Path, pw: &Path, mode: &str) -> String {
        let mut p = self.ovbmc(dir, cfg, &["--routing", mode], &format!("{mode}.log"));
        p.wait_log("serving", 1, Duration::from_secs(30))
            .unwrap_or_else(|l| panic!("{l}"));
        for addr in ALL {
            let r = self.power_status(addr, pw);
            assert!(
                r.expect_success().contains("Chassis Power is off"),
                "--routing {mode}: {addr}: {r}"
            );
        }
        let once = self.rules();
        for addr in ALL {
            assert_eq!(
                once.matches(&format!("from {addr} lookup")).count(),
                1,
                "--routing {mode}: one rule for {addr}:\n{once}"
            );
        }
        // A reload with the same fleet: the rules and routes stay exactly as they are.
        let tables = self.snapshot();
        p.signal("HUP");
        p.wait_log("reload: ", 1, Duration::from_secs(30))
            .unwrap_or_else(|l| panic!("{l}"));
        assert_eq!(
            self.snapshot(),
            tables,
            "--routing {mode}: the reload changed routing"
        );
        let r = self.power_status("198.51.100.11", pw);
        assert!(r.success(), "--routing {mode}: after the reload: {r}");

        p.signal("TERM");
        let st = p
            .wait_exit(Duration::from_secs(30))
            .expect("ovbmc did not exit on SIGTERM");
        let log = p.log();
        assert!(st.success(), "--routing {mode}: exit {st}:\n{log}");
        assert!(!log.contains("could not undo"), "--routing {mode}:\n{log}");
        log
    }
}

/// Every BMC address of the three-BMC fleet (and the IPv6 pair).
const ALL: [&str; 5] = [
    "198.51.100.10",
    "198.51.100.11",
    "198.51.100.12",
    "2001:db8:1::10",
    "2001:db8:1::11",
];

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

/// Four BMCs, an IPv4 and an IPv6 address on each of the lab's two NICs' subnets, no hints.
const TWO_NIC_BMCS: &[(&str, Option<&str>)] = &[
    ("198.51.100.10", None),
    ("198.51.100.11", None),
    ("2001:db8:1::10", None),
    ("2001:db8:1::11", None),
];

#[test]
fn routing_auto_answers_from_every_nic() {
    if !lab_ready() {
        return;
    }
    let dir = ScratchDir::new("routing");
    let pw = dir.write_secret("pw", PASSWORD);
    let lab = Lab::new();
    let two = config(&dir, "two.toml", &pw, TWO_NIC_BMCS);
    let three = config(
        &dir,
        "three.toml",
        &pw,
        &[
            ("198.51.100.10", None),
            ("198.51.100.11", None),
            ("198.51.100.12", Some("eth2")),
            ("2001:db8:1::10", None),
            ("2001:db8:1::11", None),
        ],
    );

    // 1. Without ovbmc's routing: the replies from the second NIC's addresses leave by eth1
    //    and the switch drops them.
    {
        let mut p = lab.ovbmc(&dir, &two, &["--routing", "off"], "off.log");
        p.wait_log("serving", 1, Duration::from_secs(30))
            .unwrap_or_else(|l| panic!("{l}"));
        for ok in ["198.51.100.10", "2001:db8:1::10"] {
            let r = lab.power_status(ok, &pw);
            assert!(r.expect_success().contains("Chassis Power is off"), "{r}");
        }
        lab.power_status("198.51.100.11", &pw).expect_failure();
        lab.power_status("2001:db8:1::11", &pw).expect_failure();
    }

    // 2. The dry run (which reads the host over netlink) shows the rules without changing
    //    anything.
    let pristine = lab.snapshot();
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
        "ip -6 route add default via 2001:db8:1::1 dev eth2 table",
        "ip -6 rule add from 2001:db8:1::11 table",
    ] {
        assert!(out.contains(want), "dry run lacks {want:?}:\n{dry}");
    }
    assert_eq!(lab.snapshot(), pristine, "the dry run changed the host");

    // 3. Entries already on the host (an operator's, or a run killed with SIGKILL): the rule
    //    and default route for .10, exactly as ovbmc would add them. ovbmc must use them, not
    //    add a second copy, and leave them in place at exit.
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("dry run lacks {prefix:?}:\n{out}"))
            .to_string()
    };
    let existing = [
        line("ip route add default via 198.51.100.1 dev eth1 table"),
        line("ip rule add from 198.51.100.10 table"),
    ];
    for c in &existing {
        lab.ip(c);
    }
    let before = lab.snapshot();

    // 4. --routing auto (netlink; --add-address for .12 from the file): every address
    //    answers; SIGTERM puts the host back exactly as it was, pre-existing entries included.
    let log = lab.serve_all(&dir, &three, &pw, "auto");
    assert!(log.contains("serving"), "{log}");
    assert_eq!(
        lab.snapshot(),
        before,
        "--routing auto left the host changed:\n{log}"
    );

    // 5. The same with the iproute2 fallback, from a host without the pre-existing entries.
    for c in existing.iter().rev() {
        lab.ip(&c.replacen(" add ", " del ", 1));
    }
    assert_eq!(lab.snapshot(), pristine);
    lab.serve_all(&dir, &three, &pw, "ip");
    assert_eq!(
        lab.snapshot(),
        pristine,
        "--routing ip left the host changed"
    );
}

/// `ovbmc routes apply|remove`: the one-shot commands install what `--routing auto` would, so
/// a daemon with `--routing off` (and no CAP_NET_ADMIN) answers from every NIC; a second apply
/// changes nothing; remove takes the rules and routes away and nothing else.
#[test]
fn routes_apply_remove_one_shot() {
    if !lab_ready() {
        return;
    }
    let dir = ScratchDir::new("routing-oneshot");
    let pw = dir.write_secret("pw", PASSWORD);
    let lab = Lab::new();
    // No address to add: `remove` leaves addresses alone, so the host must end as it began.
    let two = config(&dir, "two.toml", &pw, TWO_NIC_BMCS);
    let routes = |verb: &str, caps: bool| {
        let bin = crate::support::ovbmc_bin().display().to_string();
        let cfg = two.display().to_string();
        let mut args: Vec<String> = ["netns", "exec", &lab.bmc].map(String::from).to_vec();
        if !caps {
            // Drop CAP_NET_ADMIN even for root: what an unprivileged unit has.
            args.extend(
                ["setpriv", "--inh-caps=-all", "--bounding-set=-net_admin"].map(String::from),
            );
        }
        args.extend([bin, "routes".into(), verb.into(), "--config".into(), cfg]);
        run(
            &find_program("ip").expect("ip"),
            &args,
            &[],
            Duration::from_secs(30),
        )
    };
    let pristine = lab.policy();

    // Without CAP_NET_ADMIN: a clear refusal, and the host unchanged.
    if find_program("setpriv").is_some() {
        let r = routes("apply", false);
        r.expect_failure();
        assert!(r.stderr.contains("CAP_NET_ADMIN"), "{r}");
        assert_eq!(lab.policy(), pristine, "a refused apply changed the host");
    }

    let first = routes("apply", true);
    let out = first.expect_success();
    assert!(
        out.contains("ip rule add from 198.51.100.11 table"),
        "{first}"
    );
    let applied = lab.policy();
    let rules = lab.rules();
    for addr in [
        "198.51.100.10",
        "198.51.100.11",
        "2001:db8:1::10",
        "2001:db8:1::11",
    ] {
        assert_eq!(
            rules.matches(&format!("from {addr} lookup")).count(),
            1,
            "one rule for {addr}:\n{rules}"
        );
    }
    let second = routes("apply", true);
    assert!(second.expect_success().contains(" 0 added"), "{second}");
    assert_eq!(lab.policy(), applied, "a second apply changed the host");

    // The daemon with routing off answers from both NICs thanks to the applied rules.
    {
        let mut p = lab.ovbmc(&dir, &two, &["--routing", "off"], "oneshot.log");
        p.wait_log("serving", 1, Duration::from_secs(30))
            .unwrap_or_else(|l| panic!("{l}"));
        for addr in [
            "198.51.100.10",
            "198.51.100.11",
            "2001:db8:1::10",
            "2001:db8:1::11",
        ] {
            let r = lab.power_status(addr, &pw);
            assert!(
                r.expect_success().contains("Chassis Power is off"),
                "{addr}: {r}"
            );
        }
    }
    assert_eq!(lab.policy(), applied, "--routing off touched the routing");

    let rm = routes("remove", true);
    rm.expect_success();
    assert_eq!(
        lab.policy(),
        pristine,
        "remove left the host changed:\n{rm}"
    );
    let again = routes("remove", true);
    assert!(again.expect_success().contains(" 0 removed"), "{again}");
    assert_eq!(lab.policy(), pristine);
}

/// Layout B with a subnet per port, the routing recipe of docs/deploy.md end to end: ovbmc
/// adds each IPMI address on its own NIC with a prefix covering the undercloud (`interface`,
/// `prefix = 16`, `add_address`), and `--routing auto` gives each NIC a table with that
/// on-link route, so the replies leave by the NIC they came in on. Without ovbmc's routing
/// they leave by eth1 (the provisioning subnet's more specific route) and the switch drops
/// them. At exit the host is as before.
#[test]
fn subnet_per_port_answers_with_on_link_routes() {
    if !lab_ready() {
        return;
    }
    let dir = ScratchDir::new("routing-subnet-per-port");
    let pw = dir.write_secret("pw", PASSWORD);
    let lab = Lab::subnet_per_port();
    let mut text = format!(
        "[defaults]\nbackend = \"sim\"\npassword_file = \"{}\"\nsim_power_on_ms = 0\n\n\
         [routing]\nadd_address = true\n",
        pw.display()
    );
    for (i, (addr, dev)) in [("192.0.3.5", "eth2"), ("192.0.3.9", "eth3")]
        .iter()
        .enumerate()
    {
        text.push_str(&format!(
            "\n[[bmc]]\naddress = \"{addr}\"\ninstance = \"n{i}\"\ninterface = \"{dev}\"\n\
             prefix = 16\n"
        ));
    }
    let cfg = dir.path().join("fleet.toml");
    fs::write(&cfg, text).expect("write config");
    let pristine = lab.snapshot();

    // Without ovbmc's routing (the addresses added by hand, as add_address would): no answer.
    for (addr, dev) in [("192.0.3.5", "eth2"), ("192.0.3.9", "eth3")] {
        lab.ip(&format!("ip addr add {addr}/16 dev {dev}"));
    }
    {
        let mut p = lab.ovbmc(&dir, &cfg, &["--routing", "off"], "off.log");
        p.wait_log("serving", 1, Duration::from_secs(30))
            .unwrap_or_else(|l| panic!("{l}"));
        lab.power_status("192.0.3.5", &pw).expect_failure();
        lab.power_status("192.0.3.9", &pw).expect_failure();
    }
    for (addr, dev) in [("192.0.3.5", "eth2"), ("192.0.3.9", "eth3")] {
        lab.ip(&format!("ip addr del {addr}/16 dev {dev}"));
    }
    assert_eq!(lab.snapshot(), pristine);

    // --routing auto: ovbmc adds the addresses and the tables; both answer.
    let mut p = lab.ovbmc(&dir, &cfg, &["--routing", "auto"], "auto.log");
    p.wait_log("serving", 1, Duration::from_secs(30))
        .unwrap_or_else(|l| panic!("{l}"));
    for addr in ["192.0.3.5", "192.0.3.9"] {
        let r = lab.power_status(addr, &pw);
        assert!(
            r.expect_success().contains("Chassis Power is off"),
            "{addr}: {r}\n{}",
            p.log()
        );
    }
    let rules = lab.rules();
    for addr in ["192.0.3.5", "192.0.3.9"] {
        assert_eq!(
            rules.matches(&format!("from {addr} lookup")).count(),
            1,
            "one rule for {addr}:\n{rules}"
        );
    }
    for l in p.log().lines().filter(|l| l.contains("WARN")) {
        println!("{l}");
    }
    p.signal("TERM");
    let st = p
        .wait_exit(Duration::from_secs(30))
        .expect("ovbmc did not exit on SIGTERM");
    assert!(st.success(), "exit {st}:\n{}", p.log());
    assert_eq!(lab.snapshot(), pristine, "the host was left changed");
}
