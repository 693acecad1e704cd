//! Serial over LAN in the endpoint (IPMI v2.0 ch. 15, 24): the SOL packets of the session that
//! activated the BMC's one instance, and the outputs the runtime acts on.
//!
//! The payload commands themselves are in [`crate::commands`]' table (their state in
//! [`crate::sol::instance`]); this module carries out what they decide. SOL packets (payload
//! type 01h) reach [`Endpoint::sol_packet`] only after the common in-session checks of
//! `pipeline.rs` (encrypted and authenticated, AuthCode, window, decryption); they answer
//! nothing themselves: acknowledgements, console output and retransmits leave through
//! [`Endpoint::poll_transmit`], sealed with the session's keys and its outbound sequence
//! numbers, like its IPMI answers (§15.9: SOL shares the session).
//!
//! The runtime's side, after every [`Endpoint::handle`], [`Endpoint::complete`],
//! [`Endpoint::handle_timeout`] and [`Endpoint::sol_push`]:
//!
//! 1. [`Endpoint::poll_sol_event`]: open the console on [`SolEvent::Activated`], drop it on
//!    [`SolEvent::Deactivated`];
//! 2. [`Endpoint::poll_transmit`] until `None`, sending each datagram;
//! 3. [`Endpoint::poll_sol_input`] while the console can take more;
//! 4. read console output only while [`Endpoint::sol_room`] is above 0, and hand it to
//!    [`Endpoint::sol_push`].

use std::net::SocketAddr;
use std::time::Instant;

use super::{DropReason, Endpoint, Entropy, Output, State, pipeline::seal_as};
use crate::codes::PayloadType;
use crate::sol::{SolInput, SolPacket, SolTotals};

/// What SOL asks of the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SolEvent {
    /// The instance was activated: open the machine's console.
    Activated {
        /// The owning session (BMC session ID).
        sid: u32,
        /// Its console's address.
        peer: SocketAddr,
    },
    /// The instance ended: drop the console.
    Deactivated {
        /// The session that owned it.
        sid: u32,
        /// Why it ended.
        reason: SolEnd,
    },
}

/// Why a SOL instance ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolEnd {
    /// Deactivate Payload (from its own session or another), or SOL disabled (parameter 1).
    Deactivated,
    /// Its session closed, timed out or was pre-empted.
    SessionEnded,
    /// Cold or Warm Reset.
    BmcReset,
    /// The runtime ended it (the console went away for good).
    ConsoleGone,
}

impl SolEnd {
    /// For logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Deactivated => "deactivated",
            Self::SessionEnded => "session ended",
            Self::BmcReset => "BMC reset",
            Self::ConsoleGone => "console gone",
        }
    }
}

/// Deactivating packets waiting to go (one per ended instance; bounded anyway, since nothing
/// may grow without bound on a peer's behalf).
const MAX_QUEUED: usize = 8;

impl Endpoint {
    /// A SOL packet of session `sid_c`, opened and in its window.
    pub(super) fn sol_packet(
        &mut self,
        now: Instant,
        sid_c: u32,
        plain: &[u8],
    ) -> Result<Output, DropReason> {
        let room = self.bmc.sol.input_room();
        let Some(active) = self.bmc.sol.active.as_mut().filter(|a| a.sid == sid_c) else {
            // SOL from a session that has not activated it (or after it ended: a late ack).
            return Err(DropReason::SolInactive);
        };
        let Ok(pkt) = SolPacket::read(plain) else {
            return Err(DropReason::Malformed);
        };
        let inbound = active.stream.receive(&pkt, room, now);
        self.bmc.sol.take_inbound(&inbound);
        self.sync_sol_stats();
        Ok(Output::Consumed)
    }

    /// The next datagram that is no answer to a request: SOL acknowledgements, console
    /// output, retransmits, the last packet of an instance the BMC ended. Call until `None`
    /// (after every call into the endpoint, and at [`Endpoint::poll_timeout`]).
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        rng: &mut dyn Entropy,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        self.clock = Some(now);
        if let Some(d) = self.sol_tx.pop_front() {
            return Some(d);
        }
        let active = self.bmc.sol.active.as_mut()?;
        let payload = active.stream.poll_transmit(now)?;
        let sid = active.sid;
        self.sync_sol_stats();
        let sess = self.sessions.get_mut(&sid)?;
        let to = sess.peer;
        Some((to, seal_as(sess, PayloadType::SOL, &payload, rng)))
    }

    /// The next SOL event for the runtime.
    pub fn poll_sol_event(&mut self) -> Option<SolEvent> {
        self.sol_events.pop_front()
    }

    /// Whether SOL is active.
    pub fn sol_active(&self) -> bool {
        self.bmc.sol.active.is_some()
    }

    /// How many bytes of console output [`Endpoint::sol_push`] takes now (0 when SOL is not
    /// active, while the console holds CTS, or while its output buffer is full): the runtime
    /// reads the console no further than this, so a slow operator slows the guest down
    /// instead of losing its output.
    pub fn sol_room(&self) -> usize {
        self.bmc.sol.active.as_ref().map_or(0, |a| a.stream.room())
    }

    /// Console output for the operator; returns how many bytes were taken (at most
    /// [`Endpoint::sol_room`]). Then call [`Endpoint::poll_transmit`].
    pub fn sol_push(&mut self, bytes: &[u8], now: Instant) -> usize {
        self.clock = Some(now);
        self.bmc
            .sol
            .active
            .as_mut()
            .map_or(0, |a| a.stream.push(bytes, now))
    }

    /// The next console input for the guest (characters or a break), in order. The
    /// endpoint holds at most [`crate::sol::instance::INPUT_CAPACITY`] bytes: take it only
    /// when the console can accept it, and the operator's packets wait (NACKed) meanwhile.
    pub fn poll_sol_input(&mut self) -> Option<SolInput> {
        self.bmc.sol.next_input()
    }

    /// Whether console input is waiting for [`Endpoint::poll_sol_input`].
    pub fn sol_input_pending(&self) -> bool {
        self.bmc.sol.has_input()
    }

    /// SOL counters over every activation.
    pub fn sol_totals(&self) -> SolTotals {
        self.bmc.sol.totals()
    }

    /// The UDP port SOL is carried on: the BMC's own (Activate Payload's answer and SOL
    /// parameter 8; ipmitool refuses any other). 623 unless set.
    pub fn set_sol_port(&mut self, port: u16) {
        self.bmc.sol.config.port = port;
    }

    /// Whether a console can be opened for SOL (false with `--console off`): when not,
    /// parameter 1 reads disabled and Activate Payload answers 81h.
    pub fn set_sol_available(&mut self, available: bool) {
        self.bmc.sol.available = available;
        if !available {
            self.end_sol(SolEnd::ConsoleGone, false, &mut NoEntropy);
        }
    }

    /// End SOL from the BMC's side (the console is gone for good): the console is told with
    /// a last packet ("SOL deactivating", Table 15-2) from [`Endpoint::poll_transmit`].
    pub fn sol_deactivate(&mut self, now: Instant, rng: &mut dyn Entropy) {
        self.clock = Some(now);
        self.end_sol(SolEnd::ConsoleGone, true, rng);
    }

    /// The SOL deadline (retransmit or accumulate interval), if any: cheaper than
    /// [`Endpoint::poll_timeout`], which includes it, for a runtime that re-arms after every
    /// datagram while SOL runs.
    pub fn sol_timeout(&self) -> Option<Instant> {
        if !self.sol_tx.is_empty() {
            return self.clock;
        }
        self.bmc
            .sol
            .active
            .as_ref()
            .and_then(|a| a.stream.poll_timeout())
    }

    /// SOL was activated by session `sid` (after its answer was sealed).
    pub(super) fn sol_activated(&mut self, sid: u32) {
        let Some(peer) = self.sessions.get(&sid).map(|s| s.peer) else {
            return;
        };
        self.sol_events.push_back(SolEvent::Activated { sid, peer });
        self.sync_sol_stats();
    }

    /// End the instance, if one is active; `notify`: seal the "deactivating" packet for its
    /// owner first (when the BMC, not the owner, ends it).
    pub(super) fn end_sol(&mut self, reason: SolEnd, notify: bool, rng: &mut dyn Entropy) {
        let Some(active) = self.bmc.sol.end() else {
            return;
        };
        if notify
            && let Some(sess) = self.sessions.get_mut(&active.sid)
            && matches!(sess.state, State::Active(_))
            && self.sol_tx.len() < MAX_QUEUED
        {
            let last = active.stream.deactivating_packet();
            let d = seal_as(sess, PayloadType::SOL, &last, rng);
            self.sol_tx.push_back((sess.peer, d));
        }
        self.sol_events.push_back(SolEvent::Deactivated {
            sid: active.sid,
            reason,
        });
        self.sync_sol_stats();
    }

    /// Session `sid` is going away: its SOL instance ends with it (nothing can be sealed for
    /// it any more).
    pub(super) fn session_gone(&mut self, sid: u32) {
        if self.bmc.sol.active.as_ref().is_some_and(|a| a.sid == sid) {
            self.end_sol(SolEnd::SessionEnded, false, &mut NoEntropy);
        }
    }

    fn sync_sol_stats(&mut self) {
        let t = self.bmc.sol.totals();
        self.stats.sol_activations = t.activations;
        self.stats.sol_bytes_to_console = t.bytes_to_console;
        self.stats.sol_bytes_from_console = t.bytes_from_console;
        self.stats.sol_retransmits = t.retransmits;
    }
}

/// For paths that seal nothing (`notify` false, or no session to seal for).
struct NoEntropy;

impl Entropy for NoEntropy {
    fn fill(&mut self, _: &mut [u8]) {
        unreachable!("nothing is sealed without entropy")
    }
}
