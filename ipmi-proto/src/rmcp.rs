//! The RMCP+ session set-up messages as typed structs (IPMI v2.0 §13.17–13.23): Open Session
//! Request/Response and RAKP Messages 1–4, each with one nom parser ([`SetupMessage::read`])
//! and one encoder ([`SetupMessage::encode`]). The BMC, the client and the fuzz harness share
//! them, so they cannot disagree about a byte layout.
//!
//! Parsers borrow from the payload, never panic, and reject trailing bytes wherever the spec
//! fixes the length. Reserved fields are ignored on input and written as zero. A parse
//! failure is a [`DecodeError`]; what status to answer it with is the BMC's decision.

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::take;
use nom::combinator::{map_res, rest};
use nom::number::complete::{le_u32, u8 as byte};

use crate::codes::{AuthAlg, ConfAlg, IntegAlg, PayloadType, RakpStatus};
use crate::wire::{self, Datagram, DecodeError};

type In<'a> = &'a [u8];

/// A fixed-size array.
fn array<const N: usize>(i: In<'_>) -> IResult<In<'_>, [u8; N]> {
    map_res(take(N), <[u8; N]>::try_from).parse(i)
}

/// `n` reserved bytes (ignored).
fn reserved(n: usize) -> impl Fn(In<'_>) -> IResult<In<'_>, ()> {
    move |i| take(n).map(|_| ()).parse(i)
}

/// Run `p` over all of `i`: a short input is `Truncated(what)`, left-over bytes are
/// `TrailingBytes(what)`.
fn all<'a, T>(
    i: In<'a>,
    what: &'static str,
    mut p: impl Parser<In<'a>, Output = T, Error = nom::error::Error<In<'a>>>,
) -> Result<T, DecodeError> {
    match p.parse(i) {
        Ok(([], v)) => Ok(v),
        Ok(_) => Err(DecodeError::TrailingBytes(what)),
        Err(_) => Err(DecodeError::Truncated(what)),
    }
}

/// A set-up message: its payload type, one parser and one encoder.
pub trait SetupMessage<'a>: Sized {
    /// The payload type that carries it (IPMI v2.0 Table 13-16).
    const TYPE: PayloadType;

    /// Parse the payload (the bytes after the IPMI 2.0 session header).
    fn read(payload: &'a [u8]) -> Result<Self, DecodeError>;

    /// Append the payload to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// The whole datagram: RMCP header, an unauthenticated IPMI 2.0 session header with
    /// session ID 0 and sequence 0 (set-up messages are outside any session, §13.6), and the
    /// payload.
    fn to_datagram(&self) -> Vec<u8> {
        framed(Self::TYPE, |out| self.encode(out))
    }

    /// Parse a whole datagram that must carry this message.
    fn from_datagram(datagram: &'a [u8]) -> Result<Self, DecodeError> {
        Self::read(setup_payload(datagram, Self::TYPE)?)
    }
}

fn framed(ty: PayloadType, payload: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 40);
    let at = wire::begin_v20(&mut out, ty, false, false, 0, 0);
    payload(&mut out);
    wire::finish_v20(&mut out, at);
    out
}

/// An unauthenticated IPMI 2.0 datagram of type `ty` around `payload` as given, framed like
/// [`SetupMessage::to_datagram`] (for session-less IPMI messages, and for fuzzed payloads).
pub fn setup_datagram(ty: PayloadType, payload: &[u8]) -> Vec<u8> {
    framed(ty, |out| out.extend_from_slice(payload))
}

/// The payload of an unauthenticated IPMI 2.0 datagram of type `ty`.
pub fn setup_payload(datagram: &[u8], ty: PayloadType) -> Result<&[u8], DecodeError> {
    match wire::decode_datagram(datagram)? {
        Datagram::V20(p) if p.encrypted || p.authenticated => Err(DecodeError::InvalidField(
            "set-up message is session-protected",
        )),
        Datagram::V20(p) if p.payload_type == ty => Ok(p.payload),
        Datagram::V20(_) => Err(DecodeError::InvalidField("payload type")),
        _ => Err(DecodeError::InvalidField("not an IPMI 2.0 datagram")),
    }
}

/// The message tag and the session ID at bytes 4..8 that every set-up message starts with,
/// read even from a message that does not parse, so a refusal can echo them (§13.17–13.23).
/// `None` for an empty payload; the ID is `None` when fewer than 8 bytes came.
pub fn peek_tag_and_id(payload: &[u8]) -> Option<(u8, Option<u32>)> {
    let (&tag, _) = payload.split_first()?;
    let id = payload
        .get(4..8)
        .and_then(|b| all(b, "session ID", le_u32).ok());
    Some((tag, id))
}

/// One algorithm record of an Open Session message (IPMI v2.0 Table 13-9): type, 2 reserved,
/// payload length, algorithm (bits 5:0), 3 reserved. Length 0 is a "null" payload (§13.17:
/// the BMC chooses); the record is still 8 bytes long, as OpenIPMI sends it.
fn alg_record(ty: u8) -> impl Fn(In<'_>) -> IResult<In<'_>, Result<Option<u8>, DecodeError>> {
    move |i| {
        (byte, reserved(2), byte, byte, reserved(3))
            .map(|(t, (), len, alg, ())| match (t == ty, len) {
                (false, _) => Err(DecodeError::InvalidField("algorithm payload type")),
                (true, 8) => Ok(Some(alg & 0x3f)),
                (true, 0) => Ok(None),
                (true, _) => Err(DecodeError::InvalidField("algorithm payload length")),
            })
            .parse(i)
    }
}

fn put_alg_record(out: &mut Vec<u8>, ty: u8, alg: Option<u8>) {
    match alg {
        Some(a) => out.extend_from_slice(&[ty, 0, 0, 8, a & 0x3f, 0, 0, 0]),
        None => out.extend_from_slice(&[ty, 0, 0, 0, 0, 0, 0, 0]),
    }
}

/// RMCP+ Open Session Request (IPMI v2.0 §13.17, Table 13-9): 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenSessionRequest {
    /// Message tag, echoed in the response.
    pub tag: u8,
    /// Requested maximum privilege, bits 3:0 (0: the highest the user is allowed); the byte
    /// as sent.
    pub max_privilege: u8,
    /// The console's session ID (SIDm).
    pub sid_m: u32,
    /// Proposed authentication algorithm; `None` is a null payload (the BMC picks).
    pub auth: Option<AuthAlg>,
    /// Proposed integrity algorithm; `None`: the BMC picks.
    pub integ: Option<IntegAlg>,
    /// Proposed confidentiality algorithm; `None`: the BMC picks.
    pub conf: Option<ConfAlg>,
}

impl SetupMessage<'_> for OpenSessionRequest {
    const TYPE: PayloadType = PayloadType::OPEN_SESSION_REQUEST;

    fn read(p: &[u8]) -> Result<Self, DecodeError> {
        let (tag, max_privilege, (), sid_m, a, i, c) = all(
            p,
            "Open Session Request",
            (
                byte,
                byte,
                reserved(2),
                le_u32,
                alg_record(0),
                alg_record(1),
                alg_record(2),
            ),
        )?;
        Ok(Self {
            tag,
            max_privilege,
            sid_m,
            auth: a?.map(AuthAlg),
            integ: i?.map(IntegAlg),
            conf: c?.map(ConfAlg),
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.tag, self.max_privilege, 0, 0]);
        out.extend_from_slice(&self.sid_m.to_le_bytes());
        put_alg_record(out, 0, self.auth.map(|a| a.0));
        put_alg_record(out, 1, self.integ.map(|a| a.0));
        put_alg_record(out, 2, self.conf.map(|a| a.0));
    }
}

/// What an Open Session Response grants when its status is 00h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    /// The BMC's session ID (SIDc).
    pub sid_c: u32,
    /// Authentication algorithm chosen.
    pub auth: AuthAlg,
    /// Integrity algorithm chosen.
    pub integ: IntegAlg,
    /// Confidentiality algorithm chosen.
    pub conf: ConfAlg,
}

/// RMCP+ Open Session Response (IPMI v2.0 §13.18, Table 13-10).
///
/// A success is 36 bytes. A refusal is read in either layout in use: the 8 bytes up to SIDm,
/// or the full 36 with zero fields after it (what ovbmc sends, since every client parses that
/// length); it is written in the 36-byte layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenSessionResponse {
    /// Message tag of the request.
    pub tag: u8,
    /// RMCP+ status code.
    pub status: RakpStatus,
    /// Maximum privilege level granted (bits 3:0).
    pub max_privilege: u8,
    /// The console's session ID (SIDm).
    pub sid_m: u32,
    /// The session and algorithms, present exactly when `status` is 00h.
    pub granted: Option<Granted>,
}

impl SetupMessage<'_> for OpenSessionResponse {
    const TYPE: PayloadType = PayloadType::OPEN_SESSION_RESPONSE;

    fn read(p: &[u8]) -> Result<Self, DecodeError> {
        const WHAT: &str = "Open Session Response";
        let (body, (tag, status, max_privilege, (), sid_m)) =
            (byte, byte.map(RakpStatus), byte, reserved(1), le_u32)
                .parse(p)
                .map_err(|_: nom::Err<nom::error::Error<In<'_>>>| DecodeError::Truncated(WHAT))?;
        let granted = if status.is_ok() {
            let (sid_c, a, i, c) = all(
                body,
                WHAT,
                (le_u32, alg_record(0), alg_record(1), alg_record(2)),
            )?;
            let (Some(a), Some(i), Some(c)) = (a?, i?, c?) else {
                // §13.18: the response names the algorithms the BMC chose.
                return Err(DecodeError::InvalidField("null algorithm in a response"));
            };
            Some(Granted {
                sid_c,
                auth: AuthAlg(a),
                integ: IntegAlg(i),
                conf: ConfAlg(c),
            })
        } else {
            match body.len() {
                0 | 28 => None,
                n if n < 28 => return Err(DecodeError::Truncated(WHAT)),
                _ => return Err(DecodeError::TrailingBytes(WHAT)),
            }
        };
        Ok(Self {
            tag,
            status,
            max_privilege,
            sid_m,
            granted,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.tag, self.status.0, self.max_privilege, 0]);
        out.extend_from_slice(&self.sid_m.to_le_bytes());
        match &self.granted {
            Some(g) => {
                out.extend_from_slice(&g.sid_c.to_le_bytes());
                put_alg_record(out, 0, Some(g.auth.0));
                put_alg_record(out, 1, Some(g.integ.0));
                put_alg_record(out, 2, Some(g.conf.0));
            }
            None => out.extend_from_slice(&[0; 28]),
        }
    }
}

impl OpenSessionResponse {
    /// A refusal: `status` (not 00h) for the console session `sid_m`, no privilege, nothing
    /// granted.
    pub fn refusal(tag: u8, status: RakpStatus, sid_m: u32) -> Self {
        Self {
            tag,
            status,
            max_privilege: 0,
            sid_m,
            granted: None,
        }
    }

    /// This refusal as a datagram in the short layout (tag, status, reserved, SIDm: the 8
    /// bytes of Table 13-10 up to SIDm), which [`SetupMessage::read`] accepts too: for a
    /// request too short for the 36-byte layout, so that no refusal is longer than its
    /// request (a reflector otherwise).
    pub fn short_refusal_datagram(&self) -> Vec<u8> {
        framed(Self::TYPE, |out| {
            out.extend_from_slice(&[self.tag, self.status.0, self.max_privilege, 0]);
            out.extend_from_slice(&self.sid_m.to_le_bytes());
        })
    }
}

/// The longest user name (ULENm ≤ 16, IPMI v2.0 Table 13-11).
pub const MAX_USER_NAME: usize = 16;

/// RAKP Message 1 (IPMI v2.0 §13.20, Table 13-11): 28 + ULENm bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rakp1<'a> {
    /// Message tag.
    pub tag: u8,
    /// The BMC's session ID (SIDc).
    pub sid_c: u32,
    /// The console's random number Rm.
    pub rm: [u8; 16],
    /// ROLEm: requested privilege (bits 3:0) and name-only lookup (bit 4); the byte as sent,
    /// since the RAKP 2/3 AuthCodes cover it whole.
    pub role: u8,
    /// UNAMEm (at most 16 bytes).
    pub user: &'a [u8],
}

impl<'a> SetupMessage<'a> for Rakp1<'a> {
    const TYPE: PayloadType = PayloadType::RAKP1;

    fn read(p: &'a [u8]) -> Result<Self, DecodeError> {
        const WHAT: &str = "RAKP 1";
        let (name, (tag, (), sid_c, rm, role, (), ulen)) = (
            byte,
            reserved(3),
            le_u32,
            array::<16>,
            byte,
            reserved(2),
            byte,
        )
            .parse(p)
            .map_err(|_: nom::Err<nom::error::Error<In<'_>>>| DecodeError::Truncated(WHAT))?;
        if ulen as usize > MAX_USER_NAME {
            return Err(DecodeError::InvalidField("ULENm"));
        }
        let user = all(name, WHAT, take(ulen))?;
        Ok(Self {
            tag,
            sid_c,
            rm,
            role,
            user,
        })
    }

    /// Writes at most [`MAX_USER_NAME`] bytes of `user` (a longer name cannot be sent).
    fn encode(&self, out: &mut Vec<u8>) {
        let user = &self.user[..self.user.len().min(MAX_USER_NAME)];
        out.extend_from_slice(&[self.tag, 0, 0, 0]);
        out.extend_from_slice(&self.sid_c.to_le_bytes());
        out.extend_from_slice(&self.rm);
        out.extend_from_slice(&[self.role, 0, 0, user.len() as u8]);
        out.extend_from_slice(user);
    }
}

/// The part of RAKP 2 a success carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rakp2Body<'a> {
    /// The BMC's random number Rc.
    pub rc: [u8; 16],
    /// The BMC's GUID (GUIDc).
    pub guid: [u8; 16],
    /// Key Exchange Authentication Code: as long as the suite's hash (0, 20 or 32 bytes).
    pub auth: &'a [u8],
}

/// RAKP Message 2 (IPMI v2.0 §13.21, Table 13-12): 40 + the AuthCode on success; a refusal
/// may stop after SIDm (8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rakp2<'a> {
    /// Message tag of RAKP 1.
    pub tag: u8,
    /// RMCP+ status code.
    pub status: RakpStatus,
    /// The console's session ID (SIDm).
    pub sid_m: u32,
    /// Rc, GUIDc and the AuthCode: required with status 00h.
    pub body: Option<Rakp2Body<'a>>,
}

/// Tag, status, 2 reserved, a session ID: how RAKP 2, 3 and 4 start.
fn rakp_head(i: In<'_>) -> IResult<In<'_>, (u8, RakpStatus, u32)> {
    (byte, byte.map(RakpStatus), reserved(2), le_u32)
        .map(|(t, s, (), id)| (t, s, id))
        .parse(i)
}

fn put_rakp_head(out: &mut Vec<u8>, tag: u8, status: RakpStatus, id: u32) {
    out.extend_from_slice(&[tag, status.0, 0, 0]);
    out.extend_from_slice(&id.to_le_bytes());
}

impl<'a> SetupMessage<'a> for Rakp2<'a> {
    const TYPE: PayloadType = PayloadType::RAKP2;

    fn read(p: &'a [u8]) -> Result<Self, DecodeError> {
        const WHAT: &str = "RAKP 2";
        let (body, (tag, status, sid_m)) = rakp_head(p)
            .map_err(|_: nom::Err<nom::error::Error<In<'_>>>| DecodeError::Truncated(WHAT))?;
        let body = if body.is_empty() && !status.is_ok() {
            None
        } else {
            let (rc, guid, auth) = all(body, WHAT, (array::<16>, array::<16>, rest))?;
            Some(Rakp2Body { rc, guid, auth })
        };
        Ok(Self {
            tag,
            status,
            sid_m,
            body,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_rakp_head(out, self.tag, self.status, self.sid_m);
        if let Some(b) = &self.body {
            out.extend_from_slice(&b.rc);
            out.extend_from_slice(&b.guid);
            out.extend_from_slice(b.auth);
        }
    }
}

impl Rakp2<'_> {
    /// A refusal: tag, status, reserved, SIDm and nothing else (Table 13-12).
    pub fn refusal(tag: u8, status: RakpStatus, sid_m: u32) -> Self {
        Self {
            tag,
            status,
            sid_m,
            body: None,
        }
    }
}

/// RAKP Message 3 (IPMI v2.0 §13.22, Table 13-13): 8 + the AuthCode (none when the console
/// reports a failure with a non-zero status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rakp3<'a> {
    /// Message tag.
    pub tag: u8,
    /// The console's verdict on RAKP 2 (non-zero: it gives up).
    pub status: RakpStatus,
    /// The BMC's session ID (SIDc).
    pub sid_c: u32,
    /// Key Exchange Authentication Code.
    pub auth: &'a [u8],
}

impl<'a> SetupMessage<'a> for Rakp3<'a> {
    const TYPE: PayloadType = PayloadType::RAKP3;

    fn read(p: &'a [u8]) -> Result<Self, DecodeError> {
        let (tag, status, sid_c, auth) = all(
            p,
            "RAKP 3",
            (rakp_head, rest).map(|((t, s, id), a)| (t, s, id, a)),
        )?;
        Ok(Self {
            tag,
            status,
            sid_c,
            auth,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_rakp_head(out, self.tag, self.status, self.sid_c);
        out.extend_from_slice(self.auth);
    }
}

/// RAKP Message 4 (IPMI v2.0 §13.23, Table 13-14): 8 + the ICV (none on a refusal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rakp4<'a> {
    /// Message tag of RAKP 3.
    pub tag: u8,
    /// RMCP+ status code.
    pub status: RakpStatus,
    /// The console's session ID (SIDm).
    pub sid_m: u32,
    /// Integrity Check Value: the suite's ICV length (12 or 16 bytes) on success.
    pub icv: &'a [u8],
}

impl<'a> SetupMessage<'a> for Rakp4<'a> {
    const TYPE: PayloadType = PayloadType::RAKP4;

    fn read(p: &'a [u8]) -> Result<Self, DecodeError> {
        let (tag, status, sid_m, icv) = all(
            p,
            "RAKP 4",
            (rakp_head, rest).map(|((t, s, id), a)| (t, s, id, a)),
        )?;
        Ok(Self {
            tag,
            status,
            sid_m,
            icv,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_rakp_head(out, self.tag, self.status, self.sid_m);
        out.extend_from_slice(self.icv);
    }
}

impl Rakp4<'_> {
    /// A refusal: tag, status, reserved, SIDm and no ICV (Table 13-14).
    pub fn refusal(tag: u8, status: RakpStatus, sid_m: u32) -> Self {
        Self {
            tag,
            status,
            sid_m,
            icv: &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// suite3_power_status.json: ipmitool's set-up messages and ipmi_sim's answers parse and
    /// encode back to the captured datagrams byte for byte.
    #[test]
    fn captured_set_up_messages_round_trip() {
        fn check<'a, M: SetupMessage<'a> + core::fmt::Debug>(d: &'a [u8]) -> M {
            let m = M::from_datagram(d).unwrap();
            assert_eq!(m.to_datagram(), d, "{m:?}");
            m
        }
        let h = |s: &str| hex::decode(s).unwrap();
        let osr = h(
            "0600ff0706100000000000000000200000000000a4a3a2a0000000080100000001000008010000000200000801000000",
        );
        let m: OpenSessionRequest = check(&osr);
        assert_eq!(m.auth, Some(AuthAlg::RAKP_HMAC_SHA1));
        assert_eq!(m.conf, Some(ConfAlg::AES_CBC_128));
        let rsp = h(
            "0600ff0706110000000000000000240000000400a4a3a2a065bac92f000000080100000001000008010000000200000801000000",
        );
        let m: OpenSessionResponse = check(&rsp);
        assert_eq!(m.granted.unwrap().sid_c, 0x2fc9_ba65);
        let r1 = h(
            "0600ff070612000000000000000021000000000065bac92f235e073bfa2bd49d51ecc0717be8eaad1400000561646d696e",
        );
        let m: Rakp1<'_> = check(&r1);
        assert_eq!((m.role, m.user), (0x14, &b"admin"[..]));
        let r2 = h(
            "0600ff07061300000000000000003c0000000000a4a3a2a0fd27609415133cc9acd735a28b5b5d7b1d7aa8aa2ee24af78be2be945db62c2f9cdf52aa0e023b68710c1b524f2c37279a51bbc4",
        );
        let m: Rakp2<'_> = check(&r2);
        assert_eq!(m.body.unwrap().auth.len(), 20);
        let r3 = h(
            "0600ff07061400000000000000001c000000000065bac92f3e3cf25ce42f2a6f240b597e225dd6cfcd2db6a1",
        );
        let _: Rakp3<'_> = check(&r3);
        let r4 = h("0600ff0706150000000000000000140000000000a4a3a2a04a963ecb93d68149950bde49");
        let m: Rakp4<'_> = check(&r4);
        assert_eq!(m.icv.len(), 12);
        let p = &osr[16..];
        assert_eq!(
            OpenSessionRequest::read(&[p, &[0]].concat()),
            Err(DecodeError::TrailingBytes("Open Session Request"))
        );
        assert!(OpenSessionRequest::read(&p[..31]).is_err());
    }

    /// OpenIPMI's `bmcpick`: the three records with payload length 0 (§13.17 null payload).
    #[test]
    fn null_algorithm_payloads_are_none() {
        let mut p = vec![7, 0, 0, 0, 1, 2, 3, 4];
        for ty in 0..3 {
            p.extend_from_slice(&[ty, 0, 0, 0, 0, 0, 0, 0]);
        }
        let m = OpenSessionRequest::read(&p).unwrap();
        assert_eq!((m.auth, m.integ, m.conf), (None, None, None));
        let mut out = Vec::new();
        m.encode(&mut out);
        assert_eq!(out, p);
        p[11] = 4;
        assert_eq!(
            OpenSessionRequest::read(&p),
            Err(DecodeError::InvalidField("algorithm payload length"))
        );
    }

    #[test]
    fn short_refusals_parse_and_short_successes_do_not() {
        let r = Rakp4::read(&[1, 0x0f, 0, 0, 1, 2, 3, 4]).unwrap();
        assert_eq!((r.status, r.icv), (RakpStatus::INVALID_ICV, &[][..]));
        let r = Rakp2::read(&[1, 0x0d, 0, 0, 1, 2, 3, 4]).unwrap();
        assert_eq!(r.body, None);
        assert!(Rakp2::read(&[1, 0, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(Rakp2::read(&[1, 0x0d, 0, 0, 1, 2, 3]).is_err());
        let o = OpenSessionResponse::read(&[1, 0x11, 0, 0, 1, 2, 3, 4]).unwrap();
        assert_eq!((o.status, o.granted), (RakpStatus::NO_CIPHER_MATCH, None));
        assert!(OpenSessionResponse::read(&[1, 0, 0, 0, 1, 2, 3, 4]).is_err());
    }

    #[test]
    fn refusals_encode_in_eight_bytes_and_parse_back() {
        let d = Rakp2::refusal(4, RakpStatus::UNAUTHORIZED_NAME, 9).to_datagram();
        assert_eq!(&d[16..], &[4, 0x0d, 0, 0, 9, 0, 0, 0]);
        assert_eq!(Rakp2::from_datagram(&d).unwrap().body, None);
        let d = Rakp4::refusal(4, RakpStatus::INVALID_ICV, 9).to_datagram();
        assert_eq!(&d[16..], &[4, 0x0f, 0, 0, 9, 0, 0, 0]);
        let r = OpenSessionResponse::refusal(4, RakpStatus::NO_CIPHER_MATCH, 9);
        let short = r.short_refusal_datagram();
        assert_eq!(&short[16..], &[4, 0x11, 0, 0, 9, 0, 0, 0]);
        assert_eq!(OpenSessionResponse::from_datagram(&short), Ok(r));
        let full = r.to_datagram();
        assert_eq!(full.len(), 16 + 36);
        assert_eq!(OpenSessionResponse::from_datagram(&full), Ok(r));
    }

    #[test]
    fn rakp1_checks_the_name_length() {
        let m = Rakp1 {
            tag: 3,
            sid_c: 9,
            rm: [5; 16],
            role: 0x14,
            user: b"admin",
        };
        let mut p = Vec::new();
        m.encode(&mut p);
        assert_eq!(p.len(), 33);
        assert_eq!(Rakp1::read(&p), Ok(m));
        assert!(Rakp1::read(&p[..32]).is_err());
        assert_eq!(
            Rakp1::read(&[&p[..], b"x"].concat()),
            Err(DecodeError::TrailingBytes("RAKP 1"))
        );
        p[27] = 17;
        assert_eq!(Rakp1::read(&p), Err(DecodeError::InvalidField("ULENm")));
        assert_eq!(peek_tag_and_id(&p), Some((3, Some(9))));
        assert_eq!(peek_tag_and_id(&p[..5]), Some((3, None)));
    }

    #[test]
    fn datagram_framing_checks_the_type() {
        let d = Rakp4 {
            tag: 1,
            status: RakpStatus::OK,
            sid_m: 2,
            icv: &[9; 16],
        }
        .to_datagram();
        assert_eq!(Rakp4::from_datagram(&d).unwrap().icv, &[9; 16]);
        assert_eq!(
            Rakp2::from_datagram(&d),
            Err(DecodeError::InvalidField("payload type"))
        );
    }
}
