//! ovbmc: a virtual BMC speaking IPMI 2.0 / RMCP+ for OpenStack Nova instances.
//!
//! The protocol lives in the sans-I/O `ipmi-proto` crate; this crate is the runtime around
//! it: command line, sockets, backends (the simulator and Nova) and shutdown.
#![forbid(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod console;
pub mod http;
pub mod metrics;
pub mod net;
pub mod secrets;
pub mod server;
pub mod suggest;
pub mod tasks;
