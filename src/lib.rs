//! ovbmc: a virtual BMC speaking IPMI 2.0 / RMCP+ for OpenStack Nova instances.
//!
//! The protocol lives in the sans-I/O `ipmi-proto` crate; this crate is the runtime around
//! it: command line and settings, the daemon (fleet, reload, shutdown), sockets, backends
//! (the simulator and Nova), routing and the HTTP face. `main.rs` only parses and runs
//! [`daemon::run`] or one of [`commands`].
#![forbid(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod cloud;
pub mod commands;
pub mod compat;
pub mod config;
pub mod console;
pub mod daemon;
pub mod enroll;
pub mod http;
pub mod metrics;
pub mod net;
pub mod redfish;
pub mod secrets;
pub mod server;
pub mod settings;
pub mod suggest;
pub mod tasks;
