//! A sans-I/O RMCP+ console (client): enough to log in with suite 3 or 17 and run commands.
//!
//! It exists for tests (an in-memory client/BMC pair), for the load generator and for fuzz
//! seeds; the real-client tests use ipmitool, freeipmi and pyghmi.

use crate::codes::{CompletionCode, NetFn, PayloadType, RakpStatus};
use crate::crypto::{self, CipherSuite, SessionKeys};
use crate::endpoint::Entropy;
use crate::rmcp::{
    OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp3, Rakp4, SetupMessage,
};
use crate::seal::{self, OpenError, OutSeq};
use crate::session::Privilege;
use crate::wire::{self, DecodeError, IpmiRequest, IpmiResponse};

/// Why the client gave up. Every reply the client cannot use is one of these; none panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The datagram did not decode as the message expected at this step.
    #[error("malformed message: {0}")]
    Malformed(DecodeError),
    /// The message decoded but does not belong to this exchange (tag, session ID, suite,
    /// answer length), or the client has no session yet.
    #[error("unexpected message")]
    Unexpected,
    /// The BMC answered a set-up step with a non-zero RMCP+ status code.
    #[error("RMCP+ status {0}")]
    Status(RakpStatus),
    /// RAKP 2's AuthCode did not verify: wrong password (as ipmitool reports it).
    #[error("RAKP 2 HMAC is invalid")]
    BadRakp2,
    /// RAKP 4's ICV did not verify.
    #[error("RAKP 4 ICV is invalid")]
    BadRakp4,
    /// An in-session packet failed its integrity check or decryption.
    #[error("in-session packet refused: {0}")]
    Integrity(OpenError),
}

impl From<DecodeError> for ClientError {
    fn from(e: DecodeError) -> Self {
        Self::Malformed(e)
    }
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
    out_seq: OutSeq,
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
            out_seq: OutSeq::default(),
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
        // Channel E (this one) with the IPMI v2.0 extended-data bit, ADMINISTRATOR (§22.13).
        IpmiRequest::to_bmc(NetFn::APP, 0x38, 0, &[0x8e, 0x04]).encode(&mut msg);
        let mut out = Vec::new();
        wire::encode_v15_sessionless(&msg, &mut out);
        out
    }

    /// Open Session Request proposing the client's suite.
    pub fn open_session_request(&mut self) -> Vec<u8> {
        let (a, i, c) = self.suite.algorithms();
        OpenSessionRequest {
            tag: self.tag,
            max_privilege: 0,
            sid_m: self.sid_m,
            auth: Some(a),
            integ: Some(i),
            conf: Some(c),
        }
        .to_datagram()
    }

    /// Handle the Open Session Response; returns RAKP 1.
    pub fn handle_open_session_response(
        &mut self,
        d: &[u8],
        rng: &mut dyn Entropy,
    ) -> Result<Vec<u8>, ClientError> {
        let m = OpenSessionResponse::from_datagram(d)?;
        let Some(g) = m.granted else {
            return Err(ClientError::Status(m.status));
        };
        if m.tag != self.tag
            || m.sid_m != self.sid_m
            || (g.auth, g.integ, g.conf) != self.suite.algorithms()
        {
            return Err(ClientError::Unexpected);
        }
        self.sid_c = g.sid_c;
        rng.fill(&mut self.rm);
        Ok(Rakp1 {
            tag: self.tag,
            sid_c: self.sid_c,
            rm: self.rm,
            role: self.role,
            user: &self.user,
        }
        .to_datagram())
    }

    /// Handle RAKP 2 (verify the BMC knows the password); returns RAKP 3.
    pub fn handle_rakp2(&mut self, d: &[u8]) -> Result<Vec<u8>, ClientError> {
        let m = Rakp2::from_datagram(d)?;
        if !m.status.is_ok() {
            return Err(ClientError::Status(m.status));
        }
        let Some(b) = m.body.filter(|b| b.auth.len() == self.suite.hash_len()) else {
            return Err(ClientError::Unexpected);
        };
        if m.tag != self.tag || m.sid_m != self.sid_m {
            return Err(ClientError::Unexpected);
        }
        self.rc = b.rc;
        self.guid = b.guid;
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
        if !crypto::ct_eq(&expect, b.auth) {
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
        Ok(Rakp3 {
            tag: self.tag,
            status: RakpStatus::OK,
            sid_c: self.sid_c,
            auth: &auth,
        }
        .to_datagram())
    }

    /// Handle RAKP 4: the session is active if the ICV verifies.
    pub fn handle_rakp4(&mut self, d: &[u8]) -> Result<(), ClientError> {
        let m = Rakp4::from_datagram(d)?;
        if !m.status.is_ok() {
            return Err(ClientError::Status(m.status));
        }
        if m.tag != self.tag || m.sid_m != self.sid_m {
            return Err(ClientError::Unexpected);
        }
        let kg = self.kg.as_deref().unwrap_or(&self.password);
        let keys = SessionKeys::derive(self.suite, kg, &self.rm, &self.rc, self.role, &self.user);
        let icv = keys.rakp4_icv(&self.rm, self.sid_c, &self.guid);
        // A short or long ICV fails here too (ct_eq compares lengths first).
        if !crypto::ct_eq(&icv, m.icv) {
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
    ///
    /// # Panics
    ///
    /// Before a successful [`Client::handle_rakp4`] (there are no keys to seal with).
    pub fn request(
        &mut self,
        netfn: impl Into<NetFn>,
        cmd: u8,
        data: &[u8],
        rng: &mut dyn Entropy,
    ) -> Vec<u8> {
        self.rq_seq = (self.rq_seq + 1) & 0x3f;
        let seq = self.rq_seq;
        self.request_with_rq_seq(netfn, cmd, data, seq, rng)
    }

    /// Like [`Client::request`] with an explicit rqSeq (to model a retry).
    ///
    /// # Panics
    ///
    /// Before a successful [`Client::handle_rakp4`].
    pub fn request_with_rq_seq(
        &mut self,
        netfn: impl Into<NetFn>,
        cmd: u8,
        data: &[u8],
        rq_seq: u8,
        rng: &mut dyn Entropy,
    ) -> Vec<u8> {
        let mut msg = Vec::new();
        IpmiRequest::to_bmc(netfn.into(), cmd, rq_seq, data).encode(&mut msg);
        let seq = self.out_seq.advance();
        let mut iv = [0u8; 16];
        rng.fill(&mut iv);
        let keys = self.keys.as_ref().expect("request before login");
        seal::seal(keys, PayloadType::IPMI, self.sid_c, seq, &iv, &msg)
    }

    /// A SOL packet (payload type 01h, IPMI v2.0 §15.9) in the session, sealed as every
    /// in-session packet is; it shares the session's outbound sequence numbers.
    ///
    /// # Panics
    ///
    /// Before a successful [`Client::handle_rakp4`].
    pub fn sol(&mut self, payload: &[u8], rng: &mut dyn Entropy) -> Vec<u8> {
        let seq = self.out_seq.advance();
        let mut iv = [0u8; 16];
        rng.fill(&mut iv);
        let keys = self.keys.as_ref().expect("SOL before login");
        seal::seal(keys, PayloadType::SOL, self.sid_c, seq, &iv, payload)
    }

    /// Open an in-session datagram from the BMC: its payload type and plaintext (an IPMI
    /// response or a SOL packet).
    pub fn open(&self, d: &[u8]) -> Result<(PayloadType, Vec<u8>), ClientError> {
        let keys = self.keys.as_ref().ok_or(ClientError::Unexpected)?;
        let o = seal::open(keys, d).map_err(|e| match e {
            OpenError::Decode(e) => ClientError::Malformed(e),
            e => ClientError::Integrity(e),
        })?;
        if o.session_id != self.sid_m {
            return Err(ClientError::Unexpected);
        }
        Ok((o.payload_type, o.plaintext.to_vec()))
    }

    /// Decode an in-session response: (rqSeq, completion code, data).
    pub fn response(&self, d: &[u8]) -> Result<(u8, CompletionCode, Vec<u8>), ClientError> {
        let keys = self.keys.as_ref().ok_or(ClientError::Unexpected)?;
        let o = seal::open(keys, d).map_err(|e| match e {
            OpenError::Decode(e) => ClientError::Malformed(e),
            e => ClientError::Integrity(e),
        })?;
        if o.session_id != self.sid_m || o.payload_type != PayloadType::IPMI {
            return Err(ClientError::Unexpected);
        }
        let r = IpmiResponse::decode(&o.plaintext)?;
        Ok((r.rq_seq, r.cc, r.data.to_vec()))
    }
}
