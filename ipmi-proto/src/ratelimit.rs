//! Limits on what an unauthenticated peer can make the endpoint do at will, run on the `now`
//! the endpoint is given (deterministic, like everything else in this crate).
//!
//! [`EventLimiter`]: events such a peer can trigger (a failed login, an evicted handshake, a
//! refusal during a lock-out) are reported the first [`LOG_FIRST`] times per kind in a
//! [`LOG_INTERVAL`]; the rest are counted and reported as one
//! [`Event::Suppressed`](crate::endpoint::Event::Suppressed) when the interval ends. Without it,
//! every Open Session proposing an unsupported suite was one log line: 200,000 lines (38 MB)
//! in 20 s (issue 15 item 6).
//!
//! [`AnswerBudget`]: answers to session-less requests (ASF presence pong, Get Channel
//! Authentication Capabilities, Get Channel Cipher Suites) are larger than their requests (up
//! to 28 B for 12 B), and a forged source address turns that into a reflector (issue 15 item
//! 10). What they exceed their requests by is paid from a byte budget per source (IPv4
//! address or IPv6 /64): [`ANSWER_BURST`] bytes, refilled at [`ANSWER_RATE`] per second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::endpoint::EventKind;

/// Events of one kind reported in full per interval before the rest are only counted.
pub const LOG_FIRST: u32 = 5;

/// The interval [`LOG_FIRST`] applies to, and how often a count of the rest is reported.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One summary: `count` events of `kind` were not reported in the last `over`.
pub(crate) type Summary = (EventKind, u64, Duration);

#[derive(Debug)]
struct Window {
    kind: EventKind,
    start: Instant,
    passed: u32,
    suppressed: u64,
    /// The previous interval ended with suppressed events: while a flood lasts, only the
    /// count per interval is reported, not another [`LOG_FIRST`] in full each time.
    flooding: bool,
}

impl Window {
    /// End the interval if it is over; returns its summary if anything was suppressed.
    fn roll(&mut self, now: Instant) -> Option<Summary> {
        if now < self.start + LOG_INTERVAL {
            return None;
        }
        let count = std::mem::take(&mut self.suppressed);
        let over = now.saturating_duration_since(self.start);
        self.flooding = count > 0;
        self.start = now;
        self.passed = 0;
        (count > 0).then_some((self.kind, count, over))
    }
}

/// First occurrences, then a count per interval, per [`EventKind`].
#[derive(Debug, Default)]
pub(crate) struct EventLimiter {
    /// One per kind seen; there are a dozen kinds at most, so a list beats a map.
    windows: Vec<Window>,
}

impl EventLimiter {
    /// Is this occurrence of `kind` at `now` to be reported? Also returns the summary of an
    /// interval that just ended, for the caller to report first.
    pub(crate) fn admit(&mut self, kind: EventKind, now: Instant) -> (bool, Option<Summary>) {
        let i = match self.windows.iter().position(|w| w.kind == kind) {
            Some(i) => i,
            None => {
                self.windows.push(Window {
                    kind,
                    start: now,
                    passed: 0,
                    suppressed: 0,
                    flooding: false,
                });
                self.windows.len() - 1
            }
        };
        let w = &mut self.windows[i];
        let summary = w.roll(now);
        if !w.flooding && w.passed < LOG_FIRST {
            w.passed += 1;
            (true, summary)
        } else {
            w.suppressed += 1;
            (false, summary)
        }
    }

    /// Summaries of the intervals that ended by `now` with suppressed events.
    pub(crate) fn flush(&mut self, now: Instant) -> impl Iterator<Item = Summary> + '_ {
        self.windows.iter_mut().filter_map(
            move |w| {
                if w.suppressed > 0 { w.roll(now) } else { None }
            },
        )
    }

    /// When the next summary is due, if one is pending.
    pub(crate) fn next_flush(&self) -> Option<Instant> {
        self.windows
            .iter()
            .filter(|w| w.suppressed > 0)
            .map(|w| w.start + LOG_INTERVAL)
            .min()
    }
}

/// Bytes by which session-less answers to one source may exceed their requests at once.
pub const ANSWER_BURST: u32 = 4096;

/// ... and per second after that: an ipmitool login spends about 20 bytes of it (an auth caps
/// and a cipher-suite exchange), a forged-source ping flood 16 bytes per pong.
pub const ANSWER_RATE: u32 = 1024;

/// Sources with a budget being spent; beyond it, new sources share one budget (a flood with
/// forged sources must not grow memory without bound).
const MAX_SOURCES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// May go below zero: an answer is sent while the balance is positive and its whole
    /// excess is paid, so the debt is what keeps the rate (not one answer per refill tick).
    bytes: i64,
    at: Instant,
}

impl Bucket {
    fn full(now: Instant) -> Self {
        Self {
            bytes: i64::from(ANSWER_BURST),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let ms = now.saturating_duration_since(self.at).as_millis();
        let add = ms.saturating_mul(u128::from(ANSWER_RATE)) / 1000;
        if add > 0 {
            let add = i64::try_from(add).unwrap_or(i64::MAX);
            self.bytes = self.bytes.saturating_add(add).min(i64::from(ANSWER_BURST));
            self.at = now;
        }
    }
}

/// The per-source byte budget of session-less answers.
#[derive(Debug, Default)]
pub(crate) struct AnswerBudget {
    sources: HashMap<IpAddr, Bucket>,
    /// Shared by new sources while `sources` is full of budgets being spent.
    overflow: Option<Bucket>,
    pruned: Option<Instant>,
}

impl AnswerBudget {
    fn bucket(&mut self, key: IpAddr, now: Instant) -> &mut Bucket {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&key) {
            // Forget the budgets that have refilled (at most once a second: the scan is
            // O(MAX_SOURCES)); if none has, the newcomer shares the overflow budget.
            if self
                .pruned
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
            {
                self.pruned = Some(now);
                self.sources.retain(|_, b| {
                    b.refill(now);
                    b.bytes < i64::from(ANSWER_BURST)
                });
            }
            if self.sources.len() >= MAX_SOURCES {
                let b = self.overflow.get_or_insert_with(|| Bucket::full(now));
                b.refill(now);
                return b;
            }
        }
        let b = self.sources.entry(key).or_insert_with(|| Bucket::full(now));
        b.refill(now);
        b
    }

    /// May `key` be answered now?
    pub(crate) fn allows(&mut self, key: IpAddr, now: Instant) -> bool {
        if !self.sources.contains_key(&key) && self.sources.len() < MAX_SOURCES {
            // A new source starts with a full budget; no entry until it spends some.
            return true;
        }
        self.bucket(key, now).bytes > 0
    }

    /// An answer to `key` exceeded its request by `excess` bytes.
    pub(crate) fn spend(&mut self, key: IpAddr, now: Instant, excess: usize) {
        if excess > 0 {
            let b = self.bucket(key, now);
            let excess = i64::try_from(excess).unwrap_or(i64::MAX);
            b.bytes = b.bytes.saturating_sub(excess).max(-i64::from(ANSWER_BURST));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::LoginFailure;

    #[test]
    fn answer_budget_is_per_source_refills_and_stays_bounded() {
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut m = AnswerBudget::default();
        let mut pongs = 0;
        while m.allows(a, t0) {
            m.spend(a, t0, 16);
            pongs += 1;
        }
        assert_eq!(pongs, ANSWER_BURST / 16);
        assert!(m.allows(b, t0), "another source has its own budget");
        let t1 = t0 + Duration::from_secs(1);
        let mut more = 0;
        while m.allows(a, t1) {
            m.spend(a, t1, 16);
            more += 1;
        }
        assert_eq!(more, ANSWER_RATE / 16, "refilled at the rate");
        // Pings every 0.1 ms for a second: the rate, not one pong per refill tick.
        let mut trickle = 0;
        for i in 1..=10_000 {
            let t = t1 + Duration::from_micros(100 * i);
            if m.allows(a, t) {
                m.spend(a, t, 16);
                trickle += 1;
            }
        }
        assert!(trickle <= ANSWER_RATE / 16 + 1, "{trickle}");
        // Forged sources: memory stays bounded; newcomers share one budget.
        for i in 0..(2 * MAX_SOURCES) as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            if m.allows(ip, t1) {
                m.spend(ip, t1, 16);
            }
        }
        assert!(m.sources.len() <= MAX_SOURCES);
    }

    #[test]
    fn first_occurrences_then_one_count_per_interval() {
        let t0 = Instant::now();
        let kind = EventKind::LoginFailed(LoginFailure::NoCipherMatch);
        let other = EventKind::HalfOpenEvicted;
        let mut l = EventLimiter::default();
        let passed = (0..1000)
            .filter(|i| l.admit(kind, t0 + Duration::from_millis(*i)).0)
            .count();
        assert_eq!(passed, LOG_FIRST as usize);
        // Kinds are limited separately.
        assert!(l.admit(other, t0).0);
        assert_eq!(l.next_flush(), Some(t0 + LOG_INTERVAL));
        assert_eq!(l.flush(t0 + LOG_INTERVAL / 2).count(), 0, "not yet");
        let s: Vec<_> = l.flush(t0 + LOG_INTERVAL).collect();
        assert_eq!(s, vec![(kind, 1000 - LOG_FIRST as u64, LOG_INTERVAL)]);
        assert_eq!(l.next_flush(), None);
        // While the flood goes on, only the count is reported ...
        let t1 = t0 + LOG_INTERVAL;
        assert!(!l.admit(kind, t1 + Duration::from_secs(1)).0);
        let (pass, s) = l.admit(kind, t1 + LOG_INTERVAL);
        assert!(!pass);
        assert_eq!(s, Some((kind, 1, LOG_INTERVAL)));
        // ... and after a quiet interval the first occurrences are reported in full again.
        let t3 = t1 + 3 * LOG_INTERVAL;
        assert_eq!(l.flush(t3).count(), 1);
        let (pass, s) = l.admit(kind, t3 + LOG_INTERVAL);
        assert!(pass);
        assert_eq!(s, None);
    }
}
