//! IPMI commands: request data in, completion code and response data out.
//!
//! Minimum privileges follow the spec's command table (IPMI v2.0 Appendix G) as OpenIPMI
//! encodes it (`lanserv/priv_table.c`); see the protocol notes §3.2.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::codes::{CompletionCode, NetFn};
use crate::config::BmcConfig;
use crate::crypto::CipherSuite;
use crate::machine::{
    BootFlags, MachineError, MachineReply, MachineRequest, MachineResult, PowerAction, PowerState,
};
use crate::session::Privilege;
use crate::sol::{self, instance::SolBmc};
use crate::wire::IpmiRequest;

/// One command this BMC implements: where it is (netFn, command), its name (the metrics label
/// `ovbmc_requests_total{command}` and log lines), the least privilege that may run it, and
/// its handler.
#[derive(Clone, Copy)]
pub struct CommandSpec {
    /// Network function (request).
    pub netfn: NetFn,
    /// Command number.
    pub cmd: u8,
    /// Name, in snake case.
    pub name: &'static str,
    /// Minimum session privilege.
    pub min_privilege: Privilege,
    pub(crate) handler: Handler,
}

impl core::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CommandSpec")
            .field("netfn", &self.netfn)
            .field("cmd", &format_args!("{:#04x}", self.cmd))
            .field("name", &self.name)
            .field("min_privilege", &self.min_privilege)
            .finish_non_exhaustive()
    }
}

const fn spec(
    netfn: NetFn,
    cmd: u8,
    name: &'static str,
    min_privilege: Privilege,
    handler: Handler,
) -> CommandSpec {
    CommandSpec {
        netfn,
        cmd,
        name,
        min_privilege,
        handler,
    }
}

/// Every command the BMC answers in a session, with the minimum privileges of the spec's
/// command table (IPMI v2.0 Appendix G) as OpenIPMI encodes them (`lanserv/priv_table.c`).
/// The privilege check, the dispatcher and the metrics labels all read this one table; a
/// command that is not here gets C1.
pub static COMMANDS: &[CommandSpec] = {
    use NetFn as N;
    use Privilege::{
        Administrator as ADMIN, Callback as CALLBACK, Operator as OPERATOR, User as USER,
    };
    &[
        spec(N::APP, 0x01, "get_device_id", USER, |c| {
            get_device_id(c.data(), c.cfg)
        }),
        spec(N::APP, 0x02, "cold_reset", ADMIN, reset),
        spec(N::APP, 0x03, "warm_reset", ADMIN, reset),
        // 55h = no error (IPMI v2.0 §20.4).
        spec(N::APP, 0x04, "get_self_test_results", USER, |_| {
            ok(vec![0x55, 0x00])
        }),
        spec(N::APP, 0x08, "get_device_guid", USER, guid),
        spec(N::APP, 0x37, "get_system_guid", USER, guid),
        spec(N::APP, 0x38, "get_channel_auth_capabilities", USER, |c| {
            let (cc, data) = auth_caps(c.data(), c.cfg.kg.is_some());
            reply(cc, data)
        }),
        spec(N::APP, 0x3b, "set_session_privilege_level", USER, |c| {
            set_session_privilege(c.req.data, c.ctx)
        }),
        spec(N::APP, 0x3c, "close_session", CALLBACK, |c| {
            close_session(c.req.data, c.ctx)
        }),
        spec(N::APP, 0x3d, "get_session_info", USER, |c| {
            get_session_info(c.req.data, c.ctx)
        }),
        spec(N::APP, 0x41, "get_channel_access", USER, get_channel_access),
        spec(N::APP, 0x42, "get_channel_info", USER, get_channel_info),
        spec(N::APP, 0x44, "get_user_access", OPERATOR, |c| {
            get_user_access(c.req.data, c.ctx, c.cfg)
        }),
        spec(N::APP, 0x46, "get_user_name", OPERATOR, |c| {
            get_user_name(c.data(), c.cfg)
        }),
        // The payload commands (IPMI v2.0 ch. 24; Appendix G: USER, Activate Payload further
        // bound by SOL parameter 2, checked in `sol::instance`).
        spec(N::APP, 0x48, "activate_payload", USER, |c| {
            let (sid, privilege) = (c.ctx.sid, c.ctx.privilege);
            sol_answer(c.bmc.sol.activate(c.req.data, sid, privilege))
        }),
        spec(N::APP, 0x49, "deactivate_payload", USER, |c| {
            let privilege = c.ctx.privilege;
            sol_answer(c.bmc.sol.deactivate(c.req.data, privilege))
        }),
        spec(N::APP, 0x4a, "get_payload_activation_status", USER, |c| {
            sol_answer(c.bmc.sol.activation_status(c.req.data))
        }),
        spec(N::APP, 0x4b, "get_payload_instance_info", USER, |c| {
            sol_answer(c.bmc.sol.instance_info(c.req.data))
        }),
        spec(N::APP, 0x4e, "get_channel_payload_support", USER, |c| {
            sol_answer(SolBmc::payload_support(c.req.data))
        }),
        spec(N::APP, 0x4f, "get_channel_payload_version", USER, |c| {
            sol_answer(SolBmc::payload_version(c.req.data))
        }),
        spec(N::APP, 0x54, "get_channel_cipher_suites", USER, |c| {
            let (cc, data) = cipher_suites(c.data());
            reply(cc, data)
        }),
        // No intrusion/lockout; FRU/SDR/SEL/SM at the BMC (20h) (IPMI v2.0 §28.1).
        spec(N::CHASSIS, 0x00, "get_chassis_capabilities", USER, |_| {
            ok(vec![0x00, 0x20, 0x20, 0x20, 0x20])
        }),
        spec(
            N::CHASSIS,
            0x01,
            "get_chassis_status",
            USER,
            get_chassis_status,
        ),
        spec(
            N::CHASSIS,
            0x02,
            "chassis_control",
            OPERATOR,
            chassis_control,
        ),
        spec(N::CHASSIS, 0x04, "chassis_identify", OPERATOR, |c| {
            chassis_identify(c.req.data, c.ctx.now, c.bmc)
        }),
        spec(N::CHASSIS, 0x08, "set_system_boot_options", OPERATOR, |c| {
            set_boot_option(c.req.data, c.bmc)
        }),
        spec(N::CHASSIS, 0x09, "get_system_boot_options", OPERATOR, |c| {
            get_boot_option(c.req.data, c.bmc)
        }),
        spec(
            N::STORAGE,
            0x20,
            "get_sdr_repository_info",
            USER,
            storage_cmd,
        ),
        spec(
            N::STORAGE,
            0x22,
            "reserve_sdr_repository",
            USER,
            storage_cmd,
        ),
        spec(N::STORAGE, 0x23, "get_sdr", USER, storage_cmd),
        spec(N::STORAGE, 0x40, "get_sel_info", USER, storage_cmd),
        spec(N::STORAGE, 0x42, "reserve_sel", USER, storage_cmd),
        spec(N::STORAGE, 0x43, "get_sel_entry", USER, storage_cmd),
        spec(
            N::TRANSPORT,
            0x02,
            "get_lan_configuration_parameters",
            OPERATOR,
            get_lan_config,
        ),
        // SOL configuration (IPMI v2.0 ch. 26; Appendix G: Set ADMIN, Get USER).
        spec(
            N::TRANSPORT,
            0x21,
            "set_sol_configuration_parameters",
            ADMIN,
            |c| sol_answer(c.bmc.sol.set_config(c.req.data)),
        ),
        spec(
            N::TRANSPORT,
            0x22,
            "get_sol_configuration_parameters",
            USER,
            |c| sol_answer(c.bmc.sol.get_config(c.req.data)),
        ),
    ]
};

/// A payload command's answer as a dispatch outcome: an activation or deactivation is for
/// the endpoint to carry out once the answer is sealed.
fn sol_answer(a: sol::instance::Answer) -> Outcome {
    use sol::instance::Change;
    Outcome::Reply {
        cc: a.cc,
        data: a.data,
        after: match a.change {
            Change::None => After::None,
            Change::Activated => After::SolActivated,
            Change::Deactivate => After::SolDeactivate,
        },
    }
}

fn storage_cmd(c: &mut Call<'_, '_>) -> Outcome {
    storage(c.req.cmd, c.req.data)
}

/// The position in [`COMMANDS`] of (netFn, command), if the BMC implements it.
pub fn command_index(netfn: impl Into<NetFn>, cmd: u8) -> Option<usize> {
    let netfn = netfn.into();
    COMMANDS
        .iter()
        .position(|c| c.netfn == netfn && c.cmd == cmd)
}

/// The [`CommandSpec`] of (netFn, command), if the BMC implements it.
pub fn command(netfn: impl Into<NetFn>, cmd: u8) -> Option<&'static CommandSpec> {
    command_index(netfn, cmd).map(|i| &COMMANDS[i])
}

/// The channel number we report (a LAN channel; 1 is what most BMCs use).
const CHANNEL: u8 = 1;

/// The response header fields of a request, kept while the machine works.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    rs_addr: u8,
    netfn: NetFn,
    rs_lun: u8,
    rq_addr: u8,
    rq_seq: u8,
    rq_lun: u8,
    cmd: u8,
}

impl Header {
    pub(crate) fn of(r: &IpmiRequest<'_>) -> Self {
        Self {
            rs_addr: r.rs_addr,
            netfn: r.netfn,
            rs_lun: r.rs_lun,
            rq_addr: r.rq_addr,
            rq_seq: r.rq_seq,
            rq_lun: r.rq_lun,
            cmd: r.cmd,
        }
    }

    pub(crate) fn encode_response(&self, cc: CompletionCode, data: &[u8], out: &mut Vec<u8>) {
        IpmiRequest {
            rs_addr: self.rs_addr,
            netfn: self.netfn,
            rs_lun: self.rs_lun,
            rq_addr: self.rq_addr,
            rq_seq: self.rq_seq,
            rq_lun: self.rq_lun,
            cmd: self.cmd,
            data: &[],
        }
        .encode_response(cc, data, out)
    }
}

/// How to turn a machine result into a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PendingKind {
    ChassisStatus,
    Control(PowerAction),
    GetBootFlags,
    SetBootFlags,
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
    /// Serial over LAN: the parameters and the one instance.
    pub(crate) sol: SolBmc,
}

/// What the session knows when a command runs.
#[derive(Debug)]
pub(crate) struct CmdContext {
    pub(crate) sid: u32,
    pub(crate) privilege: Privilege,
    pub(crate) max_privilege: Privilege,
    pub(crate) user_id: u8,
    pub(crate) user_count: usize,
    pub(crate) active_sessions: usize,
    pub(crate) max_sessions: usize,
    pub(crate) now: Instant,
}

/// Something to do once the response is on its way.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum After {
    None,
    CloseSession(u32),
    ResetBmc,
    /// SOL was activated for the requesting session: tell the runtime.
    SolActivated,
    /// End the SOL instance (Deactivate Payload, or parameter 1 turned off).
    SolDeactivate,
}

/// The result of dispatching a command.
#[derive(Debug)]
pub(crate) enum Outcome {
    Reply {
        cc: CompletionCode,
        data: Vec<u8>,
        after: After,
    },
    Machine {
        request: MachineRequest,
        kind: PendingKind,
    },
    #[allow(dead_code)]
    Drop,
}

fn reply(cc: CompletionCode, data: Vec<u8>) -> Outcome {
    Outcome::Reply {
        cc,
        data,
        after: After::None,
    }
}

fn ok(data: Vec<u8>) -> Outcome {
    reply(CompletionCode::OK, data)
}

fn err(code: CompletionCode) -> Outcome {
    reply(code, Vec::new())
}

/// Commands allowed without a session (IPMI v2.0 §13.14 and Appendix G): Get Channel
/// Authentication Capabilities and Get Channel Cipher Suites. Everything else is dropped.
pub(crate) fn sessionless(
    req: &IpmiRequest<'_>,
    kg_set: bool,
) -> Option<(CompletionCode, Vec<u8>)> {
    if req.netfn != NetFn::APP {
        return None;
    }
    match req.cmd {
        0x38 => Some(auth_caps(req.data, kg_set)),
        0x54 => Some(cipher_suites(req.data)),
        _ => None,
    }
}

/// Get Channel Authentication Capabilities (IPMI v2.0 §22.13). We advertise IPMI v2.0 only,
/// no IPMI 1.5 authentication types, non-null user names only, no anonymous login.
fn auth_caps(data: &[u8], kg_set: bool) -> (CompletionCode, Vec<u8>) {
    if data.len() != 2 {
        return (CompletionCode::BAD_LENGTH, Vec::new());
    }
    let chan = data[0] & 0x0f;
    if chan != 0x0e && chan != CHANNEL {
        return (CompletionCode::INVALID_FIELD, Vec::new());
    }
    if Privilege::from_u8(data[1] & 0x0f).is_none() {
        return (CompletionCode::INVALID_FIELD, Vec::new());
    }
    let v2 = data[0] & 0x80 != 0;
    // Byte 2 bit 7 only when the v2.0 data was asked for; a 1.5-only client then sees no
    // usable authentication type and stops cleanly.
    (
        CompletionCode::OK,
        vec![
            CHANNEL,
            if v2 { 0x80 } else { 0x00 },
            // Non-null user names only; bit 5 tells the client a BMC key Kg is in use.
            if kg_set { 0x24 } else { 0x04 },
            if v2 { 0x02 } else { 0x00 },
            0,
            0,
            0,
            0,
        ],
    )
}

/// Get Channel Cipher Suites (IPMI v2.0 §22.15): the record stream in 16-byte pages. Only
/// the suites we complete are listed, so a client that picks from the list cannot pick a
/// weak one.
fn cipher_suites(data: &[u8]) -> (CompletionCode, Vec<u8>) {
    if data.len() != 3 {
        return (CompletionCode::BAD_LENGTH, Vec::new());
    }
    let chan = data[0] & 0x0f;
    if chan != 0x0e && chan != CHANNEL {
        return (CompletionCode::INVALID_FIELD, Vec::new());
    }
    let mut stream = Vec::new();
    if data[1] & 0x3f == 0 {
        if data[2] & 0x80 != 0 {
            // Records: C0, suite ID, auth, integrity | 40h, confidentiality | 80h.
            for s in CipherSuite::ALL {
                let (a, i, c) = s.algorithms();
                stream.extend_from_slice(&[0xc0, s.id(), a.0, 0x40 | i.0, 0x80 | c.0]);
            }
        } else {
            // "List supported algorithms": each algorithm once, tagged by kind.
            let mut seen = Vec::new();
            for s in CipherSuite::ALL {
                let (a, i, c) = s.algorithms();
                for v in [a.0, 0x40 | i.0, 0x80 | c.0] {
                    if !seen.contains(&v) {
                        seen.push(v);
                    }
                }
            }
            seen.sort_by_key(|v| (v >> 6, v & 0x3f));
            stream.push(0xc0);
            stream.extend_from_slice(&seen);
        }
    }
    let index = (data[2] & 0x3f) as usize;
    let start = (index * 16).min(stream.len());
    let end = (start + 16).min(stream.len());
    let mut out = vec![CHANNEL];
    out.extend_from_slice(&stream[start..end]);
    (CompletionCode::OK, out)
}

/// What a command handler gets: the request, the session's context and the BMC's state.
pub(crate) struct Call<'a, 'r> {
    req: &'a IpmiRequest<'r>,
    ctx: &'a mut CmdContext,
    cfg: &'a BmcConfig,
    wire_guid: &'a [u8; 16],
    bmc: &'a mut BmcState,
}

impl Call<'_, '_> {
    fn data(&self) -> &[u8] {
        self.req.data
    }
}

/// A command's handler, as [`COMMANDS`] holds it.
pub(crate) type Handler = fn(&mut Call<'_, '_>) -> Outcome;

/// Dispatch an in-session request through [`COMMANDS`]: unknown commands get C1, then the
/// privilege check (D4), then the command's handler.
pub(crate) fn dispatch(
    req: &IpmiRequest<'_>,
    ctx: &mut CmdContext,
    cfg: &BmcConfig,
    wire_guid: &[u8; 16],
    bmc: &mut BmcState,
) -> Outcome {
    let Some(spec) = command(req.netfn, req.cmd) else {
        // Unknown commands, and the netFn 2Ch probes ipmitool sends at start-up, get C1:
        // a success would switch ipmitool into PICMG/VITA mode (protocol notes §8.7).
        return err(CompletionCode::INVALID_COMMAND);
    };
    if ctx.privilege < spec.min_privilege {
        return err(CompletionCode::INSUFFICIENT_PRIVILEGE);
    }
    (spec.handler)(&mut Call {
        req,
        ctx,
        cfg,
        wire_guid,
        bmc,
    })
}

/// Cold Reset and Warm Reset (IPMI v2.0 §20.2–20.3): answered, then the BMC's sessions end.
fn reset(c: &mut Call<'_, '_>) -> Outcome {
    if !c.data().is_empty() {
        return err(CompletionCode::BAD_LENGTH);
    }
    Outcome::Reply {
        cc: CompletionCode::OK,
        data: Vec::new(),
        after: After::ResetBmc,
    }
}

/// Get Device GUID and Get System GUID (IPMI v2.0 §20.8, §22.14).
fn guid(c: &mut Call<'_, '_>) -> Outcome {
    if !c.data().is_empty() {
        return err(CompletionCode::BAD_LENGTH);
    }
    ok(c.wire_guid.to_vec())
}

/// Get Channel Access (IPMI v2.0 §22.23).
fn get_channel_access(c: &mut Call<'_, '_>) -> Outcome {
    if c.data().len() != 2 {
        return err(CompletionCode::BAD_LENGTH);
    }
    // Always available, per-message and user-level auth enabled; limit ADMINISTRATOR.
    ok(vec![0x02, 0x04])
}

/// Get Channel Info (IPMI v2.0 §22.24).
fn get_channel_info(c: &mut Call<'_, '_>) -> Outcome {
    let d = c.data();
    if d.len() != 1 {
        return err(CompletionCode::BAD_LENGTH);
    }
    let chan = d[0] & 0x0f;
    if chan != 0x0e && chan != CHANNEL {
        return err(CompletionCode::INVALID_FIELD);
    }
    // 802.3 LAN, IPMB-1.0 protocol, multi-session; IANA 7154 (IPMI forum).
    let active = c.ctx.active_sessions.min(0x3f) as u8;
    ok(vec![
        CHANNEL,
        0x04,
        0x01,
        0x80 | active,
        0xf2,
        0x1b,
        0x00,
        0x00,
        0x00,
    ])
}

/// Get Chassis Status (IPMI v2.0 §28.2): asks the machine for its power state.
fn get_chassis_status(c: &mut Call<'_, '_>) -> Outcome {
    if !c.data().is_empty() {
        return err(CompletionCode::BAD_LENGTH);
    }
    Outcome::Machine {
        request: MachineRequest::PowerState,
        kind: PendingKind::ChassisStatus,
    }
}

/// Chassis Control (IPMI v2.0 §28.3).
fn chassis_control(c: &mut Call<'_, '_>) -> Outcome {
    let d = c.data();
    if d.len() != 1 {
        return err(CompletionCode::BAD_LENGTH);
    }
    let Some(action) = PowerAction::from_control(d[0]).filter(|_| d[0] & 0xf0 == 0) else {
        return err(CompletionCode::INVALID_FIELD);
    };
    Outcome::Machine {
        request: MachineRequest::Power(action),
        kind: PendingKind::Control(action),
    }
}

/// Get LAN Configuration Parameters (IPMI v2.0 §23.2): revision-only queries answer; the
/// rest of the LAN configuration belongs to the host, not to this virtual BMC.
fn get_lan_config(c: &mut Call<'_, '_>) -> Outcome {
    let d = c.data();
    if d.len() != 4 {
        return err(CompletionCode::BAD_LENGTH);
    }
    if d[0] & 0x80 != 0 || d[1] == 0 {
        ok(vec![0x11, 0x00][..if d[0] & 0x80 != 0 { 1 } else { 2 }].to_vec())
    } else {
        err(CompletionCode::PARAM_NOT_SUPPORTED)
    }
}

/// Get Device ID (IPMI v2.0 §20.1): all 15 bytes including the auxiliary revision, the length
/// FreeIPMI's template expects.
fn get_device_id(d: &[u8], cfg: &BmcConfig) -> Outcome {
    if !d.is_empty() {
        return err(CompletionCode::BAD_LENGTH);
    }
    let id = &cfg.identity;
    let m = id.manufacturer_id.to_le_bytes();
    let p = id.product_id.to_le_bytes();
    ok(vec![
        0x20,                     // device ID
        0x01,                     // no device SDRs; device revision 1
        id.firmware_major & 0x7f, // available; firmware major
        id.firmware_minor_bcd,
        0x02, // IPMI 2.0
        // Additional device support: chassis device, SEL device, SDR repository device — the
        // storage commands below answer for those.
        0x80 | 0x04 | 0x02,
        m[0],
        m[1],
        m[2] & 0x0f,
        p[0],
        p[1],
        0,
        0,
        0,
        0,
    ])
}

/// Set Session Privilege Level (IPMI v2.0 §22.18).
fn set_session_privilege(d: &[u8], ctx: &mut CmdContext) -> Outcome {
    if d.len() != 1 {
        return err(CompletionCode::BAD_LENGTH);
    }
    let want = d[0] & 0x0f;
    if want == 0 {
        return ok(vec![ctx.privilege as u8]);
    }
    let Some(p) = Privilege::from_u8(want).filter(|p| *p >= Privilege::User) else {
        return err(CompletionCode::PRIV_NOT_AVAILABLE);
    };
    if p > ctx.max_privilege {
        return err(CompletionCode::PRIV_EXCEEDS_LIMIT);
    }
    ctx.privilege = p;
    ok(vec![p as u8])
}

/// Close Session (IPMI v2.0 §22.19). Closing the own session is always allowed; another
/// session needs ADMINISTRATOR.
fn close_session(d: &[u8], ctx: &CmdContext) -> Outcome {
    if d.len() != 4 && d.len() != 5 {
        return err(CompletionCode::BAD_LENGTH);
    }
    let sid = u32::from_le_bytes(d[..4].try_into().unwrap());
    if sid == 0 {
        // By handle: we number sessions by ID only; handle 0 means "this session" nowhere.
        return err(CompletionCode::INVALID_SESSION_HANDLE);
    }
    if sid != ctx.sid && ctx.privilege < Privilege::Administrator {
        return err(CompletionCode::INSUFFICIENT_PRIVILEGE);
    }
    Outcome::Reply {
        cc: CompletionCode::OK,
        data: Vec::new(),
        after: After::CloseSession(sid),
    }
}

/// Get Session Info (IPMI v2.0 §22.20) for the current session.
fn get_session_info(d: &[u8], ctx: &CmdContext) -> Outcome {
    if d.is_empty() {
        return err(CompletionCode::BAD_LENGTH);
    }
    if d[0] != 0 {
        return err(CompletionCode::NOT_PRESENT);
    }
    ok(vec![
        1,
        ctx.max_sessions.min(0x3f) as u8,
        ctx.active_sessions.min(0x3f) as u8,
        ctx.user_id,
        ctx.privilege as u8,
        0x10 | CHANNEL, // IPMI v2.0/RMCP+ session on channel 1
    ])
}

/// Get User Access (IPMI v2.0 §22.27). User ID 1 is the (disabled) null user; configured
/// users are IDs 2 and up. A small maximum keeps `ipmitool user list` short.
fn get_user_access(d: &[u8], ctx: &CmdContext, cfg: &BmcConfig) -> Outcome {
    if d.len() != 2 {
        return err(CompletionCode::BAD_LENGTH);
    }
    let id = (d[1] & 0x3f) as usize;
    let max = ctx.user_count + 1;
    if id == 0 || id > max {
        return err(CompletionCode::INVALID_FIELD);
    }
    let limit = if id == 1 {
        0x0f // no access
    } else {
        0x10 | cfg.users[id - 2].max_privilege as u8 // IPMI messaging enabled
    };
    ok(vec![
        max as u8,
        0x40 | (ctx.user_count as u8 & 0x3f),
        0x01,
        limit,
    ])
}

/// Get User Name (IPMI v2.0 §22.29): 16 bytes, NUL padded.
fn get_user_name(d: &[u8], cfg: &BmcConfig) -> Outcome {
    if d.len() != 1 {
        return err(CompletionCode::BAD_LENGTH);
    }
    let id = (d[0] & 0x3f) as usize;
    let mut name = vec![0u8; 16];
    match id {
        1 => {}
        i if i >= 2 && i - 2 < cfg.users.len() => {
            let n = cfg.users[i - 2].name.as_bytes();
            name[..n.len()].copy_from_slice(n);
        }
        _ => return err(CompletionCode::INVALID_FIELD),
    }
    ok(name)
}

/// Chassis Identify (IPMI v2.0 §28.5): optional interval (default 15 s, 0 = off) and
/// optional force-on.
fn chassis_identify(d: &[u8], now: Instant, bmc: &mut BmcState) -> Outcome {
    if d.len() > 2 {
        return err(CompletionCode::BAD_LENGTH);
    }
    let interval = d.first().copied().unwrap_or(15);
    let force = d.get(1).is_some_and(|b| b & 1 != 0);
    bmc.identify_forced = force;
    bmc.identify_until =
        (!force && interval > 0).then(|| now + Duration::from_secs(interval as u64));
    ok(Vec::new())
}

/// Set System Boot Options (IPMI v2.0 §28.12). Parameter 5 goes to the machine.
fn set_boot_option(d: &[u8], bmc: &mut BmcState) -> Outcome {
    if d.is_empty() {
        return err(CompletionCode::BAD_LENGTH);
    }
    let param = d[0] & 0x7f;
    let data = &d[1..];
    let want_len = match param {
        0..=3 => 1,
        4 => 2,
        5 => 5,
        6 => 9,
        _ => return err(CompletionCode::PARAM_NOT_SUPPORTED),
    };
    if data.len() != want_len {
        return err(CompletionCode::BAD_LENGTH);
    }
    match param {
        0 => {
            // Set in progress: 00 complete, 01 in progress, 10 commit write; 11 reserved.
            // "Commit" has nothing to do: every write takes effect at once.
            let v = data[0] & 0x03;
            if v == 0x03 {
                return err(CompletionCode::INVALID_FIELD);
            }
            bmc.boot_params
                .insert(0, vec![if v == 0x02 { 0 } else { v }]);
            ok(Vec::new())
        }
        4 => {
            // Boot info acknowledge: byte 1 is the write mask for byte 2.
            let cur = bmc.boot_params.get(&4).map_or(0, |v| v[0]);
            let mask = data[0];
            bmc.boot_params
                .insert(4, vec![(cur & !mask) | (data[1] & mask)]);
            ok(Vec::new())
        }
        5 => Outcome::Machine {
            request: MachineRequest::SetBootFlags(BootFlags(data.try_into().unwrap())),
            kind: PendingKind::SetBootFlags,
        },
        _ => {
            let mut v = data.to_vec();
            if param == 3 {
                v[0] &= 0x1f;
            }
            bmc.boot_params.insert(param, v);
            ok(Vec::new())
        }
    }
}

/// Get System Boot Options (IPMI v2.0 §28.13): parameter version 1, selector, data.
fn get_boot_option(d: &[u8], bmc: &BmcState) -> Outcome {
    if d.len() != 3 {
        return err(CompletionCode::BAD_LENGTH);
    }
    let param = d[0] & 0x7f;
    let data = match param {
        5 => {
            return Outcome::Machine {
                request: MachineRequest::GetBootFlags,
                kind: PendingKind::GetBootFlags,
            };
        }
        0..=3 => bmc.boot_params.get(&param).cloned().unwrap_or(vec![0]),
        4 => vec![0, bmc.boot_params.get(&4).map_or(0, |v| v[0])],
        6 => bmc.boot_params.get(&6).cloned().unwrap_or(vec![0; 9]),
        _ => return err(CompletionCode::PARAM_NOT_SUPPORTED),
    };
    let mut out = vec![0x01, param];
    out.extend_from_slice(&data);
    ok(out)
}

/// The one SDR record we hold: a Management Controller Device Locator (type 12h, IPMI v2.0
/// §43.9) for this BMC. With no record at all, ipmitool's SDR iterator tries to *clear and
/// rebuild* the repository (protocol notes §8.5); one honest record avoids that.
fn sdr_record() -> Vec<u8> {
    let name = b"ovbmc";
    let mut r = vec![
        0x01,
        0x00, // record ID 1
        0x51, // SDR version
        0x12, // MC device locator
        (11 + name.len()) as u8,
        0x20, // slave address
        0x00, // channel 0
        0x00, // no event generation, no global init
        0x86, // capabilities: chassis device, SEL device, SDR repository device
        0x00,
        0x00,
        0x00,
        0x06, // entity: system management module
        0x01, // instance
        0x00, // OEM
        0xc0 | name.len() as u8,
    ];
    r.extend_from_slice(name);
    r
}

/// Storage commands: the SDR repository with its one record, an empty SEL.
fn storage(cmd: u8, d: &[u8]) -> Outcome {
    match cmd {
        // Get SDR Repository Info: 1 record, no free space, reserve supported (§33.9).
        0x20 => ok(vec![
            0x51, 0x01, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
        ]),
        // Reserve SDR Repository / Reserve SEL: a fixed reservation ID; nothing is writable.
        0x22 | 0x42 => ok(vec![0x01, 0x00]),
        0x23 => {
            // Get SDR: reservation (2), record ID (2), offset (1), bytes to read (1).
            if d.len() != 6 {
                return err(CompletionCode::BAD_LENGTH);
            }
            let id = u16::from_le_bytes([d[2], d[3]]);
            if id != 0 && id != 1 {
                return err(CompletionCode::NOT_PRESENT);
            }
            let rec = sdr_record();
            let off = d[4] as usize;
            if off > rec.len() {
                return err(CompletionCode::OUT_OF_RANGE);
            }
            let n = if d[5] == 0xff {
                rec.len() - off
            } else {
                (d[5] as usize).min(rec.len() - off)
            };
            let mut out = vec![0xff, 0xff]; // next record ID: none
            out.extend_from_slice(&rec[off..off + n]);
            ok(out)
        }
        // Get SEL Info: version 51h, no entries, no free space, no timestamps (§31.2).
        0x40 => ok(vec![0x51, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02]),
        // Get SEL Entry: there are none.
        0x43 => err(CompletionCode::NOT_PRESENT),
        _ => err(CompletionCode::INVALID_COMMAND),
    }
}

/// Turn a machine result into completion code and data.
pub(crate) fn machine_reply(
    kind: &PendingKind,
    result: MachineResult,
    bmc: &mut BmcState,
    now: Instant,
) -> (CompletionCode, Vec<u8>) {
    match (kind, result) {
        (PendingKind::ChassisStatus, Ok(MachineReply::PowerState(p))) => {
            let on = (p == PowerState::On) as u8;
            let identify = if bmc.identify_forced {
                0x20
            } else if bmc.identify_until.is_some_and(|t| now < t) {
                0x10
            } else {
                0x00
            };
            // Byte 1: power on bit, restore policy "previous" (01b at bits 6:5), as a cloud
            // instance resumes its state. Byte 3 bit 6: identify state supported.
            (
                CompletionCode::OK,
                vec![
                    0x20 | on,
                    if bmc.last_power_on_by_ipmi {
                        0x10
                    } else {
                        0x00
                    },
                    0x40 | identify,
                    0x00,
                ],
            )
        }
        (PendingKind::Control(a), Ok(_)) => {
            if matches!(a, PowerAction::On | PowerAction::Cycle | PowerAction::Reset) {
                bmc.last_power_on_by_ipmi = true;
            }
            (CompletionCode::OK, Vec::new())
        }
        (PendingKind::SetBootFlags, Ok(_)) => (CompletionCode::OK, Vec::new()),
        (PendingKind::GetBootFlags, Ok(MachineReply::BootFlags(f))) => {
            let mut out = vec![0x01, 0x05];
            out.extend_from_slice(&f.0);
            (CompletionCode::OK, out)
        }
        (_, Ok(_)) => (CompletionCode::UNSPECIFIED, Vec::new()),
        (_, Err(e)) => (
            match e {
                MachineError::Busy => CompletionCode::NODE_BUSY,
                MachineError::NotInPresentState => CompletionCode::NOT_IN_PRESENT_STATE,
                MachineError::Unsupported => CompletionCode::UNAVAILABLE,
                MachineError::Failed => CompletionCode::UNSPECIFIED,
                MachineError::Timeout => CompletionCode::TIMEOUT,
            },
            Vec::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::User;
    use zeroize::Zeroizing;

    fn run(netfn: u8, cmd: u8, privilege: Privilege) -> Option<CompletionCode> {
        let user = User::new("a", Zeroizing::new(b"p".to_vec()), Privilege::Administrator);
        let cfg = BmcConfig::new(vec![user.unwrap()], [1; 16]).unwrap();
        let mut ctx = CmdContext {
            sid: 1,
            privilege,
            max_privilege: Privilege::Administrator,
            user_id: 2,
            user_count: 1,
            active_sessions: 1,
            max_sessions: 4,
            now: Instant::now(),
        };
        let req = IpmiRequest::to_bmc(NetFn(netfn), cmd, 1, &[]);
        match dispatch(&req, &mut ctx, &cfg, &[0; 16], &mut BmcState::default()) {
            Outcome::Reply { cc, .. } => Some(cc),
            _ => None,
        }
    }

    /// The table and the dispatcher agree: every command in `COMMANDS` has a handler (no C1
    /// at ADMINISTRATOR), runs at its minimum privilege and is refused just below it (D4);
    /// a command not in the table is C1 whatever the privilege.
    #[test]
    fn the_command_table_and_dispatch_agree() {
        for c in COMMANDS {
            let at = |p| run(c.netfn.0, c.cmd, p);
            assert_ne!(
                at(Privilege::Administrator),
                Some(CompletionCode::INVALID_COMMAND),
                "{c:?}"
            );
            assert_ne!(
                at(c.min_privilege),
                Some(CompletionCode::INSUFFICIENT_PRIVILEGE),
                "{c:?}"
            );
            if let Some(below) = Privilege::from_u8(c.min_privilege as u8 - 1) {
                assert_eq!(
                    at(below),
                    Some(CompletionCode::INSUFFICIENT_PRIVILEGE),
                    "{c:?}"
                );
            }
            assert!(
                command(c.netfn, c.cmd).is_some_and(|f| std::ptr::eq(f, c)),
                "{c:?}"
            );
        }
        for (netfn, cmd) in [(0x2c, 0x00), (0x06, 0x05), (0x0a, 0x44), (0x30, 0x01)] {
            assert_eq!(
                run(netfn, cmd, Privilege::Administrator),
                Some(CompletionCode::INVALID_COMMAND)
            );
        }
        let names: std::collections::HashSet<_> = COMMANDS.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), COMMANDS.len(), "names are unique");
    }
}
