//! One virtual BMC as a sans-I/O state machine.
//!
//! The runtime feeds it datagrams with [`Endpoint::handle`] and gets back either a datagram to
//! send or a [`MachineRequest`] to run; it answers the latter with [`Endpoint::complete`].
//! Time and randomness come in as arguments, so every exchange is reproducible in tests.
//!
//! Receive pipeline (IPMI v2.0 §13.6, §13.28, ovbmc protocol notes §5.4): RMCP → session
//! header → session-less commands and RAKP set-up, or session lookup → AuthCode (constant time)
//! → sequence window → decrypt and pad check → payload type → IPMI checksums → privilege →
//! command.
//!
//! One concern per module:
//!
//! | module        | concern |
//! |---------------|---------|
//! | this one      | the [`Endpoint`] and its tables, [`Endpoint::handle`]'s first routing (ASF, IPMI 1.5, set-up, in-session), timers |
//! | `handshake`   | session-less commands, Open Session and RAKP 1–4 (IPMI v2.0 §13.14–13.23) |
//! | `admission`   | who may try: the half-open table and its per-source share, the active-session cap, failed-login lock-out |
//! | `pipeline`    | in-session packets: open (verify, window, decrypt), route by payload type, the IPMI command path with its retry cache and machine requests, seal |
//! | `events`      | what the endpoint reports: [`Event`], [`DropReason`], [`Stats`] |
//!
//! The commands themselves ([`crate::commands`]) know nothing of this module: the endpoint
//! calls them, never the other way round.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use zeroize::Zeroizing;

use crate::codes::PayloadType;
use crate::commands::BmcState;
use crate::config::BmcConfig;
use crate::crypto::{CipherSuite, SessionKeys};
use crate::machine::MachineRequest;
use crate::ratelimit::{AnswerBudget, EventLimiter};
use crate::seal::OutSeq;
use crate::session::{Privilege, ReplyCache, SeqWindow};
use crate::wire::{self, Datagram};

mod admission;
mod events;
mod handshake;
mod pipeline;
mod sol;

use admission::{Guard, source_key};
use pipeline::Pending;

pub use events::{
    Answered, CloseReason, DropReason, Event, EventKind, LoggedName, LoginFailure, Stats,
};
pub use sol::{SolEnd, SolEvent};

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
    /// Taken (a SOL packet): nothing answers it directly; its acknowledgement and anything
    /// else due come from [`Endpoint::poll_transmit`].
    Consumed,
}

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

/// One virtual BMC.
pub struct Endpoint {
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
    /// Sealed SOL datagrams waiting for `poll_transmit` (the last packet of an instance the
    /// BMC ended, sealed while its session still existed).
    sol_tx: VecDeque<(SocketAddr, Vec<u8>)>,
    /// SOL activations and ends, for the runtime (`poll_sol_event`).
    sol_events: VecDeque<SolEvent>,
}

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
            sol_tx: VecDeque::new(),
            sol_events: VecDeque::new(),
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

    /// Handle one datagram from `peer`: what to do about it, or why it gets no answer (every
    /// drop has its reason, also counted in [`Stats::dropped_by`]; issue 11 item 3).
    pub fn handle(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        datagram: &[u8],
        rng: &mut dyn Entropy,
    ) -> Result<Output, DropReason> {
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
            return Err(DropReason::RateLimited);
        }
        let out = match decoded {
            Ok(Datagram::AsfPing { tag }) => {
                let mut out = Vec::with_capacity(28);
                wire::encode_asf_pong(tag, &mut out);
                Ok(Output::Transmit {
                    to: peer,
                    data: out,
                })
            }
            Ok(Datagram::V15(p)) => self.handle_v15(peer, &p),
            Ok(Datagram::V20(p)) if p.session_id == 0 => self.handle_setup(now, peer, &p, rng),
            Ok(Datagram::V20(p)) => self.handle_in_session(now, peer, datagram, &p, rng),
            Err(e) => Err(DropReason::of_decode(&e)),
        };
        match &out {
            Err(why) => self.count_drop(*why),
            Ok(Output::Transmit { data, .. }) if budgeted => {
                self.answer_budget
                    .spend(source, now, data.len().saturating_sub(datagram.len()));
            }
            Ok(_) => {}
        }
        out
    }

    /// Count a datagram dropped for `why`.
    fn count_drop(&mut self, why: DropReason) {
        self.stats.dropped += 1;
        self.stats.dropped_by[why.index()] += 1;
    }

    /// Expire half-open and idle sessions. Call at least every second or at
    /// [`Endpoint::poll_timeout`], then [`Endpoint::poll_transmit`] (SOL retransmits and
    /// output held by the accumulate interval are due at that deadline too).
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
            .chain(self.sol_timeout())
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
