//! The container image (`packaging/Containerfile`), built with podman and run the way
//! docs/deploy.md runs it: host network, all capabilities dropped but NET_BIND_SERVICE and
//! NET_ADMIN, the password file mounted read-only. Real `ipmitool -I lanplus -C 17` talks to
//! the ovbmc inside.
//!
//! The image is built from this test run's own ovbmc binary by `scripts/container-image`
//! (the Containerfile's `prebuilt` stage on a Debian 12 base made with debootstrap, since no
//! registry is reachable here; `scripts/test-all` makes that base before `cargo test`, so the
//! build here takes seconds).
//!
//! Needs root (rootful podman), podman with runc, debootstrap and ipmitool. Otherwise it prints
//! `SKIP container: <why>` and passes, unless `OVBMC_REQUIRE_LABS=1` or
//! `OVBMC_REQUIRE_CONTAINER=1`, which make it fail.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    CLIENT_TIMEOUT, PASSWORD, Ran, ScratchDir, USER, assert_contains, find_program,
    get_channel_auth_caps_request, run, skip, unique_loopback,
};

const TIER: &str = "container";

/// The image tag the tests build (rebuilt each run from the binary under test).
const IMAGE: &str = "localhost/ovbmc:it-test";

/// The uid/gid the image runs as (`packaging/Containerfile`).
const IMAGE_UID: u32 = 623;

/// CAP_NET_BIND_SERVICE (10) and CAP_NET_ADMIN (12), as /proc/PID/status prints a capability
/// set (linux/capability.h).
const EXPECTED_CAPS: &str = "0000000000001400";

/// A cold build debootstraps Debian first (about 90 s here, more on a slow mirror).
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// How long the container may take to answer after `podman run`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

fn required() -> bool {
    ["OVBMC_REQUIRE_LABS", "OVBMC_REQUIRE_CONTAINER"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| v == "1"))
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

/// podman's command line and environment for these machines (../shared/docs/containers.md):
/// runc instead of crun, and a containers.conf without default ulimits.
struct Podman {
    program: PathBuf,
    runtime: String,
    conf: PathBuf,
    /// Holds `conf` when the test wrote it.
    _dir: Option<ScratchDir>,
}

impl Podman {
    fn new(program: PathBuf) -> Self {
        let runtime = std::env::var("OVBMC_OCI_RUNTIME").unwrap_or_else(|_| "runc".into());
        match std::env::var_os("CONTAINERS_CONF") {
            Some(conf) => Self {
                program,
                runtime,
                conf: conf.into(),
                _dir: None,
            },
            None => {
                let dir = ScratchDir::new("podman");
                let conf = dir.path().join("containers.conf");
                fs::write(&conf, "[containers]\ndefault_ulimits = []\n")
                    .expect("write containers.conf");
                Self {
                    program,
                    runtime,
                    conf,
                    _dir: Some(dir),
                }
            }
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.env("CONTAINERS_CONF", &self.conf)
            .arg("--runtime")
            .arg(&self.runtime)
            .stdin(Stdio::null());
        c
    }

    /// Run `podman ARGS`; stdout on success, or the error output.
    fn output(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .cmd()
            .args(args)
            .output()
            .map_err(|e| format!("podman {}: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "podman {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// What the tier needs: podman and ipmitool, or `None` after a SKIP line (a panic when
/// required).
fn setup() -> Option<(Podman, PathBuf)> {
    let blocker = if !is_root() {
        Some("needs root (rootful podman)".to_string())
    } else {
        ["podman", "ipmitool", "debootstrap"]
            .into_iter()
            .find(|p| find_program(p).is_none())
            .map(|p| format!("{p} not installed"))
    };
    if let Some(why) = blocker {
        assert!(
            !required(),
            "{TIER}: {why}, and OVBMC_REQUIRE_LABS=1 or OVBMC_REQUIRE_CONTAINER=1"
        );
        skip(TIER, &why);
        return None;
    }
    let podman = Podman::new(find_program("podman").expect("podman"));
    Some((podman, find_program("ipmitool").expect("ipmitool")))
}

/// Build [`IMAGE`] once per test process (tests of this module share it).
fn image(podman: &Podman) -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/container-image");
        let args = [
            "--binary".to_string(),
            env!("CARGO_BIN_EXE_ovbmc").to_string(),
            "--tag".to_string(),
            IMAGE.to_string(),
        ];
        let conf = podman.conf.display().to_string();
        let ran = run(
            &script,
            &args,
            &[
                ("CONTAINERS_CONF", conf.as_str()),
                ("OVBMC_OCI_RUNTIME", podman.runtime.as_str()),
            ],
            BUILD_TIMEOUT,
        );
        if ran.success() {
            Ok(())
        } else {
            Err(ran.to_string())
        }
    });
    if let Err(e) = built {
        panic!("building the image failed:\n{e}");
    }
    IMAGE
}

/// A container started with `podman run -d`; removed (`podman rm -f`) on drop, so a failing
/// test leaves nothing running. Its log is printed when the test failed.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl<'a> Container<'a> {
    /// `podman run -d --name NAME <run_args> IMAGE <ovbmc_args>`.
    fn run(podman: &'a Podman, run_args: &[&str], ovbmc_args: &[String]) -> Self {
        static NEXT: Mutex<u32> = Mutex::new(0);
        let n = {
            let mut n = NEXT.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        let name = format!("ovbmc-it-{}-{n}", std::process::id());
        // A leftover of a killed run with the same pid would make the name clash.
        let _ = podman.output(&["rm", "-f", "--time", "0", &name]);
        let image = image(podman);
        let mut args = vec!["run", "-d", "--name", &name];
        args.extend_from_slice(run_args);
        args.push(image);
        args.extend(ovbmc_args.iter().map(String::as_str));
        let result = podman.output(&args);
        let c = Self {
            podman,
            name: name.clone(),
        };
        if let Err(e) = result {
            panic!("{e}");
        }
        c
    }

    fn inspect(&self, format: &str) -> String {
        self.podman
            .output(&["inspect", "--format", format, &self.name])
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    fn logs(&self) -> String {
        let out = self
            .podman
            .cmd()
            .args(["logs", &self.name])
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            });
        out.unwrap_or_else(|e| format!("(podman logs: {e})"))
    }

    /// /proc/PID/status of the container's ovbmc, as the host sees it (no user namespace: the
    /// ids are the real ones).
    fn proc_status(&self) -> String {
        let pid = self.inspect("{{.State.Pid}}");
        fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/status of {}: {e}", self.name))
    }

    /// Wait until ovbmc answers a session-less Get Channel Authentication Capabilities at
    /// `target`; panic (with the container's log) if the container stops or time runs out.
    fn wait_ready(&self, target: SocketAddr) {
        let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind probe");
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set_read_timeout");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let request = get_channel_auth_caps_request(0x04);
        loop {
            let _ = probe.send_to(&request, target);
            let mut buf = [0u8; 512];
            if let Ok((n, from)) = probe.recv_from(&mut buf)
                && from == target
                && n > 0
            {
                return;
            }
            assert!(
                self.running(),
                "the container stopped before answering on {target}"
            );
            assert!(
                Instant::now() < deadline,
                "no answer on {target} within {STARTUP_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `podman stop` (SIGTERM, then SIGKILL after `grace`); the exit code.
    fn stop(&self, grace: Duration) -> String {
        let _ = self
            .podman
            .output(&["stop", "--time", &grace.as_secs().to_string(), &self.name]);
        self.inspect("{{.State.ExitCode}}")
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- container {} log ---\n{}--- end of container log ---",
                self.name,
                self.logs()
            );
        }
        let _ = self.podman.output(&["rm", "-f", "--time", "0", &self.name]);
    }
}

/// The password file for the container: read-only, owned by the image's user (a bind-mounted
/// file keeps its host owner and mode, and ovbmc runs as uid 623 in there).
fn container_password_file(dir: &ScratchDir) -> PathBuf {
    let p = dir.write_secret("ipmi-password", PASSWORD);
    std::os::unix::fs::chown(&p, Some(IMAGE_UID), Some(IMAGE_UID))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
    p
}

fn ipmitool(tool: &Path, addr: Ipv4Addr, port: u16, pwfile: &Path, cmd: &[&str]) -> Ran {
    let mut args: Vec<String> = ["-I", "lanplus", "-H"].map(String::from).to_vec();
    args.push(addr.to_string());
    args.extend(["-p".to_string(), port.to_string(), "-U".into(), USER.into()]);
    args.extend(["-f".to_string(), pwfile.display().to_string()]);
    args.extend(["-C", "17"].map(String::from));
    args.extend(cmd.iter().map(|s| s.to_string()));
    run(tool, &args, &[], CLIENT_TIMEOUT)
}

/// The value of a `Key:\tvalue` line of /proc/PID/status.
fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in /proc/PID/status:\n{status}"))
        .trim()
}

/// The documented run line, on the host network, port 623 of a loopback address (binding a
/// port below 1024 as a non-root user is what the file capability is for): ipmitool reads
/// and changes power and the boot device, and the process inside is uid 623 with exactly the
/// two capabilities.
#[test]
fn image_answers_ipmitool_as_non_root_with_two_capabilities() {
    let Some((podman, ipmitool_bin)) = setup() else {
        return;
    };
    let dir = ScratchDir::new("container");
    let secret = container_password_file(&dir);
    let client_pw = dir.write_secret("client-password", PASSWORD);
    let addr = unique_loopback();
    let port = 623;
    let mount = format!("{}:/etc/ovbmc/ipmi-password:ro", secret.display());
    let ovbmc_args: Vec<String> = [
        "--backend",
        "sim",
        "--bind",
        &addr.to_string(),
        "--port",
        &port.to_string(),
        "--instance",
        "it-container",
        "--user",
        USER,
        "--password-file",
        "/etc/ovbmc/ipmi-password",
        "--sim-initial-power",
        "off",
        "--sim-power-on-ms",
        "0",
        "--sim-power-off-ms",
        "0",
    ]
    .map(String::from)
    .to_vec();
    let c = Container::run(
        &podman,
        &[
            "--network=host",
            "--cap-drop=all",
            "--cap-add=NET_BIND_SERVICE",
            "--cap-add=NET_ADMIN",
            "-v",
            &mount,
        ],
        &ovbmc_args,
    );
    c.wait_ready(SocketAddr::from((addr, port)));

    // Not root, and only the two capabilities (effective, permitted and bounding).
    let status = c.proc_status();
    for key in ["Uid", "Gid"] {
        let ids: Vec<&str> = status_field(&status, key).split_whitespace().collect();
        assert!(
            ids.iter().all(|id| *id == IMAGE_UID.to_string()),
            "{key} of ovbmc in the container is {ids:?}, expected all {IMAGE_UID}"
        );
    }
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            status_field(&status, key),
            EXPECTED_CAPS,
            "{key} of ovbmc in the container"
        );
    }

    let ipmi = |cmd: &[&str]| ipmitool(&ipmitool_bin, addr, port, &client_pw, cmd);
    assert_contains(&ipmi(&["power", "status"]), "Chassis Power is off");
    assert_contains(&ipmi(&["power", "on"]), "Chassis Power Control: Up/On");
    assert_contains(&ipmi(&["power", "status"]), "Chassis Power is on");
    assert_contains(
        &ipmi(&["chassis", "bootdev", "pxe"]),
        "Set Boot Device to pxe",
    );
    assert_contains(&ipmi(&["chassis", "bootparam", "get", "5"]), "Force PXE");
    // A wrong password is refused by the containerised BMC too (the mounted file is the one
    // it uses).
    let wrong = dir.write_secret("wrong-password", "not-the-password");
    ipmitool(&ipmitool_bin, addr, port, &wrong, &["power", "status"]).expect_failure();

    // SIGTERM ends it cleanly (exit 0) well within podman's grace period.
    assert_eq!(
        c.stop(Duration::from_secs(20)),
        "0",
        "exit code after podman stop"
    );
}

/// A network namespace this test made; deleted on drop.
struct NetNs(String);

impl NetNs {
    /// A namespace with one NIC, `addr`/24 on it and a default route via `.1`: enough
    /// for `--routing auto` to find the BMC address's interface and gateway.
    fn with_one_nic(name: String, addr: Ipv4Addr) -> Self {
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ns = Self(name);
        let o = addr.octets();
        let gateway = Ipv4Addr::new(o[0], o[1], o[2], 1).to_string();
        let cidr = format!("{addr}/24");
        let n = ns.0.as_str();
        for args in [
            &["netns", "add", n][..],
            &["-n", n, "link", "set", "lo", "up"],
            // A veth pair with both ends in the namespace (the kernels here lack `dummy`).
            &[
                "-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
            ],
            &["-n", n, "addr", "add", &cidr, "dev", "eth0"],
            &["-n", n, "link", "set", "eth0p", "up"],
            &["-n", n, "link", "set", "eth0", "up"],
            &[
                "-n", n, "route", "add", "default", "via", &gateway, "dev", "eth0",
            ],
        ] {
            let out = Command::new("ip")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("run ip");
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ns
    }

    /// `ip -n NS ARGS`'s output.
    fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.0)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// `--routing auto` from inside the container: with `--cap-add NET_ADMIN` (the only route to
/// CAP_NET_ADMIN for the non-root process is the file capability) ovbmc adds its rule and
/// table in the network namespace it runs in, ipmitool gets answers there, and a
/// `podman stop` removes them again. The namespace is one this test made (the policy-routing
/// behaviour itself is tests/it/routing.rs's subject).
#[test]
fn routing_auto_works_inside_the_container() {
    let Some((podman, ipmitool_bin)) = setup() else {
        return;
    };
    let addr = Ipv4Addr::new(198, 18, 0, 10);
    let ns = NetNs::with_one_nic(format!("ovbmc-ct-{}", std::process::id()), addr);
    let dir = ScratchDir::new("container-routing");
    let secret = container_password_file(&dir);
    let client_pw = dir.write_secret("client-password", PASSWORD);
    let mount = format!("{}:/etc/ovbmc/ipmi-password:ro", secret.display());
    let network = format!("--network=ns:/run/netns/{}", ns.0);
    let ovbmc_args: Vec<String> = [
        "--backend",
        "sim",
        "--bind",
        &addr.to_string(),
        "--instance",
        "it-container-routing",
        "--password-file",
        "/etc/ovbmc/ipmi-password",
        "--sim-power-on-ms",
        "0",
        "--routing",
        "auto",
    ]
    .map(String::from)
    .to_vec();
    let c = Container::run(
        &podman,
        &[
            &network,
            "--cap-drop=all",
            "--cap-add=NET_BIND_SERVICE",
            "--cap-add=NET_ADMIN",
            "-v",
            &mount,
        ],
        &ovbmc_args,
    );
    // ovbmc logs "serving" once its routing is in place and its sockets are bound; the host
    // cannot probe an address inside the namespace, so wait for that line.
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while !c.logs().contains("serving") {
        assert!(c.running(), "the container stopped before serving");
        assert!(
            Instant::now() < deadline,
            "not serving after {STARTUP_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }

    let rules = ns.ip(&["rule", "show"]);
    let rule = rules
        .lines()
        .find(|l| l.contains(&format!("from {addr} lookup")))
        .unwrap_or_else(|| panic!("no `from {addr}` rule in the namespace:\n{rules}"));
    let table = rule.split_whitespace().last().expect("table").to_string();
    let routes = ns.ip(&["route", "show", "table", &table]);
    assert!(
        routes.contains("default via 198.18.0.1 dev eth0"),
        "table {table} lacks the default route:\n{routes}"
    );

    // ipmitool inside the namespace reaches the BMC.
    let mut args: Vec<String> = ["netns", "exec", &ns.0].map(String::from).to_vec();
    args.push(ipmitool_bin.display().to_string());
    args.extend(
        [
            "-I",
            "lanplus",
            "-C",
            "17",
            "-U",
            USER,
            "-H",
            &addr.to_string(),
            "-f",
        ]
        .map(String::from),
    );
    args.push(client_pw.display().to_string());
    args.extend(["power", "status"].map(String::from));
    let ip = find_program("ip").expect("ip");
    assert_contains(
        &run(&ip, &args, &[], CLIENT_TIMEOUT),
        "Chassis Power is off",
    );

    assert_eq!(
        c.stop(Duration::from_secs(20)),
        "0",
        "exit code after podman stop"
    );
    let rules = ns.ip(&["rule", "show"]);
    assert!(
        !rules.contains(&format!("from {addr}")),
        "the rule outlived ovbmc:\n{rules}"
    );
}
