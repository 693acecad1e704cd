//! One virtual BMC as a sans-I/O state machine.
//!
//! The runtime feeds it datagrams with [`Endpoint::handle`] and gets back either a datagram to
//! send or a [`MachineRequest`] to run; it answers the latter with [`Endpoint::complete`].
//! Time and randomness come in as arguments, so every exchange is reproducible in tests.
//!
//! Receive pipeline (IPMI v2.0 §13.6, §13.28, ovbmc protocol notes §5.4): RMCP → session
//! header → session-less commands and RAKP set-up, or session lookup → AuthCode (constant time)
//! → sequence window → decrypt and pad check → IPMI checksums → privilege → command.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::codes::{CompletionCode, NetFn, PayloadType, RakpStatus};
use crate::commands::{self, After, CmdContext, Outcome, Pending};
use crate::config::BmcConfig;
use crate::crypto::{CipherSuite, SessionKeys, rakp2_auth, rakp3_auth};
use crate::machine::{MachineRequest, MachineResult};
use crate::ratelimit::{AnswerBudget, EventLimiter};
use crate::rmcp::{
    self, Granted, OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp2Body, Rakp3, Rakp4,
    SetupMessage,
};
use crate::seal::{self, OpenError, OutSeq};
use crate::session::{Privilege, ReplyCache, RetryKey, SeqWindow};
use crate::wire::{self, Datagram, IpmiRequest, V15Packet, V20Packet};

/// A source of random bytes (session IDs, Rc, IVs). The runtime passes the OS CSPRNG; tests
/// pass a seeded generator.
pub trait Entropy {
    /// Fill `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// Identifies a [`MachineRequest`] until its [`Endpoint::complete`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// What [`Endpoint::handle`] asks the runtime to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `data` to `to`.
    Transmit {
        /// Destination (the request's source).
        to: SocketAddr,
        /// The datagram.
        data: Vec<u8>,
    },
    /// Run `request` against the machine, then call [`Endpoint::complete`] with `ticket`.
    Machine {
        /// Pass back to `complete`.
        ticket: Ticket,
        /// What to do.
        request: MachineRequest,
    },
}

/// Why a login failed, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginFailure {
    /// Open Session proposed algorithms we do not complete (cipher suite 0, MD5, RC4, ...).
    NoCipherMatch,
    /// RAKP 1 named a user that does not exist (or the null user).
    UnknownUser,
    /// RAKP 1 asked for a role above the user's limit, or an invalid one.
    BadRole,
    /// RAKP 3 carried a wrong AuthCode: the client's password is wrong.
    BadRakp3,
    /// The client went silent after RAKP 2: ipmitool does this when the RAKP 2 HMAC does not
    /// verify, i.e. when its password is wrong.
    AbandonedAfterRakp2,
}

impl LoginFailure {
    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            Self::NoCipherMatch => "no_cipher_match",
            Self::UnknownUser => "unknown_user",
            Self::BadRole => "bad_role",
            Self::BadRakp3 => "bad_password",
            Self::AbandonedAfterRakp2 => "abandoned_after_rakp2",
        }
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client sent Close Session.
    Closed,
    /// No valid packet within the idle timeout.
    IdleTimeout,
    /// Cold or Warm Reset of the BMC.
    BmcReset,
    /// The active-session table was full and a login at a higher privilege took this
    /// session's slot (it was the longest idle of those below that privilege).
    Preempted,
}

/// Things worth a log line or a metric, pulled with [`Endpoint::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A session became active.
    SessionOpened {
        /// BMC session ID.
        sid: u32,
        /// Client address.
        peer: SocketAddr,
        /// User name.
        user: String,
        /// Negotiated suite.
        suite: CipherSuite,
    },
    /// A session ended.
    SessionClosed {
        /// BMC session ID.
        sid: u32,
        /// Why.
        reason: CloseReason,
    },
    /// A login failed.
    LoginFailed {
        /// Client address.
        peer: SocketAddr,
        /// The user name the client gave, as a log may show it: never the text of a name no
        /// user has (it may be a password typed into the wrong field).
        user: LoggedName,
        /// Why.
        reason: LoginFailure,
    },
    /// A source address or a user reached the failed-login threshold and is locked out.
    LockedOut {
        /// The source, when a source was locked: an IPv4 address, or an IPv6 /64 as its
        /// network address (the unit failures are counted in).
        source: Option<IpAddr>,
        /// The user, when a user was locked.
        user: Option<String>,
        /// Until when (relative to the `now` the endpoint is given).
        until: Instant,
    },
    /// A login attempt was refused because its source or user is locked out.
    RefusedLockedOut {
        /// Client address.
        peer: SocketAddr,
    },
    /// A half-open session was evicted to make room (a sign of a flood).
    HalfOpenEvicted {
        /// Client address of the evicted session.
        peer: SocketAddr,
    },
    /// A session-less request was not answered: its source spent its budget of bytes by
    /// which such answers may exceed their requests (see [`crate::ratelimit`]; a reflection
    /// flood with a forged source address).
    AnswerThrottled {
        /// Client address (perhaps forged).
        peer: SocketAddr,
    },
    /// `count` events of `kind` happened in the last `over` but were not reported one by one
    /// (see [`crate::ratelimit`]): an unauthenticated peer must not be able to flood the log.
    /// For logs: metrics have counted them already, in [`Stats::unreported`].
    Suppressed {
        /// What was not reported.
        kind: EventKind,
        /// How many.
        count: u64,
        /// The time they happened in (about [`crate::ratelimit::LOG_INTERVAL`]).
        over: Duration,
    },
}

/// A user name a client gave, as logs show it ([`Event::LoginFailed`]).
///
/// A configured user's name is shown (escaped: [`wire::Escaped`]); any other name only by its
/// length and a short keyed hash, never its text: `ipmitool -U <password>` must not put the
/// password in the log (issue 15 item 7). The hash is HMAC-SHA256 under a random key of the
/// process ([`Endpoint::set_log_key`]), so equal names show equal tags (a repeated typo, a
/// name spray) while the text cannot be recovered from the log: 4 bytes of a keyed MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoggedName {
    /// No name given (yet): the failure came before RAKP 1 named a user, or it was empty.
    None,
    /// The name of a configured user.
    Known(String),
    /// A name no configured user has.
    Unknown {
        /// Its length in characters (of its lossy UTF-8 form: a byte that is not UTF-8
        /// counts as one).
        len: usize,
        /// The first 4 bytes of HMAC-SHA256(log key, name), big-endian.
        tag: u32,
    },
}

impl core::fmt::Display for LoggedName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::None => f.write_str("-"),
            Self::Known(n) => wire::Escaped(n).fmt(f),
            Self::Unknown { len, tag } => write!(f, "<unknown name, {len} chars, #{tag:08x}>"),
        }
    }
}

/// The events an unauthenticated peer can cause at will, one kind per way: these are
/// rate-limited ([`Event::Suppressed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// [`Event::LoginFailed`] with this reason.
    LoginFailed(LoginFailure),
    /// [`Event::RefusedLockedOut`].
    RefusedLockedOut,
    /// [`Event::HalfOpenEvicted`].
    HalfOpenEvicted,
    /// [`Event::AnswerThrottled`].
    AnswerThrottled,
    /// [`Event::LockedOut`] of a source (a user's lock-out needs that user's name and comes
    /// at most once per lock-out duration per user: it is always reported).
    SourceLockedOut,
}

impl EventKind {
    /// How many kinds there are.
    pub const COUNT: usize = 9;

    /// Every kind, in [`EventKind::index`] order.
    pub const ALL: [EventKind; Self::COUNT] = [
        Self::LoginFailed(LoginFailure::NoCipherMatch),
        Self::LoginFailed(LoginFailure::UnknownUser),
        Self::LoginFailed(LoginFailure::BadRole),
        Self::LoginFailed(LoginFailure::BadRakp3),
        Self::LoginFailed(LoginFailure::AbandonedAfterRakp2),
        Self::RefusedLockedOut,
        Self::HalfOpenEvicted,
        Self::SourceLockedOut,
        Self::AnswerThrottled,
    ];

    /// Position in [`EventKind::ALL`] (and in [`Stats::unreported`]).
    pub fn index(self) -> usize {
        match self {
            Self::LoginFailed(LoginFailure::NoCipherMatch) => 0,
            Self::LoginFailed(LoginFailure::UnknownUser) => 1,
            Self::LoginFailed(LoginFailure::BadRole) => 2,
            Self::LoginFailed(LoginFailure::BadRakp3) => 3,
            Self::LoginFailed(LoginFailure::AbandonedAfterRakp2) => 4,
            Self::RefusedLockedOut => 5,
            Self::HalfOpenEvicted => 6,
            Self::SourceLockedOut => 7,
            Self::AnswerThrottled => 8,
        }
    }

    /// A short label, for logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::LoginFailed(r) => r.label(),
            Self::RefusedLockedOut => "refused_locked_out",
            Self::HalfOpenEvicted => "half_open_evicted",
            Self::SourceLockedOut => "source_locked_out",
            Self::AnswerThrottled => "answer_throttled",
        }
    }
}

impl Event {
    /// The rate-limited kind of this event; `None` for events only an authenticated client (or
    /// a configured user's lock-out) causes, which are always reported.
    pub fn unauthenticated_kind(&self) -> Option<EventKind> {
        match self {
            Self::LoginFailed { reason, .. } => Some(EventKind::LoginFailed(*reason)),
            Self::RefusedLockedOut { .. } => Some(EventKind::RefusedLockedOut),
            Self::HalfOpenEvicted { .. } => Some(EventKind::HalfOpenEvicted),
            Self::AnswerThrottled { .. } => Some(EventKind::AnswerThrottled),
            Self::LockedOut {
                source: Some(_), ..
            } => Some(EventKind::SourceLockedOut),
            Self::LockedOut { .. }
            | Self::SessionOpened { .. }
            | Self::SessionClosed { .. }
            | Self::Suppressed { .. } => None,
        }
    }
}

/// One request answered by the endpoint itself or after the machine, for per-command
/// metrics (see [`Endpoint::take_answered`]). Retries answered from the cache are not
/// repeated here; they count in [`Stats::retries_answered`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answered {
    /// Network function of the request.
    pub netfn: NetFn,
    /// Command.
    pub cmd: u8,
    /// Completion code of the answer.
    pub cc: CompletionCode,
}

/// Why a datagram got no answer (issue 11 item 3): every `None` from [`Endpoint::handle`]
/// has one, read with [`Endpoint::last_dropped`] and counted in [`Stats::dropped_by`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than its headers or a length field says (`DecodeError::Truncated`).
    TooShort,
    /// Not RMCP v1.0, or an RMCP class / ASF message we do not serve (IPMI v2.0 §13.1.3).
    BadRmcpHeader,
    /// Framed, but a field, checksum or length is not what the format allows.
    Malformed,
    /// A session-less answer the source's byte budget cannot pay for (reflection guard).
    RateLimited,
    /// An in-session packet naming no active session, or from another peer than the one that
    /// logged in.
    UnknownSession,
    /// An in-session packet without integrity and confidentiality (suites 3 and 17 protect
    /// every packet, so this is not from our client).
    Unprotected,
    /// The integrity AuthCode does not verify, or the payload does not decrypt (§13.28).
    BadIntegrity,
    /// Sequence number outside the window or seen already (§6.12.13).
    OutOfWindow,
    /// A client retry whose first copy is still with the machine: its answer serves both.
    RetryInFlight,
    /// A payload type this BMC does not serve in a session (SOL, OEM: Activate Payload
    /// answers C1), or a session set-up message that is not a request.
    UnsupportedPayload,
    /// Well-formed, but nothing this BMC answers (IPMI 1.5 sessions, a session-less command
    /// not allowed outside a session, a set-up message too short to answer).
    NotAnswered,
}

impl DropReason {
    /// Every reason, in [`Self::index`] order.
    pub const ALL: [DropReason; 11] = [
        Self::TooShort,
        Self::BadRmcpHeader,
        Self::Malformed,
        Self::RateLimited,
        Self::UnknownSession,
        Self::Unprotected,
        Self::BadIntegrity,
        Self::OutOfWindow,
        Self::RetryInFlight,
        Self::UnsupportedPayload,
        Self::NotAnswered,
    ];

    /// Position in [`Self::ALL`] and in [`Stats::dropped_by`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::BadRmcpHeader => "bad_rmcp_header",
            Self::Malformed => "malformed",
            Self::RateLimited => "rate_limited",
            Self::UnknownSession => "unknown_session",
            Self::Unprotected => "unprotected",
            Self::BadIntegrity => "bad_integrity",
            Self::OutOfWindow => "out_of_window",
            Self::RetryInFlight => "retry_in_flight",
            Self::UnsupportedPayload => "unsupported_payload",
            Self::NotAnswered => "not_answered",
        }
    }

    fn of_decode(e: &wire::DecodeError) -> Self {
        match e {
            wire::DecodeError::Truncated(_) => Self::TooShort,
            wire::DecodeError::BadRmcpVersion
            | wire::DecodeError::UnsupportedClass(_)
            | wire::DecodeError::UnsupportedAsf => Self::BadRmcpHeader,
            _ => Self::Malformed,
        }
    }
}

/// Counters, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handled.
    pub datagrams: u64,
    /// Datagrams dropped as malformed, unauthenticated, replayed or not allowed.
    pub dropped: u64,
    /// `dropped` by reason, indexed by [`DropReason::index`].
    pub dropped_by: [u64; DropReason::ALL.len()],
    /// In-session requests answered from the reply cache.
    pub retries_answered: u64,
    /// Successful logins.
    pub logins: u64,
    /// Failed logins.
    pub login_failures: u64,
    /// Lock-outs imposed (source or user).
    pub lockouts: u64,
    /// Login attempts refused during a lock-out.
    pub refused_locked_out: u64,
    /// Logins refused because the active-session table was full (RAKP 4 status 01h).
    pub refused_full: u64,
    /// Requests answered C0 because too many machine requests were in flight.
    pub busy_in_flight: u64,
    /// Events not reported one by one (rate limit), by [`EventKind::index`]: counted here at
    /// once, so metrics built from events plus these miss none and never lag; the
    /// [`Event::Suppressed`] summary that reports them later is for logs only.
    pub unreported: [u64; EventKind::COUNT],
}

/// Failed-login bookkeeping for one source or one user.
#[derive(Debug, Default, Clone, Copy)]
struct Guard {
    window_start: Option<Instant>,
    failures: u32,
    locked_until: Option<Instant>,
}

impl Guard {
    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|t| now < t)
    }

    /// Count a failure; true if this one imposes a lock-out.
    fn fail(
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

    fn stale(&self, now: Instant, window: std::time::Duration) -> bool {
        !self.locked(now)
            && self
                .window_start
                .is_none_or(|t| now.saturating_duration_since(t) >= window)
    }
}

/// At most this many sources are tracked; beyond it the stalest are forgotten first (a
/// spoofed-source flood must not grow memory without bound).
const MAX_GUARDS: usize = 4096;

#[derive(Debug)]
enum State {
    /// Open Session answered; waiting for RAKP 1.
    Opened,
    /// RAKP 2 sent; waiting for RAKP 3.
    Rakp2Sent(Box<Handshake>),
    /// Authenticated.
    Active(Box<Active>),
}

#[derive(Debug)]
struct Handshake {
    user: usize,
    rm: [u8; 16],
    rc: [u8; 16],
    role: u8,
    /// The RAKP 1 payload and our RAKP 2 datagram, to answer an identical retransmission
    /// identically.
    rakp1: Vec<u8>,
    rakp2: Vec<u8>,
}

#[derive(Debug)]
struct Active {
    keys: SessionKeys,
    user: usize,
    privilege: Privilege,
    max_privilege: Privilege,
    window: SeqWindow,
    out_seq: OutSeq,
    cache: ReplyCache,
    /// RAKP 3 payload and our RAKP 4 datagram, for a client whose RAKP 4 got lost.
    rakp3: Vec<u8>,
    rakp4: Vec<u8>,
}

#[derive(Debug)]
struct Session {
    sid_m: u32,
    peer: SocketAddr,
    suite: CipherSuite,
    /// Requested maximum privilege from Open Session (0 = highest available).
    open_max: u8,
    created: Instant,
    last_seen: Instant,
    state: State,
}

/// BMC state that is not per session.
#[derive(Debug, Default)]
pub(crate) struct BmcState {
    /// Boot option parameters kept in the BMC (0, 1, 2, 3, 4, 6); parameter 5 lives in the
    /// machine so that the backend can act on it at the next boot.
    pub(crate) boot_params: HashMap<u8, Vec<u8>>,
    /// Chassis Identify: on until this instant, or forced on.
    pub(crate) identify_until: Option<Instant>,
    pub(crate) identify_forced: bool,
    /// Last power-on came from an IPMI command (Get Chassis Status byte 2 bit 4).
    pub(crate) last_power_on_by_ipmi: bool,
}

/// One virtual BMC.
pub struct Endpoint {
    /// Why the datagram being handled is dropped, as the handler that gave up said.
    why: Option<DropReason>,
    /// Why the last datagram handled was dropped (see [`Endpoint::last_dropped`]).
    last_dropped: Option<DropReason>,
    cfg: BmcConfig,
    wire_guid: [u8; 16],
    sessions: HashMap<u32, Session>,
    /// How many of `sessions` are active, kept by `activate` and `remove_session` so that
    /// counting needs no scan of the table on every packet.
    active: usize,
    /// Half-open sessions in creation order, for eviction (entries may be stale).
    half_open: VecDeque<u32>,
    /// Each source's half-open sessions in creation order (exact: kept by `open_session`,
    /// `remove_session` and activation), for the per-source share of the table.
    half_open_by_source: HashMap<IpAddr, VecDeque<u32>>,
    pending: HashMap<Ticket, Pending>,
    next_ticket: u64,
    bmc: BmcState,
    events: VecDeque<Event>,
    /// Rate limit of the events unauthenticated peers cause, and the `now` of the call in
    /// progress, which it runs on.
    event_limit: EventLimiter,
    clock: Option<Instant>,
    /// Per-source budget of the bytes session-less answers exceed their requests by.
    answer_budget: AnswerBudget,
    /// The key of [`LoggedName::Unknown`]'s tag: set by the runtime, else drawn at the first
    /// unknown name.
    log_key: Option<Zeroizing<[u8; 32]>>,
    stats: Stats,
    /// The request the last `handle`/`complete` answered, until `take_answered`.
    answered: Option<Answered>,
    /// Failed-login guards per source, keyed by [`source_key`] (IPv4 address or IPv6 /64).
    sources: HashMap<IpAddr, Guard>,
    users: HashMap<usize, Guard>,
    /// (user, source key) → last successful login: sources exempt from that user's
    /// lock-out (`Limits::lockout_trust`), at most `Limits::max_trusted` of them.
    trusted: HashMap<(usize, IpAddr), Instant>,
}

const MAX_EVENTS: usize = 1024;

impl core::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Endpoint")
            .field("sessions", &self.sessions.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A BMC with no sessions.
    pub fn new(cfg: BmcConfig) -> Self {
        Self {
            why: None,
            last_dropped: None,
            wire_guid: cfg.wire_guid(),
            cfg,
            sessions: HashMap::new(),
            active: 0,
            half_open: VecDeque::new(),
            half_open_by_source: HashMap::new(),
            pending: HashMap::new(),
            next_ticket: 1,
            bmc: BmcState::default(),
            events: VecDeque::new(),
            event_limit: EventLimiter::default(),
            clock: None,
            answer_budget: AnswerBudget::default(),
            log_key: None,
            stats: Stats::default(),
            answered: None,
            sources: HashMap::new(),
            users: HashMap::new(),
            trusted: HashMap::new(),
        }
    }

    /// Remember that `peer` logged in as `user` at `now` (see `Limits::lockout_trust`). When
    /// the table is full, the pair whose last login is oldest makes room.
    fn trust(&mut self, now: Instant, user: usize, peer: SocketAddr) {
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
    fn trusted(&self, now: Instant, user: usize, peer: SocketAddr) -> bool {
        let trust = self.cfg.limits.lockout_trust;
        self.trusted
            .get(&(user, source_key(peer.ip())))
            .is_some_and(|t| now.saturating_duration_since(*t) < trust)
    }

    fn locked_out(&mut self, source: Option<IpAddr>, user: Option<String>, until: Instant) {
        self.stats.lockouts += 1;
        self.event(Event::LockedOut {
            source,
            user,
            until,
        });
    }

    /// Count a failed login against its source and, if known, its user; lock them out at
    /// their thresholds (online-guessing defence, protocol notes §11.3).
    fn login_failed(&mut self, now: Instant, peer: SocketAddr, user: String, reason: LoginFailure) {
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

    /// The key [`LoggedName::Unknown`]'s tag is keyed with. A runtime serving many BMCs gives
    /// them one per process, so that a name sprayed across them shows one tag; without it,
    /// each endpoint draws its own from the entropy at the first unknown name.
    pub fn set_log_key(&mut self, key: [u8; 32]) {
        self.log_key = Some(Zeroizing::new(key));
    }

    fn ensure_log_key(&mut self, rng: &mut dyn Entropy) {
        if self.log_key.is_none() {
            let mut key = Zeroizing::new([0u8; 32]);
            rng.fill(&mut key[..]);
            self.log_key = Some(key);
        }
    }

    /// `name` (the lossy UTF-8 of what the client sent) as a log may show it.
    fn logged_name(&self, name: &str) -> LoggedName {
        if name.is_empty() {
            LoggedName::None
        } else if self.cfg.users.iter().any(|u| u.name == name) {
            LoggedName::Known(name.to_string())
        } else {
            let key = self.log_key.as_deref().map_or(&[0u8; 32][..], |k| &k[..]);
            let mac = CipherSuite::Suite17.hmac(key, &[name.as_bytes()]);
            LoggedName::Unknown {
                len: name.chars().count(),
                tag: u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]),
            }
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BmcConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The request the last [`Endpoint::handle`] or [`Endpoint::complete`] answered, if it
    /// answered one (a cheap hook for per-command metrics: a copy, no allocation).
    pub fn take_answered(&mut self) -> Option<Answered> {
        self.answered.take()
    }

    /// Number of active and half-open sessions.
    pub fn session_counts(&self) -> (usize, usize) {
        (self.active, self.sessions.len() - self.active)
    }

    /// The active session whose slot a new session with ceiling `privilege` may take when the
    /// table is full: the longest idle of those whose ceiling is lower. A scan of the table,
    /// done only when it is full.
    fn preemptable(&self, privilege: Privilege) -> Option<u32> {
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
    fn remove_session(&mut self, sid: u32) -> Option<Session> {
        let s = self.sessions.remove(&sid)?;
        if matches!(s.state, State::Active(_)) {
            self.active -= 1;
        } else {
            self.leave_half_open(sid, s.peer);
        }
        Some(s)
    }

    /// Drop `sid` from its source's half-open list (it became active or went away).
    fn leave_half_open(&mut self, sid: u32, peer: SocketAddr) {
        let key = source_key(peer.ip());
        if let Some(q) = self.half_open_by_source.get_mut(&key) {
            q.retain(|&s| s != sid);
            if q.is_empty() {
                self.half_open_by_source.remove(&key);
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn event(&mut self, e: Event) {
        if let (Some(kind), Some(now)) = (e.unauthenticated_kind(), self.clock) {
            let (report, summary) = self.event_limit.admit(kind, now);
            if let Some((kind, count, over)) = summary {
                self.push_event(Event::Suppressed { kind, count, over });
            }
            if !report {
                self.stats.unreported[kind.index()] += 1;
                return;
            }
        }
        self.push_event(e);
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Whether a [`Event::Suppressed`] summary is waiting for [`Endpoint::handle_timeout`]
    /// (cheap; a runtime that arms its timer only for sessions must arm it for this too).
    pub fn summary_pending(&self) -> bool {
        self.event_limit.next_flush().is_some()
    }

    /// Handle one datagram from `peer`.
    pub fn handle(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        datagram: &[u8],
        rng: &mut dyn Entropy,
    ) -> Option<Output> {
        self.clock = Some(now);
        self.stats.datagrams += 1;
        let decoded = wire::decode_datagram(datagram);
        // Session-less answers are larger than their requests: paid from the source's budget
        // (protocol notes §11: rate-limit what unauthenticated peers get; issue 15 item 10).
        // Open Session and RAKP are not: their answers to a forged source are at most 1.08
        // times the request (Open Session, 52 B for 48 B; shorter requests get shorter
        // refusals), and RAKP 2 goes only to the address that was granted the session ID.
        let budgeted = matches!(&decoded, Ok(Datagram::AsfPing { .. } | Datagram::V15(_)))
            || matches!(&decoded, Ok(Datagram::V20(p)) if p.session_id == 0 && p.payload_type == PayloadType::IPMI);
        let source = source_key(peer.ip());
        if budgeted && !self.answer_budget.allows(source, now) {
            self.count_drop(DropReason::RateLimited);
            self.event(Event::AnswerThrottled { peer });
            return None;
        }
        self.why = None;
        self.last_dropped = None;
        let out = match decoded {
            Ok(Datagram::AsfPing { tag }) => {
                let mut out = Vec::with_capacity(28);
                wire::encode_asf_pong(tag, &mut out);
                Some(Output::Transmit {
                    to: peer,
                    data: out,
                })
            }
            Ok(Datagram::V15(p)) => self.handle_v15(peer, &p),
            Ok(Datagram::V20(p)) if p.session_id == 0 => self.handle_setup(now, peer, &p, rng),
            Ok(Datagram::V20(p)) => self.handle_in_session(now, peer, datagram, &p, rng),
            Err(e) => {
                self.why = Some(DropReason::of_decode(&e));
                None
            }
        };
        match &out {
            None => {
                let why = self.why.take().unwrap_or(DropReason::NotAnswered);
                self.count_drop(why);
            }
            Some(Output::Transmit { data, .. }) if budgeted => {
                self.answer_budget
                    .spend(source, now, data.len().saturating_sub(datagram.len()));
            }
            Some(_) => {}
        }
        out
    }

    /// Count a datagram dropped for `why`, and remember it for [`Self::last_dropped`].
    fn count_drop(&mut self, why: DropReason) {
        self.stats.dropped += 1;
        self.stats.dropped_by[why.index()] += 1;
        self.last_dropped = Some(why);
    }

    /// Note why the datagram being handled is dropped (the first reason given wins); `None`,
    /// for `return self.drop(..)` where a handler gives up.
    fn drop<T>(&mut self, why: DropReason) -> Option<T> {
        self.why.get_or_insert(why);
        None
    }

    /// Why the last datagram given to [`Self::handle`] got no answer; `None` when it was
    /// answered or handed to the machine.
    pub fn last_dropped(&self) -> Option<DropReason> {
        self.last_dropped
    }

    /// IPMI 1.5 format: only session-less Get Channel Authentication Capabilities (and Get
    /// Channel Cipher Suites) are served; IPMI 1.5 sessions are not offered at all (their
    /// AuthCodes are weak, see the protocol notes §11.4).
    fn handle_v15(&mut self, peer: SocketAddr, p: &V15Packet<'_>) -> Option<Output> {
        if p.auth_type != 0 || p.session_id != 0 {
            return None;
        }
        let msg = self.answer_sessionless(p.message)?;
        let mut out = Vec::with_capacity(msg.len() + 14);
        wire::encode_v15_sessionless(&msg, &mut out);
        Some(Output::Transmit {
            to: peer,
            data: out,
        })
    }

    /// Answer a session-less IPMI message (the commands allowed outside a session, IPMI v2.0
    /// §13.14 and §22.13/§22.15), noting it for [`Self::take_answered`]; the framing (1.5 or
    /// 2.0) is the caller's. `None` for anything not to be answered.
    fn answer_sessionless(&mut self, message: &[u8]) -> Option<Vec<u8>> {
        let req = IpmiRequest::decode(message).ok()?;
        let (cc, data) = commands::sessionless(&req, self.cfg.kg.is_some())?;
        self.answered = Some(Answered {
            netfn: req.netfn,
            cmd: req.cmd,
            cc,
        });
        let mut msg = Vec::with_capacity(32);
        req.encode_response(cc, &data, &mut msg);
        Some(msg)
    }

    fn handle_setup(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        p: &V20Packet<'_>,
        rng: &mut dyn Entropy,
    ) -> Option<Output> {
        if p.encrypted || p.authenticated {
            return None;
        }
        let data = match p.payload_type {
            PayloadType::IPMI => {
                let msg = self.answer_sessionless(p.payload)?;
                rmcp::setup_datagram(PayloadType::IPMI, &msg)
            }
            PayloadType::OPEN_SESSION_REQUEST => self.open_session(now, peer, p.payload, rng)?,
            PayloadType::RAKP1 => self.rakp1(now, peer, p.payload, rng)?,
            PayloadType::RAKP3 => self.rakp3(now, peer, p.payload)?,
            _ => return self.drop(DropReason::UnsupportedPayload),
        };
        Some(Output::Transmit { to: peer, data })
    }

    /// Open Session Request → Response (IPMI v2.0 §13.17–13.18). A refusal of a full-length
    /// request is answered in the full 36-byte layout, which every client parses.
    fn open_session(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        p: &[u8],
        rng: &mut dyn Entropy,
    ) -> Option<Vec<u8>> {
        // Tag and SIDm are read even from a request that does not parse, to answer it.
        let (tag, Some(sid_m)) = rmcp::peek_tag_and_id(p)? else {
            return None;
        };
        // A refusal is never longer than the request (issue 15 item 10: a 1-byte payload got
        // the 36-byte layout, 52 B for 17 B, a reflector): the full layout for a full-length
        // request, else tag, status, reserved and SIDm (8 bytes), else nothing (too short to
        // name a console session ID to answer to). Protocol notes §4.3: clients read the status
        // from byte 2 (ipmi_sim answers tag and status only, and ipmitool reports it).
        let full = p.len() >= 32;
        let refuse = |status| {
            let r = OpenSessionResponse::refusal(tag, status, sid_m);
            Some(if full {
                r.to_datagram()
            } else {
                r.short_refusal_datagram()
            })
        };
        // Exactly 32 bytes, each algorithm record of its own type with payload length 8 or 0
        // (Table 13-9); anything else is 12h, as before.
        let Ok(req) = OpenSessionRequest::read(p) else {
            return refuse(RakpStatus::ILLEGAL_PARAMETER);
        };
        if sid_m == 0 {
            return refuse(RakpStatus::ILLEGAL_PARAMETER);
        }
        let Some(suite) = pick_suite(&req) else {
            // Suite 0 and everything else we do not complete: status 11 is the one Ironic's
            // cipher-suite fallback recognises ("no matching cipher suite").
            self.login_failed(now, peer, String::new(), LoginFailure::NoCipherMatch);
            return refuse(RakpStatus::NO_CIPHER_MATCH);
        };
        if self
            .sources
            .get(&source_key(peer.ip()))
            .is_some_and(|g| g.locked(now))
        {
            self.stats.refused_locked_out += 1;
            self.event(Event::RefusedLockedOut { peer });
            return refuse(RakpStatus::NO_RESOURCES);
        }
        let open_max = req.max_privilege & 0x0f;
        if open_max > 4 {
            return refuse(RakpStatus::INVALID_ROLE);
        }
        // With the table full, go on only if this login could take a lower-privilege
        // session's slot at RAKP 3: its ceiling is the requested maximum (0: the highest)
        // and at most the highest privilege any user holds.
        let (active, _) = self.session_counts();
        if active >= self.cfg.limits.max_sessions {
            let users_max = self.cfg.users.iter().map(|u| u.max_privilege).max();
            let ceiling = Privilege::from_u8(open_max)
                .unwrap_or(Privilege::Administrator)
                .min(users_max.unwrap_or(Privilege::Callback));
            if self.preemptable(ceiling).is_none() {
                return refuse(RakpStatus::NO_RESOURCES);
            }
        }
        self.make_room_for_half_open(peer);
        let sid_c = self.new_session_id(rng);
        self.sessions.insert(
            sid_c,
            Session {
                sid_m,
                peer,
                suite,
                open_max,
                created: now,
                last_seen: now,
                state: State::Opened,
            },
        );
        self.half_open.push_back(sid_c);
        self.half_open_by_source
            .entry(source_key(peer.ip()))
            .or_default()
            .push_back(sid_c);
        let (auth, integ, conf) = suite.algorithms();
        Some(
            OpenSessionResponse {
                tag,
                status: RakpStatus::OK,
                max_privilege: if open_max == 0 { 4 } else { open_max },
                sid_m,
                granted: Some(Granted {
                    sid_c,
                    auth,
                    integ,
                    conf,
                }),
            }
            .to_datagram(),
        )
    }

    /// Make room for one more half-open session from `peer`. A source that already holds its
    /// share (`max_half_open_per_source`) gives up its own oldest handshake, so a flood from
    /// one host (or one IPv6 /64) only recycles its own entries and never evicts another
    /// client's handshake; only when many sources together fill the table is the oldest
    /// handshake of any source evicted. (A spoofed-source flood cannot get past Open Session,
    /// since it never sees the session ID we grant; it ages through the table in creation
    /// order like everything else.) Protocol notes §11.6: cap half-open sessions per BMC and
    /// per source.
    /// Drop the half-open queue's entries for sessions that are gone or active, once the queue
    /// is longer than `bound`.
    fn compact_half_open_above(&mut self, bound: usize) {
        if self.half_open.len() > bound {
            let sessions = &self.sessions;
            self.half_open.retain(|sid| {
                sessions
                    .get(sid)
                    .is_some_and(|s| !matches!(s.state, State::Active(_)))
            });
        }
    }

    fn make_room_for_half_open(&mut self, peer: SocketAddr) {
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

    /// A random, non-zero BMC session ID not in use (IPMI v2.0 §13.17: SIDc is the BMC's
    /// choice; random IDs make off-path injection a 32-bit guess).
    fn new_session_id(&mut self, rng: &mut dyn Entropy) -> u32 {
        loop {
            let mut b = [0u8; 4];
            rng.fill(&mut b);
            let id = u32::from_le_bytes(b);
            if id != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// RAKP 1 → RAKP 2 (IPMI v2.0 §13.20–13.21). Always answered: a silent drop makes
    /// ipmitool retry four times and then send a session-ID-0 packet (protocol notes §4.4).
    fn rakp1(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        p: &[u8],
        rng: &mut dyn Entropy,
    ) -> Option<Vec<u8>> {
        // Tag and SIDc are read even from a RAKP 1 that does not parse, to answer it.
        let (tag, Some(sid_c)) = rmcp::peek_tag_and_id(p)? else {
            return None;
        };
        let refuse = |st, sid_m| Some(Rakp2::refusal(tag, st, sid_m).to_datagram());
        let Some(sess) = self.sessions.get(&sid_c) else {
            return refuse(RakpStatus::INVALID_SESSION_ID, 0);
        };
        let sid_m = sess.sid_m;
        if sess.peer != peer {
            return refuse(RakpStatus::INVALID_SESSION_ID, 0);
        }
        match &sess.state {
            State::Opened => {}
            // An identical retransmission gets the identical answer.
            State::Rakp2Sent(h) if h.rakp1 == p => return Some(h.rakp2.clone()),
            State::Rakp2Sent(_) => {}
            State::Active(_) => return refuse(RakpStatus::INVALID_SESSION_ID, sid_m),
        }
        // ULENm is at most 16 and the payload is exactly 28 + ULENm bytes (Table 13-11).
        let Ok(m) = Rakp1::read(p) else {
            return Some(self.fail_rakp1(
                now,
                sid_c,
                peer,
                tag,
                RakpStatus::INVALID_NAME_LENGTH,
                "",
                None,
            ));
        };
        let name = m.user;
        let shown = String::from_utf8_lossy(name).into_owned();
        if !self.cfg.users.iter().any(|u| u.name.as_bytes() == name) {
            // It will be logged, by its keyed hash only.
            self.ensure_log_key(rng);
        }
        let role = m.role;
        let Some(requested) = Privilege::from_u8(role & 0x0f) else {
            return Some(self.fail_rakp1(
                now,
                sid_c,
                peer,
                tag,
                RakpStatus::INVALID_ROLE,
                &shown,
                Some(LoginFailure::BadRole),
            ));
        };
        let Some(user) = self
            .cfg
            .users
            .iter()
            .position(|u| !name.is_empty() && u.name.as_bytes() == name)
        else {
            return Some(self.fail_rakp1(
                now,
                sid_c,
                peer,
                tag,
                RakpStatus::UNAUTHORIZED_NAME,
                &shown,
                Some(LoginFailure::UnknownUser),
            ));
        };
        // A user lock-out counts failures from every source, which needs no secret to cause
        // (RAKP 1 and 3 are unauthenticated): a source that logged in as this user recently
        // is exempt, so the operator is not locked out by someone else's garbage. Its own
        // failures still lock that source (checked at Open Session).
        if self.users.get(&user).is_some_and(|g| g.locked(now)) && !self.trusted(now, user, peer) {
            self.stats.refused_locked_out += 1;
            self.event(Event::RefusedLockedOut { peer });
            let sid_m = self.remove_session(sid_c).map_or(0, |s| s.sid_m);
            return refuse(RakpStatus::NO_RESOURCES, sid_m);
        }
        if requested > self.cfg.users[user].max_privilege {
            return Some(self.fail_rakp1(
                now,
                sid_c,
                peer,
                tag,
                RakpStatus::UNAUTHORIZED_ROLE,
                &shown,
                Some(LoginFailure::BadRole),
            ));
        }
        let rm = m.rm;
        let mut rc = [0u8; 16];
        rng.fill(&mut rc);
        let sess = self.sessions.get_mut(&sid_c)?;
        let auth = rakp2_auth(
            sess.suite,
            &self.cfg.users[user].password,
            sid_m,
            sid_c,
            &rm,
            &rc,
            &self.wire_guid,
            role,
            name,
        );
        let r = Rakp2 {
            tag,
            status: RakpStatus::OK,
            sid_m,
            body: Some(Rakp2Body {
                rc,
                guid: self.wire_guid,
                auth: &auth,
            }),
        }
        .to_datagram();
        sess.last_seen = now;
        sess.state = State::Rakp2Sent(Box::new(Handshake {
            user,
            rm,
            rc,
            role,
            rakp1: p.to_vec(),
            rakp2: r.clone(),
        }));
        Some(r)
    }

    #[allow(clippy::too_many_arguments)]
    fn fail_rakp1(
        &mut self,
        now: Instant,
        sid_c: u32,
        peer: SocketAddr,
        tag: u8,
        st: RakpStatus,
        user: &str,
        why: Option<LoginFailure>,
    ) -> Vec<u8> {
        let sid_m = self.remove_session(sid_c).map_or(0, |s| s.sid_m);
        if let Some(reason) = why {
            self.login_failed(now, peer, user.to_string(), reason);
        }
        Rakp2::refusal(tag, st, sid_m).to_datagram()
    }

    /// RAKP 3 → RAKP 4 (IPMI v2.0 §13.22–13.23); on success the session becomes active at
    /// USER privilege until Set Session Privilege Level raises it.
    fn rakp3(&mut self, now: Instant, peer: SocketAddr, p: &[u8]) -> Option<Vec<u8>> {
        // Any 8 bytes parse (the AuthCode is the rest): the status and SIDc are always there
        // to answer to.
        let m = Rakp3::read(p).ok()?;
        let (tag, sid_c) = (m.tag, m.sid_c);
        let refuse = |st, sid_m| Some(Rakp4::refusal(tag, st, sid_m).to_datagram());
        let Some(sess) = self.sessions.get_mut(&sid_c) else {
            return refuse(RakpStatus::INVALID_SESSION_ID, 0);
        };
        if sess.peer != peer {
            return refuse(RakpStatus::INVALID_SESSION_ID, 0);
        }
        let sid_m = sess.sid_m;
        let h = match &sess.state {
            State::Rakp2Sent(h) => h,
            State::Active(a) if a.rakp3 == p => return Some(a.rakp4.clone()),
            _ => return refuse(RakpStatus::INVALID_SESSION_ID, sid_m),
        };
        let user = &self.cfg.users[h.user];
        if !m.status.is_ok() {
            // The console reports its own failure (e.g. it could not verify RAKP 2).
            let name = user.name.clone();
            self.remove_session(sid_c);
            self.login_failed(now, peer, name, LoginFailure::AbandonedAfterRakp2);
            return None;
        }
        let expect = rakp3_auth(
            sess.suite,
            &user.password,
            &h.rc,
            sid_m,
            h.role,
            user.name.as_bytes(),
        );
        if !crate::crypto::ct_eq(&expect, m.auth) {
            let name = user.name.clone();
            self.remove_session(sid_c);
            self.login_failed(now, peer, name, LoginFailure::BadRakp3);
            return refuse(RakpStatus::INVALID_ICV, sid_m);
        }
        let kg: &[u8] = self
            .cfg
            .kg
            .as_deref()
            .map_or(&user.password[..], |k| &k[..]);
        let keys = SessionKeys::derive(sess.suite, kg, &h.rm, &h.rc, h.role, user.name.as_bytes());
        let icv = keys.rakp4_icv(&h.rm, sid_c, &self.wire_guid);
        let r = Rakp4 {
            tag,
            status: RakpStatus::OK,
            sid_m,
            icv: &icv,
        }
        .to_datagram();
        // The session's ceiling: the RAKP 1 role, the Open Session request, the user's limit.
        let mut max = Privilege::from_u8(h.role & 0x0f).unwrap_or(Privilege::User);
        if let Some(o) = Privilege::from_u8(sess.open_max) {
            max = max.min(o);
        }
        max = max.min(user.max_privilege);
        let user_idx = h.user;
        let name = user.name.clone();
        let suite = sess.suite;
        // The active-session cap holds where a session becomes active, not only at Open
        // Session: many handshakes opened while the table had room must not all become
        // active (issue 15 item 2). RAKP 4 then carries 01h, "insufficient resources to
        // create a session" (IPMI v2.0 §13.24, Table 13-15); the password was right, so this
        // is no failed login.
        if self.active >= self.cfg.limits.max_sessions {
            // A full table of lower-privilege sessions must not lock out a higher one (32
            // USER sessions kept alive used to lock out Ironic's ADMINISTRATOR, issue 15
            // item 3): the longest-idle session below this one's ceiling gives up its slot.
            let Some(victim) = self.preemptable(max) else {
                self.remove_session(sid_c);
                self.stats.refused_full += 1;
                return refuse(RakpStatus::NO_RESOURCES, sid_m);
            };
            self.remove_session(victim);
            self.event(Event::SessionClosed {
                sid: victim,
                reason: CloseReason::Preempted,
            });
        }
        let sess = self.sessions.get_mut(&sid_c)?;
        sess.last_seen = now;
        sess.state = State::Active(Box::new(Active {
            keys,
            user: user_idx,
            privilege: Privilege::User.min(max),
            max_privilege: max,
            window: SeqWindow::default(),
            out_seq: OutSeq::default(),
            cache: ReplyCache::default(),
            rakp3: p.to_vec(),
            rakp4: r.clone(),
        }));
        self.active += 1;
        self.leave_half_open(sid_c, peer);
        self.trust(now, user_idx, peer);
        self.stats.logins += 1;
        self.event(Event::SessionOpened {
            sid: sid_c,
            peer,
            user: name,
            suite,
        });
        Some(r)
    }

    fn handle_in_session(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        datagram: &[u8],
        p: &V20Packet<'_>,
        rng: &mut dyn Entropy,
    ) -> Option<Output> {
        let sid_c = p.session_id;
        let Some(sess) = self.sessions.get_mut(&sid_c) else {
            return self.drop(DropReason::UnknownSession);
        };
        let State::Active(act) = &mut sess.state else {
            return self.drop(DropReason::UnknownSession);
        };
        if sess.peer != peer {
            return self.drop(DropReason::UnknownSession);
        }
        // Suites 3 and 17 protect every packet: anything less is not from our client. The
        // AuthCode comparison is constant-time (§13.28.4).
        match seal::verify(&act.keys, datagram, p) {
            Ok(()) => {}
            Err(OpenError::Unprotected) => return self.drop(DropReason::Unprotected),
            Err(OpenError::Trailer(_)) => return self.drop(DropReason::Malformed),
            Err(_) => return self.drop(DropReason::BadIntegrity),
        }
        if !act.window.check(p.seq) {
            return self.drop(DropReason::OutOfWindow);
        }
        act.window.accept(p.seq);
        sess.last_seen = now;
        // Requests are short (the longest this BMC serves carry a few dozen bytes): decrypt
        // on the stack, on the heap only for an unusually long payload.
        let mut stack = Zeroizing::new([0u8; 256]);
        let mut heap;
        let buf: &mut [u8] = if p.payload.len() <= 16 + stack.len() {
            &mut stack[..]
        } else {
            heap = Zeroizing::new(vec![0u8; p.payload.len()]);
            &mut heap[..]
        };
        let Ok(n) = seal::decrypt_into(&act.keys, p, buf) else {
            return self.drop(DropReason::BadIntegrity);
        };
        let plain = &buf[..n];
        if p.payload_type != PayloadType::IPMI {
            // SOL and OEM payloads are not offered (Activate Payload answers C1).
            return self.drop(DropReason::UnsupportedPayload);
        }
        let Ok(req) = IpmiRequest::decode(plain) else {
            return self.drop(DropReason::Malformed);
        };
        let key = RetryKey {
            rq_seq: req.rq_seq,
            netfn: req.netfn,
            cmd: req.cmd,
            data: req.data.to_vec(),
        };
        if let Some(msg) = act.cache.get(&key, now, self.cfg.limits.reply_cache_ttl) {
            // A client retry: answer again, never execute twice (IPMI v2.0 §6.12: a retry
            // repeats rqSeq). `msg` is a shared handle to the cached answer, not a copy.
            self.stats.retries_answered += 1;
            let data = seal(sess, &msg, rng);
            return Some(Output::Transmit { to: peer, data });
        }
        if self
            .pending
            .values()
            .any(|pd| pd.sid == sid_c && pd.key == key)
        {
            // The first copy is still with the machine; its answer will serve this retry.
            return self.drop(DropReason::RetryInFlight);
        }
        let State::Active(act) = &mut sess.state else {
            return None;
        };
        let mut ctx = CmdContext {
            sid: sid_c,
            privilege: act.privilege,
            max_privilege: act.max_privilege,
            user_id: act.user as u8 + 2,
            user_count: self.cfg.users.len(),
            active_sessions: self.active,
            max_sessions: self.cfg.limits.max_sessions,
            now,
        };
        let outcome = commands::dispatch(&req, &mut ctx, &self.cfg, &self.wire_guid, &mut self.bmc);
        let sess = self.sessions.get_mut(&sid_c)?;
        let State::Active(act) = &mut sess.state else {
            return None;
        };
        act.privilege = ctx.privilege;
        match outcome {
            Outcome::Reply {
                mut cc,
                data,
                mut after,
            } => {
                // Close Session of an ID that names no active session: 87h, "invalid session
                // ID in request" (IPMI v2.0 §22.19), not 00h. (The command handler knows only
                // its own session; the table is here.) Half-open handshakes are no sessions
                // a console could name.
                if let After::CloseSession(target) = after
                    && !self
                        .sessions
                        .get(&target)
                        .is_some_and(|s| matches!(s.state, State::Active(_)))
                {
                    cc = CompletionCode::INVALID_SESSION_ID;
                    after = After::None;
                }
                let sess = self.sessions.get_mut(&sid_c)?;
                self.answered = Some(Answered {
                    netfn: req.netfn,
                    cmd: req.cmd,
                    cc,
                });
                let mut msg = Vec::with_capacity(data.len() + 8);
                req.encode_response(cc, &data, &mut msg);
                let out = seal(sess, &msg, rng);
                if let State::Active(act) = &mut sess.state {
                    act.cache.put(key, now, msg);
                }
                self.after(after);
                Some(Output::Transmit {
                    to: peer,
                    data: out,
                })
            }
            Outcome::Machine { request, kind } => {
                // Machine requests in flight are bounded per session and per BMC (issue 11
                // item 5): each is a task and often a cloud call in the runtime. Beyond the
                // bound the client hears C0 "node busy" at once (IPMI v2.0 §5.2), which
                // ipmitool and Ironic retry; the busy answer is not cached, so the retry is
                // a fresh request. (A console has one request outstanding as a rule.)
                let l = &self.cfg.limits;
                if self.pending.len() >= l.max_pending
                    || self.pending.values().filter(|pd| pd.sid == sid_c).count()
                        >= l.max_pending_per_session
                {
                    self.stats.busy_in_flight += 1;
                    self.answered = Some(Answered {
                        netfn: req.netfn,
                        cmd: req.cmd,
                        cc: CompletionCode::NODE_BUSY,
                    });
                    let mut msg = Vec::with_capacity(8);
                    req.encode_response(CompletionCode::NODE_BUSY, &[], &mut msg);
                    let sess = self.sessions.get_mut(&sid_c)?;
                    let data = seal(sess, &msg, rng);
                    return Some(Output::Transmit { to: peer, data });
                }
                let ticket = Ticket(self.next_ticket);
                self.next_ticket += 1;
                self.pending.insert(
                    ticket,
                    Pending {
                        sid: sid_c,
                        peer,
                        header: commands::Header::of(&req),
                        key,
                        kind,
                    },
                );
                Some(Output::Machine { ticket, request })
            }
            Outcome::Drop => None,
        }
    }

    fn after(&mut self, after: After) {
        match after {
            After::None => {}
            After::CloseSession(sid) => {
                if self.remove_session(sid).is_some() {
                    self.event(Event::SessionClosed {
                        sid,
                        reason: CloseReason::Closed,
                    });
                }
            }
            After::ResetBmc => {
                // A virtual BMC "resets" by forgetting every session (protocol notes §8.3).
                let sids: Vec<u32> = self.sessions.keys().copied().collect();
                for sid in sids {
                    self.remove_session(sid);
                    self.event(Event::SessionClosed {
                        sid,
                        reason: CloseReason::BmcReset,
                    });
                }
                self.half_open.clear();
                self.pending.clear();
            }
        }
    }

    /// Answer a [`MachineRequest`]: returns the datagram for the client, unless its session
    /// is gone. The reply is cached, so a retry that arrives later is answered from it.
    pub fn complete(
        &mut self,
        now: Instant,
        ticket: Ticket,
        result: MachineResult,
        rng: &mut dyn Entropy,
    ) -> Option<Output> {
        self.clock = Some(now);
        let pd = self.pending.remove(&ticket)?;
        let (cc, data) = commands::machine_reply(&pd.kind, result, &mut self.bmc, now);
        let sess = self.sessions.get_mut(&pd.sid)?;
        self.answered = Some(Answered {
            netfn: pd.key.netfn,
            cmd: pd.key.cmd,
            cc,
        });
        let mut msg = Vec::with_capacity(data.len() + 8);
        pd.header.encode_response(cc, &data, &mut msg);
        let out = seal(sess, &msg, rng);
        if let State::Active(act) = &mut sess.state {
            act.cache.put(pd.key, now, msg);
        }
        Some(Output::Transmit {
            to: pd.peer,
            data: out,
        })
    }

    /// Expire half-open and idle sessions. Call at least every second or at
    /// [`Endpoint::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = Some(now);
        let limits = &self.cfg.limits;
        let mut expired = Vec::new();
        for (&sid, s) in &self.sessions {
            let age = now.saturating_duration_since(s.last_seen);
            match &s.state {
                State::Active(_) if age >= limits.idle_timeout => expired.push((sid, None)),
                State::Opened if age >= limits.setup_timeout => expired.push((sid, None)),
                State::Rakp2Sent(h) if age >= limits.setup_timeout => {
                    expired.push((sid, Some((s.peer, self.cfg.users[h.user].name.clone()))))
                }
                _ => {}
            }
        }
        for (sid, failed) in expired {
            let was_active = matches!(
                self.remove_session(sid).map(|s| s.state),
                Some(State::Active(_))
            );
            if was_active {
                self.event(Event::SessionClosed {
                    sid,
                    reason: CloseReason::IdleTimeout,
                });
            } else if let Some((peer, user)) = failed {
                self.login_failed(now, peer, user, LoginFailure::AbandonedAfterRakp2);
            }
        }
        self.compact_half_open_above(2 * self.cfg.limits.max_half_open);
        let window = self.cfg.limits.lockout_window;
        self.sources.retain(|_, g| !g.stale(now, window));
        self.users.retain(|_, g| !g.stale(now, window));
        if self.bmc.identify_until.is_some_and(|t| now >= t) {
            self.bmc.identify_until = None;
        }
        let summaries: Vec<_> = self.event_limit.flush(now).collect();
        for (kind, count, over) in summaries {
            self.push_event(Event::Suppressed { kind, count, over });
        }
    }

    /// The earliest instant at which [`Endpoint::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let l = &self.cfg.limits;
        self.sessions
            .values()
            .map(|s| {
                s.last_seen
                    + match s.state {
                        State::Active(_) => l.idle_timeout,
                        _ => l.setup_timeout,
                    }
            })
            .chain(self.bmc.identify_until)
            .chain(self.event_limit.next_flush())
            .min()
    }

    /// Requests still waiting for [`Endpoint::complete`].
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The time a session was created (for tests of expiry).
    #[doc(hidden)]
    pub fn session_created(&self, sid: u32) -> Option<Instant> {
        self.sessions.get(&sid).map(|s| s.created)
    }
}

/// The unit the half-open table is shared by: an IPv4 address, or an IPv6 /64 (one host
/// usually holds a whole /64, so per-address shares would be no limit there).
/// The suite an Open Session Request asks for. A null algorithm payload (length 0) asks the
/// BMC to choose that algorithm (IPMI v2.0 §13.17, Table 13-9 "null"; OpenIPMI's `bmcpick`
/// sends all three null); the BMC then names its choice in the response (§13.18). We take
/// the first suite, in preference order (17, then 3), whose algorithms agree with every
/// algorithm that was proposed, so all-null gets suite 17 and an explicit RAKP-none or
/// integrity/confidentiality "none" (cipher suite 0) still matches nothing and is refused.
fn pick_suite(req: &OpenSessionRequest) -> Option<CipherSuite> {
    CipherSuite::ALL.into_iter().find(|s| {
        let (a, i, c) = s.algorithms();
        req.auth.is_none_or(|x| x == a)
            && req.integ.is_none_or(|x| x == i)
            && req.conf.is_none_or(|x| x == c)
    })
}

fn source_key(ip: IpAddr) -> IpAddr {
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

/// Wrap an IPMI message for the client: AES-CBC-128 with a fresh IV, the next outbound
/// sequence number (starting at 1, skipping 0), the console's session ID and the integrity
/// trailer.
fn seal(sess: &mut Session, msg: &[u8], rng: &mut dyn Entropy) -> Vec<u8> {
    let State::Active(act) = &mut sess.state else {
        return Vec::new();
    };
    let seq = act.out_seq.advance();
    let mut iv = [0u8; 16];
    rng.fill(&mut iv);
    seal::seal(&act.keys, PayloadType::IPMI, sess.sid_m, seq, &iv, msg)
}
