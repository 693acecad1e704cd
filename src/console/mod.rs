//! Console backends: the machine's serial console, which SOL (IPMI v2.0 ch. 15) carries to the
//! operator. A backend hands the BMC a [`ConsoleLink`]: bounded channels each way, so a slow
//! operator holds the guest's output back (backpressure) instead of losing it, and a slow
//! guest holds the operator's input back.
//!
//! Backends: [`sim`] (the simulator's console, for tests and trying ovbmc without a cloud);
//! Nova's serial console through nova-serialproxy and Nova's console log follow (issue 12).

pub mod log;
pub mod nova_log;
pub mod nova_serial;
pub mod sim;

use bytes::Bytes;
use tokio::sync::mpsc;

/// What the operator sends to the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Characters for the guest's serial input.
    Data(Bytes),
    /// A serial break (SOL Operation b4; ipmitool's `~B`).
    Break,
}

/// An open console: the guest's output and a way to send it input. Dropping the link closes
/// the console (the backend's task ends).
#[derive(Debug)]
pub struct ConsoleLink {
    /// The guest's output, in order.
    pub from_guest: mpsc::Receiver<Bytes>,
    /// Input for the guest.
    pub to_guest: mpsc::Sender<Input>,
    /// Whether input reaches the guest (false for a read-only console log).
    pub writable: bool,
}

/// Channel depth each way: with chunks of up to 4 KiB this bounds what one console buffers.
pub const LINK_DEPTH: usize = 16;
