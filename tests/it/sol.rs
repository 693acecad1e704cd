//! Serial over LAN against `ovbmc --backend sim` (the simulator's console: a banner, a
//! `NAME login: ` prompt, `echo: LINE` for every line, `burst N` for N pattern bytes).
//!
//! The interactive clients run on a pseudo-terminal made by socat, exactly as Ironic's
//! `ipmitool-socat` console interface runs `ipmitool … sol activate`
//! (`socat … EXEC:"ipmitool … sol activate",pty,stderr`): `ipmitool` with `-C 3` and `-C 17`
//! (escape `~.`), FreeIPMI's `ipmiconsole` (escape `&.`), and pyghmi's `Console`
//! (`tests/py/pyghmi_console.py`). Every wait is bounded; nothing asserts a timing.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::ipmitool::Ipmitool;
use crate::support::{Bmc, BmcConfig, ScratchDir, assert_field, client, run};

const TIER: &str = "sol";

/// That `got` holds a burst of exactly `n` pattern bytes, complete and in order (the guest
/// output after a `burst N` line; the pattern starts at its first "ABCDEFGH").
pub(crate) fn assert_burst(got: &[u8], n: usize) {
    let start = find(got, b"ABCDEFGH").expect("the burst's first bytes");
    let body: Vec<u8> = got[start..]
        .iter()
        .copied()
        .take_while(|b| PATTERN.contains(b))
        .collect();
    assert_eq!(body.len(), n, "burst length");
    if let Some(k) = body
        .iter()
        .enumerate()
        .position(|(k, &b)| b != PATTERN[k % 64])
    {
        panic!(
            "burst byte {k} is {:?}, not {:?}",
            body[k] as char,
            PATTERN[k % 64] as char
        );
    }
}

/// The simulator's burst pattern (`src/console/sim.rs`): byte k is `PATTERN[k % 64]`.
pub(crate) const PATTERN: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// How long any one expected piece of console output may take to arrive.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// A program on a pseudo-terminal (socat's `pty`), its output collected as it arrives.
pub(crate) struct Pty {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<(Mutex<Vec<u8>>, Condvar)>,
    /// How far [`Pty::expect`] has read.
    seen: usize,
    what: String,
    _dir: ScratchDir,
}

impl Pty {
    /// Run `program args` on a pty (`socat - EXEC:script,pty,stderr,setsid,ctty`), or `None`
    /// (skipped) without socat. The command goes through a script so that no argument has
    /// to survive socat's address syntax (its `,` and `:`).
    pub(crate) fn spawn(program: &Path, args: &[String]) -> Option<Self> {
        let socat = client(TIER, "socat")?;
        let dir = ScratchDir::new("pty");
        let script = dir.path().join("run.sh");
        let quoted: Vec<String> = std::iter::once(program.display().to_string())
            .chain(args.iter().cloned())
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect();
        fs::write(&script, format!("#!/bin/sh\nexec {}\n", quoted.join(" "))).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = Command::new(socat)
            .arg("-")
            .arg(format!("EXEC:{},pty,stderr,setsid,ctty", script.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn socat");
        let out: Arc<(Mutex<Vec<u8>>, Condvar)> = Arc::default();
        for mut r in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.0.lock().unwrap().extend_from_slice(&buf[..n]);
                    out.1.notify_all();
                }
            });
        }
        Some(Self {
            stdin: child.stdin.take(),
            child,
            out,
            seen: 0,
            what: quoted.join(" "),
            _dir: dir,
        })
    }

    /// Everything the program printed so far, for messages.
    pub(crate) fn transcript(&self) -> String {
        let out = self.out.0.lock().unwrap();
        let text = String::from_utf8_lossy(&out);
        if text.len() > 4000 {
            format!("…{}", &text[text.len() - 4000..])
        } else {
            text.into_owned()
        }
    }

    /// Wait (at most `timeout`) for `needle` after what was already expected; returns the
    /// output from the previous position up to and including it.
    #[track_caller]
    pub(crate) fn expect_within(&mut self, needle: &[u8], timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.out;
        let mut out = lock.lock().unwrap();
        // Only the new output is searched each time (a 1 MiB burst arrives in many reads).
        let mut from = self.seen;
        loop {
            if let Some(i) = find(&out[from..], needle) {
                let end = from + i + needle.len();
                let got = out[self.seen..end].to_vec();
                self.seen = end;
                return got;
            }
            from = out.len().saturating_sub(needle.len()).max(from);
            let now = Instant::now();
            if now >= deadline {
                drop(out);
                panic!(
                    "{:?} did not arrive within {timeout:?} from `{}`; output:\n{}",
                    String::from_utf8_lossy(needle),
                    self.what,
                    self.transcript()
                );
            }
            out = cv.wait_timeout(out, deadline - now).unwrap().0;
        }
    }

    #[track_caller]
    pub(crate) fn expect(&mut self, needle: &str) -> Vec<u8> {
        self.expect_within(needle.as_bytes(), WAIT)
    }

    /// Type `bytes`.
    pub(crate) fn send(&mut self, bytes: &[u8]) {
        let w = self.stdin.as_mut().expect("stdin open");
        w.write_all(bytes).unwrap();
        w.flush().unwrap();
    }

    /// Wait (at most `timeout`) for the program to end.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        // socat's own child (the client) ends with its pty; socat is ours to end.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `sol activate` on a pty, waited for until the simulated guest's prompt shows.
fn activate(t: &Ipmitool<'_>) -> Option<Pty> {
    let mut pty = Pty::spawn(t.bin(), &t.args(&["sol", "activate"]))?;
    pty.expect("ovbmc simulated serial console");
    pty.expect("login: ");
    Some(pty)
}

/// `raw 0x06 0x4a 0x01` (Get Payload Activation Status, SOL): capacity 1, then the bitmap.
#[track_caller]
fn activation_status(t: &Ipmitool<'_>) -> String {
    let r = t.run(&["raw", "0x06", "0x4a", "0x01"]);
    r.expect_success();
    r.stdout.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The banner arrives, a typed line comes back, `~.` ends the session, and no payload is
/// active afterwards.
fn ipmitool_sol_banner_echo_and_escape(cipher: u8) {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, Some(cipher)) else {
        return;
    };
    let Some(mut pty) = activate(&t) else {
        return;
    };
    assert_eq!(activation_status(&t), "01 01 00", "SOL shows as active");
    pty.send(b"hello sol\r");
    pty.expect("echo: hello sol");
    pty.expect("login: ");
    // ipmitool's escapes count only after a newline. `~B` sends a break, which the simulated
    // guest takes as a reboot: its banner again.
    pty.send(b"\r");
    pty.expect("login: ");
    pty.send(b"~B");
    pty.expect("ovbmc simulated serial console");
    pty.expect("login: ");
    pty.send(b"\r");
    pty.expect("login: ");
    pty.send(b"~.");
    assert!(
        pty.wait_exit(WAIT).is_some(),
        "ipmitool did not end on ~.:\n{}",
        pty.transcript()
    );
    assert_eq!(activation_status(&t), "01 00 00", "nothing active after ~.");
}

/// `sol info` reads parameters 0–8; `sol set retry-count 5` is read back.
fn ipmitool_sol_info_and_set(cipher: u8) {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, Some(cipher)) else {
        return;
    };
    let r = t.run(&["sol", "info"]);
    r.expect_success();
    assert_field(&r, "Enabled", "true");
    assert_field(&r, "Force Encryption", "true");
    assert_field(&r, "Force Authentication", "true");
    assert_field(&r, "Retry Count", "7");
    assert_field(&r, "Payload Port", &bmc.port.to_string());
    t.run(&["sol", "set", "retry-count", "5"]).expect_success();
    let r = t.run(&["sol", "info"]);
    r.expect_success();
    assert_field(&r, "Retry Count", "5");
}

/// A second `sol activate` while one is active gets "already active"; `sol deactivate` from
/// another session ends the first; then nothing is active.
fn ipmitool_second_activation_and_deactivate(cipher: u8) {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, Some(cipher)) else {
        return;
    };
    let Some(first) = activate(&t) else {
        return;
    };
    let r = t.run(&["sol", "activate"]);
    r.expect_failure();
    assert!(
        r.output().contains("already active"),
        "a second activation should be refused as already active:\n{r}"
    );
    t.run(&["sol", "deactivate"]).expect_success();
    assert_eq!(activation_status(&t), "01 00 00");
    // The first console was told (a last packet with "SOL deactivating"); whatever ipmitool
    // does with it, SOL stays free: a new activation succeeds.
    drop(first);
    let Some(mut again) = activate(&t) else {
        return;
    };
    again.send(b"\r~.");
    assert!(
        again.wait_exit(WAIT).is_some(),
        "ipmitool did not end on ~."
    );
    // Nothing active: ipmitool reports it (80h, "already de-activated") and does not hang.
    let r = t.run(&["sol", "deactivate"]);
    assert!(!r.timed_out(), "{r}");
}

/// 1 MiB of guest output (`burst 1048576`) arrives complete and in order.
fn ipmitool_burst_arrives_complete_and_in_order(cipher: u8) {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, Some(cipher)) else {
        return;
    };
    let Some(mut pty) = activate(&t) else {
        return;
    };
    const N: usize = 1 << 20;
    pty.send(format!("burst {N}\r").as_bytes());
    pty.expect(&format!("burst {N}"));
    // Generous: debug builds of both ends, a shared machine; a bound, not a measurement.
    let got = pty.expect_within(b"login: ", Duration::from_secs(300));
    assert_burst(&got, N);
    pty.send(b"\r~.");
    assert!(pty.wait_exit(WAIT).is_some(), "ipmitool did not end on ~.");
}

/// FreeIPMI's `ipmiconsole` (Get Channel Payload Support, Get Payload Activation Status,
/// Activate Payload; Get Channel Payload Version as its keepalive) gets the banner and an
/// echo, and ends on `&.`.
fn ipmiconsole_banner_and_echo(cipher: u8) {
    // ipmiconsole 1.6.10 answers "hostname invalid" to `-h HOST:PORT` with a port above
    // 32767 (it reads the port as a signed 16-bit number).
    let bmc = Bmc::start_with(BmcConfig {
        port: Some(16230),
        ..BmcConfig::default()
    });
    let Some(bin) = client(TIER, "ipmiconsole") else {
        return;
    };
    let args: Vec<String> = vec![
        "-h".into(),
        format!("{}:{}", bmc.addr, bmc.port),
        "-u".into(),
        bmc.cfg.user.clone(),
        "-p".into(),
        bmc.cfg.password.clone(),
        "-I".into(),
        cipher.to_string(),
    ];
    let Some(mut pty) = Pty::spawn(&bin, &args) else {
        return;
    };
    // The simulated guest printed its banner at activation, before anything was typed.
    pty.expect("ovbmc simulated serial console");
    pty.expect("login: ");
    pty.send(b"hi freeipmi\r");
    pty.expect("echo: hi freeipmi");
    pty.send(b"&.");
    assert!(
        pty.wait_exit(WAIT).is_some(),
        "ipmiconsole did not end on &.:\n{}",
        pty.transcript()
    );
    let Some(t) = Ipmitool::new(&bmc, Some(cipher)) else {
        return;
    };
    assert_eq!(activation_status(&t), "01 00 00");
}

macro_rules! per_cipher_suite {
    ($($name:ident),* $(,)?) => {
        mod suite3 {
            $( #[test] fn $name() { super::$name(3) } )*
        }
        mod suite17 {
            $( #[test] fn $name() { super::$name(17) } )*
        }
    };
}

per_cipher_suite!(
    ipmitool_sol_banner_echo_and_escape,
    ipmitool_sol_info_and_set,
    ipmitool_second_activation_and_deactivate,
    ipmitool_burst_arrives_complete_and_in_order,
    ipmiconsole_banner_and_echo,
);

/// pyghmi's `Console` (Activate Payload with `(1, 1, 192, 0, 0, 0)`, Get Payload Instance
/// Info as its keepalive) reads the banner, sends a line and reads its echo.
#[test]
fn pyghmi_console_banner_and_echo() {
    let Some(python) = crate::pyghmi::python_with_pyghmi() else {
        return;
    };
    let bmc = Bmc::start_with(BmcConfig::default());
    let script: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/pyghmi_console.py");
    let ran = run(
        &python,
        &[
            script.display().to_string(),
            bmc.addr.to_string(),
            bmc.port.to_string(),
            bmc.cfg.user.clone(),
            "hello pyghmi".into(),
        ],
        &[("OVBMC_PASSWORD", bmc.cfg.password.as_str())],
        Duration::from_secs(60),
    );
    assert!(ran.success(), "pyghmi console failed:\n{ran}");
    assert!(
        ran.stdout.contains("ovbmc simulated serial console"),
        "{ran}"
    );
    assert!(ran.stdout.contains("echo: hello pyghmi"), "{ran}");
}

/// `/metrics` counts the activation, the characters each way, and shows it inactive again.
#[test]
fn sol_is_counted_in_metrics() {
    let (bmc, maddr) = crate::metrics::bmc_with_metrics();
    let Some(t) = Ipmitool::new(&bmc, Some(17)) else {
        return;
    };
    let Some(mut pty) = activate(&t) else {
        return;
    };
    pty.send(b"counted\r");
    pty.expect("echo: counted");
    pty.expect("login: ");
    let (_, text) = crate::metrics::get(maddr, "/metrics");
    let bmc_label = bmc.socket_addr().to_string();
    let labels = [("bmc", bmc_label.as_str())];
    assert_eq!(
        crate::metrics::sample(&text, "ovbmc_sol_active", &labels),
        1.0,
        "{text}"
    );
    pty.send(b"\r~.");
    assert!(pty.wait_exit(WAIT).is_some(), "ipmitool did not end on ~.");
    // The page is rendered once a second: look until it shows the end (bounded).
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, text) = crate::metrics::get(maddr, "/metrics");
        let s = |n| crate::metrics::sample(&text, n, &labels);
        if s("ovbmc_sol_active") == 0.0 && s("ovbmc_sol_activations_total") >= 1.0 {
            assert!(s("ovbmc_sol_bytes_from_console_total") >= 8.0, "{text}");
            assert!(s("ovbmc_sol_bytes_to_console_total") > 30.0, "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed SOL ended:\n{text}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// `--console off`: SOL reads disabled and will not activate.
#[test]
fn console_off_disables_sol() {
    let bmc = Bmc::start_with(BmcConfig {
        extra_args: vec!["--console".into(), "off".into()],
        ..BmcConfig::default()
    });
    let Some(t) = Ipmitool::new(&bmc, Some(17)) else {
        return;
    };
    let r = t.run(&["sol", "info"]);
    r.expect_success();
    assert_field(&r, "Enabled", "false");
    let r = t.run(&["sol", "activate"]);
    r.expect_failure();
    assert_eq!(activation_status(&t), "01 00 00");
}

/// `sol set enabled false` refuses the next activation; `true` allows it again.
#[test]
fn sol_set_enabled_false_refuses_activation() {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, Some(17)) else {
        return;
    };
    t.run(&["sol", "set", "enabled", "false"]).expect_success();
    t.run(&["sol", "activate"]).expect_failure();
    t.run(&["sol", "set", "enabled", "true"]).expect_success();
    let Some(mut pty) = activate(&t) else {
        return;
    };
    pty.send(b"\r~.");
    assert!(pty.wait_exit(WAIT).is_some(), "ipmitool did not end on ~.");
}
