//! The process-wide settings, resolved in one place: **command line over fleet file over
//! defaults**, for every setting that has both a flag and a fleet-file key (`[defaults]`,
//! `[routing]` and `[cloud]`).
//!
//! "Command line" means a flag actually written on it ([`Cli::given`]): a flag's default,
//! or a value clap took from an environment variable (`OS_CLOUD`, `OS_CLIENT_CONFIG_FILE`,
//! often exported in an operator's shell anyway), does not beat the fleet file; it only
//! fills in what the file leaves unset.
//!
//! The daemon (`crate::daemon`), `ovbmc check` and `ovbmc routes` all read [`Settings`],
//! so what `check` prints is what the daemon runs with.

use std::net::SocketAddr;
use std::time::Duration;

use ipmi_proto::config::Limits;

use crate::cli::{Cli, ConsoleMode, RoutingArgs, RoutingMode};
use crate::cloud::{CloudArgs, NovaArgs};
use crate::config::{BmcEntry, Fleet};
use crate::net::RoutingSettings;

/// The default of `--backend-timeout-ms` (and `[defaults] backend_timeout_ms`).
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_millis(700);

/// Every process-wide setting, resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--routing` / `[routing] mode`.
    pub routing_mode: RoutingMode,
    /// `--route-*` / `[routing]`.
    pub routing: RoutingSettings,
    /// `--backend-timeout-ms` / `[defaults] backend_timeout_ms`.
    pub backend_timeout: Duration,
    /// `--shutdown-timeout` / `[defaults] shutdown_timeout_secs`.
    pub shutdown_timeout: Duration,
    /// `--metrics` / `[defaults] metrics`.
    pub metrics: Option<SocketAddr>,
    /// The Nova flags / `[cloud]`.
    pub nova: NovaArgs,
    /// Whether the default boot strategy was set (flag or `[cloud]`), rather than left to
    /// its default (`ovbmc check` prints only a strategy someone chose).
    pub boot_strategy_chosen: bool,
    /// The protocol limits (`--lockout-*`; these have no fleet-file key).
    pub limits: Limits,
    /// `--console`, if written on the command line (see [`Settings::console_for`]).
    pub console: Option<ConsoleMode>,
    /// `--redfish*` / `[redfish]`: the Redfish face, if one is served.
    pub redfish: Option<RedfishSettings>,
}

/// The default of `--redfish-session-timeout` (`[redfish] session_timeout_secs`).
pub const DEFAULT_REDFISH_SESSION_TIMEOUT: Duration = Duration::from_secs(1800);

/// The default of `--redfish-backend-timeout-ms` (`[redfish] backend_timeout_ms`). Far above
/// the IPMI face's 700 ms: Ironic waits 60 s for a Redfish answer (ironic `[redfish]
/// read_timeout`), and sushy retries a 5xx only for a GET (`Connector._op`), so a PATCH of the
/// boot override answered 503 because one Nova server list was slow fails the deployment step.
/// 20 s stays well inside Ironic's 60 s and below the Nova request timeout (30 s).
pub const DEFAULT_REDFISH_BACKEND_TIMEOUT: Duration = Duration::from_secs(20);

/// The Redfish face's settings, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedfishSettings {
    /// Where it listens.
    pub addr: SocketAddr,
    /// HTTPS with these PEM files (certificate chain, key); `None`: the self-signed pair.
    pub cert_key: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Where the self-signed pair is kept.
    pub state_dir: std::path::PathBuf,
    /// Plain HTTP.
    pub insecure_http: bool,
    /// Idle timeout of a session.
    pub session_timeout: Duration,
    /// How long a request waits for the backend before it is answered 503 with Retry-After.
    pub backend_timeout: Duration,
}

impl Settings {
    /// Resolve `cli` over `fleet` (the `--config` file, if any) over the defaults.
    pub fn resolve(cli: &Cli, fleet: Option<&Fleet>) -> Self {
        let (routing_mode, routing) = Self::routing(cli.routing, &cli.route_opts, fleet);
        let (nova, boot_strategy_chosen) = Self::nova(cli, fleet);
        let file = |f: fn(&Fleet) -> Option<u64>| fleet.and_then(f);
        Self {
            routing_mode,
            routing,
            backend_timeout: cli
                .backend_timeout_ms
                .or(file(|f| f.backend_timeout_ms))
                .map_or(DEFAULT_BACKEND_TIMEOUT, Duration::from_millis),
            shutdown_timeout: cli
                .shutdown_timeout
                .or(file(|f| f.shutdown_timeout_secs))
                .map_or(crate::server::DEFAULT_SHUTDOWN_TIMEOUT, Duration::from_secs),
            metrics: cli.metrics.or(fleet.and_then(|f| f.metrics)),
            nova,
            boot_strategy_chosen,
            limits: cli.limits(),
            console: cli.console.filter(|_| cli.given("console")),
            redfish: Self::redfish(cli, fleet),
        }
    }

    /// What SOL carries for BMC `e`: the entry's own `console` key, else `--console`, else
    /// `[defaults] console`, else `auto` — the one precedence rule (a flag beats the fleet
    /// file's `[defaults]`), with a key written on the BMC itself beating a process-wide
    /// flag, as `boot_strategy` does.
    pub fn console_for(&self, e: &BmcEntry) -> ConsoleMode {
        e.console
            .or(self.console)
            .or(e.console_default)
            .unwrap_or_default()
    }

    /// The Redfish face: each flag over its `[redfish]` key; served only where an address is
    /// given. The certificate and key travel together (a flag pair replaces the file's pair).
    fn redfish(cli: &Cli, fleet: Option<&Fleet>) -> Option<RedfishSettings> {
        let f = fleet.map(|f| f.redfish.clone()).unwrap_or_default();
        let a = &cli.redfish;
        let addr = a.redfish.or(f.address)?;
        let cert_key = match (&a.redfish_cert, &a.redfish_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            _ => f.cert.zip(f.key),
        };
        let state_dir = a
            .redfish_state_dir
            .clone()
            .or(f.state_dir)
            .or_else(|| {
                // systemd's StateDirectory= (may list several, colon-separated).
                std::env::var_os("STATE_DIRECTORY").and_then(|v| {
                    v.to_str()
                        .and_then(|s| s.split(':').next())
                        .map(std::path::PathBuf::from)
                })
            })
            .unwrap_or_else(|| "/var/lib/ovbmc".into());
        Some(RedfishSettings {
            addr,
            cert_key,
            state_dir,
            // A switch: given, it is on; absent, the file decides.
            // Tri-state on the command line, so either flag beats the key both ways.
            insecure_http: a.insecure_http().or(f.insecure_http).unwrap_or(false),
            session_timeout: a
                .redfish_session_timeout
                .or(f.session_timeout_secs)
                .map_or(DEFAULT_REDFISH_SESSION_TIMEOUT, Duration::from_secs),
            backend_timeout: a
                .redfish_backend_timeout_ms
                .or(f.backend_timeout_ms)
                .map_or(DEFAULT_REDFISH_BACKEND_TIMEOUT, Duration::from_millis),
        })
    }

    /// Routing mode and settings alone (also for `ovbmc routes`, whose flags are its own):
    /// a flag over the file's `[routing]` key over the default.
    pub fn routing(
        mode: Option<RoutingMode>,
        args: &RoutingArgs,
        fleet: Option<&Fleet>,
    ) -> (RoutingMode, RoutingSettings) {
        let file = fleet.map(|f| f.routing.clone()).unwrap_or_default();
        let d = RoutingSettings::default();
        (
            mode.or(file.mode).unwrap_or_default(),
            RoutingSettings {
                table_base: args
                    .route_table_base
                    .or(file.table_base)
                    .unwrap_or(d.table_base),
                priority: args.route_priority.or(file.priority).unwrap_or(d.priority),
                // A switch: given, it is on; absent, the file decides.
                add_address: args.add_address || file.add_address.unwrap_or(d.add_address),
            },
        )
    }

    /// The Nova options: a flag written on the command line, else `[cloud]`, else what clap
    /// holds (an environment variable or the flag's default). Also whether the boot strategy
    /// was chosen by a flag or the file.
    fn nova(cli: &Cli, fleet: Option<&Fleet>) -> (NovaArgs, bool) {
        let c = fleet.map(|f| f.cloud.clone()).unwrap_or_default();
        let flag = cli.nova.clone();
        // One rule for every key: the flag if given, else the file's value if set, else clap's.
        fn pick<T>(given: bool, flag: T, file: Option<T>) -> T {
            match file {
                Some(v) if !given => v,
                _ => flag,
            }
        }
        let g = |id: &str| cli.given(id);
        let nova = NovaArgs {
            cloud: CloudArgs {
                os_cloud: pick(g("os_cloud"), flag.cloud.os_cloud, c.os_cloud.map(Some)),
                os_client_config_file: pick(
                    g("os_client_config_file"),
                    flag.cloud.os_client_config_file,
                    c.os_client_config_file.map(Some),
                ),
                os_region_name: pick(
                    g("os_region_name"),
                    flag.cloud.os_region_name,
                    c.os_region_name.map(Some),
                ),
            },
            boot_strategy: pick(g("boot_strategy"), flag.boot_strategy, c.boot_strategy),
            ipxe_image: pick(g("ipxe_image"), flag.ipxe_image, c.ipxe_image.map(Some)),
            nova_cache_ttl_ms: pick(
                g("nova_cache_ttl_ms"),
                flag.nova_cache_ttl_ms,
                c.nova_cache_ttl_ms,
            ),
            nova_timeout_secs: pick(
                g("nova_timeout_secs"),
                flag.nova_timeout_secs,
                c.nova_timeout_secs,
            ),
            nova_confirm_timeout_secs: pick(
                g("nova_confirm_timeout_secs"),
                flag.nova_confirm_timeout_secs,
                c.nova_confirm_timeout_secs,
            ),
            vmedia_max_mib: pick(g("vmedia_max_mib"), flag.vmedia_max_mib, c.vmedia_max_mib),
            vmedia_import: pick(g("vmedia_import"), flag.vmedia_import, c.vmedia_import),
        };
        (nova, g("boot_strategy") || c.boot_strategy.is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cloud::BootStrategy;

    fn fleet(extra: &str) -> Fleet {
        let text = format!(
            "{extra}\n[[bmc]]\naddress = \"192.0.2.1\"\ninstance = \"a\"\npassword_env = \"X\"\n"
        );
        Fleet::parse(&text, Path::new("/etc/ovbmc/fleet.toml")).unwrap()
    }

    fn cli(args: &[&str]) -> Cli {
        let mut words = vec!["ovbmc", "--config", "/etc/ovbmc/fleet.toml"];
        words.extend_from_slice(args);
        Cli::try_from_args(words).unwrap()
    }

    const CLOUD: &str = "[cloud]\nos_cloud = \"file\"\nos_region_name = \"file-region\"\n\
        boot_strategy = \"rescue\"\nipxe_image = \"file-ipxe\"\nnova_cache_ttl_ms = 1\n\
        nova_timeout_secs = 2\nnova_confirm_timeout_secs = 3\n\
        os_client_config_file = \"/file/clouds.yaml\"\n";

    /// Issue 11 item 4: a Nova flag on the command line beats `[cloud]` (before the fix the
    /// file won, whatever the command line said).
    #[test]
    fn nova_flags_beat_the_cloud_section() {
        let f = fleet(CLOUD);
        let s = Settings::resolve(
            &cli(&[
                "--os-cloud",
                "flag",
                "--os-region-name",
                "flag-region",
                "--boot-strategy",
                "rebuild",
                "--ipxe-image",
                "flag-ipxe",
                "--nova-cache-ttl-ms",
                "10",
                "--nova-timeout",
                "20",
                "--nova-confirm-timeout",
                "30",
                "--os-client-config-file",
                "/flag/clouds.yaml",
            ]),
            Some(&f),
        );
        let n = &s.nova;
        assert_eq!(n.cloud.os_cloud.as_deref(), Some("flag"));
        assert_eq!(n.cloud.os_region_name.as_deref(), Some("flag-region"));
        assert_eq!(n.boot_strategy, BootStrategy::Rebuild);
        assert_eq!(n.ipxe_image.as_deref(), Some("flag-ipxe"));
        assert_eq!(
            (
                n.nova_cache_ttl_ms,
                n.nova_timeout_secs,
                n.nova_confirm_timeout_secs
            ),
            (10, 20, 30)
        );
        assert_eq!(
            n.cloud.os_client_config_file.as_deref(),
            Some(Path::new("/flag/clouds.yaml"))
        );
        assert!(s.boot_strategy_chosen);
    }

    /// `console`: the BMC's own key, then `--console`, then `[defaults] console`, then auto.
    #[test]
    fn console_mode_precedence() {
        let own = |extra: &str| {
            let text = format!(
                "{extra}\n[[bmc]]\naddress = \"192.0.2.1\"\ninstance = \"a\"\n\
                 password_env = \"X\"\nconsole = \"log\"\n[[bmc]]\n\
                 address = \"192.0.2.2\"\ninstance = \"b\"\npassword_env = \"X\"\n"
            );
            Fleet::parse(&text, Path::new("/etc/ovbmc/fleet.toml")).unwrap()
        };
        let f = own("[defaults]\nconsole = \"serial\"");
        let s = Settings::resolve(&cli(&[]), Some(&f));
        let modes: Vec<_> = f.bmcs.iter().map(|e| s.console_for(e)).collect();
        assert_eq!(modes, [ConsoleMode::Log, ConsoleMode::Serial]);
        let s = Settings::resolve(&cli(&["--console", "off"]), Some(&f));
        let modes: Vec<_> = f.bmcs.iter().map(|e| s.console_for(e)).collect();
        assert_eq!(modes, [ConsoleMode::Log, ConsoleMode::Off]);
        let f = own("");
        let s = Settings::resolve(&cli(&[]), Some(&f));
        assert_eq!(s.console_for(&f.bmcs[1]), ConsoleMode::Auto);
        let bad = Fleet::parse(
            "[[bmc]]\naddress = \"192.0.2.1\"\ninstance = \"a\"\npassword_env = \"X\"\n\
             console = \"tty\"\n",
            Path::new("/etc/ovbmc/fleet.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("console") && bad.contains("auto, serial, log, off"),
            "{bad}"
        );
    }

    /// `vmedia_import`: `--vmedia-import`, then `[cloud] vmedia_import`, then upload; a
    /// misspelt value is refused with the choices.
    #[test]
    fn vmedia_import_precedence() {
        use crate::cloud::VmediaImport;
        let f = fleet("[cloud]\nvmedia_import = \"web-download\"\n");
        let s = Settings::resolve(&cli(&[]), Some(&f));
        assert_eq!(s.nova.vmedia_import, VmediaImport::WebDownload);
        let s = Settings::resolve(&cli(&["--vmedia-import", "upload"]), Some(&f));
        assert_eq!(s.nova.vmedia_import, VmediaImport::Upload);
        let s = Settings::resolve(&cli(&[]), Some(&fleet("")));
        assert_eq!(s.nova.vmedia_import, VmediaImport::Upload);
        let bad = Fleet::parse(
            "[cloud]\nvmedia_import = \"glance\"\n",
            Path::new("/etc/ovbmc/fleet.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("vmedia_import") && bad.contains("web-download"),
            "{bad}"
        );
    }

    #[test]
    fn the_cloud_section_beats_defaults() {
        let s = Settings::resolve(&cli(&[]), Some(&fleet(CLOUD)));
        let n = &s.nova;
        assert_eq!(n.cloud.os_cloud.as_deref(), Some("file"));
        assert_eq!(n.boot_strategy, BootStrategy::Rescue);
        assert_eq!(
            (
                n.nova_cache_ttl_ms,
                n.nova_timeout_secs,
                n.nova_confirm_timeout_secs
            ),
            (1, 2, 3)
        );
        assert!(s.boot_strategy_chosen);
        // Nothing anywhere: the flags' defaults.
        let s = Settings::resolve(&cli(&[]), Some(&fleet("")));
        let d = NovaArgs::default();
        assert_eq!(s.nova.boot_strategy, d.boot_strategy);
        assert_eq!(s.nova.nova_timeout_secs, d.nova_timeout_secs);
        assert!(!s.boot_strategy_chosen);
        // A flag written with its default value is still a choice.
        let s = Settings::resolve(&cli(&["--boot-strategy", "metadata"]), Some(&fleet(CLOUD)));
        assert_eq!(s.nova.boot_strategy, BootStrategy::Metadata);
    }

    #[test]
    fn redfish_flags_beat_the_redfish_section() {
        let f = fleet(
            "[redfish]\naddress = \"127.0.0.1:8443\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
             state_dir = \"state\"\ninsecure_http = false\nsession_timeout_secs = 60\n\
             backend_timeout_ms = 5000\n",
        );
        let r = Settings::resolve(&cli(&[]), Some(&f)).redfish.unwrap();
        assert_eq!(r.addr, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(
            r.cert_key,
            Some(("/etc/ovbmc/c.pem".into(), "/etc/ovbmc/k.pem".into()))
        );
        assert_eq!(r.state_dir, Path::new("/etc/ovbmc/state"));
        assert!(!r.insecure_http);
        assert_eq!(r.session_timeout, Duration::from_secs(60));
        assert_eq!(r.backend_timeout, Duration::from_secs(5));
        let r = Settings::resolve(
            &cli(&[
                "--redfish",
                "127.0.0.1:1",
                "--redfish-cert",
                "/x/c",
                "--redfish-key",
                "/x/k",
                "--redfish-state-dir",
                "/x/s",
                "--redfish-insecure-http",
                "--redfish-session-timeout",
                "90",
                "--redfish-backend-timeout-ms",
                "9000",
            ]),
            Some(&f),
        )
        .redfish
        .unwrap();
        assert_eq!(r.addr, "127.0.0.1:1".parse().unwrap());
        assert_eq!(r.cert_key, Some(("/x/c".into(), "/x/k".into())));
        assert_eq!(r.state_dir, Path::new("/x/s"));
        assert!(r.insecure_http);
        assert_eq!(r.session_timeout, Duration::from_secs(90));
        assert_eq!(r.backend_timeout, Duration::from_secs(9));
        let half = "[redfish]\naddress = \"127.0.0.1:1\"\ncert = \"c.pem\"\n[[bmc]]\n\
                    address = \"192.0.2.1\"\ninstance = \"a\"\npassword_env = \"X\"\n";
        let e = Fleet::parse(half, Path::new("/f.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[redfish]: cert and key go together"), "{e}");
        // No address anywhere: no face; defaults otherwise.
        assert!(
            Settings::resolve(&cli(&[]), Some(&fleet("")))
                .redfish
                .is_none()
        );
        let r = Settings::resolve(&cli(&["--redfish", "127.0.0.1:2"]), Some(&fleet("")))
            .redfish
            .unwrap();
        assert_eq!(r.cert_key, None);
        assert_eq!(r.session_timeout, DEFAULT_REDFISH_SESSION_TIMEOUT);
        assert_eq!(r.backend_timeout, DEFAULT_REDFISH_BACKEND_TIMEOUT);
    }

    /// `insecure_http` either way in the fleet file, either flag (or neither) on the command
    /// line: the flag wins both ways, the last of the two flags wins, neither leaves it to the
    /// file.
    #[test]
    fn redfish_insecure_http_flag_beats_the_key_both_ways() {
        let insecure = |key: bool, flags: &[&str]| {
            let f = fleet(&format!(
                "[redfish]\naddress = \"127.0.0.1:8443\"\ninsecure_http = {key}\n"
            ));
            Settings::resolve(&cli(flags), Some(&f))
                .redfish
                .unwrap()
                .insecure_http
        };
        const ON: &str = "--redfish-insecure-http";
        const OFF: &str = "--no-redfish-insecure-http";
        assert!(insecure(true, &[]));
        assert!(!insecure(false, &[]));
        assert!(!insecure(true, &[OFF]));
        assert!(insecure(false, &[ON]));
        assert!(insecure(true, &[OFF, ON]));
        assert!(!insecure(false, &[ON, OFF]));
        // No fleet file: off unless asked for.
        let r = |flags: &[&str]| Settings::resolve(&cli(flags), None).redfish.unwrap();
        assert!(!r(&["--redfish", "127.0.0.1:1"]).insecure_http);
        assert!(r(&["--redfish", "127.0.0.1:1", ON]).insecure_http);
    }

    #[test]
    fn process_settings_and_routing() {
        let f = fleet(
            "[defaults]\nbackend_timeout_ms = 900\nshutdown_timeout_secs = 5\n\
             metrics = \"127.0.0.1:9623\"\n[routing]\nmode = \"ip\"\ntable_base = 2000\n\
             priority = 500\nadd_address = true\n",
        );
        let s = Settings::resolve(&cli(&[]), Some(&f));
        assert_eq!(s.backend_timeout, Duration::from_millis(900));
        assert_eq!(s.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(s.metrics, Some("127.0.0.1:9623".parse().unwrap()));
        assert_eq!(s.routing_mode, RoutingMode::Ip);
        assert_eq!(
            (
                s.routing.table_base,
                s.routing.priority,
                s.routing.add_address
            ),
            (2000, 500, true)
        );
        let s = Settings::resolve(
            &cli(&[
                "--backend-timeout-ms",
                "100",
                "--shutdown-timeout",
                "1",
                "--metrics",
                "127.0.0.1:1",
                "--routing",
                "off",
                "--route-table-base",
                "3000",
                "--route-priority",
                "7",
            ]),
            Some(&f),
        );
        assert_eq!(s.backend_timeout, Duration::from_millis(100));
        assert_eq!(s.shutdown_timeout, Duration::from_secs(1));
        assert_eq!(s.metrics, Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(s.routing_mode, RoutingMode::Off);
        assert_eq!((s.routing.table_base, s.routing.priority), (3000, 7));
        let s = Settings::resolve(&cli(&[]), Some(&fleet("")));
        assert_eq!(s.backend_timeout, DEFAULT_BACKEND_TIMEOUT);
        assert_eq!(s.shutdown_timeout, crate::server::DEFAULT_SHUTDOWN_TIMEOUT);
        assert_eq!(s.metrics, None);
        assert_eq!(s.routing_mode, RoutingMode::Off);
    }
}
