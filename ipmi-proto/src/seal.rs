//! One seal/open path for in-session RMCP+ packets (IPMI v2.0 §13.28–13.29), used by the
//! endpoint, the client and the fuzz harness: AES-CBC-128 with a fresh IV and
//! the confidentiality pad, the integrity pad, pad length and Next Header, and the truncated
//! HMAC AuthCode over datagram offset 4 through Next Header.
//!
//! Opening is split where the BMC's receive pipeline needs to act between the steps: look the
//! session up by the session ID of the decoded header, [`verify`] the AuthCode (constant
//! time), check the sequence window, then [`decrypt_into`]. [`open`] does all of it for a
//! console that has one session.

use zeroize::Zeroizing;

use crate::codes::PayloadType;
use crate::crypto::SessionKeys;
use crate::wire::{self, Datagram, DecodeError, V20Packet};

/// Why an in-session packet was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The datagram does not decode.
    #[error("malformed datagram: {0}")]
    Decode(#[from] DecodeError),
    /// Not an IPMI 2.0 / RMCP+ packet.
    #[error("not an RMCP+ packet")]
    NotRmcpPlus,
    /// Not both encrypted and authenticated: every session ovbmc completes is (suites 3, 17).
    #[error("packet is not encrypted and authenticated")]
    Unprotected,
    /// The trailer is malformed (pad, pad length, Next Header, AuthCode length).
    #[error("bad session trailer: {0}")]
    Trailer(DecodeError),
    /// The AuthCode does not verify.
    #[error("AuthCode does not verify")]
    BadAuthCode,
    /// The payload does not decrypt, or its confidentiality pad is wrong.
    #[error("payload does not decrypt")]
    Decrypt,
}

/// The outbound session sequence number: starts at 1 and skips 0 on wrapping (0 is never
/// valid inside a session, IPMI v2.0 §6.12).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutSeq(u32);

impl OutSeq {
    /// The next number to send.
    pub fn advance(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(1).max(1);
        self.0
    }

    /// The last number sent (0 before the first).
    pub fn last(&self) -> u32 {
        self.0
    }
}

/// Seal `plaintext` as an encrypted, authenticated packet of payload type `ty` for the peer's
/// `session_id`, with sequence number `seq` and AES IV `iv` (which must be fresh random bytes
/// per packet, §13.29).
pub fn seal(
    keys: &SessionKeys,
    ty: PayloadType,
    session_id: u32,
    seq: u32,
    iv: &[u8; 16],
    plaintext: &[u8],
) -> Vec<u8> {
    // header 16, IV 16, plaintext + confidentiality pad ≤ +16, trailer ≤ 3 + 2 + 16.
    let mut out = Vec::with_capacity(16 + 16 + plaintext.len() + 16 + 21);
    let at = wire::begin_v20(&mut out, ty, true, true, session_id, seq);
    keys.encrypt(iv, plaintext, &mut out);
    wire::finish_v20(&mut out, at);
    wire::append_trailer(&mut out, |c| keys.integrity(c));
    out
}

/// Check that `p` (decoded from `datagram`) is encrypted and authenticated and that its
/// trailer and AuthCode verify under `keys` (IPMI v2.0 §13.28.4). The AuthCode comparison is
/// constant-time.
pub fn verify(keys: &SessionKeys, datagram: &[u8], p: &V20Packet<'_>) -> Result<(), OpenError> {
    if !p.encrypted || !p.authenticated {
        return Err(OpenError::Unprotected);
    }
    let (covered, code) = wire::split_trailer(datagram, p.trailer.len(), keys.suite().icv_len())
        .map_err(OpenError::Trailer)?;
    if keys.verify_integrity(covered, code) {
        Ok(())
    } else {
        Err(OpenError::BadAuthCode)
    }
}

/// Decrypt a verified packet's payload into `buf` (at least the payload's length): returns
/// the plaintext length.
pub fn decrypt_into(
    keys: &SessionKeys,
    p: &V20Packet<'_>,
    buf: &mut [u8],
) -> Result<usize, OpenError> {
    keys.decrypt_into(p.payload, buf).ok_or(OpenError::Decrypt)
}

/// An opened in-session packet.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// Payload type.
    pub payload_type: PayloadType,
    /// The receiver's session ID from the header.
    pub session_id: u32,
    /// Session sequence number (not checked here: the caller keeps the window).
    pub seq: u32,
    /// The decrypted payload (wiped on drop).
    pub plaintext: Zeroizing<Vec<u8>>,
}

/// Decode, [`verify`] and decrypt one in-session datagram.
pub fn open(keys: &SessionKeys, datagram: &[u8]) -> Result<Opened, OpenError> {
    let Datagram::V20(p) = wire::decode_datagram(datagram)? else {
        return Err(OpenError::NotRmcpPlus);
    };
    verify(keys, datagram, &p)?;
    let mut plaintext = Zeroizing::new(vec![0u8; p.payload.len()]);
    let n = decrypt_into(keys, &p, &mut plaintext)?;
    plaintext.truncate(n);
    Ok(Opened {
        payload_type: p.payload_type,
        session_id: p.session_id,
        seq: p.seq,
        plaintext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::CipherSuite;

    fn keys(suite: CipherSuite) -> SessionKeys {
        SessionKeys::derive(suite, b"password", &[1; 16], &[2; 16], 0x14, b"admin")
    }

    #[test]
    fn open_undoes_seal_and_each_layer_refuses_tampering() {
        for suite in CipherSuite::ALL {
            let k = keys(suite);
            let d = seal(&k, PayloadType::IPMI, 0x1234, 7, &[9; 16], b"hello");
            let o = open(&k, &d).unwrap();
            assert_eq!(
                (o.payload_type, o.session_id, o.seq, &o.plaintext[..]),
                (PayloadType::IPMI, 0x1234, 7, &b"hello"[..])
            );
            let mut bad = d.clone();
            bad[20] ^= 1;
            assert_eq!(open(&k, &bad), Err(OpenError::BadAuthCode));
            let other = SessionKeys::derive(suite, b"other", &[1; 16], &[2; 16], 0x14, b"admin");
            assert_eq!(open(&other, &d), Err(OpenError::BadAuthCode));
            let mut plain = d.clone();
            plain[5] &= 0x3f;
            assert_eq!(open(&k, &plain), Err(OpenError::Unprotected));
            assert!(matches!(
                open(&k, &d[..d.len() - 1]),
                Err(OpenError::Trailer(_))
            ));
        }
        assert!(matches!(
            open(&keys(CipherSuite::Suite3), &[0x06, 0, 0xff]),
            Err(OpenError::Decode(_))
        ));
    }

    #[test]
    fn out_seq_starts_at_one_and_skips_zero() {
        let mut s = OutSeq::default();
        assert_eq!((s.last(), s.advance(), s.advance()), (0, 1, 2));
        let mut s = OutSeq(u32::MAX);
        assert_eq!(s.advance(), 1);
    }
}
