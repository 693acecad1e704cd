//! `ovbmc cloud plan | apply | destroy --config FLEET`: read the host cloud (Neutron, and Nova
//! for server ids), plan with [`super::netplan`], print one change per line, and for `apply`
//! and `destroy` carry the operations out. The fleet's `[cloud.network]` section says what
//! is wanted (docs/configuration.md); the session is the Nova backend's (same clouds.yaml).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use reqwest::Method;
use serde_json::json;

use super::netplan::{self, Actual, DEFAULT_PAIR_LIMIT, Desired, Layout, Op, Plan, RuleWant};
use super::neutron::{Neutron, Resource, edit_pairs, is_stale, pair_limit_from};
use super::session::{Server, Service, Session};
use crate::cli::{BackendKind, Cli, CloudAction, CloudTarget};
use crate::config::{Fleet, NetworkSection};
use crate::settings::Settings;
use tracing::info;

/// How many times a pair update refused with 412 (the port changed since it was read) is
/// re-read and tried again before giving up: each retry means another writer won a race, so
/// a few are plenty unless something rewrites the port in a loop.
const STALE_RETRIES: u32 = 5;

/// Run `ovbmc cloud ACTION` (watch-addresses lives in `super::watch`).
pub async fn run(cli: &Cli, action: &CloudAction) -> anyhow::Result<()> {
    let (verb, t) = match action {
        CloudAction::Plan(t) => ("plan", t),
        CloudAction::Apply(t) => ("apply", t),
        CloudAction::Destroy(t) => ("destroy", t),
        CloudAction::WatchAddresses(args) => return super::watch::command(args).await,
    };
    let fleet = Fleet::load(&t.config)?;
    let Some(section) = fleet.cloud.network.clone() else {
        bail!(
            "{}: no [cloud.network] section: it says which network, ports and fleet name \
             `ovbmc cloud {verb}` works on (docs/configuration.md)",
            t.config.display()
        );
    };
    let settings = Settings::resolve(cli, Some(&fleet));
    let session = super::connect(&settings.nova).await?;
    let neutron = Neutron::new(session.clone())
        .await
        .context("ovbmc cloud needs Neutron (the catalog's network service)")?;
    let tag = netplan::marker(&section.fleet);
    let mut actual = tagged(&neutron, &tag).await?;
    let desired = if verb == "destroy" {
        Desired::nothing(&section.fleet)
    } else {
        desire(
            &neutron,
            &session,
            &fleet,
            &section,
            &settings,
            t,
            &mut actual,
        )
        .await?
    };
    let plan = netplan::plan(&desired, &actual)
        .map_err(|e| anyhow::anyhow!("{}: [cloud.network]: {e}", t.config.display()))?;
    print_plan(&plan, verb);
    if desired.layout == Layout::B && verb != "destroy" {
        let creating = plan
            .ops
            .iter()
            .filter(|o| matches!(o, Op::CreatePort { .. }))
            .count();
        match neutron.port_quota().await {
            Some((limit, used)) if limit >= 0 => {
                println!("# port quota: {used} of {limit} used, {creating} to create");
                if used + creating as i64 > limit {
                    bail!(
                        "the project's port quota ({limit}, {used} used) has no room for \
                         {creating} more ports"
                    );
                }
            }
            Some(_) => println!("# port quota: unlimited"),
            None => println!("# port quota: not readable (quota details refused or absent)"),
        }
    }
    if verb == "plan" {
        return Ok(());
    }
    if plan.is_empty() {
        println!("{verb}: nothing to do");
        return Ok(());
    }
    let n = plan.ops.len();
    for op in &plan.ops {
        execute(&neutron, &session, op).await.with_context(|| {
            format!("{verb}: stopped; run `ovbmc cloud plan` to see what is left")
        })?;
    }
    println!("{verb}: done ({n} API operations; {})", plan.summary());
    Ok(())
}

fn print_plan(plan: &Plan, verb: &str) {
    for c in &plan.changes {
        println!("{c}");
    }
    for w in &plan.warnings {
        println!("warning: {w}");
    }
    if plan.is_empty() {
        println!("# {verb}: nothing to do ({})", plan.summary());
    } else {
        println!("# {verb}: {}", plan.summary());
    }
}

/// Every port, subnet and security group that carries the fleet's marker.
async fn tagged(n: &Neutron, tag: &str) -> anyhow::Result<Actual> {
    let mut a = Actual::default();
    for p in n.list_ports(&[("tags", tag)]).await? {
        a.ports.insert(p.id.clone(), p);
    }
    for s in n.list_subnets(&[("tags", tag)]).await? {
        a.subnets.insert(s.id.clone(), s);
    }
    for g in n.list_security_groups(&[("tags", tag)]).await? {
        a.groups.insert(g.id.clone(), g);
    }
    Ok(a)
}

/// A Nova server by id or exact, unique name.
fn find_server<'a>(
    servers: &'a std::collections::HashMap<String, Server>,
    want: &str,
) -> anyhow::Result<&'a Server> {
    if let Some(s) = super::parse_uuid(want).and_then(|u| {
        servers
            .values()
            .find(|s| super::parse_uuid(&s.id) == Some(u))
    }) {
        return Ok(s);
    }
    let named: Vec<&Server> = servers.values().filter(|s| s.name == want).collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => bail!("no Nova server with the id or name {want:?}"),
        many => bail!("{} Nova servers are named {want:?}; use the id", many.len()),
    }
}

async fn desire(
    n: &Neutron,
    session: &Arc<Session>,
    fleet: &Fleet,
    s: &NetworkSection,
    settings: &Settings,
    t: &CloudTarget,
    a: &mut Actual,
) -> anyhow::Result<Desired> {
    let at = |what: &str| format!("{}: [cloud.network] {what}", t.config.display());
    let network = n
        .find_network(&s.network)
        .await
        .with_context(|| at("network"))?;
    let subnet = match &s.subnet {
        Some(x) => n.find_subnet(x).await.with_context(|| at("subnet"))?,
        None => {
            let v4: Vec<_> = n
                .list_subnets(&[("network_id", &network.id)])
                .await?
                .into_iter()
                .filter(|x| x.ip_version == 4)
                .collect();
            match <[_; 1]>::try_from(v4) {
                Ok([one]) => one,
                Err(v) => bail!(
                    "{}: network {} has {} IPv4 subnets; name one with `subnet`",
                    at("subnet"),
                    network.name,
                    v.len()
                ),
            }
        }
    };
    if subnet.network_id != network.id {
        bail!(
            "{}: subnet {} is not on network {}",
            at("subnet"),
            subnet.name,
            network.name
        );
    }
    // The addresses the BMC VM answers on: every BMC's, and the Redfish face's.
    let mut addresses: Vec<IpAddr> = Vec::new();
    for e in &fleet.bmcs {
        if !addresses.contains(&e.addr.ip()) {
            addresses.push(e.addr.ip());
        }
    }
    if let Some(r) = &settings.redfish
        && !r.addr.ip().is_unspecified()
        && !r.addr.ip().is_loopback()
        && !addresses.contains(&r.addr.ip())
    {
        addresses.push(r.addr.ip());
    }
    let layout = if s.layout_b() { Layout::B } else { Layout::A };
    let servers = session
        .list_servers()
        .await
        .context("cannot list the project's servers")?;
    let mut bmc_port = None;
    let mut bmc_server = None;
    let mut group_default = None;
    match layout {
        Layout::A => {
            let name = s.bmc_port.as_deref().unwrap_or_default();
            let p = n.find_port(name).await.with_context(|| at("bmc_port"))?;
            if p.network_id != network.id {
                bail!(
                    "{}: port {} is not on the provisioning network {}",
                    at("bmc_port"),
                    p.label(),
                    network.name
                );
            }
            group_default = p.security_groups.first().cloned();
            bmc_port = Some(p.id.clone());
            a.ports.insert(p.id.clone(), p);
        }
        Layout::B => {
            let name = s.bmc_server.as_deref().unwrap_or_default();
            let srv = find_server(&servers, name).with_context(|| at("bmc_server"))?;
            bmc_server = Some(srv.id.clone());
            // Ports already there with the addresses (ovbmc's or someone's).
            for p in n.list_ports(&[("network_id", &network.id)]).await? {
                if p.addresses().any(|x| addresses.contains(&x)) {
                    a.ports.insert(p.id.clone(), p);
                }
            }
        }
    }
    let security_group = match (&s.security_group, layout) {
        (Some(g), _) => Some(
            n.find_security_group(g)
                .await
                .with_context(|| at("security_group"))?,
        ),
        (None, Layout::A) => match group_default {
            Some(id) => Some(n.get_security_group(&id).await?),
            None => None,
        },
        (None, Layout::B) => {
            let project = session.project_id().await?.unwrap_or_default();
            let mut filters = vec![("name", "default")];
            if !project.is_empty() {
                filters.push(("project_id", project.as_str()));
            }
            let mut v = n.list_security_groups(&filters).await?;
            (v.len() == 1).then(|| v.remove(0))
        }
    };
    let mut rules = Vec::new();
    let ethertype = if subnet.ip_version == 6 {
        "IPv6"
    } else {
        "IPv4"
    };
    let ports: BTreeSet<u16> = fleet.bmcs.iter().map(|e| e.addr.port()).collect();
    for p in ports {
        rules.push(RuleWant {
            protocol: "udp".into(),
            port: p,
            remote: subnet.cidr.clone(),
            ethertype: ethertype.into(),
            why: "IPMI".into(),
        });
    }
    if let Some(r) = &settings.redfish {
        rules.push(RuleWant {
            protocol: "tcp".into(),
            port: r.addr.port(),
            remote: subnet.cidr.clone(),
            ethertype: ethertype.into(),
            why: "Redfish".into(),
        });
    }
    let security_group = security_group.map(|g| {
        let id = g.id.clone();
        a.groups.insert(id.clone(), g);
        id
    });
    if security_group.is_none() {
        println!(
            "# no security group to put the IPMI rules in (set security_group in \
             [cloud.network]); none planned"
        );
    }
    // The nodes' ports on the provisioning network.
    let mut boot_ports = Vec::new();
    for e in fleet.bmcs.iter().filter(|e| e.backend == BackendKind::Nova) {
        let srv = find_server(&servers, &e.instance).with_context(|| {
            format!(
                "{}: bmc #{} ({}): instance",
                t.config.display(),
                e.index,
                e.addr
            )
        })?;
        for p in n
            .list_ports(&[("device_id", &srv.id), ("network_id", &network.id)])
            .await?
        {
            boot_ports.push(p.id.clone());
            a.ports.insert(p.id.clone(), p);
        }
    }
    let undercloud = match &s.undercloud_port {
        None => None,
        Some(u) => {
            let p = n
                .find_port(u)
                .await
                .with_context(|| at("undercloud_port"))?;
            let addr = match s.undercloud_address {
                Some(x) => x,
                None => p
                    .fixed_ips
                    .iter()
                    .filter(|f| f.subnet_id == subnet.id)
                    .find_map(|f| f.ip_address.parse().ok())
                    .with_context(|| {
                        format!(
                            "{}: port {} has no address on subnet {}; set undercloud_address",
                            at("undercloud_port"),
                            p.label(),
                            subnet.name
                        )
                    })?,
            };
            let id = p.id.clone();
            a.ports.insert(id.clone(), p);
            Some((id, addr))
        }
    };
    let subnet_per_port = layout == Layout::B && s.subnet_per_port.unwrap_or(false);
    if subnet_per_port {
        // Every subnet of the network, so that the plan sees an overlap Neutron would refuse
        // (and finds the subnets per port it made before).
        for x in n.list_subnets(&[("network_id", &network.id)]).await? {
            a.subnets.insert(x.id.clone(), x);
        }
    }
    let subnet_id = subnet.id.clone();
    a.subnets.insert(subnet.id.clone(), subnet);
    let pair_limit = s.max_address_pairs.unwrap_or(DEFAULT_PAIR_LIMIT);
    if layout == Layout::A {
        println!(
            "# allowed address pairs per port: Neutron's max_allowed_address_pair is not in the \
             API; assuming {pair_limit}{}",
            if s.max_address_pairs.is_some() {
                " (max_address_pairs)"
            } else {
                " (Neutron's default; max_address_pairs in [cloud.network] says otherwise)"
            }
        );
    }
    Ok(Desired {
        fleet: s.fleet.clone(),
        layout,
        addresses,
        bmc_port,
        bmc_server,
        subnet_per_port,
        port_subnet_prefix: s.port_subnet_prefix,
        network_id: network.id.clone(),
        subnet_id,
        mtu: network.mtu,
        allow_small_mtu: t.allow_small_mtu || s.allow_small_mtu.unwrap_or(false),
        security_group,
        rules,
        boot_ports,
        ipxe_file: undercloud
            .as_ref()
            .map(|_| s.ipxe_file.clone().unwrap_or_else(|| "boot.ipxe".into())),
        metadata_route: undercloud.is_some() && s.metadata_route.unwrap_or(true),
        undercloud,
        pair_limit,
    })
}

async fn execute(n: &Neutron, session: &Session, op: &Op) -> anyhow::Result<()> {
    match op {
        Op::AddTag(r, id, t) => n
            .add_tag(*r, id, t)
            .await
            .with_context(|| format!("{} {id}: tag {t}", r.noun()))?,
        Op::RemoveTag(r, id, t) => n
            .remove_tag(*r, id, t)
            .await
            .with_context(|| format!("{} {id}: untag {t}", r.noun()))?,
        Op::SetPairs {
            port,
            pairs,
            revision,
            add,
            remove,
        } => {
            let mut pairs = pairs.clone();
            let mut revision = *revision;
            let mut tries = 0;
            let result = loop {
                match n.update_port_pairs(port, &pairs, revision).await {
                    // Someone changed the port between the plan's read and this write
                    // (If-Match, see neutron.rs): the same change again, on what is there now.
                    Err(e) if is_stale(&e) && tries < STALE_RETRIES => {
                        tries += 1;
                        info!("port {port}: changed since it was read (412); reading it again");
                        let now = n
                            .get_port(port)
                            .await
                            .with_context(|| format!("port {port}: re-read after a 412"))?;
                        pairs = edit_pairs(&now.allowed_address_pairs, add, remove);
                        revision = now.revision_number;
                    }
                    other => break other,
                }
            };
            if let Err(e) = result {
                if let Some(limit) = pair_limit_from(&e) {
                    bail!(
                        "port {port}: Neutron allows at most {limit} allowed address pairs per \
                         port (max_allowed_address_pair) and this port would have {}: use \
                         layout B, or set max_address_pairs = {limit} in [cloud.network] to \
                         see it in the plan ({e})",
                        pairs.len()
                    );
                }
                return Err(e).with_context(|| format!("port {port}: allowed_address_pairs"));
            }
        }
        Op::SetDhcp { port, opts } => {
            n.update_port_dhcp_opts(port, opts)
                .await
                .with_context(|| format!("port {port}: extra_dhcp_opts"))?;
        }
        Op::SetRoutes { subnet, routes } => {
            n.update_subnet_routes(subnet, routes)
                .await
                .with_context(|| format!("subnet {subnet}: host_routes"))?;
        }
        Op::CreateRule(r) => {
            n.create_rule(r)
                .await
                .with_context(|| format!("security group {}: rule", r.security_group_id))?;
        }
        Op::DeleteRule(id) => n
            .delete_rule(id)
            .await
            .with_context(|| format!("security group rule {id}"))?,
        Op::CreatePort { port, tags, attach } => {
            let p = n
                .create_port(port)
                .await
                .with_context(|| format!("port {}", port.name))?;
            for t in tags {
                n.add_tag(Resource::Port, &p.id, t)
                    .await
                    .with_context(|| format!("port {}: tag {t}", p.id))?;
            }
            if let Some(s) = attach {
                attach_port(session, s, &p.id).await?;
            }
        }
        Op::Attach { server, port } => attach_port(session, server, port).await?,
        Op::Detach { server, port } => {
            // Nova "Detach Interface": DELETE /servers/{id}/os-interface/{port_id}; 404 (not
            // attached any more, or the server is gone) counts as done.
            match session
                .call(
                    "Nova interface detach",
                    Method::DELETE,
                    Service::Compute,
                    &format!("/servers/{server}/os-interface/{port}"),
                    None,
                )
                .await
            {
                Ok(_) | Err(super::CloudError::Http { status: 404, .. }) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("server {server}: detach port {port}"));
                }
            }
            detached(n, port).await?;
        }
        Op::DeletePort(id) => n
            .delete_port(id)
            .await
            .with_context(|| format!("port {id}: delete"))?,
        Op::CreateSubnet { subnet, tags } => {
            let made = n
                .create_subnet(subnet)
                .await
                .with_context(|| format!("subnet {} {}", subnet.name, subnet.cidr))?;
            for t in tags {
                n.add_tag(Resource::Subnet, &made.id, t)
                    .await
                    .with_context(|| format!("subnet {}: tag {t}", made.id))?;
            }
        }
        Op::DeleteSubnet(id) => n
            .delete_subnet(id)
            .await
            .with_context(|| format!("subnet {id}: delete"))?,
    }
    Ok(())
}

/// How long a detach may take to reach Neutron.
const DETACH_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Wait until Nova has unbound `port` (its `device_id` empty, or the port gone). Nova's
/// detach answers 202 and unbinds the port later, from the compute service; until then
/// Neutron's policy refuses a project member the delete of a port a server owns
/// (`rule:delete_port is disallowed by policy`, seen against the lab's Neutron).
async fn detached(n: &Neutron, port: &str) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + DETACH_WAIT;
    loop {
        match n.get_port(port).await {
            Ok(p) if p.device_id.is_empty() => return Ok(()),
            Err(super::CloudError::Http { status: 404, .. }) => return Ok(()),
            Ok(_) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Ok(p) => bail!(
                "port {port}: still attached to server {} {}s after Nova's detach; see the \
                 server's instance actions (`openstack server event list`)",
                p.device_id,
                DETACH_WAIT.as_secs()
            ),
            Err(e) => return Err(e).with_context(|| format!("port {port}: read after detach")),
        }
    }
}

/// Nova "Create Interface": `POST /servers/{id}/os-interface` with the port.
async fn attach_port(session: &Session, server: &str, port: &str) -> anyhow::Result<()> {
    session
        .call(
            "Nova interface attach",
            Method::POST,
            Service::Compute,
            &format!("/servers/{server}/os-interface"),
            Some(&json!({ "interfaceAttachment": { "port_id": port } })),
        )
        .await
        .with_context(|| format!("server {server}: attach port {port}"))?;
    Ok(())
}
