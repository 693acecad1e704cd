//! The SOL payload (payload type 01h, IPMI v2.0 §15.9 Table 15-2) and the request and
//! response bodies of the payload commands (IPMI v2.0 ch. 24), each with one parser and one
//! encoder. Parsers never panic; fields a console may not set are rejected, reserved bits are
//! ignored on input and written as zero.

use crate::codes::PayloadType;
use crate::wire::DecodeError;

/// The SOL header: packet sequence, ack/nack sequence, accepted character count,
/// operation/status (Table 15-2).
pub const HEADER_LEN: usize = 4;

/// The most character data one SOL packet carries: the accepted-count field is one byte, so
/// a receiver cannot acknowledge more (FreeIPMI's libipmiconsole notes the same limit).
pub const MAX_DATA: usize = 255;

/// The payload sizes the BMC advertises in the Activate Payload response. FreeIPMI's
/// ipmiconsole accepts 5..=259 only (header plus 1..=255 characters); some BMCs advertise
/// 1024 and break it (see docs/console.md).
pub const MAX_PAYLOAD: u16 = (HEADER_LEN + MAX_DATA) as u16;

/// The next packet sequence number: 1..=15, wrapping to 1; 0 means "ack only, no data"
/// (Table 15-2, byte 1).
pub fn next_seq(seq: u8) -> u8 {
    if seq >= 15 { 1 } else { seq + 1 }
}

/// Bits of byte 4 in a packet from the remote console (Table 15-2, "Operation/Status").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Operation(pub u8);

impl Operation {
    /// The console could not accept the acknowledged packet; resend it later.
    pub const NACK: u8 = 0x40;
    /// Ring/wake-on-ring (ignored: a virtual serial port has no RI line).
    pub const RING_WOR: u8 = 0x20;
    /// Generate a serial break.
    pub const BREAK: u8 = 0x10;
    /// Deassert CTS (flow control: the console asks the BMC to hold output).
    pub const DEASSERT_CTS: u8 = 0x08;
    /// Deassert DCD/DSR.
    pub const DEASSERT_DCD_DSR: u8 = 0x04;
    /// Flush the BMC's inbound buffer (console → system).
    pub const FLUSH_INBOUND: u8 = 0x02;
    /// Flush the BMC's outbound buffer (system → console).
    pub const FLUSH_OUTBOUND: u8 = 0x01;

    /// Is `bit` set?
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// Bits of byte 4 in a packet from the BMC (Table 15-2, "Operation/Status").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status(pub u8);

impl Status {
    /// The BMC could not accept the acknowledged packet.
    pub const NACK: u8 = 0x40;
    /// Character transfer is unavailable (with NACK: the system side is not ready).
    pub const TRANSFER_UNAVAILABLE: u8 = 0x20;
    /// The SOL instance is being deactivated: this is the last packet.
    pub const DEACTIVATING: u8 = 0x10;
    /// Characters from the system were dropped because the buffer overran.
    pub const TRANSMIT_OVERRUN: u8 = 0x08;
    /// A break was detected on the system's serial port.
    pub const BREAK_DETECTED: u8 = 0x04;

    /// Is `bit` set?
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// One SOL packet, either direction; `ctrl` is byte 4 ([`Operation`] from a console,
/// [`Status`] from the BMC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SolPacket<'a> {
    /// Packet sequence number, 1..=15; 0 for an ack-only packet.
    pub seq: u8,
    /// The sequence number this packet acknowledges (or NACKs), 0 for none.
    pub ack_seq: u8,
    /// How many characters of the acknowledged packet were accepted.
    pub accepted: u8,
    /// Byte 4.
    pub ctrl: u8,
    /// Character data (empty for ack-only and control-only packets).
    pub data: &'a [u8],
}

impl<'a> SolPacket<'a> {
    /// Parse a SOL payload (the decrypted bytes after the session header). The upper
    /// nibbles of the two sequence bytes are reserved and ignored (Table 15-2).
    pub fn read(p: &'a [u8]) -> Result<Self, DecodeError> {
        let [seq, ack, accepted, ctrl, ref data @ ..] = *p else {
            return Err(DecodeError::Truncated("SOL packet header"));
        };
        if data.len() > MAX_DATA {
            return Err(DecodeError::InvalidField(
                "SOL packet longer than 255 characters",
            ));
        }
        let seq = seq & 0x0f;
        if seq == 0 && !data.is_empty() {
            // Sequence 0 is "ack-only" (Table 15-2): data in it could never be acknowledged.
            return Err(DecodeError::InvalidField("SOL data in an ack-only packet"));
        }
        Ok(Self {
            seq,
            ack_seq: ack & 0x0f,
            accepted,
            ctrl,
            data,
        })
    }

    /// Append the payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[
            self.seq & 0x0f,
            self.ack_seq & 0x0f,
            self.accepted,
            self.ctrl,
        ]);
        out.extend_from_slice(self.data);
    }

    /// The payload as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.data.len());
        self.encode(&mut v);
        v
    }
}

fn fixed<const N: usize>(p: &[u8], what: &'static str) -> Result<[u8; N], DecodeError> {
    match p.len() {
        n if n < N => Err(DecodeError::Truncated(what)),
        n if n > N => Err(DecodeError::TrailingBytes(what)),
        _ => Ok(p.try_into().expect("length checked")),
    }
}

/// Activate Payload request (06h/48h, IPMI v2.0 Table 24-2): payload type, instance, four
/// bytes of auxiliary data (for SOL, byte 1 carries the flags read below).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivateRequest {
    /// The payload type to activate (01h SOL).
    pub payload_type: PayloadType,
    /// The instance, 1..=15 (a value outside is answered "invalid data field").
    pub instance: u8,
    /// Auxiliary request data.
    pub aux: [u8; 4],
}

impl ActivateRequest {
    /// Parse the request data (after netFn/command).
    pub fn read(p: &[u8]) -> Result<Self, DecodeError> {
        let [ty, instance, a, b, c, d] = fixed::<6>(p, "Activate Payload request")?;
        Ok(Self {
            payload_type: PayloadType(ty & 0x3f),
            instance: instance & 0x0f,
            aux: [a, b, c, d],
        })
    }

    /// Append the request data.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.payload_type.0, self.instance]);
        out.extend_from_slice(&self.aux);
    }

    /// Aux byte 1 b7: the console asks for encrypted SOL packets.
    pub fn encrypt(&self) -> bool {
        self.aux[0] & 0x80 != 0
    }

    /// Aux byte 1 b6: the console asks for authenticated SOL packets.
    pub fn authenticate(&self) -> bool {
        self.aux[0] & 0x40 != 0
    }

    /// Aux byte 1 b5: test mode (loop back, never reaching the system; not offered here).
    pub fn test_mode(&self) -> bool {
        self.aux[0] & 0x20 != 0
    }
}

/// Activate Payload response data (Table 24-2): exactly 12 bytes, which ipmitool insists on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivateResponse {
    /// The largest SOL payload the console may send (header included), LS byte first.
    pub inbound_size: u16,
    /// The largest SOL payload the BMC will send.
    pub outbound_size: u16,
    /// The UDP port SOL packets use: the session's own port (ipmitool refuses another).
    pub port: u16,
    /// The VLAN, or `None` (FFFFh).
    pub vlan: Option<u16>,
}

impl ActivateResponse {
    /// Parse the response data.
    pub fn read(p: &[u8]) -> Result<Self, DecodeError> {
        let b = fixed::<12>(p, "Activate Payload response")?;
        let u16le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let vlan = u16le(10);
        Ok(Self {
            inbound_size: u16le(4),
            outbound_size: u16le(6),
            port: u16le(8),
            vlan: (vlan != 0xffff).then_some(vlan),
        })
    }

    /// Append the response data (auxiliary bytes zero for SOL).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.inbound_size.to_le_bytes());
        out.extend_from_slice(&self.outbound_size.to_le_bytes());
        out.extend_from_slice(&self.port.to_le_bytes());
        out.extend_from_slice(&self.vlan.unwrap_or(0xffff).to_le_bytes());
    }
}

/// Deactivate Payload request (06h/49h, Table 24-3). ipmitool sends six bytes, the spec's
/// four auxiliary bytes included; pyghmi likewise. Two bytes (type, instance) are accepted too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeactivateRequest {
    /// The payload type.
    pub payload_type: PayloadType,
    /// The instance.
    pub instance: u8,
}

impl DeactivateRequest {
    /// Parse the request data.
    pub fn read(p: &[u8]) -> Result<Self, DecodeError> {
        match p {
            [ty, instance] | [ty, instance, _, _, _, _] => Ok(Self {
                payload_type: PayloadType(ty & 0x3f),
                instance: instance & 0x0f,
            }),
            [] | [_] => Err(DecodeError::Truncated("Deactivate Payload request")),
            _ => Err(DecodeError::InvalidField(
                "Deactivate Payload request length",
            )),
        }
    }

    /// Append the request data (with the four zero auxiliary bytes, as ipmitool sends it).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.payload_type.0, self.instance, 0, 0, 0, 0]);
    }
}

/// Get Payload Activation Status response (06h/4Ah, Table 24-6): instance capacity and a
/// bitmap of the active instances (bit 0 = instance 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivationStatus {
    /// How many instances of the payload type can be active at once (1..=15).
    pub capacity: u8,
    /// Active instances, bit n = instance n + 1.
    pub active: u16,
}

impl ActivationStatus {
    /// Append the response data.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.capacity & 0x0f);
        out.extend_from_slice(&self.active.to_le_bytes());
    }

    /// Parse the response data.
    pub fn read(p: &[u8]) -> Result<Self, DecodeError> {
        let [cap, lo, hi] = fixed::<3>(p, "Get Payload Activation Status response")?;
        Ok(Self {
            capacity: cap & 0x0f,
            active: u16::from_le_bytes([lo, hi]),
        })
    }
}

/// Get Payload Instance Info response (06h/4Bh, Table 24-7): the session that owns the
/// instance (0 when inactive) and eight payload-specific bytes (zero for SOL). pyghmi's
/// console uses this as its keepalive and ends when the session ID is not its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceInfo {
    /// The owning session's BMC-side session ID, or 0.
    pub session_id: u32,
}

impl InstanceInfo {
    /// Append the response data.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.session_id.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
    }
}

/// Get Channel Payload Support response (06h/4Eh, Table 24-8) for this BMC: IPMI and SOL
/// standard payloads; Open Session Request/Response and RAKP 1–4 as session set-up payloads;
/// no OEM payloads. FreeIPMI's ipmiconsole will not activate SOL unless bit 1 is set.
pub fn channel_payload_support() -> [u8; 8] {
    [
        0b0000_0011, // b0 IPMI message, b1 SOL
        0,
        0b0011_1111, // b0 Open Session Request … b5 RAKP Message 4
        0,
        0,
        0,
        0,
        0,
    ]
}

/// Get Channel Payload Version response (06h/4Fh, Table 24-9): format version 1.0, BCD with
/// the major version in the upper nibble, for the IPMI and SOL payloads.
pub const PAYLOAD_VERSION_1_0: u8 = 0x10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_run_1_to_15_and_skip_0() {
        let mut s = 0;
        let seen: Vec<u8> = (0..16)
            .map(|_| {
                s = next_seq(s);
                s
            })
            .collect();
        assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 1]);
    }

    #[test]
    fn a_packet_round_trips_and_reserved_nibbles_are_ignored() {
        let p = SolPacket::read(&[0xf3, 0x52, 7, Operation::BREAK, b'h', b'i']).unwrap();
        assert_eq!(
            (p.seq, p.ack_seq, p.accepted, p.data),
            (3, 2, 7, &b"hi"[..])
        );
        assert!(Operation(p.ctrl).has(Operation::BREAK));
        assert_eq!(p.to_vec(), [3, 2, 7, 0x10, b'h', b'i']);
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        assert_eq!(
            SolPacket::read(&[1, 0, 0]),
            Err(DecodeError::Truncated("SOL packet header"))
        );
        assert!(matches!(
            SolPacket::read(&[0, 1, 1, 0, b'x']),
            Err(DecodeError::InvalidField(_))
        ));
        let long = [&[1u8, 0, 0, 0][..], &[b'a'; 256][..]].concat();
        assert!(matches!(
            SolPacket::read(&long),
            Err(DecodeError::InvalidField(_))
        ));
        let max = [&[1u8, 0, 0, 0][..], &[b'a'; 255][..]].concat();
        assert_eq!(SolPacket::read(&max).unwrap().data.len(), 255);
    }

    #[test]
    fn activate_request_as_ipmitool_sends_it() {
        // ipmitool 1.8.19 lib/ipmi_sol.c: 01 01 C6 00 00 00 (encrypt, authenticate,
        // alerts deferred, CTS/DCD/DSR deasserted until the console's first packet).
        let r = ActivateRequest::read(&[1, 1, 0xc6, 0, 0, 0]).unwrap();
        assert_eq!((r.payload_type, r.instance), (PayloadType::SOL, 1));
        assert!(r.encrypt() && r.authenticate() && !r.test_mode());
        assert!(ActivateRequest::read(&[1, 1, 0xc6]).is_err());
        assert!(ActivateRequest::read(&[1, 1, 0xc6, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn activate_response_is_12_bytes_little_endian() {
        let r = ActivateResponse {
            inbound_size: 259,
            outbound_size: 259,
            port: 623,
            vlan: None,
        };
        let mut v = Vec::new();
        r.encode(&mut v);
        assert_eq!(
            v,
            [0, 0, 0, 0, 0x03, 0x01, 0x03, 0x01, 0x6f, 0x02, 0xff, 0xff]
        );
        assert_eq!(ActivateResponse::read(&v).unwrap(), r);
    }

    #[test]
    fn deactivate_takes_the_two_and_six_byte_forms() {
        let six = DeactivateRequest::read(&[1, 1, 0, 0, 0, 0]).unwrap();
        assert_eq!(six, DeactivateRequest::read(&[1, 1]).unwrap());
        assert!(DeactivateRequest::read(&[1]).is_err());
        assert!(DeactivateRequest::read(&[1, 1, 0]).is_err());
    }

    #[test]
    fn status_and_instance_info_encode() {
        let mut v = Vec::new();
        ActivationStatus {
            capacity: 1,
            active: 1,
        }
        .encode(&mut v);
        assert_eq!(v, [1, 1, 0]);
        v.clear();
        InstanceInfo {
            session_id: 0x0403_0201,
        }
        .encode(&mut v);
        assert_eq!(v, [1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}
