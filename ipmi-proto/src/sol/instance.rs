//! The BMC's one SOL instance (instance 1) and the payload commands that act on it (IPMI v2.0
//! ch. 24: Activate/Deactivate Payload, Get Payload Activation Status, Get Payload Instance
//! Info, Get Channel Payload Support/Version; ch. 26: Get/Set SOL Configuration Parameters).
//!
//! The command handlers (in [`crate::commands`]) call the functions here with the request
//! data and the session's ID and privilege; the endpoint moves the packets and acts on what an
//! activation or deactivation asks of it. Nothing here knows about sessions' keys or peers.

use std::collections::VecDeque;

use super::config::SolConfig;
use super::packet::{
    ActivateRequest, ActivateResponse, ActivationStatus, DeactivateRequest, InstanceInfo,
    MAX_PAYLOAD, PAYLOAD_VERSION_1_0, channel_payload_support,
};
use super::stream::{Inbound, SolStats, SolStream, Timing};
use crate::codes::{CompletionCode, PayloadType};
use crate::session::Privilege;
use crate::wire::DecodeError;

/// The one SOL instance a BMC serves (a machine has one serial console).
pub const INSTANCE: u8 = 1;

/// Console input held for the runtime (the bytes not yet written to the guest): what
/// [`SolStream::receive`] is told the system side has room for. More is NACKed and the console
/// sends it again (§15.11), so a slow guest slows the operator down instead of losing input.
pub const INPUT_CAPACITY: usize = 4096;

/// Guest output buffered in the stream before [`SolStream::room`] says 0.
pub const OUTPUT_CAPACITY: usize = 8192;

/// Activate Payload: "payload already active on another session" (Table 24-2, 80h).
pub const ALREADY_ACTIVE: CompletionCode = CompletionCode(0x80);
/// Activate/Deactivate Payload: "payload type is disabled" (Table 24-2, 81h).
pub const DISABLED: CompletionCode = CompletionCode(0x81);
/// Deactivate Payload: "payload already deactivated" (Table 24-3, 80h).
pub const ALREADY_DEACTIVATED: CompletionCode = CompletionCode(0x80);
/// Activate Payload: "cannot activate payload without encryption" (Table 24-2, 84h).
pub const NEEDS_ENCRYPTION: CompletionCode = CompletionCode(0x84);
/// Get Channel Payload Version: "payload type not available on given channel" (Table 24-9).
const NOT_AVAILABLE: CompletionCode = CompletionCode(0x80);

/// The channel this BMC reports (as `commands`' channel commands do).
const CHANNEL: u8 = 1;

/// What the operator sends to the guest, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SolInput {
    /// Characters for the guest's serial input.
    Data(Vec<u8>),
    /// A serial break (Operation b4).
    Break,
}

/// Counters of SOL on one BMC, over every activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SolTotals {
    /// Activations granted.
    pub activations: u64,
    /// Characters sent to consoles (first sends).
    pub bytes_to_console: u64,
    /// Characters taken from consoles for the guest.
    pub bytes_from_console: u64,
    /// SOL packets sent again after their retry interval.
    pub retransmits: u64,
}

impl SolTotals {
    fn add(&mut self, s: &SolStats) {
        self.bytes_to_console += s.bytes_out;
        self.bytes_from_console += s.bytes_in;
        self.retransmits += s.retransmits;
    }
}

/// The active instance: the session that owns it and its stream.
#[derive(Debug)]
pub(crate) struct Active {
    /// The owning session (the BMC-side session ID, the endpoint's key).
    pub(crate) sid: u32,
    pub(crate) stream: SolStream,
}

/// SOL state of one BMC.
#[derive(Debug)]
pub(crate) struct SolBmc {
    pub(crate) config: SolConfig,
    /// Whether a console can be opened at all (`--console off` makes it false): parameter 1
    /// reads disabled and Activate Payload answers 81h.
    pub(crate) available: bool,
    /// Boxed: an idle BMC (most of a large fleet) pays a pointer, not a stream.
    pub(crate) active: Option<Box<Active>>,
    input: VecDeque<SolInput>,
    input_len: usize,
    /// Counters of the instances that ended.
    ended: SolTotals,
}

impl Default for SolBmc {
    fn default() -> Self {
        Self {
            config: SolConfig::new(CHANNEL, 623),
            available: true,
            active: None,
            input: VecDeque::new(),
            input_len: 0,
            ended: SolTotals::default(),
        }
    }
}

/// A payload command's answer: completion code and data, and whether SOL was activated or
/// must be deactivated once the answer is on its way.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) cc: CompletionCode,
    pub(crate) data: Vec<u8>,
    pub(crate) change: Change,
}

/// What an answered payload command changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    None,
    Activated,
    /// Deactivate the instance (the endpoint does it: it may owe the owner a last packet).
    Deactivate,
}

fn answer(cc: CompletionCode, data: Vec<u8>) -> Answer {
    Answer {
        cc,
        data,
        change: Change::None,
    }
}

fn refuse(cc: CompletionCode) -> Answer {
    answer(cc, Vec::new())
}

fn decode_cc(e: &DecodeError) -> CompletionCode {
    match e {
        DecodeError::Truncated(_) | DecodeError::TrailingBytes(_) => CompletionCode::BAD_LENGTH,
        _ => CompletionCode::INVALID_FIELD,
    }
}

fn channel_ok(chan: u8) -> bool {
    matches!(chan & 0x0f, 0x0e | CHANNEL)
}

impl SolBmc {
    /// Parameter 1 as consoles see it: enabled, and a console can be opened.
    pub(crate) fn enabled(&self) -> bool {
        self.config.enabled && self.available
    }

    /// Activate Payload (06h/48h, Table 24-2) from session `sid` at `privilege`.
    pub(crate) fn activate(&mut self, data: &[u8], sid: u32, privilege: Privilege) -> Answer {
        let r = match ActivateRequest::read(data) {
            Ok(r) => r,
            Err(e) => return refuse(decode_cc(&e)),
        };
        if r.payload_type != PayloadType::SOL || r.instance != INSTANCE || r.test_mode() {
            // One instance of one payload type; no loop-back test mode.
            return refuse(CompletionCode::INVALID_FIELD);
        }
        if !self.enabled() {
            return refuse(DISABLED);
        }
        // Parameter 2 b3:0: the least privilege that may activate SOL (Appendix G lists
        // Activate Payload at USER "subject to the payload's own setting").
        if privilege < self.config.min_privilege {
            return refuse(CompletionCode::INSUFFICIENT_PRIVILEGE);
        }
        // Parameter 2 forces encryption and authentication (no session here runs without
        // them): a console asking for clear or unsigned SOL cannot have it.
        if !r.encrypt() || !r.authenticate() {
            return refuse(NEEDS_ENCRYPTION);
        }
        if self.active.is_some() {
            return refuse(ALREADY_ACTIVE);
        }
        let timing = Timing::from_config(&self.config, OUTPUT_CAPACITY);
        self.active = Some(Box::new(Active {
            sid,
            stream: SolStream::new(timing),
        }));
        self.clear_input();
        self.ended.activations += 1;
        let mut out = Vec::with_capacity(12);
        ActivateResponse {
            inbound_size: MAX_PAYLOAD,
            outbound_size: MAX_PAYLOAD,
            port: self.config.port,
            vlan: None,
        }
        .encode(&mut out);
        Answer {
            cc: CompletionCode::OK,
            data: out,
            change: Change::Activated,
        }
    }

    /// Deactivate Payload (06h/49h, Table 24-3): any session at the activation privilege may
    /// end it (`ipmitool sol deactivate` and Ironic run it from a session of their own).
    pub(crate) fn deactivate(&mut self, data: &[u8], privilege: Privilege) -> Answer {
        let r = match DeactivateRequest::read(data) {
            Ok(r) => r,
            Err(e) => return refuse(decode_cc(&e)),
        };
        if r.payload_type != PayloadType::SOL || r.instance != INSTANCE {
            return refuse(CompletionCode::INVALID_FIELD);
        }
        if privilege < self.config.min_privilege {
            return refuse(CompletionCode::INSUFFICIENT_PRIVILEGE);
        }
        if self.active.is_none() {
            return refuse(ALREADY_DEACTIVATED);
        }
        Answer {
            cc: CompletionCode::OK,
            data: Vec::new(),
            change: Change::Deactivate,
        }
    }

    /// Get Payload Activation Status (06h/4Ah, Table 24-6).
    pub(crate) fn activation_status(&self, data: &[u8]) -> Answer {
        let [ty] = *data else {
            return refuse(CompletionCode::BAD_LENGTH);
        };
        if PayloadType(ty & 0x3f) != PayloadType::SOL {
            return refuse(CompletionCode::INVALID_FIELD);
        }
        let mut out = Vec::with_capacity(3);
        ActivationStatus {
            capacity: 1,
            active: u16::from(self.active.is_some()),
        }
        .encode(&mut out);
        answer(CompletionCode::OK, out)
    }

    /// Get Payload Instance Info (06h/4Bh, Table 24-7): the owner's session ID, 0 when the
    /// instance is not active.
    pub(crate) fn instance_info(&self, data: &[u8]) -> Answer {
        let [ty, instance] = *data else {
            return refuse(CompletionCode::BAD_LENGTH);
        };
        if PayloadType(ty & 0x3f) != PayloadType::SOL || instance & 0x0f != INSTANCE {
            return refuse(CompletionCode::INVALID_FIELD);
        }
        let mut out = Vec::with_capacity(12);
        InstanceInfo {
            session_id: self.active.as_ref().map_or(0, |a| a.sid),
        }
        .encode(&mut out);
        answer(CompletionCode::OK, out)
    }

    /// Get Channel Payload Support (06h/4Eh, Table 24-8).
    pub(crate) fn payload_support(data: &[u8]) -> Answer {
        let [chan] = *data else {
            return refuse(CompletionCode::BAD_LENGTH);
        };
        if !channel_ok(chan) {
            return refuse(CompletionCode::INVALID_FIELD);
        }
        answer(CompletionCode::OK, channel_payload_support().to_vec())
    }

    /// Get Channel Payload Version (06h/4Fh, Table 24-9): 1.0 for IPMI and SOL (FreeIPMI's
    /// ipmiconsole uses it as its keepalive).
    pub(crate) fn payload_version(data: &[u8]) -> Answer {
        let [chan, ty] = *data else {
            return refuse(CompletionCode::BAD_LENGTH);
        };
        if !channel_ok(chan) {
            return refuse(CompletionCode::INVALID_FIELD);
        }
        match PayloadType(ty & 0x3f) {
            PayloadType::IPMI | PayloadType::SOL => {
                answer(CompletionCode::OK, vec![PAYLOAD_VERSION_1_0])
            }
            _ => refuse(NOT_AVAILABLE),
        }
    }

    /// Get SOL Configuration Parameters (0Ch/22h): parameter 1 reads disabled when no console
    /// can be opened.
    pub(crate) fn get_config(&self, data: &[u8]) -> Answer {
        match self.config.get(data) {
            Ok(mut out) => {
                if data.get(1) == Some(&1) && out.len() == 2 {
                    out[1] = u8::from(self.enabled());
                }
                answer(CompletionCode::OK, out)
            }
            Err(cc) => refuse(cc),
        }
    }

    /// Set SOL Configuration Parameters (0Ch/21h); the new timing applies from the next
    /// activation. Turning parameter 1 off ends an active instance (§26.2: "SOL Enable").
    pub(crate) fn set_config(&mut self, data: &[u8]) -> Answer {
        match self.config.set(data) {
            Ok(()) => Answer {
                cc: CompletionCode::OK,
                data: Vec::new(),
                change: if !self.config.enabled && self.active.is_some() {
                    Change::Deactivate
                } else {
                    Change::None
                },
            },
            Err(cc) => refuse(cc),
        }
    }

    /// End the active instance: its counters join the totals and held input is discarded.
    /// Returns the owning session and the stream.
    pub(crate) fn end(&mut self) -> Option<Box<Active>> {
        let a = self.active.take()?;
        self.ended.add(&a.stream.stats());
        self.clear_input();
        Some(a)
    }

    /// Counters of every instance, the active one included.
    pub(crate) fn totals(&self) -> SolTotals {
        let mut t = self.ended;
        if let Some(a) = &self.active {
            t.add(&a.stream.stats());
        }
        t
    }

    /// Room for console input now.
    pub(crate) fn input_room(&self) -> usize {
        if self.active.is_none() {
            return 0;
        }
        INPUT_CAPACITY.saturating_sub(self.input_len)
    }

    /// Keep what a received packet asks of the system side, in order.
    pub(crate) fn take_inbound(&mut self, inbound: &Inbound<'_>) {
        if inbound.flush_inbound {
            self.clear_input();
        }
        if !inbound.data.is_empty() {
            self.input_len += inbound.data.len();
            match self.input.back_mut() {
                // Small keystroke packets join one chunk for the backend.
                Some(SolInput::Data(d)) if d.len() < 1024 => d.extend_from_slice(inbound.data),
                _ => self.input.push_back(SolInput::Data(inbound.data.to_vec())),
            }
        }
        if inbound.brk {
            self.input.push_back(SolInput::Break);
        }
    }

    /// The next console input for the guest.
    pub(crate) fn next_input(&mut self) -> Option<SolInput> {
        let i = self.input.pop_front()?;
        if let SolInput::Data(d) = &i {
            self.input_len -= d.len();
        }
        Some(i)
    }

    /// Whether console input is waiting.
    pub(crate) fn has_input(&self) -> bool {
        !self.input.is_empty()
    }

    fn clear_input(&mut self) {
        self.input.clear();
        self.input_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPMITOOL: [u8; 6] = [1, 1, 0xc6, 0, 0, 0];

    #[test]
    fn one_instance_activates_once_with_the_port_and_sizes_clients_accept() {
        let mut s = SolBmc::default();
        s.config.port = 16001;
        let a = s.activate(&IPMITOOL, 7, Privilege::Administrator);
        assert_eq!((a.cc, a.change), (CompletionCode::OK, Change::Activated));
        let r = ActivateResponse::read(&a.data).unwrap();
        assert_eq!((r.inbound_size, r.outbound_size, r.port), (259, 259, 16001));
        assert_eq!(
            s.activate(&IPMITOOL, 8, Privilege::Administrator).cc,
            ALREADY_ACTIVE
        );
        assert_eq!(s.activation_status(&[1]).data, [1, 1, 0]);
        assert_eq!(s.instance_info(&[1, 1]).data[..4], 7u32.to_le_bytes());
        let d = s.deactivate(&[1, 1, 0, 0, 0, 0], Privilege::User);
        assert_eq!(d.change, Change::Deactivate);
        s.end();
        assert_eq!(
            s.deactivate(&[1, 1, 0, 0, 0, 0], Privilege::User).cc,
            ALREADY_DEACTIVATED
        );
        assert_eq!(s.activation_status(&[1]).data, [1, 0, 0]);
    }

    #[test]
    fn refusals_follow_the_parameters() {
        let mut s = SolBmc::default();
        // No encryption asked for: 84h.
        assert_eq!(
            s.activate(&[1, 1, 0x40, 0, 0, 0], 1, Privilege::User).cc,
            NEEDS_ENCRYPTION
        );
        assert_eq!(
            s.activate(&[1, 2, 0xc0, 0, 0, 0], 1, Privilege::User).cc,
            CompletionCode::INVALID_FIELD
        );
        assert_eq!(
            s.activate(&[1, 1, 0xc0], 1, Privilege::User).cc,
            CompletionCode::BAD_LENGTH
        );
        // Parameter 2 at OPERATOR: a USER session may not activate.
        s.config.set(&[0x0e, 2, 0xc3]).unwrap();
        assert_eq!(
            s.activate(&IPMITOOL, 1, Privilege::User).cc,
            CompletionCode::INSUFFICIENT_PRIVILEGE
        );
        s.available = false;
        assert_eq!(s.activate(&IPMITOOL, 1, Privilege::Operator).cc, DISABLED);
        assert_eq!(s.get_config(&[0x0e, 1, 0, 0]).data, [0x11, 0]);
    }

    #[test]
    fn input_is_bounded_and_kept_in_order_with_breaks() {
        let mut s = SolBmc::default();
        assert_eq!(s.input_room(), 0, "no room while inactive");
        s.activate(&IPMITOOL, 1, Privilege::User);
        s.take_inbound(&Inbound {
            data: b"ab",
            brk: true,
            flush_inbound: false,
        });
        s.take_inbound(&Inbound {
            data: b"c",
            brk: false,
            flush_inbound: false,
        });
        assert_eq!(s.input_room(), INPUT_CAPACITY - 3);
        assert_eq!(s.next_input(), Some(SolInput::Data(b"ab".to_vec())));
        assert_eq!(s.next_input(), Some(SolInput::Break));
        assert_eq!(s.next_input(), Some(SolInput::Data(b"c".to_vec())));
        assert_eq!(s.next_input(), None);
        assert_eq!(s.input_room(), INPUT_CAPACITY);
    }

    #[test]
    fn payload_discovery_answers_as_freeipmi_wants() {
        assert_eq!(SolBmc::payload_support(&[0x0e]).data[0], 0b11);
        assert_eq!(SolBmc::payload_version(&[0x0e, 1]).data, [0x10]);
        assert_eq!(SolBmc::payload_version(&[0x0e, 2]).cc, NOT_AVAILABLE);
        assert_eq!(SolBmc::payload_support(&[]).cc, CompletionCode::BAD_LENGTH);
    }
}
