//! ovbmc as a drop-in for OVB's openstackbmc (issue 14 item 4; `ovbmc::compat`): the binary
//! swapped under OVB's systemd unit line (`openstackbmc --os-cloud host_cloud --instance <id>
//! --address <ip>`, from install_openstackbmc.sh), answering ipmitool against the lab's real
//! Nova (the nova tier); and the refusal when no password is given (no lab needed).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ovbmc::cloud::BootStrategy;
use ovbmc::cloud::machine::PXE_FIRST_KEY;

use crate::nova::{
    BAREMETAL_1, hold, lab, machine, nova, reset_to_active, runtime, settled, until,
};
use crate::support::{ScratchDir, ovbmc_bin, unique_loopback};

const DEADLINE: Duration = Duration::from_secs(90);
const PASSWORD: &str = "ovb-dropin-pw";

/// `DIR/openstackbmc`: a symlink to the ovbmc binary, as an operator would swap it in.
fn swapped_binary(dir: &Path) -> PathBuf {
    let link = dir.join("openstackbmc");
    std::os::unix::fs::symlink(ovbmc_bin(), &link).expect("symlink openstackbmc");
    link
}

struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- openstackbmc (ovbmc) log ---\n{}--- end ---",
                self.log()
            );
        }
    }
}

/// Run ipmitool until it succeeds with `want` in its output (the BMC may still be starting,
/// or answer busy while Nova finishes a transition); no timing is asserted.
fn ipmitool(p: &mut Proc, addr: Ipv4Addr, port: u16, pw: &Path, args: &[&str], want: &str) {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Ok(Some(st)) = p.child.try_wait() {
            panic!("openstackbmc (ovbmc) exited ({st}):\n{}", p.log());
        }
        let out = Command::new("ipmitool")
            .args([
                "-I",
                "lanplus",
                "-H",
                &addr.to_string(),
                "-p",
                &port.to_string(),
            ])
            .args(["-U", "admin", "-f"])
            .arg(pw)
            .args(["-C", "17", "-R", "1", "-N", "2"])
            .args(args)
            .output()
            .expect("run ipmitool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && text.contains(want) {
            return;
        }
        assert!(
            Instant::now() < end,
            "ipmitool {args:?}: wanted {want:?}, got:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// OVB's unit line, the binary swapped: clouds.yaml where OVB's cloud-init wrote it
/// (`~/.config/openstack/clouds.yaml`, cloud `host_cloud`), the password in BMC_PASSWORD (as
/// an EnvironmentFile= would set it), the instance by UUID; ipmitool's power and boot device
/// reach Nova.
#[test]
fn ovb_unit_line_with_the_binary_swapped_answers_ipmitool() {
    let Some(clouds) = lab() else { return };
    if Command::new("ipmitool").arg("-V").output().is_err() {
        if crate::support::clients_required() {
            panic!("ipmitool required but not installed");
        }
        crate::support::skip("nova", "ipmitool not installed");
        return;
    }
    let _g = hold(&BAREMETAL_1);
    let dir = ScratchDir::new("dropin");
    let home = dir.path().join("home");
    let cfg = home.join(".config/openstack");
    std::fs::create_dir_all(&cfg).unwrap();
    let text = std::fs::read_to_string(&clouds).expect("lab clouds.yaml");
    assert!(
        text.contains("\n  lab:\n"),
        "lab clouds.yaml layout changed"
    );
    std::fs::write(
        cfg.join("clouds.yaml"),
        text.replacen("\n  lab:\n", "\n  host_cloud:\n", 1),
    )
    .unwrap();
    let pw = dir.write_secret("pw", PASSWORD);

    let rt = runtime();
    let m = rt.block_on(machine(&clouds, BootStrategy::Metadata, "baremetal_1"));
    let s = m.session().clone();
    let id = m.instance_id().to_string();
    rt.block_on(reset_to_active(&m));

    let addr = unique_loopback();
    // OVB's units leave the port at 623; as root that is what is used here too.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let port = if root {
        623
    } else {
        crate::support::free_udp_port(addr)
    };
    let log = dir.path().join("openstackbmc.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(swapped_binary(dir.path()));
    cmd.args(["--os-cloud", "host_cloud", "--instance", &id])
        .args(["--address", &addr.to_string()])
        .env("HOME", &home)
        .env("BMC_PASSWORD", PASSWORD)
        // Only what OVB's unit gives it.
        .env_remove("OS_CLIENT_CONFIG_FILE")
        .env_remove("OS_CLOUD")
        .env_remove("OS_AUTH_URL")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("BMC_USER")
        .env_remove("BMC_ADDRESS")
        .env_remove("INSTANCE_ID")
        .env("OVBMC_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    if root {
        cmd.env_remove("BMC_PORT");
    } else {
        cmd.env("BMC_PORT", port.to_string());
    }
    let mut p = Proc {
        child: cmd.spawn().expect("spawn openstackbmc"),
        log,
    };

    ipmitool(
        &mut p,
        addr,
        port,
        &pw,
        &["power", "status"],
        "Chassis Power is on",
    );
    ipmitool(&mut p, addr, port, &pw, &["power", "off"], "Down/Off");
    rt.block_on(until(&s, &id, "SHUTOFF", settled("SHUTOFF")));
    ipmitool(
        &mut p,
        addr,
        port,
        &pw,
        &["chassis", "bootdev", "pxe", "options=persistent"],
        "Set Boot Device to pxe",
    );
    let srv = rt.block_on(nova(&s, &id));
    assert_eq!(
        srv.metadata.get(PXE_FIRST_KEY).map(String::as_str),
        Some("1"),
        "openstackbmc's own boot-device key"
    );
    ipmitool(&mut p, addr, port, &pw, &["power", "on"], "Up/On");
    rt.block_on(until(&s, &id, "ACTIVE", settled("ACTIVE")));
    ipmitool(
        &mut p,
        addr,
        port,
        &pw,
        &["chassis", "bootdev", "disk", "options=persistent"],
        "Set Boot Device to disk",
    );
    let srv = rt.block_on(nova(&s, &id));
    assert_eq!(
        srv.metadata.get(PXE_FIRST_KEY).map(String::as_str),
        Some("")
    );
    // The password never shows in the log.
    assert!(!p.log().contains(PASSWORD), "{}", p.log());
}

/// openstackbmc's default password (`password`) does not apply: with none given the swapped
/// binary exits at once, naming BMC_PASSWORD; `--bmcpass` works but is warned about.
#[test]
fn no_password_is_refused_naming_bmc_password() {
    let dir = ScratchDir::new("dropin-nopw");
    let bin = swapped_binary(dir.path());
    let addr = unique_loopback();
    let out = Command::new(&bin)
        .args(["--os-cloud", "host_cloud", "--cache-status"])
        .env("INSTANCE_ID", "baremetal_0")
        .env("BMC_ADDRESS", addr.to_string())
        .env_remove("BMC_PASSWORD")
        .env_remove("OVBMC_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("run openstackbmc");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("BMC_PASSWORD") && err.contains("no default password"),
        "{err}"
    );

    // The same flags on an `ovbmc` command line select the openstackbmc reading too; the
    // command-line password is warned about (and then the unknown cloud stops it).
    let out = Command::new(ovbmc_bin())
        .args(["--address", &addr.to_string(), "--instance", "baremetal_0"])
        .args(["--bmcpass", PASSWORD, "--os-cloud", "no-such-cloud"])
        .env("HOME", dir.path())
        .env_remove("OS_CLIENT_CONFIG_FILE")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::null())
        .output()
        .expect("run ovbmc");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("/proc/PID/cmdline"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
}
