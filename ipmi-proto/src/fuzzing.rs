//! Entry points shared by the cargo-fuzz targets in `fuzz/` and by the test that replays
//! their committed corpora, so a crash found by fuzzing stays a regression test.
//!
//! Every function must return normally for every input: the decoders and the endpoint never
//! panic on input. The only panics allowed are the `assert!`s below, which state properties
//! (a decoded request encodes back to its bytes; every in-session answer verifies and decodes
//! under the session's keys).
//!
//! | target     | reaches |
//! |------------|---------|
//! | `decoders` | RMCP/ASF, IPMI 1.5 and 2.0 session headers, the trailer, IPMI request/response |
//! | `commands` | every command's request data through `commands::dispatch` at each privilege, and the machine answers |
//! | `setup`    | Open Session Request, RAKP 1 and RAKP 3 payloads against a live handshake |
//! | `endpoint` | the whole BMC fed datagram sequences with a simulated clock, including in-session traffic under real keys |

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::client::Client;
use crate::commands::{self, CmdContext, Outcome};
use crate::crypto::{CipherSuite, SessionKeys, rakp3_auth};
use crate::endpoint::{BmcState, Endpoint, Entropy, Output, Ticket};
use crate::machine::{
    BootFlags, MachineError, MachineReply, MachineRequest, MachineResult, PowerState,
};
use crate::session::Privilege;
use crate::wire::{self, Datagram, IpmiRequest, IpmiResponse, payload};
use crate::{BmcConfig, User};

/// The fuzz BMC's one user and password.
const USER: &str = "admin";
const PASSWORD: &[u8] = b"password";

/// Decode `data` as a datagram, as an IPMI request and as a response.
pub fn decoders(data: &[u8]) {
    let _ = wire::decode_datagram(data);
    if let Ok(r) = IpmiRequest::decode(data) {
        // Whatever decodes must encode back to the same bytes.
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(out, data, "IPMI request round trip");
    }
    let _ = IpmiResponse::decode(data);
    for icv in [12, 16] {
        let _ = wire::split_trailer(data, data.len().saturating_sub(4), icv);
    }
}

/// Deterministic entropy (xorshift64): the fuzz targets here, and the benches, tests and load
/// generator, whose nonces need not be secret. Never for a BMC: its session IDs and random
/// numbers must be unpredictable (ovbmc uses the OS CSPRNG).
pub struct Xorshift(u64);

impl Xorshift {
    /// A generator seeded with `seed` (0, which xorshift cannot leave, is replaced).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }
}

impl Entropy for Xorshift {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

fn config() -> BmcConfig {
    let user = User::new(
        USER,
        Zeroizing::new(PASSWORD.to_vec()),
        Privilege::Administrator,
    )
    .expect("valid user");
    let mut cfg = BmcConfig::new(vec![user], [1; 16]).expect("valid config");
    cfg.limits.max_half_open = 16;
    cfg.limits.max_sessions = 4;
    cfg
}

/// A machine answer chosen by `sel`: mostly success, sometimes each error.
fn answer(r: &MachineRequest, sel: u8) -> MachineResult {
    match sel % 8 {
        1 => return Err(MachineError::Busy),
        2 => return Err(MachineError::NotInPresentState),
        3 => return Err(MachineError::Unsupported),
        4 => return Err(MachineError::Failed),
        5 => return Err(MachineError::Timeout),
        6 => return Ok(MachineReply::Done),
        _ => {}
    }
    Ok(match r {
        MachineRequest::PowerState => MachineReply::PowerState(if sel & 8 != 0 {
            PowerState::Off
        } else {
            PowerState::On
        }),
        MachineRequest::GetBootFlags => MachineReply::BootFlags(BootFlags::default()),
        _ => MachineReply::Done,
    })
}

/// Every command's request data through the dispatcher, without a session around it. The
/// input is records `[flags][netfn][cmd][len][data; len]`: flags bits 2:0 are the session
/// privilege for the first record (later records keep what Set Session Privilege Level left),
/// bit 3 the Kg-set flag for the session-less commands, bits 7:4 the machine's answer.
/// `BmcState` (boot parameters, identify) carries over between records.
pub fn commands(data: &[u8]) {
    let cfg = config();
    let guid = cfg.wire_guid();
    let mut bmc = BmcState::default();
    let mut now = Instant::now();
    let mut privilege = None;
    let mut rest = data;
    while rest.len() >= 4 {
        let (flags, netfn, cmd, len) = (rest[0], rest[1] & 0x3f, rest[2], rest[3] as usize);
        rest = &rest[4..];
        let body = &rest[..len.min(rest.len())];
        rest = &rest[body.len()..];
        let req = IpmiRequest {
            rs_addr: 0x20,
            netfn,
            rs_lun: 0,
            rq_addr: 0x81,
            rq_seq: cmd & 0x3f,
            rq_lun: 0,
            cmd,
            data: body,
        };
        let _ = commands::sessionless(&req, flags & 8 != 0);
        let p = *privilege.get_or_insert(Privilege::from_u8(flags & 7).unwrap_or(Privilege::User));
        let mut ctx = CmdContext {
            sid: 0x0102_0304,
            privilege: p,
            max_privilege: Privilege::Administrator,
            user_id: 2,
            user_count: cfg.users.len(),
            active_sessions: 1,
            max_sessions: cfg.limits.max_sessions,
            now,
        };
        match commands::dispatch(&req, &mut ctx, &cfg, &guid, &mut bmc) {
            Outcome::Machine { request, kind } => {
                let _ = commands::machine_reply(&kind, answer(&request, flags >> 4), &mut bmc, now);
            }
            Outcome::Reply { .. } | Outcome::Drop => {}
        }
        privilege = Some(ctx.privilege);
        now += Duration::from_millis(u64::from(flags) * 40);
    }
}

fn setup_packet(ty: u8, p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len() + 16);
    let at = wire::begin_v20(&mut out, ty, false, false, 0, 0);
    out.extend_from_slice(p);
    wire::finish_v20(&mut out, at);
    out
}

/// The RMCP+ set-up payload of an answer, if it is one.
fn setup_reply(o: &Option<Output>, ty: u8) -> Option<Vec<u8>> {
    match o {
        Some(Output::Transmit { data, .. }) => match wire::decode_datagram(data) {
            Ok(Datagram::V20(p)) if p.payload_type == ty && p.session_id == 0 => {
                Some(p.payload.to_vec())
            }
            _ => None,
        },
        _ => None,
    }
}

/// What the fuzz harness learnt from the BMC's set-up answers, to build the next message of
/// a handshake (the session ID the BMC chose is random, so the fuzzer could not guess it).
#[derive(Default)]
struct Handshake {
    sid_m: u32,
    sid_c: u32,
    suite: Option<CipherSuite>,
    /// ROLEm and UNAMEm of the last RAKP 1 sent.
    role: u8,
    name: Vec<u8>,
    rc: Option<[u8; 16]>,
}

impl Handshake {
    fn learn(&mut self, o: &Option<Output>) {
        if let Some(p) = setup_reply(o, payload::OPEN_SESSION_RESPONSE)
            && p.len() == 36
            && p[1] == 0
        {
            self.sid_m = u32::from_le_bytes(p[4..8].try_into().expect("4 bytes"));
            self.sid_c = u32::from_le_bytes(p[8..12].try_into().expect("4 bytes"));
            self.suite = CipherSuite::from_algorithms(p[16], p[24], p[32]);
            self.rc = None;
        }
        if let Some(p) = setup_reply(o, payload::RAKP2)
            && p.len() >= 40
            && p[1] == 0
        {
            self.rc = Some(p[8..24].try_into().expect("16 bytes"));
        }
    }

    /// `p` with its session-ID field (bytes 4..8 of RAKP 1 and RAKP 3) set to the live SIDc
    /// (an Open Session Request keeps its own SIDm there).
    fn patch(&mut self, ty: u8, p: &[u8]) -> Vec<u8> {
        let mut p = p.to_vec();
        if p.len() >= 8 && ty != payload::OPEN_SESSION_REQUEST {
            p[4..8].copy_from_slice(&self.sid_c.to_le_bytes());
        }
        if ty == payload::RAKP1 && p.len() >= 28 {
            self.role = p[24];
            self.name = p[28..].to_vec();
        }
        p
    }

    /// A RAKP 3 with the right AuthCode for the fuzz user's password, if RAKP 2 came.
    fn rakp3(&self, tag: u8) -> Option<Vec<u8>> {
        let (suite, rc) = (self.suite?, self.rc?);
        let auth = rakp3_auth(suite, PASSWORD, &rc, self.sid_m, self.role, &self.name);
        let mut r = vec![tag, 0, 0, 0];
        r.extend_from_slice(&self.sid_c.to_le_bytes());
        r.extend_from_slice(&auth);
        Some(r)
    }
}

/// Open Session, RAKP 1 and RAKP 3 payloads from the fuzzer against a live handshake. The
/// first byte selects: 0 — the rest is an Open Session Request payload; 1 — a valid Open
/// Session, then the rest as RAKP 1 with the granted session ID patched in; 2 — a valid Open
/// Session and RAKP 1, then the rest as RAKP 3 (ID patched); 3 — as 2 but a correct RAKP 3
/// first, so the rest hits a finished handshake.
pub fn setup(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut ep = Endpoint::new(config());
    let mut rng = Xorshift(0x2545_f491_4f6c_dd1d);
    let now = Instant::now();
    let peer: SocketAddr = "127.0.0.1:623".parse().expect("address");
    let mut hs = Handshake::default();
    let send = |ep: &mut Endpoint, hs: &mut Handshake, rng: &mut Xorshift, d: &[u8]| {
        let o = ep.handle(now, peer, d, rng);
        hs.learn(&o);
        o
    };
    if mode % 4 == 0 {
        send(
            &mut ep,
            &mut hs,
            &mut rng,
            &setup_packet(payload::OPEN_SESSION_REQUEST, body),
        );
        return;
    }
    let mut c = Client::new(
        CipherSuite::Suite17,
        USER,
        PASSWORD,
        Privilege::Administrator,
    );
    send(&mut ep, &mut hs, &mut rng, &c.open_session_request());
    if mode % 4 == 1 {
        let p = hs.patch(payload::RAKP1, body);
        send(
            &mut ep,
            &mut hs,
            &mut rng,
            &setup_packet(payload::RAKP1, &p),
        );
        return;
    }
    let mut rakp1 = vec![0, 0, 0, 0];
    rakp1.extend_from_slice(&hs.sid_c.to_le_bytes());
    rakp1.extend_from_slice(&[0x11; 16]);
    rakp1.extend_from_slice(&[0x14, 0, 0, USER.len() as u8]);
    rakp1.extend_from_slice(USER.as_bytes());
    let rakp1 = hs.patch(payload::RAKP1, &rakp1);
    send(
        &mut ep,
        &mut hs,
        &mut rng,
        &setup_packet(payload::RAKP1, &rakp1),
    );
    if mode % 4 == 3
        && let Some(r3) = hs.rakp3(0)
    {
        send(
            &mut ep,
            &mut hs,
            &mut rng,
            &setup_packet(payload::RAKP3, &r3),
        );
    }
    let p = hs.patch(payload::RAKP3, body);
    send(
        &mut ep,
        &mut hs,
        &mut rng,
        &setup_packet(payload::RAKP3, &p),
    );
    while ep.poll_event().is_some() {}
}

/// A logged-in console with its own keys, so the harness can seal any plaintext and choose
/// any session sequence number.
struct Console {
    keys: SessionKeys,
    sid_c: u32,
    sid_m: u32,
    seq: u32,
    rq_seq: u8,
}

impl Console {
    fn seal(&self, seq: u32, plaintext: &[u8], rng: &mut Xorshift) -> Vec<u8> {
        let mut iv = [0u8; 16];
        rng.fill(&mut iv);
        let mut out = Vec::with_capacity(plaintext.len() + 64);
        let at = wire::begin_v20(&mut out, payload::IPMI, true, true, self.sid_c, seq);
        self.keys.encrypt(&iv, plaintext, &mut out);
        wire::finish_v20(&mut out, at);
        wire::append_trailer(&mut out, |c| self.keys.integrity(c));
        out
    }

    /// Every in-session answer of the BMC verifies under the session keys, decrypts and
    /// carries a well-formed IPMI response.
    fn check_answer(&self, data: &[u8]) {
        let Ok(Datagram::V20(p)) = wire::decode_datagram(data) else {
            panic!("in-session answer does not decode");
        };
        assert!(p.encrypted && p.authenticated && p.session_id == self.sid_m);
        let (covered, code) =
            wire::split_trailer(data, p.trailer.len(), self.keys.suite().icv_len())
                .expect("answer trailer");
        assert!(self.keys.verify_integrity(covered, code), "answer AuthCode");
        let plain = self.keys.decrypt(p.payload).expect("answer decrypts");
        IpmiResponse::decode(&plain).expect("answer is an IPMI response");
    }
}

/// Log a suite-17 console in with the real client, and derive its keys from the Rm and Rc
/// that crossed the wire.
fn login(ep: &mut Endpoint, rng: &mut Xorshift, now: Instant, peer: SocketAddr) -> Option<Console> {
    let mut c = Client::new(
        CipherSuite::Suite17,
        USER,
        PASSWORD,
        Privilege::Administrator,
    );
    let tx = |ep: &mut Endpoint, rng: &mut Xorshift, d: &[u8]| match ep.handle(now, peer, d, rng) {
        Some(Output::Transmit { data, .. }) => data,
        _ => Vec::new(),
    };
    let r = tx(ep, rng, &c.open_session_request());
    let rakp1 = c.handle_open_session_response(&r, rng).ok()?;
    let rakp2 = tx(ep, rng, &rakp1);
    let rakp3 = c.handle_rakp2(&rakp2).ok()?;
    c.handle_rakp4(&tx(ep, rng, &rakp3)).ok()?;
    // RAKP 1 payload starts at datagram offset 16; Rm is payload bytes 8..24, Rc likewise in
    // RAKP 2 (IPMI v2.0 Tables 13-11, 13-12).
    let rm: [u8; 16] = rakp1.get(24..40)?.try_into().ok()?;
    let rc: [u8; 16] = rakp2.get(24..40)?.try_into().ok()?;
    let sid_m = u32::from_le_bytes(rakp2.get(20..24)?.try_into().ok()?);
    Some(Console {
        keys: SessionKeys::derive(
            CipherSuite::Suite17,
            PASSWORD,
            &rm,
            &rc,
            0x14,
            USER.as_bytes(),
        ),
        sid_c: c.bmc_session_id(),
        sid_m,
        seq: 0,
        rq_seq: 0,
    })
}

/// Feed the endpoint a sequence of datagrams with a simulated clock. The input is split
/// into records `[delay: u8][len: u8][bytes; len]`; the clock advances by `delay` × 50 ms
/// before each. A record's first byte selects what it is:
///
/// - `FF netfn cmd data…` — an in-session request from a suite-17 console that logs in on
///   first use; netfn bit 6 leaves the machine request pending until the next record (so
///   retries meet a busy machine), bit 7 makes the machine fail.
/// - `FE delta plaintext…` — any plaintext sealed under the session keys with sequence number
///   last + `delta` (signed): the window and everything after decryption.
/// - `FD type payload…` — an unauthenticated RMCP+ payload of that type with the session ID
///   the BMC last granted patched into bytes 4..8 (RAKP 1 and RAKP 3 against a live session).
/// - `FC tag` — RAKP 3 with the correct AuthCode for the last handshake, so fuzzed
///   handshakes (roles, privilege limits) can finish.
/// - anything else — a raw datagram.
pub fn endpoint_sequence(data: &[u8]) {
    let mut ep = Endpoint::new(config());
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut now = Instant::now();
    let peer: SocketAddr = "127.0.0.1:623".parse().expect("address");
    let mut console: Option<Option<Console>> = None;
    let mut hs = Handshake::default();
    let mut deferred: Option<(Ticket, MachineRequest, u8)> = None;
    let mut rest = data;
    while rest.len() >= 2 {
        let (delay, len) = (rest[0], rest[1] as usize);
        rest = &rest[2..];
        let chunk = &rest[..len.min(rest.len())];
        rest = &rest[chunk.len()..];
        now += Duration::from_millis(u64::from(delay) * 50);
        ep.handle_timeout(now);
        if let Some((ticket, request, sel)) = deferred.take()
            && let Some(Output::Transmit { data, .. }) =
                ep.complete(now, ticket, answer(&request, sel), &mut rng)
            && let Some(Some(con)) = &console
        {
            con.check_answer(&data);
        }
        let mut sel = 0;
        let mut defer = false;
        let mut in_session = false;
        let d = match chunk {
            [0xff | 0xfe, ..] if chunk.len() >= 3 => {
                let con = console.get_or_insert_with(|| login(&mut ep, &mut rng, now, peer));
                match con {
                    Some(con) if chunk[0] == 0xff => {
                        in_session = true;
                        sel = chunk[1] >> 7;
                        defer = chunk[1] & 0x40 != 0;
                        con.rq_seq = (con.rq_seq + 1) & 0x3f;
                        con.seq = con.seq.wrapping_add(1);
                        let mut msg = Vec::with_capacity(chunk.len() + 8);
                        IpmiRequest {
                            rs_addr: 0x20,
                            netfn: chunk[1] & 0x3f,
                            rs_lun: 0,
                            rq_addr: 0x81,
                            rq_seq: con.rq_seq,
                            rq_lun: 0,
                            cmd: chunk[2],
                            data: &chunk[3..],
                        }
                        .encode(&mut msg);
                        con.seal(con.seq, &msg, &mut rng)
                    }
                    Some(con) => {
                        in_session = true;
                        let seq = con.seq.wrapping_add(chunk[1] as i8 as i32 as u32);
                        if (chunk[1] as i8) > 0 {
                            con.seq = seq;
                        }
                        con.seal(seq, &chunk[2..], &mut rng)
                    }
                    None => chunk.to_vec(),
                }
            }
            [0xfd, ty, p @ ..] => {
                let ty = ty & 0x3f;
                setup_packet(ty, &hs.patch(ty, p))
            }
            [0xfc, tag, ..] => match hs.rakp3(*tag) {
                Some(r3) => setup_packet(payload::RAKP3, &r3),
                None => chunk.to_vec(),
            },
            _ => chunk.to_vec(),
        };
        let out = match ep.handle(now, peer, &d, &mut rng) {
            Some(Output::Machine { ticket, request }) if defer => {
                deferred = Some((ticket, request, sel));
                None
            }
            Some(Output::Machine { ticket, request }) => {
                let r = answer(&request, sel);
                ep.complete(now, ticket, r, &mut rng)
            }
            o => o,
        };
        hs.learn(&out);
        if in_session
            && let (Some(Output::Transmit { data, .. }), Some(Some(con))) = (&out, &console)
        {
            con.check_answer(data);
        }
        while ep.poll_event().is_some() {}
    }
}
