//! A failing cloud (issue 5 item 6): ovbmc in front of the real lab Keystone + Nova, with a
//! fault-injecting HTTP proxy between them.
//!
//! ```text
//! ipmitool / raw RMCP+ ──UDP──▶ ovbmc ──HTTP──▶ proxy K ──▶ lab Keystone (127.0.0.1:15000)
//!                                     └─HTTP──▶ proxy N ──▶ lab Nova     (127.0.0.1:18774)
//! ```
//!
//! ovbmc's clouds.yaml points `auth_url` at proxy K and `compute_endpoint_override` at proxy N
//! (the catalog still names the real Nova). Each proxy passes requests through, or injects
//! one fault: connections refused (the listener is closed), HTTP 500, an answer after N
//! seconds, or 401 for the token in use (a token that expires mid-run).
//!
//! Through each fault the test drives ovbmc with a raw RMCP+ console (ipmi-proto's client,
//! one try per request, so the time to each reply is measured exactly) and with ipmitool, and
//! checks: every request is answered within 1 s (busy C0 or another completion code), ovbmc
//! stays up, its log names each cause once and not once per request, the next request after
//! the fault clears succeeds without a restart, and an action answered busy that reached Nova
//! happened and was logged.
//!
//! It uses `baremetal_0` under the nova tier's lock (the Ironic tier owns baremetal_2/3).

use std::collections::HashSet;
use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipmi_proto::client::Client;
use ipmi_proto::crypto::CipherSuite;
use ipmi_proto::fuzzing::Xorshift as TestRng; // the console's nonces need not be secret here
use ipmi_proto::session::Privilege;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::nova::{Bmc, free_port, start_bmc_with};

/// The bound the issue sets for every IPMI answer, whatever the cloud does.
const ANSWER_BOUND: Duration = Duration::from_secs(1);
/// How long ovbmc may take to notice that the cloud is back (a slow request still in flight
/// ends at Nova's 30 s answer; then one cache TTL).
const RECOVERY: Duration = Duration::from_secs(60);
const PASSWORD: &str = "cloudfault-pw";
const USER: &str = "admin";

// ---------------------------------------------------------------------------------------------
// The fault-injecting proxy.

/// What a proxy does with the requests it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fault {
    /// Forward.
    Pass,
    /// Refuse connections (the listening socket is closed): a service that is down.
    Down,
    /// Answer 500 with a Nova-style body.
    Status500,
    /// Forward, but only after this long.
    Delay(Duration),
    /// Forward, but answer 401 to the token of the next request, and to that token ever
    /// after: the token ovbmc holds expires (or is revoked) mid-run. Other tokens pass.
    ExpireToken,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    token_posts: AtomicU64,
    actions: AtomicU64,
    refused_401: AtomicU64,
}

/// A proxy on 127.0.0.1 in front of `upstream`.
struct Proxy {
    port: u16,
    mode: watch::Sender<Fault>,
    counters: Arc<Counters>,
    /// Set by [`Fault::ExpireToken`]: the next token seen is expired.
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    fn start(rt: &tokio::runtime::Runtime, upstream: SocketAddr) -> Proxy {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let (tx, rx) = watch::channel(Fault::Pass);
        let counters = Arc::new(Counters::default());
        let expired = Mutex::new(HashSet::new());
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let shared = Shared {
            upstream,
            counters: counters.clone(),
            expired,
            armed: armed.clone(),
        };
        rt.spawn(accept_loop(listener, port, rx, Arc::new(shared)));
        Proxy {
            port,
            mode: tx,
            counters,
            armed,
        }
    }

    fn set(&self, f: Fault) {
        if f == Fault::ExpireToken {
            self.armed.store(true, Ordering::SeqCst);
        }
        self.mode.send_replace(f);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// What every connection of one proxy shares.
struct Shared {
    upstream: SocketAddr,
    counters: Arc<Counters>,
    /// Tokens answered 401.
    expired: Mutex<HashSet<String>>,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

async fn accept_loop(
    mut listener: TcpListener,
    port: u16,
    mut rx: watch::Receiver<Fault>,
    sh: Arc<Shared>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((conn, _)) = r else { continue };
                let mode = rx.borrow().clone();
                tokio::spawn(handle(conn, mode, sh.clone()));
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                if *rx.borrow_and_update() != Fault::Down {
                    continue;
                }
                // Down: close the socket so that connections are refused, as to a dead
                // service, and open it again on the same port when the fault clears.
                drop(listener);
                while *rx.borrow_and_update() == Fault::Down {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
                listener = loop {
                    match TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(l) => break l,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
            }
        }
    }
}

fn reply(status: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One request per connection (we answer `Connection: close`, and reqwest reconnects).
async fn handle(mut conn: TcpStream, mode: Fault, sh: Arc<Shared>) {
    let counters = &sh.counters;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut tmp = [0u8; 8192];
        match conn.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
        if buf.len() > 1 << 20 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut length = 0usize;
    let mut token = None;
    let mut kept = Vec::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let (k, v) = l.split_once(':').unwrap_or((l, ""));
        let key = k.trim().to_ascii_lowercase();
        match key.as_str() {
            "content-length" => length = v.trim().parse().unwrap_or(0),
            "x-auth-token" => token = Some(v.trim().to_string()),
            "connection" | "keep-alive" => continue,
            _ => {}
        }
        kept.push(l.to_string());
    }
    while buf.len() < head_end + length {
        let mut tmp = [0u8; 8192];
        match conn.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    counters.requests.fetch_add(1, Ordering::Relaxed);
    if request_line.starts_with("POST ") && request_line.contains("/auth/tokens") {
        counters.token_posts.fetch_add(1, Ordering::Relaxed);
    }
    if request_line.starts_with("POST ") && request_line.contains("/action") {
        counters.actions.fetch_add(1, Ordering::Relaxed);
    }
    // An expired token stays expired, whatever the mode is now.
    let refused = {
        let mut e = sh.expired.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = &token
            && !e.contains(t)
            && sh.armed.swap(false, Ordering::SeqCst)
        {
            e.insert(t.clone());
        }
        token.as_ref().is_some_and(|t| e.contains(t))
    };
    if refused {
        counters.refused_401.fetch_add(1, Ordering::Relaxed);
        let body = r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#;
        let _ = conn.write_all(&reply(401, "Unauthorized", body)).await;
        return;
    }
    match mode {
        Fault::Pass | Fault::ExpireToken => {}
        // Accepted just before the listener closed: drop it, as a dying service would.
        Fault::Down => return,
        Fault::Status500 => {
            let body = r#"{"computeFault": {"code": 500, "message": "Unexpected API Error (injected by the test proxy)"}}"#;
            let _ = conn
                .write_all(&reply(500, "Internal Server Error", body))
                .await;
            return;
        }
        Fault::Delay(d) => tokio::time::sleep(d).await,
    }
    let Ok(mut up) = TcpStream::connect(sh.upstream).await else {
        let _ = conn
            .write_all(&reply(502, "Bad Gateway", r#"{"error": "upstream"}"#))
            .await;
        return;
    };
    let mut out = format!("{request_line}\r\n");
    for l in &kept {
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&buf[head_end..head_end + length]);
    if up.write_all(&bytes).await.is_err() {
        return;
    }
    let mut resp = Vec::new();
    let _ = up.read_to_end(&mut resp).await;
    let _ = conn.write_all(&resp).await;
    let _ = conn.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// A raw RMCP+ console with an exact per-request deadline.

struct Console {
    sock: UdpSocket,
    client: Client,
    rng: TestRng,
    rq_seq: u8,
}

/// One answered request.
#[derive(Debug, Clone, Copy)]
struct Answer {
    cc: u8,
    elapsed: Duration,
}

impl Console {
    fn login(bmc: SocketAddr) -> Result<Console, String> {
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        sock.connect(bmc).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(ANSWER_BOUND))
            .map_err(|e| e.to_string())?;
        let mut rng = TestRng::new(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
        let mut client = Client::new(
            CipherSuite::Suite17,
            USER,
            PASSWORD.as_bytes(),
            Privilege::Administrator,
        );
        let mut buf = [0u8; 1024];
        let mut round = |sock: &UdpSocket, d: &[u8]| -> Result<Vec<u8>, String> {
            sock.send(d).map_err(|e| e.to_string())?;
            let n = sock.recv(&mut buf).map_err(|e| format!("login: {e}"))?;
            Ok(buf[..n].to_vec())
        };
        let r = round(&sock, &client.open_session_request())?;
        let rakp1 = client
            .handle_open_session_response(&r, &mut rng)
            .map_err(|e| e.to_string())?;
        let r = round(&sock, &rakp1)?;
        let rakp3 = client.handle_rakp2(&r).map_err(|e| e.to_string())?;
        let r = round(&sock, &rakp3)?;
        client.handle_rakp4(&r).map_err(|e| e.to_string())?;
        let mut con = Console {
            sock,
            client,
            rng,
            rq_seq: 0,
        };
        // A session starts at USER privilege; raise it to ADMINISTRATOR as ipmitool does (Set
        // Session Privilege Level, IPMI v2.0 §22.18).
        let a = con.cmd(0x06, 0x3b, &[0x04])?;
        if a.cc != 0 {
            return Err(format!("Set Session Privilege Level: cc {:#04x}", a.cc));
        }
        Ok(con)
    }

    /// Send one request, once, and wait at most [`ANSWER_BOUND`] for its answer.
    fn cmd(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> Result<Answer, String> {
        self.rq_seq = (self.rq_seq + 1) & 0x3f;
        let seq = self.rq_seq;
        let d = self
            .client
            .request_with_rq_seq(netfn, cmd, data, seq, &mut self.rng);
        let start = Instant::now();
        self.sock.send(&d).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1024];
        loop {
            let left = ANSWER_BOUND.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(format!("no answer to {netfn:02x}/{cmd:02x} within 1 s"));
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let n = match self.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(_) => return Err(format!("no answer to {netfn:02x}/{cmd:02x} within 1 s")),
            };
            // An answer to an earlier request (there should be none) is skipped.
            if let Ok((rs, cc, _)) = self.client.response(&buf[..n])
                && rs == seq
            {
                return Ok(Answer {
                    cc: cc.into(),
                    elapsed: start.elapsed(),
                });
            }
        }
    }

    /// Get Chassis Status (IPMI v2.0 §28.2).
    fn status(&mut self) -> Result<Answer, String> {
        self.cmd(0x00, 0x01, &[])
    }

    /// Chassis Control (§28.3): 0 off, 1 on.
    fn control(&mut self, what: u8) -> Result<Answer, String> {
        self.cmd(0x00, 0x02, &[what])
    }

    /// Set System Boot Options parameter 5 (§28.12): persistent, disk.
    fn bootdev_disk(&mut self) -> Result<Answer, String> {
        self.cmd(0x00, 0x08, &[0x05, 0xc0, 0x08, 0x00, 0x00, 0x00])
    }
}

// ---------------------------------------------------------------------------------------------
// ovbmc and ipmitool.

/// The `lab` entry of the lab's clouds.yaml, with `auth_url` through proxy K and a
/// `compute_endpoint_override` through proxy N.
fn proxied_clouds_yaml(lab: &Path, keystone: &Proxy, nova: &Proxy) -> String {
    let text = std::fs::read_to_string(lab).expect("read the lab clouds.yaml");
    let mut out = String::from("clouds:\n  lab:\n");
    let mut in_lab = false;
    for line in text.lines() {
        if line.starts_with("  ") && !line.starts_with("   ") {
            in_lab = line.trim() == "lab:";
            continue;
        }
        if !in_lab || !line.starts_with("    ") {
            continue;
        }
        if line.trim_start().starts_with("auth_url:") {
            out.push_str(&format!("      auth_url: {}/v3\n", keystone.url()));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "    compute_endpoint_override: {}/v2.1\n",
        nova.url()
    ));
    out
}

/// ovbmc against the proxies. Nova answers after 30 s in one phase; the default request
/// timeout is also 30 s, and the test wants the late answer to arrive (the timeout path is a
/// unit test), hence `--nova-timeout 60`.
fn start_ovbmc(dir: &Path, clouds: &Path, instance: &str) -> Bmc {
    start_bmc_with(
        clouds,
        dir,
        free_port(),
        instance,
        &["--nova-timeout", "60"],
    )
}

/// One ipmitool run with a single try (`-R 1`) of 1 s (`-N 1`): if any of its requests went
/// unanswered for 1 s, it fails with a timeout message.
fn ipmitool(bmc: &Bmc, dir: &Path, args: &[&str]) -> crate::support::Ran {
    let mut a: Vec<String> = [
        "-I",
        "lanplus",
        "-H",
        "127.0.0.1",
        "-p",
        &bmc.port.to_string(),
        "-U",
        USER,
        "-f",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(dir.join("pw").display().to_string());
    a.extend(["-C", "17", "-R", "1", "-N", "1"].map(String::from));
    a.extend(args.iter().map(|s| s.to_string()));
    let prog = crate::support::find_program("ipmitool").expect("ipmitool");
    crate::support::run(&prog, &a, &[], crate::support::CLIENT_TIMEOUT)
}

/// What ipmitool prints when a request of its session went unanswered.
fn ipmitool_timed_out(out: &str) -> bool {
    let o = out.to_ascii_lowercase();
    o.contains("no response") || o.contains("timeout") || o.contains("unable to establish")
}

// ---------------------------------------------------------------------------------------------
// The phases.

/// What one phase measured.
#[derive(Default, Debug)]
struct Tally {
    answers: usize,
    by_cc: std::collections::BTreeMap<u8, usize>,
    max: Duration,
    /// Chassis Control answered with success (the action must then have happened).
    controls_ok: usize,
}

impl Tally {
    fn add(&mut self, what: &str, r: Result<Answer, String>) -> Answer {
        let a = r.unwrap_or_else(|e| panic!("{what}: {e} (the bound is 1 s)"));
        assert!(
            a.elapsed < ANSWER_BOUND,
            "{what}: answered after {:?}",
            a.elapsed
        );
        self.answers += 1;
        *self.by_cc.entry(a.cc).or_default() += 1;
        self.max = self.max.max(a.elapsed);
        a
    }
}

/// Drive the BMC for `dur`: status, Chassis Control on (the instance is on: success means no
/// change), boot device disk (what it already is), each answered within the bound; and one
/// ipmitool round of the same commands.
fn drive(bmc: &mut Bmc, dir: &Path, con: &mut Console, dur: Duration, t: &mut Tally) {
    let end = Instant::now() + dur;
    let mut i = 0u32;
    while Instant::now() < end {
        t.add("Get Chassis Status", con.status());
        if i % 3 == 1 {
            let a = t.add("Chassis Control on", con.control(1));
            if a.cc == 0 {
                t.controls_ok += 1;
            }
        }
        if i % 3 == 2 {
            t.add("Set Boot Options (disk)", con.bootdev_disk());
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    for args in [
        &["power", "status"][..],
        &["power", "on"],
        &["chassis", "bootdev", "disk", "options=persistent"],
    ] {
        let r = ipmitool(bmc, dir, args);
        assert!(!r.timed_out(), "ipmitool hung:\n{r}");
        assert!(
            !ipmitool_timed_out(&r.output()),
            "an ipmitool request went unanswered:\n{r}"
        );
        println!(
            "  ipmitool {} -> {} in {:.2?}: {}",
            args.join(" "),
            if r.success() { "ok" } else { "error" },
            r.elapsed,
            r.output().trim().replace('\n', " | ")
        );
    }
    assert!(bmc.alive(), "ovbmc exited:\n{}", bmc.log());
}

/// Poll Get Chassis Status until it succeeds (the cloud is back), within [`RECOVERY`].
fn until_recovered(con: &mut Console, t: &mut Tally) -> Duration {
    let start = Instant::now();
    loop {
        let a = t.add("Get Chassis Status (recovery)", con.status());
        if a.cc == 0 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < RECOVERY,
            "ovbmc did not recover within {RECOVERY:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The WARN lines logged since `from` (a byte offset into the log).
fn warnings_since(log: &str, from: usize) -> Vec<String> {
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" WARN "))
        .map(str::to_string)
        .collect()
}

fn report(name: &str, t: &Tally, recovered: Duration, warns: &[String]) {
    println!(
        "{name}: {} answers, max {:.0?}, by completion code {:?}; recovered {:.1?} after the \
         fault cleared; {} WARN line(s):",
        t.answers,
        t.max,
        t.by_cc,
        recovered,
        warns.len()
    );
    for w in warns {
        println!("    {w}");
    }
}

#[test]
fn failing_cloud_every_request_answered_in_time_logged_once_and_recovers() {
    let Some(lab_clouds) = crate::nova::lab() else {
        return;
    };
    if crate::support::client("cloudfault", "ipmitool").is_none() {
        return;
    }
    let _g = crate::nova::hold(&crate::nova::BAREMETAL_0);
    let dir = crate::support::ScratchDir::new("cloudfault");
    let dir = dir.path().to_path_buf();
    std::fs::File::create(dir.join("pw"))
        .and_then(|mut f| f.write_all(PASSWORD.as_bytes()))
        .unwrap();
    let rt = crate::nova::runtime();
    // A direct session (no proxy) to see Nova's real state.
    let m = rt.block_on(crate::nova::machine(
        &lab_clouds,
        ovbmc::cloud::BootStrategy::Metadata,
        "baremetal_0",
    ));
    let direct = m.session().clone();
    let id = m.instance_id().to_string();
    rt.block_on(crate::nova::reset_to_active(&m));

    let port = |key: &str, dflt: &str| {
        let p = crate::support::lab_env("openstack", key).unwrap_or_else(|| dflt.into());
        format!("127.0.0.1:{p}").parse().unwrap()
    };
    let keystone = Proxy::start(&rt, port("keystone_port", "15000"));
    let nova = Proxy::start(&rt, port("nova_port", "18774"));
    let clouds = dir.join("clouds.yaml");
    std::fs::write(&clouds, proxied_clouds_yaml(&lab_clouds, &keystone, &nova)).unwrap();
    let mut bmc = start_ovbmc(&dir, &clouds, "baremetal_0");
    // Ready: ipmitool sees the instance on.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let r = ipmitool(&bmc, &dir, &["power", "status"]);
        if r.success() && r.stdout.contains("Chassis Power is on") {
            break;
        }
        assert!(bmc.alive(), "ovbmc exited:\n{}", bmc.log());
        assert!(Instant::now() < end, "ovbmc never answered:\n{r}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let via_proxy = nova.counters.requests.load(Ordering::Relaxed);
    assert!(
        via_proxy > 0,
        "Nova was not reached through compute_endpoint_override"
    );
    let mut con = Console::login(bmc.addr()).expect("raw console login");
    let mut all = Tally::default();
    let mut base = Tally::default();
    drive(&mut bmc, &dir, &mut con, Duration::from_secs(1), &mut base);
    assert_eq!(base.by_cc.keys().copied().collect::<Vec<_>>(), [0]);

    // 1. Keystone down while the token expires: every request needs a token and cannot get one.
    let mark = bmc.log().len();
    keystone.set(Fault::Down);
    nova.set(Fault::ExpireToken);
    let mut t = Tally::default();
    drive(&mut bmc, &dir, &mut con, Duration::from_secs(6), &mut t);
    assert!(t.by_cc.get(&0xc0).copied().unwrap_or(0) > 0, "{t:?}");
    keystone.set(Fault::Pass);
    nova.set(Fault::Pass);
    let rec = until_recovered(&mut con, &mut t);
    std::thread::sleep(Duration::from_millis(300));
    let log = bmc.log();
    let w = warnings_since(&log, mark);
    report("Keystone down + token expired", &t, rec, &w);
    assert!(
        w.iter().any(|l| l.contains("Keystone token request")),
        "no line names Keystone:\n{w:#?}"
    );
    assert!(w.len() <= 3, "one line per cause, not per packet:\n{w:#?}");
    assert!(log[mark..].contains("working again"), "{}", &log[mark..]);
    all.answers += t.answers;
    all.max = all.max.max(t.max);

    // 2. Nova answers 500 to everything.
    let mark = bmc.log().len();
    nova.set(Fault::Status500);
    let mut t = Tally::default();
    drive(&mut bmc, &dir, &mut con, Duration::from_secs(6), &mut t);
    assert!(t.by_cc.get(&0xc0).copied().unwrap_or(0) > 0, "{t:?}");
    nova.set(Fault::Pass);
    let rec = until_recovered(&mut con, &mut t);
    std::thread::sleep(Duration::from_millis(300));
    let log = bmc.log();
    let w = warnings_since(&log, mark);
    report("Nova 500", &t, rec, &w);
    assert!(
        w.iter().any(|l| l.contains("HTTP 500")),
        "no line says HTTP 500:\n{w:#?}"
    );
    assert!(w.len() <= 3, "one line per cause, not per packet:\n{w:#?}");
    all.answers += t.answers;
    all.max = all.max.max(t.max);

    // 3. The token expires mid-run (Keystone up): one new token, and service goes on.
    let mark = bmc.log().len();
    let tokens = keystone.counters.token_posts.load(Ordering::Relaxed);
    nova.set(Fault::ExpireToken);
    let mut t = Tally::default();
    drive(&mut bmc, &dir, &mut con, Duration::from_secs(5), &mut t);
    nova.set(Fault::Pass);
    let rec = until_recovered(&mut con, &mut t);
    let log = bmc.log();
    let w = warnings_since(&log, mark);
    report("token expired mid-run", &t, rec, &w);
    let new_tokens = keystone.counters.token_posts.load(Ordering::Relaxed) - tokens;
    println!(
        "    {new_tokens} new token(s); {} request(s) refused with 401 so far",
        nova.counters.refused_401.load(Ordering::Relaxed)
    );
    assert_eq!(new_tokens, 1, "exactly one new token");
    assert!(
        log[mark..].contains("re-authenticating"),
        "{}",
        &log[mark..]
    );
    assert!(w.is_empty(), "a renewed token is not a warning:\n{w:#?}");
    all.answers += t.answers;
    all.max = all.max.max(t.max);

    // 4. Nova answers after 30 s. An off sent while the status view is fresh reaches Nova and
    // waits there: the client is told busy, and the action happens and is logged later.
    let mark = bmc.log().len();
    let actions = nova.counters.actions.load(Ordering::Relaxed);
    let mut t = Tally::default();
    t.add("Get Chassis Status", con.status());
    nova.set(Fault::Delay(Duration::from_secs(30)));
    let off = t.add("Chassis Control off", con.control(0));
    assert_eq!(off.cc, 0xc0, "an off waiting for Nova is answered busy");
    // Retries of the off are busy too, and not sent again.
    for _ in 0..3 {
        let a = t.add("Chassis Control off (retry)", con.control(0));
        assert_ne!(
            a.cc, 0,
            "a retry must not claim success while Nova has not answered"
        );
    }
    let slow_start = Instant::now();
    let end = Instant::now() + Duration::from_secs(8);
    while Instant::now() < end {
        t.add("Get Chassis Status", con.status());
        std::thread::sleep(Duration::from_millis(150));
    }
    for args in [&["power", "status"][..], &["power", "off"]] {
        let r = ipmitool(&bmc, &dir, args);
        assert!(
            !r.timed_out() && !ipmitool_timed_out(&r.output()),
            "ipmitool:\n{r}"
        );
        println!(
            "  ipmitool {} -> {} in {:.2?}: {}",
            args.join(" "),
            if r.success() { "ok" } else { "error" },
            r.elapsed,
            r.output().trim().replace('\n', " | ")
        );
    }
    assert!(bmc.alive(), "ovbmc exited:\n{}", bmc.log());
    nova.set(Fault::Pass);
    let rec = until_recovered(&mut con, &mut t);
    println!(
        "    recovered {:.1?} after the slow phase began",
        slow_start.elapsed()
    );
    assert_eq!(
        nova.counters.actions.load(Ordering::Relaxed) - actions,
        1,
        "one os-stop reached Nova, however often the client retried"
    );
    // The off that was answered busy happened ...
    let srv = rt.block_on(crate::nova::until(
        &direct,
        &id,
        "SHUTOFF after the slow off",
        crate::nova::settled("SHUTOFF"),
    ));
    assert_eq!(srv.status, "SHUTOFF");
    // ... and ovbmc says so once it is answered (IPMI status follows Nova again).
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let r = ipmitool(&bmc, &dir, &["power", "status"]);
        if r.stdout.contains("Chassis Power is off") {
            break;
        }
        assert!(Instant::now() < end, "status never said off:\n{r}");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = bmc.log();
    let w = warnings_since(&log, mark);
    report("Nova answering after 30 s", &t, rec, &w);
    assert!(
        log[mark..].contains("power off accepted"),
        "the late off is logged:\n{}",
        &log[mark..]
    );
    assert!(w.len() <= 3, "one line per cause, not per packet:\n{w:#?}");
    all.answers += t.answers;
    all.max = all.max.max(t.max);
    println!(
        "all faults: {} IPMI requests, each answered, slowest after {:.0?}",
        all.answers, all.max
    );

    // Leave the instance on, booting from disk, for the next test.
    drop(con);
    drop(bmc);
    rt.block_on(crate::nova::reset_to_active(&m));
}
