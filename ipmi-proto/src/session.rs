//! Per-session bookkeeping that is pure data: privilege levels, the inbound sequence-number
//! window and the reply cache.

use std::time::{Duration, Instant};

use bytes::Bytes;
use zeroize::{Zeroize, Zeroizing};

use crate::codes::NetFn;

/// IPMI privilege levels (IPMI v2.0 §6.8, Table 6-?): the numbers are the wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Privilege {
    /// 1: callback.
    Callback = 1,
    /// 2: user (read-only here).
    User = 2,
    /// 3: operator (chassis control).
    Operator = 3,
    /// 4: administrator (BMC resets).
    Administrator = 4,
}

impl Privilege {
    /// From a 4-bit wire value; OEM (5) and reserved values are `None`.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v & 0x0f {
            1 => Self::Callback,
            2 => Self::User,
            3 => Self::Operator,
            4 => Self::Administrator,
            _ => return None,
        })
    }

    /// Name as ipmitool's `-L` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Callback => "CALLBACK",
            Self::User => "USER",
            Self::Operator => "OPERATOR",
            Self::Administrator => "ADMINISTRATOR",
        }
    }

    /// Parse ipmitool-style names (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "CALLBACK" => Self::Callback,
            "USER" => Self::User,
            "OPERATOR" => Self::Operator,
            "ADMINISTRATOR" | "ADMIN" => Self::Administrator,
            _ => return None,
        })
    }
}

/// The inbound session-sequence window (IPMI v2.0 §6.12): a packet is accepted if its number
/// is not 0, was not seen before, and lies within 16 behind to 16 ahead of the highest number
/// accepted so far. The first authenticated packet sets the base: ipmitool starts at 3, 4 or
/// more, depending on how many set-up messages it sent (ipmitool `ipmi_lanplus_build_v2x_msg`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqWindow {
    highest: Option<u32>,
    /// Bit i set: `highest - i` was accepted (bit 0 is `highest` itself).
    seen: u32,
}

/// How far ahead or behind the highest accepted number a packet may be.
const WINDOW: u32 = 16;

impl SeqWindow {
    /// Would `seq` be accepted? Call before [`SeqWindow::accept`], after the AuthCode verified.
    pub fn check(&self, seq: u32) -> bool {
        if seq == 0 {
            return false;
        }
        let Some(h) = self.highest else { return true };
        let ahead = seq.wrapping_sub(h);
        if ahead != 0 && ahead <= WINDOW {
            return true;
        }
        let behind = h.wrapping_sub(seq);
        behind < WINDOW && self.seen & (1 << behind) == 0
    }

    /// Record `seq` as accepted (only after [`SeqWindow::check`] returned true).
    pub fn accept(&mut self, seq: u32) {
        let Some(h) = self.highest else {
            self.highest = Some(seq);
            self.seen = 1;
            return;
        };
        let ahead = seq.wrapping_sub(h);
        if ahead != 0 && ahead <= WINDOW {
            // Counting across the 0 that senders skip keeps one slot unused; harmless.
            self.seen = self.seen.checked_shl(ahead).unwrap_or(0) | 1;
            self.highest = Some(seq);
        } else {
            let behind = h.wrapping_sub(seq);
            if behind < 32 {
                self.seen |= 1 << behind;
            }
        }
    }
}

/// The key that identifies a client retry: ipmitool resends a timed-out request with the
/// same IPMI rqSeq, netFn, command and data but a new session sequence number
/// (ipmitool `ipmi_lanplus_send_payload`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RetryKey {
    /// rqSeq (6 bits).
    pub rq_seq: u8,
    /// netFn.
    pub netfn: NetFn,
    /// Command.
    pub cmd: u8,
    /// Request data.
    pub data: Vec<u8>,
}

/// The request data are plaintext of the encrypted session: wiped when the key goes (from the
/// reply cache or the pending table), like the cached answers (issue 15 item 8).
impl Drop for RetryKey {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

/// The last few replies of a session, to answer retries without executing twice.
///
/// Only a handful are kept: rqSeq is 6 bits, so after 64 requests a number comes back for a
/// new request; a ring of 8 can never mistake such a request for a retry.
///
/// The IPMI response message is kept, not the datagram: a retry's answer needs a new
/// session sequence number and IV (IPMI v2.0 §6.12, §13.29), so it is sealed again. The
/// message is [`Bytes`], so taking it out for a retry is a reference count, not a copy; its
/// owner is a `Zeroizing` buffer, so the session's plaintext is wiped when the last handle to
/// it goes (it leaves the cache, or the session ends).
#[derive(Debug, Default)]
pub struct ReplyCache {
    entries: Vec<(RetryKey, Instant, Bytes)>,
}

const REPLY_CACHE_LEN: usize = 8;

impl ReplyCache {
    /// The cached IPMI response message for `key`, if fresh (a shared handle to it).
    pub fn get(&self, key: &RetryKey, now: Instant, ttl: Duration) -> Option<Bytes> {
        self.entries
            .iter()
            .find(|(k, t, _)| k == key && now.saturating_duration_since(*t) <= ttl)
            .map(|(_, _, m)| m.clone())
    }

    /// Remember the response `msg` to `key` (a `Vec` is taken over without a copy).
    pub fn put(&mut self, key: RetryKey, now: Instant, msg: Vec<u8>) {
        self.entries.retain(|(k, _, _)| *k != key);
        if self.entries.len() == REPLY_CACHE_LEN {
            self.entries.remove(0);
        }
        self.entries
            .push((key, now, Bytes::from_owner(Zeroizing::new(msg))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rejects_zero_duplicates_and_far_numbers() {
        let mut w = SeqWindow::default();
        assert!(!w.check(0));
        assert!(w.check(4));
        w.accept(4);
        assert!(!w.check(4), "duplicate");
        assert!(w.check(5) && w.check(20) && !w.check(21));
        w.accept(6);
        assert!(w.check(5), "late but unseen");
        w.accept(5);
        assert!(!w.check(5));
        w.accept(20);
        assert!(!w.check(4), "too far behind");
        assert!(w.check(7));
    }

    #[test]
    fn window_wraps() {
        let mut w = SeqWindow::default();
        w.accept(u32::MAX - 1);
        assert!(w.check(u32::MAX) && w.check(1) && w.check(3));
        w.accept(2);
        assert!(w.check(u32::MAX) && !w.check(2));
    }

    #[test]
    fn reply_cache_is_bounded_and_expires() {
        let now = Instant::now();
        let ttl = Duration::from_secs(5);
        let mut c = ReplyCache::default();
        let key = |s| RetryKey {
            rq_seq: s,
            netfn: NetFn::CHASSIS,
            cmd: 2,
            data: vec![1],
        };
        for s in 0..20 {
            c.put(key(s), now, vec![s]);
        }
        assert!(c.get(&key(3), now, ttl).is_none());
        assert_eq!(c.get(&key(19), now, ttl).as_deref(), Some(&[19u8][..]));
        // A hit shares the cached message instead of copying it.
        let (a, b) = (
            c.get(&key(19), now, ttl).unwrap(),
            c.get(&key(19), now, ttl).unwrap(),
        );
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert!(c.get(&key(19), now + ttl * 2, ttl).is_none());
    }

    /// What can be checked from inside: the cached answers are `Zeroizing` (a compile-time
    /// check; the keys' data are wiped by `RetryKey`'s `Drop`, which a test cannot observe
    /// after the fact without reading freed memory — tests/it/memory.rs reads the real
    /// process's memory, for the session keys).
    #[test]
    fn reply_cache_answers_are_zeroizing() {
        fn zod<T: zeroize::ZeroizeOnDrop>() {}
        // The owner `put` gives each cached answer's `Bytes`: wiped when the last handle goes.
        zod::<Zeroizing<Vec<u8>>>();
        let mut c = ReplyCache::default();
        let key = RetryKey {
            rq_seq: 1,
            netfn: NetFn::APP,
            cmd: 1,
            data: vec![0xaa; 4],
        };
        let msg = vec![1, 2, 3];
        let at = msg.as_ptr();
        c.put(key, Instant::now(), msg);
        // Taken over, not copied: the cached handle is the buffer `put` was given.
        assert_eq!(c.entries[0].2.as_ptr(), at);
    }
}
