//! Attacks on the real binary (issue 15): what someone on the BMC network can do with or
//! without the password, driven by a raw RMCP+ console (`ipmi_proto::client`, or bytes made by
//! hand where an attacker would send garbage) from loopback source addresses of its own,
//! while the operator uses real ipmitool.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use ipmi_proto::client::{Client, ClientError};
use ipmi_proto::codes::RakpStatus;
use ipmi_proto::crypto::CipherSuite;
use ipmi_proto::endpoint::Entropy as _;
use ipmi_proto::fuzzing::Xorshift as TestRng; // the console's nonces need not be secret here
use ipmi_proto::session::Privilege;

use crate::ipmitool::Ipmitool;
use crate::support::{Bmc, BmcConfig, PASSWORD, USER, unique_loopback};

/// A raw RMCP+ console on its own source address.
struct Raw {
    sock: UdpSocket,
    bmc: SocketAddr,
}

impl Raw {
    fn new(from: Ipv4Addr, bmc: &Bmc) -> Self {
        let sock = UdpSocket::bind((from, 0)).unwrap_or_else(|e| panic!("bind {from}:0: {e}"));
        sock.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("set_read_timeout");
        Self {
            sock,
            bmc: bmc.socket_addr(),
        }
    }

    /// Send `d` and wait for the BMC's answer (three tries: loopback loses nothing, but a
    /// loaded machine may be slow).
    #[track_caller]
    fn exchange(&self, d: &[u8]) -> Vec<u8> {
        for _ in 0..3 {
            self.sock.send_to(d, self.bmc).expect("send");
            let mut buf = [0u8; 512];
            if let Ok((n, from)) = self.sock.recv_from(&mut buf)
                && from == self.bmc
            {
                return buf[..n].to_vec();
            }
        }
        panic!("no answer from {}", self.bmc)
    }

    /// Send `d` once and wait up to 1 s for an answer.
    fn try_exchange(&self, d: &[u8]) -> Option<Vec<u8>> {
        self.sock.send_to(d, self.bmc).expect("send");
        let mut buf = [0u8; 512];
        self.sock
            .set_read_timeout(Some(Duration::from_secs(1)))
            .ok()?;
        let got = self.sock.recv_from(&mut buf);
        self.sock
            .set_read_timeout(Some(Duration::from_secs(2)))
            .ok()?;
        match got {
            Ok((n, from)) if from == self.bmc => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// Open Session and RAKP 1 for `c`; returns the RAKP 2 datagram.
    fn to_rakp2(&self, c: &mut Client, rng: &mut TestRng) -> Result<Vec<u8>, ClientError> {
        let r = self.exchange(&c.open_session_request());
        let rakp1 = c.handle_open_session_response(&r, rng)?;
        Ok(self.exchange(&rakp1))
    }

    /// A whole login with the right password.
    fn login(&self, c: &mut Client, rng: &mut TestRng) -> Result<(), ClientError> {
        let r2 = self.to_rakp2(c, rng)?;
        let rakp3 = c.handle_rakp2(&r2)?;
        c.handle_rakp4(&self.exchange(&rakp3))
    }
}

/// An RMCP+ set-up packet (session ID 0, in clear) carrying `payload` of type `ty`.
fn setup_packet(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x06, 0x00, 0xff, 0x07, 0x06, ty, 0, 0, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    p.extend_from_slice(payload);
    p
}

/// The RMCP+ status byte of a set-up answer.
fn status(answer: &[u8]) -> u8 {
    assert!(answer.len() > 17, "short answer {}", hex::encode(answer));
    answer[17]
}

/// 30 RAKP 3 messages with garbage AuthCodes, 10 from each of 127.0.0.2, .3 and .4 (the
/// per-source threshold), as an attacker who knows only the user name sends them.
fn garbage_rakp3_from_three_sources(bmc: &Bmc, rng: &mut TestRng) {
    for src in 2..=4u8 {
        let raw = Raw::new(Ipv4Addr::new(127, 0, 0, src), bmc);
        for _ in 0..10 {
            // The attacker does not know the password: it cannot check RAKP 2, and sends
            // RAKP 3 with 32 random bytes as the AuthCode.
            let mut c = Client::new(CipherSuite::Suite17, USER, b"?", Privilege::Administrator);
            let r2 = raw.to_rakp2(&mut c, rng).expect("RAKP 2");
            assert_eq!(status(&r2), 0, "RAKP 2 {}", hex::encode(&r2));
            let mut p = vec![0, 0, 0, 0];
            p.extend_from_slice(&c.bmc_session_id().to_le_bytes());
            let mut garbage = [0u8; 32];
            rng.fill(&mut garbage);
            p.extend_from_slice(&garbage);
            let r4 = raw.exchange(&setup_packet(0x14, &p));
            assert_eq!(status(&r4), 0x0f, "RAKP 4 {}", hex::encode(&r4));
        }
    }
}

/// Issue 15 item 1: RAKP 1 and RAKP 3 need no secret, so anyone who knows the user name
/// could lock the operator out: 30 RAKP 3 messages with garbage AuthCodes from three source
/// addresses (10 each, the per-source threshold) used to lock `admin` for 60 s. Now the
/// operator's ipmitool, from the address it logged in from before, logs in at once (one try,
/// `-R 1`), while a source that never logged in as `admin` is refused (the user lock-out
/// still holds against strangers). With `--lockout-trust-secs 0` the old behaviour is back.
#[test]
fn garbage_rakp3_from_three_sources_does_not_lock_the_operator_out() {
    for trust in [None, Some("0")] {
        let bmc = Bmc::start_with(BmcConfig {
            extra_args: trust
                .map(|t| vec!["--lockout-trust-secs".to_string(), t.to_string()])
                .unwrap_or_default(),
            ..BmcConfig::default()
        });
        let Some(t) = Ipmitool::new(&bmc, Some(17)) else {
            return;
        };
        let t = t.extra(&["-R", "1", "-N", "2"]);
        // The operator logs in once (from 127.0.0.1, the source the kernel picks on loopback).
        t.run(&["power", "status"]).expect_success();
        let mut rng = TestRng::new(0x15_0001);
        garbage_rakp3_from_three_sources(&bmc, &mut rng);
        // The user is locked out now: a stranger with the right password is refused (01h).
        let stranger = Raw::new(unique_loopback(), &bmc);
        let mut c = Client::new(
            CipherSuite::Suite17,
            USER,
            PASSWORD.as_bytes(),
            Privilege::Administrator,
        );
        assert_eq!(
            stranger.login(&mut c, &mut rng),
            Err(ClientError::Status(RakpStatus(0x01))),
            "the user lock-out should hold against a source that never logged in"
        );
        let r = t.run(&["power", "status"]);
        if trust.is_some() {
            // Without the exemption the operator is locked out like everyone else.
            r.expect_failure();
        } else {
            // The operator, from its address: in at once.
            r.expect_success();
        }
    }
}

/// Issue 15 item 2, against the real binary: 40 consoles open their sessions while the table
/// is empty, then each finishes RAKP 1/3 with the right password. Only 32 (the documented
/// cap) become active; the other 8 get RAKP 4 with status 01h (insufficient resources).
#[test]
fn the_active_session_cap_holds_when_handshakes_finish_late() {
    let bmc = Bmc::start();
    let mut rng = TestRng::new(0x15_0002);
    let raw = Raw::new(unique_loopback(), &bmc);
    let mut consoles: Vec<(Client, Vec<u8>)> = (0..40u32)
        .map(|i| {
            let mut c = Client::new(
                CipherSuite::Suite17,
                USER,
                PASSWORD.as_bytes(),
                Privilege::Administrator,
            )
            .with_console_id(0x1500_0000 + i);
            let r = raw.exchange(&c.open_session_request());
            let rakp1 = c
                .handle_open_session_response(&r, &mut rng)
                .expect("Open Session");
            (c, rakp1)
        })
        .collect();
    let (mut ok, mut full) = (0, 0);
    for (c, rakp1) in &mut consoles {
        let rakp3 = c.handle_rakp2(&raw.exchange(rakp1)).expect("RAKP 2");
        match c.handle_rakp4(&raw.exchange(&rakp3)) {
            Ok(()) => ok += 1,
            Err(ClientError::Status(RakpStatus(0x01))) => full += 1,
            e => panic!("unexpected RAKP 4: {e:?}"),
        }
    }
    assert_eq!((ok, full), (32, 8), "{}", bmc.log());
}

/// Issue 15 item 3: 32 USER sessions kept alive used to lock everyone out, Ironic's
/// ADMINISTRATOR included. Now ipmitool's ADMINISTRATOR login (its default `-L`) takes the
/// slot of the longest-idle USER session, which is closed: its next request gets no answer,
/// while the other USER sessions carry on.
#[test]
fn an_administrator_login_takes_the_slot_of_the_longest_idle_user_session() {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, Some(17)) else {
        return;
    };
    let mut rng = TestRng::new(0x15_0003);
    let raw = Raw::new(unique_loopback(), &bmc);
    let mut users: Vec<Client> = (0..32u32)
        .map(|i| {
            let mut c = Client::new(
                CipherSuite::Suite17,
                USER,
                PASSWORD.as_bytes(),
                Privilege::User,
            )
            .with_console_id(0x1503_0000 + i);
            raw.login(&mut c, &mut rng).expect("USER login");
            c
        })
        .collect();
    // Session 0 is busy again, so session 1 is now the longest idle.
    let get_device_id = |c: &mut Client, rng: &mut TestRng| {
        let d = c.request(0x06, 0x01, &[], rng);
        raw.try_exchange(&d)
            .map(|r| c.response(&r).expect("a valid answer").1.0)
    };
    assert_eq!(get_device_id(&mut users[0], &mut rng), Some(0));
    // A 33rd USER login outranks nobody and is refused.
    let mut extra = Client::new(
        CipherSuite::Suite17,
        USER,
        PASSWORD.as_bytes(),
        Privilege::User,
    );
    assert_eq!(
        raw.login(&mut extra, &mut rng),
        Err(ClientError::Status(RakpStatus(0x01)))
    );
    t.extra(&["-R", "1", "-N", "2"])
        .run(&["power", "status"])
        .expect_success();
    assert_eq!(
        get_device_id(&mut users[1], &mut rng),
        None,
        "the longest-idle USER session should be gone"
    );
    assert_eq!(get_device_id(&mut users[0], &mut rng), Some(0));
    assert_eq!(get_device_id(&mut users[31], &mut rng), Some(0));
}

/// Issue 15 item 11: `ipmitool raw 0x06 0x3c <id>` (Close Session) of a session ID that does
/// not exist gets completion code 87h (IPMI v2.0 §22.19: invalid session ID in request),
/// which ipmitool reports as a failure with `rsp=0x87`; it used to answer 00h.
#[test]
fn close_session_of_an_unknown_id_is_refused_with_87h() {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, Some(17)) else {
        return;
    };
    let r = t.run(&["raw", "0x06", "0x3c", "0x78", "0x56", "0x34", "0x12"]);
    r.expect_failure();
    assert!(r.output().contains("rsp=0x87"), "{r}");
    t.run(&["power", "status"]).expect_success();
}
