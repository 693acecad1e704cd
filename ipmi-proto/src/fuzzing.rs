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
//! | `client`   | the console's decoders ([`Client`]): each answer of a real login replaced by fuzzed bytes, and in-session responses sealed under real keys |

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nom::Parser;
use nom::bytes::complete::take;
use nom::combinator::map_res;
use nom::number::complete::u8 as byte;
use zeroize::Zeroizing;

use crate::client::Client;
use crate::codes::{NetFn, PayloadType, RakpStatus};
use crate::commands::BmcState;
use crate::commands::{self, CmdContext, Outcome};
use crate::crypto::{CipherSuite, SessionKeys, rakp3_auth};
use crate::endpoint::{Endpoint, Entropy, Output, Ticket};
use crate::machine::{
    BootFlags, MachineError, MachineReply, MachineRequest, MachineResult, PowerState,
};
use crate::rmcp::{
    self, OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp3, Rakp4, SetupMessage,
};
use crate::seal;
use crate::session::Privilege;
use crate::wire::{self, IpmiRequest, IpmiResponse};
use crate::{BmcConfig, User};

/// The fuzz BMC's one user and password.
const USER: &str = "admin";
const PASSWORD: &[u8] = b"password";

/// Whatever a set-up parser accepts encodes to bytes it parses to the same message (reserved
/// bytes are not kept, so the bytes themselves may differ).
macro_rules! reparses {
    ($ty:ident, $data:expr) => {
        if let Ok(m) = $ty::read($data) {
            let mut out = Vec::new();
            m.encode(&mut out);
            assert_eq!($ty::read(&out), Ok(m), "does not survive its encoding");
        }
    };
}

/// Decode `data` as a datagram, as an IPMI request and response, and as every set-up message.
pub fn decoders(data: &[u8]) {
    let _ = wire::decode_datagram(data);
    if let Ok(r) = IpmiRequest::decode(data) {
        // Whatever decodes must encode back to the same bytes.
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(out, data, "IPMI request round trip");
    }
    if let Ok(r) = IpmiResponse::decode(data) {
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(out, data, "IPMI response round trip");
    }
    for icv in [12, 16] {
        let _ = wire::split_trailer(data, data.len().saturating_sub(4), icv);
    }
    let _ = rmcp::peek_tag_and_id(data);
    reparses!(OpenSessionRequest, data);
    reparses!(OpenSessionResponse, data);
    reparses!(Rakp1, data);
    reparses!(Rakp2, data);
    reparses!(Rakp3, data);
    reparses!(Rakp4, data);
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

/// One record of a fuzz input, `[head; N][len][bytes; len]`, read with nom: returns the
/// input after it, the head and the bytes (a last record shorter than its length keeps what
/// is there). `None` when fewer than `N + 1` bytes are left.
fn record<const N: usize>(i: &[u8]) -> Option<(&[u8], [u8; N], &[u8])> {
    let (rest, (head, len)) = (map_res(take(N), <[u8; N]>::try_from), byte)
        .parse(i)
        .map_err(|_: nom::Err<nom::error::Error<&[u8]>>| ())
        .ok()?;
    let (body, rest) = rest.split_at(usize::from(len).min(rest.len()));
    Some((rest, head, body))
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
    while let Some((next, [flags, netfn, cmd], body)) = record(rest) {
        rest = next;
        let netfn = netfn & 0x3f;
        let req = IpmiRequest::to_bmc(NetFn(netfn), cmd, cmd, body);
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

/// The RMCP+ set-up message of an answer, if it is one of type `M`.
fn setup_reply<'a, M: SetupMessage<'a>>(o: &'a Option<Output>) -> Option<M> {
    match o {
        Some(Output::Transmit { data, .. }) => M::from_datagram(data).ok(),
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
        if let Some(m) = setup_reply::<OpenSessionResponse>(o)
            && let Some(g) = m.granted
        {
            self.sid_m = m.sid_m;
            self.sid_c = g.sid_c;
            self.suite = CipherSuite::from_algorithms(g.auth, g.integ, g.conf);
            self.rc = None;
        }
        if let Some(m) = setup_reply::<Rakp2<'_>>(o)
            && m.status.is_ok()
            && let Some(b) = m.body
        {
            self.rc = Some(b.rc);
        }
    }

    /// The fuzzed payload `p` with its session-ID field (bytes 4..8 of RAKP 1 and RAKP 3,
    /// IPMI v2.0 Tables 13-11, 13-13) overwritten with the live SIDc; an Open Session Request
    /// keeps its own SIDm there. A RAKP 1 that parses is remembered for [`Handshake::rakp3`].
    fn patch(&mut self, ty: PayloadType, p: &[u8]) -> Vec<u8> {
        let mut p = p.to_vec();
        if ty != PayloadType::OPEN_SESSION_REQUEST
            && let Some(id) = p.get_mut(4..8)
        {
            id.copy_from_slice(&self.sid_c.to_le_bytes());
        }
        if ty == PayloadType::RAKP1
            && let Ok(m) = Rakp1::read(&p)
        {
            self.role = m.role;
            self.name = m.user.to_vec();
        }
        p
    }

    /// A RAKP 3 with the right AuthCode for the fuzz user's password, if RAKP 2 came.
    fn rakp3(&self, tag: u8) -> Option<Vec<u8>> {
        let (suite, rc) = (self.suite?, self.rc?);
        let auth = rakp3_auth(suite, PASSWORD, &rc, self.sid_m, self.role, &self.name);
        Some(
            Rakp3 {
                tag,
                status: RakpStatus::OK,
                sid_c: self.sid_c,
                auth: &auth,
            }
            .to_datagram(),
        )
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
        let o = ep.handle(now, peer, d, rng).ok();
        hs.learn(&o);
        o
    };
    if mode % 4 == 0 {
        let d = rmcp::setup_datagram(PayloadType::OPEN_SESSION_REQUEST, body);
        send(&mut ep, &mut hs, &mut rng, &d);
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
        let p = hs.patch(PayloadType::RAKP1, body);
        let d = rmcp::setup_datagram(PayloadType::RAKP1, &p);
        send(&mut ep, &mut hs, &mut rng, &d);
        return;
    }
    let mut rakp1 = Vec::new();
    Rakp1 {
        tag: 0,
        sid_c: hs.sid_c,
        rm: [0x11; 16],
        role: 0x14,
        user: USER.as_bytes(),
    }
    .encode(&mut rakp1);
    let rakp1 = hs.patch(PayloadType::RAKP1, &rakp1);
    let d = rmcp::setup_datagram(PayloadType::RAKP1, &rakp1);
    send(&mut ep, &mut hs, &mut rng, &d);
    if mode % 4 == 3
        && let Some(r3) = hs.rakp3(0)
    {
        send(&mut ep, &mut hs, &mut rng, &r3);
    }
    let p = hs.patch(PayloadType::RAKP3, body);
    let d = rmcp::setup_datagram(PayloadType::RAKP3, &p);
    send(&mut ep, &mut hs, &mut rng, &d);
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
        self.seal_as(PayloadType::IPMI, seq, plaintext, rng)
    }

    fn seal_as(&self, ty: PayloadType, seq: u32, plaintext: &[u8], rng: &mut Xorshift) -> Vec<u8> {
        let mut iv = [0u8; 16];
        rng.fill(&mut iv);
        seal::seal(&self.keys, ty, self.sid_c, seq, &iv, plaintext)
    }

    /// Every datagram the BMC sends outside an answer (SOL) verifies under the session keys
    /// and decrypts to a SOL packet for this console.
    fn check_sol(&self, data: &[u8]) {
        let o = seal::open(&self.keys, data).expect("a SOL datagram opens");
        assert_eq!(o.payload_type, PayloadType::SOL);
        assert_eq!(o.session_id, self.sid_m);
        assert!(crate::sol::SolPacket::read(&o.plaintext).is_ok());
    }

    /// Every in-session answer of the BMC verifies under the session keys, decrypts and
    /// carries a well-formed IPMI response.
    fn check_answer(&self, data: &[u8]) {
        let o = seal::open(&self.keys, data).expect("in-session answer opens");
        assert_eq!(o.session_id, self.sid_m, "answer's session ID");
        IpmiResponse::decode(&o.plaintext).expect("answer is an IPMI response");
    }
}

fn suite17_client() -> Client {
    Client::new(
        CipherSuite::Suite17,
        USER,
        PASSWORD,
        Privilege::Administrator,
    )
}

/// The BMC's answer to `d`, or nothing.
fn transmit(
    ep: &mut Endpoint,
    rng: &mut Xorshift,
    now: Instant,
    peer: SocketAddr,
    d: &[u8],
) -> Vec<u8> {
    match ep.handle(now, peer, d, rng) {
        Ok(Output::Transmit { data, .. }) => data,
        _ => Vec::new(),
    }
}

/// The console's side of a finished login, with keys derived from the Rm and Rc that crossed
/// the wire in `rakp1` and `rakp2`.
fn console(rakp1: &[u8], rakp2: &[u8], sid_c: u32) -> Option<Console> {
    let m1 = Rakp1::from_datagram(rakp1).ok()?;
    let m2 = Rakp2::from_datagram(rakp2).ok()?;
    let rc = m2.body?.rc;
    Some(Console {
        keys: SessionKeys::derive(
            CipherSuite::Suite17,
            PASSWORD,
            &m1.rm,
            &rc,
            m1.role,
            m1.user,
        ),
        sid_c,
        sid_m: m2.sid_m,
        seq: 0,
        rq_seq: 0,
    })
}

/// Log a suite-17 console in with the real client.
fn login(ep: &mut Endpoint, rng: &mut Xorshift, now: Instant, peer: SocketAddr) -> Option<Console> {
    let mut c = suite17_client();
    let r = transmit(ep, rng, now, peer, &c.open_session_request());
    let rakp1 = c.handle_open_session_response(&r, rng).ok()?;
    let rakp2 = transmit(ep, rng, now, peer, &rakp1);
    let rakp3 = c.handle_rakp2(&rakp2).ok()?;
    c.handle_rakp4(&transmit(ep, rng, now, peer, &rakp3)).ok()?;
    console(&rakp1, &rakp2, c.bmc_session_id())
}

/// The console's decoders ([`Client`]) against odd answers. The first byte selects which answer
/// of a real suite-17 login (against a real endpoint) the rest replaces: 0 — the Open Session
/// Response; 1 — RAKP 2; 2 — RAKP 4; 3 — the answer to an in-session request (a raw
/// datagram); 4 — that answer's plaintext, sealed under the session keys as the BMC would, so
/// the IPMI response decoder is reached behind real keys. The rest also goes, as every
/// answer, to a client that has not logged in. The client must return for every input (an
/// error is fine): `ovbmc-bench` and the tests talk to BMCs with it.
pub fn client(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut rng = Xorshift(0x5851_f42d_4c95_7f2d);
    let mut fresh = suite17_client();
    let _ = fresh.handle_open_session_response(body, &mut rng);
    let _ = fresh.handle_rakp2(body);
    let _ = fresh.handle_rakp4(body);
    let _ = fresh.response(body);

    let mut ep = Endpoint::new(config());
    let now = Instant::now();
    let peer: SocketAddr = "127.0.0.1:623".parse().expect("address");
    let mode = mode % 5;
    let pick = |m: u8, real: &[u8]| {
        if mode == m {
            body.to_vec()
        } else {
            real.to_vec()
        }
    };
    let mut c = suite17_client();
    let r = transmit(&mut ep, &mut rng, now, peer, &c.open_session_request());
    let Ok(rakp1) = c.handle_open_session_response(&pick(0, &r), &mut rng) else {
        return;
    };
    let rakp2 = transmit(&mut ep, &mut rng, now, peer, &rakp1);
    let Ok(rakp3) = c.handle_rakp2(&pick(1, &rakp2)) else {
        return;
    };
    let rakp4 = transmit(&mut ep, &mut rng, now, peer, &rakp3);
    if c.handle_rakp4(&pick(2, &rakp4)).is_err() {
        return;
    }
    let req = c.request(NetFn::APP, 0x01, &[], &mut rng);
    let real = transmit(&mut ep, &mut rng, now, peer, &req);
    let answer = match mode {
        3 => body.to_vec(),
        4 => match console(&rakp1, &rakp2, c.bmc_session_id()) {
            Some(con) => {
                let mut iv = [0u8; 16];
                rng.fill(&mut iv);
                seal::seal(&con.keys, PayloadType::IPMI, con.sid_m, 1, &iv, body)
            }
            None => return,
        },
        _ => real,
    };
    let r = c.response(&answer);
    if mode < 3 {
        // The BMC's real answer to a request of the real session always decodes.
        assert!(r.is_ok(), "in-session answer: {r:?}");
    }
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
/// - `FB delta payload…` — the same sealed as a SOL packet (payload type 01h): after an
///   `FF 06 48 01 01 C6 00 00 00` (Activate Payload) the SOL path, with guest output pushed
///   and every SOL datagram checked to open under the session keys.
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
    while let Some((next, [delay], chunk)) = record(rest) {
        rest = next;
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
            [kind @ (0xff | 0xfe | 0xfb), arg, body @ ..] if !body.is_empty() => {
                let con = console.get_or_insert_with(|| login(&mut ep, &mut rng, now, peer));
                match (con, body) {
                    (Some(con), [cmd, data @ ..]) if *kind == 0xff => {
                        in_session = true;
                        sel = arg >> 7;
                        defer = arg & 0x40 != 0;
                        con.rq_seq = (con.rq_seq + 1) & 0x3f;
                        con.seq = con.seq.wrapping_add(1);
                        let mut msg = Vec::with_capacity(chunk.len() + 8);
                        IpmiRequest::to_bmc(NetFn(*arg), *cmd, con.rq_seq, data).encode(&mut msg);
                        con.seal(con.seq, &msg, &mut rng)
                    }
                    (Some(con), plaintext) => {
                        in_session = true;
                        let delta = *arg as i8;
                        let seq = con.seq.wrapping_add(delta as i32 as u32);
                        if delta > 0 {
                            con.seq = seq;
                        }
                        let ty = if *kind == 0xfb {
                            PayloadType::SOL
                        } else {
                            PayloadType::IPMI
                        };
                        con.seal_as(ty, seq, plaintext, &mut rng)
                    }
                    (None, _) => chunk.to_vec(),
                }
            }
            [0xfd, ty, p @ ..] => {
                let ty = PayloadType(ty & 0x3f);
                rmcp::setup_datagram(ty, &hs.patch(ty, p))
            }
            [0xfc, tag, ..] => hs.rakp3(*tag).unwrap_or_else(|| chunk.to_vec()),
            _ => chunk.to_vec(),
        };
        let out = match ep.handle(now, peer, &d, &mut rng).ok() {
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
        // SOL, if the input activated it: guest output in, everything due out, console
        // input taken, as the runtime does after every datagram.
        while ep.poll_sol_event().is_some() {}
        if ep.sol_room() > 0 {
            ep.sol_push(&chunk[..chunk.len().min(64)], now);
        }
        while let Some((_, d)) = ep.poll_transmit(now, &mut rng) {
            if let Some(Some(con)) = &console {
                con.check_sol(&d);
            }
        }
        while ep.poll_sol_input().is_some() {}
    }
}
