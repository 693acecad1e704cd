//! What the endpoint reports: events for logs and metrics (rate-limited where an
//! unauthenticated peer can cause them), the reason of every dropped datagram, and counters.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{Endpoint, Entropy};
use crate::codes::{CompletionCode, NetFn};
use crate::crypto::CipherSuite;
use crate::wire;

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

/// Why a datagram got no answer (issue 11 item 3): [`Endpoint::handle`] returns it in place of
/// an [`Output`](super::Output), and counts it in [`Stats::dropped_by`].
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
    /// A payload type this BMC does not serve in a session (OEM explicit, reserved types), or
    /// a session set-up message that is not a request.
    UnsupportedPayload,
    /// Well-formed, but nothing this BMC answers (IPMI 1.5 sessions, a session-less command
    /// not allowed outside a session, a set-up message too short to answer).
    NotAnswered,
    /// A SOL packet from a session that has no active SOL instance (never activated, or a
    /// late packet after it ended).
    SolInactive,
}

impl DropReason {
    /// Every reason, in [`Self::index`] order.
    pub const ALL: [DropReason; 12] = [
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
        Self::SolInactive,
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
            Self::SolInactive => "sol_inactive",
        }
    }

    pub(super) fn of_decode(e: &wire::DecodeError) -> Self {
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
    /// SOL activations granted.
    pub sol_activations: u64,
    /// SOL characters sent to consoles (first sends; retransmits not counted again).
    pub sol_bytes_to_console: u64,
    /// SOL characters taken from consoles for the machine.
    pub sol_bytes_from_console: u64,
    /// SOL packets sent again after their retry interval (§15.11).
    pub sol_retransmits: u64,
    /// Events not reported one by one (rate limit), by [`EventKind::index`]: counted here at
    /// once, so metrics built from events plus these miss none and never lag; the
    /// [`Event::Suppressed`] summary that reports them later is for logs only.
    pub unreported: [u64; EventKind::COUNT],
}

const MAX_EVENTS: usize = 1024;

impl Endpoint {
    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub(super) fn event(&mut self, e: Event) {
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

    pub(super) fn push_event(&mut self, e: Event) {
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

    /// The key [`LoggedName::Unknown`]'s tag is keyed with. A runtime serving many BMCs gives
    /// them one per process, so that a name sprayed across them shows one tag; without it,
    /// each endpoint draws its own from the entropy at the first unknown name.
    pub fn set_log_key(&mut self, key: [u8; 32]) {
        self.log_key = Some(Zeroizing::new(key));
    }

    pub(super) fn ensure_log_key(&mut self, rng: &mut dyn Entropy) {
        if self.log_key.is_none() {
            let mut key = Zeroizing::new([0u8; 32]);
            rng.fill(&mut key[..]);
            self.log_key = Some(key);
        }
    }

    /// `name` (the lossy UTF-8 of what the client sent) as a log may show it.
    pub(super) fn logged_name(&self, name: &str) -> LoggedName {
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
}
