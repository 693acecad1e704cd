//! One `ovbmc --config` process serving a fleet: 100 BMC addresses on loopback, each with its
//! own simulated machine, checked with ipmitool (several at once) and raw probes; SIGHUP
//! reloads; bad fleet files are refused with a message naming the entry and the field.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    CLIENT_TIMEOUT, PASSWORD, Ran, ScratchDir, USER, client, free_udp_port,
    get_channel_auth_caps_request, ovbmc_bin, run,
};

/// How long a fleet may take to bind everything and log `serving`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `ovbmc` (optionally under a wrapper such as `ip netns exec NS`), killed on drop.
pub struct FleetProc {
    child: Option<Child>,
    pub log_file: PathBuf,
}

impl FleetProc {
    /// Start `wrapper... ovbmc args...` with its output in `log_file`.
    pub fn spawn(wrapper: &[String], args: &[String], log_file: PathBuf) -> Self {
        let log = fs::File::create(&log_file).expect("create log file");
        let mut cmd = match wrapper.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(ovbmc_bin());
                c
            }
            None => Command::new(ovbmc_bin()),
        };
        cmd.args(args)
            .env_remove("OVBMC_PASSWORD")
            .env_remove("OVBMC_USER")
            .env_remove("OS_CLOUD")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        let child = cmd.spawn().expect("spawn ovbmc");
        Self {
            child: Some(child),
            log_file,
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// Exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Wait until the log has `needle` at least `count` times; `Err(log)` if the process
    /// exits first or the deadline passes.
    pub fn wait_log(
        &mut self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return Ok(());
            }
            if let Some(st) = self.try_wait() {
                return Err(format!(
                    "ovbmc exited ({st}) before logging {needle:?}:\n{log}"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ovbmc did not log {needle:?} within {timeout:?}:\n{log}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait for the process to exit (killing it at the deadline).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Send a signal by name with the system `kill` (the crate forbids `unsafe`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("child").id();
        let st = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{name} {pid} failed");
    }
}

impl Drop for FleetProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!("--- ovbmc log ---\n{}--- end of ovbmc log ---", self.log());
        }
    }
}

/// `n` loopback addresses 127.X.Y.1..=n, X from the process id (outside the 127.100-199
/// range `support::unique_loopback` uses) and Y per call, so parallel tests never share one.
fn fleet_addrs(n: u8) -> Vec<Ipv4Addr> {
    use std::sync::atomic::{AtomicU8, Ordering};
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let x = 200 + (std::process::id() % 50) as u8;
    let y = NEXT.fetch_add(1, Ordering::Relaxed);
    (1..=n).map(|i| Ipv4Addr::new(127, x, y, i)).collect()
}

/// A fleet file for sim BMCs at `addrs`, all on `port`, instance `node-<i>`.
fn fleet_toml(addrs: &[Ipv4Addr], port: u16, pwfile: &Path) -> String {
    let mut s = format!(
        "[defaults]\nbackend = \"sim\"\nport = {port}\nuser = \"{USER}\"\n\
         password_file = \"{}\"\nsim_power_on_ms = 0\nsim_power_off_ms = 0\n",
        pwfile.display()
    );
    for (i, a) in addrs.iter().enumerate() {
        write!(s, "\n[[bmc]]\naddress = \"{a}\"\ninstance = \"node-{i}\"\n").unwrap();
    }
    s
}

/// Start a fleet on `addrs`, picking a port free on the first address (retrying with another
/// port if some other process took it on one of the others meanwhile).
fn start_fleet(dir: &ScratchDir, addrs: &[Ipv4Addr], pwfile: &Path) -> (FleetProc, u16, PathBuf) {
    let cfg = dir.path().join("fleet.toml");
    let mut last = String::new();
    for attempt in 0..3 {
        let port = free_udp_port(addrs[0]);
        fs::write(&cfg, fleet_toml(addrs, port, pwfile)).expect("write fleet");
        let mut p = FleetProc::spawn(
            &[],
            &["--config".into(), cfg.display().to_string()],
            dir.path().join(format!("ovbmc-{attempt}.log")),
        );
        match p.wait_log("serving", 1, STARTUP_TIMEOUT) {
            Ok(()) => return (p, port, cfg),
            Err(log) if log.contains("cannot bind") => last = log,
            Err(log) => panic!("{log}"),
        }
    }
    panic!("could not find a free port for the fleet:\n{last}");
}

fn ipmitool(tool: &Path, addr: Ipv4Addr, port: u16, pwfile: &Path, cmd: &[&str]) -> Ran {
    let mut args: Vec<String> = [
        "-I",
        "lanplus",
        "-H",
        &addr.to_string(),
        "-p",
        &port.to_string(),
        "-U",
        USER,
        "-f",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(pwfile.display().to_string());
    args.extend(["-C", "17"].map(String::from));
    args.extend(cmd.iter().map(|s| s.to_string()));
    run(tool, &args, &[], CLIENT_TIMEOUT)
}

/// Which of `targets` answer a session-less Get Channel Authentication Capabilities within
/// `timeout` (re-sent every 200 ms, as a client would retry).
fn answering(targets: &[SocketAddr], timeout: Duration) -> Vec<SocketAddr> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind probe");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let req = get_channel_auth_caps_request(0x04);
    let mut got: Vec<SocketAddr> = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut next_send = Instant::now();
    while Instant::now() < deadline && got.len() < targets.len() {
        if Instant::now() >= next_send {
            for t in targets.iter().filter(|t| !got.contains(t)) {
                let _ = sock.send_to(&req, t);
            }
            next_send = Instant::now() + Duration::from_millis(200);
        }
        let mut buf = [0u8; 512];
        if let Ok((n, from)) = sock.recv_from(&mut buf)
            && n > 0
            && targets.contains(&from)
            && !got.contains(&from)
        {
            got.push(from);
        }
    }
    got
}

/// 100 BMC addresses in one process: all answer; ipmitool sessions to several at once each
/// reach their own machine (powering one on leaves the others off).
#[test]
fn one_process_serves_a_hundred_bmcs() {
    let dir = ScratchDir::new("fleet100");
    let pw = dir.write_secret("pw", PASSWORD);
    let addrs = fleet_addrs(100);
    let (proc_, port, _) = start_fleet(&dir, &addrs, &pw);
    let targets: Vec<SocketAddr> = addrs.iter().map(|a| SocketAddr::from((*a, port))).collect();
    let got = answering(&targets, Duration::from_secs(20));
    assert_eq!(got.len(), 100, "only {} of 100 BMCs answered", got.len());

    let Some(tool) = client("fleet", "ipmitool") else {
        return;
    };
    ipmitool(&tool, addrs[36], port, &pw, &["power", "on"]).expect_success();
    // Several sessions at once, to different BMCs of the one process.
    let picks = [0usize, 1, 36, 49, 99];
    let handles: Vec<_> = picks
        .iter()
        .map(|&i| {
            let (tool, pw, a) = (tool.clone(), pw.clone(), addrs[i]);
            thread::spawn(move || (i, ipmitool(&tool, a, port, &pw, &["power", "status"])))
        })
        .collect();
    for h in handles {
        let (i, r) = h.join().expect("client thread");
        let want = if i == 36 {
            "Chassis Power is on"
        } else {
            "Chassis Power is off"
        };
        assert!(r.expect_success().contains(want), "BMC {i}: {r}");
    }
    drop(proc_);
}

/// SIGHUP: an added BMC starts, a removed one stops, an unchanged one keeps its machine
/// (its power state survives), a changed one restarts with the new settings.
#[test]
fn sighup_reloads_the_fleet() {
    let Some(tool) = client("fleet", "ipmitool") else {
        return;
    };
    let dir = ScratchDir::new("reload");
    let pw = dir.write_secret("pw", PASSWORD);
    let addrs = fleet_addrs(4);
    let (mut p, port, cfg) = start_fleet(&dir, &addrs[..3], &pw);
    ipmitool(&tool, addrs[0], port, &pw, &["power", "on"]).expect_success();
    ipmitool(&tool, addrs[2], port, &pw, &["power", "on"]).expect_success();

    // Keep 0 as is, drop 1, change 2 (new instance name), add 3.
    let mut text = fleet_toml(&[addrs[0], addrs[2], addrs[3]], port, &pw);
    text = text.replace("instance = \"node-1\"", "instance = \"node-2-renamed\"");
    fs::write(&cfg, text).unwrap();
    p.signal("HUP");
    p.wait_log("reload:", 1, STARTUP_TIMEOUT)
        .unwrap_or_else(|l| panic!("{l}"));
    assert!(
        p.log()
            .contains("1 added, 1 removed, 1 unchanged, 1 restarted"),
        "{}",
        p.log()
    );

    let on = ipmitool(&tool, addrs[0], port, &pw, &["power", "status"]);
    assert!(
        on.expect_success().contains("is on"),
        "unchanged BMC lost its machine: {on}"
    );
    let changed = ipmitool(&tool, addrs[2], port, &pw, &["power", "status"]);
    assert!(
        changed.expect_success().contains("is off"),
        "changed BMC kept the old machine: {changed}"
    );
    let added = ipmitool(&tool, addrs[3], port, &pw, &["power", "status"]);
    assert!(added.expect_success().contains("is off"), "{added}");
    let gone = SocketAddr::from((addrs[1], port));
    assert!(
        answering(&[gone], Duration::from_secs(2)).is_empty(),
        "the removed BMC still answers"
    );

    // A broken file on reload: the running fleet stays as it was.
    fs::write(&cfg, "[[bmc]]\naddress = \"nope\"\n").unwrap();
    p.signal("HUP");
    p.wait_log("reload failed", 1, STARTUP_TIMEOUT)
        .unwrap_or_else(|l| panic!("{l}"));
    let still = ipmitool(&tool, addrs[0], port, &pw, &["power", "status"]);
    assert!(still.expect_success().contains("is on"), "{still}");
}

/// Run `ovbmc --config <text>` and return (exit status, output); it must exit by itself.
fn refused(text: &str) -> (Option<ExitStatus>, String) {
    let dir = ScratchDir::new("badcfg");
    let cfg = dir.path().join("fleet.toml");
    fs::write(&cfg, text).unwrap();
    let r = run(
        &ovbmc_bin(),
        &["--config".into(), cfg.display().to_string()],
        &[],
        CLIENT_TIMEOUT,
    );
    assert!(!r.timed_out(), "ovbmc kept running with a bad config:\n{r}");
    assert!(!r.success(), "ovbmc accepted a bad config:\n{r}");
    (r.status, r.output())
}

#[test]
fn bad_fleet_files_are_refused_with_the_entry_named() {
    let a = fleet_addrs(2);
    let dir = ScratchDir::new("badpw");
    let pw = dir.write_secret("pw", PASSWORD);
    let head = format!(
        "[defaults]\nbackend = \"sim\"\npassword_file = \"{}\"\n",
        pw.display()
    );

    let dup = format!(
        "{head}[[bmc]]\naddress = \"{0}\"\ninstance = \"a\"\n[[bmc]]\naddress = \"{0}\"\ninstance = \"b\"\n",
        a[0]
    );
    let (_, out) = refused(&dup);
    assert!(
        out.contains("bmc #2") && out.contains(&a[0].to_string()),
        "{out}"
    );

    let typo = format!(
        "{head}[[bmc]]\naddress = \"{}\"\ninstance = \"a\"\nprot = 6230\n",
        a[0]
    );
    let (_, out) = refused(&typo);
    assert!(out.contains("bmc #1") && out.contains("prot"), "{out}");

    let no_pw = format!(
        "[defaults]\nbackend = \"sim\"\n[[bmc]]\naddress = \"{}\"\ninstance = \"a\"\n",
        a[0]
    );
    let (_, out) = refused(&no_pw);
    assert!(out.contains("password"), "{out}");

    let missing_file = format!(
        "[defaults]\nbackend = \"sim\"\npassword_file = \"/nonexistent/pw\"\n\
         [[bmc]]\naddress = \"{}\"\ninstance = \"a\"\n",
        a[0]
    );
    let (_, out) = refused(&missing_file);
    assert!(
        out.contains("bmc #1") && out.contains("/nonexistent/pw"),
        "{out}"
    );

    // The second address cannot be bound (not on this host: 192.0.2.0/24 is TEST-NET-1;
    // binding sends nothing). Nothing may be left serving: the process exits.
    let half = format!(
        "{head}port = {}\n[[bmc]]\naddress = \"{}\"\ninstance = \"a\"\n[[bmc]]\naddress = \"192.0.2.45\"\ninstance = \"b\"\n",
        free_udp_port(a[1]),
        a[1]
    );
    let (_, out) = refused(&half);
    assert!(
        out.contains("192.0.2.45") && out.contains("cannot bind"),
        "{out}"
    );
}

#[test]
fn config_and_single_bmc_flags_do_not_mix() {
    let r = run(
        &ovbmc_bin(),
        &["--config", "/x.toml", "--bind", "127.0.0.1"].map(String::from),
        &[],
        CLIENT_TIMEOUT,
    );
    r.expect_failure();
    assert!(r.stderr.contains("cannot be used with"), "{r}");
}

/// Issue 11 item 5: SIGTERM during a reload is honoured at once. The reload adds a Nova BMC
/// whose Keystone (a TCP listener that accepts and never answers) would hold it for the
/// 120 s `nova_timeout_secs`; SIGTERM in the middle ends the process with status 0 long before
/// (before the fix the signal waited for the reload to give up).
#[test]
fn sigterm_during_a_reload_is_honoured_at_once() {
    let dir = ScratchDir::new("reload-term");
    let pw = dir.write_secret("pw", PASSWORD);
    let addrs = fleet_addrs(2);
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let clouds = dir.write_secret(
        "clouds.yaml",
        &format!(
            "clouds:\n  hole:\n    auth:\n      auth_url: http://{}/v3\n      username: u\n      \
             password: p\n      project_name: p\n      user_domain_name: Default\n      \
             project_domain_name: Default\n",
            hole.local_addr().unwrap()
        ),
    );
    // [cloud] is read at start only, so it is there from the start (a sim-only fleet never
    // connects); the reload then adds a Nova BMC.
    let port = free_udp_port(addrs[0]);
    let with_cloud = |text: String| {
        text.replacen(
            "[[bmc]]",
            &format!(
                "[cloud]\nos_cloud = \"hole\"\nos_client_config_file = \"{}\"\n\
             nova_timeout_secs = 120\n\n[[bmc]]",
                clouds.display()
            ),
            1,
        )
    };
    let cfg = dir.path().join("fleet.toml");
    fs::write(&cfg, with_cloud(fleet_toml(&addrs[..1], port, &pw))).unwrap();
    let mut p = FleetProc::spawn(
        &[],
        &["--config".into(), cfg.display().to_string()],
        dir.path().join("ovbmc.log"),
    );
    p.wait_log("serving", 1, STARTUP_TIMEOUT)
        .unwrap_or_else(|l| panic!("{l}"));
    let mut text = with_cloud(fleet_toml(&addrs, port, &pw));
    text = text.replacen(
        "instance = \"node-1\"",
        "instance = \"node-1\"\nbackend = \"nova\"",
        1,
    );
    fs::write(&cfg, text).unwrap();
    p.signal("HUP");
    p.wait_log("SIGHUP: reloading", 1, STARTUP_TIMEOUT)
        .unwrap_or_else(|l| panic!("{l}"));
    // Let the reload reach Keystone (the listener's backlog holds the connection).
    thread::sleep(Duration::from_millis(500));
    p.signal("TERM");
    let st = p
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("SIGTERM during a reload ignored:\n{}", p.log()));
    assert!(st.success(), "{st}:\n{}", p.log());
    assert!(
        p.log()
            .contains("SIGTERM during a reload: reload abandoned"),
        "{}",
        p.log()
    );
    drop(hole);
}

/// Issue 11 item 5: a reload that fails half-way — here the last added BMC's socket is taken,
/// after the secrets, the machines and the other sockets were prepared — leaves the running
/// fleet exactly as it was: the BMC the file drops still answers, the one it changes keeps its
/// machine (still on), the ones it adds do not answer.
#[test]
fn a_reload_that_fails_half_way_changes_nothing() {
    let Some(tool) = client("fleet", "ipmitool") else {
        return;
    };
    let dir = ScratchDir::new("reloadhalf");
    let pw = dir.write_secret("pw", PASSWORD);
    let addrs = fleet_addrs(5);
    let (mut p, port, cfg) = start_fleet(&dir, &addrs[..3], &pw);
    ipmitool(&tool, addrs[2], port, &pw, &["power", "on"]).expect_success();
    // Someone else holds the port on the last address the new file adds.
    let _squatter = UdpSocket::bind(SocketAddr::from((addrs[4], port))).expect("squat");

    // Keep 0, drop 1, change 2 (its instance becomes node-1), add 3 and 4.
    fs::write(
        &cfg,
        fleet_toml(&[addrs[0], addrs[2], addrs[3], addrs[4]], port, &pw),
    )
    .unwrap();
    p.signal("HUP");
    p.wait_log("reload failed", 1, STARTUP_TIMEOUT)
        .unwrap_or_else(|l| panic!("{l}"));
    assert!(p.log().contains(&addrs[4].to_string()), "{}", p.log());

    let kept = ipmitool(&tool, addrs[2], port, &pw, &["power", "status"]);
    assert!(
        kept.expect_success().contains("is on"),
        "the BMC the failed file changed was restarted: {kept}"
    );
    let dropped = SocketAddr::from((addrs[1], port));
    assert_eq!(
        answering(&[dropped], Duration::from_secs(3)),
        vec![dropped],
        "the BMC the failed file drops was stopped"
    );
    let added = SocketAddr::from((addrs[3], port));
    assert!(
        answering(&[added], Duration::from_secs(1)).is_empty(),
        "a BMC the failed file adds was started"
    );
}

/// Issue 11 item 4: a reload that changes one BMC and removes another restarts the changed
/// one on its own socket, before the removals: its address is never free, even for a moment
/// (a process trying to bind it all through the reload never gets it), and it answers after.
#[test]
fn a_changed_bmc_keeps_its_socket_through_a_reload_that_also_removes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = ScratchDir::new("reloadsock");
    let pw = dir.write_secret("pw", PASSWORD);
    let addrs = fleet_addrs(3);
    let (mut p, port, cfg) = start_fleet(&dir, &addrs, &pw);
    let changed = SocketAddr::from((addrs[2], port));
    let stop = Arc::new(AtomicBool::new(false));
    let squatter = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut tries = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if UdpSocket::bind(changed).is_ok() {
                    return Err(tries);
                }
                tries += 1;
            }
            Ok(tries)
        })
    };
    // Keep 0, drop 1, change 2 (its instance is renamed).
    let text = fleet_toml(&[addrs[0], addrs[2]], port, &pw)
        .replace("instance = \"node-1\"", "instance = \"node-2-renamed\"");
    fs::write(&cfg, text).unwrap();
    p.signal("HUP");
    p.wait_log("reload:", 1, STARTUP_TIMEOUT)
        .unwrap_or_else(|l| panic!("{l}"));
    stop.store(true, Ordering::Relaxed);
    let tries = squatter.join().expect("squatter thread");
    assert!(
        tries.is_ok(),
        "the changed BMC's address was free during the reload: {}",
        p.log()
    );
    assert!(
        p.log()
            .contains("0 added, 1 removed, 1 unchanged, 1 restarted"),
        "{}",
        p.log()
    );
    assert_eq!(
        answering(&[changed], Duration::from_secs(3)),
        vec![changed],
        "the changed BMC does not answer after the reload"
    );
}
