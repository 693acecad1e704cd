//! Reflection (issue 15 item 10): what a forged-source attacker gets the real binary to send
//! its victim. Refusals are never longer than the request; session-less answers (ASF pong,
//! auth caps, cipher suites), which are, are paid from a byte budget per source
//! (`ipmi_proto::ratelimit`). Raw UDP on loopback; the "victim" is the attacker's own socket.

use std::net::UdpSocket;
use std::thread;
use std::time::{Duration, Instant};

use ipmi_proto::ratelimit::{ANSWER_BURST, ANSWER_RATE};

use crate::ipmitool::Ipmitool;
use crate::support::{Bmc, unique_loopback};

/// An ASF presence ping (12 bytes; the pong is 28).
const PING: [u8; 12] = [
    0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0xc4, 0x00, 0x00,
];

fn socket(bmc: &Bmc) -> UdpSocket {
    let s = UdpSocket::bind((unique_loopback(), 0)).expect("bind");
    s.connect(bmc.socket_addr()).expect("connect");
    s
}

/// The answer to one datagram, if any within `wait`.
fn answer(s: &UdpSocket, d: &[u8], wait: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(wait)).unwrap();
    s.send(d).unwrap();
    let mut buf = [0u8; 1024];
    s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

/// An RMCP+ session-setup datagram (session ID 0, unauthenticated) carrying `payload`.
fn setup(payload_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![
        0x06,
        0x00,
        0xff,
        0x07,
        0x06,
        payload_type,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    d.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    d.extend_from_slice(payload);
    d
}

#[test]
fn refusals_are_no_longer_than_requests() {
    let bmc = Bmc::start();
    let s = socket(&bmc);
    let wait = Duration::from_millis(500);
    // 17 bytes: too short to name a console session: no answer (it was 52 bytes).
    let short = setup(0x10, &[0x01]);
    assert_eq!(short.len(), 17);
    let a = answer(&s, &short, wait);
    assert!(a.is_none(), "answered {a:?}");
    // 24 bytes (tag, role, reserved, SIDm): the short refusal, 24 bytes.
    let eight = setup(0x10, &[0x01, 0, 0, 0, 0x78, 0x56, 0x34, 0x12]);
    let a = answer(&s, &eight, wait).expect("a refusal");
    assert!(
        a.len() <= eight.len(),
        "{} B for {} B",
        a.len(),
        eight.len()
    );
    assert_eq!(a[17], 0x12, "illegal parameter");
    assert_eq!(
        &a[20..24],
        &[0x78, 0x56, 0x34, 0x12],
        "to the console's session ID"
    );
    // A full-length proposal of cipher suite 0: the full 36-byte layout every client parses,
    // 52 B for 48 B (1.08 times).
    let mut p = vec![0x02, 0, 0, 0, 0x78, 0x56, 0x34, 0x12];
    for ty in 0..3u8 {
        p.extend_from_slice(&[ty, 0, 0, 8, 0, 0, 0, 0]);
    }
    let full = setup(0x10, &p);
    let a = answer(&s, &full, wait).expect("a refusal");
    assert_eq!((full.len(), a.len()), (48, 52));
    assert_eq!(a[17], 0x11, "no cipher suite match");
}

#[test]
fn ping_floods_get_a_bounded_number_of_pongs_and_others_are_still_served() {
    let bmc = Bmc::start();
    let s = socket(&bmc);
    // Pongs are read as they come (a full receive buffer here would drop them and hide what
    // the BMC sent), until 300 ms pass without one.
    let rx = s.try_clone().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let counter = thread::spawn(move || {
        let (mut pongs, mut bytes) = (0usize, 0usize);
        let mut buf = [0u8; 64];
        while let Ok(n) = rx.recv(&mut buf) {
            pongs += 1;
            bytes += n;
        }
        (pongs, bytes)
    });
    let start = Instant::now();
    const PINGS: usize = 2_000;
    for i in 0..PINGS {
        let _ = s.send(&PING);
        if i % 20 == 19 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    let (pongs, bytes) = counter.join().unwrap();
    let elapsed = start.elapsed();
    let sent = PINGS * PING.len();
    // What the victim may receive: the requests' size, plus the burst, plus the rate over
    // the time the flood took (the budget's own terms, not a speed).
    let allowed = sent
        + ANSWER_BURST as usize
        + (ANSWER_RATE as f64 * elapsed.as_secs_f64()).ceil() as usize
        + 28;
    println!(
        "{PINGS} pings ({sent} B) in {elapsed:.1?}: {pongs} pongs ({bytes} B); excess allowed {}",
        allowed - sent
    );
    assert!(
        bytes.saturating_sub(sent) <= allowed - sent && pongs < PINGS,
        "{pongs} pongs, {bytes} B for {sent} B\n{}",
        bmc.log()
    );
    assert!(
        pongs as u32 >= ANSWER_BURST / 16,
        "the burst is answered: {pongs}"
    );
    // Another source has its own budget.
    let other = socket(&bmc);
    assert!(answer(&other, &PING, Duration::from_secs(2)).is_some());
    assert!(
        bmc.log().contains("over budget"),
        "the throttling is logged:\n{}",
        bmc.log()
    );
    if let Some(tool) = Ipmitool::new(&bmc, None) {
        // ipmitool (from 127.0.0.1, its own budget) with no -C: auth caps and cipher suites.
        let r = tool.run(&["power", "status"]);
        assert!(r.success(), "{}", r.output());
    }
}
