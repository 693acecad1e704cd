//! Limits on what an unauthenticated peer can make the endpoint do at will, run on the `now`
//! the endpoint is given (deterministic, like everything else in this crate).
//!
//! [`EventLimiter`]: events such a peer can trigger (a failed login, an evicted handshake, a
//! refusal during a lock-out) are reported the first [`LOG_FIRST`] times per kind in a
//! [`LOG_INTERVAL`]; the rest are counted and reported as one
//! [`Event::Suppressed`](crate::endpoint::Event::Suppressed) when the interval ends. Without it,
//! every Open Session proposing an unsupported suite was one log line: 200,000 lines (38 MB)
//! in 20 s (issue 15 item 6).

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::LoginFailure;

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
