//! Backends: the machines a BMC controls.
//!
//! A [`Machine`] is what one virtual BMC drives: the embedded simulator ([`sim`]) or a Nova
//! instance. The UDP server calls these methods from spawned tasks, never from the receive
//! loop, so a slow cloud cannot stall other BMCs.

pub mod sim;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use ipmi_proto::machine::{BootFlags, MachineError, PowerAction, PowerState};

/// A boxed, sendable future (trait objects cannot have `async fn` yet).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

tokio::task_local! {
    /// How long the face running a machine call lets that call wait for a shared backend read
    /// already in flight (the Nova session's coalesced server list) before the call gives up
    /// and answers busy. The faces differ by three orders of magnitude: ipmitool resends
    /// after one second and gives up after a few, while Ironic's Redfish client waits 60 s
    /// for an answer (ironic `[redfish] read_timeout`) and does not retry a PATCH or POST
    /// that got 503 (sushy's `Connector._op` retries 5xx for GET only). So each face sets its
    /// own ([`with_patience`]), and a backend reads it ([`patience`]).
    static PATIENCE: Duration;
}

/// Run `f` with `wait` as its [`patience`]: what the backend reads while polling `f`, however
/// deep. Tasks `f` spawns do not inherit it (they are not the face's call).
pub async fn with_patience<F: Future>(wait: Duration, f: F) -> F::Output {
    PATIENCE.scope(wait, f).await
}

/// The patience of the face whose call is being polled, if it set one.
pub fn patience() -> Option<Duration> {
    PATIENCE.try_with(|w| *w).ok()
}

/// The patience a face with this answer `budget` gives a call: the budget less a margin, so
/// that a call that runs out of patience is answered by the backend, with its own log line
/// and kind, rather than cut off by the face's timer.
pub fn patience_within(budget: Duration) -> Duration {
    const MARGIN: Duration = Duration::from_millis(200);
    budget.saturating_sub(MARGIN).max(budget / 2)
}

/// A backend failure: the kind (mapped to an IPMI completion code) and a message for the log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// What the BMC answers.
    pub kind: MachineError,
    /// What the operator reads in the log. Never contains a secret.
    pub message: String,
}

impl BackendError {
    /// A new error of `kind`.
    pub fn new(kind: MachineError, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// One machine behind one virtual BMC.
pub trait Machine: Send + Sync + 'static {
    /// Current power state.
    fn power_state(&self) -> BoxFuture<'_, Result<PowerState, BackendError>>;
    /// Start a Chassis Control action. Returns once the action was *accepted* (IPMI v2.0 §28.3:
    /// the response does not wait for completion). Applies and consumes one-time boot flags
    /// on a power-up or reset.
    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Current boot flags (System Boot Options parameter 5).
    fn boot_flags(&self) -> BoxFuture<'_, Result<BootFlags, BackendError>>;
    /// Store boot flags.
    fn set_boot_flags(&self, flags: BootFlags) -> BoxFuture<'_, Result<(), BackendError>>;
    /// The 16-byte system GUID in RFC 4122 byte order (the instance UUID for Nova).
    fn uuid(&self) -> [u8; 16];
    /// A short human name for logs (instance name or "sim").
    fn name(&self) -> String;
    /// Where its serial console comes from, for SOL (`None`: it has none).
    fn console(&self) -> Option<crate::console::Source> {
        None
    }
    /// What it is made of, where the backend knows (Nova: the flavor and the ports of the
    /// instance); `None` where it does not (the simulator). For the Redfish face's
    /// ProcessorSummary, MemorySummary and EthernetInterfaces, and for the enrollment file.
    fn inventory(&self) -> BoxFuture<'_, Option<Inventory>> {
        Box::pin(async { None })
    }
    /// Its virtual CD slot (the Redfish face's `VirtualMedia/Cd`); `None`: it has none.
    fn media_state(&self) -> Option<MediaState> {
        None
    }
    /// Insert the image at `url` into the CD slot. Returns when the media is ready (Nova: the
    /// image fetched and uploaded to Glance, which can take minutes: the Redfish face runs it as
    /// a task). A booting from `Cd` then boots it (the boot flags are the IPMI ones: `ipmitool
    /// chassis bootdev cdrom` is Redfish `Cd`).
    fn insert_media(
        &self,
        url: String,
        options: InsertOptions,
    ) -> BoxFuture<'_, Result<(), BackendError>> {
        let _ = (url, options);
        Box::pin(async {
            Err(BackendError::new(
                MachineError::Unsupported,
                "this machine has no virtual media",
            ))
        })
    }
    /// Eject the CD (a no-op when empty, as Ironic ejects before every insert).
    fn eject_media(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }
    /// The BMC leaves the fleet (a reload removed or replaced it): release what the machine
    /// made in the cloud for it (Nova: the Glance image of its virtual media).
    fn retire(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// What the virtual CD slot holds (Redfish VirtualMedia `Image`, `Inserted`, `WriteProtected`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaState {
    /// The URL of the image given to the last insert (`None`: empty).
    pub image: Option<String>,
    /// The media is inserted: ready to boot (Nova: uploaded to Glance).
    pub inserted: bool,
    /// Read-only media (a CD always is).
    pub write_protected: bool,
    /// An insert is under way (fetching or uploading).
    pub inserting: bool,
}

impl MediaState {
    /// The slot once `url` is in, as `options` asked (no insert under way).
    pub fn holding(url: String, options: &InsertOptions) -> Self {
        Self {
            image: Some(url),
            inserted: options.inserted,
            write_protected: options.write_protected,
            inserting: false,
        }
    }
}

/// How to insert media (the `InsertMedia` parameters the backend needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsertOptions {
    /// Treat the media as inserted once ready (`Inserted`, default true).
    pub inserted: bool,
    /// `WriteProtected` (default true).
    pub write_protected: bool,
}

impl Default for InsertOptions {
    fn default() -> Self {
        Self {
            inserted: true,
            write_protected: true,
        }
    }
}

/// A machine's hardware as far as its backend knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Virtual CPUs.
    pub cpus: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    /// Root disk in GiB.
    pub disk_gib: Option<u64>,
    /// The flavor's name.
    pub flavor: Option<String>,
    /// MAC addresses of its network ports, lower case, in the order Nova lists them.
    pub macs: Vec<String>,
    /// Each (MAC, network name) pair, where the backend knows the networks.
    pub mac_networks: Vec<(String, String)>,
}

/// A shared machine.
pub type SharedMachine = Arc<dyn Machine>;
