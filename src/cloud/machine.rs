//! One Nova instance behind one virtual BMC.
//!
//! Power: IPMI "on" is Nova status `ACTIVE` (or `RESCUE`, `REBOOT`, `HARD_REBOOT`), or
//! `SHUTOFF` with task_state `powering-on`; see `nova_power`. Actions map to server actions
//! (Nova API reference, "Servers - run an action"): on → `os-start`, off and soft → `os-stop`,
//! reset and cycle → `reboot` HARD, diag → `trigger_crash_dump` (2.17+). After Nova accepts an
//! action (202), we report the state we were asked for until a server list fetched *after* the
//! 202 shows the instance with no task_state (Nova sets task_state before it answers 202, in
//! `nova/compute/api.py`, so such a list cannot be stale), or until a deadline passes. So
//! Ironic, which polls status right after "power off", never sees a stale "on".
//!
//! Boot device: see [`BootStrategy`]. The flags themselves (the 5 bytes of boot option
//! parameter 5) are stored on the instance as metadata `ovbmc:boot` (10 hex digits), so a
//! restarted or second ovbmc reports them too.

mod media;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::BootStrategy;
use super::CloudError;
use super::session::{Server, Service, Session};
use crate::backend::{BackendError, BoxFuture, Machine};
use ipmi_proto::machine::{BootDevice, BootFlags, MachineError, PowerAction, PowerState};

/// Metadata key holding the boot flags (hex of the 5 bytes).
pub const BOOT_KEY: &str = "ovbmc:boot";
/// Metadata key OVB's patched Nova reads to put the network first in the guest's boot order.
pub const PXE_FIRST_KEY: &str = "libvirt:pxe-first";

pub use media::clean_stale as clean_stale_media;

/// Behaviour of the machines.
#[derive(Clone, Debug)]
pub struct MachineOptions {
    /// How a PXE boot is carried out.
    pub strategy: BootStrategy,
    /// Glance id of the iPXE image (rescue and rebuild strategies).
    pub ipxe_image: Option<String>,
    /// How long an accepted action's target state is reported without Nova confirming it.
    pub confirm_timeout: Duration,
    /// Poll interval while a multi-step action waits for Nova to finish a step.
    pub settle_poll: Duration,
    /// Where the background part of a multi-step action runs, so that shutdown waits for it
    /// or logs what it left undone (the daemon hands every machine the same set).
    pub tasks: crate::tasks::Tasks,
    /// The largest virtual media image fetched and uploaded (bytes).
    pub vmedia_max_bytes: u64,
    /// How long fetching and uploading one virtual media image may take.
    pub vmedia_timeout: Duration,
    /// How a virtual media image reaches Glance.
    pub vmedia_import: super::VmediaImport,
}

impl Default for MachineOptions {
    fn default() -> Self {
        Self {
            strategy: BootStrategy::Metadata,
            ipxe_image: None,
            confirm_timeout: Duration::from_secs(300),
            settle_poll: Duration::from_millis(500),
            tasks: crate::tasks::Tasks::new(),
            vmedia_max_bytes: 4096 * 1024 * 1024,
            vmedia_timeout: Duration::from_secs(3600),
            vmedia_import: super::VmediaImport::Upload,
        }
    }
}

/// A Nova server action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `os-start` (SHUTOFF → ACTIVE).
    Start,
    /// `os-stop` (ACTIVE → SHUTOFF; a clean shutdown with a timeout, then destroy).
    Stop,
    /// `reboot` HARD (also powers on a SHUTOFF instance).
    RebootHard,
    /// `rescue` with the iPXE image (ACTIVE or SHUTOFF → RESCUE, running).
    Rescue,
    /// `unrescue` (RESCUE → ACTIVE, booting the instance's own disk).
    Unrescue,
    /// `rebuild` with the iPXE image (keeps the power state; wipes the root disk).
    Rebuild,
    /// `trigger_crash_dump` (an NMI to the guest).
    CrashDump,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Self::Start => "os-start",
            Self::Stop => "os-stop",
            Self::RebootHard => "reboot HARD",
            Self::Rescue => "rescue",
            Self::Unrescue => "unrescue",
            Self::Rebuild => "rebuild",
            Self::CrashDump => "trigger_crash_dump",
        }
    }

    /// The action body (Nova API reference, "Servers - run an action").
    fn body(self, image: Option<&str>) -> Value {
        match self {
            Self::Start => json!({ "os-start": null }),
            Self::Stop => json!({ "os-stop": null }),
            Self::RebootHard => json!({ "reboot": { "type": "HARD" } }),
            Self::Rescue => json!({ "rescue": { "rescue_image_ref": image } }),
            Self::Unrescue => json!({ "unrescue": null }),
            Self::Rebuild => json!({ "rebuild": { "imageRef": image } }),
            Self::CrashDump => json!({ "trigger_crash_dump": null }),
        }
    }
}

/// What a power action turns into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Nova actions, run one after the other; each waits for the previous one to finish.
    pub steps: Vec<Step>,
    /// The power state the instance ends in (`None`: unchanged, e.g. diag).
    pub expect: Option<PowerState>,
    /// The plan boots the instance, which consumes one-time boot flags.
    pub boots: bool,
}

/// The IPMI power state of a Nova server (see the module doc; `docs/nova.md` has the table).
pub fn nova_power(s: &Server) -> PowerState {
    let on = match s.status.as_str() {
        "ACTIVE" | "RESCUE" | "REBOOT" | "HARD_REBOOT" | "PASSWORD" => true,
        "SHUTOFF" => s.task_state.as_deref() == Some("powering-on"),
        "ERROR" | "BUILD" | "PAUSED" | "SUSPENDED" | "SHELVED" | "SHELVED_OFFLOADED"
        | "DELETED" | "SOFT_DELETED" => false,
        // REBUILD, MIGRATING, RESIZE, VERIFY_RESIZE, ...: whether the guest runs
        // (power_state 1 = RUNNING, nova/compute/power_state.py).
        _ => s.power_state == Some(1),
    };
    if on { PowerState::On } else { PowerState::Off }
}

/// Turn `action` into Nova actions for a server in `status` (no task in progress), under
/// `strategy`, with `pxe` = the next boot is a network boot, `cd` = the next boot is from the
/// inserted virtual media (a rescue with its image, whatever the strategy). `Ok(None)`: nothing
/// to do (on when on, off when off).
pub fn plan(
    strategy: BootStrategy,
    action: PowerAction,
    status: &str,
    pxe: bool,
    cd: bool,
) -> Result<Option<Plan>, (MachineError, String)> {
    use PowerAction as A;
    use Step::*;
    let on = Some(PowerState::On);
    let off = Some(PowerState::Off);
    let boot = |steps: Vec<Step>| {
        Ok(Some(Plan {
            steps,
            expect: on,
            boots: true,
        }))
    };
    // The network boot variant of "start" and "restart" for each strategy.
    let (start, restart, rescued_restart): (Vec<Step>, Vec<Step>, Vec<Step>) = match strategy {
        _ if cd => (vec![Rescue], vec![Rescue], vec![Unrescue, Rescue]),
        BootStrategy::Metadata => (vec![Start], vec![RebootHard], vec![Unrescue]),
        BootStrategy::Rescue if pxe => (vec![Rescue], vec![Rescue], vec![Unrescue, Rescue]),
        BootStrategy::Rescue => (vec![Start], vec![RebootHard], vec![Unrescue]),
        BootStrategy::Rebuild if pxe => {
            (vec![Rebuild, Start], vec![Rebuild], vec![Unrescue, Rebuild])
        }
        BootStrategy::Rebuild => (vec![Start], vec![RebootHard], vec![Unrescue]),
    };
    match (status, action) {
        ("ACTIVE" | "RESCUE", A::On) | ("SHUTOFF", A::Off | A::Soft) => Ok(None),
        ("SHUTOFF", A::On) => boot(start),
        ("ACTIVE", A::Off | A::Soft) => Ok(Some(Plan {
            steps: vec![Stop],
            expect: off,
            boots: false,
        })),
        // Nova refuses os-stop of a rescued instance (vm_state must be ACTIVE or ERROR), so
        // leave rescue first.
        ("RESCUE", A::Off | A::Soft) => Ok(Some(Plan {
            steps: vec![Unrescue, Stop],
            expect: off,
            boots: false,
        })),
        ("ACTIVE", A::Reset | A::Cycle) => boot(restart),
        // A reset of an off machine powers it on (Nova's HARD reboot of SHUTOFF does too); a
        // cycle needs power to cycle (IPMI v2.0 §28.3; the simulator does the same).
        ("SHUTOFF", A::Reset) => match strategy {
            BootStrategy::Rebuild if pxe && !cd => boot(start),
            _ => boot(restart),
        },
        ("SHUTOFF", A::Cycle) => Err((
            MachineError::NotInPresentState,
            format!("power {action} while the instance is off"),
        )),
        // An NMI to a machine that is off has no CPU to interrupt: accepted as a no-op, as
        // virtualbmc does. Ironic's inject_nmi does not look at the power state, and an error
        // would cost it a minute of retries and an HTTP 500.
        ("SHUTOFF", A::Diag) => Ok(None),
        ("RESCUE", A::Reset | A::Cycle) => boot(rescued_restart),
        ("ACTIVE" | "RESCUE", A::Diag) => Ok(Some(Plan {
            steps: vec![CrashDump],
            expect: None,
            boots: false,
        })),
        ("UNKNOWN", _) => Err((
            MachineError::Busy,
            "Nova reports status UNKNOWN (its cell is unreachable)".into(),
        )),
        (other, _) => Err((
            MachineError::NotInPresentState,
            format!(
                "power {action} while the instance is {other}; ovbmc drives ACTIVE, SHUTOFF and \
                 RESCUE instances"
            ),
        )),
    }
}

fn hex(f: BootFlags) -> String {
    f.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<BootFlags> {
    if s.len() != 10 {
        return None;
    }
    let mut out = [0u8; 5];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(BootFlags(out))
}

/// The boot flags recorded on a server: `ovbmc:boot` if present, else (for OVB instances set up
/// by other tools) persistent PXE when `libvirt:pxe-first` is "1", else none.
pub fn stored_flags(s: &Server) -> BootFlags {
    if let Some(f) = s.metadata.get(BOOT_KEY).and_then(|v| unhex(v)) {
        return f;
    }
    if s.metadata.get(PXE_FIRST_KEY).map(String::as_str) == Some("1") {
        return BootFlags::new(BootDevice::Pxe, true, false);
    }
    BootFlags::default()
}

#[derive(Debug)]
struct Expect {
    power: PowerState,
    action: PowerAction,
    accepted: Instant,
    deadline: Instant,
}

#[derive(Debug)]
struct PendingBoot {
    flags: BootFlags,
    /// When Nova accepted the metadata write; `None` while it could not be written yet (Nova
    /// refuses metadata changes on a rescued instance) or a write is still to come.
    written: Option<Instant>,
}

#[derive(Debug, Default)]
struct Local {
    expect: Option<Expect>,
    /// A multi-step action is running in the background.
    busy_with: Option<PowerAction>,
    /// Flags we set that a view may not show yet.
    boot: Option<PendingBoot>,
    /// Bumped by every Set System Boot Options, so a late consume does not undo a newer set.
    boot_gen: u64,
    /// A request-path Nova call that changes the instance is in flight. A slow cloud makes the
    /// server answer busy and the client retry: the retry must not send a second action.
    writing: Option<String>,
    /// The virtual CD.
    media: media::Slot,
}

/// Clears [`Local::writing`] when the call ends, however it ends.
struct Writing<'a>(&'a Inner);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.lock().writing = None;
    }
}

struct Inner {
    session: Arc<Session>,
    id: String,
    name: String,
    uuid: [u8; 16],
    opts: MachineOptions,
    local: Mutex<Local>,
}

/// A Nova instance as a [`Machine`].
pub struct NovaMachine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NovaMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NovaMachine")
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

fn berr(kind: MachineError, msg: impl Into<String>) -> BackendError {
    BackendError::new(kind, msg)
}

impl NovaMachine {
    /// A machine for instance `id` on `session`.
    pub fn new(
        session: Arc<Session>,
        id: String,
        name: String,
        uuid: [u8; 16],
        opts: MachineOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::new(Inner {
                session,
                id,
                name,
                uuid,
                opts,
                local: Mutex::new(Local::default()),
            }),
        })
    }

    /// The Nova instance id.
    pub fn instance_id(&self) -> &str {
        &self.inner.id
    }

    /// The shared session.
    pub fn session(&self) -> &Arc<Session> {
        &self.inner.session
    }

    /// True while a multi-step action (or a deferred boot-flag update) runs in the background.
    pub fn busy(&self) -> bool {
        self.inner.lock().busy_with.is_some()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        // Poisoning only means a panic elsewhere; every update here is a plain assignment.
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mark a change in flight, or answer busy if one already is.
    fn begin_write(&self, what: String) -> Result<Writing<'_>, BackendError> {
        let mut l = self.lock();
        if let Some(w) = &l.writing {
            return Err(berr(
                MachineError::Busy,
                format!("{}: {w} is still waiting for Nova", self.name),
            ));
        }
        l.writing = Some(what);
        Ok(Writing(self))
    }

    fn subject(&self, what: &str) -> String {
        format!("{} {what}", self.name)
    }

    /// Log (once per cause) and convert a cloud error.
    fn fail(&self, what: &str, e: CloudError) -> BackendError {
        let subject = self.subject(what);
        self.session.log.failed(&subject, &e.cause(), &e);
        berr(e.kind(), format!("{subject}: {e}"))
    }

    /// Our server in a fresh-enough view.
    async fn server(&self, max_age: Option<Duration>) -> Result<(Instant, Server), BackendError> {
        let view = self
            .session
            .view(max_age)
            .await
            .map_err(|e| berr(e.kind(), format!("{}: {e}", self.name)))?;
        match view.servers.get(&self.id) {
            Some(s) => Ok((view.started, s.clone())),
            None => {
                let e = CloudError::Http {
                    what: format!("instance {}", self.id),
                    status: 404,
                    message: "no longer in the server list (deleted?)".into(),
                };
                Err(self.fail("lookup", e))
            }
        }
    }

    fn check_error(&self, s: &Server) -> Result<(), BackendError> {
        if s.status == "ERROR" {
            let fault = s.fault.as_deref().unwrap_or("no fault message");
            let msg = format!("{}: Nova reports ERROR: {fault}", self.name);
            self.session
                .log
                .failed(&self.subject("state"), &format!("error:{fault}"), &msg);
            return Err(berr(MachineError::Failed, msg));
        }
        self.session.log.ok(&self.subject("state"));
        Ok(())
    }

    async fn power_state(&self) -> Result<PowerState, BackendError> {
        let (started, s) = self.server(None).await?;
        self.check_error(&s)?;
        let raw = nova_power(&s);
        let mut l = self.lock();
        let Some(e) = &l.expect else {
            return Ok(raw);
        };
        let now = Instant::now();
        if now >= e.deadline {
            tracing::warn!(
                "{}: Nova did not confirm power {} within {:?} (status {}, task {}); \
                 reporting {}",
                self.name,
                e.action,
                self.opts.confirm_timeout,
                s.status,
                s.task_state.as_deref().unwrap_or("none"),
                on_off(raw)
            );
            l.expect = None;
            return Ok(raw);
        }
        if started > e.accepted && s.task_state.is_none() && l.busy_with.is_none() {
            if raw != e.power {
                tracing::warn!(
                    "{}: after power {}, Nova settled at {} ({})",
                    self.name,
                    e.action,
                    s.status,
                    on_off(raw)
                );
            }
            l.expect = None;
            return Ok(raw);
        }
        Ok(e.power)
    }

    /// The flags to report: ours while a view may not show them yet, else the stored ones.
    fn flags_from(&self, started: Instant, s: &Server) -> BootFlags {
        let stored = stored_flags(s);
        let mut l = self.lock();
        if let Some(p) = &l.boot {
            match p.written {
                None => return p.flags,
                Some(w) if started <= w => return p.flags,
                // A view after our write: it shows our flags, or someone else's newer ones.
                Some(_) => l.boot = None,
            }
        }
        stored
    }

    async fn boot_flags(&self) -> Result<BootFlags, BackendError> {
        let (started, s) = self.server(None).await?;
        Ok(self.flags_from(started, &s))
    }

    /// Write the flags (and, for the metadata strategy, `libvirt:pxe-first`) in one metadata
    /// merge (`POST /servers/{id}/metadata`, Nova API reference, "Create or Update Metadata
    /// Items"). Nova refuses metadata changes of a rescued instance (409, vm_state must be
    /// active, paused, suspended or stopped); then the flags are kept here and written when it
    /// leaves rescue.
    async fn write_flags(&self, flags: BootFlags, server: &Server) -> Result<(), BackendError> {
        let status = server.status.as_str();
        let mut meta = serde_json::Map::new();
        meta.insert(BOOT_KEY.into(), json!(hex(flags)));
        if self.opts.strategy == BootStrategy::Metadata {
            let pxe = flags.effective_device() == BootDevice::Pxe;
            meta.insert(PXE_FIRST_KEY.into(), json!(if pxe { "1" } else { "" }));
        } else if stale_pxe_first(server) {
            // Rescue and rebuild boot the network their own way; an old "1" left by the
            // metadata strategy would make OVB's Nova put the network first on every boot
            // (issue 15 item 17).
            meta.insert(PXE_FIRST_KEY.into(), json!(""));
        }
        let path = format!("/servers/{}/metadata", self.id);
        let r = self
            .session
            .call(
                &format!("Nova metadata update of {}", self.name),
                Method::POST,
                Service::Compute,
                &path,
                Some(&json!({ "metadata": meta })),
            )
            .await;
        self.session.invalidate();
        match r {
            Ok(_) => {
                self.session.log.ok(&self.subject("boot flags"));
                self.lock().boot = Some(PendingBoot {
                    flags,
                    written: Some(Instant::now()),
                });
                Ok(())
            }
            Err(CloudError::Http { status: 409, .. }) if status == "RESCUE" => {
                tracing::info!(
                    "{}: boot flags {flags} kept in memory until the instance leaves rescue \
                     (Nova refuses metadata changes while rescued)",
                    self.name
                );
                self.lock().boot = Some(PendingBoot {
                    flags,
                    written: None,
                });
                Ok(())
            }
            Err(e) => Err(self.fail("boot flags", e)),
        }
    }

    async fn set_boot_flags(&self, flags: BootFlags) -> Result<(), BackendError> {
        let _writing = self.begin_write(format!("boot flags {flags}"))?;
        let (started, s) = self.server(None).await?;
        let current = self.flags_from(started, &s);
        let pxe_first_ok = (self.opts.strategy != BootStrategy::Metadata && !stale_pxe_first(&s))
            || s.metadata.get(PXE_FIRST_KEY).map(String::as_str)
                == Some(if flags.effective_device() == BootDevice::Pxe {
                    "1"
                } else {
                    ""
                });
        self.lock().boot_gen += 1;
        // Ironic sets the boot device before every deploy step; skip writes that change
        // nothing.
        if current == flags && s.metadata.contains_key(BOOT_KEY) && pxe_first_ok {
            return Ok(());
        }
        self.write_flags(flags, &s).await
    }

    /// Send `step`; a rescue uses `image` (the inserted media's Glance image for a boot from
    /// `Cd`), else the iPXE image.
    async fn act(&self, step: Step, image: Option<&str>) -> Result<(), CloudError> {
        if step == Step::CrashDump && self.session.microversion() < (2, 17) {
            return Err(CloudError::Http {
                what: "trigger_crash_dump".into(),
                status: 400,
                message: "needs compute microversion 2.17".into(),
            });
        }
        if step == Step::Rescue && image.is_some() && self.session.microversion() < (2, 87) {
            // Stable device rescue (the image as a CD, the disks kept in place) is compute
            // microversion 2.87 (Nova API reference, "Rescue Server"); older clouds do a plain
            // rescue with the same request, booting the ISO in place of the root disk.
            tracing::warn!(
                "{}: virtual media boot: compute microversion {}.{} is older than 2.87, plain \
                 rescue (no stable device rescue)",
                self.name,
                self.session.microversion().0,
                self.session.microversion().1
            );
        }
        let path = format!("/servers/{}/action", self.id);
        let r = self
            .session
            .call(
                &format!("Nova {} of {}", step.name(), self.name),
                Method::POST,
                Service::Compute,
                &path,
                Some(&step.body(image.or(self.opts.ipxe_image.as_deref()))),
            )
            .await;
        // Whatever happened, the next status must come from a new list.
        self.session.invalidate();
        if r.is_ok() {
            let mut l = self.lock();
            match step {
                Step::Rescue => l.media.rescued = image.is_some(),
                Step::Unrescue | Step::Rebuild => l.media.rescued = false,
                _ => {}
            }
        }
        // The answer (rescue and rebuild return an adminPass) is dropped unread.
        r.map(|_| ())
    }

    async fn power(self: &Arc<Self>, action: PowerAction) -> Result<(), BackendError> {
        if let Some(running) = self.lock().busy_with {
            return Err(berr(
                MachineError::Busy,
                format!("{}: power {running} still in progress", self.name),
            ));
        }
        let _writing = self.begin_write(format!("power {action}"))?;
        let (started, s) = self.server(None).await?;
        self.check_error(&s)?;
        let target = match action {
            PowerAction::On => Some(PowerState::On),
            PowerAction::Off | PowerAction::Soft => Some(PowerState::Off),
            _ => None,
        };
        // Idempotent while our own transition is under way: "off" right after an accepted
        // "off" succeeds without a call (Nova would answer 409 while task_state is set).
        if let (Some(t), Some(e)) = (target, &self.lock().expect)
            && e.power == t
        {
            return Ok(());
        }
        if let Some(task) = &s.task_state {
            return Err(berr(
                MachineError::Busy,
                format!("{}: Nova task {task} in progress", self.name),
            ));
        }
        let flags = self.flags_from(started, &s);
        let pxe = flags.effective_device() == BootDevice::Pxe;
        let cd_boot = flags.effective_device() == BootDevice::Cdrom;
        let cd_image = {
            let l = self.lock();
            if cd_boot
                && l.media.state().inserting
                && matches!(
                    action,
                    PowerAction::On | PowerAction::Reset | PowerAction::Cycle
                )
            {
                // Ironic inserts, sets Cd and powers on at once: the boot waits for the upload
                // (busy: IPMI C0, Redfish 503 + Retry-After, and both retry).
                return Err(berr(
                    MachineError::Busy,
                    format!("{}: the virtual media insert is still uploading", self.name),
                ));
            }
            if cd_boot { l.media.bootable() } else { None }
        };
        let Some(plan) = plan(
            self.opts.strategy,
            action,
            &s.status,
            pxe,
            cd_image.is_some(),
        )
        .map_err(|(k, m)| berr(k, format!("{}: {m}", self.name)))?
        else {
            return Ok(());
        };
        let first = plan.steps[0];
        if let Err(mut e) = self.act(first, cd_image.as_deref()).await {
            if let CloudError::Timeout { what } = &mut e {
                // The request may have reached Nova: say that the outcome is unknown, and the
                // status (which follows Nova) will tell.
                what.push_str(" (Nova may still carry it out; the power status will show)");
            }
            let mut err = self.fail(&format!("power {action}"), e.clone());
            if first == Step::CrashDump && matches!(e, CloudError::Http { status: 400, .. }) {
                // Nova: "Cannot trigger crash dump ... NMI not supported" (400).
                err.kind = MachineError::Unsupported;
            }
            return Err(err);
        }
        self.session
            .log
            .ok(&self.subject(&format!("power {action}")));
        tracing::info!(
            "{}: power {action} accepted ({})",
            self.name,
            plan.steps
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(" then ")
        );
        let accepted = Instant::now();
        let consume =
            (plan.boots && flags.valid() && !flags.persistent()).then(|| flags.after_boot());
        let unwritten = self
            .lock()
            .boot
            .as_ref()
            .is_some_and(|p| p.written.is_none());
        let background = plan.steps.len() > 1 || consume.is_some() || unwritten;
        {
            let mut l = self.lock();
            if let Some(p) = plan.expect {
                l.expect = Some(Expect {
                    power: p,
                    action,
                    accepted,
                    deadline: accepted + self.opts.confirm_timeout,
                });
            }
            if let Some(after) = consume {
                // Reported at once (the boot has started); written once Nova has booted the
                // instance, since OVB's Nova reads libvirt:pxe-first while it builds the guest.
                l.boot = Some(PendingBoot {
                    flags: after,
                    written: None,
                });
            }
            if background {
                l.busy_with = Some(action);
            }
        }
        if background {
            let gen_at_start = self.lock().boot_gen;
            let me = self.clone();
            let rest = plan.steps[1..].to_vec();
            let what = format!(
                "{}: power {action}: {} sent, waiting for Nova; left: {}",
                self.name,
                first.name(),
                left_to_do(&rest, consume.is_some() || unwritten)
            );
            self.opts.tasks.spawn(what, |note| async move {
                me.finish(
                    action,
                    (rest, cd_image),
                    accepted,
                    consume,
                    gen_at_start,
                    &note,
                )
                .await;
                me.lock().busy_with = None;
            });
        }
        Ok(())
    }

    /// Wait until a list fetched after `after` shows no task on the instance.
    async fn settled(&self, after: Instant, deadline: Instant) -> Result<Server, String> {
        loop {
            if Instant::now() >= deadline {
                return Err("Nova did not finish in time".into());
            }
            match self.server(Some(self.opts.settle_poll)).await {
                Ok((started, s)) if started > after && s.task_state.is_none() => return Ok(s),
                Ok(_) => {}
                // A failed refresh was logged by the session; keep waiting until the deadline.
                Err(_) => {}
            }
            tokio::time::sleep(self.opts.settle_poll).await;
        }
    }

    /// The background part of an action: the remaining steps (a rescue among them with the
    /// given image, the virtual media's for a boot from Cd), then the boot-flag update.
    async fn finish(
        &self,
        action: PowerAction,
        (rest, cd_image): (Vec<Step>, Option<String>),
        mut after: Instant,
        consume: Option<BootFlags>,
        gen_at_start: u64,
        note: &crate::tasks::Note,
    ) {
        let deadline = after + self.opts.confirm_timeout;
        let mut last = None;
        let flags_left = consume.is_some() || self.lock().boot.is_some();
        for (i, step) in rest.iter().copied().enumerate() {
            note.set(format!(
                "{}: power {action}: waiting for Nova to finish the previous step; left: {}",
                self.name,
                left_to_do(&rest[i..], flags_left)
            ));
            let s = match self.settled(after, deadline).await {
                Ok(s) => s,
                Err(why) => {
                    tracing::warn!(
                        "{}: power {action}: {why}; {} not sent",
                        self.name,
                        step.name()
                    );
                    self.lock().expect = None;
                    return;
                }
            };
            if s.status == "ERROR" {
                tracing::warn!(
                    "{}: power {action}: instance went to ERROR ({}); {} not sent",
                    self.name,
                    s.fault.as_deref().unwrap_or("no fault message"),
                    step.name()
                );
                self.lock().expect = None;
                return;
            }
            if let Err(e) = self.act(step, cd_image.as_deref()).await {
                tracing::warn!("{}: power {action}: {e}", self.name);
                self.lock().expect = None;
                return;
            }
            after = Instant::now();
            last = Some(step);
            note.set(format!(
                "{}: power {action}: {} sent, waiting for Nova; left: {}",
                self.name,
                step.name(),
                left_to_do(&rest[i + 1..], flags_left)
            ));
        }
        let s = match self.settled(after, deadline).await {
            Ok(s) => s,
            Err(why) => {
                tracing::warn!(
                    "{}: power {action}: {why}; boot flags not updated",
                    self.name
                );
                return;
            }
        };
        if let Some(step) = last {
            tracing::info!(
                "{}: power {action}: {} done, {}",
                self.name,
                step.name(),
                s.status
            );
        }
        let flags = {
            let l = self.lock();
            if l.boot_gen != gen_at_start {
                // Someone set new flags meanwhile; theirs win.
                None
            } else {
                consume.or_else(|| {
                    l.boot
                        .as_ref()
                        .filter(|p| p.written.is_none())
                        .map(|p| p.flags)
                })
            }
        };
        if let Some(f) = flags
            && let Err(e) = self.write_flags(f, &s).await
        {
            tracing::warn!("{}: boot flags {f} not stored: {e}", self.name);
        }
    }
}

/// Whether `s` carries a non-empty `libvirt:pxe-first` (set by the metadata strategy), which
/// the rescue and rebuild strategies clear.
fn stale_pxe_first(s: &Server) -> bool {
    s.metadata.get(PXE_FIRST_KEY).is_some_and(|v| !v.is_empty())
}

/// What a plan still has to do, for the shutdown log: the Nova steps not sent yet, and the
/// boot-flag update that follows them.
fn left_to_do(steps: &[Step], flags: bool) -> String {
    let mut v: Vec<&str> = steps.iter().map(|s| s.name()).collect();
    v.push("wait for Nova to settle");
    if flags {
        v.push("store the boot flags");
    }
    v.join(", then ")
}

fn on_off(p: PowerState) -> &'static str {
    match p {
        PowerState::On => "on",
        PowerState::Off => "off",
    }
}

impl Machine for NovaMachine {
    fn power_state(&self) -> BoxFuture<'_, Result<PowerState, BackendError>> {
        Box::pin(self.inner.power_state())
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), BackendError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.power(action).await })
    }

    fn boot_flags(&self) -> BoxFuture<'_, Result<BootFlags, BackendError>> {
        Box::pin(self.inner.boot_flags())
    }

    fn set_boot_flags(&self, flags: BootFlags) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(self.inner.set_boot_flags(flags))
    }

    fn uuid(&self) -> [u8; 16] {
        self.inner.uuid
    }

    fn name(&self) -> String {
        self.inner.name.clone()
    }

    fn console(&self) -> Option<crate::console::Source> {
        Some(crate::console::Source::Nova {
            session: self.session().clone(),
            id: self.instance_id().to_string(),
        })
    }

    fn media_state(&self) -> Option<crate::backend::MediaState> {
        Some(self.inner.media_state())
    }

    fn insert_media(
        &self,
        url: String,
        options: crate::backend::InsertOptions,
    ) -> BoxFuture<'_, Result<(), BackendError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.insert_media(url, options).await })
    }

    fn eject_media(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(self.inner.eject_media())
    }

    fn retire(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.inner.retire())
    }

    fn inventory(&self) -> BoxFuture<'_, Option<crate::backend::Inventory>> {
        Box::pin(async move {
            // The shared, coalesced view: no request of its own when one is fresh.
            let (_, s) = self.inner.server(None).await.ok()?;
            let f = s.flavor.as_ref();
            Some(crate::backend::Inventory {
                cpus: f.and_then(|f| f.vcpus),
                memory_mib: f.and_then(|f| f.ram_mib),
                disk_gib: f.and_then(|f| f.disk_gib),
                flavor: f.and_then(|f| f.name.clone()),
                macs: s.macs,
                mac_networks: s.mac_networks,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status: &str, task: Option<&str>, power: i64) -> Server {
        Server {
            id: "x".into(),
            status: status.into(),
            task_state: task.map(str::to_string),
            power_state: Some(power),
            ..Server::default()
        }
    }

    #[test]
    fn power_mapping() {
        use PowerState::*;
        assert_eq!(nova_power(&server("ACTIVE", None, 1)), On);
        assert_eq!(nova_power(&server("ACTIVE", Some("powering-off"), 1)), On);
        assert_eq!(nova_power(&server("SHUTOFF", None, 4)), Off);
        assert_eq!(nova_power(&server("SHUTOFF", Some("powering-on"), 4)), On);
        assert_eq!(nova_power(&server("RESCUE", None, 4)), On);
        assert_eq!(
            nova_power(&server("HARD_REBOOT", Some("reboot_started_hard"), 1)),
            On
        );
        assert_eq!(nova_power(&server("REBUILD", Some("rebuilding"), 4)), Off);
        assert_eq!(nova_power(&server("ERROR", None, 1)), Off);
        assert_eq!(nova_power(&server("PAUSED", None, 3)), Off);
    }

    #[test]
    fn plans() {
        use BootStrategy as S;
        use PowerAction as A;
        use Step::*;
        let steps = |s, a, st, pxe| plan(s, a, st, pxe, false).unwrap().map(|p| p.steps);
        // Idempotent.
        assert_eq!(steps(S::Metadata, A::On, "ACTIVE", false), None);
        assert_eq!(steps(S::Metadata, A::Off, "SHUTOFF", false), None);
        assert_eq!(steps(S::Metadata, A::Soft, "SHUTOFF", false), None);
        assert_eq!(
            steps(S::Metadata, A::On, "SHUTOFF", true),
            Some(vec![Start])
        );
        assert_eq!(
            steps(S::Metadata, A::Soft, "ACTIVE", false),
            Some(vec![Stop])
        );
        assert_eq!(
            steps(S::Metadata, A::Reset, "SHUTOFF", false),
            Some(vec![RebootHard])
        );
        assert_eq!(
            steps(S::Metadata, A::Diag, "ACTIVE", false),
            Some(vec![CrashDump])
        );
        assert_eq!(steps(S::Metadata, A::Diag, "SHUTOFF", false), None);
        assert_eq!(
            plan(S::Metadata, A::Cycle, "SHUTOFF", false, false)
                .unwrap_err()
                .0,
            MachineError::NotInPresentState
        );
        assert_eq!(
            plan(S::Metadata, A::On, "PAUSED", false, false)
                .unwrap_err()
                .0,
            MachineError::NotInPresentState
        );
        // Rescue strategy.
        assert_eq!(steps(S::Rescue, A::On, "SHUTOFF", true), Some(vec![Rescue]));
        assert_eq!(steps(S::Rescue, A::On, "SHUTOFF", false), Some(vec![Start]));
        assert_eq!(
            steps(S::Rescue, A::Reset, "ACTIVE", true),
            Some(vec![Rescue])
        );
        assert_eq!(
            steps(S::Rescue, A::Reset, "RESCUE", false),
            Some(vec![Unrescue])
        );
        assert_eq!(
            steps(S::Rescue, A::Reset, "RESCUE", true),
            Some(vec![Unrescue, Rescue])
        );
        assert_eq!(
            steps(S::Rescue, A::Off, "RESCUE", true),
            Some(vec![Unrescue, Stop])
        );
        // A boot from the inserted virtual media: a rescue with its image, whatever the
        // strategy.
        let cd = |s, a, st| plan(s, a, st, false, true).unwrap().map(|p| p.steps);
        assert_eq!(cd(S::Metadata, A::On, "SHUTOFF"), Some(vec![Rescue]));
        assert_eq!(cd(S::Rebuild, A::Reset, "SHUTOFF"), Some(vec![Rescue]));
        assert_eq!(
            cd(S::Rescue, A::Reset, "RESCUE"),
            Some(vec![Unrescue, Rescue])
        );
        assert_eq!(cd(S::Metadata, A::On, "RESCUE"), None);
        // Rebuild strategy.
        assert_eq!(
            steps(S::Rebuild, A::On, "SHUTOFF", true),
            Some(vec![Rebuild, Start])
        );
        assert_eq!(
            steps(S::Rebuild, A::Reset, "ACTIVE", true),
            Some(vec![Rebuild])
        );
        assert_eq!(
            steps(S::Rebuild, A::Reset, "SHUTOFF", true),
            Some(vec![Rebuild, Start])
        );
        assert_eq!(
            steps(S::Rebuild, A::Reset, "ACTIVE", false),
            Some(vec![RebootHard])
        );
    }

    #[test]
    fn flags_round_trip_and_fallback() {
        let f = BootFlags::new(BootDevice::Pxe, false, true);
        assert_eq!(unhex(&hex(f)), Some(f));
        assert_eq!(unhex("zz"), None);
        let mut s = server("ACTIVE", None, 1);
        s.metadata.insert(PXE_FIRST_KEY.into(), "1".into());
        assert_eq!(stored_flags(&s).effective_device(), BootDevice::Pxe);
        s.metadata.insert(BOOT_KEY.into(), hex(f));
        assert_eq!(stored_flags(&s), f);
        s.metadata.insert(BOOT_KEY.into(), "garbage".into());
        assert!(stored_flags(&s).persistent());
    }
}
