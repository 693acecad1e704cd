//! Backends: the machines a BMC controls.
//!
//! A [`Machine`] is what one virtual BMC drives: the embedded simulator ([`sim`]) or a Nova
//! instance. The UDP server calls these methods from spawned tasks, never from the receive
//! loop, so a slow cloud cannot stall other BMCs.

pub mod sim;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use ipmi_proto::machine::{BootFlags, MachineError, PowerAction, PowerState};

/// A boxed, sendable future (trait objects cannot have `async fn` yet).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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
