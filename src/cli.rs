//! Command line: `ovbmc --bind ADDR [--port 623] --instance NAME` for one BMC, or
//! `ovbmc --config FLEET.toml` for many (see `docs/configuration.md`), and
//! `ovbmc routes --dry-run` to review the policy routing ovbmc would set up, and
//! `ovbmc routes apply|remove --config FLEET.toml` to install or remove it in one shot.
//! Invoked as `openstackbmc` (or with one of its flags), OVB's openstackbmc command line
//! ([`crate::compat`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipmi_proto::config::Limits;

use crate::cloud::NovaArgs;

/// A virtual BMC: IPMI 2.0 / RMCP+ over UDP for OpenStack Nova instances (or a simulator).
#[derive(Debug, Parser)]
#[command(name = "ovbmc", version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("OVBMC_GIT_REV"), ")"), about, long_about = None)]
// `ovbmc routes ...` has its own options; the serving flags' requirements do not apply to it.
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// A fleet file (TOML) listing many BMCs; see docs/configuration.md. Replaces --bind,
    /// --instance and the other per-BMC flags. Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// IP address to answer IPMI on (the BMC address, e.g. 192.0.2.45).
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    pub bind: Option<IpAddr>,

    /// UDP port.
    #[arg(long, default_value_t = 623, conflicts_with = "config")]
    pub port: u16,

    /// The machine: a Nova instance name or UUID (or any name with --backend sim).
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    pub instance: Option<String>,

    /// What the BMC controls.
    #[arg(long, value_enum, default_value_t = BackendKind::Nova, conflicts_with = "config")]
    pub backend: BackendKind,

    /// IPMI user name (else the OVBMC_USER environment variable, else `admin`). Single-BMC
    /// only: a fleet file sets `user` per BMC or in [defaults], so --config refuses it rather
    /// than ignore it.
    #[arg(long, conflicts_with = "config")]
    pub user: Option<String>,

    /// File holding the IPMI password (one trailing newline is ignored). Without it the
    /// password comes from the OVBMC_PASSWORD environment variable. There is no default.
    #[arg(long, conflicts_with = "config")]
    pub password_file: Option<PathBuf>,

    /// Highest privilege the user may take: USER, OPERATOR or ADMINISTRATOR [default:
    /// ADMINISTRATOR]. Single-BMC only: with --config use the `privilege` key (a security
    /// setting is refused, never silently ignored).
    #[arg(long, value_parser = parse_privilege, conflicts_with = "config")]
    pub user_privilege: Option<ipmi_proto::session::Privilege>,

    /// File holding the BMC key Kg (ipmitool -k/-y); by default SIK is keyed by the password.
    #[arg(long, conflicts_with = "config")]
    pub kg_file: Option<PathBuf>,

    /// How long a request waits for the backend before the client is answered "node busy"
    /// (the call continues in the background). Overrides `[defaults] backend_timeout_ms`.
    /// [default: 700]
    #[arg(long, value_name = "MS")]
    pub backend_timeout_ms: Option<u64>,

    /// At SIGTERM, how long to wait for background work still running (a power action
    /// answered "busy", the remaining steps of a Nova plan such as rescue then reboot) before
    /// exiting; each one not finished by then is logged with what it had left to do.
    /// Overrides `[defaults] shutdown_timeout_secs`. [default: 30]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_timeout: Option<u64>,

    /// Simulator (tests): milliseconds every call to the simulated machine takes, as a slow
    /// cloud API would.
    #[arg(long, default_value_t = 0, conflicts_with = "config", hide = true)]
    pub sim_api_latency_ms: u64,

    /// Simulator: milliseconds a power-on takes.
    #[arg(long, default_value_t = 1000, conflicts_with = "config")]
    pub sim_power_on_ms: u64,

    /// Simulator: milliseconds a power-off takes.
    #[arg(long, default_value_t = 500, conflicts_with = "config")]
    pub sim_power_off_ms: u64,

    /// Simulator: power state at start.
    #[arg(long, value_enum, default_value_t = OnOff::Off, conflicts_with = "config")]
    pub sim_initial_power: OnOff,

    /// Per-address policy routing: `auto` adds `ip rule from ADDR table N` and a default
    /// route via the address's own interface in table N, so that each reply leaves through
    /// the NIC that owns its source address (needs CAP_NET_ADMIN); `ip` does the same with
    /// iproute2's `ip` instead of netlink; `off` leaves routing to the host. Overrides
    /// `[routing] mode`. [default: off]
    #[arg(long, value_enum)]
    pub routing: Option<RoutingMode>,

    #[command(flatten)]
    pub route_opts: RoutingArgs,

    /// Serve Prometheus metrics at http://ADDR/metrics and a health check at /healthz
    /// (e.g. 127.0.0.1:9623; see docs/configuration.md). Overrides `[defaults] metrics`.
    /// [default: off]
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,

    #[command(flatten)]
    pub redfish: RedfishArgs,

    /// Online-guessing defence: this many failed logins from one source address within
    /// --lockout-secs lock that source out for --lockout-secs (0: never). Applies to every BMC.
    #[arg(long, value_name = "N", default_value_t = Limits::default().source_lockout_threshold)]
    pub lockout_source_failures: u32,

    /// This many failed logins for one user name, from any source, within --lockout-secs lock
    /// the user out for --lockout-secs (0: never), except for sources trusted by
    /// --lockout-trust-secs.
    #[arg(long, value_name = "N", default_value_t = Limits::default().user_lockout_threshold)]
    pub lockout_user_failures: u32,

    /// A source (IPv4 address or IPv6 /64) that logged in successfully as the user within this
    /// many seconds is not locked out by that user's lock-out (failures from other sources);
    /// its own failures still lock it (0: no exemption; at most 30 days).
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().lockout_trust.as_secs(),
          value_parser = clap::value_parser!(u64).range(0..=30 * 86_400))]
    pub lockout_trust_secs: u64,

    /// The window failed logins are counted in, and how long a lock-out lasts.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().lockout_duration.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub lockout_secs: u64,

    /// Where Serial over LAN (`ipmitool sol activate`) reads and writes: `serial` is Nova's
    /// serial console (nova-serialproxy), `log` its console log (read-only), `auto` the
    /// serial console where Nova offers it and else the log, `off` no SOL (Activate Payload
    /// answers "disabled"). The simulator has its own console whatever this says, except
    /// `off`. A BMC's own `console` key beats it; it beats `[defaults] console`; see
    /// docs/console.md. [default: auto]
    #[arg(long, value_enum)]
    pub console: Option<ConsoleMode>,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub nova: NovaArgs,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// The ids of the options written on the command line (not defaults, not environment
    /// variables): what beats the fleet file in [`crate::settings::Settings::resolve`].
    /// Filled by [`Cli::from_command_line`] and [`Cli::try_from_args`]; clap's own
    /// `Cli::parse` leaves it empty (the fleet file would then beat every flag).
    #[arg(skip)]
    pub given: std::collections::BTreeSet<String>,

    /// Set when the command line was OVB's openstackbmc's ([`crate::compat`]): where its
    /// password comes from.
    #[arg(skip)]
    pub openstackbmc: Option<crate::compat::Dropin>,
}

/// Subcommands (serving needs none).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Policy routing for these BMCs: `--dry-run` prints the `ip` commands it amounts to
    /// (read-only); `apply` / `remove` install or remove it in one shot.
    Routes(RoutesArgs),
    /// Check a fleet file without serving it: print each BMC's effective settings (never a
    /// secret) and what is wrong (unreadable password or Kg files, ...); the exit status is
    /// non-zero when something is.
    Check(CheckArgs),
    /// Write the enrollment file for these BMCs' nodes, for `baremetal create` (default) or
    /// TripleO's `overcloud node import` (`--format tripleo`): driver, BMC address and user,
    /// MACs and sizes from the instance. Read-only: it never changes the cloud. The password
    /// is left out unless --password-inline (stderr says which fields to fill in).
    NodesJson(NodesJsonArgs),
    /// The host cloud's side of the fleet, through Neutron: the BMC VM's IPMI addresses
    /// (address pairs or ports), the security-group rules, the nodes' iPXE DHCP options and
    /// the metadata route to the undercloud, as `[cloud.network]` describes them. `plan`
    /// prints the changes; `apply` makes them (a second run has nothing to do); `destroy`
    /// removes what ovbmc made and nothing else. `watch-addresses` keeps one port's address
    /// pairs in step with the host it runs on.
    Cloud(CloudArgs),
}

/// `ovbmc nodes-json`.
#[derive(Debug, Args)]
pub struct NodesJsonArgs {
    /// The fleet file whose BMCs to enroll.
    #[arg(long, value_name = "FILE", required = true)]
    pub config: PathBuf,

    /// Write the file here (replaced whole; mode 0600 with --password-inline) instead of
    /// standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Put each BMC's password in the file (`ipmi_password`, `redfish_password` or
    /// `pm_password`). Without it the password is left out.
    #[arg(long)]
    pub password_inline: bool,

    /// Only the ports on this Nova network (its name, as `openstack server show` lists it
    /// under `addresses`; repeatable): the provisioning network, so Ironic does not try to
    /// PXE-boot from the others. [default: `[cloud.network] network` when the fleet file
    /// names it, else every port]
    #[arg(long, value_name = "NAME")]
    pub network: Vec<String>,

    /// The file's shape.
    #[arg(long, value_enum, default_value_t = NodesFormat::Ironic)]
    pub format: NodesFormat,
}

/// `ovbmc nodes-json --format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum NodesFormat {
    /// Ironic's own fields, for `openstack baremetal create FILE`.
    #[default]
    Ironic,
    /// TripleO's instackenv `pm_*` fields, as OVB's build-nodes-json wrote them, for
    /// `openstack overcloud node import FILE`.
    Tripleo,
}

/// `ovbmc check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The fleet file to check.
    #[arg(long, value_name = "FILE", required = true)]
    pub config: PathBuf,
}

/// `ovbmc routes`: `--dry-run` prints; `apply` / `remove` change the host.
#[derive(Debug, Args)]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
pub struct RoutesArgs {
    /// Install or remove the routing (one-shot, for systemd ExecStartPre/ExecStopPost).
    #[command(subcommand)]
    pub action: Option<RoutesAction>,

    /// Only print (required without `apply` or `remove`, so that nothing changes the host
    /// by accident).
    #[arg(long, required = true)]
    pub dry_run: bool,

    /// The fleet file whose addresses to route.
    #[arg(long, value_name = "FILE", required_unless_present = "bind")]
    pub config: Option<PathBuf>,

    /// An address to route (repeatable), instead of --config.
    #[arg(long, conflicts_with = "config")]
    pub bind: Vec<IpAddr>,

    #[command(flatten)]
    pub routing: RoutingArgs,
}

/// `ovbmc routes apply|remove`.
#[derive(Debug, Subcommand)]
pub enum RoutesAction {
    /// Install the rules and routes `--routing auto` would (idempotent: what is present is
    /// left alone), then exit. Needs CAP_NET_ADMIN; the daemon then runs with `--routing off`.
    Apply(RoutesTarget),
    /// Remove the rules and routes the plan for these BMCs names, then exit. Anything else
    /// is left alone, addresses included (even ones `apply --add-address` added).
    Remove(RoutesTarget),
}

/// What `ovbmc routes apply|remove` acts on.
#[derive(Debug, Args)]
pub struct RoutesTarget {
    /// The fleet file whose addresses to route.
    #[arg(long, value_name = "FILE", required_unless_present = "bind")]
    pub config: Option<PathBuf>,

    /// An address to route (repeatable), instead of --config.
    #[arg(long, conflicts_with = "config")]
    pub bind: Vec<IpAddr>,

    /// How to change the host: `ip` runs iproute2's `ip`; otherwise netlink (whatever the
    /// file's `[routing] mode`, which is the daemon's). Overrides `[routing] mode` = "ip".
    #[arg(long, value_enum)]
    pub routing: Option<RoutingMode>,

    #[command(flatten)]
    pub opts: RoutingArgs,
}

/// Policy-routing options (command line; each overrides the fleet file's `[routing]` key).
#[derive(Debug, Clone, Default, Args)]
pub struct RoutingArgs {
    /// Routing table numbers are this plus the interface index (unless a BMC sets `table`).
    /// [default: 1000]
    #[arg(long, value_name = "N")]
    pub route_table_base: Option<u32>,

    /// Priority (preference) of the `ip rule`s, 1 to 32765: after the local table and before
    /// the main table's 32766. [default: 1000]
    #[arg(long, value_name = "PRIO",
          value_parser = clap::value_parser!(u32).range(1..=32765))]
    pub route_priority: Option<u32>,

    /// Add BMC addresses that are not on the host (`ip addr add ADDR/PREFIX dev IF`, the
    /// interface from the BMC's `interface` key or the interface whose subnet holds it) and
    /// remove them at exit. Without it a missing address is an error.
    #[arg(long)]
    pub add_address: bool,
}

/// The Redfish face (docs/redfish.md); each flag overrides its `[redfish]` key.
#[derive(Debug, Clone, Default, Args)]
pub struct RedfishArgs {
    /// Serve Redfish (DSP0266) for the whole fleet at https://ADDR:PORT/redfish/v1 (e.g.
    /// 192.0.2.10:8443). Overrides `[redfish] address`. [default: off]
    #[arg(long, value_name = "ADDR:PORT")]
    pub redfish: Option<SocketAddr>,

    /// PEM certificate chain for the Redfish face (with --redfish-key); without both, a
    /// self-signed certificate is made on first start and kept in --redfish-state-dir.
    #[arg(long, value_name = "FILE", requires = "redfish_key")]
    pub redfish_cert: Option<PathBuf>,

    /// PEM private key of --redfish-cert.
    #[arg(long, value_name = "FILE", requires = "redfish_cert")]
    pub redfish_key: Option<PathBuf>,

    /// Where the self-signed certificate is kept. [default: $STATE_DIRECTORY (systemd),
    /// else /var/lib/ovbmc]
    #[arg(long, value_name = "DIR")]
    pub redfish_state_dir: Option<PathBuf>,

    /// Serve Redfish over plain HTTP (passwords and tokens in clear text: a lab on loopback
    /// only). Overrides `[redfish] insecure_http`.
    #[arg(long, overrides_with = "no_redfish_insecure_http")]
    pub redfish_insecure_http: bool,

    /// Serve Redfish over HTTPS even where the fleet file says `[redfish] insecure_http =
    /// true`. Of this and --redfish-insecure-http the last given wins.
    #[arg(long, overrides_with = "redfish_insecure_http")]
    pub no_redfish_insecure_http: bool,

    /// A SessionService session unused for this long is closed. [default: 1800]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(30..=86_400))]
    pub redfish_session_timeout: Option<u64>,

    /// How long a Redfish request waits for the backend, all its calls together (e.g. a slow
    /// Nova server list), before it is answered 503 with Retry-After (the call goes on).
    /// Longer than IPMI's --backend-timeout-ms because HTTP clients wait and do not retry a PATCH or an action.
    /// Overrides `[redfish] backend_timeout_ms`. [default: 20000]
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub redfish_backend_timeout_ms: Option<u64>,
}

impl RedfishArgs {
    /// Plain HTTP as the command line says: `Some(true)` for --redfish-insecure-http,
    /// `Some(false)` for --no-redfish-insecure-http, `None` when neither is given (the fleet
    /// file decides).
    pub fn insecure_http(&self) -> Option<bool> {
        match (self.redfish_insecure_http, self.no_redfish_insecure_http) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}

/// `--routing`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum RoutingMode {
    /// Leave routing to the host.
    #[default]
    Off,
    /// Per-address rules and tables (for a BMC host with one NIC per BMC address), set
    /// through netlink.
    Auto,
    /// As `auto`, but by running iproute2's `ip` (a fallback; needs iproute2 ≥ 4.14).
    Ip,
}

/// Backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// An OpenStack Nova instance.
    Nova,
    /// The embedded simulator (no cloud needed).
    Sim,
}

/// `--console` and the `console` key: what SOL carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ConsoleMode {
    /// Nova's serial console where it is offered, else its console log.
    #[default]
    Auto,
    /// Nova's serial console (nova-serialproxy).
    Serial,
    /// Nova's console log, read-only.
    Log,
    /// No SOL.
    Off,
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

impl Cli {
    /// Parse the process's arguments (exiting with clap's message and status on a bad one, as
    /// `Parser::parse` does), remembering which options were written on the command line.
    /// An openstackbmc command line (the program called `openstackbmc`, or one of its own
    /// flags) is read as such: see [`crate::compat`].
    pub fn from_command_line() -> Self {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let parsed = if crate::compat::applies(&args) {
            crate::compat::parse(args)
        } else {
            Self::try_from_args(args)
        };
        parsed.unwrap_or_else(|e| e.exit())
    }

    /// Parse `args` (the first is the program name), remembering which options were written.
    pub fn try_from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let mut cmd = Self::command();
        let mut m = cmd.try_get_matches_from_mut(args)?;
        let given = m
            .ids()
            .filter(|id| {
                m.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
            })
            .map(|id| id.as_str().to_string())
            .collect();
        let mut cli = Self::from_arg_matches_mut(&mut m).map_err(|e| e.format(&mut cmd))?;
        cli.given = given;
        Ok(cli)
    }

    /// Whether the option `id` (its field name, e.g. `os_cloud`) was written on the command
    /// line.
    pub fn given(&self, id: &str) -> bool {
        self.given.contains(id)
    }

    /// The protocol limits the command line sets (the rest keep their defaults).
    pub fn limits(&self) -> Limits {
        let secs = std::time::Duration::from_secs(self.lockout_secs);
        Limits {
            source_lockout_threshold: self.lockout_source_failures,
            user_lockout_threshold: self.lockout_user_failures,
            lockout_window: secs,
            lockout_duration: secs,
            lockout_trust: std::time::Duration::from_secs(self.lockout_trust_secs),
            ..Limits::default()
        }
    }
}

// ---- `ovbmc cloud ...` (issue 14), kept together. ----

/// `ovbmc cloud`.
#[derive(Debug, Args)]
pub struct CloudArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: CloudAction,
}

/// `ovbmc cloud plan | apply | destroy`.
#[derive(Debug, Subcommand)]
pub enum CloudAction {
    /// Print what `apply` would change, one line each (create / update / delete / keep).
    /// Read-only. Fails (with why) when the provisioning network's MTU is below 1500.
    Plan(CloudTarget),
    /// Make the changes `plan` lists, tagging everything it makes or edits `ovbmc:FLEET`.
    Apply(CloudTarget),
    /// Undo what `apply` made (found by its tags); what others set is left.
    Destroy(CloudTarget),
    /// Keep a Neutron port's allowed_address_pairs in step with this host's addresses (a node
    /// that may hold VIPs: HA controllers, the undercloud): adds a pair for each address that
    /// appears, removes the pairs it added when their address goes, never touches the others.
    /// Runs until SIGTERM; see docs/deploy.md.
    WatchAddresses(WatchAddressesArgs),
}

/// The fleet `ovbmc cloud` works on.
#[derive(Debug, Args)]
pub struct CloudTarget {
    /// The fleet file, with a `[cloud.network]` section.
    #[arg(long, value_name = "FILE", required = true)]
    pub config: PathBuf,

    /// Carry on when the provisioning network's MTU is below 1500 (TripleO needs 1500).
    #[arg(long)]
    pub allow_small_mtu: bool,
}

/// `ovbmc cloud watch-addresses`.
#[derive(Debug, Args)]
pub struct WatchAddressesArgs {
    /// The Neutron port (its id) whose allowed_address_pairs follow this host.
    #[arg(long, value_name = "PORT_ID")]
    pub port: String,

    /// Follow only this interface's addresses. [default: every interface but lo]
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,

    /// Where the pairs this command added are remembered (across restarts). [default:
    /// $STATE_DIRECTORY (systemd), else /var/lib/ovbmc, + /watch-addresses-PORT_ID.json]
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// Quiet time after an address change before the port is updated.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub settle_ms: u64,

    /// Least time between two updates of the port.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub min_interval_ms: u64,

    /// Re-read the host and the port this often even without a change (a pair removed by
    /// hand comes back).
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub resync_secs: u64,

    /// The cloud (`--os-cloud`, `--os-client-config-file`, `--os-region-name`), as for the
    /// Nova backend.
    #[command(flatten)]
    pub cloud: crate::cloud::CloudArgs,

    /// Timeout of each Keystone/Neutron request, in seconds.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 30)]
    pub timeout_secs: u64,
}
