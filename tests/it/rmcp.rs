//! Session-less RMCP/IPMI over a plain UDP socket against the real binary: what every client
//! sends before it has a session, and what an attacker can send without credentials. No IPMI
//! client needed, so these always run.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::Duration;

use crate::support::{Bmc, checksum, get_channel_auth_caps_request, session_less_v2_request};

/// Send `request` and return the first answer from the BMC (three tries, 1 s each).
fn exchange(bmc: &Bmc, request: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind((bmc.addr, 0)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    for _ in 0..3 {
        sock.send_to(request, bmc.socket_addr()).expect("send");
        let mut buf = [0u8; 1024];
        if let Ok((n, from)) = sock.recv_from(&mut buf)
            && from == bmc.socket_addr()
        {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// Check the IPMI LAN response framing (both checksums, addresses, netFn, command) and return
/// `(completion code, data)`.
#[track_caller]
fn ipmi_response(msg: &[u8], netfn: u8, cmd: u8) -> (u8, Vec<u8>) {
    assert!(
        msg.len() >= 8,
        "IPMI message too short: {}",
        hex::encode(msg)
    );
    assert_eq!(
        checksum(&msg[..3]),
        0,
        "header checksum: {}",
        hex::encode(msg)
    );
    assert_eq!(
        checksum(&msg[3..]),
        0,
        "body checksum: {}",
        hex::encode(msg)
    );
    assert_eq!(msg[0], 0x81, "rqAddr: {}", hex::encode(msg));
    assert_eq!(
        msg[1] >> 2,
        netfn | 1,
        "response netFn: {}",
        hex::encode(msg)
    );
    assert_eq!(msg[3], 0x20, "rsAddr: {}", hex::encode(msg));
    assert_eq!(msg[4] >> 2, 1, "rqSeq echoed: {}", hex::encode(msg));
    assert_eq!(msg[5], cmd, "command: {}", hex::encode(msg));
    (msg[6], msg[7..msg.len() - 1].to_vec())
}

/// The IPMI message inside a session-less IPMI 1.5 packet.
#[track_caller]
fn v15_payload(p: &[u8]) -> &[u8] {
    assert!(p.len() > 14, "packet too short: {}", hex::encode(p));
    assert_eq!(
        &p[..4],
        &[0x06, 0x00, 0xFF, 0x07],
        "RMCP header: {}",
        hex::encode(p)
    );
    assert_eq!(p[4], 0x00, "auth type none: {}", hex::encode(p));
    let len = p[13] as usize;
    assert_eq!(p.len(), 14 + len, "length field: {}", hex::encode(p));
    &p[14..]
}

/// The IPMI message inside a session-less IPMI 2.0 packet.
#[track_caller]
fn v20_payload(p: &[u8]) -> &[u8] {
    assert!(p.len() > 16, "packet too short: {}", hex::encode(p));
    assert_eq!(
        &p[..4],
        &[0x06, 0x00, 0xFF, 0x07],
        "RMCP header: {}",
        hex::encode(p)
    );
    assert_eq!(p[4], 0x06, "RMCP+ format: {}", hex::encode(p));
    assert_eq!(p[5] & 0x3F, 0x00, "payload type IPMI: {}", hex::encode(p));
    assert_eq!(
        p[5] & 0xC0,
        0x00,
        "session-less must be in clear: {}",
        hex::encode(p)
    );
    let len = u16::from_le_bytes([p[14], p[15]]) as usize;
    assert_eq!(p.len(), 16 + len, "length field: {}", hex::encode(p));
    &p[16..]
}

/// Get Channel Authentication Capabilities advertises IPMI 2.0 and nothing weaker: no IPMI
/// 1.5 auth types, no anonymous or null user names (protocol doc §4.1, §11).
#[test]
fn auth_caps_advertise_ipmi_2_0_only() {
    let bmc = Bmc::start();
    let answer = exchange(&bmc, &get_channel_auth_caps_request(0x04))
        .unwrap_or_else(|| panic!("no answer to Get Channel Auth Caps"));
    let (cc, data) = ipmi_response(v15_payload(&answer), 0x06, 0x38);
    assert_eq!(cc, 0, "completion code: {}", hex::encode(&answer));
    assert_eq!(data.len(), 8, "data: {}", hex::encode(&data));
    assert_eq!(
        data[1],
        0x80,
        "v2 data, no 1.5 auth types: {}",
        hex::encode(&data)
    );
    assert_eq!(
        data[2] & 0x03,
        0,
        "null/anonymous login advertised: {}",
        hex::encode(&data)
    );
    assert_ne!(
        data[3] & 0x02,
        0,
        "IPMI 2.0 not advertised: {}",
        hex::encode(&data)
    );
}

/// Get Channel Cipher Suites lists exactly suites 3 and 17: a client that picks "the best
/// listed suite" can never be steered to suite 0.
#[test]
fn cipher_suite_list_is_exactly_3_and_17() {
    let bmc = Bmc::start();
    let mut records = Vec::new();
    for index in 0..4u8 {
        let req = session_less_v2_request(0x06, 0x54, &[0x0E, 0x00, 0x80 | index]);
        let answer = exchange(&bmc, &req)
            .unwrap_or_else(|| panic!("no answer to Get Channel Cipher Suites page {index}"));
        let (cc, data) = ipmi_response(v20_payload(&answer), 0x06, 0x54);
        assert_eq!(cc, 0, "page {index}: {}", hex::encode(&answer));
        assert!(!data.is_empty(), "page {index} has no channel byte");
        records.extend_from_slice(&data[1..]);
        // A page shorter than 16 record bytes is the last (ipmitool's rule).
        if data.len() - 1 < 16 {
            break;
        }
    }
    let mut suites = BTreeSet::new();
    let mut rest = records.as_slice();
    while !rest.is_empty() {
        assert_eq!(
            rest[0],
            0xC0,
            "not a standard suite record: {}",
            hex::encode(&records)
        );
        assert!(
            rest.len() >= 5,
            "truncated record: {}",
            hex::encode(&records)
        );
        let expected: &[u8] = match rest[1] {
            3 => &[0xC0, 0x03, 0x01, 0x41, 0x81],
            17 => &[0xC0, 0x11, 0x03, 0x44, 0x81],
            other => panic!("suite {other} offered: {}", hex::encode(&records)),
        };
        assert_eq!(&rest[..5], expected, "record: {}", hex::encode(&records));
        suites.insert(rest[1]);
        rest = &rest[5..];
    }
    assert_eq!(suites, BTreeSet::from([3, 17]), "{}", hex::encode(&records));
}

/// Malformed datagrams (empty, truncated, wrong class, bad checksums, random bytes) get no
/// crash and no answer that amplifies; the BMC still answers a good request afterwards.
#[test]
fn malformed_datagrams_do_not_disturb_the_server() {
    let mut bmc = Bmc::start();
    let good = get_channel_auth_caps_request(0x04);
    let mut bad_checksum = good.clone();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] ^= 0xFF;
    let mut lying_length = good.clone();
    lying_length[13] = 0xFF;
    let mut junk = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        junk.push(x as u8);
    }
    let bad: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x06],
        good[..4].to_vec(),
        good[..10].to_vec(),
        bad_checksum,
        lying_length,
        vec![0x06, 0x00, 0xFF, 0x06, 0, 0, 0, 0, 0, 0, 0, 0], // ASF class, truncated
        // RMCP+ header claiming an encrypted payload in a session that does not exist.
        vec![
            0x06, 0x00, 0xFF, 0x07, 0x06, 0xC0, 1, 2, 3, 4, 1, 0, 0, 0, 0x10, 0x00,
        ],
        junk,
    ];
    let sock = UdpSocket::bind((bmc.addr, 0)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    for b in &bad {
        sock.send_to(b, bmc.socket_addr()).expect("send");
        let mut buf = [0u8; 2048];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            // An error answer is allowed; a bigger one than the request is amplification.
            assert!(
                n <= b.len().max(64),
                "{n}-byte answer to a {}-byte junk datagram {}",
                b.len(),
                hex::encode(b)
            );
        }
    }
    assert!(
        bmc.try_wait().is_none(),
        "ovbmc exited after malformed datagrams:\n{}",
        bmc.log()
    );
    assert!(
        exchange(&bmc, &good).is_some(),
        "no answer to a good request after the junk:\n{}",
        bmc.log()
    );
}
