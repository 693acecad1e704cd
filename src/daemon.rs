//! The daemon as a library: [`Daemon`] owns the fleet — the BMCs with their secrets and
//! machines, the UDP tasks ([`Server`]), the cloud session, the policy routing and the HTTP
//! face (`/metrics`, `/healthz`) — and has three verbs: [`Daemon::start`], [`Daemon::reload`]
//! (SIGHUP, all-or-nothing) and [`Daemon::shutdown`] (SIGTERM: drain within the shutdown
//! timeout). [`run`] is the signal loop around them that `main.rs` calls.
//!
//! **Where a second front end plugs in** (a Redfish face on the same machines): it is started
//! beside the IPMI tasks from a running [`Daemon`], reads the fleet through [`Daemon::bmcs`]
//! (each [`Bmc`] has its settings and its [`SharedMachine`], the very `Arc` the IPMI task
//! drives, so both faces see one power state and one Nova plan at a time) and counts into
//! [`Daemon::metrics`]. After a reload the machines of changed BMCs are new: a face that keeps
//! them must read [`Daemon::bmcs`] again (`reload` returns when the new fleet serves).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ipmi_proto::{BmcConfig, User};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use zeroize::Zeroizing;

use crate::backend::SharedMachine;
use crate::backend::sim::{SimConfig, SimMachine};
use crate::cli::{BackendKind, Cli, OnOff, RoutingMode};
use crate::cloud::session::Session;
use crate::cloud::{BootStrategy, NovaArgs};
use crate::config::{BmcEntry, CloudSection, Fleet, PasswordSource, RouteHints, SimSettings};
use crate::metrics::Metrics;
use crate::net::{RouteRequest, Router};
use crate::server::{self, BmcSpec, BoundBmc, Server, ServerOptions};
use crate::settings::Settings;
use crate::tasks::Tasks;

/// Serve the fleet `cli` describes until SIGTERM or SIGINT, reloading on SIGHUP.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Handlers first: a SIGHUP or SIGTERM that arrives once "serving" is logged must find
    // them in place (the default action of both is to kill the process, skipping the
    // routing cleanup).
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut daemon = Daemon::start(cli).await?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let r = daemon.reload();
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
    daemon.shutdown().await;
    Ok(())
}

/// One BMC of the running fleet: its settings, secrets read, and its machine.
pub struct Bmc {
    loaded: Loaded,
    machine: SharedMachine,
}

impl Bmc {
    /// Its settings (`index` is 0: the position in the file is not part of a BMC).
    pub fn entry(&self) -> &BmcEntry {
        &self.loaded.entry
    }

    /// The machine it controls, shared with its IPMI task.
    pub fn machine(&self) -> &SharedMachine {
        &self.machine
    }
}

/// A running fleet; see the module documentation.
pub struct Daemon {
    cli: Cli,
    settings: Settings,
    /// Boxed: a table has up to twice the buckets it has entries, and a `Bmc` is a few hundred
    /// bytes (its fleet entry), so unboxed the spare buckets alone cost ~3 MiB at 10,000 BMCs.
    bmcs: HashMap<SocketAddr, Box<Bmc>>,
    server: Server,
    cloud: Cloud,
    router: Option<Router>,
    metrics: Arc<Metrics>,
    /// The HTTP face outlives the fleet's shutdown token: /healthz says 503 while the BMCs
    /// drain, and it stops after them.
    metrics_stop: CancellationToken,
    /// The Redfish face, if one is served (stopped with the HTTP face).
    redfish: Option<crate::redfish::Handle>,
    /// With the Redfish face: the one failed-login lock-out of both faces (every BMC's IPMI
    /// endpoint and the Redfish face count into it), so a user name has one count.
    lockout: Option<Arc<crate::redfish::auth::Lockout>>,
}

impl Daemon {
    /// Load the fleet, resolve the settings, build the machines, route, bind, and start
    /// every BMC and the HTTP face. Everything that can fail happens before the first BMC
    /// serves; on error nothing is left running (the router, dropped, removes what it added).
    pub async fn start(cli: Cli) -> anyhow::Result<Self> {
        let fleet = load_fleet(&cli)?;
        let settings = Settings::resolve(&cli, cli.config.as_ref().map(|_| &fleet));
        let metrics = Metrics::new();
        let tasks = Tasks::new();
        let opts = ServerOptions {
            backend_budget: settings.backend_timeout,
            metrics: metrics.clone(),
            tasks: tasks.clone(),
            shutdown_timeout: settings.shutdown_timeout,
        };
        raise_fd_limit(fleet.bmcs.len())?;
        let mut cloud = Cloud::new(settings.nova.clone(), tasks);

        // Secrets, machines (Nova lookups), routing (which may add the addresses), sockets.
        let loaded: Vec<Loaded> = fleet
            .bmcs
            .iter()
            .map(|e| load_entry(&cli, e))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&Loaded> = loaded.iter().collect();
        let machines = cloud.machines(&refs).await?;
        let lockout = settings
            .redfish
            .as_ref()
            .map(|_| Arc::new(crate::redfish::auth::Lockout::new(settings.limits.clone())));
        let specs = loaded
            .iter()
            .zip(&machines)
            .map(|(l, m)| spec(&settings, lockout.as_ref(), l, m.clone()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mode = settings.routing_mode;
        let router = match mode {
            RoutingMode::Auto | RoutingMode::Ip => {
                let mut r = Router::new(crate::net::backend(mode), settings.routing.clone());
                tokio::task::block_in_place(|| r.sync(&route_requests(&fleet.bmcs)))
                    .map_err(|e| routing_error(cli.config.as_deref(), &fleet.bmcs, e))?;
                Some(r)
            }
            RoutingMode::Off => None,
        };
        let bound = server::bind_all(specs)?;
        let metrics_listener = match settings.metrics {
            Some(a) => Some(crate::metrics::bind(a).await?),
            None => None,
        };
        let redfish_bound = match &settings.redfish {
            Some(r) => Some(crate::redfish::bind(r).await?),
            None => None,
        };
        let mut server = Server::new(opts, CancellationToken::new());
        for b in bound {
            server.start(b);
        }
        let bmcs: HashMap<SocketAddr, Box<Bmc>> = loaded
            .into_iter()
            .zip(machines)
            .map(|(loaded, machine)| (loaded.entry.addr, Box::new(Bmc { loaded, machine })))
            .collect();
        let redfish = settings
            .redfish
            .as_ref()
            .zip(redfish_bound)
            .zip(lockout.clone())
            .map(|((r, bound), lockout)| {
                crate::redfish::start(
                    r,
                    bound,
                    lockout,
                    redfish_systems(bmcs.values().map(|b| &**b)),
                )
            });
        let metrics_stop = CancellationToken::new();
        if let Some(l) = metrics_listener {
            if let Ok(a) = l.local_addr() {
                info!(addr = %a, "metrics: serving /metrics and /healthz");
            }
            tokio::spawn(crate::metrics::serve(
                l,
                metrics.clone(),
                metrics_stop.clone(),
            ));
        }
        metrics.set_serving(true);
        info!(bmcs = bmcs.len(), routing = ?mode, "serving");
        Ok(Self {
            cli,
            settings,
            bmcs,
            server,
            cloud,
            router,
            metrics,
            metrics_stop,
            redfish,
            lockout,
        })
    }

    /// The BMCs being served, in no particular order.
    pub fn bmcs(&self) -> impl Iterator<Item = &Bmc> {
        self.bmcs.values().map(|b| &**b)
    }

    /// The settings the daemon was started with (a reload changes the BMCs, not these).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The process's metrics and health, which `/metrics` and `/healthz` serve.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// SIGHUP: read the fleet again; start added BMCs, stop removed ones, restart changed
    /// ones (on their own sockets), and leave unchanged ones running with their sessions.
    /// Either the whole new fleet is prepared (secrets, machines, routes, sockets) or nothing
    /// changes. Returns a one-line summary.
    pub async fn reload(&mut self) -> anyhow::Result<String> {
        let cli = &self.cli;
        let what = cli.config.as_deref().map_or_else(
            || "the command line".to_string(),
            |p| p.display().to_string(),
        );
        info!("SIGHUP: reloading {what}");
        let fleet = load_fleet(cli)?;
        let new = Settings::resolve(cli, cli.config.as_ref().map(|_| &fleet));
        if new.nova.cloud != self.cloud.args.cloud {
            warn!("reload: [cloud] changes take effect at the next restart");
        }
        if new.metrics != self.settings.metrics {
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
            match self.bmcs.get(&l.entry.addr) {
                Some(old) if old.loaded == l => keep += 1,
                Some(_) => changed.push(l),
                None => added.push(l),
            }
        }
        let new_addrs: Vec<SocketAddr> = fleet.bmcs.iter().map(|e| e.addr).collect();
        let removed: Vec<SocketAddr> = self
            .bmcs
            .keys()
            .filter(|a| !new_addrs.contains(a))
            .copied()
            .collect();

        let todo: Vec<&Loaded> = added.iter().chain(changed.iter()).collect();
        let mut machines = self.cloud.machines(&todo).await?;
        let mut specs = todo
            .iter()
            .zip(&machines)
            .map(|(l, m)| spec(&self.settings, self.lockout.as_ref(), l, m.clone()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let changed_specs = specs.split_off(added.len());
        let changed_machines = machines.split_off(added.len());
        if let Some(r) = &mut self.router {
            tokio::task::block_in_place(|| r.sync(&route_requests(&fleet.bmcs)))
                .map_err(|e| routing_error(cli.config.as_deref(), &fleet.bmcs, e))?;
        }
        let bound = match server::bind_all(specs) {
            Ok(b) => b,
            Err(e) => {
                self.restore_routing();
                return Err(e);
            }
        };

        // The changed BMCs first, before anything is removed or added: each is stopped and
        // its socket taken back. The supervisor hands it back whenever the BMC task ended,
        // panicked or not; only a supervisor that died itself loses it (the socket closed
        // with it), and then the address is bound again here — still before any other BMC is
        // touched, so that a failure puts the changed ones back with their old settings and
        // the fleet runs as it did.
        let mut sockets = Vec::with_capacity(changed.len());
        for l in &changed {
            let addr = l.entry.addr;
            let sock = match self.server.stop(addr).await {
                Some(s) => Ok(s),
                None => {
                    warn!(%addr, "reload: the BMC's socket was not handed back; binding again");
                    server::bind_socket(addr)
                        .with_context(|| format!("{}cannot bind UDP {addr} again", l.place))
                }
            };
            match sock {
                Ok(s) => sockets.push(s),
                Err(e) => {
                    // Not running now (its supervisor had died): it leaves the fleet.
                    self.bmcs.remove(&addr);
                    for (l, s) in changed.iter().zip(sockets) {
                        let old = &self.bmcs[&l.entry.addr];
                        let spec = spec(
                            &self.settings,
                            self.lockout.as_ref(),
                            &old.loaded,
                            old.machine.clone(),
                        )?;
                        self.server.start(BoundBmc::from_socket(s, spec));
                    }
                    self.restore_routing();
                    return Err(e);
                }
            }
        }
        let n_changed = changed.len();
        for (((l, s), m), sock) in changed
            .into_iter()
            .zip(changed_specs)
            .zip(changed_machines)
            .zip(sockets)
        {
            self.server.start(BoundBmc::from_socket(sock, s));
            let old = self.bmcs.insert(
                l.entry.addr,
                Box::new(Bmc {
                    loaded: l,
                    machine: m,
                }),
            );
            // The new machine starts with an empty CD: the old one's image goes.
            if let Some(old) = old {
                retire(old.machine.clone());
            }
        }
        for a in &removed {
            self.server.remove(*a).await;
            if let Some(old) = self.bmcs.remove(a) {
                retire(old.machine.clone());
            }
        }
        let n_added = added.len();
        for ((l, b), m) in added.into_iter().zip(bound).zip(machines) {
            self.server.start(b);
            self.bmcs.insert(
                l.entry.addr,
                Box::new(Bmc {
                    loaded: l,
                    machine: m,
                }),
            );
        }
        if let Some(r) = &self.redfish {
            r.update(redfish_systems(self.bmcs.values().map(|b| &**b)));
        }
        Ok(format!(
            "{n_added} added, {} removed, {keep} unchanged, {n_changed} restarted with new \
             settings; {} BMCs",
            removed.len(),
            self.server.addrs().len()
        ))
    }

    /// Put the routing back as the running fleet needs it (a reload failed after routing).
    fn restore_routing(&mut self) {
        if let Some(r) = &mut self.router {
            let old: Vec<&BmcEntry> = self.bmcs.values().map(|b| &b.loaded.entry).collect();
            if let Err(e) = tokio::task::block_in_place(|| r.sync(&route_requests(old))) {
                error!("reload: could not restore the routing: {e}");
            }
        }
    }

    /// SIGTERM: stop every BMC, wait (at most the shutdown timeout) for the background work
    /// still running, stop the HTTP face, remove the routing this process added. Returns how
    /// many background tasks did not finish (each is logged).
    pub async fn shutdown(mut self) -> usize {
        info!("shutting down");
        self.metrics.set_serving(false);
        let unfinished = self.server.drain().await;
        self.metrics_stop.cancel();
        if let Some(r) = &self.redfish {
            r.stop();
        }
        if let Some(r) = self.router.as_mut() {
            tokio::task::block_in_place(|| r.teardown());
        }
        if unfinished > 0 {
            warn!(
                unfinished,
                "exiting with background work not finished (logged above)"
            );
        }
        unfinished
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
    let password = match &cli.openstackbmc {
        Some(dropin) => dropin.password()?,
        None => crate::secrets::ipmi_password(cli.password_file.as_deref())?,
    };
    let (Some(bind), Some(instance)) = (cli.bind, cli.instance.clone()) else {
        anyhow::bail!("--bind and --instance are required without --config");
    };
    // The same checks as a fleet file's `address` and `port` (issue 15 item 16).
    crate::config::check_bmc_address(bind, cli.port).map_err(|(key, why)| {
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
            console: None,
            console_default: None,
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
        redfish: Default::default(),
        inline_passwords: Vec::new(),
    })
}

/// A routing error, led by the fleet file and `[[bmc]]` entry it is about where it names a
/// BMC address ("FILE: bmc #N (ADDR): policy routing: ..."), as configuration.md promises.
pub(crate) fn routing_error(
    file: Option<&Path>,
    bmcs: &[BmcEntry],
    e: crate::net::NetError,
) -> anyhow::Error {
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

/// What policy routing needs to know of each BMC.
pub(crate) fn route_requests<'a>(
    entries: impl IntoIterator<Item = &'a BmcEntry>,
) -> Vec<RouteRequest> {
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

/// A BMC left the fleet (removed or replaced by a reload): let its machine release what it
/// made in the cloud (the virtual media image), in the background.
fn retire(m: SharedMachine) {
    tokio::spawn(async move { m.retire().await });
}

/// The Redfish face's view of the fleet (each BMC's user, password, role and machine).
fn redfish_systems<'a>(bmcs: impl Iterator<Item = &'a Bmc>) -> Vec<crate::redfish::System> {
    bmcs.filter_map(|b| {
        let e = &b.loaded.entry;
        crate::redfish::System::new(
            &b.machine.name(),
            &e.user,
            &b.loaded.password,
            e.privilege,
            b.machine.clone(),
        )
    })
    .collect()
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
            Some(crate::secrets::read_kg_file(f).with_context(|| format!("{}kg_file", what()))?)
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

/// The machines of a fleet's BMCs, in the order of `fleet.bmcs`, built as the daemon builds
/// them (Nova instances resolved in one server list per boot strategy, on one session), for
/// the read-only one-shot commands (`ovbmc nodes-json`): nothing is bound, routed or served,
/// and no password is read.
pub(crate) async fn fleet_machines(
    settings: &Settings,
    file: &Path,
    fleet: &Fleet,
) -> anyhow::Result<Vec<SharedMachine>> {
    let places: Vec<String> = fleet
        .bmcs
        .iter()
        .map(|e| format!("{}: bmc #{} ({}): ", file.display(), e.index, e.addr))
        .collect();
    let refs: Vec<(&BmcEntry, &str)> = fleet
        .bmcs
        .iter()
        .zip(&places)
        .map(|(e, p)| (e, p.as_str()))
        .collect();
    Cloud::new(settings.nova.clone(), Tasks::new())
        .machines_of(&refs, false)
        .await
}

/// The cloud side: the resolved Nova options and, once a Nova BMC needed it, the shared
/// session (kept across reloads, so adding a BMC does not log in again).
struct Cloud {
    args: NovaArgs,
    session: Option<Arc<Session>>,
    /// Handed to every Nova machine: its plans' background steps are waited for at exit.
    tasks: Tasks,
}

impl Cloud {
    fn new(args: NovaArgs, tasks: Tasks) -> Self {
        Self {
            args,
            session: None,
            tasks,
        }
    }

    /// Build a machine per entry (same order). Nova instances are resolved in one server
    /// list per boot strategy, all on one session; any failure fails the whole batch.
    async fn machines(&mut self, entries: &[&Loaded]) -> anyhow::Result<Vec<SharedMachine>> {
        let refs: Vec<(&BmcEntry, &str)> = entries
            .iter()
            .map(|l| (&l.entry, l.place.as_str()))
            .collect();
        self.machines_of(&refs, true).await
    }

    /// [`Cloud::machines`] for entries with where each is written ("FILE: bmc #N (ADDR): ").
    /// With `clean_media` (the daemon, not the read-only commands), the virtual media images
    /// an earlier run left for these instances are deleted in the background: a new machine
    /// has no CD inserted.
    async fn machines_of(
        &mut self,
        entries: &[(&BmcEntry, &str)],
        clean_media: bool,
    ) -> anyhow::Result<Vec<SharedMachine>> {
        let mut out: Vec<Option<SharedMachine>> = vec![None; entries.len()];
        // Grouped by boot strategy (BootStrategy is not Hash; there are three at most).
        let mut nova: Vec<(BootStrategy, Vec<usize>)> = Vec::new();
        for (i, (e, _)) in entries.iter().enumerate() {
            match e.backend {
                BackendKind::Sim => {
                    let mut c = SimConfig::new(&e.instance);
                    c.power_on_delay = Duration::from_millis(e.sim.power_on_ms);
                    c.power_off_delay = Duration::from_millis(e.sim.power_off_ms);
                    c.api_latency = Duration::from_millis(e.sim.api_latency_ms);
                    c.vmedia_max_bytes = self.args.vmedia_max_mib.saturating_mul(1024 * 1024);
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
                    let s = crate::cloud::connect(&self.args)
                        .await
                        .context("Nova backend")?;
                    self.session = Some(s.clone());
                    s
                }
            };
            for (strategy, idx) in nova {
                let mut args = self.args.clone();
                args.boot_strategy = strategy;
                let mut opts = crate::cloud::machine_options(&session, &args)
                    .await
                    .context("Nova backend")?;
                opts.tasks = self.tasks.clone();
                let names: Vec<String> =
                    idx.iter().map(|i| entries[*i].0.instance.clone()).collect();
                let built = match crate::cloud::build_on(&session, &opts, &names).await {
                    Ok(b) => b,
                    Err(e) => {
                        // Name the entry whose instance failed (the message names it).
                        let msg = format!("{e:#}");
                        let at = idx
                            .iter()
                            .map(|i| entries[*i])
                            .find(|(e, _)| msg.contains(&format!("instance {:?}", e.instance)))
                            .map(|(_, place)| place.to_string())
                            .unwrap_or_default();
                        return Err(e.context(format!("{at}Nova backend")));
                    }
                };
                if clean_media {
                    let ids: Vec<String> =
                        built.iter().map(|m| m.instance_id().to_string()).collect();
                    let s = session.clone();
                    tokio::spawn(async move {
                        crate::cloud::machine::clean_stale_media(&s, &ids).await;
                    });
                }
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

/// What the IPMI task of one BMC serves: its user, GUID, limits and Kg, the lock-out it
/// shares with the Redfish face (if one is served), and its machine.
fn spec(
    settings: &Settings,
    lockout: Option<&Arc<crate::redfish::auth::Lockout>>,
    l: &Loaded,
    machine: SharedMachine,
) -> anyhow::Result<BmcSpec> {
    let e = &l.entry;
    let user = User::new(&e.user, l.password.clone(), e.privilege).context("IPMI user")?;
    let mut cfg = BmcConfig::new(vec![user], machine.uuid())?;
    cfg.limits = settings.limits.clone();
    cfg.shared_lockout = lockout.map(|l| l.clone() as Arc<dyn ipmi_proto::config::SharedLockout>);
    if let Some(kg) = &l.kg {
        cfg = cfg.with_kg(kg.clone())?;
    }
    Ok(BmcSpec {
        place: l.place.clone(),
        addr: e.addr,
        config: cfg,
        machine,
        console: settings.console_for(e),
    })
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
pub(crate) fn check_fd_limit(bmcs: usize) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use ipmi_proto::machine::{PowerAction, PowerState};

    use super::*;

    fn free_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port")
    }

    fn fleet(pw: &Path, ports: &[u16], renamed: bool) -> String {
        let mut s = format!(
            "[defaults]\nbackend = \"sim\"\npassword_file = \"{}\"\nsim_power_on_ms = 0\n",
            pw.display()
        );
        for (i, p) in ports.iter().enumerate() {
            let name = if renamed && i == 1 {
                "node-1-renamed".into()
            } else {
                format!("node-{i}")
            };
            s.push_str(&format!(
                "\n[[bmc]]\naddress = \"127.0.0.1\"\nport = {p}\ninstance = \"{name}\"\n"
            ));
        }
        s
    }

    /// The library as a second front end uses it: start a fleet, drive a BMC's machine
    /// from outside the IPMI task, reload, and shut down. The machine of an unchanged BMC is
    /// the very `Arc` its IPMI task drives, across the reload; a changed BMC gets a new one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_face_shares_the_machines_across_a_reload() {
        let dir = std::env::temp_dir().join(format!("ovbmc-daemon-lib-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "secret-password-1").unwrap();
        let cfg = dir.join("fleet.toml");
        let ports = [free_port(), free_port()];
        std::fs::write(&cfg, fleet(&pw, &ports, false)).unwrap();
        let cli = Cli::try_from_args(["ovbmc", "--config", &cfg.display().to_string()]).unwrap();
        let mut d = Daemon::start(cli).await.unwrap();
        assert_eq!(d.bmcs().count(), 2);
        let machine = |d: &Daemon, name: &str| {
            d.bmcs()
                .find(|b| b.entry().instance == name)
                .map(|b| b.machine().clone())
                .unwrap()
        };
        let m0 = machine(&d, "node-0");
        let m1 = machine(&d, "node-1");
        m0.power(PowerAction::On).await.unwrap();

        std::fs::write(&cfg, fleet(&pw, &ports, true)).unwrap();
        let summary = d.reload().await.unwrap();
        assert!(
            summary.starts_with("0 added, 0 removed, 1 unchanged, 1 restarted"),
            "{summary}"
        );
        let still = machine(&d, "node-0");
        assert!(
            Arc::ptr_eq(&still, &m0),
            "an unchanged BMC got a new machine"
        );
        assert_eq!(still.power_state().await.unwrap(), PowerState::On);
        let new = machine(&d, "node-1-renamed");
        assert!(
            !Arc::ptr_eq(&new, &m1),
            "a changed BMC kept its old machine"
        );
        assert_eq!(d.shutdown().await, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
