//! ovbmc: a virtual BMC speaking IPMI 2.0 / RMCP+ for OpenStack Nova instances.
#![forbid(unsafe_code)]

pub mod backend;
pub mod cloud;
