//! What a BMC asks of the machine behind it, and what it gets back.
//!
//! The endpoint never talks to a machine itself (it is sans-I/O): a chassis command that needs
//! the machine becomes a [`MachineRequest`] handed to the runtime, and the runtime answers with
//! [`Endpoint::complete`](crate::endpoint::Endpoint::complete) and a [`MachineResult`].

use core::fmt;

/// Power state as reported in Get Chassis Status byte 1 bit 0 (IPMI v2.0 §28.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PowerState {
    /// Chassis power is off.
    Off,
    /// Chassis power is on.
    On,
}

/// A Chassis Control action (IPMI v2.0 §28.3, request byte 1 bits 3:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PowerAction {
    /// 0: power down (hard off).
    Off,
    /// 1: power up.
    On,
    /// 2: power cycle (off, then on).
    Cycle,
    /// 3: hard reset.
    Reset,
    /// 4: pulse a diagnostic interrupt (NMI).
    Diag,
    /// 5: soft shutdown via ACPI (guest shutdown).
    Soft,
}

impl PowerAction {
    /// Decode Chassis Control byte 1 bits 3:0; `None` for reserved values.
    pub fn from_control(b: u8) -> Option<Self> {
        Some(match b & 0x0f {
            0 => Self::Off,
            1 => Self::On,
            2 => Self::Cycle,
            3 => Self::Reset,
            4 => Self::Diag,
            5 => Self::Soft,
            _ => return None,
        })
    }

    /// The Chassis Control code of this action.
    pub fn control_code(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::On => 1,
            Self::Cycle => 2,
            Self::Reset => 3,
            Self::Diag => 4,
            Self::Soft => 5,
        }
    }

    /// Name as ipmitool's `power` sub-command spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
            Self::Cycle => "cycle",
            Self::Reset => "reset",
            Self::Diag => "diag",
            Self::Soft => "soft",
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Boot device selector, boot flags data 2 bits 5:2 (IPMI v2.0 §28.13, boot option parameter 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BootDevice {
    /// 0000: no override.
    NoOverride,
    /// 0001: force PXE.
    Pxe,
    /// 0010: force boot from default hard drive.
    Disk,
    /// 0011: force boot from default hard drive, request safe mode.
    DiskSafe,
    /// 0100: force boot from diagnostic partition.
    Diag,
    /// 0101: force boot from CD/DVD.
    Cdrom,
    /// 0110: force boot into BIOS setup.
    BiosSetup,
    /// Any other selector (remote media, floppy, ...), kept as its 4-bit value.
    Other(u8),
}

impl BootDevice {
    /// From the 4-bit selector.
    pub fn from_selector(sel: u8) -> Self {
        match sel & 0x0f {
            0 => Self::NoOverride,
            1 => Self::Pxe,
            2 => Self::Disk,
            3 => Self::DiskSafe,
            4 => Self::Diag,
            5 => Self::Cdrom,
            6 => Self::BiosSetup,
            o => Self::Other(o),
        }
    }

    /// The 4-bit selector.
    pub fn selector(self) -> u8 {
        match self {
            Self::NoOverride => 0,
            Self::Pxe => 1,
            Self::Disk => 2,
            Self::DiskSafe => 3,
            Self::Diag => 4,
            Self::Cdrom => 5,
            Self::BiosSetup => 6,
            Self::Other(o) => o & 0x0f,
        }
    }

    /// A short lowercase name (as ipmitool's `chassis bootdev` takes it where one exists).
    pub fn name(self) -> &'static str {
        match self {
            Self::NoOverride => "none",
            Self::Pxe => "pxe",
            Self::Disk => "disk",
            Self::DiskSafe => "safe",
            Self::Diag => "diag",
            Self::Cdrom => "cdrom",
            Self::BiosSetup => "bios",
            Self::Other(_) => "other",
        }
    }
}

/// Boot flags, System Boot Options parameter 5: the five data bytes exactly as written, so
/// every bit a client set (persistent, EFI, CMOS clear, verbosity, ...) is reported back
/// truthfully (IPMI v2.0 §28.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct BootFlags(pub [u8; 5]);

impl BootFlags {
    /// Flags for a device with the valid bit set.
    pub fn new(device: BootDevice, persistent: bool, efi: bool) -> Self {
        let mut d1 = 0x80;
        if persistent {
            d1 |= 0x40;
        }
        if efi {
            d1 |= 0x20;
        }
        Self([d1, device.selector() << 2, 0, 0, 0])
    }

    /// Data 1 bit 7: the flags are valid (an override is requested).
    pub fn valid(&self) -> bool {
        self.0[0] & 0x80 != 0
    }

    /// Data 1 bit 6: applies to all future boots (else to the next boot only).
    pub fn persistent(&self) -> bool {
        self.0[0] & 0x40 != 0
    }

    /// Data 1 bit 5: EFI boot (else legacy / PC compatible).
    pub fn efi(&self) -> bool {
        self.0[0] & 0x20 != 0
    }

    /// Data 2 bits 5:2: the device selector.
    pub fn device(&self) -> BootDevice {
        BootDevice::from_selector(self.0[1] >> 2)
    }

    /// The device that the next boot uses: the selector if the flags are valid, else none.
    pub fn effective_device(&self) -> BootDevice {
        if self.valid() {
            self.device()
        } else {
            BootDevice::NoOverride
        }
    }

    /// The flags after a boot has consumed them: a one-time override clears the valid bit
    /// (IPMI v2.0 §28.13 data 1 bit 6 = 0 "applies to next boot only").
    pub fn after_boot(self) -> Self {
        if self.valid() && !self.persistent() {
            let mut b = self.0;
            b[0] &= !0x80;
            Self(b)
        } else {
            self
        }
    }
}

impl fmt::Display for BootFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}{}",
            self.device().name(),
            if self.valid() { "" } else { " (not valid)" },
            if self.persistent() {
                " persistent"
            } else {
                " next-boot"
            },
            if self.efi() { " efi" } else { " legacy" }
        )
    }
}

/// A request the endpoint hands to the runtime, to be answered through `complete`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineRequest {
    /// Read the power state (Get Chassis Status).
    PowerState,
    /// Perform a Chassis Control action.
    Power(PowerAction),
    /// Read boot flags (Get System Boot Options parameter 5).
    GetBootFlags,
    /// Write boot flags (Set System Boot Options parameter 5).
    SetBootFlags(BootFlags),
}

/// A successful answer from the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineReply {
    /// The current power state.
    PowerState(PowerState),
    /// The action or write was accepted.
    Done,
    /// The current boot flags.
    BootFlags(BootFlags),
}

/// Why the machine could not answer; each maps to an IPMI completion code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MachineError {
    /// The machine is in a transition or the backend is slow: completion code C0 (node busy),
    /// which ipmitool and Ironic treat as retryable.
    Busy,
    /// The request makes no sense in the present state (e.g. power cycle while off):
    /// completion code D5.
    NotInPresentState,
    /// The backend cannot do this at all: completion code D6 (sub-function unavailable).
    Unsupported,
    /// The backend failed (cloud error, instance in ERROR): completion code FF (unspecified).
    Failed,
    /// The backend did not answer in time: completion code C3 (timeout while processing).
    Timeout,
}

/// The result the runtime passes back.
pub type MachineResult = Result<MachineReply, MachineError>;
