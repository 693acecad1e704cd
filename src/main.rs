//! The `ovbmc` daemon: parse the command line (or a fleet file), build the machines, set up
//! policy routing, bind, serve until SIGTERM or SIGINT, reload on SIGHUP (a thin shell in
//! the mini-redis style; all protocol work is in `ipmi-proto`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use ipmi_proto::{BmcConfig, User};
use ovbmc::backend::SharedMachine;
use ovbmc::backend::sim::{SimConfig, SimMachine};
use ovbmc::cli::{
    BackendKind, CheckArgs, Cli, Command, LogFormat, OnOff, RoutesAction, RoutesArgs, RoutingArgs,
    RoutingMode,
};
use ovbmc::cloud::session::Session;
use ovbmc::cloud::{BootStrategy, NovaArgs};
use ovbmc::config::{BmcEntry, CloudSection, Fleet, PasswordSource, RouteHints, SimSettings};
use ovbmc::metrics::Metrics;
use ovbmc::net::{RouteRequest, Router, RoutingSettings};
use ovbmc::server::{self, BmcSpec, BoundBmc, Server, ServerOptions};
use ovbmc::tasks::Tasks;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use zeroize::Zeroizing;

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
    let result = match &cli.command {
        Some(Command::Routes(args)) => match &args.action {
            Some(action) => routes_oneshot(action),
            None => routes_dry_run(args),
        },
        Some(Command::Check(args)) => check(args),
        None => rt.block_on(run(cli)),
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

/// The fleet the command line describes: the `--config` file, or one BMC from the flags.
fn load_fleet(cli: &Cli) -> anyhow::Result<Fleet> {
    if let Some(path) = &cli.config {
        if std::env::var_os("OVBMC_USER").is_some() {
            warn!(
                "OVBMC_USER is ignored with --config: the fleet file's `user` keys name the \
                 users"
            );
        }
        let fleet = Fleet::load(path)?;
        for i in &fleet.inline_passwords {
            warn!(
                "bmc #{i} in {} uses insecure_inline_password: anyone who can read the file \
                 has the password; prefer password_file or password_env",
                path.display()
            );
        }
        return Ok(fleet);
    }
    // Read once, here: the file may be a pipe (`--password-file <(printf secret)`), which
    // cannot be read a second time. (A SIGHUP reads it again, which works for a real file.)
    let password = ovbmc::secrets::ipmi_password(cli.password_file.as_deref())?;
    let (Some(bind), Some(instance)) = (cli.bind, cli.instance.clone()) else {
        anyhow::bail!("--bind and --instance are required without --config");
    };
    // The same checks as a fleet file's `address` and `port` (issue 15 item 16).
    ovbmc::config::check_bmc_address(bind, cli.port).map_err(|(key, why)| {
        let flag = if key == "port" { "--port" } else { "--bind" };
        anyhow::anyhow!("{flag}: {why}")
    })?;
    let user = match &cli.user {
        Some(u) => u.clone(),
        None => std::env::var("OVBMC_USER").unwrap_or_else(|_| "admin".into()),
    };
    if user.is_empty() || user.len() > 16 {
        // IPMI v2.0 §22.28: user names are at most 16 bytes (as the fleet file checks).
        anyhow::bail!("--user: {user:?} must be 1 to 16 bytes");
    }
    Ok(Fleet {
        bmcs: vec![BmcEntry {
            index: 0,
            addr: SocketAddr::new(bind, cli.port),
            instance,
            backend: cli.backend,
            user,
            password: PasswordSource::Preloaded(password),
            privilege: cli
                .user_privilege
                .unwrap_or(ipmi_proto::session::Privilege::Administrator),
            kg_file: cli.kg_file.clone(),
            boot_strategy: None,
            sim: SimSettings {
                power_on_ms: cli.sim_power_on_ms,
                power_off_ms: cli.sim_power_off_ms,
                initial_power: cli.sim_initial_power,
                api_latency_ms: cli.sim_api_latency_ms,
            },
            route: RouteHints::default(),
        }],
        backend_timeout_ms: None,
        shutdown_timeout_secs: None,
        metrics: None,
        cloud: CloudSection::default(),
        routing: Default::default(),
        inline_passwords: Vec::new(),
    })
}

/// Routing mode and settings: a command-line flag wins over the file's `[routing]` key,
/// which wins over the default.
fn routing_settings(
    mode: Option<RoutingMode>,
    args: &RoutingArgs,
    fleet: Option<&Fleet>,
) -> (RoutingMode, RoutingSettings) {
    let file = fleet.map(|f| f.routing.clone()).unwrap_or_default();
    let file_mode = file
        .mode
        .as_deref()
        .and_then(|m| <RoutingMode as clap::ValueEnum>::from_str(m, true).ok());
    let d = RoutingSettings::default();
    (
        mode.or(file_mode).unwrap_or_default(),
        RoutingSettings {
            table_base: args
                .route_table_base
                .or(file.table_base)
                .unwrap_or(d.table_base),
            priority: args.route_priority.or(file.priority).unwrap_or(d.priority),
            add_address: args.add_address || file.add_address.unwrap_or(false),
        },
    )
}

/// A routing error, led by the fleet file and `[[bmc]]` entry it is about where it names a
/// BMC address ("FILE: bmc #N (ADDR): policy routing: ..."), as configuration.md promises.
fn routing_error(file: Option<&Path>, bmcs: &[BmcEntry], e: ovbmc::net::NetError) -> anyhow::Error {
    let place = e
        .addr()
        .zip(file)
        .and_then(|(a, f)| {
            bmcs.iter()
                .find(|b| b.addr.ip() == a)
                .map(|b| format!("{}: bmc #{} ({}): ", f.display(), b.index, b.addr))
        })
        .unwrap_or_default();
    anyhow::anyhow!("{place}policy routing: {e}")
}

fn route_requests<'a>(entries: impl IntoIterator<Item = &'a BmcEntry>) -> Vec<RouteRequest> {
    entries
        .into_iter()
        .map(|e| RouteRequest {
            addr: Some(e.addr.ip()),
            gateway: e.route.gateway,
            interface: e.route.interface.clone(),
            table: e.route.table,
            prefix: e.route.prefix,
        })
        .collect()
}

/// `ovbmc routes --dry-run`: print, as `ip` commands, what policy routing would do on this host.
fn routes_dry_run(args: &RoutesArgs) -> anyhow::Result<()> {
    let fleet = args.config.as_deref().map(Fleet::load).transpose()?;
    let reqs = match &fleet {
        Some(f) => route_requests(&f.bmcs),
        None => args.bind.iter().map(|a| RouteRequest::new(*a)).collect(),
    };
    let (mode, settings) = routing_settings(None, &args.routing, fleet.as_ref());
    let router = Router::new(ovbmc::net::backend(mode), settings);
    let ops = router.preview(&reqs).map_err(|e| {
        routing_error(
            args.config.as_deref(),
            fleet.as_ref().map_or(&[][..], |f| &f.bmcs),
            e,
        )
    })?;
    println!("# ovbmc policy routing on this host would run the equivalent of:");
    for (op, present) in &ops {
        if *present {
            println!("# already present: {}", op.command(true));
        } else {
            println!("{}", op.command(true));
        }
    }
    println!("# and at exit (only what it added):");
    for (op, present) in ops.iter().rev() {
        if !*present {
            println!("{}", op.command(false));
        }
    }
    Ok(())
}

/// `ovbmc routes apply|remove`: install or remove the policy routing, then exit.
fn routes_oneshot(action: &RoutesAction) -> anyhow::Result<()> {
    use ovbmc::net::oneshot::{self, Change};
    let (RoutesAction::Apply(t) | RoutesAction::Remove(t)) = action;
    let fleet = t.config.as_deref().map(Fleet::load).transpose()?;
    let reqs = match &fleet {
        Some(f) => route_requests(&f.bmcs),
        None => t.bind.iter().map(|a| RouteRequest::new(*a)).collect(),
    };
    let (mode, settings) = routing_settings(t.routing, &t.opts, fleet.as_ref());
    // The file's mode is the daemon's (`off` when these commands do the routing): only `ip`
    // picks a backend here.
    let backend = ovbmc::net::backend(if mode == RoutingMode::Ip {
        mode
    } else {
        RoutingMode::Auto
    });
    let (verb, done, ops) = match action {
        RoutesAction::Apply(_) => ("apply", "added", oneshot::apply(backend, &reqs, &settings)),
        RoutesAction::Remove(_) => (
            "remove",
            "removed",
            oneshot::remove(backend, &reqs, &settings),
        ),
    };
    let ops = ops.with_context(|| format!("routes {verb}"))?;
    let changed = ops.iter().filter(|(_, c)| *c == Change::Changed).count();
    for (op, c) in &ops {
        let add = matches!(action, RoutesAction::Apply(_));
        match c {
            Change::Changed => println!("{}", op.command(add)),
            Change::Unchanged if add => println!("# already present: {}", op.command(true)),
            Change::Unchanged => println!("# already absent: {}", op.command(true)),
        }
    }
    println!(
        "# routes {verb}: {changed} {done}, {} unchanged",
        ops.len() - changed
    );
    Ok(())
}

/// `ovbmc check --config FILE`: the effective settings of each BMC and what is wrong, without
/// binding, routing or calling the cloud. Secrets are read to prove they can be, never shown.
fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let fleet = Fleet::load(&args.config)?;
    let file = args.config.display();
    let mut wrong = 0usize;
    println!("{file}: {} BMCs", fleet.bmcs.len());
    for e in &fleet.bmcs {
        println!("bmc #{} {}", e.index, e.addr);
        println!("  instance        {}", e.instance);
        println!("  backend         {:?}", e.backend);
        println!("  user            {}", e.user);
        println!("  privilege       {:?}", e.privilege);
        // PasswordSource's Debug names the file or variable and redacts any inline value.
        println!("  password        {:?}", e.password);
        if let Some(k) = &e.kg_file {
            println!("  kg_file         {}", k.display());
        }
        if let Some(b) = e.boot_strategy.or(fleet
            .cloud
            .boot_strategy
            .as_deref()
            .and_then(|s| <BootStrategy as clap::ValueEnum>::from_str(s, true).ok()))
        {
            println!("  boot_strategy   {b:?}");
        }
        if e.backend == BackendKind::Sim {
            println!(
                "  sim             on {} ms, off {} ms, initially {:?}",
                e.sim.power_on_ms, e.sim.power_off_ms, e.sim.initial_power
            );
        }
        if let Err(err) = e.password.load() {
            wrong += 1;
            println!(
                "  WRONG: {file}: bmc #{} ({}): password: {err:#}",
                e.index, e.addr
            );
        }
        if let Some(k) = &e.kg_file
            && let Err(err) = ovbmc::secrets::read_kg_file(k)
        {
            wrong += 1;
            println!(
                "  WRONG: {file}: bmc #{} ({}): kg_file: {err:#}",
                e.index, e.addr
            );
        }
    }
    for i in &fleet.inline_passwords {
        println!("warning: bmc #{i} uses insecure_inline_password");
    }
    if let Err(err) = check_fd_limit(fleet.bmcs.len()) {
        wrong += 1;
        println!("WRONG: {err:#}");
    }
    if wrong > 0 {
        anyhow::bail!("{file}: {wrong} problem(s) found");
    }
    println!("{file}: OK");
    Ok(())
}

/// One BMC with its secrets read: what a reload compares to decide whether a BMC changed.
struct Loaded {
    entry: BmcEntry,
    password: Zeroizing<Vec<u8>>,
    kg: Option<Zeroizing<Vec<u8>>>,
    /// Where it is written ("FILE: bmc #N (ADDR)", or "" on the command line), for errors.
    /// Not part of its identity: moving an entry in the file is no change.
    place: String,
}

impl PartialEq for Loaded {
    fn eq(&self, o: &Self) -> bool {
        self.entry == o.entry && self.password == o.password && self.kg == o.kg
    }
}

/// "FILE: bmc #N (ADDR): " for an entry of a fleet file, "" for the single-BMC command line.
fn place(cli: &Cli, e: &BmcEntry) -> String {
    match &cli.config {
        Some(p) if e.index > 0 => format!("{}: bmc #{} ({}): ", p.display(), e.index, e.addr),
        _ => String::new(),
    }
}

fn load_entry(cli: &Cli, e: &BmcEntry) -> anyhow::Result<Loaded> {
    let here = place(cli, e);
    let what = || here.clone();
    let password = e
        .password
        .load()
        .with_context(|| format!("{}reading the IPMI password", what()))?;
    let kg = match &e.kg_file {
        Some(f) => {
            Some(ovbmc::secrets::read_kg_file(f).with_context(|| format!("{}kg_file", what()))?)
        }
        None => None,
    };
    // The position in the file is not part of a BMC's identity: moving an entry is no change.
    let mut entry = e.clone();
    entry.index = 0;
    Ok(Loaded {
        entry,
        password,
        kg,
        place: here,
    })
}

/// The cloud side: the merged options and, once a Nova BMC needed it, the shared session
/// (kept across reloads, so adding a BMC does not log in again).
struct Cloud {
    args: NovaArgs,
    session: Option<Arc<Session>>,
    /// Handed to every Nova machine: its plans' background steps are waited for at exit.
    tasks: Tasks,
}

impl Cloud {
    fn new(cli: &NovaArgs, c: &CloudSection, tasks: Tasks) -> Self {
        let mut args = cli.clone();
        // [cloud] keys override the flags (and OS_CLOUD, which is often exported anyway).
        if c.os_cloud.is_some() {
            args.os_cloud = c.os_cloud.clone();
        }
        if c.os_client_config_file.is_some() {
            args.os_client_config_file = c.os_client_config_file.clone();
        }
        if c.os_region_name.is_some() {
            args.os_region_name = c.os_region_name.clone();
        }
        if let Some(s) = &c.boot_strategy
            && let Ok(s) = <BootStrategy as clap::ValueEnum>::from_str(s, true)
        {
            args.boot_strategy = s;
        }
        if c.ipxe_image.is_some() {
            args.ipxe_image = c.ipxe_image.clone();
        }
        if let Some(v) = c.nova_cache_ttl_ms {
            args.nova_cache_ttl_ms = v;
        }
        if let Some(v) = c.nova_timeout_secs {
            args.nova_timeout_secs = v;
        }
        if let Some(v) = c.nova_confirm_timeout_secs {
            args.nova_confirm_timeout_secs = v;
        }
        Self {
            args,
            session: None,
            tasks,
        }
    }

    /// Build a machine per entry (same order). Nova instances are resolved in one server
    /// list per boot strategy, all on one session; any failure fails the whole batch.
    async fn machines(&mut self, entries: &[&Loaded]) -> anyhow::Result<Vec<SharedMachine>> {
        let mut out: Vec<Option<SharedMachine>> = vec![None; entries.len()];
        // Grouped by boot strategy (BootStrategy is not Hash; there are three at most).
        let mut nova: Vec<(BootStrategy, Vec<usize>)> = Vec::new();
        for (i, l) in entries.iter().enumerate() {
            let e = &l.entry;
            match e.backend {
                BackendKind::Sim => {
                    let mut c = SimConfig::new(&e.instance);
                    c.power_on_delay = Duration::from_millis(e.sim.power_on_ms);
                    c.power_off_delay = Duration::from_millis(e.sim.power_off_ms);
                    c.api_latency = Duration::from_millis(e.sim.api_latency_ms);
                    c.initial_power = match e.sim.initial_power {
                        OnOff::On => ipmi_proto::machine::PowerState::On,
                        OnOff::Off => ipmi_proto::machine::PowerState::Off,
                    };
                    out[i] = Some(SimMachine::new(c) as Arc<_>);
                }
                BackendKind::Nova => {
                    let s = e.boot_strategy.unwrap_or(self.args.boot_strategy);
                    match nova.iter_mut().find(|(k, _)| *k == s) {
                        Some((_, v)) => v.push(i),
                        None => nova.push((s, vec![i])),
                    }
                }
            }
        }
        if let Some(i) = &self.args.ipxe_image
            && !nova.is_empty()
            && nova.iter().all(|(s, _)| *s == BootStrategy::Metadata)
        {
            warn!(
                "ipxe_image {i:?} is not used: every Nova BMC uses boot strategy metadata \
                 (only rescue and rebuild boot it)"
            );
        }
        if !nova.is_empty() {
            let session = match &self.session {
                Some(s) => s.clone(),
                None => {
                    let s = ovbmc::cloud::connect(&self.args)
                        .await
                        .context("Nova backend")?;
                    self.session = Some(s.clone());
                    s
                }
            };
            for (strategy, idx) in nova {
                let mut args = self.args.clone();
                args.boot_strategy = strategy;
                let mut opts = ovbmc::cloud::machine_options(&session, &args)
                    .await
                    .context("Nova backend")?;
                opts.tasks = self.tasks.clone();
                let names: Vec<String> = idx
                    .iter()
                    .map(|i| entries[*i].entry.instance.clone())
                    .collect();
                let built = match ovbmc::cloud::build_on(&session, &opts, &names).await {
                    Ok(b) => b,
                    Err(e) => {
                        // Name the entry whose instance failed (the message names it).
                        let msg = format!("{e:#}");
                        let at = idx
                            .iter()
                            .map(|i| entries[*i])
                            .find(|l| msg.contains(&format!("instance {:?}", l.entry.instance)))
                            .map(|l| l.place.clone())
                            .unwrap_or_default();
                        return Err(e.context(format!("{at}Nova backend")));
                    }
                };
                for (i, m) in idx.into_iter().zip(built) {
                    out[i] = Some(m as SharedMachine);
                }
            }
        }
        out.into_iter()
            .map(|m| m.context("internal: a BMC got no machine"))
            .collect()
    }
}

fn spec(cli: &Cli, l: &Loaded, machine: SharedMachine) -> anyhow::Result<BmcSpec> {
    let e = &l.entry;
    let user = User::new(&e.user, l.password.clone(), e.privilege).context("IPMI user")?;
    let mut cfg = BmcConfig::new(vec![user], machine.uuid())?;
    cfg.limits = cli.limits();
    if let Some(kg) = &l.kg {
        cfg = cfg.with_kg(kg.clone())?;
    }
    Ok(BmcSpec {
        place: l.place.clone(),
        addr: e.addr,
        config: cfg,
        machine,
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Handlers first: a SIGHUP or SIGTERM that arrives once "serving" is logged must find
    // them in place (the default action of both is to kill the process, skipping the
    // routing cleanup).
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let fleet = load_fleet(&cli)?;
    let (mode, settings) = routing_settings(
        cli.routing,
        &cli.route_opts,
        cli.config.as_ref().map(|_| &fleet),
    );
    let metrics = Metrics::new();
    let tasks = Tasks::new();
    let opts = ServerOptions {
        backend_budget: Duration::from_millis(
            cli.backend_timeout_ms
                .or(fleet.backend_timeout_ms)
                .unwrap_or(700),
        ),
        metrics: metrics.clone(),
        tasks: tasks.clone(),
        shutdown_timeout: cli
            .shutdown_timeout
            .or(fleet.shutdown_timeout_secs)
            .map_or(server::DEFAULT_SHUTDOWN_TIMEOUT, Duration::from_secs),
    };
    let metrics_addr = cli.metrics.or(fleet.metrics);
    raise_fd_limit(fleet.bmcs.len())?;
    let mut cloud = Cloud::new(&cli.nova, &fleet.cloud, tasks);

    // Everything that can fail happens before the first BMC serves: secrets, machines
    // (Nova lookups), routing (which may add the addresses), sockets.
    let loaded: Vec<Loaded> = fleet
        .bmcs
        .iter()
        .map(|e| load_entry(&cli, e))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&Loaded> = loaded.iter().collect();
    let machines = cloud.machines(&refs).await?;
    let specs = loaded
        .iter()
        .zip(machines)
        .map(|(l, m)| spec(&cli, l, m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut router = match mode {
        RoutingMode::Auto | RoutingMode::Ip => {
            let mut r = Router::new(ovbmc::net::backend(mode), settings);
            tokio::task::block_in_place(|| r.sync(&route_requests(&fleet.bmcs)))
                .map_err(|e| routing_error(cli.config.as_deref(), &fleet.bmcs, e))?;
            Some(r)
        }
        RoutingMode::Off => None,
    };
    // On error the router is dropped here, which removes what it added.
    let bound = server::bind_all(specs)?;
    let metrics_listener = match metrics_addr {
        Some(a) => Some(ovbmc::metrics::bind(a).await?),
        None => None,
    };
    let shutdown = CancellationToken::new();
    let mut server = Server::new(opts, shutdown.clone());
    for b in bound {
        server.start(b);
    }
    let mut current: HashMap<SocketAddr, Loaded> =
        loaded.into_iter().map(|l| (l.entry.addr, l)).collect();
    // The metrics listener outlives the fleet's shutdown token: /healthz says 503 while the
    // BMCs drain, and it stops after them.
    let metrics_stop = CancellationToken::new();
    if let Some(l) = metrics_listener {
        if let Ok(a) = l.local_addr() {
            info!(addr = %a, "metrics: serving /metrics and /healthz");
        }
        tokio::spawn(ovbmc::metrics::serve(
            l,
            metrics.clone(),
            metrics_stop.clone(),
        ));
    }
    metrics.set_serving(true);
    info!(bmcs = current.len(), routing = ?mode, "serving");

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let r = reload(&cli, &mut current, &mut server, &mut cloud, router.as_mut(), metrics_addr);
                // SIGTERM/SIGINT during a reload are honoured at once (a reload may wait on
                // Keystone and Nova for up to --nova-timeout): the reload is dropped where it
                // is, and the shutdown below stops whatever runs and removes the routing the
                // router added, new or old.
                tokio::select! {
                    r = r => match r {
                        Ok(summary) => info!("reload: {summary}"),
                        Err(e) => error!("reload failed, still serving the previous fleet: {e:#}"),
                    },
                    _ = term.recv() => {
                        warn!("SIGTERM during a reload: reload abandoned");
                        break;
                    }
                    _ = int.recv() => {
                        warn!("SIGINT during a reload: reload abandoned");
                        break;
                    }
                }
            }
        }
    }
    info!("shutting down");
    metrics.set_serving(false);
    let unfinished = server.drain().await;
    metrics_stop.cancel();
    if let Some(r) = router.as_mut() {
        tokio::task::block_in_place(|| r.teardown());
    }
    if unfinished > 0 {
        warn!(
            unfinished,
            "exiting with background work not finished (logged above)"
        );
    }
    Ok(())
}

/// File descriptors a process needs besides one UDP socket per BMC: stdio, the runtime's
/// epoll and wake-up fds, the metrics listener and its connections, HTTPS connections to
/// Keystone and Nova, netlink. Generous, because running out is worse than asking for more.
const FD_RESERVE: u64 = 256;

/// Raise the soft RLIMIT_NOFILE to the hard limit (the soft default is often 1024, which a
/// fleet of 1,000 BMCs already exceeds; raising the soft limit up to the hard one needs no
/// privilege, see setrlimit(2)), then check that the fleet fits.
fn raise_fd_limit(bmcs: usize) -> anyhow::Result<()> {
    use rlimit::Resource;
    let (soft, hard) = Resource::NOFILE
        .get()
        .context("reading the open-files limit (RLIMIT_NOFILE)")?;
    if soft < hard {
        // Linux keeps the hard limit at or below fs.nr_open, so it is a valid soft limit.
        match Resource::NOFILE.set(hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "raised the open-files limit"),
            Err(e) => warn!(error = %e, soft, hard, "could not raise the open-files limit"),
        }
    }
    check_fd_limit(bmcs)
}

/// Refuse a fleet that needs more file descriptors than the process may open, with the
/// numbers and the knobs, instead of failing somewhere in the middle of binding sockets.
fn check_fd_limit(bmcs: usize) -> anyhow::Result<()> {
    let (soft, hard) = rlimit::Resource::NOFILE
        .get()
        .context("reading the open-files limit (RLIMIT_NOFILE)")?;
    let need = bmcs as u64 + FD_RESERVE;
    if need > soft {
        anyhow::bail!(
            "{bmcs} BMCs need about {need} open files (one socket each plus {FD_RESERVE}), \
             but the limit is {soft} (hard limit {hard}); raise it with LimitNOFILE= in the \
             systemd unit, `ulimit -n` / `ulimit -Hn`, or podman run --ulimit nofile=N:N"
        );
    }
    Ok(())
}

/// SIGHUP: read the fleet again; start added BMCs, stop removed ones, restart changed ones
/// (on their own sockets), and leave unchanged ones running with their sessions. Either
/// the whole new fleet is prepared (secrets, machines, routes, sockets) or nothing changes.
async fn reload(
    cli: &Cli,
    current: &mut HashMap<SocketAddr, Loaded>,
    server: &mut Server,
    cloud: &mut Cloud,
    router: Option<&mut Router>,
    metrics_addr: Option<SocketAddr>,
) -> anyhow::Result<String> {
    let what = cli.config.as_deref().map_or_else(
        || "the command line".to_string(),
        |p| p.display().to_string(),
    );
    info!("SIGHUP: reloading {what}");
    let fleet = load_fleet(cli)?;
    if Cloud::new(&cli.nova, &fleet.cloud, Tasks::new())
        .args
        .os_cloud
        != cloud.args.os_cloud
    {
        warn!("reload: [cloud] changes take effect at the next restart");
    }
    if cli.metrics.is_none() && fleet.metrics != metrics_addr {
        warn!("reload: a changed [defaults] metrics takes effect at the next restart");
    }
    check_fd_limit(fleet.bmcs.len())?;
    let loaded: Vec<Loaded> = fleet
        .bmcs
        .iter()
        .map(|e| load_entry(cli, e))
        .collect::<Result<_, _>>()?;
    let mut keep = 0;
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for l in loaded {
        match current.get(&l.entry.addr) {
            Some(old) if *old == l => keep += 1,
            Some(_) => changed.push(l),
            None => added.push(l),
        }
    }
    let new_addrs: Vec<SocketAddr> = fleet.bmcs.iter().map(|e| e.addr).collect();
    let removed: Vec<SocketAddr> = current
        .keys()
        .filter(|a| !new_addrs.contains(a))
        .copied()
        .collect();

    let todo: Vec<&Loaded> = added.iter().chain(changed.iter()).collect();
    let machines = cloud.machines(&todo).await?;
    let mut specs = todo
        .iter()
        .zip(machines)
        .map(|(l, m)| spec(cli, l, m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let changed_specs = specs.split_off(added.len());
    let mut router = router;
    if let Some(r) = &mut router {
        tokio::task::block_in_place(|| r.sync(&route_requests(&fleet.bmcs)))
            .map_err(|e| routing_error(cli.config.as_deref(), &fleet.bmcs, e))?;
    }
    let bound = match server::bind_all(specs) {
        Ok(b) => b,
        Err(e) => {
            // Put the routing back as the running fleet needs it.
            if let Some(r) = &mut router {
                let old: Vec<&BmcEntry> = current.values().map(|l| &l.entry).collect();
                if let Err(e) = tokio::task::block_in_place(|| r.sync(&route_requests(old))) {
                    error!("reload: could not restore the routing: {e}");
                }
            }
            return Err(e);
        }
    };
    let n_changed = changed.len();

    for a in &removed {
        server.remove(*a).await;
        current.remove(a);
    }
    for (l, s) in changed.into_iter().zip(changed_specs) {
        let addr = l.entry.addr;
        let b = match server.stop(addr).await {
            Some(sock) => BoundBmc::from_socket(sock, s),
            None => server::bind_all(vec![s])?.remove(0),
        };
        server.start(b);
        current.insert(addr, l);
    }
    let n_added = added.len();
    for (l, b) in added.into_iter().zip(bound) {
        server.start(b);
        current.insert(l.entry.addr, l);
    }
    Ok(format!(
        "{n_added} added, {} removed, {keep} unchanged, {n_changed} restarted with new \
         settings; {} BMCs",
        removed.len(),
        server.addrs().len()
    ))
}
