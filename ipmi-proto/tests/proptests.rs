//! Property tests: every message the crate encodes decodes back to itself, and no decoder
//! (nor the whole endpoint) panics on arbitrary bytes. Default case counts (256 per property);
//! the handshake properties use fewer cases, since each runs several HMACs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ipmi_proto::client::Client;
use ipmi_proto::codes::{
    AuthAlg, CompletionCode, ConfAlg, IntegAlg, NetFn, PayloadType, RakpStatus,
};
use ipmi_proto::crypto::{CipherSuite, SessionKeys};
use ipmi_proto::endpoint::{Endpoint, Entropy, Event, Output};
use ipmi_proto::rmcp::{
    Granted, OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp2Body, Rakp3, Rakp4,
    SetupMessage,
};
use ipmi_proto::seal;
use ipmi_proto::session::{Privilege, SeqWindow};
use ipmi_proto::wire::{self, Datagram, IpmiRequest, IpmiResponse};
use ipmi_proto::{BmcConfig, User};
use proptest::prelude::*;
use zeroize::Zeroizing;

/// Seeded entropy, so a failing case replays exactly.
struct Rng(u64);

impl Entropy for Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (self.0 >> 33) as u8;
        }
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

fn suite() -> impl Strategy<Value = CipherSuite> {
    prop_oneof![Just(CipherSuite::Suite3), Just(CipherSuite::Suite17)]
}

fn privilege() -> impl Strategy<Value = Privilege> {
    prop_oneof![
        Just(Privilege::User),
        Just(Privilege::Operator),
        Just(Privilege::Administrator)
    ]
}

fn peer() -> SocketAddr {
    "192.0.2.7:40000".parse().unwrap()
}

proptest! {
    /// RMCP + ASF Presence Ping (DSP0136): the tag survives, whatever the RMCP sequence number.
    #[test]
    fn asf_ping_decodes_and_the_pong_echoes_the_tag(tag: u8, rmcp_seq: u8) {
        let ping = [0x06, 0x00, rmcp_seq, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, tag, 0x00, 0x00];
        prop_assert_eq!(wire::decode_datagram(&ping), Ok(Datagram::AsfPing { tag }));
        let mut pong = Vec::new();
        wire::encode_asf_pong(tag, &mut pong);
        prop_assert_eq!(pong.len(), 28);
        prop_assert_eq!(pong[9], tag);
        // A pong is not a ping: the BMC must never answer its own answers.
        prop_assert!(wire::decode_datagram(&pong).is_err());
    }

    /// IPMI 1.5 session-less packets round-trip their message (length byte included).
    #[test]
    fn v15_sessionless_round_trip(message in bytes(255)) {
        let mut out = Vec::new();
        wire::encode_v15_sessionless(&message, &mut out);
        let Ok(Datagram::V15(p)) = wire::decode_datagram(&out) else {
            return Err(TestCaseError::fail("not a 1.5 packet"));
        };
        prop_assert_eq!((p.auth_type, p.seq, p.session_id, p.auth_code), (0, 0, 0, None));
        prop_assert_eq!(p.message, &message[..]);
    }

    /// IPMI 2.0 session header, payload and (when authenticated) trailer round-trip, and the
    /// trailer split gives back exactly the bytes the AuthCode was computed over.
    #[test]
    fn v20_header_and_trailer_round_trip(
        ptype in (0u8..0x40)
            .prop_map(PayloadType)
            .prop_filter("OEM explicit has extra fields", |t| *t != PayloadType::OEM_EXPLICIT),
        encrypted: bool,
        authenticated: bool,
        session_id: u32,
        seq: u32,
        body in bytes(300),
        icv_len in prop_oneof![Just(12usize), Just(16usize)],
        code_byte: u8,
    ) {
        let mut out = Vec::new();
        let at = wire::begin_v20(&mut out, ptype, encrypted, authenticated, session_id, seq);
        out.extend_from_slice(&body);
        wire::finish_v20(&mut out, at);
        let mut covered_seen = Vec::new();
        if authenticated {
            wire::append_trailer(&mut out, |c| {
                covered_seen = c.to_vec();
                vec![code_byte; icv_len]
            });
        }
        let Ok(Datagram::V20(p)) = wire::decode_datagram(&out) else {
            return Err(TestCaseError::fail("not a 2.0 packet"));
        };
        prop_assert_eq!(
            (p.encrypted, p.authenticated, p.payload_type, p.session_id, p.seq),
            (encrypted, authenticated, ptype, session_id, seq)
        );
        prop_assert_eq!(p.payload, &body[..]);
        if authenticated {
            let (covered, code) = wire::split_trailer(&out, p.trailer.len(), icv_len).unwrap();
            prop_assert_eq!(covered, &covered_seen[..]);
            prop_assert_eq!(covered.len() % 4, 0);
            prop_assert_eq!(code, &vec![code_byte; icv_len][..]);
        } else {
            prop_assert!(p.trailer.is_empty());
        }
    }

    /// IPMI requests round-trip with both checksums, and their responses decode to what was
    /// put in; any single corrupted byte is caught by a checksum (IPMI v2.0 §13.8).
    #[test]
    fn ipmi_request_and_response_round_trip(
        rs_addr: u8, netfn in 0u8..0x40, rs_lun in 0u8..4, rq_addr: u8, rq_seq in 0u8..0x40,
        rq_lun in 0u8..4, cmd: u8, data in bytes(64), cc: u8, rdata in bytes(64),
        flip in any::<prop::sample::Index>(), xor in 1u8..,
    ) {
        let req = IpmiRequest {
            rs_addr, netfn: NetFn(netfn), rs_lun, rq_addr, rq_seq, rq_lun, cmd, data: &data,
        };
        let mut m = Vec::new();
        req.encode(&mut m);
        prop_assert_eq!(IpmiRequest::decode(&m), Ok(req));
        let mut bad = m.clone();
        let i = flip.index(bad.len());
        bad[i] ^= xor;
        prop_assert!(IpmiRequest::decode(&bad).is_err(), "byte {} corrupted", i);
        let mut r = Vec::new();
        req.encode_response(cc, &rdata, &mut r);
        let resp = IpmiResponse::decode(&r).unwrap();
        prop_assert_eq!(
            (resp.netfn, resp.rq_seq, resp.cmd, resp.cc, resp.data),
            (NetFn(netfn | 1), rq_seq, cmd, CompletionCode(cc), &rdata[..])
        );
        // The response encodes back to the same bytes.
        let mut again = Vec::new();
        resp.encode(&mut again);
        prop_assert_eq!(again, r);
    }

    /// AES-CBC-128 with the IPMI pad (§13.29) and the integrity AuthCode (§13.28) under keys
    /// derived from arbitrary handshake values: decrypt(encrypt(x)) = x, the AuthCode verifies,
    /// and a flipped bit does not.
    #[test]
    fn payload_encryption_and_integrity_round_trip(
        suite in suite(), kg in bytes(20), rm: [u8; 16], rc: [u8; 16], role: u8,
        user in bytes(16), iv: [u8; 16], plain in bytes(200), bit in 0usize..8,
    ) {
        let keys = SessionKeys::derive(suite, &kg, &rm, &rc, role, &user);
        let mut ct = Vec::new();
        keys.encrypt(&iv, &plain, &mut ct);
        prop_assert_eq!(ct.len() % 16, 0);
        let back = keys.decrypt(&ct).map(|v| v.to_vec());
        prop_assert_eq!(back, Some(plain));
        let code = keys.integrity(&ct);
        prop_assert_eq!(code.len(), suite.icv_len());
        prop_assert!(keys.verify_integrity(&ct, &code));
        let mut bad = ct.clone();
        bad[0] ^= 1 << bit;
        prop_assert!(!keys.verify_integrity(&bad, &code));
    }

    /// The sequence window never accepts the same number twice (IPMI v2.0 §6.12).
    #[test]
    fn sequence_window_never_accepts_a_number_twice(
        seqs in proptest::collection::vec(1u32..64, 1..100),
    ) {
        let mut w = SeqWindow::default();
        let mut accepted = std::collections::HashSet::new();
        for s in seqs {
            if w.check(s) {
                prop_assert!(accepted.insert(s), "{} accepted twice", s);
                w.accept(s);
            }
        }
    }

    /// No decoder panics on arbitrary bytes.
    #[test]
    fn decoders_never_panic(d in bytes(600), icv in 0usize..40, tl in 0usize..700) {
        let _ = wire::decode_datagram(&d);
        let _ = IpmiRequest::decode(&d);
        let _ = IpmiResponse::decode(&d);
        let _ = wire::split_trailer(&d, tl, icv);
        let keys = SessionKeys::derive(CipherSuite::Suite17, b"k", &[1; 16], &[2; 16], 0x14, b"u");
        let _ = keys.decrypt(&d);
        ipmi_proto::fuzzing::decoders(&d);
        ipmi_proto::fuzzing::commands(&d);
        ipmi_proto::fuzzing::setup(&d);
        let _ = ipmi_proto::rmcp::peek_tag_and_id(&d);
        let _ = OpenSessionRequest::read(&d);
        let _ = OpenSessionResponse::read(&d);
        let _ = Rakp1::read(&d);
        let _ = Rakp2::read(&d);
        let _ = Rakp3::read(&d);
        let _ = Rakp4::read(&d);
        let _ = Rakp4::from_datagram(&d);
        let _ = seal::open(&keys, &d);
    }

    /// Open Session Request, with any mix of proposed and null (BMC-picks, §13.17)
    /// algorithm payloads: read(encode(m)) = m, in 32 bytes; one byte more or less is refused.
    #[test]
    fn open_session_request_round_trips(
        tag: u8, max_privilege: u8, sid_m: u32,
        auth in proptest::option::of(0u8..0x40),
        integ in proptest::option::of(0u8..0x40),
        conf in proptest::option::of(0u8..0x40),
    ) {
        let m = OpenSessionRequest {
            tag, max_privilege, sid_m,
            auth: auth.map(AuthAlg), integ: integ.map(IntegAlg), conf: conf.map(ConfAlg),
        };
        let d = m.to_datagram();
        prop_assert_eq!(OpenSessionRequest::from_datagram(&d), Ok(m));
        let p = &d[16..];
        prop_assert_eq!(p.len(), 32);
        prop_assert!(OpenSessionRequest::read(&p[..31]).is_err());
        prop_assert!(OpenSessionRequest::read(&[p, &[0]].concat()).is_err());
    }

    /// Open Session Response, granted or refused: read(encode(m)) = m.
    #[test]
    fn open_session_response_round_trips(
        tag: u8, refusal in 1u8.., max_privilege: u8, sid_m: u32, sid_c: u32,
        algs in (0u8..0x40, 0u8..0x40, 0u8..0x40), ok: bool,
    ) {
        let m = OpenSessionResponse {
            tag,
            status: if ok { RakpStatus::OK } else { RakpStatus(refusal) },
            max_privilege,
            sid_m,
            granted: ok.then_some(Granted {
                sid_c, auth: AuthAlg(algs.0), integ: IntegAlg(algs.1), conf: ConfAlg(algs.2),
            }),
        };
        prop_assert_eq!(OpenSessionResponse::from_datagram(&m.to_datagram()), Ok(m));
    }

    /// RAKP 1 with any name of up to 16 bytes: read(encode(m)) = m, and the length is exact.
    #[test]
    fn rakp1_round_trips(tag: u8, sid_c: u32, rm: [u8; 16], role: u8, user in bytes(16)) {
        let m = Rakp1 { tag, sid_c, rm, role, user: &user };
        let d = m.to_datagram();
        prop_assert_eq!(Rakp1::from_datagram(&d), Ok(m));
        prop_assert_eq!(d.len(), 16 + 28 + user.len());
        prop_assert!(Rakp1::read(&d[16..d.len() - 1]).is_err());
    }

    /// RAKP 2, 3 and 4, successes and refusals, with AuthCodes and ICVs of any length:
    /// read(encode(m)) = m.
    #[test]
    fn rakp2_to_4_round_trip(
        tag: u8, status: u8, id: u32, rc: [u8; 16], guid: [u8; 16], code in bytes(40),
        short: bool,
    ) {
        let status = RakpStatus(status);
        let body = (status.is_ok() || !short).then_some(Rakp2Body { rc, guid, auth: &code });
        let m2 = Rakp2 { tag, status, sid_m: id, body };
        let d2 = m2.to_datagram();
        prop_assert_eq!(Rakp2::from_datagram(&d2), Ok(m2));
        let m3 = Rakp3 { tag, status, sid_c: id, auth: &code };
        let d3 = m3.to_datagram();
        prop_assert_eq!(Rakp3::from_datagram(&d3), Ok(m3));
        let m4 = Rakp4 { tag, status, sid_m: id, icv: &code };
        let d4 = m4.to_datagram();
        prop_assert_eq!(Rakp4::from_datagram(&d4), Ok(m4));
        // A set-up message is only read from its own payload type.
        prop_assert!(Rakp2::from_datagram(&d4).is_err());
    }

    /// seal/open (IPMI v2.0 §13.28–13.29) under keys from arbitrary handshake values:
    /// open(seal(x)) = x with the header fields kept, and any flipped bit is refused.
    #[test]
    fn seal_and_open_round_trip(
        suite in suite(), kg in bytes(20), rm: [u8; 16], rc: [u8; 16], role: u8,
        user in bytes(16), iv: [u8; 16], plain in bytes(200), sid: u32, seq: u32,
        ty in prop_oneof![Just(PayloadType::IPMI), Just(PayloadType::SOL)],
        flip in any::<prop::sample::Index>(), bit in 0usize..8,
    ) {
        let keys = SessionKeys::derive(suite, &kg, &rm, &rc, role, &user);
        let d = seal::seal(&keys, ty, sid, seq, &iv, &plain);
        let o = seal::open(&keys, &d).unwrap();
        prop_assert_eq!((o.payload_type, o.session_id, o.seq), (ty, sid, seq));
        prop_assert_eq!(&o.plaintext[..], &plain[..]);
        // The AuthCode covers everything from the session header on; the 4-byte RMCP header
        // before it is not protected (§13.28.4), so flips are made after it.
        let mut bad = d.clone();
        let i = 4 + flip.index(bad.len() - 4);
        bad[i] ^= 1 << bit;
        prop_assert!(seal::open(&keys, &bad).is_err(), "bit {} of byte {} flipped", bit, i);
    }

    /// Arbitrary datagrams (with an RMCP/IPMI 2.0 prefix half the time, so they get past the
    /// first checks) never panic the endpoint, and the session table stays within its limits.
    #[test]
    fn endpoint_never_panics_on_arbitrary_datagrams(
        ds in proptest::collection::vec((any::<bool>(), bytes(120)), 1..40),
    ) {
        let pw = Zeroizing::new(b"pw".to_vec());
        let user = User::new("admin", pw, Privilege::Administrator).unwrap();
        let mut cfg = BmcConfig::new(vec![user], [3; 16]).unwrap();
        cfg.limits.max_half_open = 4;
        let mut ep = Endpoint::new(cfg);
        let mut rng = Rng(7);
        let now = Instant::now();
        for (prefix, d) in ds {
            let mut dg = if prefix { vec![0x06, 0x00, 0xff, 0x07, 0x06] } else { Vec::new() };
            dg.extend_from_slice(&d);
            let _ = ep.handle(now, peer(), &dg, &mut rng);
            let (active, half) = ep.session_counts();
            prop_assert!(active <= 32 && half <= 4);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Open Session and RAKP 1–4 as the console encodes them decode at the BMC and back, for
    /// any console session ID, user name, password, suite, privilege and Kg: the handshake
    /// completes, the BMC reports the name the console sent, and an in-session request with
    /// arbitrary netFn, command and data comes back with the same rqSeq and command.
    #[test]
    fn handshake_and_in_session_messages_round_trip(
        suite in suite(),
        sid_m in 1u32..,
        name in proptest::collection::vec(
            prop::sample::select(
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-".to_vec(),
            ),
            1..=16,
        ).prop_map(|v| String::from_utf8(v).unwrap()),
        password in proptest::collection::vec(any::<u8>(), 1..=20),
        kg in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=20)),
        privilege in privilege(),
        seed: u64,
        netfn in (0u8..0x20).prop_map(|n| n * 2),
        cmd: u8,
        data in bytes(40),
    ) {
        let pw = Zeroizing::new(password.clone());
        let user = User::new(&name, pw, Privilege::Administrator).unwrap();
        let mut cfg = BmcConfig::new(vec![user], [9; 16]).unwrap();
        let mut c = Client::new(suite, &name, &password, privilege).with_console_id(sid_m);
        if let Some(k) = &kg {
            cfg = cfg.with_kg(Zeroizing::new(k.clone())).unwrap();
            c = c.with_kg(k);
        }
        let mut ep = Endpoint::new(cfg);
        let mut rng = Rng(seed);
        let now = Instant::now();
        let tx = |ep: &mut Endpoint, rng: &mut Rng, d: &[u8]| match ep.handle(now, peer(), d, rng).ok() {
            Some(Output::Transmit { data, .. }) => data,
            o => panic!("expected a datagram, got {o:?}"),
        };
        let r = tx(&mut ep, &mut rng, &c.open_session_request());
        let rakp1 = c.handle_open_session_response(&r, &mut rng).unwrap();
        let r = tx(&mut ep, &mut rng, &rakp1);
        let rakp3 = c.handle_rakp2(&r).unwrap();
        let r = tx(&mut ep, &mut rng, &rakp3);
        c.handle_rakp4(&r).unwrap();
        let opened = std::iter::from_fn(|| ep.poll_event())
            .find_map(|e| match e {
                Event::SessionOpened { user, suite, .. } => Some((user, suite)),
                _ => None,
            });
        prop_assert_eq!(opened, Some((name.clone(), suite)));
        prop_assert_eq!(ep.session_counts(), (1, 0));
        // An in-session request always gets an answer for the same command and rqSeq (C1 for
        // unknown commands, D4 for ones above USER, a machine request for chassis commands).
        let d = c.request_with_rq_seq(netfn, cmd, &data, 17, &mut rng);
        let out = match ep.handle(now, peer(), &d, &mut rng).ok() {
            Some(Output::Machine { ticket, .. }) => ep.complete(
                now + Duration::from_millis(1),
                ticket,
                Err(ipmi_proto::machine::MachineError::Busy),
                &mut rng,
            ),
            o => o,
        };
        let Some(Output::Transmit { data: reply, .. }) = out else {
            return Err(TestCaseError::fail("no answer"));
        };
        let (rq_seq, _cc, _) = c.response(&reply).unwrap();
        prop_assert_eq!(rq_seq, 17);
    }

    /// The console never panics on an odd answer at any step of a login or in session
    /// (`ipmi_proto::fuzzing::client`: mode byte, then the answer).
    #[test]
    fn client_never_panics_on_odd_answers(mode in 0u8..5, d in bytes(120)) {
        ipmi_proto::fuzzing::client(&[&[mode][..], &d].concat());
    }
}
