//! Session keys in the BMC's memory after Close Session (issue 15 item 8): the real binary's
//! memory, read through `/proc/PID/mem` (the test is its parent, so it may), searched for the
//! session's AES-128 key, its expanded key schedule, SIK and K1.
//!
//! What this proves and what not: a positive control first finds the key schedule while the
//! session is active (in the layout the AES-NI backend keeps: the 11 round keys of FIPS-197 in
//! order). After Close Session none of these byte strings may be anywhere in the process's
//! readable memory — heap, stacks, freed blocks. It cannot see copies in CPU registers or
//! swapped-out pages, nor a schedule in another layout (the aes crate's software backend keeps
//! it bit-sliced; the test then says SKIP), nor the keyed HMAC states (not plain key bytes).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::UdpSocket;
use std::thread;
use std::time::Duration;

use ipmi_proto::client::Client;
use ipmi_proto::crypto::CipherSuite;
use ipmi_proto::session::Privilege;

use crate::support::{Bmc, PASSWORD, USER, unique_loopback};

/// AES-128 key expansion (FIPS-197 §5.2): the 11 round keys, 176 bytes.
fn aes128_schedule(key: &[u8; 16]) -> Vec<u8> {
    fn mul(mut a: u8, mut b: u8) -> u8 {
        let mut p = 0;
        while b != 0 {
            if b & 1 != 0 {
                p ^= a;
            }
            a = (a << 1) ^ if a & 0x80 != 0 { 0x1b } else { 0 };
            b >>= 1;
        }
        p
    }
    let sbox = |x: u8| -> u8 {
        // Multiplicative inverse in GF(2^8) (0 for 0), then the affine map (FIPS-197 §5.1.1).
        let inv = (1..=255u8).find(|&y| mul(x, y) == 1).unwrap_or(0);
        let mut s = inv;
        for i in 1..5 {
            s ^= inv.rotate_left(i);
        }
        s ^ 0x63
    };
    let mut w = key.to_vec();
    let mut rcon = 1u8;
    for i in 4..44 {
        let mut t = [w[4 * i - 4], w[4 * i - 3], w[4 * i - 2], w[4 * i - 1]];
        if i % 4 == 0 {
            t = [sbox(t[1]) ^ rcon, sbox(t[2]), sbox(t[3]), sbox(t[0])];
            rcon = mul(rcon, 2);
        }
        for j in 0..4 {
            w.push(w[4 * (i - 4) + j] ^ t[j]);
        }
    }
    w
}

/// How often each needle occurs in the readable memory of `pid`.
fn occurrences(pid: u32, needles: &[&[u8]]) -> Vec<usize> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut mem = File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem");
    let mut counts = vec![0; needles.len()];
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let name = line.split_whitespace().nth(5).unwrap_or("");
        // Keys live in anonymous memory (heap, thread stacks): file mappings (the binary,
        // libraries) and the kernel's [vvar]/[vdso] pages are skipped.
        if !perms.starts_with("rw") || name.starts_with('/') || name.starts_with("[v") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        for (c, n) in counts.iter_mut().zip(needles) {
            *c += buf.windows(n.len()).filter(|w| w == n).count();
        }
    }
    counts
}

fn exchange(s: &UdpSocket, d: &[u8]) -> Vec<u8> {
    s.send(d).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.recv(&mut buf).expect("an answer");
    buf[..n].to_vec()
}

#[test]
fn session_keys_are_gone_from_memory_after_close_session() {
    let bmc = Bmc::start();
    let s = UdpSocket::bind((unique_loopback(), 0)).unwrap();
    s.connect(bmc.socket_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rng = ipmi_proto::fuzzing::Xorshift::new(0x5eed);
    let mut c = Client::new(
        CipherSuite::Suite17,
        USER,
        PASSWORD.as_bytes(),
        Privilege::Administrator,
    );
    let r = exchange(&s, &c.open_session_request());
    let rakp1 = c.handle_open_session_response(&r, &mut rng).unwrap();
    let rakp3 = c.handle_rakp2(&exchange(&s, &rakp1)).unwrap();
    c.handle_rakp4(&exchange(&s, &rakp3)).unwrap();
    // Traffic in the session: Get Device ID and Get Chassis Status, a few times each.
    for _ in 0..8 {
        for (netfn, cmd) in [(0x06, 0x01), (0x00, 0x01)] {
            let r = exchange(&s, &c.request(netfn, cmd, &[], &mut rng));
            assert_eq!(c.response(&r).unwrap().1, 0);
        }
    }
    let keys = c.session_keys().unwrap();
    let aes_key = *keys.aes_key();
    let schedule = aes128_schedule(&aes_key);
    let (sik, k1) = (keys.sik().to_vec(), keys.k1().to_vec());
    let needles: [&[u8]; 5] = [&schedule, &aes_key, &schedule[160..], &sik, &k1];
    let names = ["key schedule", "AES key", "last round key", "SIK", "K1"];
    let during = occurrences(bmc.pid(), &needles);
    println!(
        "during the session: {:?}",
        names.iter().zip(&during).collect::<Vec<_>>()
    );
    if during[0] == 0 {
        println!("SKIP memory: no key schedule in the AES-NI layout found during the session");
        return;
    }
    // Close Session (App 3Ch, the session's ID).
    let sid = c.bmc_session_id().to_le_bytes();
    let r = exchange(&s, &c.request(0x06, 0x3c, &sid, &mut rng));
    assert_eq!(c.response(&r).unwrap().1, 0);
    thread::sleep(Duration::from_millis(500));
    let after = occurrences(bmc.pid(), &needles);
    println!(
        "after Close Session: {:?}",
        names.iter().zip(&after).collect::<Vec<_>>()
    );
    assert_eq!(after, vec![0; needles.len()], "copies left: {names:?}");
}
