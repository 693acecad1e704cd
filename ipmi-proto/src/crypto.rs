//! The two cipher suites ovbmc completes, as data and functions: RAKP-HMAC-SHA1 / HMAC-SHA1-96 /
//! AES-CBC-128 (suite 3) and RAKP-HMAC-SHA256 / HMAC-SHA256-128 / AES-CBC-128 (suite 17).
//!
//! Cipher suite 0 (no authentication, CVE-2013-4782 class) and the MD5/RC4 suites are absent on
//! purpose: a suite that is not here cannot be negotiated.

use aes::Aes128;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, InnerIvInit};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Authentication algorithm numbers (IPMI v2.0 Table 13-17).
pub mod auth_alg {
    /// RAKP-none (cipher suite 0): refused.
    pub const NONE: u8 = 0x00;
    /// RAKP-HMAC-SHA1.
    pub const HMAC_SHA1: u8 = 0x01;
    /// RAKP-HMAC-MD5.
    pub const HMAC_MD5: u8 = 0x02;
    /// RAKP-HMAC-SHA256.
    pub const HMAC_SHA256: u8 = 0x03;
}

/// Integrity algorithm numbers (IPMI v2.0 Table 13-18).
pub mod integrity_alg {
    /// None.
    pub const NONE: u8 = 0x00;
    /// HMAC-SHA1-96.
    pub const HMAC_SHA1_96: u8 = 0x01;
    /// HMAC-SHA256-128.
    pub const HMAC_SHA256_128: u8 = 0x04;
}

/// Confidentiality algorithm numbers (IPMI v2.0 Table 13-19).
pub mod conf_alg {
    /// None.
    pub const NONE: u8 = 0x00;
    /// AES-CBC-128.
    pub const AES_CBC_128: u8 = 0x01;
}

/// A cipher suite this BMC completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// Suite 3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    Suite3,
    /// Suite 17: RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    Suite17,
}

impl CipherSuite {
    /// The suites, in the order Get Channel Cipher Suites lists them. 17 first: ipmitool picks
    /// the first it knows of 17 and 3 anyway, but a list read top-down should show the best.
    pub const ALL: [CipherSuite; 2] = [CipherSuite::Suite17, CipherSuite::Suite3];

    /// The suite ID (IPMI v2.0 Table 22-19).
    pub fn id(self) -> u8 {
        match self {
            Self::Suite3 => 3,
            Self::Suite17 => 17,
        }
    }

    /// (authentication, integrity, confidentiality) algorithm numbers.
    pub fn algorithms(self) -> (u8, u8, u8) {
        match self {
            Self::Suite3 => (
                auth_alg::HMAC_SHA1,
                integrity_alg::HMAC_SHA1_96,
                conf_alg::AES_CBC_128,
            ),
            Self::Suite17 => (
                auth_alg::HMAC_SHA256,
                integrity_alg::HMAC_SHA256_128,
                conf_alg::AES_CBC_128,
            ),
        }
    }

    /// The suite whose algorithms are exactly these, if we complete it.
    pub fn from_algorithms(auth: u8, integ: u8, conf: u8) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.algorithms() == (auth, integ, conf))
    }

    /// Length of the RAKP 2/3 key-exchange AuthCode and of SIK, K1, K2: 20 or 32 bytes.
    pub fn hash_len(self) -> usize {
        match self {
            Self::Suite3 => 20,
            Self::Suite17 => 32,
        }
    }

    /// Length of the truncated integrity AuthCode and RAKP 4 ICV: 12 (SHA1-96) or 16
    /// (SHA256-128) bytes (IPMI v2.0 §13.28.4; ipmitool `lanplus_rakp4_hmac_matches`).
    pub fn icv_len(self) -> usize {
        match self {
            Self::Suite3 => 12,
            Self::Suite17 => 16,
        }
    }

    /// HMAC with this suite's hash over the concatenation of `parts`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
            // HMAC takes keys of any length (RFC 2104), so new_from_slice cannot fail.
            let mut m = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
            for p in parts {
                m.update(p);
            }
            Zeroizing::new(m.finalize().into_bytes().to_vec())
        }
        match self {
            Self::Suite3 => run::<Hmac<Sha1>>(key, parts),
            Self::Suite17 => run::<Hmac<Sha256>>(key, parts),
        }
    }
}

/// Constant-time equality of two byte strings (lengths are public).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// An HMAC keyed once and cloned per message: keying costs two compression-function calls
/// (the ipad and opad blocks, RFC 2104 §2), as much as the message itself for the short IPMI
/// packets, so a session keeps the keyed state instead of its key's bytes alone.
///
/// The states are key-equivalent secrets; the hash crates' `zeroize` features wipe them on
/// drop.
#[derive(Clone)]
enum KeyedMac {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
}

impl KeyedMac {
    fn new(suite: CipherSuite, key: &[u8]) -> Self {
        // HMAC takes keys of any length (RFC 2104), so new_from_slice cannot fail.
        const ANY: &str = "HMAC accepts any key length";
        match suite {
            CipherSuite::Suite3 => Self::Sha1(Hmac::new_from_slice(key).expect(ANY)),
            CipherSuite::Suite17 => Self::Sha256(Hmac::new_from_slice(key).expect(ANY)),
        }
    }

    /// HMAC over the concatenation of `parts`, written to the front of `out` (32 bytes fit
    /// either hash); returns the full MAC length.
    fn mac_into(&self, parts: &[&[u8]], out: &mut [u8; 32]) -> usize {
        fn run<M: Mac + Clone>(m: &M, parts: &[&[u8]], out: &mut [u8; 32]) -> usize {
            let mut m = m.clone();
            for p in parts {
                m.update(p);
            }
            let full = m.finalize().into_bytes();
            out[..full.len()].copy_from_slice(&full);
            full.len()
        }
        match self {
            Self::Sha1(m) => run(m, parts, out),
            Self::Sha256(m) => run(m, parts, out),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        self.mac_into(parts, &mut out);
        out
    }
}

/// A truncated integrity AuthCode or RAKP 4 ICV (12 or 16 bytes), on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icv {
    buf: [u8; 16],
    len: usize,
}

impl Icv {
    fn truncate(full: &[u8; 32], len: usize) -> Self {
        let mut buf = [0u8; 16];
        buf[..len].copy_from_slice(&full[..len]);
        Self { buf, len }
    }
}

impl core::ops::Deref for Icv {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl AsRef<[u8]> for Icv {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Plain (not constant-time) comparison, for tests: verification uses [`ct_eq`].
impl PartialEq<Vec<u8>> for Icv {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == other[..]
    }
}

/// The per-session keys of IPMI v2.0 §13.31–13.32, zeroized on drop.
///
/// Besides the key bytes it keeps what per-packet work needs ready: HMAC keyed with K1 and
/// the AES-128 key schedule, so that a packet costs the MAC and cipher blocks only.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    #[zeroize(skip)]
    suite: CipherSuite,
    /// Session integrity key.
    sik: Vec<u8>,
    /// K1: the integrity key.
    k1: Vec<u8>,
    /// First 16 bytes of K2: the AES-128 key.
    aes_key: [u8; 16],
    /// HMAC keyed with K1 (wiped by the hash crates on drop).
    #[zeroize(skip)]
    k1_mac: KeyedMac,
    /// The expanded AES key (wiped by the aes crate's `zeroize` feature on drop).
    #[zeroize(skip)]
    aes: Aes128,
}

impl core::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

/// The constants K1 and K2 are derived from: 20 bytes of 0x01 / 0x02, for suite 17 too
/// (ipmitool `CONST_1[20]`, freeipmi `IPMI_KEY_CONSTANT_LENGTH`).
const CONST_LEN: usize = 20;

impl SessionKeys {
    /// Derive SIK = HMAC_KG(Rm ‖ Rc ‖ ROLEm ‖ ULENm ‖ UNAMEm), K1 = HMAC_SIK(0x01×20),
    /// K2 = HMAC_SIK(0x02×20). `kg` is the BMC key if one is set, else the user's password.
    pub fn derive(
        suite: CipherSuite,
        kg: &[u8],
        rm: &[u8; 16],
        rc: &[u8; 16],
        role: u8,
        user: &[u8],
    ) -> Self {
        let n = suite.hash_len();
        let sik = KeyedMac::new(suite, kg).mac(&[rm, rc, &[role, user.len() as u8], user]);
        let sik_mac = KeyedMac::new(suite, &sik[..n]);
        let k1 = sik_mac.mac(&[&[1u8; CONST_LEN]]);
        let k2 = sik_mac.mac(&[&[2u8; CONST_LEN]]);
        let mut aes_key = [0u8; 16];
        aes_key.copy_from_slice(&k2[..16]);
        Self {
            suite,
            sik: sik[..n].to_vec(),
            k1: k1[..n].to_vec(),
            k1_mac: KeyedMac::new(suite, &k1[..n]),
            aes: Aes128::new(&aes_key.into()),
            aes_key,
        }
    }

    /// The suite these keys belong to.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// SIK (for tests and the RAKP 4 ICV).
    pub fn sik(&self) -> &[u8] {
        &self.sik
    }

    /// K1 (for tests).
    pub fn k1(&self) -> &[u8] {
        &self.k1
    }

    /// The AES-128 key (first 16 bytes of K2).
    pub fn aes_key(&self) -> &[u8; 16] {
        &self.aes_key
    }

    /// The RAKP 4 ICV: HMAC_SIK(Rm ‖ SIDc ‖ GUIDc) truncated to the suite's ICV length
    /// (IPMI v2.0 §13.23).
    pub fn rakp4_icv(&self, rm: &[u8; 16], sid_c: u32, guid: &[u8; 16]) -> Icv {
        let full = KeyedMac::new(self.suite, &self.sik).mac(&[rm, &sid_c.to_le_bytes(), guid]);
        Icv::truncate(&full, self.suite.icv_len())
    }

    /// The integrity AuthCode over `data` (datagram offset 4 through Next Header), truncated.
    pub fn integrity(&self, data: &[u8]) -> Icv {
        let full = self.k1_mac.mac(&[data]);
        Icv::truncate(&full, self.suite.icv_len())
    }

    /// Check an integrity AuthCode in constant time.
    pub fn verify_integrity(&self, data: &[u8], code: &[u8]) -> bool {
        ct_eq(&self.integrity(data), code)
    }

    /// Encrypt an IPMI payload: IV ‖ AES-CBC(plaintext ‖ 01 02 … n ‖ n), appended to `out`
    /// (IPMI v2.0 §13.29). The pad makes the length a multiple of 16; there is no PKCS#7.
    pub fn encrypt(&self, iv: &[u8; 16], plaintext: &[u8], out: &mut Vec<u8>) {
        let pad = (16 - (plaintext.len() + 1) % 16) % 16;
        out.extend_from_slice(iv);
        let start = out.len();
        out.extend_from_slice(plaintext);
        out.extend((1..=pad as u8).chain([pad as u8]));
        let mut enc = cbc::Encryptor::<Aes128>::inner_iv_init(self.aes.clone(), &(*iv).into());
        for chunk in out[start..].chunks_exact_mut(16) {
            let block: &mut [u8; 16] = chunk.try_into().expect("chunks of 16");
            let mut b = (*block).into();
            enc.encrypt_block(&mut b);
            block.copy_from_slice(&b);
        }
    }

    /// Decrypt an AES-CBC-128 payload (IV ‖ ciphertext), check the confidentiality pad
    /// (n ≤ 15 and the pad bytes are exactly 01..n, as OpenBMC checks) and return the plaintext.
    pub fn decrypt(&self, payload: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let mut plain = Zeroizing::new(vec![0u8; payload.len().saturating_sub(16)]);
        let n = self.decrypt_into(payload, &mut plain)?;
        plain.truncate(n);
        Some(plain)
    }

    /// [`SessionKeys::decrypt`] into `buf` (at least the ciphertext's length, else `None`):
    /// returns the plaintext length. The endpoint decrypts into the stack this way.
    pub fn decrypt_into(&self, payload: &[u8], buf: &mut [u8]) -> Option<usize> {
        if payload.len() < 32 || !payload.len().is_multiple_of(16) {
            return None;
        }
        let (iv, ct) = payload.split_at(16);
        let iv: [u8; 16] = iv.try_into().ok()?;
        let plain = buf.get_mut(..ct.len())?;
        plain.copy_from_slice(ct);
        let mut dec = cbc::Decryptor::<Aes128>::inner_iv_init(self.aes.clone(), &iv.into());
        for chunk in plain.chunks_exact_mut(16) {
            let block: &mut [u8; 16] = chunk.try_into().ok()?;
            let mut b = (*block).into();
            dec.decrypt_block(&mut b);
            block.copy_from_slice(&b);
        }
        let n = *plain.last()? as usize;
        if n > 15 || n + 1 > plain.len() {
            return None;
        }
        let body = plain.len() - 1 - n;
        if !plain[body..plain.len() - 1]
            .iter()
            .enumerate()
            .all(|(i, &b)| b as usize == i + 1)
        {
            return None;
        }
        Some(body)
    }
}

/// RAKP 2 key-exchange AuthCode: HMAC_Kuid(SIDm ‖ SIDc ‖ Rm ‖ Rc ‖ GUIDc ‖ ROLEm ‖ ULENm ‖
/// UNAMEm), IDs in wire (LE) order and ROLEm the whole RAKP 1 byte 25 (IPMI v2.0 §13.21).
#[allow(clippy::too_many_arguments)]
pub fn rakp2_auth(
    suite: CipherSuite,
    kuid: &[u8],
    sid_m: u32,
    sid_c: u32,
    rm: &[u8; 16],
    rc: &[u8; 16],
    guid: &[u8; 16],
    role: u8,
    user: &[u8],
) -> Zeroizing<Vec<u8>> {
    suite.hmac(
        kuid,
        &[
            &sid_m.to_le_bytes(),
            &sid_c.to_le_bytes(),
            rm,
            rc,
            guid,
            &[role, user.len() as u8],
            user,
        ],
    )
}

/// RAKP 3 AuthCode: HMAC_Kuid(Rc ‖ SIDm ‖ ROLEm ‖ ULENm ‖ UNAMEm) (IPMI v2.0 §13.22).
pub fn rakp3_auth(
    suite: CipherSuite,
    kuid: &[u8],
    rc: &[u8; 16],
    sid_m: u32,
    role: u8,
    user: &[u8],
) -> Zeroizing<Vec<u8>> {
    suite.hmac(
        kuid,
        &[rc, &sid_m.to_le_bytes(), &[role, user.len() as u8], user],
    )
}
