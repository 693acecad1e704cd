//! The fleet file (`ovbmc --config FILE`): many BMCs in one process.
//!
//! TOML (the `toml` crate), read in two steps so that every error names where it is: the
//! file is parsed into a generic table first (syntax errors carry a line and column), then
//! each `[[bmc]]` entry is decoded on its own, so a bad key is reported as
//! "bmc #3 (192.0.2.47): field `port`: ...". Keys naming one of a few values (`backend`,
//! `[routing] mode`, ...) are typed as they are decoded; validation then checks what serde
//! cannot (one password source, unique addresses). Nothing here touches the network or
//! starts anything: the caller binds and resolves only after the whole file is good, so a
//! bad file never starts a fleet half-way.
//!
//! The format is documented in `docs/configuration.md`; keep the two in step.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipmi_proto::session::Privilege;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::cli::{BackendKind, ConsoleMode, OnOff, RoutingMode};
use crate::cloud::BootStrategy;

/// Why a fleet file was refused. Every message names the file, and for an entry its index
/// (counting from 1, as people count `[[bmc]]` blocks) and address.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A top-level section (`[defaults]`, `[cloud]`, `[routing]`) is wrong.
    #[error("{path}: [{section}]: {message}")]
    Section {
        /// The file.
        path: PathBuf,
        /// The section.
        section: &'static str,
        /// What is wrong (serde names the field).
        message: String,
    },
    /// One `[[bmc]]` entry is wrong.
    #[error("{path}: bmc #{index} ({address}): {field}: {message}")]
    Entry {
        /// The file.
        path: PathBuf,
        /// 1-based position among the `[[bmc]]` entries.
        index: usize,
        /// The entry's address as written (or `?` when it has none).
        address: String,
        /// The key at fault (or `entry` when it is the entry as a whole).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Two entries claim the same address and port.
    #[error(
        "{path}: bmc #{index} ({addr}): address and port already used by bmc #{first}; \
         every BMC needs its own address (or port)"
    )]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The later entry.
        index: usize,
        /// The earlier entry.
        first: usize,
        /// The address and port.
        addr: SocketAddr,
    },
    /// The file lists no BMC.
    #[error("{path}: no [[bmc]] entries: nothing to serve")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Where a BMC's IPMI password comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// A file (one trailing newline ignored), as `--password-file`.
    File(PathBuf),
    /// An environment variable named in the file.
    Env(String),
    /// Written in the fleet file itself (`insecure_inline_password`); warned about.
    Inline(Zeroizing<String>),
    /// Already read (the single-BMC command line reads `--password-file` or
    /// `OVBMC_PASSWORD` once: the file may be a pipe such as `<(printf secret)`).
    Preloaded(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for PasswordSource {
    // Never print an inline password (Debug output ends up in logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "File({})", p.display()),
            Self::Env(v) => write!(f, "Env({v})"),
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::Preloaded(_) => f.write_str("Preloaded(<redacted>)"),
        }
    }
}

impl PasswordSource {
    /// Read the password now (files and variables are read at start and at each reload).
    pub fn load(&self) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        match self {
            Self::File(p) => crate::secrets::read_secret_file(p),
            Self::Env(var) => match std::env::var_os(var) {
                Some(v) if !v.is_empty() => Ok(Zeroizing::new(v.into_encoded_bytes())),
                _ => anyhow::bail!("the environment variable {var} is not set or empty"),
            },
            Self::Inline(s) => Ok(Zeroizing::new(s.as_bytes().to_vec())),
            Self::Preloaded(v) => Ok(v.clone()),
        }
    }
}

/// Simulator settings of one BMC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimSettings {
    /// Milliseconds a power-on takes.
    pub power_on_ms: u64,
    /// Milliseconds a power-off takes.
    pub power_off_ms: u64,
    /// Power state at start.
    pub initial_power: OnOff,
    /// Milliseconds every call takes (single-BMC `--sim-api-latency-ms`, for tests).
    pub api_latency_ms: u64,
}

impl Default for SimSettings {
    fn default() -> Self {
        // The same defaults as the single-BMC flags (`src/cli.rs`).
        Self {
            power_on_ms: 1000,
            power_off_ms: 500,
            initial_power: OnOff::Off,
            api_latency_ms: 0,
        }
    }
}

/// Per-BMC routing hints (all optional: by default they come from the host's main table).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteHints {
    /// The gateway replies from this address go through.
    pub gateway: Option<IpAddr>,
    /// The interface that carries this address.
    pub interface: Option<String>,
    /// The routing table number (default: the table base plus the interface index).
    pub table: Option<u32>,
    /// Prefix length when `--add-address` has to add the address (default 24 / 64).
    pub prefix: Option<u8>,
}

/// One BMC, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BmcEntry {
    /// 1-based position in the file (0 for the single-BMC command line), for messages.
    pub index: usize,
    /// Address and port to answer on.
    pub addr: SocketAddr,
    /// The Nova instance (name or UUID), or the simulator's name.
    pub instance: String,
    /// What the BMC drives.
    pub backend: BackendKind,
    /// IPMI user name.
    pub user: String,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// Highest privilege the user may take.
    pub privilege: Privilege,
    /// Optional BMC key Kg file.
    pub kg_file: Option<PathBuf>,
    /// Nova: how a PXE boot is done (default: the `[cloud]` / `--boot-strategy` setting).
    pub boot_strategy: Option<BootStrategy>,
    /// What SOL carries, from this entry's own `console` key (beats `--console`).
    pub console: Option<ConsoleMode>,
    /// `[defaults] console` (`--console` beats it); resolved by
    /// `crate::settings::Settings::console_for`.
    pub console_default: Option<ConsoleMode>,
    /// Simulator settings.
    pub sim: SimSettings,
    /// Routing hints.
    pub route: RouteHints,
}

/// `[routing]`: every key optional, so that command-line flags can take precedence.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSection {
    /// `auto` (netlink), `ip` (iproute2 fallback) or `off`.
    #[serde(default, deserialize_with = "routing_mode")]
    pub mode: Option<RoutingMode>,
    /// Table numbers are `table_base + interface index` unless an entry sets `table`.
    pub table_base: Option<u32>,
    /// Priority of the `ip rule`s.
    pub priority: Option<u32>,
    /// Add addresses missing from the host (and remove them at exit).
    pub add_address: Option<bool>,
}

/// `[cloud]`: the `--os-*` / `--boot-strategy` / `--nova-*` settings; a flag written on the
/// command line beats its key here (`crate::settings::Settings::resolve`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSection {
    /// clouds.yaml cloud name.
    pub os_cloud: Option<String>,
    /// A clouds.yaml to try first.
    pub os_client_config_file: Option<PathBuf>,
    /// Region.
    pub os_region_name: Option<String>,
    /// Default boot strategy (`metadata`, `rescue`, `rebuild`).
    #[serde(default, deserialize_with = "boot_strategy")]
    pub boot_strategy: Option<BootStrategy>,
    /// iPXE image for rescue/rebuild.
    pub ipxe_image: Option<String>,
    /// Server-list cache lifetime.
    pub nova_cache_ttl_ms: Option<u64>,
    /// Per-request timeout.
    pub nova_timeout_secs: Option<u64>,
    /// How long an unconfirmed target state is reported.
    pub nova_confirm_timeout_secs: Option<u64>,
    /// `[cloud.network]`: what `ovbmc cloud plan | apply | destroy` makes in Neutron.
    pub network: Option<NetworkSection>,
    /// The largest virtual media image, MiB.
    pub vmedia_max_mib: Option<u64>,
    /// How a virtual media image reaches Glance (`upload`, `web-download`).
    #[serde(default, deserialize_with = "vmedia_import")]
    pub vmedia_import: Option<crate::cloud::VmediaImport>,
}

/// `[cloud.network]`: the host cloud's side of the fleet, made by `ovbmc cloud apply` and
/// removed by `ovbmc cloud destroy` (docs/configuration.md, docs/deploy.md). Names may be
/// Neutron/Nova names or ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// The fleet's name: every resource ovbmc makes or edits is tagged `ovbmc:NAME`.
    pub fleet: String,
    /// `"A"`: the IPMI addresses are address pairs on `bmc_port`; `"B"`: one port per address,
    /// attached to `bmc_server` (docs/deploy.md §1).
    #[serde(default)]
    pub layout: Option<String>,
    /// The provisioning network (where the undercloud, the BMC and the nodes' PXE NICs are).
    pub network: String,
    /// Its subnet (default: the network's only IPv4 subnet).
    pub subnet: Option<String>,
    /// Layout A: the BMC VM's port on the provisioning network.
    pub bmc_port: Option<String>,
    /// Layout B: the BMC VM (Nova server) the address ports are attached to.
    pub bmc_server: Option<String>,
    /// The security group the IPMI (and Redfish) rules go in (default: `bmc_port`'s first
    /// group in layout A; the project's `default` group in layout B).
    pub security_group: Option<String>,
    /// The undercloud's port on the provisioning network: the nodes' DHCP options point at
    /// it, and it gets the metadata address.
    pub undercloud_port: Option<String>,
    /// The undercloud's address (default: `undercloud_port`'s fixed IP on the subnet).
    pub undercloud_address: Option<IpAddr>,
    /// The iPXE file the nodes boot (`bootfile-name`): `boot.ipxe` (default) or
    /// `inspector.ipxe`.
    pub ipxe_file: Option<String>,
    /// Add the host route 169.254.169.254/32 via the undercloud and that address to the
    /// undercloud port's pairs (default true when `undercloud_port` is set).
    pub metadata_route: Option<bool>,
    /// Carry on when the network's MTU is below 1500 (also `--allow-small-mtu`).
    pub allow_small_mtu: Option<bool>,
    /// The cloud's `max_allowed_address_pair`, where it is not Neutron's default 10.
    pub max_address_pairs: Option<u32>,
    /// Layout B: a subnet of its own for each address's port, for clouds that refuse a
    /// second NIC of one server on one subnet (docs/deploy.md §1).
    pub subnet_per_port: Option<bool>,
    /// The prefix length of those subnets (default: one address, /32 or /128).
    pub port_subnet_prefix: Option<u8>,
}

impl NetworkSection {
    /// `true` for layout B.
    pub fn layout_b(&self) -> bool {
        self.layout
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case("b"))
    }

    /// What is wrong with the section, if anything.
    pub fn check(&self) -> Result<(), String> {
        // Tags are `ovbmc:FLEET[:what]`: no `:` or `,` in the name, so one fleet's records can
        // never be read as another's; short, so the records stay under Neutron's 255
        // characters per tag.
        let f = &self.fleet;
        if f.is_empty()
            || f.len() > 40
            || !f
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "fleet: {f:?} must be 1 to 40 letters, digits, '-', '_' or '.' (it becomes the \
                 Neutron tag ovbmc:NAME)"
            ));
        }
        match self.layout.as_deref() {
            None | Some("A" | "a") => {
                if self.bmc_port.is_none() {
                    return Err("layout A needs bmc_port (the BMC VM's port on the \
                                provisioning network)"
                        .into());
                }
            }
            Some("B" | "b") => {
                if self.bmc_server.is_none() {
                    return Err("layout B needs bmc_server (the BMC VM the address ports \
                                are attached to)"
                        .into());
                }
            }
            Some(other) => return Err(format!("layout: {other:?} is not \"A\" or \"B\"")),
        }
        if self.subnet_per_port == Some(true) && !self.layout_b() {
            return Err("subnet_per_port is for layout B (a port per address)".into());
        }
        if let Some(p) = self.port_subnet_prefix {
            if self.subnet_per_port != Some(true) {
                return Err("port_subnet_prefix needs subnet_per_port = true".into());
            }
            if !(8..=128).contains(&p) {
                return Err(format!("port_subnet_prefix: {p} is not 8 to 128"));
            }
        }
        if self.network.is_empty() {
            return Err("network: the provisioning network's name or id is needed".into());
        }
        if let Some(f) = &self.ipxe_file
            && (f.is_empty() || f.len() > 255)
        {
            // extra_dhcp_opts opt_value is at most 255 characters (neutron-lib
            // api/definitions/extra_dhcp_opt.py).
            return Err(format!("ipxe_file: {f:?} must be 1 to 255 characters"));
        }
        Ok(())
    }
}

/// `[redfish]`: the Redfish face (docs/redfish.md); a flag written on the command line beats
/// its key here (`crate::settings::Settings::resolve`). Relative paths are taken relative to
/// the fleet file's directory, as `password_file` is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedfishSection {
    /// Where to serve (`--redfish`); absent: no Redfish face.
    pub address: Option<SocketAddr>,
    /// PEM certificate chain (`--redfish-cert`), with `key`.
    pub cert: Option<PathBuf>,
    /// PEM private key (`--redfish-key`).
    pub key: Option<PathBuf>,
    /// Where the self-signed certificate is kept (`--redfish-state-dir`).
    pub state_dir: Option<PathBuf>,
    /// Plain HTTP instead of HTTPS (`--redfish-insecure-http`).
    pub insecure_http: Option<bool>,
    /// Idle timeout of a SessionService session (`--redfish-session-timeout`).
    pub session_timeout_secs: Option<u64>,
    /// How long a request waits for the backend (`--redfish-backend-timeout-ms`).
    pub backend_timeout_ms: Option<u64>,
}

/// Declares [`Common`], the keys a `[[bmc]]` entry and `[defaults]` share (the entry's value
/// wins), and each raw section struct with those keys plus its own and a `common()` accessor,
/// from one list of the shared keys. (`#[serde(flatten)]` would be shorter but serde does not
/// support it together with `deny_unknown_fields`, and a misspelt key must be an error, not
/// silently ignored.) The shared list travels as one token tree to each section, because a
/// `macro_rules!` repetition cannot be nested inside another it does not drive.
macro_rules! sections {
    (common { $($cf:ident : $ct:ty,)* } $($rest:tt)*) => {
        /// Keys a `[[bmc]]` entry and `[defaults]` share (the entry's value wins).
        #[derive(Clone, Debug, Default)]
        struct Common {
            $($cf: $ct,)*
        }
        sections!(@each { $($cf: $ct,)* } $($rest)*);
    };
    (@each $common:tt) => {};
    (@each { $($cf:ident : $ct:ty,)* }
     $(#[$m:meta])* struct $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty,)* }
     $($rest:tt)*) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($(#[$fm])* $f: $t,)*
            $($cf: $ct,)*
        }
        impl $name {
            fn common(&self) -> Common {
                Common {
                    $($cf: Clone::clone(&self.$cf),)*
                }
            }
        }
        sections!(@each { $($cf: $ct,)* } $($rest)*);
    };
}

sections! {
    common {
        port: Option<u16>,
        backend: Option<Spelt<BackendKind>>,
        user: Option<String>,
        password_file: Option<PathBuf>,
        password_env: Option<String>,
        insecure_inline_password: Option<String>,
        privilege: Option<Spelt<Privilege>>,
        kg_file: Option<PathBuf>,
        boot_strategy: Option<Spelt<BootStrategy>>,
        sim_power_on_ms: Option<u64>,
        sim_power_off_ms: Option<u64>,
        sim_initial_power: Option<Spelt<OnOff>>,
        console: Option<Spelt<ConsoleMode>>,
    }

    /// `[defaults]`: the shared keys plus process-wide settings.
    struct RawDefaults {
        backend_timeout_ms: Option<u64>,
        shutdown_timeout_secs: Option<u64>,
        // A string, checked below, so that a bad value is reported with the key's name.
        metrics: Option<String>,
    }

    /// One `[[bmc]]` as written.
    struct RawBmc {
        address: Option<IpAddr>,
        instance: Option<String>,
        gateway: Option<IpAddr>,
        interface: Option<String>,
        table: Option<u32>,
        prefix: Option<u8>,
    }
}

/// A validated fleet file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fleet {
    /// The BMCs, in file order, with unique addresses.
    pub bmcs: Vec<BmcEntry>,
    /// `[defaults] backend_timeout_ms`.
    pub backend_timeout_ms: Option<u64>,
    /// `[defaults] shutdown_timeout_secs`: how long SIGTERM waits for background work.
    pub shutdown_timeout_secs: Option<u64>,
    /// `[defaults] metrics`: where to serve Prometheus metrics (`--metrics` wins).
    pub metrics: Option<SocketAddr>,
    /// `[cloud]`.
    pub cloud: CloudSection,
    /// `[routing]`.
    pub routing: RoutingSection,
    /// `[redfish]`.
    pub redfish: RedfishSection,
    /// Entries that use `insecure_inline_password` (for a warning at start).
    pub inline_passwords: Vec<usize>,
}

impl Fleet {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validate `text`, read from `path` (relative `password_file`/`kg_file` paths are taken
    /// relative to the file's directory, so a fleet directory can be moved as a whole).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let p = || path.to_path_buf();
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: p(),
                    message: e.to_string().trim_end().to_string(),
                })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        // A missing section is its defaults; a malformed one names itself in the error.
        fn typed<T: serde::de::DeserializeOwned + Default>(
            table: &mut toml::Table,
            name: &'static str,
            path: &Path,
        ) -> Result<T, ConfigError> {
            match table.remove(name) {
                Some(v) => v
                    .try_into()
                    .map_err(|e: toml::de::Error| ConfigError::Section {
                        path: path.to_path_buf(),
                        section: name,
                        message: e.message().to_string(),
                    }),
                None => Ok(T::default()),
            }
        }
        let defaults: RawDefaults = typed(&mut table, "defaults", path)?;
        let metrics = defaults
            .metrics
            .as_deref()
            .map(|m| {
                m.parse::<SocketAddr>().map_err(|_| ConfigError::Section {
                    path: p(),
                    section: "defaults",
                    message: format!(
                        "metrics: {m:?} is not an address and port (e.g. \"127.0.0.1:9623\" \
                         or \"[::1]:9623\")"
                    ),
                })
            })
            .transpose()?;
        let cloud: CloudSection = typed(&mut table, "cloud", path)?;
        if let Some(n) = &cloud.network {
            n.check().map_err(|message| ConfigError::Section {
                path: p(),
                section: "cloud.network",
                message,
            })?;
        }
        let routing: RoutingSection = typed(&mut table, "routing", path)?;
        let mut redfish: RedfishSection = typed(&mut table, "redfish", path)?;
        for f in [&mut redfish.cert, &mut redfish.key, &mut redfish.state_dir] {
            if let Some(x) = f.take() {
                *f = Some(base_dir.join(x));
            }
        }
        if redfish.cert.is_some() != redfish.key.is_some() {
            // Never fall back to the self-signed pair behind the operator's back.
            return Err(ConfigError::Section {
                path: p(),
                section: "redfish",
                message: "cert and key go together: set both, or neither for the self-signed \
                          certificate"
                    .into(),
            });
        }
        if let Some(prio) = routing.priority {
            check_route_priority(prio).map_err(|message| ConfigError::Section {
                path: p(),
                section: "routing",
                message: format!("priority: {message}"),
            })?;
        }
        let entries = match table.remove("bmc") {
            Some(toml::Value::Array(a)) => a,
            Some(_) => {
                return Err(ConfigError::Section {
                    path: p(),
                    section: "bmc",
                    message: "must be an array of tables, written [[bmc]]".into(),
                });
            }
            None => Vec::new(),
        };
        if let Some(k) = table.keys().next() {
            return Err(ConfigError::Syntax {
                path: p(),
                message: format!(
                    "unknown top-level key `{k}` (expected [defaults], [cloud], [routing], \
                     [redfish] and [[bmc]])"
                ),
            });
        }
        if entries.is_empty() {
            return Err(ConfigError::Empty { path: p() });
        }
        // Default-level checks run once, blamed on [defaults] rather than on every entry.
        let default_pw = password_source(&defaults.common(), &base_dir).map_err(|message| {
            ConfigError::Section {
                path: p(),
                section: "defaults",
                message,
            }
        })?;
        let mut bmcs = Vec::with_capacity(entries.len());
        let mut inline_passwords = Vec::new();
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, v) in entries.into_iter().enumerate() {
            let index = i + 1;
            let address = v
                .get("address")
                .and_then(toml::Value::as_str)
                .unwrap_or("?")
                .to_string();
            let err = |field: &str, message: String| ConfigError::Entry {
                path: p(),
                index,
                address: address.clone(),
                field: field.to_string(),
                message,
            };
            if !v.is_table() {
                return Err(err("entry", "must be a table".into()));
            }
            let raw: RawBmc = v.clone().try_into().map_err(|e: toml::de::Error| {
                let msg = e.message().to_string();
                // serde names the field for unknown keys; for a value of the wrong type it
                // does not, so find the key that fails on its own.
                let field = field_in(&msg)
                    .or_else(|| bad_key(&v))
                    .unwrap_or_else(|| "entry".into());
                err(&field, msg)
            })?;
            let entry = build_entry(index, raw, &defaults.common(), &default_pw, &base_dir)
                .map_err(|(field, message)| err(field, message))?;
            if let Some(first) = seen.insert(entry.addr, index) {
                return Err(ConfigError::Duplicate {
                    path: p(),
                    index,
                    first,
                    addr: entry.addr,
                });
            }
            if matches!(entry.password, PasswordSource::Inline(_)) {
                inline_passwords.push(index);
            }
            bmcs.push(entry);
        }
        Ok(Self {
            bmcs,
            backend_timeout_ms: defaults.backend_timeout_ms,
            shutdown_timeout_secs: defaults.shutdown_timeout_secs,
            metrics,
            cloud,
            routing,
            redfish,
            inline_passwords,
        })
    }
}

/// The address and port of one BMC, as the fleet file and the single-BMC flags both need them
/// (one check for both: `--bind 0.0.0.0` is refused as `address = "0.0.0.0"` is). Err names
/// the key (`address`, `port`) and what is wrong.
pub fn check_bmc_address(address: IpAddr, port: u16) -> Result<(), (&'static str, String)> {
    if port == 0 {
        return Err(("port", "0 is not a port a client can reach".into()));
    }
    if address.is_unspecified() || address.is_multicast() {
        return Err((
            "address",
            "must be one unicast address (a wildcard would answer for every BMC at once)".into(),
        ));
    }
    Ok(())
}

/// The range `ip rule` priorities may take: after the kernel's `local` rule (0) and before
/// the `main` table's rule (32766), or the per-address tables are never consulted.
pub const ROUTE_PRIORITY: std::ops::RangeInclusive<u32> = 1..=32765;

/// Check `[routing] priority` / `--route-priority` against [`ROUTE_PRIORITY`].
pub fn check_route_priority(p: u32) -> Result<(), String> {
    if ROUTE_PRIORITY.contains(&p) {
        Ok(())
    } else {
        Err(format!(
            "{p} is outside {}..={}: rules must come after the local table (0) and before \
             the main table (32766), or replies keep leaving through the main table",
            ROUTE_PRIORITY.start(),
            ROUTE_PRIORITY.end()
        ))
    }
}

/// The key of a `[[bmc]]` table whose value does not decode (tried one key at a time: every
/// field of [`RawBmc`] is optional, so a one-key table fails only on that key's value).
fn bad_key(v: &toml::Value) -> Option<String> {
    let t = v.as_table()?;
    t.iter()
        .find(|(k, val)| {
            let mut one = toml::Table::new();
            one.insert((*k).clone(), (*val).clone());
            toml::Value::Table(one).try_into::<RawBmc>().is_err()
        })
        .map(|(k, _)| k.clone())
}

/// The field serde named in "unknown field `x`" / "missing field `x`" messages.
fn field_in(msg: &str) -> Option<String> {
    if !["unknown field", "missing field", "duplicate field"]
        .iter()
        .any(|p| msg.starts_with(p))
    {
        return None;
    }
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_string())
}

/// A section's value enum, spelt as its flag's value (`"auto"`, `"Rescue"`: case does not
/// matter), the message naming `key` ("mode: \"on\" is not one of off, auto, ip"): typed
/// at decoding, so nothing downstream matches strings by hand.
fn section_enum<'de, D, T>(d: D, key: &str) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: clap::ValueEnum,
{
    Option::<String>::deserialize(d)?
        .map(|s| parse_enum::<T>(&s).map_err(|m| serde::de::Error::custom(format!("{key}: {m}"))))
        .transpose()
}

fn routing_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<RoutingMode>, D::Error> {
    section_enum(d, "mode")
}

fn boot_strategy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<BootStrategy>, D::Error> {
    section_enum(d, "boot_strategy")
}

fn vmedia_import<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<crate::cloud::VmediaImport>, D::Error> {
    section_enum(d, "vmedia_import")
}

/// Parse a clap value enum from a config string, with the same spelling as the flag.
fn parse_enum<T: clap::ValueEnum>(s: &str) -> Result<T, String> {
    T::from_str(s, true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        format!("{s:?} is not one of {}", names.join(", "))
    })
}

/// A key whose string value names one of a few values (`backend`, `privilege`,
/// `boot_strategy`, `sim_initial_power`), decoded with the file: the value, or why the
/// spelling is not one. The error waits to be reported by the entry that uses the value
/// ("bmc #3 (ADDR): backend: ..."), as a `[defaults]` value matters only to the entries it
/// applies to.
#[derive(Clone, Debug)]
struct Spelt<T>(Result<T, String>);

impl<T: Copy> Spelt<T> {
    /// The value, or the entry error for `key`.
    fn get(&self, key: &'static str) -> Result<T, (&'static str, String)> {
        self.0.clone().map_err(|m| (key, m))
    }
}

/// How a [`Spelt`] value is read from its string.
trait Spelling: Sized {
    fn spell(s: &str) -> Result<Self, String>;
}

macro_rules! value_enum_spelling {
    ($($t:ty),*) => {$(
        impl Spelling for $t {
            fn spell(s: &str) -> Result<Self, String> {
                parse_enum(s)
            }
        }
    )*};
}
value_enum_spelling!(BackendKind, BootStrategy, OnOff, ConsoleMode);

impl Spelling for Privilege {
    fn spell(s: &str) -> Result<Self, String> {
        parse_privilege(s)
    }
}

impl<'de, T: Spelling> Deserialize<'de> for Spelt<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A value of the wrong type (a number, a table) is still a decoding error here.
        Ok(Self(T::spell(&String::deserialize(d)?)))
    }
}

fn parse_privilege(s: &str) -> Result<Privilege, String> {
    Privilege::parse(s)
        .filter(|p| *p >= Privilege::User)
        .ok_or_else(|| format!("{s:?} is not USER, OPERATOR or ADMINISTRATOR"))
}

/// The password source one level (defaults or entry) sets, if any. Two at one level is an
/// error: which one wins would be a guess.
fn password_source(c: &Common, base: &Path) -> Result<Option<PasswordSource>, String> {
    let mut set = Vec::new();
    if let Some(f) = &c.password_file {
        set.push(PasswordSource::File(base.join(f)));
    }
    if let Some(v) = &c.password_env {
        if v.is_empty() {
            return Err("password_env: empty variable name".into());
        }
        set.push(PasswordSource::Env(v.clone()));
    }
    if let Some(s) = &c.insecure_inline_password {
        if s.is_empty() {
            return Err("insecure_inline_password: empty".into());
        }
        set.push(PasswordSource::Inline(Zeroizing::new(s.clone())));
    }
    match set.len() {
        0 => Ok(None),
        1 => Ok(set.pop()),
        _ => Err("password_file, password_env and insecure_inline_password: give only one".into()),
    }
}

fn build_entry(
    index: usize,
    raw: RawBmc,
    d: &Common,
    default_pw: &Option<PasswordSource>,
    base: &Path,
) -> Result<BmcEntry, (&'static str, String)> {
    let c = &raw.common();
    let address = raw.address.ok_or(("address", "missing".to_string()))?;
    let instance = raw
        .instance
        .clone()
        .ok_or(("instance", "missing".to_string()))?;
    let port = c.port.or(d.port).unwrap_or(623);
    check_bmc_address(address, port)?;
    if instance.trim().is_empty() {
        return Err(("instance", "empty".into()));
    }
    let backend = match c.backend.as_ref().or(d.backend.as_ref()) {
        Some(s) => s.get("backend")?,
        None => BackendKind::Nova,
    };
    let user = c
        .user
        .clone()
        .or_else(|| d.user.clone())
        .unwrap_or_else(|| "admin".into());
    if user.is_empty() || user.len() > 16 {
        // IPMI v2.0 §22.28: user names are at most 16 bytes.
        return Err(("user", format!("{user:?} must be 1 to 16 bytes")));
    }
    let password = match password_source(c, base).map_err(|m| ("password", m))? {
        Some(p) => p,
        None => default_pw.clone().ok_or((
            "password",
            "no password: set password_file or password_env here or in [defaults] \
             (ovbmc has no default password)"
                .to_string(),
        ))?,
    };
    let privilege = match c.privilege.as_ref().or(d.privilege.as_ref()) {
        Some(s) => s.get("privilege")?,
        None => Privilege::Administrator,
    };
    let boot_strategy = match c.boot_strategy.as_ref().or(d.boot_strategy.as_ref()) {
        Some(s) => Some(s.get("boot_strategy")?),
        None => None,
    };
    let console = match &c.console {
        Some(s) => Some(s.get("console")?),
        None => None,
    };
    let console_default = match &d.console {
        Some(s) => Some(s.get("console")?),
        None => None,
    };
    let dflt = SimSettings::default();
    let sim = SimSettings {
        power_on_ms: c
            .sim_power_on_ms
            .or(d.sim_power_on_ms)
            .unwrap_or(dflt.power_on_ms),
        power_off_ms: c
            .sim_power_off_ms
            .or(d.sim_power_off_ms)
            .unwrap_or(dflt.power_off_ms),
        initial_power: match c
            .sim_initial_power
            .as_ref()
            .or(d.sim_initial_power.as_ref())
        {
            Some(s) => s.get("sim_initial_power")?,
            None => dflt.initial_power,
        },
        api_latency_ms: 0,
    };
    if let Some(g) = raw.gateway
        && g.is_ipv4() != address.is_ipv4()
    {
        return Err(("gateway", "not of the same family as the address".into()));
    }
    let max_prefix = if address.is_ipv4() { 32 } else { 128 };
    if let Some(pl) = raw.prefix
        && pl > max_prefix
    {
        return Err(("prefix", format!("{pl} is longer than {max_prefix}")));
    }
    if let Some(t) = raw.table
        && (t == 0 || (253..=255).contains(&t))
    {
        // 0 is "unspec"; 253-255 are the kernel's default, main and local tables.
        return Err(("table", format!("{t} is reserved by the kernel")));
    }
    Ok(BmcEntry {
        index,
        addr: SocketAddr::new(address, port),
        instance,
        backend,
        user,
        password,
        privilege,
        kg_file: c
            .kg_file
            .as_ref()
            .or(d.kg_file.as_ref())
            .map(|f| base.join(f)),
        boot_strategy,
        console,
        console_default,
        sim,
        route: RouteHints {
            gateway: raw.gateway,
            interface: raw.interface,
            table: raw.table,
            prefix: raw.prefix,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Fleet, ConfigError> {
        Fleet::parse(s, Path::new("/etc/ovbmc/fleet.toml"))
    }

    const GOOD: &str = r#"
[defaults]
backend = "sim"
password_file = "pw"
backend_timeout_ms = 900
shutdown_timeout_secs = 5
metrics = "127.0.0.1:9623"

[cloud]
os_cloud = "mycloud"

[routing]
mode = "auto"
priority = 500

[[bmc]]
address = "192.0.2.45"
instance = "node-0"

[[bmc]]
address = "192.0.2.46"
port = 6230
instance = "node-1"
backend = "nova"
password_env = "NODE1_PW"
privilege = "operator"
boot_strategy = "rescue"
gateway = "192.0.2.1"
interface = "eth1"
"#;

    #[test]
    fn good_file() {
        let f = parse(GOOD).unwrap();
        assert_eq!(f.bmcs.len(), 2);
        let a = &f.bmcs[0];
        assert_eq!(a.addr, "192.0.2.45:623".parse().unwrap());
        assert_eq!(a.backend, BackendKind::Sim);
        assert_eq!(a.password, PasswordSource::File("/etc/ovbmc/pw".into()));
        assert_eq!(a.privilege, Privilege::Administrator);
        let b = &f.bmcs[1];
        assert_eq!(b.addr.port(), 6230);
        assert_eq!(b.backend, BackendKind::Nova);
        assert_eq!(b.password, PasswordSource::Env("NODE1_PW".into()));
        assert_eq!(b.privilege, Privilege::Operator);
        assert_eq!(b.boot_strategy, Some(BootStrategy::Rescue));
        assert_eq!(b.route.interface.as_deref(), Some("eth1"));
        assert_eq!(f.backend_timeout_ms, Some(900));
        assert_eq!(f.shutdown_timeout_secs, Some(5));
        assert_eq!(f.metrics, Some("127.0.0.1:9623".parse().unwrap()));
        assert_eq!(f.cloud.os_cloud.as_deref(), Some("mycloud"));
        assert_eq!(f.routing.priority, Some(500));
        assert!(f.inline_passwords.is_empty());
    }

    #[track_caller]
    fn refused(s: &str, want: &[&str]) {
        let e = parse(s).expect_err("should be refused").to_string();
        for w in want {
            assert!(e.contains(w), "{e:?} lacks {w:?}");
        }
    }

    #[test]
    fn errors_name_the_entry_and_the_field() {
        refused(
            "[[bmc]]\naddress='192.0.2.1'\ninstance='a'\npassword_env='X'\n\
             [[bmc]]\naddress='192.0.2.2'\ninstance='b'\npasword_file='x'\n",
            &["bmc #2", "192.0.2.2", "pasword_file"],
        );
        refused(
            "[[bmc]]\naddress='192.0.2.1'\ninstance='a'\npassword_env='X'\nport=70000\n",
            &["bmc #1 (192.0.2.1): port:"],
        );
        refused(
            "[[bmc]]\naddress='192.0.2.1'\ninstance='a'\npassword_env='X'\nport='x'\n",
            &["bmc #1 (192.0.2.1): port:"],
        );
        refused(
            "[[bmc]]\naddress='192.0.2.1'\ninstance='a'\n",
            &["bmc #1", "password", "no default password"],
        );
        refused(
            "[[bmc]]\naddress='192.0.2.1'\ninstance='a'\npassword_env='X'\nbackend='ironic'\n",
            &["bmc #1", "backend", "nova, sim"],
        );
        refused(
            "[[bmc]]\naddress='nope'\ninstance='a'\npassword_env='X'\n",
            &["bmc #1", "(nope)", "address"],
        );
        refused(
            "[[bmc]]\naddress='192.0.2.1'\npassword_env='X'\n",
            &["bmc #1", "instance"],
        );
        refused(
            "[[bmc]]\naddress='0.0.0.0'\ninstance='a'\npassword_env='X'\n",
            &["bmc #1", "address", "unicast"],
        );
        refused(
            "[[bmc]]\naddress='192.0.2.1'\ninstance='a'\npassword_env='X'\npassword_file='f'\n",
            &["bmc #1", "only one"],
        );
        refused(
            "[[bmc]]\naddress='192.0.2.1'\ninstance='a'\npassword_env='X'\nprivilege='root'\n",
            &["bmc #1", "privilege"],
        );
        // A bad [defaults] spelling is the error of the entry it applies to.
        refused(
            "[defaults]\nbackend='ironic'\n[[bmc]]\naddress='192.0.2.1'\ninstance='a'\npassword_env='X'\n",
            &["bmc #1 (192.0.2.1): backend: \"ironic\" is not one of nova, sim"],
        );
        refused(
            "[[bmc]]\naddress='192.0.2.1'\ninstance='a'\npassword_env='X'\nsim_initial_power=1\n",
            &["bmc #1 (192.0.2.1): sim_initial_power:"],
        );
        refused(
            "[routing]\npriority=40000\n[[bmc]]\naddress='192.0.2.1'\ninstance='a'\npassword_env='X'\n",
            &["[routing]", "priority", "40000", "32765"],
        );
        refused(
            "[[bmc]]\naddress='192.0.2.1'\ninstance='a'\npassword_env='X'\ntable=254\n",
            &["bmc #1", "table", "reserved"],
        );
    }

    #[test]
    fn duplicates_empty_and_sections() {
        refused(
            "[defaults]\npassword_env='X'\n[[bmc]]\naddress='192.0.2.1'\ninstance='a'\n\
             [[bmc]]\naddress='192.0.2.1'\ninstance='b'\n",
            &["bmc #2", "192.0.2.1:623", "bmc #1"],
        );
        // Same address, other port: fine.
        parse(
            "[defaults]\npassword_env='X'\n[[bmc]]\naddress='192.0.2.1'\ninstance='a'\n\
             [[bmc]]\naddress='192.0.2.1'\nport=624\ninstance='b'\n",
        )
        .unwrap();
        refused("[defaults]\npassword_env='X'\n", &["no [[bmc]]"]);
        refused("[defaults]\npasword='X'\n", &["[defaults]", "pasword"]);
        refused("[routing]\nmode='on'\n", &["[routing]", "mode", "auto"]);
        refused(
            "[defaults]\nmetrics='localhost'\n[[bmc]]\naddress='192.0.2.1'\ninstance='a'\n",
            &["[defaults]", "metrics", "\"localhost\"", "127.0.0.1:9623"],
        );
        // Process-wide: not a per-BMC key.
        refused(
            "[[bmc]]\naddress='192.0.2.1'\ninstance='a'\nmetrics='127.0.0.1:9623'\n",
            &["bmc #1", "metrics"],
        );
        refused("bmcs = 1\n", &["unknown top-level key `bmcs`"]);
        refused("[[bmc]\n", &["not valid TOML"]);
    }

    /// `[routing] mode` and `[cloud] boot_strategy` are typed when the section is decoded,
    /// with the messages they had when they were checked by hand afterwards.
    #[test]
    fn section_enums_are_typed_with_the_same_messages() {
        let bmc = "[[bmc]]\naddress='192.0.2.1'\ninstance='a'\npassword_env='X'\n";
        let e = parse(&format!("[routing]\nmode='on'\n{bmc}")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/ovbmc/fleet.toml: [routing]: mode: \"on\" is not one of off, auto, ip"
        );
        let e = parse(&format!("[cloud]\nboot_strategy='pxe'\n{bmc}")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/ovbmc/fleet.toml: [cloud]: boot_strategy: \"pxe\" is not one of metadata, \
             rescue, rebuild"
        );
        let f = parse(&format!(
            "[routing]\nmode='IP'\n[cloud]\nboot_strategy='Rescue'\n{bmc}"
        ))
        .unwrap();
        assert_eq!(f.routing.mode, Some(RoutingMode::Ip));
        assert_eq!(f.cloud.boot_strategy, Some(BootStrategy::Rescue));
    }

    #[test]
    fn inline_passwords_are_flagged_and_never_printed() {
        let f = parse(
            "[[bmc]]\naddress='192.0.2.1'\ninstance='a'\ninsecure_inline_password='hunter2'\n",
        )
        .unwrap();
        assert_eq!(f.inline_passwords, vec![1]);
        assert!(!format!("{f:?}").contains("hunter2"));
        assert_eq!(&f.bmcs[0].password.load().unwrap()[..], b"hunter2");
    }
}
