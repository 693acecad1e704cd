//! A drop-in for OpenStack Virtual Baremetal's `openstackbmc` (issue 14 item 4): the systemd
//! units OVB's `install_openstackbmc.sh` wrote
//! (`ExecStart=/usr/local/bin/openstackbmc --os-cloud host_cloud --instance <id> --address
//! <ip> [--cache-status]`) run unchanged with the binary swapped for ovbmc.
//!
//! **When.** The openstackbmc command line is taken when the program is invoked under the
//! name `openstackbmc` (a symlink or copy: `argv[0]`), or when an `ovbmc` command line with no
//! subcommand carries one of the flags only openstackbmc has (`--address`, `--bmcuser`,
//! `--bmcpass`, `--cache-status`): ovbmc itself has none of them, so they cannot mean anything
//! else. Either way the whole line is openstackbmc's: ovbmc's own flags are refused, except
//! `--password-file` and `--log-format`, which a unit may add.
//!
//! **What.** openstackbmc's flags and environment (openstackbmc.py in
//! openstack-archive/openstack-virtual-baremetal@d01331d, its argparse block): `--bmcuser`
//! (`BMC_USER`, default `admin`), `--bmcpass` (`BMC_PASSWORD`), `--port` (`BMC_PORT`, 623),
//! `--address` (`BMC_ADDRESS`), `--instance` (`INSTANCE_ID`, a UUID or an exact name),
//! `--cache-status` (accepted; ovbmc always caches, `--nova-cache-ttl-ms`), `--os-cloud`
//! (`OS_CLOUD`). They become the one-BMC Nova fleet of `ovbmc --bind ADDRESS --port PORT
//! --instance INSTANCE --user USER`.
//!
//! **Differences, on purpose.** openstackbmc's default password (`password`) does not apply:
//! ovbmc has no default password, and without `--bmcpass`, `--password-file` or
//! `BMC_PASSWORD` it refuses to start, naming them. Its default address `::` (every address)
//! is refused too: an ovbmc BMC answers on one unicast address (see
//! [`crate::config::check_bmc_address`]). An IPv4-mapped address (`::ffff:a.b.c.d`, which
//! openstackbmc made of every IPv4 address) is served as the IPv4 address.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{CommandFactory as _, Parser};
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::cli::{Cli, LogFormat};
use crate::config::PasswordSource;

/// The name OVB installed the BMC program under (its setup.cfg console script).
pub const PROGRAM: &str = "openstackbmc";

/// The flags only openstackbmc has: one of them on an `ovbmc` command line selects this
/// command line.
const OWN_FLAGS: [&str; 4] = ["--address", "--bmcuser", "--bmcpass", "--cache-status"];

/// The variable openstackbmc read the password from, and the one to use instead of
/// `--bmcpass`.
pub const PASSWORD_ENV: &str = "BMC_PASSWORD";

/// openstackbmc's command line and environment.
#[derive(Debug, Parser)]
#[command(
    name = "openstackbmc",
    version = concat!(env!("CARGO_PKG_VERSION"), " (ovbmc, git ", env!("OVBMC_GIT_REV"), ")"),
    about = "ovbmc as a drop-in for OpenStack Virtual Baremetal's openstackbmc: one IPMI BMC \
             for one Nova instance. ovbmc has no default password: set BMC_PASSWORD or give \
             --password-file (see docs/deploy.md, \"Replacing OVB's openstackbmc\")."
)]
struct Args {
    /// IPMI user name.
    #[arg(long, env = "BMC_USER", default_value = "admin")]
    bmcuser: String,

    /// IPMI password. On the command line it is visible to every user of the host (ps,
    /// /proc/PID/cmdline): prefer BMC_PASSWORD (e.g. from a mode 0600 EnvironmentFile) or
    /// --password-file. There is no default.
    #[arg(long, value_name = "PASSWORD", conflicts_with = "password_file")]
    bmcpass: Option<String>,

    /// UDP port.
    #[arg(long, env = "BMC_PORT", default_value_t = 623)]
    port: u16,

    /// The address to answer on (one unicast address: the BMC's IPMI address).
    #[arg(long, env = "BMC_ADDRESS", required = true)]
    address: IpAddr,

    /// The Nova instance: a UUID or an exact name.
    #[arg(long, env = "INSTANCE_ID", required = true)]
    instance: String,

    /// Accepted for openstackbmc's units; ovbmc always caches the instance's status
    /// (`--nova-cache-ttl-ms`, 2 s).
    #[arg(long)]
    cache_status: bool,

    /// Cloud name in clouds.yaml.
    #[arg(long, env = "OS_CLOUD")]
    os_cloud: Option<String>,

    /// (ovbmc) A file holding the IPMI password (one trailing newline ignored), e.g. a systemd
    /// credential: `LoadCredential=` and `--password-file ${CREDENTIALS_DIRECTORY}/NAME`.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,

    /// (ovbmc) Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// What the openstackbmc command line adds to ovbmc's [`Cli`]: where the password comes from
/// and what to tell the operator once logging is up (read again at each reload).
#[derive(Clone, Debug)]
pub struct Dropin {
    /// `None`: no password anywhere (refused when the fleet is loaded, naming BMC_PASSWORD).
    password: Option<PasswordSource>,
    /// The password was written on the command line (`--bmcpass`).
    password_on_command_line: bool,
    /// `--cache-status` was given.
    cache_status: bool,
}

impl Dropin {
    /// The IPMI password, with the warnings this command line deserves; refuses (naming
    /// `BMC_PASSWORD`) when none was given: openstackbmc's default password does not apply.
    pub fn password(&self) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        if self.cache_status {
            info!(
                "openstackbmc --cache-status: accepted; ovbmc always caches the instance's \
                 status (--nova-cache-ttl-ms)"
            );
        }
        if self.password_on_command_line {
            warn!(
                "the IPMI password was given on the command line (--bmcpass): every user of \
                 this host can read it (ps, /proc/PID/cmdline); set {PASSWORD_ENV} from an \
                 EnvironmentFile with mode 0600, or use --password-file"
            );
        }
        match &self.password {
            Some(p) => p.load(),
            None => anyhow::bail!(
                "no IPMI password: set {PASSWORD_ENV} (e.g. in a systemd EnvironmentFile with \
                 mode 0600), or give --password-file FILE (or --bmcpass, which every user can \
                 see in ps); ovbmc has no default password, so openstackbmc's default \
                 (admin/password) does not apply"
            ),
        }
    }
}

/// Whether `args` (the first is the program name) are an openstackbmc command line: the
/// program is called `openstackbmc`, or the line has no subcommand and one of
/// openstackbmc's own flags.
pub fn applies(args: &[OsString]) -> bool {
    let Some(argv0) = args.first() else {
        return false;
    };
    if Path::new(argv0).file_name().is_some_and(|n| n == PROGRAM) {
        return true;
    }
    // ovbmc's subcommands come first (its flags conflict with subcommands), so a line whose
    // first word is not a flag is a subcommand's and is left alone.
    let first_is_flag = args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.starts_with("--"));
    first_is_flag
        && args[1..].iter().any(|a| {
            a.to_str().is_some_and(|a| {
                let name = a.split_once('=').map_or(a, |(n, _)| n);
                OWN_FLAGS.contains(&name)
            })
        })
}

/// Parse an openstackbmc command line (and openstackbmc's environment variables) into the
/// one-BMC ovbmc [`Cli`] it amounts to.
pub fn parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let a = Args::try_parse_from(args)?;
    let bad = |msg: String| Args::command().error(clap::error::ErrorKind::InvalidValue, msg);
    let address = a.address.to_canonical();
    crate::config::check_bmc_address(address, a.port).map_err(|(key, why)| {
        let flag = if key == "port" {
            "--port (BMC_PORT)"
        } else {
            "--address (BMC_ADDRESS)"
        };
        bad(format!("{flag}: {why}"))
    })?;
    let log_format = match a.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let mut words: Vec<OsString> = [
        "ovbmc",
        "--backend",
        "nova",
        "--bind",
        &address.to_string(),
        "--port",
        &a.port.to_string(),
        "--instance",
        &a.instance,
        "--user",
        &a.bmcuser,
        "--log-format",
        log_format,
    ]
    .iter()
    .map(OsString::from)
    .collect();
    if let Some(c) = &a.os_cloud {
        words.extend([OsString::from("--os-cloud"), OsString::from(c)]);
    }
    let mut cli = Cli::try_from_args(words)?;
    let env_password = std::env::var_os(PASSWORD_ENV).is_some_and(|v| !v.is_empty());
    // openstackbmc's order (argparse): the command line over its environment variable.
    let password = match (a.bmcpass, &a.password_file) {
        (Some(p), _) => Some(PasswordSource::Inline(Zeroizing::new(p))),
        (None, Some(f)) => Some(PasswordSource::File(f.clone())),
        (None, None) if env_password => Some(PasswordSource::Env(PASSWORD_ENV.into())),
        (None, None) => None,
    };
    cli.openstackbmc = Some(Dropin {
        password_on_command_line: matches!(password, Some(PasswordSource::Inline(_))),
        password,
        cache_status: a.cache_status,
    });
    Ok(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn selected_by_program_name_or_by_its_own_flags() {
        assert!(applies(&os(&[
            "/usr/local/bin/openstackbmc",
            "--instance",
            "x"
        ])));
        assert!(applies(&os(&["openstackbmc"])));
        assert!(applies(&os(&[
            "ovbmc",
            "--instance",
            "x",
            "--address",
            "::1"
        ])));
        assert!(applies(&os(&["ovbmc", "--cache-status"])));
        assert!(applies(&os(&["ovbmc", "--bmcuser=u", "--instance", "x"])));
        assert!(!applies(&os(&[
            "ovbmc",
            "--bind",
            "192.0.2.1",
            "--instance",
            "x"
        ])));
        assert!(!applies(&os(&["/usr/bin/ovbmc", "--config", "f.toml"])));
        // A subcommand's own flags are the subcommand's, whatever their name.
        assert!(!applies(&os(&["ovbmc", "check", "--address", "x"])));
        assert!(!applies(&os(&[])));
    }

    /// OVB's unit line (install_openstackbmc.sh) becomes the one-BMC Nova command line.
    #[test]
    fn the_ovb_unit_line_is_a_one_bmc_nova_fleet() {
        let cli = parse(os(&[
            "/usr/local/bin/openstackbmc",
            "--os-cloud",
            "host_cloud",
            "--instance",
            "8a4c9b52-4b55-4d83-9d8b-3a4a1a0e6d10",
            "--address",
            "::ffff:192.0.2.45",
            "--cache-status",
        ]))
        .unwrap();
        assert_eq!(cli.bind, Some("192.0.2.45".parse().unwrap()));
        assert_eq!(cli.port, 623);
        assert_eq!(
            cli.instance.as_deref(),
            Some("8a4c9b52-4b55-4d83-9d8b-3a4a1a0e6d10")
        );
        assert_eq!(cli.backend, crate::cli::BackendKind::Nova);
        assert_eq!(cli.user.as_deref(), Some("admin"));
        assert_eq!(cli.nova.cloud.os_cloud.as_deref(), Some("host_cloud"));
        assert!(cli.config.is_none() && cli.command.is_none());
        let d = cli.openstackbmc.as_ref().unwrap();
        assert!(d.cache_status);
    }

    #[test]
    fn bmcpass_is_taken_and_flagged_password_file_too() {
        let cli = parse(os(&[
            "openstackbmc",
            "--instance",
            "bm-0",
            "--address",
            "127.0.0.9",
            "--port",
            "6230",
            "--bmcuser",
            "ipmi",
            "--bmcpass",
            "s3cret",
        ]))
        .unwrap();
        assert_eq!(cli.user.as_deref(), Some("ipmi"));
        assert_eq!(cli.port, 6230);
        let d = cli.openstackbmc.unwrap();
        assert!(d.password_on_command_line);
        assert_eq!(&d.password().unwrap()[..], b"s3cret");
        // Never in Debug output.
        assert!(!format!("{d:?}").contains("s3cret"));

        let cli = parse(os(&[
            "openstackbmc",
            "--instance",
            "bm-0",
            "--address",
            "127.0.0.9",
            "--password-file",
            "/run/credentials/x/ipmi-password",
        ]))
        .unwrap();
        let d = cli.openstackbmc.unwrap();
        assert!(!d.password_on_command_line);
        assert!(matches!(d.password, Some(PasswordSource::File(_))));
    }

    #[test]
    fn refusals_are_clear() {
        let err = |w: &[&str]| parse(os(w)).unwrap_err().to_string();
        let e = err(&["openstackbmc", "--instance", "bm-0", "--address", "::"]);
        assert!(
            e.contains("--address (BMC_ADDRESS)") && e.contains("unicast"),
            "{e}"
        );
        let e = err(&[
            "openstackbmc",
            "--instance",
            "bm-0",
            "--address",
            "127.0.0.9",
            "--port",
            "0",
        ]);
        assert!(e.contains("--port (BMC_PORT)"), "{e}");
        // ovbmc's own serving flags are not part of this command line.
        let e = err(&[
            "openstackbmc",
            "--instance",
            "i",
            "--address",
            "127.0.0.9",
            "--bind",
            "x",
        ]);
        assert!(e.contains("--bind"), "{e}");
        let e = err(&[
            "openstackbmc",
            "--instance",
            "i",
            "--address",
            "127.0.0.9",
            "--bmcpass",
            "p",
            "--password-file",
            "f",
        ]);
        assert!(e.contains("cannot be used with"), "{e}");
    }

    /// No password anywhere: refused at load, naming BMC_PASSWORD (openstackbmc's default
    /// `password` must not apply silently).
    #[test]
    fn no_password_is_refused_naming_bmc_password() {
        let d = Dropin {
            password: None,
            password_on_command_line: false,
            cache_status: false,
        };
        let e = d.password().unwrap_err().to_string();
        assert!(
            e.contains("BMC_PASSWORD") && e.contains("no default password"),
            "{e}"
        );
    }
}
