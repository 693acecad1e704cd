//! The two cipher suites ovbmc completes, as data and functions: RAKP-HMAC-SHA1 / HMAC-SHA1-96 /
//! AES-CBC-128 (suite 3) and RAKP-HMAC-SHA256 / HMAC-SHA256-128 / AES-CBC-128 (suite 17).
//!
//! Cipher suite 0 (no authentication, CVE-2013-4782 class) and the MD5/RC4 suites are absent on
//! purpose: a suite that is not here cannot be negotiated.

use aes::Aes128;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::codes::{AuthAlg, ConfAlg, IntegAlg};

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

    /// (authentication, integrity, confidentiality) algorithms (IPMI v2.0 Tables 13-17 to
    /// 13-19, 22-20).
    pub fn algorithms(self) -> (AuthAlg, IntegAlg, ConfAlg) {
        match self {
            Self::Suite3 => (
                AuthAlg::RAKP_HMAC_SHA1,
                IntegAlg::HMAC_SHA1_96,
                ConfAlg::AES_CBC_128,
            ),
            Self::Suite17 => (
                AuthAlg::RAKP_HMAC_SHA256,
                IntegAlg::HMAC_SHA256_128,
                ConfAlg::AES_CBC_128,
            ),
        }
    }

    /// The suite whose algorithms are exactly these, if we complete it.
    pub fn from_algorithms(auth: AuthAlg, integ: IntegAlg, conf: ConfAlg) -> Option<Self> {
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
/// drop. Clones are made per message inside [`SessionKeys`]' methods, whose stack is burnt.
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
///
/// Wiping on drop is not enough by itself (issue 15 item 8: the AES key schedule was found 8
/// times in memory a second after Close Session). A value that is moved or cloned leaves its
/// old bytes behind, and no destructor runs there. So:
/// - all key material lives in one heap block ([`KeyState`]) that never moves: moving a
///   `SessionKeys` moves a pointer, and it is not `Clone`;
/// - CBC runs over the schedule in place (`&Aes128`), never over a copy (the `cbc` crate
///   takes its cipher by value, so each packet used to clone the schedule onto the stack);
/// - whatever the derivation and the per-packet code leave on the stack (temporaries the
///   compiler makes, round keys spilled by the AES-NI backend in debug builds, HMAC states
///   moved into `finalize`) is overwritten when they return ([`burn_stack`]).
pub struct SessionKeys {
    suite: CipherSuite,
    state: Box<KeyState>,
}

/// The secrets of one session, on the heap, wiped on drop: the arrays by `Zeroize`, the HMAC
/// state and the AES schedule by their own crates' `zeroize` features (`Aes128` and the hash
/// cores inside `Hmac` are `ZeroizeOnDrop`; checked in the tests below).
#[derive(Zeroize, ZeroizeOnDrop)]
struct KeyState {
    /// Session integrity key (first `hash_len` bytes used).
    sik: [u8; 32],
    /// K1: the integrity key.
    k1: [u8; 32],
    /// First 16 bytes of K2: the AES-128 key.
    aes_key: [u8; 16],
    /// HMAC keyed with K1.
    #[zeroize(skip)]
    k1_mac: KeyedMac,
    /// The expanded AES key (wiped by the aes crate's `zeroize` feature on drop).
    #[zeroize(skip)]
    aes: Aes128,
}

/// Bytes of stack [`burn_stack`] overwrites: more than the deepest key derivation or packet
/// (HMAC-SHA256 and AES in a debug build) uses below the function that calls it.
const BURN: usize = 16 * 1024;

/// Overwrite the stack below the caller with zeros, so that copies of key material left by
/// the functions it called (moved-from values, spilled registers: nothing a destructor can
/// reach) are gone. Call it right after those functions return: its frame then lies where
/// theirs were. A zeroed array passed to `black_box` must really be written (the optimiser
/// cannot see what `black_box` reads), and a plain memset is cheap (well under a microsecond
/// for 16 KiB). Best effort by nature: it covers the stack of this thread, not registers.
#[inline(never)]
pub fn burn_stack() {
    let buf = [0u8; BURN];
    core::hint::black_box(&buf);
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
        let keys = Self::derive_in_frame(suite, kg, rm, rc, role, user);
        burn_stack();
        keys
    }

    #[inline(never)]
    fn derive_in_frame(
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
        let aes_key: &[u8; 16] = k2[..16].try_into().expect("K2 is at least 16 bytes");
        let mut state = Box::new(KeyState {
            sik: [0; 32],
            k1: [0; 32],
            aes_key: *aes_key,
            k1_mac: KeyedMac::new(suite, &k1[..n]),
            aes: Aes128::new(&(*aes_key).into()),
        });
        state.sik[..n].copy_from_slice(&sik[..n]);
        state.k1[..n].copy_from_slice(&k1[..n]);
        Self { suite, state }
    }

    /// The suite these keys belong to.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// SIK (for tests and the RAKP 4 ICV).
    pub fn sik(&self) -> &[u8] {
        &self.state.sik[..self.suite.hash_len()]
    }

    /// K1 (for tests).
    pub fn k1(&self) -> &[u8] {
        &self.state.k1[..self.suite.hash_len()]
    }

    /// The AES-128 key (first 16 bytes of K2).
    pub fn aes_key(&self) -> &[u8; 16] {
        &self.state.aes_key
    }

    /// The RAKP 4 ICV: HMAC_SIK(Rm ‖ SIDc ‖ GUIDc) truncated to the suite's ICV length
    /// (IPMI v2.0 §13.23).
    pub fn rakp4_icv(&self, rm: &[u8; 16], sid_c: u32, guid: &[u8; 16]) -> Icv {
        #[inline(never)]
        fn run(k: &SessionKeys, rm: &[u8; 16], sid_c: u32, guid: &[u8; 16]) -> Icv {
            let full = KeyedMac::new(k.suite, k.sik()).mac(&[rm, &sid_c.to_le_bytes(), guid]);
            Icv::truncate(&full, k.suite.icv_len())
        }
        let icv = run(self, rm, sid_c, guid);
        burn_stack();
        icv
    }

    /// The integrity AuthCode over `data` (datagram offset 4 through Next Header), truncated.
    pub fn integrity(&self, data: &[u8]) -> Icv {
        #[inline(never)]
        fn run(k: &SessionKeys, data: &[u8]) -> Icv {
            let full = k.state.k1_mac.mac(&[data]);
            Icv::truncate(&full, k.suite.icv_len())
        }
        let icv = run(self, data);
        burn_stack();
        icv
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
        cbc_encrypt(&self.state.aes, iv, &mut out[start..]);
        burn_stack();
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
        cbc_decrypt(&self.state.aes, &iv, plain);
        burn_stack();
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

/// AES-CBC encryption in place (NIST SP 800-38A §6.2: C_i = E(P_i ⊕ C_{i-1}), C_0 = IV) over
/// the schedule where it lies. `data` is a whole number of blocks.
#[inline(never)]
fn cbc_encrypt(aes: &Aes128, iv: &[u8; 16], data: &mut [u8]) {
    let mut prev = *iv;
    for chunk in data.chunks_exact_mut(16) {
        let mut b = aes::Block::default();
        for (o, (p, c)) in b.iter_mut().zip(chunk.iter().zip(prev)) {
            *o = p ^ c;
        }
        aes.encrypt_block(&mut b);
        chunk.copy_from_slice(&b);
        prev.copy_from_slice(&b);
    }
}

/// AES-CBC decryption in place (SP 800-38A §6.2: P_i = D(C_i) ⊕ C_{i-1}).
#[inline(never)]
fn cbc_decrypt(aes: &Aes128, iv: &[u8; 16], data: &mut [u8]) {
    let mut prev = *iv;
    for chunk in data.chunks_exact_mut(16) {
        let mut b = aes::Block::default();
        b.copy_from_slice(chunk);
        let ct: [u8; 16] = b.into();
        aes.decrypt_block(&mut b);
        for (o, (d, c)) in chunk.iter_mut().zip(b.iter().zip(prev)) {
            *o = d ^ c;
        }
        prev = ct;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the type system can show: every piece of a session's key state wipes itself when
    /// dropped (a compile-time check; that the wipe happens in place is the crates' promise,
    /// and that no copy is left elsewhere is what `tests/it/memory.rs` checks in the real
    /// process).
    #[test]
    fn key_state_types_zeroize_on_drop() {
        fn zod<T: ZeroizeOnDrop>() {}
        zod::<Aes128>();
        // `Hmac<D>` itself is not marked `ZeroizeOnDrop` (hmac 0.13), but its state is two
        // cores of `D` (inner and outer hash after the padded key), and those are: dropping an
        // `Hmac` drops them, and they wipe themselves (sha1/sha2 `zeroize` features).
        fn core_zod<D: hmac::EagerHash>()
        where
            D::Core: ZeroizeOnDrop,
        {
        }
        core_zod::<Sha1>();
        core_zod::<Sha256>();
        zod::<KeyState>();
        zod::<Zeroizing<[u8; 32]>>();
    }

    /// The hand-written CBC against NIST SP 800-38A F.2.1/F.2.2 (CBC-AES128).
    #[test]
    fn cbc_matches_sp800_38a() {
        let h = |s: &str| hex::decode(s).unwrap();
        let key: [u8; 16] = h("2b7e151628aed2a6abf7158809cf4f3c").try_into().unwrap();
        let iv: [u8; 16] = h("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let aes = Aes128::new(&key.into());
        let plain = h("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        let mut data = plain.clone();
        cbc_encrypt(&aes, &iv, &mut data);
        assert_eq!(
            hex::encode(&data),
            "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
        );
        cbc_decrypt(&aes, &iv, &mut data);
        assert_eq!(data, plain);
    }
}
