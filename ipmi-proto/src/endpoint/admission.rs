//! Who may try to log in, and how many: the half-open table with its per-source share, the
//! active-session cap with pre-emption by privilege, and the failed-login lock-out of sources
//! (IPv4 address or IPv6 /64) and users (protocol notes §11.3, §11.6).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::{Endpoint, Session, State};
use super::{Event, LoginFailure};
use crate::session::Privilege;

/// Failed-login bookkeeping for one source or one user.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Guard {
    window_start: Option<Instant>,
    failures: u32,
    locked_until: Option<Instant>,
}

impl Guard {
    pub(super) fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|t| now < t)
    }

    /// Count a failure; true if this one imposes a lock-out.
    pub(super) fn fail(
        &mut self,
        now: Instant,
        threshold: u32,
        window: std::time::Duration,
        lock: std::time::Duration,
    ) -> bool {
        if threshold == 0 {
            return false;
        }
        match self.window_start {
            Some(t) if now.saturating_duration_since(t) < window => self.failures += 1,
            _ => {
                self.window_start = Some(now);
                self.failures = 1;
            }
        }
        if self.failures >= threshold {
            self.locked_until = Some(now + lock);
            self.window_start = None;
            self.failures = 0;
            return true;
        }
        false
    }

    pub(super) fn stale(&self, now: Instant, window: std::time::Duration) -> bool {
        !self.locked(now)
            && self
                .window_start
                .is_none_or(|t| now.saturating_duration_since(t) >= window)
    }
}

/// At most this many sources are tracked; beyond it the stalest are forgotten first (a
/// spoofed-source flood must not grow memory without bound).
const MAX_GUARDS: usize = 4096;

/// The unit the half-open table is shared by: an IPv4 address, or an IPv6 /64 (one host
/// usually holds a whole /64, so per-address shares would be no limit there).
pub(super) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::from(o)
            }
        },
        v4 => v4,
    }
}

impl Endpoint {
    /// Remember that `peer` logged in as `user` at `now` (see `Limits::lockout_trust`). When
    /// the table is full, the pair whose last login is oldest makes room.
    pub(super) fn trust(&mut self, now: Instant, user: usize, peer: SocketAddr) {
        if let Some(s) = &self.cfg.shared_lockout {
            s.succeeded(&self.cfg.users[user].name, peer.ip());
        }
        let l = &self.cfg.limits;
        if l.lockout_trust.is_zero() || l.max_trusted == 0 {
            return;
        }
        let key = (user, source_key(peer.ip()));
        if !self.trusted.contains_key(&key) && self.trusted.len() >= l.max_trusted {
            // O(n) over a small table, and only for a new pair after a successful login.
            if let Some(oldest) = self
                .trusted
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| *k)
            {
                self.trusted.remove(&oldest);
            }
        }
        self.trusted.insert(key, now);
    }

    /// Did `peer` log in as `user` within `Limits::lockout_trust`?
    pub(super) fn trusted(&self, now: Instant, user: usize, peer: SocketAddr) -> bool {
        let trust = self.cfg.limits.lockout_trust;
        self.trusted
            .get(&(user, source_key(peer.ip())))
            .is_some_and(|t| now.saturating_duration_since(*t) < trust)
    }

    pub(super) fn locked_out(
        &mut self,
        source: Option<IpAddr>,
        user: Option<String>,
        until: Instant,
    ) {
        self.stats.lockouts += 1;
        self.event(Event::LockedOut {
            source,
            user,
            until,
        });
    }

    /// Count a failed login against its source and, if known, its user; lock them out at
    /// their thresholds (online-guessing defence, protocol notes §11.3).
    pub(super) fn login_failed(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        user: String,
        reason: LoginFailure,
    ) {
        self.stats.login_failures += 1;
        let l = self.cfg.limits.clone();
        // IPv6 sources count per /64, like the half-open share: a host that rotates its
        // address within its /64 gets no fresh tries.
        let source = source_key(peer.ip());
        if reason != LoginFailure::NoCipherMatch {
            if self.sources.len() >= MAX_GUARDS && !self.sources.contains_key(&source) {
                self.sources.retain(|_, g| !g.stale(now, l.lockout_window));
                if self.sources.len() >= MAX_GUARDS {
                    // Still full of live entries: forget one unlocked entry, else skip.
                    if let Some(ip) = self
                        .sources
                        .iter()
                        .find(|(_, g)| !g.locked(now))
                        .map(|(ip, _)| *ip)
                    {
                        self.sources.remove(&ip);
                    }
                }
            }
            if self.sources.len() < MAX_GUARDS || self.sources.contains_key(&source) {
                let g = self.sources.entry(source).or_default();
                if g.fail(
                    now,
                    l.source_lockout_threshold,
                    l.lockout_window,
                    l.lockout_duration,
                ) {
                    self.locked_out(Some(source), None, now + l.lockout_duration);
                }
            }
            // A handshake abandoned after RAKP 2 counts against its source only. The BMC
            // verified nothing (the client judged our RAKP 2, which already gave it the
            // HMAC to guess the password offline, protocol notes §11.3), so a per-user count
            // would add no protection, only a way for anyone who knows the user name to lock
            // the operator out with a few unfinished logins (tests/it/flood.rs).
            let counted_user = reason != LoginFailure::AbandonedAfterRakp2
                && self.cfg.users.iter().any(|u| u.name == user);
            if let Some(s) = &self.cfg.shared_lockout {
                s.failed(counted_user.then_some(user.as_str()), peer.ip());
            }
            if reason != LoginFailure::AbandonedAfterRakp2
                && let Some(idx) = self.cfg.users.iter().position(|u| u.name == user)
            {
                let g = self.users.entry(idx).or_default();
                if g.fail(
                    now,
                    l.user_lockout_threshold,
                    l.lockout_window,
                    l.lockout_duration,
                ) {
                    self.locked_out(None, Some(user.clone()), now + l.lockout_duration);
                }
            }
        }
        let user = self.logged_name(&user);
        self.event(Event::LoginFailed { peer, user, reason });
    }

    /// The active session whose slot a new session with ceiling `privilege` may take when the
    /// table is full: the longest idle of those whose ceiling is lower. A scan of the table,
    /// done only when it is full.
    pub(super) fn preemptable(&self, privilege: Privilege) -> Option<u32> {
        self.sessions
            .iter()
            .filter_map(|(&sid, s)| match &s.state {
                State::Active(a) if a.max_privilege < privilege => Some((s.last_seen, sid)),
                _ => None,
            })
            .min()
            .map(|(_, sid)| sid)
    }

    /// Remove a session, keeping the active count.
    pub(super) fn remove_session(&mut self, sid: u32) -> Option<Session> {
        let s = self.sessions.remove(&sid)?;
        // A SOL instance ends with its session (IPMI v2.0 §24.1: payloads are per session).
        self.session_gone(sid);
        if matches!(s.state, State::Active(_)) {
            self.active -= 1;
        } else {
            self.leave_half_open(sid, s.peer);
        }
        if self.sessions.is_empty() {
            self.release_idle_memory();
        }
        Some(s)
    }

    /// With no session left, give back what the session tables grew to: a table keeps its
    /// capacity when emptied, and in a large fleet most BMCs are idle most of the time, each
    /// holding what its last login needed (about 1.6 KiB a BMC, seen as RSS growth over a
    /// 10,000-BMC fleet under load; docs/performance.md). The next login allocates again.
    fn release_idle_memory(&mut self) {
        self.sessions.shrink_to_fit();
        self.half_open.clear();
        self.half_open.shrink_to_fit();
        if self.half_open_by_source.is_empty() {
            self.half_open_by_source.shrink_to_fit();
        }
        if self.pending.is_empty() {
            self.pending.shrink_to_fit();
        }
    }

    /// Drop `sid` from its source's half-open list (it became active or went away).
    pub(super) fn leave_half_open(&mut self, sid: u32, peer: SocketAddr) {
        let key = source_key(peer.ip());
        if let Some(q) = self.half_open_by_source.get_mut(&key) {
            q.retain(|&s| s != sid);
            if q.is_empty() {
                self.half_open_by_source.remove(&key);
            }
        }
    }

    /// Drop the half-open queue's entries for sessions that are gone or active, once the queue
    /// is longer than `bound`.
    pub(super) fn compact_half_open_above(&mut self, bound: usize) {
        if self.half_open.len() > bound {
            let sessions = &self.sessions;
            self.half_open.retain(|sid| {
                sessions
                    .get(sid)
                    .is_some_and(|s| !matches!(s.state, State::Active(_)))
            });
        }
    }

    /// Make room for one more half-open session from `peer`. A source that already holds its
    /// share (`max_half_open_per_source`) gives up its own oldest handshake, so a flood from
    /// one host (or one IPv6 /64) only recycles its own entries and never evicts another
    /// client's handshake; only when many sources together fill the table is the oldest
    /// handshake of any source evicted. (A spoofed-source flood cannot get past Open Session,
    /// since it never sees the session ID we grant; it ages through the table in creation
    /// order like everything else.) Protocol notes §11.6: cap half-open sessions per BMC and
    /// per source.
    pub(super) fn make_room_for_half_open(&mut self, peer: SocketAddr) {
        // Per-source evictions leave stale entries in the queue during a flood: compact now
        // and then (amortised O(1) per Open Session), so memory stays bounded between timers.
        self.compact_half_open_above(2 * self.cfg.limits.max_half_open.max(64));
        let share = self.cfg.limits.max_half_open_per_source;
        if let Some(&sid) = self
            .half_open_by_source
            .get(&source_key(peer.ip()))
            .filter(|q| share > 0 && q.len() >= share)
            .and_then(|q| q.front())
        {
            let peer = self.sessions.get(&sid).map_or(peer, |s| s.peer);
            self.remove_session(sid);
            self.event(Event::HalfOpenEvicted { peer });
            return;
        }
        let half_open = self.sessions.len() - self.session_counts().0;
        if half_open < self.cfg.limits.max_half_open {
            return;
        }
        while let Some(sid) = self.half_open.pop_front() {
            if let Some(s) = self.sessions.get(&sid)
                && !matches!(s.state, State::Active(_))
            {
                let peer = s.peer;
                self.remove_session(sid);
                self.event(Event::HalfOpenEvicted { peer });
                return;
            }
        }
    }
}
