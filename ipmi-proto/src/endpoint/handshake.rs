//! Everything outside a session: the session-less commands (IPMI 1.5 and 2.0 framing), and the
//! RMCP+ session set-up, Open Session and RAKP 1–4 (IPMI v2.0 §13.17–13.23), read and written
//! only through the typed messages of [`crate::rmcp`].

use std::net::SocketAddr;
use std::time::Instant;

use super::{Active, DropReason, Endpoint, Entropy, Handshake, Output, Session, State};
use super::{Answered, CloseReason, Event, LoginFailure, source_key};
use crate::codes::{PayloadType, RakpStatus};
use crate::commands;
use crate::crypto::{CipherSuite, SessionKeys, rakp2_auth, rakp3_auth};
use crate::rmcp::{
    self, Granted, OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp2Body, Rakp3, Rakp4,
    SetupMessage,
};
use crate::seal::OutSeq;
use crate::session::{Privilege, ReplyCache, SeqWindow};
use crate::wire::{self, IpmiRequest, V15Packet, V20Packet};

/// The suite an Open Session Request asks for. A null algorithm payload (length 0) asks the
/// BMC to choose that algorithm (IPMI v2.0 §13.17, Table 13-9 "null"; OpenIPMI's `bmcpick`
/// sends all three null); the BMC then names its choice in the response (§13.18). We take
/// the first suite, in the order of [`NULL_PAYLOAD_PREFERENCE`], whose algorithms agree with
/// every algorithm that was proposed. A fully explicit proposal matches one suite or none,
/// so the order only decides what null payloads get; an explicit RAKP-none or
/// integrity/confidentiality "none" (cipher suite 0) still matches nothing and is refused.
fn pick_suite(req: &OpenSessionRequest) -> Option<CipherSuite> {
    NULL_PAYLOAD_PREFERENCE.into_iter().find(|s| {
        let (a, i, c) = s.algorithms();
        req.auth.is_none_or(|x| x == a)
            && req.integ.is_none_or(|x| x == i)
            && req.conf.is_none_or(|x| x == c)
    })
}

/// What a null algorithm payload gets: suite 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128)
/// first. A console that leaves the choice to the BMC cannot say what it implements, so the
/// BMC must pick what every IPMI 2.0 console has: suite 3 is in the cipher suite table of the
/// specification itself (IPMI v2.0 §22.15, Table 22-19, record format Table 22-20), while
/// suite 17's algorithms (RAKP-HMAC-SHA256, HMAC-SHA256-128) came later, in the errata and
/// DCMI, and not every console has them. OpenIPMI 2.0.33 (the Debian `openipmi` client,
/// whose `bmcpick` sends the three null payloads) has no RAKP-HMAC-SHA256: given suite 17 it
/// gives up after Open Session, so `bmcpick` never connected. A console that wants suite 17
/// asks for it explicitly (ipmitool, pyghmi and freeipmi do), and gets it.
const NULL_PAYLOAD_PREFERENCE: [CipherSuite; 2] = [CipherSuite::Suite3, CipherSuite::Suite17];

impl Endpoint {
    /// IPMI 1.5 format: only session-less Get Channel Authentication Capabilities (and Get
    /// Channel Cipher Suites) are served; IPMI 1.5 sessions are not offered at all (their
    /// AuthCodes are weak, see the protocol notes §11.4).
    pub(super) fn handle_v15(
        &mut self,
        peer: SocketAddr,
        p: &V15Packet<'_>,
    ) -> Result<Output, DropReason> {
        if p.auth_type != 0 || p.session_id != 0 {
            return Err(DropReason::NotAnswered);
        }
        let msg = self.answer_sessionless(p.message)?;
        let mut out = Vec::with_capacity(msg.len() + 14);
        wire::encode_v15_sessionless(&msg, &mut out);
        Ok(Output::Transmit {
            to: peer,
            data: out,
        })
    }

    /// Answer a session-less IPMI message (the commands allowed outside a session, IPMI v2.0
    /// §13.14 and §22.13/§22.15), noting it for [`Self::take_answered`]; the framing (1.5 or
    /// 2.0) is the caller's. `NotAnswered` for anything not to be answered.
    pub(super) fn answer_sessionless(&mut self, message: &[u8]) -> Result<Vec<u8>, DropReason> {
        let req = IpmiRequest::decode(message).map_err(|_| DropReason::NotAnswered)?;
        let (cc, data) =
            commands::sessionless(&req, self.cfg.kg.is_some()).ok_or(DropReason::NotAnswered)?;
        self.answered = Some(Answered {
            netfn: req.netfn,
            cmd: req.cmd,
            cc,
        });
        let mut msg = Vec::with_capacity(32);
        req.encode_response(cc, &data, &mut msg);
        Ok(msg)
    }

    pub(super) fn handle_setup(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        p: &V20Packet<'_>,
        rng: &mut dyn Entropy,
    ) -> Result<Output, DropReason> {
        if p.encrypted || p.authenticated {
            return Err(DropReason::NotAnswered);
        }
        let data = match p.payload_type {
            PayloadType::IPMI => {
                let msg = self.answer_sessionless(p.payload)?;
                rmcp::setup_datagram(PayloadType::IPMI, &msg)
            }
            PayloadType::OPEN_SESSION_REQUEST => self.open_session(now, peer, p.payload, rng)?,
            PayloadType::RAKP1 => self.rakp1(now, peer, p.payload, rng)?,
            PayloadType::RAKP3 => self.rakp3(now, peer, p.payload)?,
            _ => return Err(DropReason::UnsupportedPayload),
        };
        Ok(Output::Transmit { to: peer, data })
    }

    /// Open Session Request → Response (IPMI v2.0 §13.17–13.18). A refusal of a full-length
    /// request is answered in the full 36-byte layout, which every client parses.
    pub(super) fn open_session(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        p: &[u8],
        rng: &mut dyn Entropy,
    ) -> Result<Vec<u8>, DropReason> {
        // Tag and SIDm are read even from a request that does not parse, to answer it.
        let (tag, Some(sid_m)) = rmcp::peek_tag_and_id(p).ok_or(DropReason::NotAnswered)? else {
            return Err(DropReason::NotAnswered);
        };
        // A refusal is never longer than the request (issue 15 item 10: a 1-byte payload got
        // the 36-byte layout, 52 B for 17 B, a reflector): the full layout for a full-length
        // request, else tag, status, reserved and SIDm (8 bytes), else nothing (too short to
        // name a console session ID to answer to). Protocol notes §4.3: clients read the status
        // from byte 2 (ipmi_sim answers tag and status only, and ipmitool reports it).
        let full = p.len() >= 32;
        let refuse = |status| {
            let r = OpenSessionResponse::refusal(tag, status, sid_m);
            Ok(if full {
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
            || self
                .cfg
                .shared_lockout
                .as_ref()
                .is_some_and(|s| s.source_locked(peer.ip()))
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
        Ok(OpenSessionResponse {
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
        .to_datagram())
    }

    /// A random, non-zero BMC session ID not in use (IPMI v2.0 §13.17: SIDc is the BMC's
    /// choice; random IDs make off-path injection a 32-bit guess).
    pub(super) fn new_session_id(&mut self, rng: &mut dyn Entropy) -> u32 {
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
    pub(super) fn rakp1(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        p: &[u8],
        rng: &mut dyn Entropy,
    ) -> Result<Vec<u8>, DropReason> {
        // Tag and SIDc are read even from a RAKP 1 that does not parse, to answer it.
        let (tag, Some(sid_c)) = rmcp::peek_tag_and_id(p).ok_or(DropReason::NotAnswered)? else {
            return Err(DropReason::NotAnswered);
        };
        let refuse = |st, sid_m| Ok(Rakp2::refusal(tag, st, sid_m).to_datagram());
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
            State::Rakp2Sent(h) if h.rakp1 == p => return Ok(h.rakp2.clone()),
            State::Rakp2Sent(_) => {}
            State::Active(_) => return refuse(RakpStatus::INVALID_SESSION_ID, sid_m),
        }
        // ULENm is at most 16 and the payload is exactly 28 + ULENm bytes (Table 13-11).
        let Ok(m) = Rakp1::read(p) else {
            return Ok(self.fail_rakp1(
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
            return Ok(self.fail_rakp1(
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
            return Ok(self.fail_rakp1(
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
        let shared_locked = self
            .cfg
            .shared_lockout
            .as_ref()
            .is_some_and(|s| s.user_locked(&self.cfg.users[user].name, peer.ip()));
        if (self.users.get(&user).is_some_and(|g| g.locked(now)) && !self.trusted(now, user, peer))
            || shared_locked
        {
            self.stats.refused_locked_out += 1;
            self.event(Event::RefusedLockedOut { peer });
            let sid_m = self.remove_session(sid_c).map_or(0, |s| s.sid_m);
            return refuse(RakpStatus::NO_RESOURCES, sid_m);
        }
        if requested > self.cfg.users[user].max_privilege {
            return Ok(self.fail_rakp1(
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
        let sess = self
            .sessions
            .get_mut(&sid_c)
            .ok_or(DropReason::NotAnswered)?;
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
        Ok(r)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn fail_rakp1(
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
    pub(super) fn rakp3(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        p: &[u8],
    ) -> Result<Vec<u8>, DropReason> {
        // Any 8 bytes parse (the AuthCode is the rest): the status and SIDc are always there
        // to answer to.
        let m = Rakp3::read(p).map_err(|_| DropReason::NotAnswered)?;
        let (tag, sid_c) = (m.tag, m.sid_c);
        let refuse = |st, sid_m| Ok(Rakp4::refusal(tag, st, sid_m).to_datagram());
        let Some(sess) = self.sessions.get_mut(&sid_c) else {
            return refuse(RakpStatus::INVALID_SESSION_ID, 0);
        };
        if sess.peer != peer {
            return refuse(RakpStatus::INVALID_SESSION_ID, 0);
        }
        let sid_m = sess.sid_m;
        let h = match &sess.state {
            State::Rakp2Sent(h) => h,
            State::Active(a) if a.rakp3 == p => return Ok(a.rakp4.clone()),
            _ => return refuse(RakpStatus::INVALID_SESSION_ID, sid_m),
        };
        let user = &self.cfg.users[h.user];
        if !m.status.is_ok() {
            // The console reports its own failure (e.g. it could not verify RAKP 2).
            let name = user.name.clone();
            self.remove_session(sid_c);
            self.login_failed(now, peer, name, LoginFailure::AbandonedAfterRakp2);
            return Err(DropReason::NotAnswered);
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
        let sess = self
            .sessions
            .get_mut(&sid_c)
            .ok_or(DropReason::NotAnswered)?;
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
        Ok(r)
    }
}
