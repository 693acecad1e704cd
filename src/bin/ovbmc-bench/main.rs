//! `ovbmc-bench`: a load generator speaking real RMCP+ (suites 3 and 17) to one or more BMCs.
//!
//! Each client loops: Get Channel Authentication Capabilities, Open Session, RAKP 1/3, Set
//! Session Privilege Level, K commands, Close Session (`--mode login`), or logs in once and
//! sends commands (`--mode hold`). It reports sessions/s, commands/s, p50/p99 latency,
//! errors, and — with `--pid` — the target's CPU time and RSS from /proc, per request and per
//! session. Bounded in time and count, and loopback only: it refuses any other target.
//!
//! For fleets: `--targets-file` lists many BMCs, `--spread` makes every client log in to the
//! next target each time (so the load covers all of them), and the report gives the spread
//! of sessions per target. `--mode probe` sends one Get Channel Authentication Capabilities to
//! every target, re-sending to the silent ones, and reports how long until all answered (the
//! start-up measure of `scripts/bench-scale`). `--mode sol-echo` and `--mode sol-burst` measure
//! Serial over LAN through one BMC (see `sol.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use ipmi_proto::client::Client;
use ipmi_proto::crypto::CipherSuite;
use ipmi_proto::fuzzing::Xorshift as Rng; // a load test's nonces need not be secret
use ipmi_proto::session::Privilege;
use tokio::net::UdpSocket;

mod sol;

#[derive(Debug, Parser)]
#[command(name = "ovbmc-bench", about = "RMCP+ load generator (loopback only)")]
struct Args {
    /// Target BMCs, ADDR:PORT; repeat, or give a port range with --ports.
    #[arg(long, required_unless_present = "targets_file")]
    target: Vec<SocketAddr>,
    /// A file of targets, one ADDR:PORT a line (added to --target).
    #[arg(long)]
    targets_file: Option<std::path::PathBuf>,
    /// Each login goes to the next target (client i starts at target i and steps by the
    /// number of clients), so that many clients cover many BMCs evenly.
    #[arg(long)]
    spread: bool,
    /// Also target ports PORT..PORT+N-1 of the first target's address.
    #[arg(long)]
    ports: Option<u16>,
    /// IPMI user.
    #[arg(long, default_value = "admin")]
    user: String,
    /// File with the IPMI password (not needed by --mode probe).
    #[arg(long)]
    password_file: Option<std::path::PathBuf>,
    /// Cipher suite: 3 or 17.
    #[arg(long, default_value_t = 17)]
    suite: u8,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// sol-echo: keystrokes to time.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// sol-burst: bytes the guest sends (`burst N`), at most 64 MiB.
    #[arg(long, default_value_t = 1 << 20)]
    bytes: u64,
    /// Log in from this many IPv4 loopback source addresses in turn (127.77.0.0/16, each
    /// session from the next), instead of only 127.0.0.1. ovbmc budgets session-less answers
    /// per source address (the reflection defence, docs/security.md), so logins from one
    /// address are capped near 150/s; a real fleet's logins come from few addresses at a few
    /// a second, a benchmark's from one at thousands. 1..=4000 (ovbmc tracks 4,096 sources).
    #[arg(long, default_value_t = 1)]
    sources: u16,
    /// Seconds to run (at most 600).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Commands per session (login mode).
    #[arg(long, default_value_t = 3)]
    commands: usize,
    /// login: log in, run commands, close, repeat. hold: log in once, then only commands.
    /// probe: one session-less request to every target until all answered (or --duration).
    /// ping: ASF presence pings (RMCP, no session, no crypto): the runtime's cost per
    /// datagram, the floor under every other figure.
    #[arg(long, default_value = "login")]
    mode: String,
    /// Command to send: device-id (answered in the BMC) or chassis-status (goes through the
    /// machine backend).
    #[arg(long, default_value = "chassis-status")]
    command: String,
    /// PID of the target process, for CPU and RSS figures.
    #[arg(long)]
    pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct Tally {
    sessions: u64,
    commands: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    /// Sessions (login mode) or commands (hold mode) per target index.
    per_target: std::collections::HashMap<usize, u64>,
}

/// CPU ticks (utime + stime, all threads; USER_HZ is 100 on Linux) and RSS/peak in KiB.
fn proc_figures(pid: u32) -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some((ticks, kib("VmRSS:"), kib("VmHWM:")))
}

async fn exchange(sock: &UdpSocket, d: &[u8], buf: &mut [u8]) -> anyhow::Result<usize> {
    sock.send(d).await?;
    let n = tokio::time::timeout(Duration::from_secs(1), sock.recv(buf))
        .await
        .context("timeout")??;
    Ok(n)
}

async fn login(
    sock: &UdpSocket,
    c: &mut Client,
    rng: &mut Rng,
    buf: &mut [u8],
) -> anyhow::Result<()> {
    exchange(sock, &c.auth_caps_request(), buf).await?;
    let n = exchange(sock, &c.open_session_request(), buf).await?;
    let rakp1 = c.handle_open_session_response(&buf[..n], rng)?;
    let n = exchange(sock, &rakp1, buf).await?;
    let rakp3 = c.handle_rakp2(&buf[..n])?;
    let n = exchange(sock, &rakp3, buf).await?;
    c.handle_rakp4(&buf[..n])?;
    let d = c.request(0x06, 0x3b, &[4], rng);
    let n = exchange(sock, &d, buf).await?;
    let (_, cc, _) = c.response(&buf[..n])?;
    if cc != 0 {
        bail!("set session privilege: cc {cc:#04x}");
    }
    Ok(())
}

async fn command(
    sock: &UdpSocket,
    c: &mut Client,
    rng: &mut Rng,
    buf: &mut [u8],
    cmd: (u8, u8),
    t: &mut Tally,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let d = c.request(cmd.0, cmd.1, &[], rng);
    let n = exchange(sock, &d, buf).await?;
    let (_, cc, _) = c.response(&buf[..n])?;
    if cc != 0 {
        bail!("cc {cc:#04x}");
    }
    t.latencies_us
        .push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
    t.commands += 1;
    Ok(())
}

/// What one client does: its share of the targets and its workload.
struct ClientPlan {
    targets: Arc<Vec<SocketAddr>>,
    /// Index of this client's first target.
    first: usize,
    /// With --spread, the step to the next target after each session (the client count).
    step: Option<usize>,
    suite: CipherSuite,
    user: String,
    password: Arc<Vec<u8>>,
    hold: bool,
    /// ASF pings instead of sessions.
    ping: bool,
    /// Commands per session.
    k: usize,
    cmd: (u8, u8),
    seed: u64,
    /// Source addresses to rotate through (1: 127.0.0.1 only).
    sources: u16,
    /// How many clients share the sources.
    clients: usize,
}

/// The `i`-th benchmark source address (see `--sources`).
fn source_addr(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 77, (i >> 8) as u8, i as u8], 0))
}

async fn client_loop(p: ClientPlan, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    let mut rng = Rng::new(p.seed | 1);
    let n = p.targets.len();
    let mut cur = p.first % n;
    // One socket per source address this client owns (sources i, i + clients, …; see
    // --sources), used in turn, one per session (or per ping); bound up front, since binding
    // a socket per session would cost the client more than the server.
    let mut socks = Vec::new();
    if p.sources > 1 && !p.targets[cur].is_ipv6() {
        for j in (p.first..usize::from(p.sources)).step_by(p.clients.max(1)) {
            match UdpSocket::bind(source_addr(j as u16)).await {
                Ok(s) => socks.push(s),
                Err(_) => t.errors += 1,
            }
        }
    } else {
        let bind: SocketAddr = if p.targets[cur].is_ipv6() {
            "[::1]:0".parse().unwrap()
        } else {
            "127.0.0.1:0".parse().unwrap()
        };
        match UdpSocket::bind(bind).await {
            Ok(s) => socks.push(s),
            Err(_) => t.errors += 1,
        }
    }
    if socks.is_empty() {
        return t;
    }
    // connect() so that only the target's answers are read; again when it changes.
    let mut connected: Vec<Option<SocketAddr>> = vec![None; socks.len()];
    let mut k = 0usize;
    let mut buf = vec![0u8; 1024];
    let mut logged_in: Option<Client> = None;
    let mut sessions_done = 0usize;
    if p.ping {
        for s in &socks {
            if s.connect(p.targets[cur]).await.is_err() {
                t.errors += 1;
                return t;
            }
        }
        // ASF Presence Ping, message tag 0 (DMTF DSP0136 §3.2.4.1; IPMI v2.0 §13.2.3).
        let ping = [6, 0, 0xff, 6, 0, 0, 0x11, 0xbe, 0x80, 0, 0, 0];
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            k = (k + 1) % socks.len();
            match exchange(&socks[k], &ping, &mut buf).await {
                Ok(n) if n >= 16 && buf[3] == 6 && buf[8] == 0x40 => {
                    t.latencies_us
                        .push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    t.commands += 1;
                    *t.per_target.entry(cur).or_default() += 1;
                }
                _ => t.errors += 1,
            }
        }
        return t;
    }
    while !stop.load(Ordering::Relaxed) {
        let mut c = match logged_in.take() {
            Some(c) => c,
            None => {
                if let Some(step) = p.step {
                    cur = (p.first + sessions_done * step) % n;
                }
                sessions_done += 1;
                let target = p.targets[cur];
                k = (k + 1) % socks.len();
                if connected[k] != Some(target) {
                    if socks[k].connect(target).await.is_err() {
                        t.errors += 1;
                        continue;
                    }
                    connected[k] = Some(target);
                }
                let mut c = Client::new(p.suite, &p.user, &p.password, Privilege::Administrator)
                    .with_console_id(p.seed as u32 | 1);
                if let Err(e) = login(&socks[k], &mut c, &mut rng, &mut buf).await {
                    if t.errors == 0 {
                        eprintln!("login to {target} failed: {e:#}");
                    }
                    t.errors += 1;
                    continue;
                }
                t.sessions += 1;
                if !p.hold {
                    *t.per_target.entry(cur).or_default() += 1;
                }
                c
            }
        };
        let mut ok = true;
        for _ in 0..p.k {
            if command(&socks[k], &mut c, &mut rng, &mut buf, p.cmd, &mut t)
                .await
                .is_err()
            {
                t.errors += 1;
                ok = false;
                break;
            }
        }
        if p.hold && ok {
            *t.per_target.entry(cur).or_default() += p.k as u64;
            logged_in = Some(c);
        } else if ok {
            let sid = c.bmc_session_id().to_le_bytes();
            let d = c.request(0x06, 0x3c, &sid, &mut rng);
            if exchange(&socks[k], &d, &mut buf).await.is_err() {
                t.errors += 1;
            }
        }
    }
    t
}

/// --mode probe: Get Channel Authentication Capabilities to every target from one socket,
/// re-sent every 200 ms to those that have not answered. Returns (answered, seconds until the
/// last first answer).
async fn probe(targets: &[SocketAddr], limit: Duration) -> anyhow::Result<(usize, f64)> {
    let sock = UdpSocket::bind(if targets[0].is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    })
    .await?;
    let req = Client::new(CipherSuite::Suite17, "", b"", Privilege::User).auth_caps_request();
    let index: std::collections::HashMap<SocketAddr, usize> =
        targets.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut answered = vec![false; targets.len()];
    let (mut count, mut last) = (0usize, 0f64);
    let start = Instant::now();
    let mut buf = vec![0u8; 512];
    while count < targets.len() && start.elapsed() < limit {
        for (i, t) in targets.iter().enumerate() {
            if !answered[i] {
                // A full socket buffer or an ICMP error only delays this target to the next round.
                let _ = sock.send_to(&req, t).await;
            }
        }
        let round = Instant::now() + Duration::from_millis(200);
        while count < targets.len() {
            match tokio::time::timeout_at(round.into(), sock.recv_from(&mut buf)).await {
                Ok(Ok((_, from))) => {
                    if let Some(&i) = index.get(&from)
                        && !answered[i]
                    {
                        answered[i] = true;
                        count += 1;
                        last = start.elapsed().as_secs_f64();
                    }
                }
                Ok(Err(_)) => {}
                Err(_) => break,
            }
        }
    }
    Ok((count, last))
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut targets = a.target.clone();
    if let Some(n) = a.ports {
        let base = *targets.first().context("--ports needs a --target")?;
        targets = (0..n)
            .map(|i| SocketAddr::new(base.ip(), base.port() + i))
            .collect();
    }
    if let Some(f) = &a.targets_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            targets.push(
                l.parse()
                    .with_context(|| format!("{}: bad target {l}", f.display()))?,
            );
        }
    }
    if targets.is_empty() {
        bail!("no targets");
    }
    if let Some(t) = targets.iter().find(|t| !t.ip().is_loopback()) {
        bail!("{t} is not a loopback address: ovbmc-bench only loads this machine");
    }
    if a.sources == 0 || a.sources > 4000 {
        bail!("--sources must be 1..=4000");
    }
    if a.duration == 0 || a.duration > 600 || a.clients == 0 || a.clients > 10_000 {
        bail!("--duration must be 1..=600 s and --clients 1..=10000");
    }
    if a.mode == "probe" {
        let (answered, secs) = probe(&targets, Duration::from_secs(a.duration)).await?;
        if a.json {
            println!(
                "{}",
                serde_json::json!({"mode": "probe", "targets": targets.len(),
                    "answered": answered, "seconds_to_last_answer": secs})
            );
        } else {
            println!(
                "{answered} of {} targets answered; the last after {secs:.3} s",
                targets.len()
            );
        }
        if answered < targets.len() {
            std::process::exit(1);
        }
        return Ok(());
    }
    let suite = match a.suite {
        3 => CipherSuite::Suite3,
        17 => CipherSuite::Suite17,
        s => bail!("cipher suite {s}: only 3 and 17"),
    };
    if let m @ ("sol-echo" | "sol-burst") = a.mode.as_str() {
        if targets.len() != 1 || a.bytes == 0 || a.bytes > 64 << 20 || a.count == 0 {
            bail!("--mode {m} takes one --target, --bytes 1..=64 MiB and --count 1 or more");
        }
        let password = match &a.password_file {
            Some(f) => ovbmc::secrets::read_secret_file(f)?.to_vec(),
            None => bail!("--password-file is needed to log in"),
        };
        let mut c = Client::new(suite, &a.user, &password, Privilege::Administrator);
        let r = sol::run(targets[0], &mut c, m == "sol-echo", a.count, a.bytes, a.pid).await?;
        let mb_s = r.bytes as f64 / r.seconds / 1e6;
        let cpu_per_kib = r
            .server_cpu_ms
            .filter(|_| r.bytes > 0)
            .map(|ms| ms * 1000.0 / (r.bytes as f64 / 1024.0));
        if a.json {
            println!(
                "{}",
                serde_json::json!({"mode": r.mode, "suite": a.suite, "count": r.count,
                    "echo_p50_us": r.p50_us, "echo_p99_us": r.p99_us, "bytes": r.bytes,
                    "seconds": r.seconds, "mb_per_s": mb_s, "server_cpu_ms": r.server_cpu_ms,
                    "server_cpu_us_per_kib": cpu_per_kib})
            );
        } else if m == "sol-echo" {
            println!(
                "SOL echo, suite {}: {} keystrokes, p50 {} µs, p99 {} µs",
                a.suite, r.count, r.p50_us, r.p99_us
            );
        } else {
            println!(
                "SOL burst, suite {}: {} bytes in {:.3} s ({mb_s:.2} MB/s), server CPU {:?} ms",
                a.suite, r.bytes, r.seconds, r.server_cpu_ms
            );
        }
        return Ok(());
    }
    let cmd = match a.command.as_str() {
        "device-id" => (0x06, 0x01),
        "chassis-status" => (0x00, 0x01),
        c => bail!("unknown command {c}"),
    };
    let (hold, ping) = match a.mode.as_str() {
        "hold" => (true, false),
        "login" => (false, false),
        "ping" => (true, true),
        m => bail!("unknown mode {m}: login, hold, ping, probe, sol-echo or sol-burst"),
    };
    if hold && a.commands == 0 {
        bail!("--mode hold needs --commands 1 or more");
    }
    let password = match &a.password_file {
        Some(f) => Arc::new(ovbmc::secrets::read_secret_file(f)?.to_vec()),
        None if ping => Arc::new(Vec::new()),
        None => bail!("--password-file is needed to log in"),
    };
    let targets = Arc::new(targets);
    let stop = Arc::new(AtomicBool::new(false));
    let before = a.pid.and_then(proc_figures);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed)?;
    let seed = u64::from_le_bytes(seed);
    for i in 0..a.clients {
        let plan = ClientPlan {
            targets: targets.clone(),
            first: i,
            step: a.spread.then_some(a.clients),
            suite,
            user: a.user.clone(),
            password: password.clone(),
            hold,
            ping,
            k: a.commands,
            cmd,
            seed: seed.wrapping_add(i as u64 * 0x9e37_79b9),
            sources: a.sources,
            clients: a.clients,
        };
        tasks.push(tokio::spawn(client_loop(plan, stop.clone())));
    }
    tokio::time::sleep(Duration::from_secs(a.duration)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for t in tasks {
        let t = t.await?;
        total.sessions += t.sessions;
        total.commands += t.commands;
        total.errors += t.errors;
        total.latencies_us.extend(t.latencies_us);
        for (i, v) in t.per_target {
            *total.per_target.entry(i).or_default() += v;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let after = a.pid.and_then(proc_figures);
    total.latencies_us.sort_unstable();
    let (p50, p99) = (
        percentile(&total.latencies_us, 0.50),
        percentile(&total.latencies_us, 0.99),
    );
    // The spread over targets: how many got any work, and min / median / max per target
    // (targets that got none count as 0).
    let mut spread: Vec<u32> = (0..targets.len())
        .map(|i| total.per_target.get(&i).copied().unwrap_or(0) as u32)
        .collect();
    spread.sort_unstable();
    let reached = spread.iter().filter(|&&v| v > 0).count();
    let (smin, smed, smax) = (
        percentile(&spread, 0.0),
        percentile(&spread, 0.5),
        percentile(&spread, 1.0),
    );
    let cpu_s = match (before, after) {
        (Some(b), Some(a)) => Some((a.0 - b.0) as f64 / 100.0),
        _ => None,
    };
    // Requests the server handled: the set-up messages (auth caps, open, RAKP 1, RAKP 3, set
    // privilege, close = 6 per session) and the commands.
    let requests = if ping {
        total.commands
    } else {
        total.commands + total.sessions * 6
    };
    let cpu_per_req_us = cpu_s.map(|c| c * 1e6 / requests.max(1) as f64);
    // Per session: all server CPU divided by the sessions (the commands included), so use
    // --commands 0 for the cost of a set-up alone.
    let cpu_per_session_us = cpu_s
        .filter(|_| !hold && total.sessions > 0)
        .map(|c| c * 1e6 / total.sessions as f64);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "suite": a.suite, "clients": a.clients, "targets": targets.len(),
                "mode": a.mode, "command": a.command, "commands_per_session": a.commands,
                "seconds": secs,
                "sessions": total.sessions, "commands": total.commands, "errors": total.errors,
                "requests": requests,
                "sessions_per_s": total.sessions as f64 / secs,
                "commands_per_s": total.commands as f64 / secs,
                "requests_per_s": requests as f64 / secs,
                "p50_us": p50, "p99_us": p99,
                "targets_reached": reached,
                "per_target_min": smin, "per_target_median": smed, "per_target_max": smax,
                "server_cpu_s": cpu_s, "server_cpu_us_per_request": cpu_per_req_us,
                "server_cpu_us_per_session": cpu_per_session_us,
                "server_rss_kib": after.map(|a| a.1), "server_peak_rss_kib": after.map(|a| a.2),
            })
        );
    } else {
        println!(
            "suite {} | {} clients on {} targets | mode {} | {:.1} s",
            a.suite,
            a.clients,
            targets.len(),
            a.mode,
            secs
        );
        println!(
            "sessions {} ({:.0}/s)  commands {} ({:.0}/s)  errors {}",
            total.sessions,
            total.sessions as f64 / secs,
            total.commands,
            total.commands as f64 / secs,
            total.errors
        );
        println!("command latency p50 {p50} µs  p99 {p99} µs");
        if targets.len() > 1 {
            println!(
                "targets reached {reached} of {}; per target min {smin} / median {smed} / max {smax} {}",
                targets.len(),
                if hold { "commands" } else { "sessions" }
            );
        }
        if let (Some(c), Some(af)) = (cpu_s, after) {
            println!(
                "server CPU {c:.2} s = {:.1} µs per request ({requests} requests){}; RSS {} KiB (peak {} KiB)",
                cpu_per_req_us.unwrap_or(0.0),
                cpu_per_session_us
                    .map(|s| format!(", {s:.1} µs per session"))
                    .unwrap_or_default(),
                af.1,
                af.2
            );
        }
    }
    Ok(())
}
