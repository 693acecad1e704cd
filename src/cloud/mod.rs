//! OpenStack: a Keystone v3 + Nova client and the Nova backend.
//!
//! * [`config`]: credentials from clouds.yaml or `OS_*`, found as openstacksdk finds them.
//! * [`session`]: one token, one HTTP client and one cached, coalesced server view for all BMCs.
//! * [`machine`]: [`NovaMachine`](machine::NovaMachine), the [`Machine`](crate::backend::Machine)
//!   for one instance: power mapping, expected state, boot strategies.
//! * [`neutron`]: a Neutron v2.0 client on the same session; [`netplan`] and [`netcmd`]:
//!   `ovbmc cloud plan | apply | destroy`, the host cloud's side of a fleet.
//!
//! See `docs/nova.md` for the design.

pub mod config;
pub mod machine;
pub mod netcmd;
pub mod netplan;
pub mod neutron;
pub mod secret;
pub mod session;
pub mod tls;
pub mod watch;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
pub(crate) mod fake_tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ipmi_proto::machine::MachineError;
use reqwest::Method;
use serde_json::Value;

use machine::{MachineOptions, NovaMachine};
use session::{Service, Session, SessionOptions};

/// How "boot from network" is done on a cloud whose instances have no PXE boot order switch
/// (see `docs/nova.md` for the trade-offs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BootStrategy {
    /// Instance metadata `libvirt:pxe-first` = "1" for PXE, "" for disk, as OVB's patched Nova
    /// reads it when it builds the guest.
    #[default]
    Metadata,
    /// PXE: the next power-on/reset rescues the instance with the iPXE image; disk: unrescue.
    Rescue,
    /// PXE: the next power-on/reset rebuilds the instance with the iPXE image first (this wipes
    /// the instance's root disk); disk: a plain start/reboot.
    Rebuild,
}

/// How a virtual media image reaches Glance (docs/redfish.md, "Virtual media").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum VmediaImport {
    /// ovbmc fetches the image and uploads it (`PUT /v2/images/{id}/file`): works wherever
    /// ovbmc reaches the URL, which is where Ironic serves its ISOs (the undercloud).
    #[default]
    Upload,
    /// Glance fetches it itself (image import, method `web-download`) where the cloud offers
    /// that (`GET /v2/info/import`), so the image does not pass through the BMC VM; for URLs
    /// the cloud's Glance can reach (Ironic publishing its ISOs through Swift, a public web
    /// server). Falls back to an upload when Glance does not offer it or its import fails.
    WebDownload,
}

/// Which cloud and where its credentials are: the flags every command that talks to the
/// cloud takes (the BMC's Nova backend, `ovbmc cloud watch-addresses`), flattened into each.
/// The argument ids stay the field names (`os_cloud`, ...), which `Cli::given` relies on.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct CloudArgs {
    /// Cloud name in clouds.yaml (looked up as openstacksdk does). Without it, the OS_*
    /// variables (OS_AUTH_URL, OS_USERNAME, ...) are used.
    #[arg(long = "os-cloud", env = "OS_CLOUD", value_name = "NAME")]
    pub os_cloud: Option<String>,
    /// A clouds.yaml to try before the standard locations.
    #[arg(
        long = "os-client-config-file",
        env = "OS_CLIENT_CONFIG_FILE",
        value_name = "PATH"
    )]
    pub os_client_config_file: Option<PathBuf>,
    /// Region for the catalog lookup, overriding the cloud's region_name / OS_REGION_NAME.
    #[arg(long = "os-region-name", value_name = "REGION")]
    pub os_region_name: Option<String>,
}

impl CloudArgs {
    /// The cloud these flags name, from clouds.yaml or the OS_* variables, with the region
    /// flag applied.
    pub fn load(&self) -> Result<config::CloudConfig, CloudError> {
        let env = config::process_env();
        let mut cfg = config::load(
            self.os_cloud.as_deref(),
            self.os_client_config_file.as_deref(),
            &env,
        )?;
        if let Some(r) = &self.os_region_name {
            cfg.region = Some(r.clone());
        }
        Ok(cfg)
    }
}

/// Command-line options for the Nova backend.
#[derive(Debug, Clone, clap::Args)]
pub struct NovaArgs {
    /// The cloud (`--os-cloud`, `--os-client-config-file`, `--os-region-name`).
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// How a PXE boot device is carried out.
    #[arg(long = "boot-strategy", value_enum, default_value_t = BootStrategy::Metadata)]
    pub boot_strategy: BootStrategy,
    /// The iPXE image (Glance name or id) for the rescue and rebuild strategies.
    #[arg(long = "ipxe-image", value_name = "NAME_OR_ID")]
    pub ipxe_image: Option<String>,
    /// How long one Nova server list is reused for status answers, in milliseconds.
    #[arg(long = "nova-cache-ttl-ms", default_value_t = 2000, value_name = "MS")]
    pub nova_cache_ttl_ms: u64,
    /// Timeout of each Keystone/Nova/Glance request, in seconds.
    #[arg(long = "nova-timeout", default_value_t = 30, value_name = "SECS")]
    pub nova_timeout_secs: u64,
    /// How long the state we were asked for is reported while Nova has not confirmed it, in
    /// seconds (a real libvirt clean shutdown may take 60 s or more).
    #[arg(
        long = "nova-confirm-timeout",
        default_value_t = 300,
        value_name = "SECS"
    )]
    pub nova_confirm_timeout_secs: u64,
    /// The largest virtual media image ovbmc fetches and uploads to Glance, in MiB (a Redfish
    /// InsertMedia of a larger one fails its task).
    #[arg(long = "vmedia-max-mib", default_value_t = 4096, value_name = "MIB")]
    pub vmedia_max_mib: u64,
    /// How a virtual media image reaches Glance: `upload` (ovbmc fetches and uploads it) or
    /// `web-download` (Glance's image import fetches it, where the cloud offers that; else, or
    /// when the import fails, an upload).
    #[arg(long = "vmedia-import", value_enum, default_value_t = VmediaImport::Upload, value_name = "HOW")]
    pub vmedia_import: VmediaImport,
}

impl Default for NovaArgs {
    fn default() -> Self {
        Self {
            cloud: CloudArgs::default(),
            boot_strategy: BootStrategy::Metadata,
            ipxe_image: None,
            nova_cache_ttl_ms: 2000,
            nova_timeout_secs: 30,
            nova_confirm_timeout_secs: 300,
            vmedia_max_mib: 4096,
            vmedia_import: VmediaImport::Upload,
        }
    }
}

/// Why a cloud request failed. Messages never contain a secret.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CloudError {
    /// The credentials or options are missing or invalid.
    #[error("{0}")]
    Config(String),
    /// The Keystone catalog has no endpoint for the service, interface and region.
    #[error(
        "no {service} endpoint with interface {interface} in region {region} in the Keystone catalog"
    )]
    NoEndpoint {
        /// Service type (`compute`, `image`).
        service: String,
        /// Interface asked for.
        interface: String,
        /// Region asked for.
        region: String,
    },
    /// No answer within the request timeout.
    #[error("{what}: no answer in time")]
    Timeout {
        /// The request.
        what: String,
    },
    /// The connection failed (refused, reset, TLS, DNS).
    #[error("{what}: {message}")]
    Transport {
        /// The request.
        what: String,
        /// The transport error chain.
        message: String,
    },
    /// The service answered with an error status.
    #[error("{what}: HTTP {status}: {message}")]
    Http {
        /// The request.
        what: String,
        /// HTTP status.
        status: u16,
        /// The service's message.
        message: String,
    },
    /// The answer was not what the API reference documents.
    #[error("{what}: unexpected answer: {message}")]
    Decode {
        /// The request.
        what: String,
        /// What was wrong.
        message: String,
    },
}

impl CloudError {
    /// What the BMC answers. Busy (C0, "temporarily unable to process", IPMI v2.0 §5.2) for
    /// what a retry can cure: 409 (Nova: "Cannot 'os-stop' instance while it is in task_state
    /// powering-off"), 429, any 5xx, no answer in time, and a cloud that cannot be reached
    /// (Keystone or Nova down). ipmitool and Ironic retry busy answers, and ovbmc recovers by
    /// itself once the cloud does. The rest (bad credentials, 4xx, undecodable answers) is a
    /// failure: retrying will not help.
    pub fn kind(&self) -> MachineError {
        match self {
            Self::Timeout { .. } | Self::Transport { .. } => MachineError::Busy,
            Self::Http {
                status: 409 | 429 | 500..=599,
                ..
            } => MachineError::Busy,
            _ => MachineError::Failed,
        }
    }

    /// A short key for the cause, so the same failure is logged once and not per packet.
    pub fn cause(&self) -> String {
        match self {
            Self::Config(_) => "config".into(),
            Self::NoEndpoint { .. } => "endpoint".into(),
            Self::Timeout { .. } => "timeout".into(),
            Self::Transport { .. } => "transport".into(),
            Self::Http { status, .. } => format!("http{status}"),
            Self::Decode { .. } => "decode".into(),
        }
    }
}

/// Is `s` an 8-4-4-4-12 hex UUID?
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let s = s.trim();
    let groups: Vec<&str> = s.split('-').collect();
    if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
        // Nova also accepts the 32-digit form without dashes.
        if s.len() != 32 {
            return None;
        }
    }
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Authenticate and open the shared session described by `args`.
pub async fn connect(args: &NovaArgs) -> anyhow::Result<Arc<Session>> {
    let cfg = args.cloud.load()?;
    let opts = SessionOptions {
        cache_ttl: Duration::from_millis(args.nova_cache_ttl_ms),
        request_timeout: Duration::from_secs(args.nova_timeout_secs.max(1)),
        ..SessionOptions::default()
    };
    let origin = cfg.origin.clone();
    let session = Arc::new(Session::new(cfg, opts)?);
    session
        .connect()
        .await
        .with_context(|| format!("cannot open a session with {origin}"))?;
    Ok(session)
}

/// Resolve `--ipxe-image` (a Glance id or exact, unique name) to an image id (Glance API v2,
/// "List images" with the `name` filter / "Show image").
pub async fn resolve_image(session: &Session, name_or_id: &str) -> anyhow::Result<String> {
    // The catalog's image URL is usually unversioned (http://glance:9292) but may end in /v2.
    let base = session.endpoint(Service::Image).await?;
    let prefix = if base.ends_with("/v2") { "" } else { "/v2" };
    if parse_uuid(name_or_id).is_some() {
        let path = format!("{prefix}/images/{name_or_id}");
        match session
            .call("Glance image", Method::GET, Service::Image, &path, None)
            .await
        {
            Ok(_) => return Ok(name_or_id.to_string()),
            Err(CloudError::Http { status: 404, .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let path = format!("{prefix}/images?name={}", neutron::encode(name_or_id));
    let v = session
        .call(
            "Glance image list",
            Method::GET,
            Service::Image,
            &path,
            None,
        )
        .await?;
    let ids: Vec<String> = v
        .get("images")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|i| i.get("name").and_then(Value::as_str) == Some(name_or_id))
                .filter_map(|i| i.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    match ids.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("--ipxe-image {name_or_id:?}: no such image in Glance"),
        many => anyhow::bail!(
            "--ipxe-image {name_or_id:?} is ambiguous: {} images have that name ({}); pass the id",
            many.len(),
            many.join(", ")
        ),
    }
}

/// The machine options `args` ask for (resolving the iPXE image through Glance).
pub async fn machine_options(session: &Session, args: &NovaArgs) -> anyhow::Result<MachineOptions> {
    let ipxe_image = match (args.boot_strategy, &args.ipxe_image) {
        (BootStrategy::Metadata, None) => None,
        // Not warned about here: in a fleet another BMC may use it with rescue or rebuild;
        // the caller warns when no BMC does (issue 15 item 17).
        (BootStrategy::Metadata, Some(_)) => None,
        (s, None) => anyhow::bail!(
            "--boot-strategy {} needs --ipxe-image NAME_OR_ID",
            if s == BootStrategy::Rescue {
                "rescue"
            } else {
                "rebuild"
            }
        ),
        (_, Some(i)) => Some(resolve_image(session, i).await?),
    };
    Ok(MachineOptions {
        strategy: args.boot_strategy,
        ipxe_image,
        confirm_timeout: Duration::from_secs(args.nova_confirm_timeout_secs.max(1)),
        vmedia_max_bytes: args.vmedia_max_mib.saturating_mul(1024 * 1024),
        vmedia_import: args.vmedia_import,
        ..MachineOptions::default()
    })
}

/// Build machines on an open session.
pub async fn build_on(
    session: &Arc<Session>,
    opts: &MachineOptions,
    instances: &[String],
) -> anyhow::Result<Vec<Arc<NovaMachine>>> {
    let view = session
        .view_wait(Some(Duration::ZERO), None)
        .await
        .context("cannot list the project's servers")?;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for want in instances {
        // By id in any spelling Nova accepts: with or without dashes, either case (compared
        // as the 16 bytes; nova.md says a UUID without dashes is accepted).
        let by_id = parse_uuid(want)
            .and_then(|u| view.servers.values().find(|s| parse_uuid(&s.id) == Some(u)));
        let server = match by_id {
            Some(s) => s,
            None => {
                let named: Vec<_> = view.servers.values().filter(|s| s.name == *want).collect();
                match named.as_slice() {
                    [one] => *one,
                    [] => anyhow::bail!(
                        "instance {want:?}: no server with that id or name in {} ({} servers \
                         visible){}",
                        session.origin(),
                        view.servers.len(),
                        crate::suggest::did_you_mean(
                            want,
                            view.servers.values().map(|s| s.name.as_str())
                        )
                    ),
                    many => {
                        let mut ids: Vec<&str> = many.iter().map(|s| s.id.as_str()).collect();
                        ids.sort_unstable();
                        anyhow::bail!(
                            "instance {want:?} is ambiguous: {} servers have that name ({}); \
                             use the id",
                            many.len(),
                            ids.join(", ")
                        )
                    }
                }
            }
        };
        if !seen.insert(server.id.clone()) {
            tracing::warn!(
                "instance {want:?} ({}) is bound to more than one BMC",
                server.id
            );
        }
        let uuid = parse_uuid(&server.id)
            .with_context(|| format!("instance {want:?}: Nova id {:?} is not a UUID", server.id))?;
        tracing::info!(
            "BMC for {} ({}): {}, task {}",
            server.name,
            server.id,
            server.status,
            server.task_state.as_deref().unwrap_or("none")
        );
        out.push(NovaMachine::new(
            session.clone(),
            server.id.clone(),
            server.name.clone(),
            uuid,
            opts.clone(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        let u = parse_uuid("db0e40b6-f87f-4b6d-9e52-93f2031863ab").unwrap();
        assert_eq!(u[0], 0xdb);
        assert_eq!(u[15], 0xab);
        assert_eq!(parse_uuid("db0e40b6f87f4b6d9e5293f2031863ab"), Some(u));
        assert_eq!(parse_uuid("baremetal_0"), None);
        assert_eq!(parse_uuid("db0e40b6-f87f-4b6d-9e52-93f2031863aX"), None);
        assert_eq!(neutron::encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
