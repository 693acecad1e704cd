//! Shared machinery for the real-client tests: start an `ovbmc --backend sim` child on its own
//! loopback address and port, run client programs with a deadline, and decide whether a
//! client tier runs or is skipped.
//!
//! Every test starts its own BMC process, so tests run in parallel without sharing state. Each
//! BMC gets a distinct 127.x.y.z address (all of 127/8 is local on Linux), so even the
//! "bind to port 0, read the port, close it" trick cannot hand the same address+port to two
//! tests at once.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The deadline for one client command. Generous (a session on loopback takes well under a
/// second) so that a loaded CI machine does not flake, but finite so a hang fails the test
/// instead of hanging CI.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a freshly started BMC may take to bind its socket.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The password every test BMC uses unless a test says otherwise (IPMI 2.0 allows 20 bytes).
pub const PASSWORD: &str = "it-secret-pw-0123";
/// The user every test BMC uses.
pub const USER: &str = "admin";

/// The ovbmc binary cargo built for this test run.
pub fn ovbmc_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ovbmc"))
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A number unique within this test process (for addresses and scratch directories).
fn next_id() -> u32 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A loopback address no other test of this run uses: 127.(pid-derived).(n / 250).(n % 250 + 2).
/// The middle byte comes from the process id so that two test processes on one machine (two
/// checkouts, or `cargo test` run twice) are unlikely to collide either.
pub fn unique_loopback() -> Ipv4Addr {
    let n = next_id();
    let b = 100 + (std::process::id() % 100) as u8;
    Ipv4Addr::new(127, b, (n / 250) as u8, (n % 250) as u8 + 2)
}

/// A UDP port that was free on `addr` a moment ago.
pub fn free_udp_port(addr: Ipv4Addr) -> u16 {
    let s = UdpSocket::bind((addr, 0)).unwrap_or_else(|e| panic!("bind {addr}:0: {e}"));
    s.local_addr().expect("local_addr").port()
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new empty directory under the system temp dir.
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "ovbmc-it-{}-{}-{}",
            std::process::id(),
            next_id(),
            tag
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        Self(p)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Write a file with mode 0600 (as Ironic writes its password files) and return its path.
    pub fn write_secret(&self, name: &str, content: &str) -> PathBuf {
        use std::os::unix::fs::OpenOptionsExt;
        let p = self.0.join(name);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p)
            .unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        f.write_all(content.as_bytes()).expect("write secret");
        p
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// How the BMC is told its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    /// `--password-file FILE` (the documented way).
    File,
    /// The `OVBMC_PASSWORD` environment variable.
    Env,
    /// `--password-file /dev/stdin` with the password written into a pipe: the
    /// `echo pw | ovbmc --password-file /dev/stdin` and `--password-file <(...)` idioms, where
    /// the file can be read only once.
    Pipe,
    /// Not at all (to test that ovbmc refuses to start).
    None,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct BmcConfig {
    pub instance: String,
    pub user: String,
    pub password: String,
    pub password_source: PasswordSource,
    /// `--sim-initial-power`.
    pub initial_power: &'static str,
    pub power_on_ms: u64,
    pub power_off_ms: u64,
    /// Anything else to append to the command line.
    pub extra_args: Vec<String>,
    /// Extra environment variables for the process.
    pub env: Vec<(String, String)>,
    /// A UDP port to use instead of a free ephemeral one (the address is the BMC's own
    /// loopback address, so a fixed port cannot collide; FreeIPMI's `ipmiconsole` refuses
    /// ports above 32767 in `-h HOST:PORT`).
    pub port: Option<u16>,
}

impl Default for BmcConfig {
    fn default() -> Self {
        Self {
            instance: "it-node".to_string(),
            user: USER.to_string(),
            password: PASSWORD.to_string(),
            password_source: PasswordSource::File,
            // Explicit, so that no test depends on the simulator's defaults.
            initial_power: "off",
            power_on_ms: 0,
            power_off_ms: 0,
            extra_args: Vec::new(),
            env: Vec::new(),
            port: None,
        }
    }
}

/// A running `ovbmc --backend sim`. The child is killed when this is dropped, so a failing
/// (panicking) test never leaves a server behind.
pub struct Bmc {
    child: Option<Child>,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub cfg: BmcConfig,
    /// A file holding the right password (for `ipmitool -f`).
    pub password_file: PathBuf,
    /// Where the server's stdout and stderr go.
    pub log_file: PathBuf,
    /// Holds the password and log files; removed on drop.
    _dir: ScratchDir,
}

impl fmt::Debug for Bmc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bmc({}:{} {})", self.addr, self.port, self.cfg.instance)
    }
}

impl Bmc {
    /// Start a BMC with the defaults (simulator powered off, zero transition delays).
    pub fn start() -> Self {
        Self::start_with(BmcConfig::default())
    }

    /// Start a BMC and wait until it answers on its UDP port.
    pub fn start_with(cfg: BmcConfig) -> Self {
        let mut bmc = Self::spawn(cfg);
        bmc.wait_ready();
        bmc
    }

    /// Start the process without waiting for it to be ready.
    pub fn spawn(cfg: BmcConfig) -> Self {
        let dir = ScratchDir::new("bmc");
        let addr = unique_loopback();
        let port = cfg.port.unwrap_or_else(|| free_udp_port(addr));
        let password_file = dir.write_secret("bmc-password", &cfg.password);
        let log_file = dir.path().join("ovbmc.log");
        let log = fs::File::create(&log_file).expect("create log file");

        let mut cmd = Command::new(ovbmc_bin());
        cmd.args(["--backend", "sim", "--bind"])
            .arg(addr.to_string())
            .arg("--port")
            .arg(port.to_string())
            .arg("--instance")
            .arg(&cfg.instance)
            .arg("--user")
            .arg(&cfg.user)
            .arg("--sim-initial-power")
            .arg(cfg.initial_power)
            .arg("--sim-power-on-ms")
            .arg(cfg.power_on_ms.to_string())
            .arg("--sim-power-off-ms")
            .arg(cfg.power_off_ms.to_string())
            .args(&cfg.extra_args)
            .envs(cfg.env.iter().map(|(k, v)| (k, v)))
            // Never inherit credentials from the developer's shell.
            .env_remove("OVBMC_PASSWORD")
            .env_remove("OVBMC_USER")
            .stdin(if cfg.password_source == PasswordSource::Pipe {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        match cfg.password_source {
            PasswordSource::File => {
                cmd.arg("--password-file").arg(&password_file);
            }
            PasswordSource::Env => {
                cmd.env("OVBMC_PASSWORD", &cfg.password);
            }
            PasswordSource::Pipe => {
                cmd.arg("--password-file").arg("/dev/stdin");
            }
            PasswordSource::None => {}
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", ovbmc_bin().display()));
        if let Some(mut stdin) = child.stdin.take() {
            // Dropping the handle closes the pipe: ovbmc sees the password, then EOF.
            stdin
                .write_all(cfg.password.as_bytes())
                .expect("write the password to ovbmc's stdin");
        }
        Self {
            child: Some(child),
            addr,
            port,
            cfg,
            password_file,
            log_file,
            _dir: dir,
        }
    }

    /// `addr:port` of the BMC.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, self.port))
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    /// Wait until the server answers a session-less Get Channel Authentication Capabilities
    /// request, or says `listening` in its log. Panics (with the server log) if it exits or
    /// takes longer than [`STARTUP_TIMEOUT`].
    ///
    /// We never probe by binding the port ourselves: holding the port even briefly could make
    /// the server's own bind fail.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let probe = UdpSocket::bind((self.addr, 0)).expect("bind probe socket");
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set_read_timeout");
        let request = get_channel_auth_caps_request(0x04);
        loop {
            if let Some(status) = self.try_wait() {
                panic!("ovbmc exited during start-up with {status} (its log follows)");
            }
            if self.log().contains("listening") {
                return;
            }
            // Ignore send errors (ICMP port unreachable shows up as ECONNREFUSED on Linux).
            let _ = probe.send_to(&request, self.socket_addr());
            let mut buf = [0u8; 512];
            if let Ok((n, from)) = probe.recv_from(&mut buf)
                && from == self.socket_addr()
                && n > 0
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "ovbmc did not answer on {} within {STARTUP_TIMEOUT:?} (its log follows)",
                    self.socket_addr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Wait for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a signal by name (`TERM`, `INT`) with the system `kill` (std has no signal API and
    /// the crate forbids `unsafe`).
    pub fn signal(&self, name: &str) {
        let st = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{name} {} failed", self.pid());
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // When a test fails, show what the server said (captured with the test's output, so it
        // is printed under that test's failure); a passing test stays quiet.
        if thread::panicking() {
            eprintln!(
                "--- ovbmc log ({}:{}) ---\n{}--- end of ovbmc log ---",
                self.addr,
                self.port,
                self.log()
            );
        }
    }
}

/// A session-less IPMI 1.5 Get Channel Authentication Capabilities request (App 06/38) asking
/// for IPMI 2.0 extended data (`8E`) at `privilege`: the first packet every client sends.
pub fn get_channel_auth_caps_request(privilege: u8) -> Vec<u8> {
    let msg = ipmi_request(0x06, 0x38, &[0x8E, privilege]);
    let mut p = vec![
        0x06, 0x00, 0xFF, 0x07, // RMCP: version 6, reserved, seq FF (no ack), class IPMI
        0x00, // auth type none
        0x00, 0x00, 0x00, 0x00, // session sequence
        0x00, 0x00, 0x00, 0x00, // session id
    ];
    p.push(msg.len() as u8);
    p.extend_from_slice(&msg);
    p
}

/// A session-less IPMI 2.0 (auth type 06, payload IPMI) request carrying `netfn/cmd/data`.
pub fn session_less_v2_request(netfn: u8, cmd: u8, data: &[u8]) -> Vec<u8> {
    let msg = ipmi_request(netfn, cmd, data);
    let mut p = vec![
        0x06, 0x00, 0xFF, 0x07, // RMCP
        0x06, // auth type/format: RMCP+
        0x00, // payload type IPMI, not encrypted, not authenticated
        0x00, 0x00, 0x00, 0x00, // session id
        0x00, 0x00, 0x00, 0x00, // session sequence
    ];
    p.extend_from_slice(&(msg.len() as u16).to_le_bytes());
    p.extend_from_slice(&msg);
    p
}

/// An IPMI LAN message from software ID 0x81 to the BMC (0x20), rqSeq 1.
fn ipmi_request(netfn: u8, cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![0x20, netfn << 2];
    m.push(checksum(&m));
    let body_start = m.len();
    m.extend_from_slice(&[0x81, 0x04, cmd]); // rqAddr, rqSeq 1 << 2 | lun 0, cmd
    m.extend_from_slice(data);
    let c = checksum(&m[body_start..]);
    m.push(c);
    m
}

/// The IPMI 2's-complement checksum.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// The outcome of one client command.
#[derive(Debug)]
pub struct Ran {
    /// The command line, for messages (passwords given with `-P`/`-p` are shown: they are test
    /// passwords).
    pub cmdline: String,
    /// `None` when the command was killed at its deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Ran {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Killed at the deadline.
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// stdout and stderr together.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panic unless the command succeeded; return stdout.
    #[track_caller]
    pub fn expect_success(&self) -> &str {
        assert!(self.success(), "expected success:\n{self}");
        &self.stdout
    }

    /// Panic unless the command failed (and did not merely hang).
    #[track_caller]
    pub fn expect_failure(&self) -> &Self {
        assert!(!self.timed_out(), "expected a failure, got a hang:\n{self}");
        assert!(!self.success(), "expected failure:\n{self}");
        self
    }
}

impl fmt::Display for Ran {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => format!("KILLED after the {CLIENT_TIMEOUT:?} deadline"),
        };
        write!(
            f,
            "$ {}\n[{status}, {:.1?}]\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.cmdline, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Run `program args...` with stdin closed, capture its output, and kill it at `timeout`.
pub fn run(program: &Path, args: &[String], env: &[(&str, &str)], timeout: Duration) -> Ran {
    let cmdline = std::iter::once(program.display().to_string())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ");
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
    let out = reader(child.stdout.take().expect("stdout pipe"));
    let err = reader(child.stderr.take().expect("stderr pipe"));
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(s) => break Some(s),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => thread::sleep(Duration::from_millis(10)),
        }
    };
    let elapsed = start.elapsed();
    Ran {
        cmdline,
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed,
    }
}

fn reader(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Search `PATH` (plus the sbin directories, where Debian puts freeipmi) for `name`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether CI asked for every client tier to run (`OVBMC_REQUIRE_CLIENTS=1`).
pub fn clients_required() -> bool {
    std::env::var("OVBMC_REQUIRE_CLIENTS").is_ok_and(|v| v == "1")
}

/// Print a tier's SKIP line once per test process. Written straight to the process's stderr
/// (not `eprintln!`, which the test harness captures) so it shows in every `cargo test` run.
pub fn skip(tier: &str, reason: &str) {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen
        .get_or_insert_with(HashSet::new)
        .insert(tier.to_string())
    {
        let _ = writeln!(std::io::stderr(), "SKIP {tier}: {reason}");
    }
}

/// The path of `client` for `tier`, or `None` after printing `SKIP` when it is not installed.
/// With `OVBMC_REQUIRE_CLIENTS=1` a missing client fails the test instead.
pub fn client(tier: &str, name: &str) -> Option<PathBuf> {
    match find_program(name) {
        Some(p) => Some(p),
        None if clients_required() => {
            panic!("{tier}: {name} is not installed and OVBMC_REQUIRE_CLIENTS=1")
        }
        None => {
            skip(tier, &format!("{name} not installed"));
            None
        }
    }
}

/// Assert that `haystack` contains `needle`, showing the whole command on failure.
#[track_caller]
pub fn assert_contains(ran: &Ran, needle: &str) {
    assert!(
        ran.stdout.contains(needle),
        "stdout lacks {needle:?}:\n{ran}"
    );
}

/// Assert that some stdout line, with runs of spaces collapsed, equals `key : value` (ipmitool
/// and freeipmi pad their keys with a varying number of spaces).
#[track_caller]
pub fn assert_field(ran: &Ran, key: &str, value: &str) {
    assert!(
        field(&ran.stdout, key).as_deref() == Some(value),
        "stdout lacks a line `{key} : {value}` (found {:?}):\n{ran}",
        field(&ran.stdout, key)
    );
}

/// The value of the first `key : value` line in `text` (key compared after trimming).
pub fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// A UDP relay between one client and a BMC that can drop the BMC's answer to the n-th
/// client datagram, once: a lost response as the network would lose it, so that the client
/// retries. IPMI clients have one request outstanding at a time, so "the answer to the n-th
/// datagram" is well defined.
pub struct LossyRelay {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<RelayStats>>,
}

/// What a [`LossyRelay`] saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams from the client.
    pub requests: usize,
    /// Datagrams from the BMC that were dropped.
    pub dropped: usize,
}

impl LossyRelay {
    /// Relay on `bmc`'s address (another port) to `bmc`; drop the answer to client datagram
    /// number `drop_answer_to` (1-based), if given.
    pub fn start(bmc: &Bmc, drop_answer_to: Option<usize>) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let sock = UdpSocket::bind((bmc.addr, 0)).expect("bind relay");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set_read_timeout");
        let port = sock.local_addr().expect("local_addr").port();
        let upstream = bmc.socket_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = thread::spawn(move || {
            let mut stats = RelayStats::default();
            let mut client: Option<SocketAddr> = None;
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if from == upstream {
                    if drop_answer_to == Some(stats.requests) && stats.dropped == 0 {
                        stats.dropped += 1;
                        continue;
                    }
                    if let Some(c) = client {
                        let _ = sock.send_to(&buf[..n], c);
                    }
                } else {
                    client = Some(from);
                    stats.requests += 1;
                    let _ = sock.send_to(&buf[..n], upstream);
                }
            }
            stats
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Stop relaying and return what was seen.
    pub fn finish(mut self) -> RelayStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("thread")
            .join()
            .expect("relay thread panicked")
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where the labs are: `OVBMC_LAB`, else the project's own `tests/lab`.
pub(crate) fn lab_dir() -> PathBuf {
    std::env::var("OVBMC_LAB")
        .ok()
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab"))
}

/// One setting of the lab, asked of `tests/lab/env KIND KEY` (lab.conf and its environment
/// overrides, e.g. `OVBMC_LAB_PORT_OFFSET`), or `None` for a lab without `env` (e.g.
/// `../shared/lab`), whose callers fall back to that lab's defaults.
pub(crate) fn lab_env(kind: &str, key: &str) -> Option<String> {
    let env = lab_dir().join("env");
    if !env.is_file() {
        return None;
    }
    let out = std::process::Command::new(&env)
        .args([kind, key])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

/// The OpenStack lab's `openstack` CLI as the lab's plain user (cloud `lab` of `clouds`), for
/// the tests that check the lab's objects from outside ovbmc: one runner, so that each runs it
/// with the same environment and deadline.
pub(crate) struct LabCli {
    pub(crate) bin: PathBuf,
    pub(crate) clouds: PathBuf,
}

impl LabCli {
    /// The lab's own CLI (`tests/lab/env openstack openstack`) with `clouds`.
    pub(crate) fn with(clouds: &Path) -> Self {
        let bin = lab_env("openstack", "openstack").expect("the lab's openstack CLI");
        Self {
            bin: bin.into(),
            clouds: clouds.to_path_buf(),
        }
    }

    /// The lab's CLI and clouds.yaml (`tests/lab/env`), if the lab says where they are.
    pub(crate) fn find() -> Option<Self> {
        Some(Self {
            bin: lab_env("openstack", "openstack")?.into(),
            clouds: lab_env("openstack", "clouds")?.into(),
        })
    }

    /// `openstack --os-cloud lab ARGS`, within two minutes (the lab's calls take seconds).
    pub(crate) fn ran(&self, args: &[&str]) -> Ran {
        let a: Vec<String> = ["--os-cloud", "lab"]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect();
        let clouds = self.clouds.display().to_string();
        run(
            &self.bin,
            &a,
            &[
                ("OS_CLIENT_CONFIG_FILE", clouds.as_str()),
                ("PYTHONWARNINGS", "ignore"),
            ],
            Duration::from_secs(120),
        )
    }

    /// Its stdout; panics (with the output) unless it succeeded.
    #[track_caller]
    pub(crate) fn text(&self, args: &[&str]) -> String {
        self.ran(args).expect_success().to_string()
    }

    /// `ARGS -f json`, parsed, or what went wrong.
    pub(crate) fn try_json(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let a: Vec<&str> = args.iter().copied().chain(["-f", "json"]).collect();
        let ran = self.ran(&a);
        if !ran.success() {
            return Err(ran.to_string());
        }
        serde_json::from_str(&ran.stdout).map_err(|e| format!("{e}:\n{ran}"))
    }

    /// `ARGS -f json`, parsed (`Null` for an empty answer); panics unless it succeeded.
    #[track_caller]
    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        let a: Vec<&str> = args.iter().copied().chain(["-f", "json"]).collect();
        serde_json::from_str(self.ran(&a).expect_success()).unwrap_or(serde_json::Value::Null)
    }
}

/// Run a command (`ip ...` for the namespace tests) that must succeed; its stdout.
#[track_caller]
pub fn sh(args: &[&str]) -> String {
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
