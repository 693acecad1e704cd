//! Wire formats: RMCP, ASF presence ping/pong, the IPMI 1.5 and 2.0 session headers, the
//! RMCP+ session trailer and IPMI LAN message framing (IPMI v2.0 chapter 13).
//!
//! Decoders borrow from the datagram and never panic; each failure is a [`DecodeError`].
//! RMCP/ASF fields are big-endian, every IPMI multi-byte field is little-endian (§13.1).

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::take;
use nom::number::complete::{be_u32, le_u16, le_u32, u8 as byte};

use crate::codes::{CompletionCode, NetFn, PayloadType};

/// A malformed datagram or message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header or a length field says.
    #[error("truncated: {0}")]
    Truncated(&'static str),
    /// RMCP version is not 06 (RMCP v1.0, IPMI v2.0 §13.1.3).
    #[error("not RMCP v1.0")]
    BadRmcpVersion,
    /// An RMCP class we do not serve (only ASF and IPMI).
    #[error("unsupported RMCP class {0:#04x}")]
    UnsupportedClass(u8),
    /// An ASF message that is not a presence ping.
    #[error("unsupported ASF message")]
    UnsupportedAsf,
    /// An IPMI message checksum does not add up to zero (§13.8).
    #[error("bad IPMI message checksum")]
    BadChecksum,
    /// Bytes are left over after a length-delimited structure.
    #[error("trailing bytes: {0}")]
    TrailingBytes(&'static str),
    /// A field holds a value the format does not allow.
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
}

fn trunc<'a, T>(r: IResult<&'a [u8], T>, what: &'static str) -> Result<(&'a [u8], T), DecodeError> {
    r.map_err(|_: nom::Err<nom::error::Error<&[u8]>>| DecodeError::Truncated(what))
}

/// RMCP message classes (IPMI v2.0 Table 13-1).
pub mod class {
    /// ASF.
    pub const ASF: u8 = 0x06;
    /// IPMI.
    pub const IPMI: u8 = 0x07;
}

/// The RMCP header every datagram starts with.
pub const RMCP_IPMI_HEADER: [u8; 4] = [0x06, 0x00, 0xff, class::IPMI];

/// The ASF IANA enterprise number, 4542 (DMTF DSP0136), big-endian on the wire.
pub const ASF_IANA: u32 = 4542;

/// A decoded datagram, borrowing from it.
#[derive(Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// ASF Presence Ping with its message tag.
    AsfPing {
        /// Message tag, echoed in the pong.
        tag: u8,
    },
    /// An IPMI 1.5 session packet (auth type ≠ 06).
    V15(V15Packet<'a>),
    /// An IPMI 2.0 / RMCP+ packet (auth type 06).
    V20(V20Packet<'a>),
}

/// An IPMI 1.5 packet (IPMI v2.0 Table 13-8, 1.5 format).
#[derive(Debug, PartialEq, Eq)]
pub struct V15Packet<'a> {
    /// Authentication type (00 none, 01 MD2, 02 MD5, 04 password, 05 OEM).
    pub auth_type: u8,
    /// Session sequence number.
    pub seq: u32,
    /// Session ID.
    pub session_id: u32,
    /// The 16-byte AuthCode, if the auth type is not none.
    pub auth_code: Option<&'a [u8]>,
    /// The IPMI message.
    pub message: &'a [u8],
}

/// An IPMI 2.0 / RMCP+ packet (IPMI v2.0 Table 13-8, 2.0 format).
#[derive(Debug, PartialEq, Eq)]
pub struct V20Packet<'a> {
    /// Payload type byte bit 7.
    pub encrypted: bool,
    /// Payload type byte bit 6.
    pub authenticated: bool,
    /// Payload type, bits 5:0.
    pub payload_type: PayloadType,
    /// Session ID (the receiver's).
    pub session_id: u32,
    /// Session sequence number.
    pub seq: u32,
    /// The payload as on the wire (for AES: IV ‖ ciphertext).
    pub payload: &'a [u8],
    /// Everything after the payload: the session trailer when authenticated.
    pub trailer: &'a [u8],
}

/// Decode one datagram.
pub fn decode_datagram(d: &[u8]) -> Result<Datagram<'_>, DecodeError> {
    let (rest, (version, _reserved, _seq, cls)) =
        trunc((byte, byte, byte, byte).parse(d), "RMCP header")?;
    if version != 0x06 {
        return Err(DecodeError::BadRmcpVersion);
    }
    match cls & 0x1f {
        class::ASF if cls & 0x80 == 0 => decode_asf(rest),
        class::IPMI if cls & 0x80 == 0 => decode_ipmi(rest),
        _ => Err(DecodeError::UnsupportedClass(cls)),
    }
}

fn decode_asf(d: &[u8]) -> Result<Datagram<'_>, DecodeError> {
    let (_, (iana, msg_type, tag, _res, _len)) =
        trunc((be_u32, byte, byte, byte, byte).parse(d), "ASF header")?;
    if iana != ASF_IANA || msg_type != 0x80 {
        return Err(DecodeError::UnsupportedAsf);
    }
    Ok(Datagram::AsfPing { tag })
}

fn decode_ipmi(d: &[u8]) -> Result<Datagram<'_>, DecodeError> {
    let (_, auth_type) = trunc(byte(d), "session header")?;
    if auth_type == 0x06 {
        return decode_v20(&d[1..]).map(Datagram::V20);
    }
    let (rest, (_, seq, session_id)) =
        trunc((byte, le_u32, le_u32).parse(d), "IPMI 1.5 session header")?;
    let (rest, auth_code) = if auth_type == 0 {
        (rest, None)
    } else {
        let (r, c) = trunc(take(16usize).parse(rest), "IPMI 1.5 AuthCode")?;
        (r, Some(c))
    };
    let (rest, len) = trunc(byte(rest), "IPMI 1.5 message length")?;
    let (rest, message) = trunc(take(len as usize).parse(rest), "IPMI 1.5 message")?;
    // Some 1.5 stacks add one legacy pad byte (IPMI v2.0 §13.6); tolerate exactly that.
    if rest.len() > 1 {
        return Err(DecodeError::TrailingBytes("IPMI 1.5 packet"));
    }
    Ok(Datagram::V15(V15Packet {
        auth_type,
        seq,
        session_id,
        auth_code,
        message,
    }))
}

fn decode_v20(d: &[u8]) -> Result<V20Packet<'_>, DecodeError> {
    let (rest, ptype) = trunc(byte(d), "payload type")?;
    let payload_type = PayloadType(ptype & 0x3f);
    let rest = if payload_type == PayloadType::OEM_EXPLICIT {
        // OEM IANA (4) + OEM payload ID (2) precede the session ID.
        trunc(take(6usize).parse(rest), "OEM payload header")?.0
    } else {
        rest
    };
    let (rest, (session_id, seq, len)) = trunc(
        (le_u32, le_u32, le_u16).parse(rest),
        "IPMI 2.0 session header",
    )?;
    let (trailer, payload) = trunc(take(len as usize).parse(rest), "IPMI 2.0 payload")?;
    Ok(V20Packet {
        encrypted: ptype & 0x80 != 0,
        authenticated: ptype & 0x40 != 0,
        payload_type,
        session_id,
        seq,
        payload,
        trailer,
    })
}

/// Split an authenticated datagram's trailer: returns the bytes the AuthCode covers (datagram
/// offset 4 through Next Header) and the AuthCode, after checking the integrity pad (0–3 FF
/// bytes making the covered length a multiple of 4), the pad length and Next Header = 07
/// (IPMI v2.0 §13.28.4, Table 13-8).
pub fn split_trailer(
    datagram: &[u8],
    trailer_len: usize,
    icv_len: usize,
) -> Result<(&[u8], &[u8]), DecodeError> {
    if trailer_len < icv_len + 2 || datagram.len() < 4 + trailer_len {
        return Err(DecodeError::Truncated("session trailer"));
    }
    let (covered_end, code) = datagram.split_at(datagram.len() - icv_len);
    let covered = &covered_end[4..];
    let n = covered.len();
    if covered[n - 1] != 0x07 {
        return Err(DecodeError::InvalidField("next header"));
    }
    let pad = covered[n - 2] as usize;
    // The pad sits between the payload and the pad-length byte, inside the trailer.
    if pad > 3 || pad + 2 + icv_len != trailer_len || n % 4 != 0 {
        return Err(DecodeError::InvalidField("integrity pad"));
    }
    if covered[n - 2 - pad..n - 2].iter().any(|&b| b != 0xff) {
        return Err(DecodeError::InvalidField("integrity pad"));
    }
    Ok((covered, code))
}

/// Start an IPMI 2.0 datagram: RMCP header + session header with a zero length, returning the
/// offset of the length field to patch with [`finish_v20`].
pub fn begin_v20(
    out: &mut Vec<u8>,
    payload_type: PayloadType,
    encrypted: bool,
    authenticated: bool,
    session_id: u32,
    seq: u32,
) -> usize {
    out.extend_from_slice(&RMCP_IPMI_HEADER);
    out.push(0x06);
    out.push(
        (payload_type.0 & 0x3f)
            | if encrypted { 0x80 } else { 0 }
            | if authenticated { 0x40 } else { 0 },
    );
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    at
}

/// Patch the payload length once the payload was appended after offset `len_at + 2`.
pub fn finish_v20(out: &mut [u8], len_at: usize) {
    let len = (out.len() - len_at - 2) as u16;
    out[len_at..len_at + 2].copy_from_slice(&len.to_le_bytes());
}

/// Append the integrity pad, pad length and Next Header, then the AuthCode computed by `mac`
/// over datagram offset 4 through Next Header.
pub fn append_trailer<C: AsRef<[u8]>>(out: &mut Vec<u8>, mac: impl FnOnce(&[u8]) -> C) {
    let pad = (4 - (out.len() - 4 + 2) % 4) % 4;
    out.extend(std::iter::repeat_n(0xffu8, pad));
    out.push(pad as u8);
    out.push(0x07);
    let code = mac(&out[4..]);
    out.extend_from_slice(code.as_ref());
}

/// A session-less IPMI 1.5 datagram around `message` (auth type none, seq 0, session 0).
pub fn encode_v15_sessionless(message: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&RMCP_IPMI_HEADER);
    out.push(0x00);
    out.extend_from_slice(&[0; 8]);
    out.push(message.len() as u8);
    out.extend_from_slice(message);
}

/// An ASF Presence Pong answering `tag`: IPMI supported, no ASF security extensions (DSP0136
/// §3.2.4.3; bytes as ipmi_sim sends them).
pub fn encode_asf_pong(tag: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x06, 0x00, 0xff, class::ASF]);
    out.extend_from_slice(&ASF_IANA.to_be_bytes());
    out.extend_from_slice(&[0x40, tag, 0x00, 0x10]);
    out.extend_from_slice(&ASF_IANA.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0x81, 0x00, 0, 0, 0, 0, 0, 0]);
}

/// IPMI checksum: two's complement of the byte sum (IPMI v2.0 §13.8).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, &b| a.wrapping_add(b))
        .wrapping_neg()
}

/// The two checksummed parts every IPMI LAN message has (IPMI v2.0 §13.8, Figure 13-4): the
/// connection header `[addr, netFn/LUN, checksum]` and the body `[addr, seq/LUN, cmd, …,
/// checksum]`, at least `min_body` bytes before its checksum. Returns the header's two bytes
/// and the body without its checksum, after checking both checksums.
fn checked_message<'a>(
    m: &'a [u8],
    min_body: usize,
    what: &'static str,
) -> Result<([u8; 2], &'a [u8]), DecodeError> {
    let (body, (a, nl, c1)) = trunc((byte, byte, byte).parse(m), what)?;
    let (body, chk2) = match body.split_last() {
        Some((&c, b)) if b.len() >= min_body => (b, c),
        _ => return Err(DecodeError::Truncated(what)),
    };
    if checksum(&[a, nl]) != c1 || checksum(body) != chk2 {
        return Err(DecodeError::BadChecksum);
    }
    Ok(([a, nl], body))
}

/// An IPMI request message (IPMI v2.0 §13.8, Figure 13-4), borrowing its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpmiRequest<'a> {
    /// Responder slave address (20h for the BMC).
    pub rs_addr: u8,
    /// Network function (even: request), 6 bits.
    pub netfn: NetFn,
    /// Responder LUN.
    pub rs_lun: u8,
    /// Requester address (81h for remote console software).
    pub rq_addr: u8,
    /// Requester sequence number, 6 bits.
    pub rq_seq: u8,
    /// Requester LUN.
    pub rq_lun: u8,
    /// Command.
    pub cmd: u8,
    /// Request data.
    pub data: &'a [u8],
}

impl<'a> IpmiRequest<'a> {
    /// A request from remote console software (81h) to the BMC (20h), LUN 0.
    pub fn to_bmc(netfn: NetFn, cmd: u8, rq_seq: u8, data: &'a [u8]) -> Self {
        Self {
            rs_addr: 0x20,
            netfn: NetFn(netfn.0 & 0x3f),
            rs_lun: 0,
            rq_addr: 0x81,
            rq_seq: rq_seq & 0x3f,
            rq_lun: 0,
            cmd,
            data,
        }
    }

    /// Decode and check both checksums.
    pub fn decode(m: &'a [u8]) -> Result<Self, DecodeError> {
        const WHAT: &str = "IPMI message";
        let ([rs_addr, nl], body) = checked_message(m, 3, WHAT)?;
        let (data, (rq_addr, sl, cmd)) = trunc((byte, byte, byte).parse(body), WHAT)?;
        Ok(Self {
            rs_addr,
            netfn: NetFn(nl >> 2),
            rs_lun: nl & 3,
            rq_addr,
            rq_seq: sl >> 2,
            rq_lun: sl & 3,
            cmd,
            data,
        })
    }

    /// Encode (for clients and tests).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[self.rs_addr, (self.netfn.0 & 0x3f) << 2 | (self.rs_lun & 3)]);
        out.push(checksum(&out[start..]));
        let body = out.len();
        out.extend_from_slice(&[self.rq_addr, self.rq_seq << 2 | (self.rq_lun & 3), self.cmd]);
        out.extend_from_slice(self.data);
        out.push(checksum(&out[body..]));
    }

    /// The response to this request: addresses swapped, netFn + 1, rqSeq, LUNs and cmd
    /// copied (IPMI v2.0 §13.8).
    pub fn response<'b>(&self, cc: impl Into<CompletionCode>, data: &'b [u8]) -> IpmiResponse<'b> {
        IpmiResponse {
            rq_addr: self.rq_addr,
            netfn: self.netfn.response(),
            rq_lun: self.rq_lun,
            rs_addr: self.rs_addr,
            rq_seq: self.rq_seq,
            rs_lun: self.rs_lun,
            cmd: self.cmd,
            cc: cc.into(),
            data,
        }
    }

    /// Encode the response to this request (see [`IpmiRequest::response`]).
    pub fn encode_response(&self, cc: impl Into<CompletionCode>, data: &[u8], out: &mut Vec<u8>) {
        self.response(cc, data).encode(out);
    }
}

/// An IPMI response message (IPMI v2.0 §13.8, Figure 13-4), borrowing its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpmiResponse<'a> {
    /// Requester address (the response's destination).
    pub rq_addr: u8,
    /// Network function (odd).
    pub netfn: NetFn,
    /// Requester LUN.
    pub rq_lun: u8,
    /// Responder address (the BMC).
    pub rs_addr: u8,
    /// Requester sequence number copied from the request.
    pub rq_seq: u8,
    /// Responder LUN.
    pub rs_lun: u8,
    /// Command.
    pub cmd: u8,
    /// Completion code.
    pub cc: CompletionCode,
    /// Response data after the completion code.
    pub data: &'a [u8],
}

impl<'a> IpmiResponse<'a> {
    /// Decode and check both checksums.
    pub fn decode(m: &'a [u8]) -> Result<Self, DecodeError> {
        const WHAT: &str = "IPMI response";
        let ([rq_addr, nl], body) = checked_message(m, 4, WHAT)?;
        let (data, (rs_addr, sl, cmd, cc)) = trunc(
            (byte, byte, byte, byte.map(CompletionCode)).parse(body),
            WHAT,
        )?;
        Ok(Self {
            rq_addr,
            netfn: NetFn(nl >> 2),
            rq_lun: nl & 3,
            rs_addr,
            rq_seq: sl >> 2,
            rs_lun: sl & 3,
            cmd,
            cc,
            data,
        })
    }

    /// Encode, with both checksums. 6-bit fields are masked to their width.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[self.rq_addr, (self.netfn.0 & 0x3f) << 2 | (self.rq_lun & 3)]);
        out.push(checksum(&out[start..]));
        let body = out.len();
        out.extend_from_slice(&[
            self.rs_addr,
            (self.rq_seq & 0x3f) << 2 | (self.rs_lun & 3),
            self.cmd,
            self.cc.0,
        ]);
        out.extend_from_slice(self.data);
        out.push(checksum(&out[body..]));
    }
}

/// Text a peer supplied (or that passed through a peer's hands), shown so that it cannot
/// forge a log line: control characters (newline, carriage return, ESC of ANSI sequences, DEL,
/// C1), bidirectional overrides and zero-width characters, and the backslash itself are
/// written as Rust escapes (`\n`, `\u{1b}`, `\\`), everything else as is. The JSON log format
/// escapes its strings anyway; the text format does not, hence this.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl core::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use core::fmt::Write;
        for c in self.0.chars() {
            let hidden = matches!(c,
                '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
            if c == '\\' {
                f.write_str("\\\\")?;
            } else if c.is_control() || hidden {
                // `\n`, `\r`, `\t` as such, the rest as `\u{..}` (char::escape_debug).
                write!(f, "{}", c.escape_debug())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escaped_text_cannot_forge_a_line_or_an_ansi_sequence() {
        let shown = super::Escaped("adm\nin\r\x1b[31m\u{202e}\\x\u{7f}\u{9b}é").to_string();
        assert_eq!(shown, "adm\\nin\\r\\u{1b}[31m\\u{202e}\\\\x\\u{7f}\\u{9b}é");
        assert!(!shown.chars().any(|c| c.is_control()));
    }

    use super::*;

    #[test]
    fn decodes_captured_auth_caps_request_and_builds_the_captured_answer() {
        // suite3_power_status.json frames 1 and 2.
        let d = hex::decode("0600ff07000000000000000000092018c88100388e04b5").unwrap();
        let Datagram::V15(p) = decode_datagram(&d).unwrap() else {
            panic!("not 1.5")
        };
        let req = IpmiRequest::decode(p.message).unwrap();
        assert_eq!(
            (req.netfn, req.cmd, req.data),
            (NetFn::APP, 0x38, &[0x8e, 0x04][..])
        );
        let mut msg = Vec::new();
        req.encode_response(0, &[0x01, 0x80, 0x04, 0x02, 0, 0, 0, 0], &mut msg);
        let mut out = Vec::new();
        encode_v15_sessionless(&msg, &mut out);
        assert_eq!(
            hex::encode(out),
            "0600ff0700000000000000000010811c6320003800018004020000000021"
        );
    }

    #[test]
    fn asf_ping_gets_the_pong_ipmi_sim_sends() {
        let ping = hex::decode("0600ff06000011be80c40000").unwrap();
        assert_eq!(
            decode_datagram(&ping).unwrap(),
            Datagram::AsfPing { tag: 0xc4 }
        );
        let mut out = Vec::new();
        encode_asf_pong(0xc4, &mut out);
        assert_eq!(out.len(), 28);
        assert_eq!(&out[..12], hex::decode("0600ff06000011be40c40010").unwrap());
    }

    #[test]
    fn rejects_bad_checksums_and_short_messages() {
        assert_eq!(
            IpmiRequest::decode(&[0x20, 0x18, 0xc8, 0x81, 0x04, 0x3b, 0x04, 0x3d]),
            Err(DecodeError::BadChecksum)
        );
        assert!(IpmiRequest::decode(&[0x20, 0x18]).is_err());
        assert!(decode_datagram(&[0x06, 0, 0xff]).is_err());
        assert!(decode_datagram(&hex::decode("0600ff0706c0").unwrap()).is_err());
    }

    #[test]
    fn trailer_round_trip() {
        let mut out = Vec::new();
        let at = begin_v20(&mut out, PayloadType::IPMI, true, true, 7, 1);
        out.extend_from_slice(&[0xaa; 32]);
        finish_v20(&mut out, at);
        append_trailer(&mut out, |_| vec![0x55; 12]);
        let Datagram::V20(p) = decode_datagram(&out).unwrap() else {
            panic!()
        };
        assert_eq!(p.payload.len(), 32);
        let (covered, code) = split_trailer(&out, p.trailer.len(), 12).unwrap();
        assert_eq!(code, &[0x55; 12]);
        assert_eq!(covered.len() % 4, 0);
        assert!(split_trailer(&out, p.trailer.len(), 16).is_err());
    }
}
