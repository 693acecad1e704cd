//! Sans-I/O IPMI 2.0 / RMCP+ for a virtual BMC.
//!
//! No sockets, no clock, no random source: time, addresses and entropy are passed in, so the
//! protocol is deterministic, fuzzable and testable without a network (the shape of
//! quinn-proto). The runtime (the `ovbmc` crate) owns the sockets and the machines.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod codes;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod endpoint;
pub mod fuzzing;
pub mod machine;
pub mod ratelimit;
pub mod rmcp;
pub mod seal;
pub mod session;
pub mod sol;
pub mod wire;

pub use config::{BmcConfig, Limits, User};
pub use endpoint::{Endpoint, Entropy, Event, LoggedName, Output, Ticket};

#[cfg(test)]
mod tests;
