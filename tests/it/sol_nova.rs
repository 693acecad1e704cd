//! Serial over LAN through ovbmc's Nova console backends against the OpenStack lab
//! (`tests/lab/openstack`, issue 12 "How it is checked"): `ipmitool -I lanplus -C 17 … sol
//! activate` on a socat pty (the [`Pty`] of tests/it/sol.rs, as Ironic's `ipmitool-socat` runs
//! it) against `ovbmc --backend nova --console serial|auto|log`.
//!
//! * serial: the lab guest's banner arrives through the real nova-serialproxy, a typed line
//!   comes back as `echo: LINE`, a 1 MiB `burst` arrives complete and in order, the instance is
//!   hard-rebooted from a second ipmitool (`power reset`) and the console comes back by itself
//!   (the banner again) without a new activation, `~.` ends it and no payload stays active.
//! * log: the console log's lines, then new ones as the lab adds them (a line every
//!   `OVBMC_LAB_CONSOLE_TICK` s), and one read-only notice for typed input.
//! * auto: serial where the lab runs nova-serialproxy, the log where it does not
//!   (`OVBMC_LAB_SERIAL_CONSOLE=off`), as the BMC's log line says.
//! * the other clients: FreeIPMI's `ipmiconsole` (on a pty, escape `&.`) against serial and
//!   log, and pyghmi's `Console` (`tests/py/pyghmi_console.py`) against serial: the banner
//!   arrives, a typed line comes back (or, for the log, the read-only notice).
//!
//! Skipped (a `SKIP` line) without the lab, unless `OVBMC_REQUIRE_LABS=1`; the serial tests
//! also skip when the lab runs with its serial console off. Each uses lab server
//! `baremetal_1` under the nova tier's mutex. Every wait is bounded; nothing asserts a timing.

use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::nova::{BAREMETAL_1, Bmc, free_port, hold, lab, start_bmc_with};
use crate::sol::{Pty, WAIT, assert_burst};
use crate::support::{CLIENT_TIMEOUT, Ran, ScratchDir, client, run};

const TIER: &str = "sol-nova";
const SERVER: &str = "baremetal_1";
const PASSWORD: &str = "nova-lab-pw";
/// A Nova transition (hard reboot: off, then on, each `OVBMC_LAB_FAKE_DELAY` s) plus ovbmc's
/// reconnect backoff (1, 2, 4 … s while the guest is still down).
const REBOOT_WAIT: Duration = Duration::from_secs(120);

/// The lab guest's banner (tests/lab/openstack/lib/ovbmc_lab/console.py).
fn banner() -> String {
    format!("ovbmc lab guest serial console ({SERVER})")
}

fn prompt() -> String {
    format!("{SERVER} login: ")
}

/// Whether the lab runs nova-serialproxy (`OVBMC_LAB_SERIAL_CONSOLE=on`): its port answers.
pub(crate) fn lab_has_serial_console() -> bool {
    let port =
        crate::support::lab_env("openstack", "serialproxy_port").unwrap_or_else(|| "16083".into());
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// ovbmc for `baremetal_1` with `--console MODE`, and ipmitool for it; `None` (skipped)
/// without ipmitool or socat.
struct Setup {
    bmc: Bmc,
    ipmitool: PathBuf,
    pw: PathBuf,
    _dir: ScratchDir,
}

impl Setup {
    fn start(clouds: &Path, mode: &str) -> Option<Self> {
        Self::start_on(clouds, mode, free_port())
    }

    fn start_on(clouds: &Path, mode: &str, port: u16) -> Option<Self> {
        let ipmitool = client(TIER, "ipmitool")?;
        client(TIER, "socat")?;
        let dir = ScratchDir::new("sol-nova");
        let pw = dir.write_secret("pw", PASSWORD);
        let bmc = start_bmc_with(clouds, dir.path(), port, SERVER, &["--console", mode]);
        let s = Self {
            bmc,
            ipmitool,
            pw,
            _dir: dir,
        };
        s.until_ok(&["power", "status"], "Chassis Power is");
        Some(s)
    }

    fn args(&self, words: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            "-I",
            "lanplus",
            "-H",
            "127.0.0.1",
            "-p",
            &self.bmc.port.to_string(),
            "-U",
            "admin",
            "-f",
            &self.pw.display().to_string(),
            "-C",
            "17",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(words.iter().map(|w| w.to_string()));
        a
    }

    fn run(&self, words: &[&str]) -> Ran {
        run(&self.ipmitool, &self.args(words), &[], CLIENT_TIMEOUT)
    }

    /// Run until it succeeds with `want` in its output (the BMC may still be starting, or
    /// answer busy while Nova finishes a transition); bounded.
    #[track_caller]
    fn until_ok(&self, words: &[&str], want: &str) -> Ran {
        let end = Instant::now() + REBOOT_WAIT;
        loop {
            let r = self.run(words);
            if r.success() && r.output().contains(want) {
                return r;
            }
            assert!(
                Instant::now() < end,
                "ipmitool {words:?}: wanted {want:?}, got:\n{r}\novbmc log:\n{}",
                self.bmc.log()
            );
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// Get Payload Activation Status (SOL): capacity 1, then the bitmap.
    #[track_caller]
    fn activation_status(&self) -> String {
        let r = self.run(&["raw", "0x06", "0x4a", "0x01"]);
        r.expect_success();
        r.stdout.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn activate(&self) -> Pty {
        Pty::spawn(&self.ipmitool, &self.args(&["sol", "activate"])).expect("socat")
    }

    /// `~.` ends ipmitool, and no payload stays active.
    #[track_caller]
    fn escape(&self, pty: &mut Pty) {
        pty.send(b"\r~.");
        assert!(
            pty.wait_exit(WAIT).is_some(),
            "ipmitool did not end on ~.:\n{}",
            pty.transcript()
        );
        assert_eq!(
            self.activation_status(),
            "01 00 00",
            "nothing active after ~."
        );
    }

    /// Wait (bounded) for `needle` in ovbmc's log.
    #[track_caller]
    fn log_shows(&self, needle: &str) {
        let end = Instant::now() + WAIT;
        while !self.bmc.log().contains(needle) {
            assert!(
                Instant::now() < end,
                "ovbmc's log never said {needle:?}:\n{}",
                self.bmc.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A UDP port on 127.0.0.1, free a moment ago, below 32768: FreeIPMI's `ipmiconsole` 1.6
/// answers "hostname invalid" to `-h HOST:PORT` with a port above 32767 (it reads it as a
/// signed 16-bit number), and an ephemeral port is above that. Where to start looking varies
/// with the process, so that two test runs do not race for the same one.
fn low_free_port() -> u16 {
    const FROM: u32 = 20000;
    const SPAN: u32 = 12000;
    let start = std::process::id() % SPAN;
    (0..SPAN)
        .map(|i| (FROM + (start + i * 7) % SPAN) as u16)
        .find(|&p| UdpSocket::bind(("127.0.0.1", p)).is_ok())
        .expect("a free UDP port below 32768")
}

/// ovbmc for `baremetal_1` with `--console MODE` on a port `ipmiconsole` accepts, the server
/// powered on; then `ipmiconsole -I 17` on a pty. `None` (skipped) without the clients.
fn ipmiconsole_session(clouds: &Path, mode: &str) -> Option<(Setup, Pty)> {
    let bin = client(TIER, "ipmiconsole")?;
    let s = Setup::start_on(clouds, mode, low_free_port())?;
    s.until_ok(&["power", "on"], "");
    s.until_ok(&["power", "status"], "Chassis Power is on");
    let args: Vec<String> = vec![
        "-h".into(),
        format!("127.0.0.1:{}", s.bmc.port),
        "-u".into(),
        "admin".into(),
        "-p".into(),
        PASSWORD.into(),
        "-I".into(),
        "17".into(),
    ];
    let pty = Pty::spawn(&bin, &args)?;
    Some((s, pty))
}

/// `&.` ends ipmiconsole, and no payload stays active.
#[track_caller]
fn ipmiconsole_escape(s: &Setup, pty: &mut Pty) {
    pty.send(b"&.");
    assert!(
        pty.wait_exit(WAIT).is_some(),
        "ipmiconsole did not end on &.:\n{}",
        pty.transcript()
    );
    assert_eq!(s.activation_status(), "01 00 00", "nothing active after &.");
}

/// The lab with its serial console on, or `None` (skipped).
fn serial_lab() -> Option<PathBuf> {
    let clouds = lab()?;
    if !lab_has_serial_console() {
        crate::support::skip(
            TIER,
            "the lab runs with OVBMC_LAB_SERIAL_CONSOLE=off (no nova-serialproxy)",
        );
        return None;
    }
    Some(clouds)
}

/// Banner and prompt, an echo, then the guest's console after a typed line.
fn banner_and_echo(pty: &mut Pty) {
    pty.expect(&banner());
    pty.expect(&prompt());
    pty.send(b"hello nova\r");
    pty.expect("echo: hello nova");
    pty.expect(&prompt());
}

/// `--console serial`: banner, echo, a 1 MiB burst complete and in order, a hard reboot that
/// the console survives by itself, `~.`.
#[test]
fn sol_nova_serial_banner_echo_burst_reboot_and_escape() {
    let Some(clouds) = serial_lab() else { return };
    let _g = hold(&BAREMETAL_1);
    let Some(s) = Setup::start(&clouds, "serial") else {
        return;
    };
    s.until_ok(&["power", "on"], "");
    s.until_ok(&["power", "status"], "Chassis Power is on");
    let mut pty = s.activate();
    banner_and_echo(&mut pty);
    assert_eq!(s.activation_status(), "01 01 00", "SOL shows as active");

    const N: usize = 1 << 20;
    pty.send(format!("burst {N}\r").as_bytes());
    pty.expect(&format!("burst {N}"));
    // Generous: debug build, a shared machine, the proxy in Python; a bound, not a measurement.
    let got = pty.expect_within(prompt().as_bytes(), Duration::from_secs(300));
    assert_burst(&got, N);

    // A hard reboot from another session: the lab's hypervisor closes the guest's serial
    // connections (as libvirt does), nova-serialproxy drops the WebSocket, ovbmc fetches a
    // fresh URL and reconnects; the operator just sees the guest's banner again.
    s.until_ok(&["power", "reset"], "Chassis Power Control: Reset");
    pty.expect_within(banner().as_bytes(), REBOOT_WAIT);
    pty.expect(&prompt());
    s.log_shows("serial console connected again");
    // Same SOL session, still typing into the guest.
    pty.send(b"after reboot\r");
    pty.expect("echo: after reboot");
    pty.expect(&prompt());
    assert_eq!(s.activation_status(), "01 01 00", "still the same session");
    s.escape(&mut pty);
    // The reboot finished in Nova before the next test uses the server.
    s.until_ok(&["power", "status"], "Chassis Power is on");
}

/// FreeIPMI's `ipmiconsole` against `--console serial`: the guest's banner through
/// nova-serialproxy, a typed line echoed, `&.`.
#[test]
fn sol_nova_serial_ipmiconsole_banner_and_echo() {
    let Some(clouds) = serial_lab() else { return };
    let _g = hold(&BAREMETAL_1);
    let Some((s, mut pty)) = ipmiconsole_session(&clouds, "serial") else {
        return;
    };
    banner_and_echo(&mut pty);
    assert_eq!(s.activation_status(), "01 01 00", "SOL shows as active");
    ipmiconsole_escape(&s, &mut pty);
}

/// FreeIPMI's `ipmiconsole` against `--console log`: the log's lines, new ones as the lab
/// adds them, and the one read-only notice for typed input; `&.`.
#[test]
fn sol_nova_log_ipmiconsole_follows_read_only() {
    let Some(clouds) = lab() else { return };
    let _g = hold(&BAREMETAL_1);
    let Some((s, mut pty)) = ipmiconsole_session(&clouds, "log") else {
        return;
    };
    log_follows(&mut pty);
    ipmiconsole_escape(&s, &mut pty);
}

/// pyghmi's `Console` against `--console serial`: the guest's banner and prompt through
/// nova-serialproxy, then a typed line's echo (`tests/py/pyghmi_console.py`, whose waits are
/// bounded); afterwards no payload is active.
#[test]
fn sol_nova_serial_pyghmi_console_banner_and_echo() {
    let Some(clouds) = serial_lab() else { return };
    let Some(python) = crate::pyghmi::python_with_pyghmi() else {
        return;
    };
    let _g = hold(&BAREMETAL_1);
    let Some(s) = Setup::start(&clouds, "serial") else {
        return;
    };
    s.until_ok(&["power", "on"], "");
    s.until_ok(&["power", "status"], "Chassis Power is on");
    let script: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/pyghmi_console.py");
    let ran = run(
        &python,
        &[
            script.display().to_string(),
            "127.0.0.1".into(),
            s.bmc.port.to_string(),
            "admin".into(),
            "hello pyghmi nova".into(),
        ],
        &[("OVBMC_PASSWORD", PASSWORD)],
        Duration::from_secs(90),
    );
    assert!(
        ran.success(),
        "pyghmi console failed:\n{ran}\novbmc log:\n{}",
        s.bmc.log()
    );
    assert!(ran.stdout.contains(&banner()), "{ran}");
    assert!(ran.stdout.contains("echo: hello pyghmi nova"), "{ran}");
    // pyghmi's close deactivates the payload and ends the session; ovbmc also frees SOL when
    // a session goes. Either way, bounded: nothing stays active.
    let end = Instant::now() + WAIT;
    while s.activation_status() != "01 00 00" {
        assert!(Instant::now() < end, "SOL still active after pyghmi closed");
        thread::sleep(Duration::from_millis(500));
    }
}

/// `--console auto`: the choice follows the lab — Nova's serial console where it runs
/// nova-serialproxy (banner and echo), its console log where `OVBMC_LAB_SERIAL_CONSOLE=off`
/// — and the BMC's log says which.
#[test]
fn sol_nova_auto_follows_the_lab() {
    let Some(clouds) = lab() else { return };
    let serial = lab_has_serial_console();
    let _g = hold(&BAREMETAL_1);
    let Some(s) = Setup::start(&clouds, "auto") else {
        return;
    };
    s.until_ok(&["power", "on"], "");
    s.until_ok(&["power", "status"], "Chassis Power is on");
    let mut pty = s.activate();
    if serial {
        banner_and_echo(&mut pty);
        s.log_shows("SOL console: Nova's serial console (nova-serialproxy)");
    } else {
        log_follows(&mut pty);
        s.log_shows("SOL console: Nova's console log (read-only)");
    }
    s.escape(&mut pty);
}

/// `--console log` (with the lab's serial console on or off: the log is there either way).
#[test]
fn sol_nova_log_follows_the_console_log_read_only() {
    let Some(clouds) = lab() else { return };
    let _g = hold(&BAREMETAL_1);
    let Some(s) = Setup::start(&clouds, "log") else {
        return;
    };
    s.until_ok(&["power", "on"], "");
    s.until_ok(&["power", "status"], "Chassis Power is on");
    let mut pty = s.activate();
    log_follows(&mut pty);
    s.escape(&mut pty);
}

/// The lab's tick line `[ NNN s ] NAME: the lab guest is up`: its seconds.
fn tick_seconds(text: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(text);
    let tail = format!(" s ] {SERVER}: the lab guest is up");
    let end = text.rfind(&tail)?;
    let open = text[..end].rfind("[ ")?;
    text[open + 2..end].trim().parse().ok()
}

/// The log's lines arrive, then typed input gets the read-only notice once, and lines the lab
/// adds afterwards arrive too.
fn log_follows(pty: &mut Pty) {
    const TICK: &str = ": the lab guest is up";
    let tick = format!("{SERVER}{TICK}");
    // The backlog: at least one line the lab wrote (a tick every 5 s while the guest runs).
    let before = pty.expect_within(tick.as_bytes(), Duration::from_secs(60));
    let mut last = tick_seconds(&before);
    // Typed input is discarded with one notice.
    pty.send(b"anyone there\r");
    let upto = pty.expect("read-only");
    if let Some(t) = tick_seconds(&upto) {
        last = Some(t);
    }
    pty.send(b"still typing\r");
    // A line written after the backlog: a later tick (same boot, so more seconds).
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let got = pty.expect_within(
            tick.as_bytes(),
            end.saturating_duration_since(Instant::now()),
        );
        let t = tick_seconds(&got).expect("a tick line");
        if last.is_none_or(|l| t > l) {
            break;
        }
    }
    let all = pty.transcript();
    assert_eq!(
        all.matches("typed input is discarded").count(),
        1,
        "one notice only:\n{all}"
    );
    assert!(
        !all.contains("echo: anyone there"),
        "input must not reach the guest:\n{all}"
    );
}
