//! The `ovbmc` daemon: parse the command line, build the machines, bind, serve until
//! SIGTERM or SIGINT (a thin shell in the mini-redis style; all protocol work is in
//! `ipmi-proto`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use ipmi_proto::{BmcConfig, User};
use ovbmc::backend::SharedMachine;
use ovbmc::backend::sim::{SimConfig, SimMachine};
use ovbmc::cli::{BackendKind, Cli, LogFormat, OnOff};
use ovbmc::server::{self, BmcSpec, ServerOptions};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("ovbmc: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("OVBMC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let password = ovbmc::secrets::ipmi_password(cli.password_file.as_deref())?;
    let user = User::new(&cli.user, password, cli.user_privilege).context("IPMI user")?;
    let machine: SharedMachine = match cli.backend {
        BackendKind::Sim => {
            let mut c = SimConfig::new(&cli.instance);
            c.power_on_delay = Duration::from_millis(cli.sim_power_on_ms);
            c.power_off_delay = Duration::from_millis(cli.sim_power_off_ms);
            c.initial_power = match cli.sim_initial_power {
                OnOff::On => ipmi_proto::machine::PowerState::On,
                OnOff::Off => ipmi_proto::machine::PowerState::Off,
            };
            SimMachine::new(c) as Arc<_>
        }
        BackendKind::Nova => {
            let mut v = ovbmc::cloud::build_machines(&cli.nova, std::slice::from_ref(&cli.instance))
                .await
                .context("Nova backend")?;
            v.pop().context("no machine built")?
        }
    };
    let mut cfg = BmcConfig::new(vec![user], machine.uuid())?;
    if let Some(f) = &cli.kg_file {
        cfg = cfg.with_kg(ovbmc::secrets::read_secret_file(f)?)?;
    }
    let spec = BmcSpec {
        addr: SocketAddr::new(cli.bind, cli.port),
        config: cfg,
        machine,
    };
    let bound = server::bind_all(vec![spec])?;
    let shutdown = CancellationToken::new();
    let opts = ServerOptions {
        backend_budget: Duration::from_millis(cli.backend_timeout_ms),
    };
    let serve = tokio::spawn(server::run(bound, opts, shutdown.clone()));
    wait_for_signal().await?;
    info!("shutting down");
    shutdown.cancel();
    serve.await.context("server task")?;
    Ok(())
}

/// SIGTERM (container runtimes, systemd) or SIGINT (a terminal).
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
