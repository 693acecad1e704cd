//! Tests across modules: the captured sessions in `tests/vectors/` (copied from the project's
//! shared vectors: real ipmitool and pyghmi sessions, keys checked against ipmitool -vvvv),
//! and an in-memory client/BMC pair with a simulated clock (the quinn-proto `Pair` idea).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use zeroize::Zeroizing;

use crate::client::{Client, ClientError};
use crate::codes::{AuthAlg, ConfAlg, IntegAlg, PayloadType, RakpStatus};
use crate::crypto::{CipherSuite, SessionKeys, rakp2_auth, rakp3_auth};
use crate::endpoint::{DropReason, Endpoint, Entropy, Event, EventKind, LoginFailure, Output};
use crate::machine::{BootFlags, MachineReply, MachineRequest, PowerAction, PowerState};
use crate::rmcp::{OpenSessionResponse, SetupMessage};
use crate::session::Privilege;
use crate::wire::{self, Datagram, IpmiResponse};
use crate::{BmcConfig, User};

fn vector(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn a16(v: &Value) -> [u8; 16] {
    h(v).try_into().unwrap()
}

fn le32(v: &Value) -> u32 {
    u32::from_le_bytes(h(v).try_into().unwrap())
}

/// Entropy that hands out scripted chunks, then a 64-bit LCG's top bytes (a byte counter
/// would repeat its session IDs after a few dozen sessions, and `new_session_id` would then
/// search for a free one forever).
#[derive(Default)]
struct Script {
    chunks: VecDeque<Vec<u8>>,
    n: u64,
}

impl Entropy for Script {
    fn fill(&mut self, buf: &mut [u8]) {
        if let Some(c) = self.chunks.pop_front() {
            assert_eq!(c.len(), buf.len(), "scripted entropy chunk size");
            buf.copy_from_slice(&c);
        } else {
            for b in buf {
                self.n = self
                    .n
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                *b = (self.n >> 56) as u8;
            }
        }
    }
}

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn admin(password: &str) -> BmcConfig {
    let u = User::new(
        "admin",
        Zeroizing::new(password.as_bytes().to_vec()),
        Privilege::Administrator,
    )
    .unwrap();
    BmcConfig::new(vec![u], [7; 16]).unwrap()
}

/// A console logging in as the `admin` of [`admin`]`("pw")`, asking for ADMINISTRATOR.
fn admin_client(suite: CipherSuite) -> Client {
    Client::new(suite, "admin", b"pw", Privilege::Administrator)
}

#[test]
fn key_schedule_matches_ipmitool_and_known_answers() {
    let k = vector("kat_crypto");
    let i = &k["inputs"];
    let (pw, user) = (b"password".as_slice(), b"admin".as_slice());
    let (rm, rc, guid) = (a16(&i["rm"]), a16(&i["rc"]), a16(&i["guid"]));
    let (sid_m, sid_c) = (le32(&i["sid_m_wire"]), le32(&i["sid_c_wire"]));
    for (suite, name) in [
        (CipherSuite::Suite3, "suite3"),
        (CipherSuite::Suite17, "suite17"),
    ] {
        for (kg, want) in [
            (None, &k[name]),
            (Some(b"0123456789abcdefghij"), &k["with_kg"][name]),
        ] {
            let r2 = rakp2_auth(suite, pw, sid_m, sid_c, &rm, &rc, &guid, 0x14, user);
            assert_eq!(&r2[..], &h(&want["rakp2_hmac"])[..], "{name} rakp2");
            let r3 = rakp3_auth(suite, pw, &rc, sid_m, 0x14, user);
            assert_eq!(&r3[..], &h(&want["rakp3_hmac"])[..], "{name} rakp3");
            let keys = SessionKeys::derive(suite, kg.map_or(pw, |k| &k[..]), &rm, &rc, 0x14, user);
            assert_eq!(keys.sik(), &h(&want["sik"])[..], "{name} sik");
            assert_eq!(keys.k1(), &h(&want["k1"])[..], "{name} k1");
            assert_eq!(&keys.aes_key()[..], &h(&want["aes_key"])[..], "{name} aes");
            assert_eq!(
                keys.rakp4_icv(&rm, sid_c, &guid),
                h(&want["rakp4_icv"]),
                "{name} icv"
            );
        }
    }
}

#[test]
fn fixed_iv_packets_encode_as_computed() {
    let k = vector("kat_crypto");
    let i = &k["inputs"];
    for p in k["packets"].as_array().unwrap() {
        let suite = match p["suite"].as_u64().unwrap() {
            3 => CipherSuite::Suite3,
            _ => CipherSuite::Suite17,
        };
        let keys = SessionKeys::derive(
            suite,
            b"password",
            &a16(&i["rm"]),
            &a16(&i["rc"]),
            0x14,
            b"admin",
        );
        let dg = h(&p["datagram"]);
        let Datagram::V20(v) = wire::decode_datagram(&dg).unwrap() else {
            panic!()
        };
        let mut out = Vec::new();
        let at = wire::begin_v20(&mut out, PayloadType::IPMI, true, true, v.session_id, v.seq);
        keys.encrypt(&a16(&p["iv"]), &h(&p["ipmi_msg"]), &mut out);
        wire::finish_v20(&mut out, at);
        wire::append_trailer(&mut out, |c| keys.integrity(c));
        assert_eq!(hex::encode(&out), hex::encode(&dg), "{}", p["label"]);
        assert_eq!(
            &keys.decrypt(v.payload).unwrap()[..],
            &h(&p["ipmi_msg"])[..]
        );
    }
}

/// Replay a captured client session against the endpoint, with entropy scripted to the
/// capture's SIDc, Rc and reply IVs: the set-up replies must be byte-identical to what the
/// client accepted, and every in-session request must decrypt, verify and be answered.
fn replay(name: &str, machine_answer: impl Fn(MachineRequest) -> MachineReply) -> usize {
    let v = vector(name);
    let s = &v["session"];
    let mut guid = a16(&s["bmc_guid"]);
    guid.reverse();
    let mut cfg = admin(v["credentials"]["password"].as_str().unwrap());
    cfg.uuid = guid;
    let mut ep = Endpoint::new(cfg);
    let dgs: Vec<&Value> = v["datagrams"].as_array().unwrap().iter().collect();
    let mut rng = Script::default();
    rng.chunks.push_back(h(&s["bmc_session_id_wire"]));
    rng.chunks.push_back(h(&s["rc"]));
    let keys = SessionKeys::derive(
        match v["cipher_suite"].as_u64().unwrap() {
            3 => CipherSuite::Suite3,
            _ => CipherSuite::Suite17,
        },
        b"password",
        &a16(&s["rm"]),
        &a16(&s["rc"]),
        s["role"].as_u64().unwrap() as u8,
        b"admin",
    );
    let now = Instant::now();
    let mut identical = 0;
    for (n, d) in dgs.iter().enumerate() {
        if d["dir"] != "c2s" {
            continue;
        }
        let Some(reply) = dgs.get(n + 1).filter(|r| r["dir"] == "s2c") else {
            continue;
        };
        let captured = h(&reply["hex"]);
        // The reply IV, if the captured reply is encrypted.
        if let Ok(Datagram::V20(p)) = wire::decode_datagram(&captured)
            && p.encrypted
        {
            rng.chunks.push_back(p.payload[..16].to_vec());
        }
        let mut out = ep.handle(now, peer(), &h(&d["hex"]), &mut rng).ok();
        if let Some(Output::Machine { ticket, request }) = out {
            out = ep.complete(now, ticket, Ok(machine_answer(request)), &mut rng);
        }
        let Some(Output::Transmit { data, .. }) = out else {
            panic!("{name}: no reply to {}", d["label"]);
        };
        if data == captured {
            identical += 1;
            continue;
        }
        // Different content is fine (another BMC answered the capture); it must still be a
        // valid reply to the same command.
        let Ok(Datagram::V20(p)) = wire::decode_datagram(&data) else {
            panic!(
                "{name}: {} answered with {}",
                d["label"],
                hex::encode(&data)
            );
        };
        let plain = if p.encrypted {
            keys.decrypt(p.payload).unwrap()
        } else {
            // Only session-less IPMI answers may differ (pyghmi lists only suite 3).
            assert_eq!(
                p.payload_type, 0,
                "{name}: set-up reply differs for {}",
                d["label"]
            );
            Zeroizing::new(p.payload.to_vec())
        };
        let r = IpmiResponse::decode(&plain).unwrap();
        assert_eq!(r.cmd as u64, reply["plain"]["cmd"].as_u64().unwrap());
        assert_eq!(r.rq_seq as u64, reply["plain"]["seq"].as_u64().unwrap());
    }
    identical
}

fn sim_answer(r: MachineRequest) -> MachineReply {
    match r {
        MachineRequest::PowerState => MachineReply::PowerState(PowerState::On),
        MachineRequest::GetBootFlags => MachineReply::BootFlags(BootFlags([0xe0, 0x04, 0, 0, 0])),
        _ => MachineReply::Done,
    }
}

#[test]
fn replays_captured_ipmitool_and_pyghmi_sessions() {
    for name in [
        "suite3_power_status",
        "suite3_bootdev_pxe_persistent",
        "suite3_auto_cipher_power_status",
        "suite17_power_status",
        "suite17_auto_power_status",
        "suite17_bootdev_pxe_efi_persistent",
        "pyghmi_client_suite17",
    ] {
        // At least Open Session, RAKP 2, RAKP 4 and Set Session Privilege are byte-identical.
        let same = replay(name, sim_answer);
        assert!(
            same >= 4,
            "{name}: only {same} replies identical to the capture"
        );
    }
}

#[test]
fn unknown_user_gets_status_0d_as_captured() {
    let v = vector("suite17_unknown_user");
    let mut ep = Endpoint::new(admin("password"));
    let mut rng = Script::default();
    rng.chunks
        .push_back(h(&v["session"]["bmc_session_id_wire"]));
    let dgs = v["datagrams"].as_array().unwrap();
    let mut last = None;
    for d in dgs.iter().filter(|d| d["dir"] == "c2s") {
        last = ep
            .handle(Instant::now(), peer(), &h(&d["hex"]), &mut rng)
            .ok();
    }
    let Some(Output::Transmit { data, .. }) = last else {
        panic!()
    };
    let Ok(Datagram::V20(p)) = wire::decode_datagram(&data) else {
        panic!()
    };
    assert_eq!(p.payload[1], 0x0d);
    assert!(matches!(
        ep.poll_event(),
        Some(Event::LoginFailed {
            reason: LoginFailure::UnknownUser,
            ..
        })
    ));
}

/// An in-memory console/BMC pair with a simulated clock.
struct Pair {
    ep: Endpoint,
    rng: Script,
    now: Instant,
}

impl Pair {
    fn new(cfg: BmcConfig) -> Self {
        Self {
            ep: Endpoint::new(cfg),
            rng: Script::default(),
            now: Instant::now(),
        }
    }

    fn send(&mut self, d: &[u8]) -> Option<Output> {
        self.send_from(peer(), d)
    }

    fn send_from(&mut self, from: SocketAddr, d: &[u8]) -> Option<Output> {
        self.handle(from, d).ok()
    }

    fn handle(&mut self, from: SocketAddr, d: &[u8]) -> Result<Output, DropReason> {
        self.ep.handle(self.now, from, d, &mut self.rng)
    }

    fn reply(&mut self, d: &[u8]) -> Vec<u8> {
        self.reply_from(peer(), d)
    }

    fn reply_from(&mut self, from: SocketAddr, d: &[u8]) -> Vec<u8> {
        match self.send_from(from, d) {
            Some(Output::Transmit { data, .. }) => data,
            o => panic!("expected a reply, got {o:?}"),
        }
    }

    fn login(&mut self, c: &mut Client) -> Result<(), ClientError> {
        self.login_from(peer(), c)
    }

    fn login_from(&mut self, from: SocketAddr, c: &mut Client) -> Result<(), ClientError> {
        let r = self.reply_from(from, &c.open_session_request());
        let rakp1 = c.handle_open_session_response(&r, &mut self.rng)?;
        let r = self.reply_from(from, &rakp1);
        let rakp3 = c.handle_rakp2(&r)?;
        let r = self.reply_from(from, &rakp3);
        c.handle_rakp4(&r)
    }

    /// Log in up to RAKP 3, send it with its AuthCode corrupted, and return the RAKP 4.
    fn bad_rakp3(&mut self, c: &mut Client) -> Vec<u8> {
        self.bad_rakp3_from(peer(), c)
    }

    fn bad_rakp3_from(&mut self, from: SocketAddr, c: &mut Client) -> Vec<u8> {
        let r = self.reply_from(from, &c.open_session_request());
        let rakp1 = c.handle_open_session_response(&r, &mut self.rng).unwrap();
        let r = self.reply_from(from, &rakp1);
        let mut rakp3 = c.handle_rakp2(&r).unwrap();
        let n = rakp3.len();
        rakp3[n - 1] ^= 1;
        self.reply_from(from, &rakp3)
    }

    /// Run a command to the end, answering machine requests with `answer`.
    fn cmd(&mut self, c: &mut Client, netfn: u8, cmd: u8, data: &[u8]) -> (u8, Vec<u8>) {
        let d = c.request(netfn, cmd, data, &mut self.rng);
        let out = match self.send(&d) {
            Some(Output::Machine { ticket, request }) => {
                self.ep
                    .complete(self.now, ticket, Ok(sim_answer(request)), &mut self.rng)
            }
            o => o,
        };
        let Some(Output::Transmit { data, .. }) = out else {
            panic!("no reply")
        };
        let (_, cc, data) = c.response(&data).unwrap();
        (cc.0, data)
    }
}

#[test]
fn both_suites_log_in_and_run_commands() {
    for suite in CipherSuite::ALL {
        let mut p = Pair::new(admin("s3cret"));
        let mut c = Client::new(suite, "admin", b"s3cret", Privilege::Administrator);
        p.login(&mut c).unwrap();
        assert_eq!(p.cmd(&mut c, 0x06, 0x3b, &[4]), (0, vec![4]));
        assert_eq!(p.cmd(&mut c, 0x00, 0x01, &[]).1[0] & 1, 1);
        assert_eq!(p.cmd(&mut c, 0x2c, 0x00, &[0]).0, 0xc1);
        assert_eq!(p.cmd(&mut c, 0x06, 0x01, &[]).1.len(), 15);
        let sid = c.bmc_session_id().to_le_bytes();
        assert_eq!(p.cmd(&mut c, 0x06, 0x3c, &sid).0, 0);
        assert_eq!(p.ep.session_counts(), (0, 0));
    }
}

#[test]
fn wrong_password_fails_at_rakp2_and_is_counted_on_timeout() {
    let mut p = Pair::new(admin("right"));
    let mut c = Client::new(
        CipherSuite::Suite17,
        "admin",
        b"wrong",
        Privilege::Administrator,
    );
    assert_eq!(p.login(&mut c), Err(ClientError::BadRakp2));
    p.now += Duration::from_secs(6);
    p.ep.handle_timeout(p.now);
    assert_eq!(p.ep.session_counts(), (0, 0));
    assert_eq!(p.ep.stats().login_failures, 1);
}

#[test]
fn wrong_rakp3_gets_status_0f() {
    let mut p = Pair::new(admin("right"));
    let mut c = Client::new(
        CipherSuite::Suite3,
        "admin",
        b"right",
        Privilege::Administrator,
    );
    let rakp4 = p.bad_rakp3(&mut c);
    assert_eq!(
        c.handle_rakp4(&rakp4),
        Err(ClientError::Status(RakpStatus::INVALID_ICV))
    );
}

/// Issue 11 item 5: a RAKP 4 with status 00 and 2–7 bytes made `Client::handle_rakp4` panic
/// (it sliced `&p[8..]`). Every prefix of each real answer is now an error, not a panic, and
/// does not spoil the login: the real answer still succeeds afterwards.
#[test]
fn client_refuses_short_answers_at_every_step_without_panicking() {
    fn frame(ty: u8, p: &[u8]) -> Vec<u8> {
        crate::rmcp::setup_datagram(PayloadType(ty), p)
    }
    let mut p = Pair::new(admin("pw"));
    let mut c = admin_client(CipherSuite::Suite17);
    let shorts = |c: &mut Client, ty: u8, d: &[u8], rng: &mut Script| {
        for n in 0..d.len() - 16 {
            let short = frame(ty, &d[16..16 + n]);
            let r = match ty {
                0x11 => c.handle_open_session_response(&short, rng).map(drop),
                0x13 => c.handle_rakp2(&short).map(drop),
                _ => c.handle_rakp4(&short),
            };
            assert!(r.is_err(), "{n}-byte payload of type {ty:#04x} accepted");
        }
    };
    let r = p.reply(&c.open_session_request());
    shorts(&mut c, 0x11, &r, &mut p.rng);
    let rakp1 = c.handle_open_session_response(&r, &mut p.rng).unwrap();
    let r = p.reply(&rakp1);
    shorts(&mut c, 0x13, &r, &mut p.rng);
    let rakp3 = c.handle_rakp2(&r).unwrap();
    let r = p.reply(&rakp3);
    shorts(&mut c, 0x15, &r, &mut p.rng);
    assert_eq!(c.handle_rakp4(&r), Ok(()));
}

#[test]
fn cipher_suite_zero_and_unknown_proposals_are_refused() {
    let mut p = Pair::new(admin("pw"));
    let mut c = admin_client(CipherSuite::Suite3);
    let mut open = c.open_session_request();
    // Propose RAKP-none / none / none (cipher suite 0).
    let n = open.len();
    for at in [n - 20, n - 12, n - 4] {
        open[at] = 0;
    }
    let r = p.reply(&open);
    assert_eq!(
        c.handle_open_session_response(&r, &mut p.rng),
        Err(ClientError::Status(RakpStatus::NO_CIPHER_MATCH))
    );
    assert_eq!(p.ep.session_counts(), (0, 0));
}

/// OpenIPMI's `bmcpick` (issue 11 item 6): three null algorithm payloads (length 0) ask the
/// BMC to choose (IPMI v2.0 §13.17); we choose suite 3, the one every IPMI 2.0 console
/// implements (OpenIPMI 2.0.33 has no RAKP-HMAC-SHA256, so suite 17 left `bmcpick` unable to
/// log in), and name its algorithms in the response (§13.18), and the login completes.
#[test]
fn null_algorithm_payloads_get_suite_3() {
    let mut p = Pair::new(admin("pw"));
    let mut c = admin_client(CipherSuite::Suite3);
    let mut open = c.open_session_request();
    let n = open.len();
    // Payload length 0 and algorithm 0 in each record, as OpenIPMI sends them.
    for at in [n - 21, n - 20, n - 13, n - 12, n - 5, n - 4] {
        open[at] = 0;
    }
    let r = p.reply(&open);
    // Status 00h and suite 3's algorithms named in the three records.
    let m = OpenSessionResponse::from_datagram(&r).unwrap();
    assert_eq!(m.status, RakpStatus::OK);
    let g = m.granted.unwrap();
    assert_eq!(
        (g.auth, g.integ, g.conf),
        (
            AuthAlg::RAKP_HMAC_SHA1,
            IntegAlg::HMAC_SHA1_96,
            ConfAlg::AES_CBC_128
        )
    );
    let rakp1 = c.handle_open_session_response(&r, &mut p.rng).unwrap();
    let r = p.reply(&rakp1);
    let rakp3 = c.handle_rakp2(&r).unwrap();
    let r = p.reply(&rakp3);
    assert_eq!(c.handle_rakp4(&r), Ok(()));
    assert_eq!(p.ep.session_counts().0, 1);
}

/// A null payload beside explicit proposals fills in from a suite that agrees with them
/// (RAKP-HMAC-SHA1 + null + null is suite 3, RAKP-HMAC-SHA256 + null + null is suite 17),
/// and never reaches cipher suite 0: an explicit RAKP-none with null integrity and
/// confidentiality is still refused 11h.
#[test]
fn partly_null_proposals_agree_with_what_was_proposed_and_never_pick_suite_zero() {
    let mut p = Pair::new(admin("pw"));
    let mut c = admin_client(CipherSuite::Suite3);
    let mut open = c.open_session_request();
    let n = open.len();
    for at in [n - 13, n - 12, n - 5, n - 4] {
        open[at] = 0;
    }
    let r = p.reply(&open);
    let rakp1 = c.handle_open_session_response(&r, &mut p.rng).unwrap();
    let r = p.reply(&rakp1);
    let rakp3 = c.handle_rakp2(&r).unwrap();
    assert_eq!(c.handle_rakp4(&p.reply(&rakp3)), Ok(()));

    let mut c = admin_client(CipherSuite::Suite17);
    let mut open = c.open_session_request();
    let n = open.len();
    for at in [n - 13, n - 12, n - 5, n - 4] {
        open[at] = 0;
    }
    let r = p.reply(&open);
    let rakp1 = c.handle_open_session_response(&r, &mut p.rng).unwrap();
    let r = p.reply(&rakp1);
    let rakp3 = c.handle_rakp2(&r).unwrap();
    assert_eq!(c.handle_rakp4(&p.reply(&rakp3)), Ok(()));

    let mut c = admin_client(CipherSuite::Suite17);
    let mut open = c.open_session_request();
    let n = open.len();
    open[n - 20] = 0; // RAKP-none, length 8
    for at in [n - 13, n - 12, n - 5, n - 4] {
        open[at] = 0;
    }
    assert_eq!(
        c.handle_open_session_response(&p.reply(&open), &mut p.rng),
        Err(ClientError::Status(RakpStatus::NO_CIPHER_MATCH))
    );
}

#[test]
fn privileges_are_enforced() {
    let mut p = Pair::new(admin("pw"));
    let mut c = Client::new(CipherSuite::Suite17, "admin", b"pw", Privilege::User);
    p.login(&mut c).unwrap();
    assert_eq!(p.cmd(&mut c, 0x06, 0x3b, &[2]), (0, vec![2]));
    assert_eq!(
        p.cmd(&mut c, 0x06, 0x3b, &[4]).0,
        0x81,
        "above the RAKP role"
    );
    assert_eq!(p.cmd(&mut c, 0x00, 0x01, &[]).0, 0);
    assert_eq!(p.cmd(&mut c, 0x00, 0x02, &[1]).0, 0xd4);
    assert_eq!(p.cmd(&mut c, 0x00, 0x08, &[5, 0x80, 4, 0, 0, 0]).0, 0xd4);
    assert_eq!(p.cmd(&mut c, 0x06, 0x02, &[]).0, 0xd4);

    let u = User::new("op", Zeroizing::new(b"pw".to_vec()), Privilege::Operator).unwrap();
    let mut cfg = admin("pw");
    cfg.users.push(u);
    let mut p = Pair::new(cfg);
    let mut c = Client::new(CipherSuite::Suite3, "op", b"pw", Privilege::Administrator);
    assert_eq!(
        p.login(&mut c),
        Err(ClientError::Status(RakpStatus::UNAUTHORIZED_ROLE)),
        "role above the user's limit"
    );
    let mut c = Client::new(CipherSuite::Suite3, "op", b"pw", Privilege::Operator);
    p.login(&mut c).unwrap();
    assert_eq!(p.cmd(&mut c, 0x06, 0x3b, &[3]), (0, vec![3]));
    assert_eq!(p.cmd(&mut c, 0x00, 0x02, &[0]).0, 0);
}

#[test]
fn replays_are_dropped_and_retries_answered_from_cache() {
    let mut p = Pair::new(admin("pw"));
    let mut c = admin_client(CipherSuite::Suite17);
    p.login(&mut c).unwrap();
    p.cmd(&mut c, 0x06, 0x3b, &[4]);
    // Power on: the machine is asked once.
    let first = c.request_with_rq_seq(0x00, 0x02, &[1], 9, &mut p.rng);
    let Some(Output::Machine { ticket, request }) = p.send(&first) else {
        panic!()
    };
    assert_eq!(request, MachineRequest::Power(PowerAction::On));
    // The same datagram again (a replay or network duplicate): dropped.
    assert!(p.send(&first).is_none());
    // A client retry while the machine works: no second machine request.
    let retry = c.request_with_rq_seq(0x00, 0x02, &[1], 9, &mut p.rng);
    assert!(p.send(&retry).is_none());
    assert_eq!(p.ep.pending_count(), 1);
    let out =
        p.ep.complete(p.now, ticket, Ok(MachineReply::Done), &mut p.rng);
    assert!(matches!(out, Some(Output::Transmit { .. })));
    // A retry after the answer: answered from the cache, still no machine request.
    let retry = c.request_with_rq_seq(0x00, 0x02, &[1], 9, &mut p.rng);
    let Some(Output::Transmit { data, .. }) = p.send(&retry) else {
        panic!()
    };
    assert_eq!(c.response(&data).unwrap().1, 0);
    assert_eq!(p.ep.stats().retries_answered, 1);
    // A tampered packet fails its integrity check.
    let mut bad = c.request(0x06, 0x01, &[], &mut p.rng);
    let n = bad.len();
    bad[n - 20] ^= 0x80;
    assert!(p.send(&bad).is_none());
}

#[test]
fn sessions_expire_and_half_open_floods_evict_the_oldest() {
    let mut cfg = admin("pw");
    cfg.limits.max_half_open = 8;
    let mut p = Pair::new(cfg);
    let mut c = admin_client(CipherSuite::Suite3);
    p.login(&mut c).unwrap();
    for _ in 0..100 {
        let mut f = Client::new(CipherSuite::Suite3, "admin", b"x", Privilege::Administrator);
        p.reply(&f.open_session_request());
    }
    assert_eq!(
        p.ep.session_counts(),
        (1, 8),
        "bounded, and the active session survives"
    );
    // A real client still gets in during the flood.
    let mut c2 = admin_client(CipherSuite::Suite17);
    p.login(&mut c2).unwrap();
    p.now += Duration::from_secs(30);
    p.ep.handle_timeout(p.now);
    assert_eq!(
        p.ep.session_counts(),
        (2, 0),
        "half-open sessions expire first"
    );
    p.now += Duration::from_secs(61);
    p.ep.handle_timeout(p.now);
    assert_eq!(p.ep.session_counts(), (0, 0));
}

#[test]
fn session_limit_answers_insufficient_resources() {
    let mut cfg = admin("pw");
    cfg.limits.max_sessions = 2;
    let mut p = Pair::new(cfg);
    for _ in 0..2 {
        let mut c = admin_client(CipherSuite::Suite3);
        p.login(&mut c).unwrap();
    }
    let mut c = admin_client(CipherSuite::Suite3);
    assert_eq!(
        p.login(&mut c),
        Err(ClientError::Status(RakpStatus::NO_RESOURCES))
    );
}

#[test]
fn boot_options_round_trip_and_bmc_reset_drops_sessions() {
    let mut p = Pair::new(admin("pw"));
    let mut c = admin_client(CipherSuite::Suite17);
    p.login(&mut c).unwrap();
    p.cmd(&mut c, 0x06, 0x3b, &[4]);
    assert_eq!(p.cmd(&mut c, 0x00, 0x08, &[0x03, 0x08]).0, 0);
    assert_eq!(p.cmd(&mut c, 0x00, 0x09, &[0x03, 0, 0]), (0, vec![1, 3, 8]));
    assert_eq!(p.cmd(&mut c, 0x00, 0x08, &[0x04, 0x01, 0x01]).0, 0);
    assert_eq!(
        p.cmd(&mut c, 0x00, 0x09, &[0x04, 0, 0]),
        (0, vec![1, 4, 0, 1])
    );
    assert_eq!(
        p.cmd(&mut c, 0x00, 0x08, &[0x05, 0xe0]).0,
        0xc7,
        "short param 5"
    );
    assert_eq!(
        p.cmd(&mut c, 0x00, 0x09, &[0x30, 0, 0]).0,
        0x80,
        "unsupported param"
    );
    assert_eq!(
        p.cmd(&mut c, 0x00, 0x02, &[0x09]).0,
        0xcc,
        "reserved control code"
    );
    assert_eq!(
        p.cmd(&mut c, 0x0a, 0x27, &[1, 0, b'C', b'L', b'R', 0xaa]).0,
        0xc1
    );
    assert_eq!(p.cmd(&mut c, 0x06, 0x02, &[]).0, 0);
    assert_eq!(p.ep.session_counts(), (0, 0));
}

#[test]
fn garbage_never_panics_and_is_dropped() {
    let mut p = Pair::new(admin("pw"));
    let mut x: u32 = 12345;
    for len in 0..400 {
        let d: Vec<u8> = (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i < 4 { [6, 0, 0xff, 7][i] } else { x as u8 }
            })
            .collect();
        let _ = p.send(&d);
    }
}

/// Every committed fuzz input (seeds and past crashes) runs as an ordinary test.
#[test]
fn fuzz_corpora_replay() {
    let root = format!("{}/../fuzz/corpus", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for (target, run) in [
        ("decoders", crate::fuzzing::decoders as fn(&[u8])),
        ("endpoint", crate::fuzzing::endpoint_sequence),
        ("commands", crate::fuzzing::commands),
        ("setup", crate::fuzzing::setup),
        ("client", crate::fuzzing::client),
    ] {
        for e in std::fs::read_dir(format!("{root}/{target}")).unwrap() {
            let path = e.unwrap().path();
            run(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n > 50, "only {n} corpus files");
}

#[test]
fn repeated_failed_logins_lock_the_source_out_for_a_while() {
    let mut p = Pair::new(admin("right"));
    for _ in 0..10 {
        let mut c = Client::new(
            CipherSuite::Suite17,
            "admin",
            b"right",
            Privilege::Administrator,
        );
        // A guesser that got RAKP 2 and sends a wrong RAKP 3.
        p.bad_rakp3(&mut c);
    }
    let locked = (0..64).any(|_| matches!(p.ep.poll_event(), Some(Event::LockedOut { .. })));
    assert!(locked, "tenth failure locks the source");
    let mut c = Client::new(
        CipherSuite::Suite17,
        "admin",
        b"right",
        Privilege::Administrator,
    );
    assert_eq!(
        p.login(&mut c),
        Err(ClientError::Status(RakpStatus::NO_RESOURCES)),
        "even the right password waits"
    );
    p.now += Duration::from_secs(61);
    p.ep.handle_timeout(p.now);
    let mut c = Client::new(
        CipherSuite::Suite17,
        "admin",
        b"right",
        Privilege::Administrator,
    );
    p.login(&mut c).unwrap();
    assert_eq!(p.ep.stats().lockouts, 1);
}

/// Let the rate limit's interval end (the console's handshake is refreshed by the caller if
/// it matters) and collect the summaries it reports.
fn suppressed_after_interval(p: &mut Pair) -> Vec<(EventKind, u64)> {
    let due = p.ep.poll_timeout().expect("a summary is due");
    assert!(p.ep.summary_pending());
    p.ep.handle_timeout(due.max(p.now + crate::ratelimit::LOG_INTERVAL));
    std::iter::from_fn(|| p.ep.poll_event())
        .filter_map(|e| match e {
            Event::Suppressed { kind, count, .. } => Some((kind, count)),
            _ => None,
        })
        .collect()
}

/// Open Session + RAKP 1 from `from`, never finished (a flooder's half-open login).
fn half_open_from(p: &mut Pair, from: SocketAddr, password: &[u8]) {
    let mut f = Client::new(
        CipherSuite::Suite17,
        "admin",
        password,
        Privilege::Administrator,
    );
    let Ok(Output::Transmit { data, .. }) =
        p.ep.handle(p.now, from, &f.open_session_request(), &mut p.rng)
    else {
        panic!("no Open Session Response")
    };
    let rakp1 = f.handle_open_session_response(&data, &mut p.rng).unwrap();
    let _ = p.ep.handle(p.now, from, &rakp1, &mut p.rng);
}

#[test]
fn a_flooding_source_recycles_only_its_own_half_open_sessions() {
    let mut cfg = admin("pw");
    cfg.limits.max_half_open = 16;
    cfg.limits.max_half_open_per_source = 4;
    let mut p = Pair::new(cfg);
    // A real console gets as far as RAKP 2 ...
    let mut c = admin_client(CipherSuite::Suite17);
    let r = p.reply(&c.open_session_request());
    let rakp1 = c.handle_open_session_response(&r, &mut p.rng).unwrap();
    let r = p.reply(&rakp1);
    let rakp3 = c.handle_rakp2(&r).unwrap();
    // ... while one host floods from many ports, far more than the whole table holds.
    for port in 0..40 {
        half_open_from(
            &mut p,
            SocketAddr::from(([192, 0, 2, 66], 1000 + port)),
            b"x",
        );
    }
    assert_eq!(
        p.ep.session_counts(),
        (0, 5),
        "the flooder holds only its share"
    );
    let evicted = std::iter::from_fn(|| p.ep.poll_event())
        .filter_map(|e| match e {
            Event::HalfOpenEvicted { peer } => Some(peer),
            _ => None,
        })
        .collect::<Vec<_>>();
    // The first evictions are reported one by one, the rest as a count (rate limit).
    assert_eq!(evicted.len(), crate::ratelimit::LOG_FIRST as usize);
    assert!(evicted.iter().all(|a| a.ip() != peer().ip()));
    // The console's handshake survived and finishes.
    c.handle_rakp4(&p.reply(&rakp3)).unwrap();
    assert_eq!(p.ep.session_counts(), (1, 4));
    // An IPv6 flooder's share is per /64, not per address.
    for i in 0..10u16 {
        let a = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, i, i, i, i);
        half_open_from(&mut p, SocketAddr::from((a, 623)), b"x");
    }
    assert_eq!(p.ep.session_counts(), (1, 8));
    // 36 + 6 evictions in all; those not reported one by one are counted in one summary.
    let evictions: Vec<_> = suppressed_after_interval(&mut p)
        .into_iter()
        .filter(|(k, _)| *k == EventKind::HalfOpenEvicted)
        .collect();
    assert_eq!(evictions, vec![(EventKind::HalfOpenEvicted, 42 - 5)]);
    let k = EventKind::HalfOpenEvicted;
    assert!(
        EventKind::ALL
            .iter()
            .enumerate()
            .all(|(i, k)| k.index() == i)
    );
    assert_eq!(p.ep.stats().unreported[k.index()], 42 - 5);
}

#[test]
fn a_flood_of_refused_open_sessions_is_reported_as_first_few_then_a_count() {
    let mut p = Pair::new(admin("pw"));
    let mut c = admin_client(CipherSuite::Suite3);
    let mut open = c.open_session_request();
    let n = open.len();
    for at in [n - 20, n - 12, n - 4] {
        open[at] = 0;
    }
    for _ in 0..20_000 {
        p.reply(&open);
    }
    let failed = std::iter::from_fn(|| p.ep.poll_event())
        .filter(|e| matches!(e, Event::LoginFailed { .. }))
        .count();
    assert_eq!(failed, crate::ratelimit::LOG_FIRST as usize);
    assert_eq!(p.ep.stats().login_failures, 20_000, "counted in full");
    let kind = EventKind::LoginFailed(LoginFailure::NoCipherMatch);
    assert_eq!(
        p.ep.stats().unreported[kind.index()],
        20_000 - 5,
        "counted at once, for metrics"
    );
    assert_eq!(suppressed_after_interval(&mut p), vec![(kind, 20_000 - 5)]);
    assert!(!p.ep.summary_pending());
    assert_eq!(p.ep.poll_timeout(), None, "nothing left to do");
}

#[test]
fn many_sources_share_the_half_open_table_oldest_first() {
    let mut cfg = admin("pw");
    cfg.limits.max_half_open = 16;
    cfg.limits.max_half_open_per_source = 4;
    let mut p = Pair::new(cfg);
    for i in 0..50u8 {
        half_open_from(&mut p, SocketAddr::from(([198, 51, 100, i], 623)), b"x");
    }
    assert_eq!(p.ep.session_counts(), (0, 16), "bounded by the table");
    // The newest handshakes are the ones left: RAKP 3 for the oldest finds no session.
    p.now += Duration::from_secs(6);
    p.ep.handle_timeout(p.now);
    assert_eq!(p.ep.session_counts(), (0, 0));
}

#[test]
fn abandoned_handshakes_count_against_their_source_not_the_user() {
    // 40 unfinished logins naming the real user, from 40 hosts, all time out: above the
    // per-user threshold (30), but they must not lock the operator out.
    let mut p = Pair::new(admin("pw"));
    for i in 0..40u8 {
        half_open_from(&mut p, SocketAddr::from(([203, 0, 113, i], 623)), b"pw");
    }
    p.now += Duration::from_secs(6);
    p.ep.handle_timeout(p.now);
    assert_eq!(p.ep.stats().login_failures, 40);
    assert_eq!(p.ep.stats().lockouts, 0);
    let mut c = admin_client(CipherSuite::Suite17);
    p.login(&mut c).unwrap();
    // From one source, the same count locks that source (at its threshold of 10).
    let flooder = SocketAddr::from(([203, 0, 113, 200], 623));
    for _ in 0..10 {
        half_open_from(&mut p, flooder, b"pw");
    }
    p.now += Duration::from_secs(6);
    p.ep.handle_timeout(p.now);
    assert_eq!(p.ep.stats().lockouts, 1);
    let mut f = admin_client(CipherSuite::Suite17);
    let Ok(Output::Transmit { data, .. }) =
        p.ep.handle(p.now, flooder, &f.open_session_request(), &mut p.rng)
    else {
        panic!()
    };
    assert_eq!(
        f.handle_open_session_response(&data, &mut p.rng),
        Err(ClientError::Status(RakpStatus::NO_RESOURCES))
    );
}

#[test]
fn in_session_numbers_outside_the_window_are_dropped() {
    // IPMI v2.0 §6.12 (`session::SeqWindow`): up to 15 behind and 16 ahead of the highest
    // accepted number, each number once.
    let mut p = Pair::new(admin("pw"));
    let mut c = admin_client(CipherSuite::Suite17);
    p.login(&mut c).unwrap();
    assert_eq!(p.cmd(&mut c, 0x06, 0x01, &[]).0, 0);
    let dropped = p.ep.stats().dropped;
    // Built but held back: once 15 later ones arrive they are 16 and 15 behind the highest.
    let late = c.request(0x06, 0x01, &[], &mut p.rng);
    let in_window = c.request(0x06, 0x01, &[], &mut p.rng);
    for _ in 0..15 {
        assert_eq!(p.cmd(&mut c, 0x06, 0x01, &[]).0, 0);
    }
    assert!(p.send(&late).is_none(), "16 behind: outside the window");
    assert!(
        p.send(&in_window).is_some(),
        "15 behind, never seen: accepted"
    );
    assert!(
        p.send(&in_window).is_none(),
        "the same number again: a duplicate"
    );
    // 17 ahead of the highest accepted: outside the window.
    let mut ahead = Vec::new();
    for _ in 0..17 {
        ahead = c.request(0x06, 0x01, &[], &mut p.rng);
    }
    assert!(p.send(&ahead).is_none(), "17 ahead: outside the window");
    assert_eq!(p.ep.stats().dropped, dropped + 3);
}

/// Every datagram dropped says why (issue 11 item 3), and the reasons are counted.
#[test]
fn dropped_datagrams_carry_a_reason() {
    let mut p = Pair::new(admin("pw"));
    let mut c = admin_client(CipherSuite::Suite17);
    p.login(&mut c).unwrap();
    let check = |p: &mut Pair, d: &[u8], why: DropReason| {
        let before = p.ep.stats().dropped_by[why.index()];
        assert_eq!(p.handle(peer(), d), Err(why));
        assert_eq!(p.ep.stats().dropped_by[why.index()], before + 1, "{why:?}");
    };
    check(&mut p, &[0x06, 0x00], DropReason::TooShort);
    check(
        &mut p,
        &[0x05, 0x00, 0xff, 0x07, 0, 0, 0, 0],
        DropReason::BadRmcpHeader,
    );
    let good = c.request(0x06, 0x01, &[], &mut p.rng);
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    check(&mut p, &bad, DropReason::BadIntegrity);
    let mut other = good.clone();
    other[6] ^= 0x55; // a session ID nobody holds
    check(&mut p, &other, DropReason::UnknownSession);
    assert!(p.handle(peer(), &good).is_ok());
    check(&mut p, &good, DropReason::OutOfWindow);
    // A payload type the session pipeline does not serve (a reserved one), under the
    // session's keys and in the window: dropped after every session check passed.
    let keys = c.session_keys().unwrap();
    let oem = crate::seal::seal(
        keys,
        PayloadType(0x03),
        c.bmc_session_id(),
        3,
        &[7; 16],
        &[0; 4],
    );
    check(&mut p, &oem, DropReason::UnsupportedPayload);
    // SOL from a session that has not activated it.
    let sol = crate::seal::seal(
        keys,
        PayloadType::SOL,
        c.bmc_session_id(),
        4,
        &[7; 16],
        &[0; 4],
    );
    check(&mut p, &sol, DropReason::SolInactive);
    // A session-less request that is not allowed outside a session.
    let chassis = crate::rmcp::setup_datagram(PayloadType::IPMI, &{
        let mut m = Vec::new();
        crate::wire::IpmiRequest::to_bmc(crate::codes::NetFn::CHASSIS, 0x01, 0, &[]).encode(&mut m);
        m
    });
    check(&mut p, &chassis, DropReason::NotAnswered);
    let total: u64 = p.ep.stats().dropped_by.iter().sum();
    assert_eq!(total, p.ep.stats().dropped);
}

/// The RMCP+ status of a set-up answer (Open Session Response, RAKP 2 or RAKP 4).
fn setup_status(d: &[u8]) -> u8 {
    let Ok(Datagram::V20(p)) = wire::decode_datagram(d) else {
        panic!("not an RMCP+ answer: {}", hex::encode(d))
    };
    p.payload[1]
}

/// The attack of issue 15 item 1: RAKP 1 and RAKP 3 need no secret, so an attacker who knows
/// only the user name sends garbage RAKP 3 messages from three sources (10 each, the
/// per-source threshold). That locks the three sources and the user; the operator, who
/// logged in from its own address before, still logs in at once; a source that never logged
/// in as the user is refused while the user is locked.
#[test]
fn garbage_rakp3_from_elsewhere_does_not_lock_out_a_trusted_source() {
    let mut p = Pair::new(admin("pw"));
    let operator = |port| SocketAddr::from(([192, 0, 2, 10], port));
    p.login_from(operator(5000), &mut admin_client(CipherSuite::Suite17))
        .unwrap();
    p.now += Duration::from_secs(3600);
    for src in 2..=4u8 {
        for i in 0..10 {
            let mut c = Client::new(
                CipherSuite::Suite17,
                "admin",
                b"a guess",
                Privilege::Administrator,
            );
            // The attacker cannot verify RAKP 2 (wrong password): send RAKP 3 anyway.
            let from = SocketAddr::from(([198, 51, 100, src], 7000 + i));
            let r = p.reply_from(from, &c.open_session_request());
            let rakp1 = c.handle_open_session_response(&r, &mut p.rng).unwrap();
            p.reply_from(from, &rakp1);
            let mut rakp3 = Vec::new();
            wire_rakp3(&mut rakp3, c.bmc_session_id(), &[0x5a; 32]);
            assert_eq!(setup_status(&p.reply_from(from, &rakp3)), 0x0f);
        }
    }
    assert_eq!(p.ep.stats().lockouts, 4, "three sources and the user");
    // The operator, from another port of the address it used before: in at once.
    p.login_from(operator(5001), &mut admin_client(CipherSuite::Suite17))
        .unwrap();
    // A source that never logged in as admin meets the user lock-out, right password or not.
    let stranger = SocketAddr::from(([203, 0, 113, 9], 623));
    assert_eq!(
        p.login_from(stranger, &mut admin_client(CipherSuite::Suite17)),
        Err(ClientError::Status(RakpStatus(0x01)))
    );
    // The attackers' own sources stay locked for the operator's user too.
    assert_eq!(
        p.login_from(
            SocketAddr::from(([198, 51, 100, 2], 1)),
            &mut admin_client(CipherSuite::Suite17)
        ),
        Err(ClientError::Status(RakpStatus(0x01)))
    );
}

/// An RAKP 3 message with an arbitrary AuthCode (what an attacker without the password sends).
fn wire_rakp3(out: &mut Vec<u8>, sid_c: u32, auth: &[u8]) {
    use crate::rmcp::Rakp3;
    *out = Rakp3 {
        tag: 0,
        status: RakpStatus::OK,
        sid_c,
        auth,
    }
    .to_datagram();
}

/// Trust lasts `lockout_trust` after the last login, and is per user and source.
#[test]
fn trust_expires_and_can_be_turned_off() {
    for trust in [Duration::from_secs(100), Duration::ZERO] {
        let mut cfg = admin("pw");
        cfg.limits.lockout_trust = trust;
        cfg.limits.source_lockout_threshold = 0;
        cfg.limits.user_lockout_threshold = 3;
        let mut p = Pair::new(cfg);
        let operator = SocketAddr::from(([192, 0, 2, 10], 5000));
        p.login_from(operator, &mut admin_client(CipherSuite::Suite17))
            .unwrap();
        p.now += Duration::from_secs(50);
        for _ in 0..3 {
            p.bad_rakp3_from(
                SocketAddr::from(([198, 51, 100, 1], 1)),
                &mut admin_client(CipherSuite::Suite17),
            );
        }
        let r = p.login_from(operator, &mut admin_client(CipherSuite::Suite17));
        if trust.is_zero() {
            assert_eq!(
                r,
                Err(ClientError::Status(RakpStatus(0x01))),
                "no trust: locked"
            );
            continue;
        }
        r.unwrap();
        // 101 s after that login, trust has run out: the next user lock-out applies.
        p.now += Duration::from_secs(101);
        for _ in 0..3 {
            p.bad_rakp3_from(
                SocketAddr::from(([198, 51, 100, 1], 1)),
                &mut admin_client(CipherSuite::Suite17),
            );
        }
        assert_eq!(
            p.login_from(operator, &mut admin_client(CipherSuite::Suite17)),
            Err(ClientError::Status(RakpStatus(0x01)))
        );
    }
}

/// `user_lockout_threshold = 0` turns the per-user lock-out off: 40 failures from 40 sources
/// lock nothing, and a new source logs in.
#[test]
fn per_user_lockout_can_be_turned_off() {
    let mut cfg = admin("pw");
    cfg.limits.user_lockout_threshold = 0;
    let mut p = Pair::new(cfg);
    for i in 0..40u8 {
        p.bad_rakp3_from(
            SocketAddr::from(([198, 51, 100, i], 1)),
            &mut admin_client(CipherSuite::Suite17),
        );
    }
    assert_eq!(p.ep.stats().login_failures, 40);
    assert_eq!(p.ep.stats().lockouts, 0);
    p.login_from(
        SocketAddr::from(([203, 0, 113, 9], 623)),
        &mut admin_client(CipherSuite::Suite17),
    )
    .unwrap();
}

/// The trusted table holds at most `max_trusted` pairs; the oldest login goes first.
#[test]
fn trusted_sources_are_bounded_oldest_out() {
    let mut cfg = admin("pw");
    cfg.limits.max_trusted = 4;
    cfg.limits.source_lockout_threshold = 0;
    cfg.limits.user_lockout_threshold = 3;
    let mut p = Pair::new(cfg);
    let host = |i: u8| SocketAddr::from(([192, 0, 2, i], 5000));
    for i in 1..=6 {
        p.login_from(host(i), &mut admin_client(CipherSuite::Suite17))
            .unwrap();
        p.now += Duration::from_secs(1);
    }
    // Close the six sessions (idle), then lock the user from elsewhere.
    p.now += Duration::from_secs(61);
    p.ep.handle_timeout(p.now);
    for _ in 0..3 {
        p.bad_rakp3_from(
            SocketAddr::from(([198, 51, 100, 1], 1)),
            &mut admin_client(CipherSuite::Suite17),
        );
    }
    for i in 1..=2 {
        assert_eq!(
            p.login_from(host(i), &mut admin_client(CipherSuite::Suite17)),
            Err(ClientError::Status(RakpStatus(0x01))),
            "host {i} was pushed out of the table"
        );
    }
    for i in 3..=6 {
        p.login_from(host(i), &mut admin_client(CipherSuite::Suite17))
            .unwrap();
    }
}

/// Failed logins from IPv6 sources count per /64 (issue 11 item 5): ten addresses in one /64
/// lock that /64 out; another /64 is unaffected.
#[test]
fn ipv6_failed_logins_count_per_64() {
    let mut p = Pair::new(admin("pw"));
    let a = |net: u16, host: u16| {
        SocketAddr::from((
            std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, net, host, 0, 0, host),
            623,
        ))
    };
    for i in 1..=10 {
        p.bad_rakp3_from(a(1, i), &mut admin_client(CipherSuite::Suite17));
    }
    assert_eq!(p.ep.stats().lockouts, 1);
    let mut c = admin_client(CipherSuite::Suite17);
    let r = p.reply_from(a(1, 99), &c.open_session_request());
    assert_eq!(
        c.handle_open_session_response(&r, &mut p.rng),
        Err(ClientError::Status(RakpStatus(0x01))),
        "a fresh address in the locked /64 is refused"
    );
    p.login_from(a(2, 1), &mut admin_client(CipherSuite::Suite17))
        .unwrap();
}

/// Issue 15 item 2: the active-session cap (32) was only checked at Open Session, so 1,020
/// Open Sessions made while the table was empty, then RAKP 1/3 for each, gave 1,020 active
/// sessions. Now it holds where a session becomes active: 32 get RAKP 4 with status 00h,
/// the other 988 status 01h (insufficient resources, IPMI v2.0 Table 13-15), and are gone.
#[test]
fn the_active_session_cap_holds_at_rakp3() {
    let mut p = Pair::new(admin("pw"));
    // 17 sources (60 each, under the per-source half-open share of 64).
    let from = |i: usize| SocketAddr::from(([10, 0, (i / 60) as u8, 1], 1000 + i as u16));
    let mut consoles: Vec<(SocketAddr, Client, Vec<u8>)> = (0..1020)
        .map(|i| {
            let mut c = admin_client(CipherSuite::Suite17);
            let r = p.reply_from(from(i), &c.open_session_request());
            let rakp1 = c.handle_open_session_response(&r, &mut p.rng).unwrap();
            (from(i), c, rakp1)
        })
        .collect();
    assert_eq!(p.ep.session_counts(), (0, 1020));
    let (mut ok, mut full) = (0, 0);
    for (at, c, rakp1) in &mut consoles {
        let r = p.reply_from(*at, rakp1);
        let rakp3 = c.handle_rakp2(&r).unwrap();
        let r = p.reply_from(*at, &rakp3);
        match c.handle_rakp4(&r) {
            Ok(()) => ok += 1,
            Err(ClientError::Status(RakpStatus(0x01))) => full += 1,
            e => panic!("unexpected RAKP 4: {e:?}"),
        }
    }
    assert_eq!((ok, full), (32, 988));
    assert_eq!(p.ep.session_counts(), (32, 0));
    assert_eq!(p.ep.stats().refused_full, 988);
    assert_eq!(
        p.ep.stats().login_failures,
        0,
        "right password: no failed login"
    );
}

/// Issue 15 item 3: 32 USER sessions kept alive used to lock everyone out, ADMINISTRATOR
/// included. Now a login at a higher privilege takes the slot of the longest-idle session of
/// a lower one (closed with an event); a login that outranks nobody is still refused.
#[test]
fn a_higher_privilege_login_takes_the_longest_idle_lower_slot() {
    let mut p = Pair::new(admin("pw"));
    let mut users: Vec<Client> = (0..32u32)
        .map(|i| {
            let mut c = Client::new(CipherSuite::Suite17, "admin", b"pw", Privilege::User)
                .with_console_id(0x100 + i);
            p.login(&mut c).unwrap();
            p.now += Duration::from_secs(1);
            c
        })
        .collect();
    // The oldest session is busy again: the longest idle is now the second.
    assert_eq!(p.cmd(&mut users[0], 0x06, 0x01, &[]).0, 0x00);
    assert_eq!(p.ep.session_counts(), (32, 0));
    let victim = users[1].bmc_session_id();
    while p.ep.poll_event().is_some() {}
    // Another USER login outranks nobody: refused (RAKP 4 01h).
    let mut c = Client::new(CipherSuite::Suite17, "admin", b"pw", Privilege::User);
    assert_eq!(p.login(&mut c), Err(ClientError::Status(RakpStatus(0x01))));
    // ADMINISTRATOR takes the second session's slot.
    let mut a = admin_client(CipherSuite::Suite17);
    p.login(&mut a).unwrap();
    assert_eq!(p.ep.session_counts(), (32, 0));
    let events: Vec<Event> = std::iter::from_fn(|| p.ep.poll_event()).collect();
    assert!(
        events.contains(&Event::SessionClosed {
            sid: victim,
            reason: crate::endpoint::CloseReason::Preempted
        }),
        "{events:?}"
    );
    // The preempted console's next request is dropped; the others and the admin carry on.
    let d = users[1].request(0x06, 0x01, &[], &mut p.rng);
    assert!(p.send(&d).is_none());
    assert_eq!(p.cmd(&mut users[0], 0x06, 0x01, &[]).0, 0x00);
    assert_eq!(p.cmd(&mut users[2], 0x06, 0x01, &[]).0, 0x00);
    assert_eq!(p.cmd(&mut a, 0x06, 0x3b, &[0x04]).0, 0x00);
    // With only ADMINISTRATOR sessions below nobody, Open Session itself refuses (01h).
    let mut cfg = admin("pw");
    cfg.limits.max_sessions = 2;
    let mut p = Pair::new(cfg);
    for _ in 0..2 {
        p.login(&mut admin_client(CipherSuite::Suite3)).unwrap();
    }
    let mut c = admin_client(CipherSuite::Suite3);
    let r = p.reply(&c.open_session_request());
    assert_eq!(
        c.handle_open_session_response(&r, &mut p.rng),
        Err(ClientError::Status(RakpStatus(0x01)))
    );
}

/// Issue 15 item 11: Close Session of a session ID that names no active session answers 87h
/// "invalid session ID in request" (IPMI v2.0 §22.19), not 00h, and closes nothing; closing
/// another active session (as ADMINISTRATOR) still works.
#[test]
fn close_session_of_an_unknown_id_answers_87h() {
    let mut p = Pair::new(admin("pw"));
    let mut a = admin_client(CipherSuite::Suite17);
    p.login(&mut a).unwrap();
    assert_eq!(p.cmd(&mut a, 0x06, 0x3b, &[4]).0, 0);
    let mut b = admin_client(CipherSuite::Suite17).with_console_id(0x0b0b_0b0b);
    p.login(&mut b).unwrap();
    // A half-open handshake's ID is no session either.
    let mut h = admin_client(CipherSuite::Suite17).with_console_id(0x0c0c_0c0c);
    let r = p.reply(&h.open_session_request());
    h.handle_open_session_response(&r, &mut p.rng).unwrap();
    for unknown in [0x1234_5678u32, h.bmc_session_id()] {
        assert_eq!(
            p.cmd(&mut a, 0x06, 0x3c, &unknown.to_le_bytes()),
            (0x87, vec![]),
            "{unknown:#x}"
        );
    }
    assert_eq!(p.ep.session_counts(), (2, 1));
    let sid = b.bmc_session_id().to_le_bytes();
    assert_eq!(p.cmd(&mut a, 0x06, 0x3c, &sid).0, 0);
    assert_eq!(p.ep.session_counts(), (1, 1));
    // The closed one is unknown now.
    assert_eq!(p.cmd(&mut a, 0x06, 0x3c, &sid).0, 0x87);
}

/// Send a Get Chassis Status (a machine request) from `c` and return the ticket, or the
/// completion code if the endpoint answered at once.
fn chassis_status(p: &mut Pair, c: &mut Client) -> Result<crate::endpoint::Ticket, u8> {
    let d = c.request(0x00, 0x01, &[], &mut p.rng);
    match p.send(&d) {
        Some(Output::Machine { ticket, .. }) => Ok(ticket),
        Some(Output::Transmit { data, .. }) => Err(c.response(&data).unwrap().1.0),
        Some(Output::Consumed) | None => panic!("dropped"),
    }
}

/// Issue 11 item 5: machine requests in flight are bounded per session (4) and per BMC (32);
/// beyond either, the request is answered C0 at once, and once one finishes there is room.
#[test]
fn machine_requests_in_flight_are_bounded_per_session_and_per_bmc() {
    let mut p = Pair::new(admin("pw"));
    let mut consoles: Vec<Client> = (0..9u32)
        .map(|i| {
            let mut c = admin_client(CipherSuite::Suite17).with_console_id(0x900 + i);
            p.login(&mut c).unwrap();
            c
        })
        .collect();
    let mut tickets = Vec::new();
    for _ in 0..4 {
        tickets.push(chassis_status(&mut p, &mut consoles[0]).unwrap());
    }
    assert_eq!(chassis_status(&mut p, &mut consoles[0]), Err(0xc0));
    // A finished request makes room in its session; its answer still arrives.
    let t = tickets.remove(0);
    let out = p.ep.complete(
        p.now,
        t,
        Ok(MachineReply::PowerState(PowerState::Off)),
        &mut p.rng,
    );
    assert!(matches!(out, Some(Output::Transmit { .. })));
    tickets.push(chassis_status(&mut p, &mut consoles[0]).unwrap());
    // Seven more sessions with four each: 32 in flight, the BMC's bound.
    for c in &mut consoles[1..8] {
        for _ in 0..4 {
            tickets.push(chassis_status(&mut p, c).unwrap());
        }
    }
    assert_eq!(p.ep.pending_count(), 32);
    assert_eq!(chassis_status(&mut p, &mut consoles[8]), Err(0xc0));
    assert_eq!(p.ep.stats().busy_in_flight, 2);
    // Commands that need no machine are answered as ever.
    assert_eq!(p.cmd(&mut consoles[8], 0x06, 0x01, &[]).0, 0);
}

#[test]
fn unknown_user_names_are_logged_by_length_and_keyed_tag_never_their_text() {
    let failed_name = |key: [u8; 32], name: &str| {
        let mut p = Pair::new(admin("pw"));
        p.ep.set_log_key(key);
        let mut c = Client::new(CipherSuite::Suite17, name, b"pw", Privilege::Administrator);
        let _ = p.login(&mut c);
        std::iter::from_fn(|| p.ep.poll_event())
            .find_map(|e| match e {
                Event::LoginFailed { user, .. } => Some(user),
                _ => None,
            })
            .expect("a failed login")
    };
    // A password typed into the user field, with a newline and an ANSI escape in it.
    let secret = "hunter2\n\x1b[31mX";
    let shown = failed_name([7; 32], secret);
    let crate::LoggedName::Unknown { len, tag } = shown else {
        panic!("{shown:?}")
    };
    assert_eq!(len, secret.chars().count());
    let text = shown.to_string();
    assert!(
        !text.contains("hunter2") && !text.chars().any(char::is_control),
        "{text}"
    );
    assert!(text.contains(&format!("{len} chars, #{tag:08x}")), "{text}");
    assert_eq!(failed_name([7; 32], secret), shown, "same key, same tag");
    assert_ne!(
        failed_name([8; 32], secret),
        shown,
        "the tag is keyed: another process shows another tag"
    );
    assert_ne!(
        failed_name([7; 32], "hunter3\n\x1b[31mX"),
        shown,
        "names differ, tags differ"
    );
    // A configured user's name is shown as configured (here after a wrong role: no
    // ADMINISTRATOR for a USER-only user).
    let mut cfg = admin("pw");
    cfg.users[0].max_privilege = Privilege::User;
    let mut p = Pair::new(cfg);
    let _ = p.login(&mut admin_client(CipherSuite::Suite17));
    let user = std::iter::from_fn(|| p.ep.poll_event()).find_map(|e| match e {
        Event::LoginFailed { user, .. } => Some(user),
        _ => None,
    });
    assert_eq!(user, Some(crate::LoggedName::Known("admin".into())));
}

// --- Serial over LAN (IPMI v2.0 ch. 15, 24) -------------------------------------------------

/// ipmitool's Activate Payload request (lib/ipmi_sol.c): SOL, instance 1, encrypt and
/// authenticate, alerts deferred.
const SOL_ACTIVATE: [u8; 6] = [1, 1, 0xc6, 0, 0, 0];

impl Pair {
    /// Every datagram the endpoint has to send now, opened as (payload type, plaintext).
    fn drain_sol(&mut self, c: &Client) -> Vec<(PayloadType, Vec<u8>)> {
        let mut v = Vec::new();
        while let Some((to, d)) = self.ep.poll_transmit(self.now, &mut self.rng) {
            assert_eq!(to, peer());
            v.push(c.open(&d).unwrap());
        }
        v
    }

    /// Send a SOL packet from `c`; it is taken, never answered directly.
    fn sol(&mut self, c: &mut Client, payload: &[u8]) {
        let d = c.sol(payload, &mut self.rng);
        assert_eq!(self.handle(peer(), &d), Ok(Output::Consumed));
    }
}

fn sol_payloads(v: Vec<(PayloadType, Vec<u8>)>) -> Vec<Vec<u8>> {
    v.into_iter()
        .map(|(ty, p)| {
            assert_eq!(ty, PayloadType::SOL);
            p
        })
        .collect()
}

fn sol_session(suite: CipherSuite) -> (Pair, Client) {
    let mut p = Pair::new(admin("pw"));
    p.ep.set_sol_port(16002);
    let c = admin_session(&mut p, admin_client(suite));
    (p, c)
}

/// Log `c` in and raise the session to ADMINISTRATOR, as ipmitool does.
fn admin_session(p: &mut Pair, mut c: Client) -> Client {
    p.login(&mut c).unwrap();
    assert_eq!(p.cmd(&mut c, 0x06, 0x3b, &[4]).0, 0);
    c
}

#[test]
fn sol_activates_and_carries_characters_both_ways_with_acks() {
    for suite in CipherSuite::ALL {
        let (mut p, mut c) = sol_session(suite);
        let (cc, d) = p.cmd(&mut c, 0x06, 0x4e, &[0x0e]);
        assert_eq!((cc, d[0] & 0b10), (0, 0b10), "SOL listed as supported");
        assert_eq!(p.cmd(&mut c, 0x06, 0x4a, &[1]), (0, vec![1, 0, 0]));
        let (cc, d) = p.cmd(&mut c, 0x06, 0x48, &SOL_ACTIVATE);
        assert_eq!(cc, 0);
        assert_eq!(d.len(), 12, "ipmitool wants exactly 12 bytes");
        let r = crate::sol::packet::ActivateResponse::read(&d).unwrap();
        assert_eq!((r.inbound_size, r.outbound_size, r.port), (259, 259, 16002));
        let sid = c.bmc_session_id();
        assert_eq!(
            p.ep.poll_sol_event(),
            Some(crate::endpoint::SolEvent::Activated { sid, peer: peer() })
        );
        assert_eq!(p.cmd(&mut c, 0x06, 0x4a, &[1]), (0, vec![1, 1, 0]));
        let (_, info) = p.cmd(&mut c, 0x06, 0x4b, &[1, 1]);
        assert_eq!(
            info[..4],
            sid.to_le_bytes(),
            "pyghmi's keepalive sees its session"
        );

        // Guest → console: sent at once (threshold 1), then held until acknowledged.
        assert!(p.ep.sol_room() > 0);
        assert_eq!(p.ep.sol_push(b"login: ", p.now), 7);
        assert_eq!(
            sol_payloads(p.drain_sol(&c)),
            [b"\x01\x00\x00\x00login: ".to_vec()]
        );
        p.ep.sol_push(b"more", p.now);
        assert!(p.drain_sol(&c).is_empty(), "one packet in flight");
        p.sol(&mut c, &[0, 1, 7, 0]);
        assert_eq!(
            sol_payloads(p.drain_sol(&c)),
            [b"\x02\x00\x00\x00more".to_vec()]
        );

        // Console → guest: acknowledged with the accepted count, handed to the runtime.
        p.sol(&mut c, b"\x01\x02\x04\x00hi\r");
        assert_eq!(sol_payloads(p.drain_sol(&c)), [vec![0, 1, 3, 0]]);
        assert_eq!(
            p.ep.poll_sol_input(),
            Some(crate::sol::SolInput::Data(b"hi\r".to_vec()))
        );
        assert_eq!(p.ep.poll_sol_input(), None);
        let t = p.ep.sol_totals();
        assert_eq!((t.bytes_to_console, t.bytes_from_console), (11, 3));
        assert_eq!(p.ep.stats().sol_bytes_to_console, 11);

        // IPMI requests still work in the middle, on the same sequence numbers.
        assert_eq!(p.cmd(&mut c, 0x06, 0x01, &[]).0, 0);
    }
}

#[test]
fn an_unacknowledged_sol_packet_is_sent_again_with_the_same_number() {
    let (mut p, mut c) = sol_session(CipherSuite::Suite17);
    assert_eq!(p.cmd(&mut c, 0x06, 0x48, &SOL_ACTIVATE).0, 0);
    p.ep.sol_push(b"boot", p.now);
    let first = sol_payloads(p.drain_sol(&c));
    assert_eq!(first, [b"\x01\x00\x00\x00boot".to_vec()]);
    // The ack is lost: at the retry interval (parameter 4: 100 ms) the same packet again.
    let due = p.ep.poll_timeout().unwrap();
    assert!(due <= p.now + Duration::from_millis(100));
    p.now += Duration::from_millis(50);
    assert!(p.drain_sol(&c).is_empty());
    p.now += Duration::from_millis(50);
    p.ep.handle_timeout(p.now);
    assert_eq!(sol_payloads(p.drain_sol(&c)), first);
    assert_eq!(p.ep.stats().sol_retransmits, 1);
    // A console's retransmit of its own packet is acknowledged again but delivered once.
    p.sol(&mut c, b"\x01\x01\x04\x00x");
    assert_eq!(sol_payloads(p.drain_sol(&c)), [vec![0, 1, 1, 0]]);
    p.sol(&mut c, b"\x01\x01\x04\x00x");
    assert_eq!(sol_payloads(p.drain_sol(&c)), [vec![0, 1, 1, 0]]);
    assert_eq!(
        p.ep.poll_sol_input(),
        Some(crate::sol::SolInput::Data(b"x".to_vec()))
    );
    assert_eq!(p.ep.poll_sol_input(), None);
}

#[test]
fn a_second_activation_gets_80h_and_other_sessions_cannot_speak_sol() {
    let (mut p, mut c) = sol_session(CipherSuite::Suite3);
    assert_eq!(p.cmd(&mut c, 0x06, 0x48, &SOL_ACTIVATE).0, 0);
    assert_eq!(p.cmd(&mut c, 0x06, 0x48, &SOL_ACTIVATE).0, 0x80);
    let mut other = admin_client(CipherSuite::Suite17).with_console_id(0x1234_5678);
    p.login(&mut other).unwrap();
    assert_eq!(p.cmd(&mut other, 0x06, 0x48, &SOL_ACTIVATE).0, 0x80);
    let d = other.sol(&[1, 0, 0, 0, b'x'], &mut p.rng);
    assert_eq!(p.handle(peer(), &d), Err(DropReason::SolInactive));
    // Not encrypted and authenticated: refused 84h (every session here is both).
    assert_eq!(
        p.cmd(&mut other, 0x06, 0x48, &[1, 1, 0x00, 0, 0, 0]).0,
        0x84
    );
}

#[test]
fn sol_ends_with_its_session_and_deactivate_from_elsewhere_tells_the_owner() {
    use crate::endpoint::{SolEnd, SolEvent};
    let (mut p, mut c) = sol_session(CipherSuite::Suite17);
    let sid = c.bmc_session_id();
    assert_eq!(p.cmd(&mut c, 0x06, 0x48, &SOL_ACTIVATE).0, 0);
    p.ep.poll_sol_event();
    // Close Session: the instance ends, the runtime is told, status shows nothing active.
    let mut sid_bytes = [0u8; 4];
    sid_bytes.copy_from_slice(&sid.to_le_bytes());
    assert_eq!(p.cmd(&mut c, 0x06, 0x3c, &sid_bytes).0, 0);
    assert_eq!(
        p.ep.poll_sol_event(),
        Some(SolEvent::Deactivated {
            sid,
            reason: SolEnd::SessionEnded
        })
    );
    assert!(!p.ep.sol_active());
    assert_eq!(p.ep.sol_room(), 0);

    // Activated again in a new session, then ended by `sol deactivate` from a second one:
    // the owner gets a last packet with "SOL deactivating" set.
    let mut c = admin_client(CipherSuite::Suite17).with_console_id(0x0101_0101);
    p.login(&mut c).unwrap();
    assert_eq!(p.cmd(&mut c, 0x06, 0x48, &SOL_ACTIVATE).0, 0);
    let mut kicker = admin_session(
        &mut p,
        admin_client(CipherSuite::Suite3).with_console_id(0x0202_0202),
    );
    assert_eq!(p.cmd(&mut kicker, 0x06, 0x49, &[1, 1, 0, 0, 0, 0]).0, 0);
    assert_eq!(
        sol_payloads(p.drain_sol(&c)),
        [vec![0, 0, 0, crate::sol::packet::Status::DEACTIVATING]]
    );
    assert_eq!(p.cmd(&mut kicker, 0x06, 0x49, &[1, 1, 0, 0, 0, 0]).0, 0x80);
    assert_eq!(p.cmd(&mut kicker, 0x06, 0x4a, &[1]), (0, vec![1, 0, 0]));

    // And a Cold Reset ends it too, with the same last packet.
    assert_eq!(p.cmd(&mut c, 0x06, 0x48, &SOL_ACTIVATE).0, 0);
    assert_eq!(p.cmd(&mut kicker, 0x06, 0x02, &[]).0, 0);
    assert_eq!(
        sol_payloads(p.drain_sol(&c)),
        [vec![0, 0, 0, crate::sol::packet::Status::DEACTIVATING]]
    );
    assert!(!p.ep.sol_active());
}

#[test]
fn sol_ends_when_its_session_times_out() {
    let (mut p, mut c) = sol_session(CipherSuite::Suite17);
    assert_eq!(p.cmd(&mut c, 0x06, 0x48, &SOL_ACTIVATE).0, 0);
    p.now += p.ep.config().limits.idle_timeout + Duration::from_secs(1);
    p.ep.handle_timeout(p.now);
    assert!(!p.ep.sol_active());
    assert!(
        p.drain_sol(&c).is_empty(),
        "nothing sealed for a session that is gone"
    );
}

#[test]
fn sol_configuration_reads_and_writes_as_ipmitool_does() {
    let (mut p, mut c) = sol_session(CipherSuite::Suite17);
    // `sol info`: parameters 0-8; 8 is the BMC's port.
    assert_eq!(
        p.cmd(&mut c, 0x0c, 0x22, &[0x0e, 8, 0, 0]),
        (0, vec![0x11, 0x82, 0x3e])
    );
    // `sol set retry-count 5` (ipmitool writes count and interval together).
    assert_eq!(p.cmd(&mut c, 0x0c, 0x21, &[0x0e, 4, 5, 10]).0, 0);
    assert_eq!(
        p.cmd(&mut c, 0x0c, 0x22, &[0x0e, 4, 0, 0]),
        (0, vec![0x11, 5, 10])
    );
    // Writes need ADMINISTRATOR.
    let mut op = Client::new(CipherSuite::Suite17, "admin", b"pw", Privilege::Operator);
    p.login(&mut op).unwrap();
    assert_eq!(p.cmd(&mut op, 0x0c, 0x21, &[0x0e, 4, 5, 10]).0, 0xd4);
    assert_eq!(
        p.cmd(&mut op, 0x0c, 0x22, &[0x0e, 1, 0, 0]),
        (0, vec![0x11, 1])
    );
    // With no console (`--console off`) SOL reads disabled and will not activate.
    p.ep.set_sol_available(false);
    assert_eq!(
        p.cmd(&mut op, 0x0c, 0x22, &[0x0e, 1, 0, 0]),
        (0, vec![0x11, 0])
    );
    assert_eq!(p.cmd(&mut op, 0x06, 0x48, &SOL_ACTIVATE).0, 0x81);
}
