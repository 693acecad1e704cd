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

/// A name with a "password" in it, a newline that would start a forged log line, and an ANSI
/// escape (red): 16 bytes, the IPMI maximum, which ipmitool accepts.
const EVIL_NAME: &str = "s3cr3t\n\x1b[31mFAKE";

/// Log in once with a raw RMCP+ client as `name` (whatever bytes, up to 16) and return the
/// RAKP 2 status.
fn raw_login_as(bmc: &Bmc, name: &[u8]) -> u8 {
    let sock = UdpSocket::bind((unique_loopback(), 0)).expect("bind");
    sock.connect(bmc.socket_addr()).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let placeholder = "x".repeat(name.len());
    let mut c = Client::new(
        CipherSuite::Suite17,
        &placeholder,
        b"x",
        Privilege::Administrator,
    );
    let mut rng = ipmi_proto::fuzzing::Xorshift::new(7);
    let mut buf = [0u8; 512];
    sock.send(&c.open_session_request()).unwrap();
    let n = sock.recv(&mut buf).expect("Open Session Response");
    let mut rakp1 = c
        .handle_open_session_response(&buf[..n], &mut rng)
        .expect("Open Session granted");
    // The name is RAKP 1's last field: put the raw bytes there.
    let at = rakp1.len() - name.len();
    rakp1[at..].copy_from_slice(name);
    sock.send(&rakp1).unwrap();
    let n = sock.recv(&mut buf).expect("RAKP 2");
    // RMCP (4) + session header (12) + RAKP 2: tag, status.
    buf[..n][17]
}

/// Every line of `log` free of control characters, and none of `secrets` in it.
#[track_caller]
fn assert_clean(log: &str, secrets: &[&str]) {
    for l in log.lines() {
        assert!(
            !l.chars().any(char::is_control),
            "raw control character in {l:?}"
        );
        for s in secrets {
            assert!(!l.contains(s), "{s:?} in the log: {l:?}");
        }
    }
}

#[test]
fn user_names_reach_the_log_escaped_and_unknown_ones_only_as_a_tag() {
    for json in [false, true] {
        let mut cfg = crate::support::BmcConfig::default();
        if json {
            cfg.extra_args = vec!["--log-format".into(), "json".into()];
        }
        let bmc = Bmc::start_with(cfg);
        // A raw client: control bytes, and bytes that are not UTF-8.
        assert_eq!(
            raw_login_as(&bmc, EVIL_NAME.as_bytes()),
            0x0d,
            "unauthorized name"
        );
        assert_eq!(raw_login_as(&bmc, b"pw\r\n\x1b]0;t\x07\xff\xfe"), 0x0d);
        // ipmitool with the password typed into the user field, and the real user with a
        // wrong password (shown by name: it is the configured one).
        if let Some(tool) = Ipmitool::new(&bmc, Some(17)) {
            let r = tool
                .clone()
                .user(EVIL_NAME)
                .password("x")
                .run(&["power", "status"]);
            assert!(!r.success(), "{}", r.output());
            let r = tool
                .password("wrong-pw")
                .extra(&["-R", "1"])
                .run(&["power", "status"]);
            assert!(!r.success(), "{}", r.output());
        }
        // The wrong password shows when the handshake times out (5 s).
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let log = loop {
            let log = bmc.log();
            let failures = log.lines().filter(|l| l.contains("login failed")).count();
            let want = if find_ipmitool() { 4 } else { 2 };
            if failures >= want || std::time::Instant::now() > deadline {
                break log;
            }
            thread::sleep(Duration::from_millis(200));
        };
        println!("{log}");
        assert_clean(&log, &["s3cr3t", "FAKE", "]0;t"]);
        let unknown = log
            .lines()
            .filter(|l| l.contains("login failed") && l.contains("unknown name, 16 chars, #"))
            .count();
        assert!(unknown >= 1, "no unknown-name line:\n{log}");
        if find_ipmitool() {
            assert!(
                log.lines()
                    .any(|l| l.contains("login failed") && l.contains("admin")),
                "the configured user's name is shown:\n{log}"
            );
            assert!(unknown >= 2, "the raw client's and ipmitool's name:\n{log}");
        }
        if json {
            for l in log.lines() {
                let v: serde_json::Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l:?}"));
                assert!(v.is_object());
            }
        }
    }
}

fn find_ipmitool() -> bool {
    crate::support::find_program("ipmitool").is_some()
}
