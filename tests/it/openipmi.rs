//! OpenIPMI's LAN client (Debian `openipmi` 2.0.33, `openipmish`) against `ovbmc --backend sim`
//! over RMCP+ (`domain open ... lan -A rmcp+`).
//!
//! A third independent RMCP+ implementation, and the one that sends null algorithm payloads
//! when asked to let the BMC choose (`-Ra bmcpick -Ri bmcpick -Rc bmcpick`, IPMI v2.0 §13.17).
//!
//! `openipmish` is a command interpreter (ipmi_cmdlang(7)): it reads commands from stdin and
//! answers asynchronously, so the test writes a command, then reads its output until the line
//! that answers it (no sleeps). `mc msg <mc> <LUN> <NetFN> <Cmd>` sends a raw command to the
//! BMC, which OpenIPMI names `d(0.20)` (domain `d`, channel 0, IPMB address 20h).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Bmc, CLIENT_TIMEOUT, client};

const TIER: &str = "openipmi";
const MC: &str = "d(0.20)";

fn openipmish() -> Option<PathBuf> {
    client(TIER, "openipmish")
}

/// A running `openipmish`, its stdout and stderr read line by line into one channel.
struct Shell {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    transcript: Vec<String>,
}

fn forward(r: impl Read + Send + 'static, tx: Sender<String>) {
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            // The prompt (`> `) is written without a newline and so prefixes the next line.
            let line = line.trim_start_matches("> ").to_string();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

impl Shell {
    fn start(bin: &PathBuf) -> Self {
        let mut child = Command::new(bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let (tx, lines) = channel();
        forward(child.stdout.take().expect("stdout pipe"), tx.clone());
        forward(child.stderr.take().expect("stderr pipe"), tx);
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines,
            transcript: Vec::new(),
        }
    }

    fn send(&mut self, cmd: &str) {
        self.transcript.push(format!("$ {cmd}"));
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{cmd}").expect("write to openipmish");
        stdin.flush().expect("flush openipmish stdin");
    }

    /// Read lines until one satisfies `f`; `None` when the client's deadline passes or it exits.
    fn wait_for(&mut self, f: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.transcript.push(line.clone());
                    if f(&line) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn transcript(&self) -> String {
        self.transcript.join("\n")
    }

    /// Open domain `d` to `bmc` with `password` and extra `lan` options; whether the
    /// connection came up (OpenIPMI reports each change as `Any Connection Up: true|false`).
    fn open(&mut self, bmc: &Bmc, password: &str, options: &str) -> bool {
        self.send(&format!(
            "domain open d lan -U {} -P {password} -A rmcp+ -L admin {options} -p {} {}",
            bmc.cfg.user, bmc.port, bmc.addr
        ));
        let up = self.wait_for(|l| l.trim().starts_with("Any Connection Up:"));
        up.is_some_and(|l| l.trim().ends_with("true"))
    }

    /// `mc msg` to the BMC: the first line of the response's data bytes (completion code
    /// first; OpenIPMI prints 8 a line). The MC object
    /// appears a moment after the connection is up, so "object not found" is retried.
    fn msg(&mut self, netfn: u8, cmd: u8) -> Vec<u8> {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        loop {
            self.send(&format!("mc msg {MC} 0 {netfn} {cmd}"));
            let line = self
                .wait_for(|l| l.contains("object not found") || l.trim().starts_with("Data:"))
                .unwrap_or_else(|| panic!("no answer to mc msg:\n{}", self.transcript()));
            if let Some(data) = line.trim().strip_prefix("Data:") {
                return data
                    .split_whitespace()
                    .map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).unwrap())
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "the BMC's MC never appeared:\n{}",
                self.transcript()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "exit");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The default algorithms (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128: cipher suite 3), then
/// raw Get Device ID (App 06h/01h) and Get Chassis Status (Chassis 00h/01h).
#[test]
fn default_algorithms_session_and_raw_commands() {
    let Some(bin) = openipmish() else {
        return;
    };
    let bmc = Bmc::start();
    let mut sh = Shell::start(&bin);
    assert!(sh.open(&bmc, &bmc.cfg.password, ""), "{}", sh.transcript());
    let id = sh.msg(6, 1);
    assert_eq!(id.first(), Some(&0), "Get Device ID:\n{}", sh.transcript());
    // The first line (8 bytes) is enough: completion code, device ID, device revision,
    // firmware revision 1 and 2, then IPMI version 02h (v2.0; IPMI v2.0 Table 20-2).
    assert_eq!(id.len(), 8, "Get Device ID:\n{}", sh.transcript());
    assert_eq!(id[5], 0x02, "IPMI version:\n{}", sh.transcript());
    let status = sh.msg(0, 1);
    assert_eq!(
        status.first(),
        Some(&0),
        "chassis status:\n{}",
        sh.transcript()
    );
    // Current power state bit 0: the simulator starts off.
    assert_eq!(status.get(1).map(|b| b & 1), Some(0), "{}", sh.transcript());
}

/// `bmcpick` sends three null algorithm payloads, leaving the choice to the BMC (IPMI v2.0
/// §13.17); ovbmc picks suite 3 and names its algorithms in the response (§13.18). OpenIPMI
/// 2.0.33 knows no RAKP-HMAC-SHA256, so when ovbmc picked suite 17 the session never came up
/// ("BMC returned an auth algorithm that wasn't supported: 3"); now it connects and runs raw
/// commands: Get Device ID (App 06h/01h) and Get Chassis Status (Chassis 00h/01h).
#[test]
fn bmcpick_session_connects_and_runs_raw_commands() {
    let Some(bin) = openipmish() else {
        return;
    };
    let bmc = Bmc::start();
    let mut sh = Shell::start(&bin);
    let up = sh.open(
        &bmc,
        &bmc.cfg.password,
        "-Ra bmcpick -Ri bmcpick -Rc bmcpick",
    );
    assert!(up, "bmcpick did not connect:\n{}", sh.transcript());
    let id = sh.msg(6, 1);
    assert_eq!(id.first(), Some(&0), "Get Device ID:\n{}", sh.transcript());
    assert_eq!(id.get(5), Some(&0x02), "IPMI version:\n{}", sh.transcript());
    let status = sh.msg(0, 1);
    assert_eq!(
        status.first(),
        Some(&0),
        "chassis status:\n{}",
        sh.transcript()
    );
}

/// A wrong password never brings the connection up.
#[test]
fn wrong_password_is_refused() {
    let Some(bin) = openipmish() else {
        return;
    };
    let bmc = Bmc::start();
    let mut sh = Shell::start(&bin);
    assert!(!sh.open(&bmc, "wrong-password", ""), "{}", sh.transcript());
    assert!(
        !sh.transcript().contains("Any Connection Up: true"),
        "{}",
        sh.transcript()
    );
}
