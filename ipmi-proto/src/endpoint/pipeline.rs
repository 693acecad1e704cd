//! In-session packets (IPMI v2.0 §13.28–13.29, §6.12): open them (AuthCode, sequence window,
//! decryption), route them by payload type, and for IPMI messages run the command path: the
//! retry cache, [`crate::commands`]' dispatch, machine requests and their completion, and the
//! sealed answer.

use std::net::SocketAddr;
use std::time::Instant;

use zeroize::Zeroizing;

use super::{
    Answered, CloseReason, DropReason, Endpoint, Entropy, Event, Output, Session, State, Ticket,
};
use crate::codes::{CompletionCode, PayloadType};
use crate::commands::{self, After, CmdContext, Header, Outcome, PendingKind};
use crate::machine::MachineResult;
use crate::seal::{self, OpenError};
use crate::session::RetryKey;
use crate::wire::{IpmiRequest, V20Packet};

/// A request waiting for the machine.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) sid: u32,
    pub(super) peer: SocketAddr,
    pub(super) header: Header,
    pub(super) key: RetryKey,
    pub(super) kind: PendingKind,
}

/// Wrap an IPMI message for the client: see [`seal_as`].
fn seal(sess: &mut Session, msg: &[u8], rng: &mut dyn Entropy) -> Vec<u8> {
    seal_as(sess, PayloadType::IPMI, msg, rng)
}

/// Wrap a payload of type `ty` for the client: AES-CBC-128 with a fresh IV, the next
/// outbound sequence number (starting at 1, skipping 0; IPMI and SOL packets share it,
/// §15.9), the console's session ID and the integrity trailer.
pub(super) fn seal_as(
    sess: &mut Session,
    ty: PayloadType,
    msg: &[u8],
    rng: &mut dyn Entropy,
) -> Vec<u8> {
    let State::Active(act) = &mut sess.state else {
        return Vec::new();
    };
    let seq = act.out_seq.advance();
    let mut iv = [0u8; 16];
    rng.fill(&mut iv);
    seal::seal(&act.keys, ty, sess.sid_m, seq, &iv, msg)
}

impl Endpoint {
    pub(super) fn handle_in_session(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        datagram: &[u8],
        p: &V20Packet<'_>,
        rng: &mut dyn Entropy,
    ) -> Result<Output, DropReason> {
        let sid_c = p.session_id;
        let Some(sess) = self.sessions.get_mut(&sid_c) else {
            return Err(DropReason::UnknownSession);
        };
        let State::Active(act) = &mut sess.state else {
            return Err(DropReason::UnknownSession);
        };
        if sess.peer != peer {
            return Err(DropReason::UnknownSession);
        }
        // Suites 3 and 17 protect every packet: anything less is not from our client. The
        // AuthCode comparison is constant-time (§13.28.4).
        match seal::verify(&act.keys, datagram, p) {
            Ok(()) => {}
            Err(OpenError::Unprotected) => return Err(DropReason::Unprotected),
            Err(OpenError::Trailer(_)) => return Err(DropReason::Malformed),
            Err(_) => return Err(DropReason::BadIntegrity),
        }
        if !act.window.check(p.seq) {
            return Err(DropReason::OutOfWindow);
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
            return Err(DropReason::BadIntegrity);
        };
        let plain = &buf[..n];
        // Where a payload type other than IPMI plugs in: each in-session payload type is its
        // own path, given the opened plaintext of a verified, in-window packet of an active
        // session (the checks above are common to all of them).
        match p.payload_type {
            PayloadType::IPMI => self.ipmi_request(now, peer, sid_c, plain, rng),
            // SOL (payload type 1, IPMI v2.0 Table 13-16; its packets ch. 15, Table 15-2;
            // activated per session with Activate Payload, ch. 24, Table 24-2): `sol.rs`,
            // whose answers leave through `poll_transmit` sealed as `PayloadType::SOL`.
            PayloadType::SOL => self.sol_packet(now, sid_c, plain),
            // OEM explicit and anything else.
            _ => Err(DropReason::UnsupportedPayload),
        }
    }

    /// An IPMI request of session `sid_c` (IPMI v2.0 §13.8): a retry is answered from the
    /// cache (never run twice), a new request goes to [`commands::dispatch`], and either
    /// comes back answered or becomes a machine request ([`Output::Machine`]).
    fn ipmi_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        sid_c: u32,
        plain: &[u8],
        rng: &mut dyn Entropy,
    ) -> Result<Output, DropReason> {
        let Ok(req) = IpmiRequest::decode(plain) else {
            return Err(DropReason::Malformed);
        };
        let sess = self
            .sessions
            .get_mut(&sid_c)
            .ok_or(DropReason::NotAnswered)?;
        let State::Active(act) = &mut sess.state else {
            return Err(DropReason::NotAnswered);
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
            return Ok(Output::Transmit { to: peer, data });
        }
        if self
            .pending
            .values()
            .any(|pd| pd.sid == sid_c && pd.key == key)
        {
            // The first copy is still with the machine; its answer will serve this retry.
            return Err(DropReason::RetryInFlight);
        }
        let State::Active(act) = &mut sess.state else {
            return Err(DropReason::NotAnswered);
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
        let sess = self
            .sessions
            .get_mut(&sid_c)
            .ok_or(DropReason::NotAnswered)?;
        let State::Active(act) = &mut sess.state else {
            return Err(DropReason::NotAnswered);
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
                let sess = self
                    .sessions
                    .get_mut(&sid_c)
                    .ok_or(DropReason::NotAnswered)?;
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
                self.after(after, sid_c, rng);
                Ok(Output::Transmit {
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
                    let sess = self
                        .sessions
                        .get_mut(&sid_c)
                        .ok_or(DropReason::NotAnswered)?;
                    let data = seal(sess, &msg, rng);
                    return Ok(Output::Transmit { to: peer, data });
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
                Ok(Output::Machine { ticket, request })
            }
            Outcome::Drop => Err(DropReason::NotAnswered),
        }
    }

    pub(super) fn after(&mut self, after: After, sid_c: u32, rng: &mut dyn Entropy) {
        match after {
            After::None => {}
            After::SolActivated => self.sol_activated(sid_c),
            After::SolDeactivate => {
                // Ended by another session (`ipmitool sol deactivate`, Ironic's clean-up) or
                // by turning SOL off: the owner hears it in a last packet (Table 15-2 b4). Its
                // own Deactivate Payload needs none: it asked.
                let by_other = self.bmc.sol.active.as_ref().is_some_and(|a| a.sid != sid_c)
                    || !self.bmc.sol.config.enabled;
                self.end_sol(super::sol::SolEnd::Deactivated, by_other, rng);
            }
            After::CloseSession(sid) => {
                if self.remove_session(sid).is_some() {
                    self.event(Event::SessionClosed {
                        sid,
                        reason: CloseReason::Closed,
                    });
                }
            }
            After::ResetBmc => {
                // A virtual BMC "resets" by forgetting every session (protocol notes §8.3);
                // an active SOL console hears it first, sealed while its session still is.
                self.end_sol(super::sol::SolEnd::BmcReset, true, rng);
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
}
