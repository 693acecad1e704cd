//! Command line: `ovbmc --bind ADDR [--port 623] --instance NAME`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::cloud::NovaArgs;

/// A virtual BMC: IPMI 2.0 / RMCP+ over UDP for OpenStack Nova instances (or a simulator).
#[derive(Debug, Parser)]
#[command(name = "ovbmc", version, about, long_about = None)]
pub struct Cli {
    /// IP address to answer IPMI on (the BMC address, e.g. 192.0.2.45).
    #[arg(long)]
    pub bind: IpAddr,

    /// UDP port.
    #[arg(long, default_value_t = 623)]
    pub port: u16,

    /// The machine: a Nova instance name or UUID (or any name with --backend sim).
    #[arg(long)]
    pub instance: String,

    /// What the BMC controls.
    #[arg(long, value_enum, default_value_t = BackendKind::Nova)]
    pub backend: BackendKind,

    /// IPMI user name.
    #[arg(long, env = "OVBMC_USER", default_value = "admin")]
    pub user: String,

    /// File holding the IPMI password (one trailing newline is ignored). Without it the
    /// password comes from the OVBMC_PASSWORD environment variable. There is no default.
    #[arg(long)]
    pub password_file: Option<PathBuf>,

    /// Highest privilege the user may take: USER, OPERATOR or ADMINISTRATOR.
    #[arg(long, default_value = "ADMINISTRATOR", value_parser = parse_privilege)]
    pub user_privilege: ipmi_proto::session::Privilege,

    /// File holding the BMC key Kg (ipmitool -k/-y); by default SIK is keyed by the password.
    #[arg(long)]
    pub kg_file: Option<PathBuf>,

    /// How long a request waits for the backend before the client is answered "node busy"
    /// (the call continues in the background).
    #[arg(long, default_value_t = 700)]
    pub backend_timeout_ms: u64,

    /// Simulator: milliseconds a power-on takes.
    #[arg(long, default_value_t = 1000)]
    pub sim_power_on_ms: u64,

    /// Simulator: milliseconds a power-off takes.
    #[arg(long, default_value_t = 500)]
    pub sim_power_off_ms: u64,

    /// Simulator: power state at start.
    #[arg(long, value_enum, default_value_t = OnOff::Off)]
    pub sim_initial_power: OnOff,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub nova: NovaArgs,
}

/// Backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// An OpenStack Nova instance.
    Nova,
    /// The embedded simulator (no cloud needed).
    Sim,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Powered on.
    On,
    /// Powered off.
    Off,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for journald/containers).
    Json,
}

fn parse_privilege(s: &str) -> Result<ipmi_proto::session::Privilege, String> {
    ipmi_proto::session::Privilege::parse(s)
        .filter(|p| *p >= ipmi_proto::session::Privilege::User)
        .ok_or_else(|| format!("{s:?} is not USER, OPERATOR or ADMINISTRATOR"))
}
