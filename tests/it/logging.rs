//! What unauthenticated peers can make ovbmc log (issue 15 items 6 and 7), read from the real
//! binary's stderr: a flood of refused logins is logged as its first few lines and then one
//! count per interval, while a real ipmitool login during the flood succeeds.
//!
//! The attacker is a raw UDP socket in this test process on its own loopback address (an
//! attacker elsewhere on the network), using `ipmi_proto::client` only to build packets.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use ipmi_proto::client::Client;
use ipmi_proto::crypto::CipherSuite;
use ipmi_proto::session::Privilege;

use crate::ipmitool::Ipmitool;
use crate::support::{Bmc, unique_loopback};

/// Open Sessions in the flood (bounded, so the test stays short on a loaded machine).
const FLOOD: u64 = 20_000;

/// An Open Session Request proposing cipher suite 0 (RAKP-none / none / none): refused with
/// status 11h and, before the rate limit, one WARN line each.
fn suite0_open_session() -> Vec<u8> {
    let mut c = Client::new(CipherSuite::Suite3, "admin", b"x", Privilege::Administrator);
    let mut open = c.open_session_request();
    let n = open.len();
    for at in [n - 20, n - 12, n - 4] {
        open[at] = 0;
    }
    open
}

/// Send `FLOOD` refused Open Sessions to `bmc` at about 5,000 a second; `sent` counts them.
fn flood(bmc: &Bmc, sent: Arc<AtomicU64>, done: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    let sock = UdpSocket::bind((unique_loopback(), 0)).expect("bind the attacker");
    sock.connect(bmc.socket_addr()).expect("connect");
    let open = suite0_open_session();
    thread::spawn(move || {
        for i in 0..FLOOD {
            // A full socket buffer on either side only loses datagrams; keep going.
            let _ = sock.send(&open);
            sent.store(i + 1, Ordering::Relaxed);
            if i % 5 == 4 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        done.store(true, Ordering::Relaxed);
    })
}

/// Lines of the log that are not start-up chatter.
fn lines(log: &str) -> usize {
    log.lines().count()
}

#[test]
fn a_flood_of_refused_logins_logs_a_few_lines_and_a_count_and_a_real_login_succeeds() {
    let bmc = Bmc::start();
    let Some(tool) = Ipmitool::new(&bmc, Some(17)) else {
        return;
    };
    let before = lines(&bmc.log());
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let flooder = flood(&bmc, sent.clone(), done.clone());
    while sent.load(Ordering::Relaxed) < 2_000 {
        thread::sleep(Duration::from_millis(5));
    }
    let r = tool.run(&["power", "status"]);
    let during = !done.load(Ordering::Relaxed);
    assert!(
        r.success(),
        "ipmitool during the flood failed: {}\n{}",
        r.output(),
        bmc.log()
    );
    assert!(
        during,
        "the flood ended before ipmitool did: the test proves nothing"
    );
    flooder.join().expect("flooder");
    // The counts come when the rate limit's interval (10 s) ends, from the BMC's timer: wait
    // out the last one.
    thread::sleep(ipmi_proto::ratelimit::LOG_INTERVAL + Duration::from_secs(2));
    let log = bmc.log();
    let failed_lines = log.lines().filter(|l| l.contains("login failed")).count();
    let summaries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not logged one by one") && l.contains("no_cipher_match"))
        .collect();
    let count: u64 = summaries
        .iter()
        .map(|l| {
            l.split("count=")
                .nth(1)
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no count in {l:?}"))
        })
        .sum();
    let summary = summaries.join("\n");
    println!(
        "{FLOOD} Open Sessions sent; {} log lines ({failed_lines} 'login failed'); summary: {summary}",
        lines(&log) - before
    );
    assert!(
        failed_lines <= 5,
        "{failed_lines} 'login failed' lines:\n{log}"
    );
    // A few lines for the first failures, the summaries, ipmitool's session: never one a packet.
    assert!(
        lines(&log) - before <= 20,
        "{} lines:\n{log}",
        lines(&log) - before
    );
    // Every refusal the BMC received is accounted for (the kernel may drop some datagrams
    // from a full socket queue, so at most FLOOD).
    assert!(
        count + failed_lines as u64 <= FLOOD && count > FLOOD / 2,
        "summary counts {count} of {FLOOD} sent"
    );
}
