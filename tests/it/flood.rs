//! Session exhaustion (issue 5 item 2): a flood of half-open logins — Open Session, then
//! RAKP 1 with the session ID the BMC granted, never RAKP 3 — from 10,000 source ports must
//! not lock out a real client: `ipmitool -I lanplus -C 17 power status` during the flood
//! succeeds within 2 s (the bound the issue sets), ovbmc's memory stays bounded, and the real
//! user can still log in once the flood is over.
//!
//! The flooder is a tokio task per source port in this test process, pacing itself to one login
//! per port per second (10,000 logins/s in all); it names the real user, the worst case (an
//! unknown name is refused at RAKP 1 and counted against the source at once). It sends from
//! its own loopback address, as an attacker elsewhere on the network would. The achieved rate
//! is printed (`cargo test --test it flood:: -- --ignored --nocapture`), since a loaded
//! 2-core machine running both sides in debug builds may not reach 10,000/s; the figures are
//! in docs/security.md.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipmi_proto::client::Client;
use ipmi_proto::crypto::CipherSuite;
use ipmi_proto::endpoint::Entropy;
use ipmi_proto::session::Privilege;

use crate::support::{Bmc, Ran, client, run, unique_loopback};

const TIER: &str = "flood";
/// Source ports, and logins per port: 10,000 × 10 = 100,000 half-open logins.
const PORTS: usize = 10_000;
const LOGINS_PER_PORT: u32 = 10;
/// Each port starts one login per this interval, so all ports together make 10,000/s.
const PACE: Duration = Duration::from_secs(1);
/// How long a flooder waits for each answer before moving on.
const ANSWER_WAIT: Duration = Duration::from_millis(500);
/// The explicit bound of issue 5: a real login during the flood finishes within this.
const LOGIN_BOUND: Duration = Duration::from_secs(2);
/// A generous ceiling for ovbmc's peak resident memory: the half-open table is bounded at
/// 1024 entries of well under a kilobyte, so anything near this would mean a leak per login.
const RSS_CEILING_KB: u64 = 256 * 1024;

/// Not secret: Rm only needs to differ between logins.
struct Counter(u64);

impl Entropy for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1);
            *b = (self.0 >> 56) as u8;
        }
    }
}

#[derive(Default)]
struct Tally {
    open_sent: AtomicU64,
    open_granted: AtomicU64,
    open_refused: AtomicU64,
    rakp2_ok: AtomicU64,
    rakp2_refused: AtomicU64,
    no_answer: AtomicU64,
}

impl Tally {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// `VmRSS` and `VmHWM` (peak) of a process, in kB.
fn memory_kb(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// User + system CPU time of a process so far (`/proc/PID/stat` fields 14 and 15).
fn cpu_time(pid: &str) -> Duration {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// One source port: `LOGINS_PER_PORT` half-open logins, one per `PACE`, starting at `start`.
async fn flood_port(
    bmc: SocketAddr,
    from: std::net::Ipv4Addr,
    start: tokio::time::Instant,
    seed: u64,
    tally: Arc<Tally>,
) {
    let Ok(sock) = tokio::net::UdpSocket::bind((from, 0)).await else {
        tally
            .no_answer
            .fetch_add(u64::from(LOGINS_PER_PORT), Ordering::Relaxed);
        return;
    };
    let mut rng = Counter(seed);
    let mut buf = [0u8; 512];
    for i in 0..LOGINS_PER_PORT {
        tokio::time::sleep_until(start + PACE * i).await;
        let mut c = Client::new(
            CipherSuite::Suite17,
            crate::support::USER,
            b"not-the-password",
            Privilege::Administrator,
        )
        .with_console_id(seed as u32 ^ i | 1);
        let _ = sock.send_to(&c.open_session_request(), bmc).await;
        tally.open_sent.fetch_add(1, Ordering::Relaxed);
        let Ok(Ok(n)) = tokio::time::timeout(ANSWER_WAIT, sock.recv(&mut buf)).await else {
            tally.no_answer.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let rakp1 = match c.handle_open_session_response(&buf[..n], &mut rng) {
            Ok(r) => r,
            Err(_) => {
                tally.open_refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        tally.open_granted.fetch_add(1, Ordering::Relaxed);
        let _ = sock.send_to(&rakp1, bmc).await;
        let Ok(Ok(n)) = tokio::time::timeout(ANSWER_WAIT, sock.recv(&mut buf)).await else {
            tally.no_answer.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        // RAKP 2 status is payload byte 1 (datagram offset 17). Never answered with RAKP 3.
        if buf.get(17) == Some(&0) && n > 17 {
            tally.rakp2_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            tally.rakp2_refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn power_status(ipmitool: &std::path::Path, bmc: &Bmc) -> Ran {
    let args: Vec<String> = [
        "-I",
        "lanplus",
        "-C",
        "17",
        "-H",
        &bmc.addr.to_string(),
        "-p",
        &bmc.port.to_string(),
        "-U",
        &bmc.cfg.user,
        "-f",
        &bmc.password_file.display().to_string(),
        "power",
        "status",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    run(ipmitool, &args, &[], Duration::from_secs(30))
}

/// Ignored in the parallel run: it loads both cores for 10 s, which would disturb the timing
/// bounds of other tests, and theirs it. `scripts/test-all` runs it alone afterwards with
/// `cargo test --test it flood:: -- --ignored`.
#[test]
#[ignore = "loads the whole machine: run alone (scripts/test-all does)"]
fn half_open_login_flood_does_not_lock_out_ipmitool() {
    let Some(ipmitool) = client(TIER, "ipmitool") else {
        return;
    };
    // 10,000 sockets here; ovbmc raises its own limit.
    let _ = rlimit::increase_nofile_limit(PORTS as u64 + 1024);
    let bmc = Bmc::start();
    let target = bmc.socket_addr();
    let before = power_status(&ipmitool, &bmc);
    before.expect_success();
    let (rss_before, _) = memory_kb(bmc.pid());

    let tally = Arc::new(Tally::default());
    let flooder = {
        let tally = tally.clone();
        let from = unique_loopback();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let t0 = tokio::time::Instant::now() + Duration::from_millis(200);
                let tasks: Vec<_> = (0..PORTS)
                    .map(|p| {
                        // Spread the ports' start times evenly over one pace interval.
                        let start = t0 + PACE * p as u32 / PORTS as u32;
                        tokio::spawn(flood_port(
                            target,
                            from,
                            start,
                            p as u64 * 7919 + 1,
                            tally.clone(),
                        ))
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
            });
        })
    };
    let flood_start = Instant::now();
    let (bmc_cpu0, own_cpu0) = (cpu_time(&bmc.pid().to_string()), cpu_time("self"));

    // Real logins while the flood runs: one every ~2.5 s, after it has built up.
    let mut during = Vec::new();
    std::thread::sleep(Duration::from_millis(1500));
    while !flooder.is_finished() && during.len() < 4 {
        let sent_at = Tally::get(&tally.open_sent);
        let r = power_status(&ipmitool, &bmc);
        println!(
            "flood: ipmitool power status at t={:.1?} (flood had sent {sent_at} Open Sessions): {:?}, {:.0?} {}",
            flood_start.elapsed(),
            r.status,
            r.elapsed,
            r.output().trim()
        );
        during.push((sent_at, r));
        std::thread::sleep(Duration::from_millis(1000));
    }
    flooder.join().expect("flooder thread");
    let flood_time = flood_start.elapsed();
    let bmc_cpu = cpu_time(&bmc.pid().to_string()) - bmc_cpu0;
    let own_cpu = cpu_time("self") - own_cpu0;
    let (rss_after, rss_peak) = memory_kb(bmc.pid());

    let t = &tally;
    let sent = Tally::get(&t.open_sent);
    let half_open = Tally::get(&t.rakp2_ok);
    println!(
        "flood: {sent} Open Sessions in {flood_time:.1?} ({:.0}/s) from {PORTS} ports; {} granted, {} refused; \
         {half_open} RAKP 2 received (half-open logins, {:.0}/s), {} RAKP 1 refused, {} unanswered",
        sent as f64 / flood_time.as_secs_f64(),
        Tally::get(&t.open_granted),
        Tally::get(&t.open_refused),
        half_open as f64 / flood_time.as_secs_f64(),
        Tally::get(&t.rakp2_refused),
        Tally::get(&t.no_answer),
    );
    println!(
        "flood: CPU during the flood: ovbmc {bmc_cpu:.1?}, the flooder (this test) {own_cpu:.1?}, in {flood_time:.1?}"
    );
    println!("flood: ovbmc RSS {rss_before} kB before, {rss_after} kB after, peak {rss_peak} kB");

    assert_eq!(sent, (PORTS as u64) * u64::from(LOGINS_PER_PORT));
    // The BMC did the work of a handshake for most of the flood (a flooder's RAKP 1 may find
    // its session already recycled by the flooder's own later logins: that is the design).
    assert!(
        Tally::get(&t.open_granted) > sent / 2,
        "the BMC granted fewer than half of the flood's Open Sessions: it was not loaded"
    );
    assert!(
        !during.is_empty(),
        "the flood ended before ipmitool could run"
    );
    for (sent_at, r) in &during {
        r.expect_success();
        assert!(
            r.elapsed <= LOGIN_BOUND,
            "ipmitool login during the flood (after {sent_at} flood logins) took {:.1?} > {LOGIN_BOUND:?}:\n{r}",
            r.elapsed
        );
    }
    assert!(
        rss_peak < RSS_CEILING_KB,
        "ovbmc peak RSS {rss_peak} kB (before the flood {rss_before} kB)"
    );
    // The flood's abandoned handshakes time out after it; they must not lock the real user out.
    std::thread::sleep(Duration::from_secs(6));
    let after = power_status(&ipmitool, &bmc);
    println!(
        "flood: ipmitool after the flood: {:?}, {:.0?}",
        after.status, after.elapsed
    );
    after.expect_success();
}
