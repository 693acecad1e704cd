//! Integration tests: the real `ovbmc` binary against real IPMI clients.
//!
//! One test binary (fewer link steps on a 2-core machine); one module per client tier.
//! A tier whose client is missing prints `SKIP <tier>: <client> not installed` and passes,
//! unless `OVBMC_REQUIRE_CLIENTS=1` (set by `scripts/test-all`, so CI), which makes it fail.
//! `scripts/test-all` installs every client.

mod support;

mod attack;
mod cli;
mod cloudfault;
mod cloudnet;
mod container;
mod docs;
mod dropin;
mod enroll;
mod fleet;
mod flood;
mod freeipmi;
mod ipmitool;
mod ironic;
mod logging;
mod memory;
mod metrics;
mod nova;
mod openipmi;
mod pyghmi;
mod redfish;
mod redfish_media;
mod redfish_media_nova;
mod reflection;
mod rmcp;
mod routing;
mod secrets;
mod sol;
mod sol_nova;
mod watch;
