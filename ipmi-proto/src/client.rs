//! A sans-I/O RMCP+ console (client): enough to log in with suite 3 or 17 and run commands.
//!
//! It exists for tests (an in-memory client/BMC pair), for the load generator and for fuzz
//! seeds; the real-client tests use ipmitool, freeipmi and pyghmi.

use crate::crypto::{self, CipherSuite, SessionKeys};
use crate::endpoint::Entropy;
use crate::session::Privilege;
use crate::wire::{self, Datagram, IpmiRequest, IpmiResponse, payload};

/// Why the client gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The datagram did not decode or was not the expected message.
    #[error("unexpected or malformed message")]
    Unexpected,
    /// The BMC answered a set-up step with a non-zero RMCP+ status code.
    #[error("RMCP+ status {0:#04x}")]
    Status(u8),
    /// RAKP 2's AuthCode did not verify: wrong password (as ipmitool reports it).
    #[error("RAKP 2 HMAC is invalid")]
    BadRakp2,
    /// RAKP 4's ICV did not verify.
    #[error("RAKP 4 ICV is invalid")]
    BadRakp4,
    /// An in-session packet failed its integrity check or decryption.
    #[error("integrity or decryption failure")]
    Integrity,
}

/// A console session with one BMC.
pub struct Client {
    suite: CipherSuite,
    user: Vec<u8>,
    password: Vec<u8>,
    kg: Option<Vec<u8>>,
    role: u8,
    sid_m: u32,
    sid_c: u32,
    rm: [u8; 16],
    rc: [u8; 16],
    guid: [u8; 16],
    keys: Option<SessionKeys>,
    out_seq: u32,
    rq_seq: u8,
    tag: u8,
}

impl core::fmt::Debug for Client {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client")
            .field("suite", &self.suite)
            .field("sid_c", &self.sid_c)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A console for `user`/`password` asking for `privilege` (name-only lookup, as ipmitool).
    pub fn new(suite: CipherSuite, user: &str, password: &[u8], privilege: Privilege) -> Self {
        Self {
            suite,
            user: user.as_bytes().to_vec(),
            password: password.to_vec(),
            kg: None,
            role: 0x10 | privilege as u8,
            sid_m: 0xa0a2_a3a4,
            sid_c: 0,
            rm: [0; 16],
            rc: [0; 16],
            guid: [0; 16],
            keys: None,
            out_seq: 0,
            rq_seq: 0,
            tag: 0,
        }
    }

    /// Use a BMC key Kg for SIK.
    pub fn with_kg(mut self, kg: &[u8]) -> Self {
        self.kg = Some(kg.to_vec());
        self
    }

    /// Use this console session ID.
    pub fn with_console_id(mut self, sid_m: u32) -> Self {
        self.sid_m = sid_m;
        self
    }

    /// The BMC session ID (after Open Session).
    pub fn bmc_session_id(&self) -> u32 {
        self.sid_c
    }

    /// Session-less Get Channel Authentication Capabilities in IPMI 1.5 format.
    pub fn auth_caps_request(&self) -> Vec<u8> {
        let mut msg = Vec::new();
        request(0x06, 0x38, 0, &[0x8e, 0x04]).encode(&mut msg);
        let mut out = Vec::new();
        wire::encode_v15_sessionless(&msg, &mut out);
        out
    }

    /// Open Session Request proposing the client's suite.
    pub fn open_session_request(&mut self) -> Vec<u8> {
        let (a, i, c) = self.suite.algorithms();
        let mut p = vec![self.tag, 0, 0, 0];
        p.extend_from_slice(&self.sid_m.to_le_bytes());
        for (ty, alg) in [(0u8, a), (1, i), (2, c)] {
            p.extend_from_slice(&[ty, 0, 0, 8, alg, 0, 0, 0]);
        }
        setup_packet(payload::OPEN_SESSION_REQUEST, &p)
    }

    /// Handle the Open Session Response; returns RAKP 1.
    pub fn handle_open_session_response(
        &mut self,
        d: &[u8],
        rng: &mut dyn Entropy,
    ) -> Result<Vec<u8>, ClientError> {
        let p = setup_payload(d, payload::OPEN_SESSION_RESPONSE)?;
        if p.len() < 2 {
            return Err(ClientError::Unexpected);
        }
        if p[1] != 0 {
            return Err(ClientError::Status(p[1]));
        }
        if p.len() != 36 || p[0] != self.tag {
            return Err(ClientError::Unexpected);
        }
        self.sid_c = u32::from_le_bytes(p[8..12].try_into().unwrap());
        rng.fill(&mut self.rm);
        let mut r = vec![self.tag, 0, 0, 0];
        r.extend_from_slice(&self.sid_c.to_le_bytes());
        r.extend_from_slice(&self.rm);
        r.extend_from_slice(&[self.role, 0, 0, self.user.len() as u8]);
        r.extend_from_slice(&self.user);
        Ok(setup_packet(payload::RAKP1, &r))
    }

    /// Handle RAKP 2 (verify the BMC knows the password); returns RAKP 3.
    pub fn handle_rakp2(&mut self, d: &[u8]) -> Result<Vec<u8>, ClientError> {
        let p = setup_payload(d, payload::RAKP2)?;
        if p.len() < 2 {
            return Err(ClientError::Unexpected);
        }
        if p[1] != 0 {
            return Err(ClientError::Status(p[1]));
        }
        if p.len() != 40 + self.suite.hash_len() {
            return Err(ClientError::Unexpected);
        }
        self.rc.copy_from_slice(&p[8..24]);
        self.guid.copy_from_slice(&p[24..40]);
        let expect = crypto::rakp2_auth(
            self.suite,
            &self.password,
            self.sid_m,
            self.sid_c,
            &self.rm,
            &self.rc,
            &self.guid,
            self.role,
            &self.user,
        );
        if !crypto::ct_eq(&expect, &p[40..]) {
            return Err(ClientError::BadRakp2);
        }
        let auth = crypto::rakp3_auth(
            self.suite,
            &self.password,
            &self.rc,
            self.sid_m,
            self.role,
            &self.user,
        );
        let mut r = vec![self.tag, 0, 0, 0];
        r.extend_from_slice(&self.sid_c.to_le_bytes());
        r.extend_from_slice(&auth);
        Ok(setup_packet(payload::RAKP3, &r))
    }

    /// Handle RAKP 4: the session is active if the ICV verifies.
    pub fn handle_rakp4(&mut self, d: &[u8]) -> Result<(), ClientError> {
        let p = setup_payload(d, payload::RAKP4)?;
        if p.len() < 2 {
            return Err(ClientError::Unexpected);
        }
        if p[1] != 0 {
            return Err(ClientError::Status(p[1]));
        }
        let kg = self.kg.as_deref().unwrap_or(&self.password);
        let keys = SessionKeys::derive(self.suite, kg, &self.rm, &self.rc, self.role, &self.user);
        let icv = keys.rakp4_icv(&self.rm, self.sid_c, &self.guid);
        if !crypto::ct_eq(&icv, &p[8..]) {
            return Err(ClientError::BadRakp4);
        }
        self.keys = Some(keys);
        Ok(())
    }

    /// The session keys, once logged in (for tests that look for them elsewhere, such as in a
    /// BMC's memory after the session ended).
    pub fn session_keys(&self) -> Option<&SessionKeys> {
        self.keys.as_ref()
    }

    /// An in-session request (encrypted and authenticated). Returns the datagram and the rqSeq.
    pub fn request(&mut self, netfn: u8, cmd: u8, data: &[u8], rng: &mut dyn Entropy) -> Vec<u8> {
        self.rq_seq = (self.rq_seq + 1) & 0x3f;
        let seq = self.rq_seq;
        self.request_with_rq_seq(netfn, cmd, data, seq, rng)
    }

    /// Like [`Client::request`] with an explicit rqSeq (to model a retry).
    pub fn request_with_rq_seq(
        &mut self,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        rq_seq: u8,
        rng: &mut dyn Entropy,
    ) -> Vec<u8> {
        let mut msg = Vec::new();
        request(netfn, cmd, rq_seq, data).encode(&mut msg);
        self.out_seq = self.out_seq.wrapping_add(1).max(1);
        let mut iv = [0u8; 16];
        rng.fill(&mut iv);
        let keys = self.keys.as_ref().expect("request before login");
        let mut out = Vec::new();
        let at = wire::begin_v20(
            &mut out,
            payload::IPMI,
            true,
            true,
            self.sid_c,
            self.out_seq,
        );
        keys.encrypt(&iv, &msg, &mut out);
        wire::finish_v20(&mut out, at);
        wire::append_trailer(&mut out, |c| keys.integrity(c));
        out
    }

    /// Decode an in-session response: (rqSeq, completion code, data).
    pub fn response(&self, d: &[u8]) -> Result<(u8, u8, Vec<u8>), ClientError> {
        let keys = self.keys.as_ref().ok_or(ClientError::Unexpected)?;
        let Ok(Datagram::V20(p)) = wire::decode_datagram(d) else {
            return Err(ClientError::Unexpected);
        };
        if p.session_id != self.sid_m || !p.encrypted || !p.authenticated {
            return Err(ClientError::Unexpected);
        }
        let (covered, code) = wire::split_trailer(d, p.trailer.len(), self.suite.icv_len())
            .map_err(|_| ClientError::Integrity)?;
        if !keys.verify_integrity(covered, code) {
            return Err(ClientError::Integrity);
        }
        let plain = keys.decrypt(p.payload).ok_or(ClientError::Integrity)?;
        let r = IpmiResponse::decode(&plain).map_err(|_| ClientError::Unexpected)?;
        Ok((r.rq_seq, r.cc, r.data.to_vec()))
    }
}

fn request(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8]) -> IpmiRequest<'_> {
    IpmiRequest {
        rs_addr: 0x20,
        netfn,
        rs_lun: 0,
        rq_addr: 0x81,
        rq_seq,
        rq_lun: 0,
        cmd,
        data,
    }
}

fn setup_packet(ty: u8, p: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let at = wire::begin_v20(&mut out, ty, false, false, 0, 0);
    out.extend_from_slice(p);
    wire::finish_v20(&mut out, at);
    out
}

fn setup_payload(d: &[u8], ty: u8) -> Result<&[u8], ClientError> {
    match wire::decode_datagram(d) {
        Ok(Datagram::V20(p)) if p.payload_type == ty => Ok(p.payload),
        _ => Err(ClientError::Unexpected),
    }
}
