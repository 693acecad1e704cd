//! The one-shot subcommands: `ovbmc routes --dry-run`, `ovbmc routes apply|remove` and
//! `ovbmc check`. They read the same fleet file and resolve the same [`Settings`] as the
//! daemon, and never start a BMC.

use anyhow::Context as _;

use crate::cli::{BackendKind, CheckArgs, Cli, RoutesAction, RoutesArgs, RoutingMode};
use crate::config::Fleet;
use crate::daemon::{check_fd_limit, route_requests, routing_error};
use crate::net::{RouteRequest, Router};
use crate::settings::Settings;

/// `ovbmc routes --dry-run`: print, as `ip` commands, what policy routing would do on this host.
pub fn routes_dry_run(args: &RoutesArgs) -> anyhow::Result<()> {
    let fleet = args.config.as_deref().map(Fleet::load).transpose()?;
    let reqs = match &fleet {
        Some(f) => route_requests(&f.bmcs),
        None => args.bind.iter().map(|a| RouteRequest::new(*a)).collect(),
    };
    let (mode, settings) = Settings::routing(None, &args.routing, fleet.as_ref());
    let router = Router::new(crate::net::backend(mode), settings);
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
pub fn routes_oneshot(action: &RoutesAction) -> anyhow::Result<()> {
    use crate::net::oneshot::{self, Change};
    let (RoutesAction::Apply(t) | RoutesAction::Remove(t)) = action;
    let fleet = t.config.as_deref().map(Fleet::load).transpose()?;
    let reqs = match &fleet {
        Some(f) => route_requests(&f.bmcs),
        None => t.bind.iter().map(|a| RouteRequest::new(*a)).collect(),
    };
    let (mode, settings) = Settings::routing(t.routing, &t.opts, fleet.as_ref());
    // The file's mode is the daemon's (`off` when these commands do the routing): only `ip`
    // picks a backend here.
    let backend = crate::net::backend(if mode == RoutingMode::Ip {
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
/// The settings are the daemon's: [`Settings::resolve`] over the same file (`cli` is the
/// top-level command line, whose serving flags cannot be given with `check`, so the file and
/// the environment decide).
pub fn check(cli: &Cli, args: &CheckArgs) -> anyhow::Result<()> {
    let fleet = Fleet::load(&args.config)?;
    let settings = Settings::resolve(cli, Some(&fleet));
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
        // The entry's own strategy, else the fleet's default when someone chose one.
        if let Some(b) = e.boot_strategy.or(settings
            .boot_strategy_chosen
            .then_some(settings.nova.boot_strategy))
        {
            println!("  boot_strategy   {b:?}");
        }
        println!("  console         {:?}", settings.console_for(e));
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
            && let Err(err) = crate::secrets::read_kg_file(k)
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
    if let Some(r) = &settings.redfish {
        let scheme = if r.insecure_http { "http" } else { "https" };
        println!("redfish {scheme}://{}/redfish/v1", r.addr);
        match (&r.cert_key, r.insecure_http) {
            (_, true) => println!("  tls             off (insecure_http)"),
            (Some((c, k)), false) => {
                println!("  tls             {} / {}", c.display(), k.display());
                if let Err(err) = crate::redfish::tls::server_config(c, k) {
                    wrong += 1;
                    println!("  WRONG: {file}: [redfish]: {err:#}");
                }
            }
            (None, false) => println!(
                "  tls             self-signed, kept in {}",
                r.state_dir.display()
            ),
        }
        println!("  session_timeout {} s", r.session_timeout.as_secs());
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
