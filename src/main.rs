//! The `ovbmc` binary: parse the command line, set up logging, and run the daemon
//! (`ovbmc::daemon`) or a one-shot subcommand (`ovbmc::commands`). All the work is in the
//! library; all protocol work is in `ipmi-proto`.

use std::process::ExitCode;

use ovbmc::cli::{Cli, Command, LogFormat};
use tracing::error;

fn main() -> ExitCode {
    let cli = Cli::from_command_line();
    init_tracing(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match &cli.command {
        Some(Command::Routes(args)) => match &args.action {
            Some(action) => ovbmc::commands::routes_oneshot(action),
            None => ovbmc::commands::routes_dry_run(args),
        },
        Some(Command::Check(args)) => ovbmc::commands::check(&cli, args),
        Some(Command::NodesJson(args)) => rt.block_on(ovbmc::enroll::nodes_json(&cli, args)),
        Some(Command::Cloud(args)) => rt.block_on(ovbmc::cloud::netcmd::run(&cli, &args.action)),
        None => rt.block_on(ovbmc::daemon::run(cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: the log goes to stderr already (as JSON with --log-format json).
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("OVBMC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    // Colour only on a terminal: journald, container logs and CI files get plain text.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}
