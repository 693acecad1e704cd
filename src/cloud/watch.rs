//! `ovbmc cloud watch-addresses --port PORT [--interface IF]` (issue 14 item 2): on a node
//! that may hold virtual IPs (an HA controller's VIPs under pacemaker/keepalived, the
//! undercloud's `169.254.169.254`), keep the Neutron port's `allowed_address_pairs` in step
//! with the host's addresses, so that Neutron's port security lets the traffic of an address
//! that moved to this node through.
//!
//! * **What it follows**: the host's addresses (netlink, [`crate::net::netlink::address_events`]
//!   and a re-read on each notification and every `--resync-secs`), on `--interface` or on
//!   every interface but loopback; link-local, loopback and multicast addresses are never
//!   added (Neutron allows a port's link-local traffic by itself).
//! * **What it changes**: only pairs it added. It adds a pair (`ip_address` only, so Neutron
//!   takes the port's MAC: Neutron API reference, "Update port", `allowed_address_pairs`) for
//!   an address the port does not already allow (its `fixed_ips`, or a pair covering it); it
//!   removes a pair when its address leaves the host only if it added that pair. Which pairs
//!   those are is kept in `--state-file`, written before a pair is added (so a crash between
//!   the PUT and the write cannot leave a pair it would not know it added) and after one is
//!   removed; a restart reads it, and then removes the pairs of addresses that left while it
//!   was down. Pairs anyone else set are never removed, and at exit nothing is removed (the
//!   address may still be here).
//! * **Rate**: notifications are debounced (`--settle-ms`), and changes are at most one PUT per
//!   `--min-interval-ms`; Neutron replaces the list whole (a GET, then a PUT with the list read,
//!   changed).
//! * **Cloud down**: a failed GET or PUT is logged and retried with exponential backoff (1 s to
//!   60 s), each time from the host's addresses *now*, so it converges to the present state
//!   when the cloud is back, however many changes happened meanwhile.
//!
//! The decision is the pure [`reconcile`]; the Neutron calls go through [`PortPairs`].
//! [`NeutronPort`] is a minimal client for the two calls needed (Neutron API v2.0 "Show port
//! details" `GET /v2.0/ports/{port_id}` and "Update port" `PUT /v2.0/ports/{port_id}`).

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{info, warn};

use super::CloudError;
use super::session::{Service, Session, SessionOptions};
use crate::net::IfAddr;

/// One entry of a port's `allowed_address_pairs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// An address or a CIDR.
    pub ip_address: String,
    /// The MAC it may come from (Neutron fills in the port's own when none is sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

impl Pair {
    /// Does this pair allow `ip` (the address itself, or a CIDR holding it)?
    pub fn covers(&self, ip: IpAddr) -> bool {
        let (addr, len) = match self.ip_address.split_once('/') {
            Some((a, l)) => (a, l.parse::<u8>().ok()),
            None => (self.ip_address.as_str(), None),
        };
        let Ok(net) = addr.parse::<IpAddr>() else {
            return false;
        };
        match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let l = u32::from(len.unwrap_or(32).min(32));
                let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let l = u32::from(len.unwrap_or(128).min(128));
                let mask = if l == 0 { 0 } else { u128::MAX << (128 - l) };
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }

    /// Is this exactly the pair for `ip` (`ADDR`, `ADDR/32` or `ADDR/128`), as this command
    /// writes it?
    pub fn is_exactly(&self, ip: IpAddr) -> bool {
        let host = if ip.is_ipv4() { "32" } else { "128" };
        match self.ip_address.split_once('/') {
            Some((a, l)) => l == host && a.parse::<IpAddr>().ok() == Some(ip),
            None => self.ip_address.parse::<IpAddr>().ok() == Some(ip),
        }
    }
}

/// What the port says now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortView {
    /// `allowed_address_pairs`.
    pub pairs: Vec<Pair>,
    /// The addresses of `fixed_ips` (allowed anyway).
    pub fixed: Vec<IpAddr>,
}

/// What to do: the new pair list (if it changes), and the set of addresses this command
/// added, after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The whole list to PUT, or `None` when nothing changes.
    pub pairs: Option<Vec<Pair>>,
    /// Addresses that get a pair.
    pub add: Vec<IpAddr>,
    /// Addresses whose pair (ours) goes.
    pub remove: Vec<IpAddr>,
    /// The pairs this command added, once the PUT succeeded.
    pub ours: BTreeSet<IpAddr>,
}

/// The one decision: given the port, the host's addresses and the pairs this command added,
/// what the port's pairs should be. Someone else's pair is kept whatever happens; ours goes
/// when its address has left the host (and is re-added if it was removed while the address is
/// still here).
pub fn reconcile(port: &PortView, host: &BTreeSet<IpAddr>, ours: &BTreeSet<IpAddr>) -> Plan {
    let gone: BTreeSet<IpAddr> = ours.difference(host).copied().collect();
    let mut remove = Vec::new();
    let mut pairs: Vec<Pair> = Vec::with_capacity(port.pairs.len());
    for p in &port.pairs {
        match gone.iter().find(|a| p.is_exactly(**a)) {
            Some(a) => {
                if !remove.contains(a) {
                    remove.push(*a);
                }
            }
            None => pairs.push(p.clone()),
        }
    }
    let add: Vec<IpAddr> = host
        .iter()
        .copied()
        .filter(|a| !port.fixed.contains(a) && !pairs.iter().any(|p| p.covers(*a)))
        .collect();
    pairs.extend(add.iter().map(|a| Pair {
        ip_address: a.to_string(),
        mac_address: None,
    }));
    let ours_after: BTreeSet<IpAddr> = ours
        .intersection(host)
        .copied()
        .chain(add.iter().copied())
        .collect();
    let changed = !add.is_empty() || !remove.is_empty();
    Plan {
        pairs: changed.then_some(pairs),
        add,
        remove,
        ours: ours_after,
    }
}

/// The host addresses to follow: on `interface` (or every interface but `lo`), without
/// loopback, link-local, multicast and unspecified addresses.
pub fn followed(addrs: &[IfAddr], interface: Option<&str>) -> BTreeSet<IpAddr> {
    addrs
        .iter()
        .filter(|a| match interface {
            Some(i) => a.ifname == i,
            None => a.ifname != "lo",
        })
        .map(|a| a.cidr.addr)
        .filter(|ip| !ignored(*ip))
        .collect()
}

fn ignored(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            v.is_loopback() || v.is_link_local() || v.is_multicast() || v.is_unspecified()
        }
        // fe80::/10 (RFC 4291 §2.5.6).
        IpAddr::V6(v) => {
            v.is_loopback()
                || v.is_multicast()
                || v.is_unspecified()
                || (v.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The two Neutron calls the watcher needs, behind a trait so that the loop is tested
/// against a fake and can later run on the project's full Neutron client.
pub trait PortPairs: Send + Sync {
    /// Read the port (`GET /v2.0/ports/{id}`).
    fn get(&self) -> impl Future<Output = Result<PortView, CloudError>> + Send;
    /// Replace its `allowed_address_pairs` (`PUT /v2.0/ports/{id}`).
    fn put(&self, pairs: &[Pair]) -> impl Future<Output = Result<(), CloudError>> + Send;
}

/// [`PortPairs`] through the Keystone session (catalog type `network`).
pub struct NeutronPort {
    session: Arc<Session>,
    port: String,
}

impl NeutronPort {
    /// The port `port` (its id) on `session`.
    pub fn new(session: Arc<Session>, port: &str) -> Self {
        Self {
            session,
            port: port.to_string(),
        }
    }

    async fn path(&self) -> Result<String, CloudError> {
        // The catalog's network URL is usually unversioned (http://neutron:9696); some end in
        // /v2.0.
        let base = self.session.endpoint(Service::Network).await?;
        let prefix = if base.trim_end_matches('/').ends_with("/v2.0") {
            ""
        } else {
            "/v2.0"
        };
        let base = base.trim_end_matches('/');
        Ok(format!("{base}{prefix}/ports/{}", self.port))
    }
}

impl PortPairs for NeutronPort {
    async fn get(&self) -> Result<PortView, CloudError> {
        let path = self.path().await?;
        let v = self
            .session
            .call(
                "Neutron port show",
                Method::GET,
                Service::Network,
                &path,
                None,
            )
            .await?;
        port_view(&v).ok_or_else(|| CloudError::Decode {
            what: "Neutron port show".into(),
            message: "no port.allowed_address_pairs in the answer".into(),
        })
    }

    async fn put(&self, pairs: &[Pair]) -> Result<(), CloudError> {
        let path = self.path().await?;
        let body = json!({"port": {"allowed_address_pairs": pairs}});
        self.session
            .call(
                "Neutron port update",
                Method::PUT,
                Service::Network,
                &path,
                Some(&body),
            )
            .await
            .map(|_| ())
    }
}

/// A "Show port details" answer's pairs and fixed addresses.
fn port_view(v: &Value) -> Option<PortView> {
    let p = v.get("port")?;
    let pairs = serde_json::from_value(p.get("allowed_address_pairs")?.clone()).ok()?;
    let fixed = p
        .get("fixed_ips")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|f| f.get("ip_address")?.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    Some(PortView { pairs, fixed })
}

/// The state file: the port, and the addresses whose pair this command added.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    port: String,
    added: BTreeSet<IpAddr>,
}

fn read_state(path: &Path, port: &str) -> anyhow::Result<BTreeSet<IpAddr>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let st: State = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a watch-addresses state file", path.display()))?;
    if st.port != port {
        anyhow::bail!(
            "{} belongs to port {}, not {port}: give each port its own --state-file",
            path.display(),
            st.port
        );
    }
    Ok(st.added)
}

/// Replace the state file whole (a new file renamed over the old one, so a crash leaves one
/// or the other).
fn write_state(path: &Path, port: &str, added: &BTreeSet<IpAddr>) -> anyhow::Result<()> {
    let st = State {
        port: port.to_string(),
        added: added.clone(),
    };
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(&st)?;
    std::fs::write(&tmp, text + "\n")
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
}

/// The watcher's settings.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// The Neutron port id.
    pub port: String,
    /// Only this interface's addresses.
    pub interface: Option<String>,
    /// Where the pairs this command added are kept.
    pub state_file: PathBuf,
    /// Quiet time after a notification before acting.
    pub settle: Duration,
    /// Least time between two changes of the port.
    pub min_interval: Duration,
    /// Re-read and reconcile at least this often without a notification.
    pub resync: Duration,
}

/// The backoff after a failed attempt: 1 s, doubled each time, at most 60 s.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Run until `stop` resolves: follow the host through netlink, reconcile through `api`.
pub async fn run<P: PortPairs>(
    api: &P,
    opts: &WatchOptions,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut ours = read_state(&opts.state_file, &opts.port)?;
    // A writable state file is a start-up check, not something to find out at the first add.
    write_state(&opts.state_file, &opts.port, &ours)?;
    let mut events = crate::net::netlink::address_events()
        .context("cannot follow the host's addresses (netlink)")?;
    info!(
        port = %opts.port,
        interface = opts.interface.as_deref().unwrap_or("(all but lo)"),
        state_file = %opts.state_file.display(),
        added_before = ours.len(),
        "watch-addresses: following the host's addresses"
    );
    let mut stop = std::pin::pin!(stop);
    let mut wait = Duration::ZERO;
    let mut backoff = BACKOFF_FIRST;
    let mut failing = false;
    let mut not_before = Instant::now();
    loop {
        let deadline = Instant::now() + wait;
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep_until(deadline) => {}
            ev = events.recv(), if !failing => {
                if ev.is_none() {
                    anyhow::bail!("the netlink address monitor ended");
                }
                // Debounce: a VIP move is often several changes (address, then DAD, ...).
                tokio::time::sleep(opts.settle).await;
            }
        }
        while events.try_recv().is_ok() {}
        tokio::time::sleep_until(not_before).await;
        match attempt(api, opts, &mut ours).await {
            Ok(changed) => {
                if failing {
                    info!(port = %opts.port, "watch-addresses: the cloud answers again; port in step");
                }
                failing = false;
                backoff = BACKOFF_FIRST;
                wait = opts.resync;
                if changed {
                    not_before = Instant::now() + opts.min_interval;
                }
            }
            Err(e) => {
                warn!(
                    port = %opts.port,
                    retry_in_secs = backoff.as_secs(),
                    "watch-addresses: {e:#}"
                );
                failing = true;
                wait = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// One read-decide-write round; `Ok(true)` when the port was changed.
async fn attempt<P: PortPairs>(
    api: &P,
    opts: &WatchOptions,
    ours: &mut BTreeSet<IpAddr>,
) -> anyhow::Result<bool> {
    let st = tokio::task::spawn_blocking(|| {
        use crate::net::NetOps as _;
        crate::net::netlink::Netlink::new().state(&[])
    })
    .await
    .context("the netlink reader stopped")?
    .context("reading the host's addresses")?;
    let host = followed(&st.addrs, opts.interface.as_deref());
    let port = api.get().await.context("reading the port")?;
    let plan = reconcile(&port, &host, ours);
    let Some(pairs) = &plan.pairs else {
        if plan.ours != *ours {
            // Ours that left the host and whose pair someone else already removed.
            *ours = plan.ours;
            write_state(&opts.state_file, &opts.port, ours)?;
        }
        return Ok(false);
    };
    // Before the PUT: every pair about to be added is recorded as ours (see the module docs).
    let intent: BTreeSet<IpAddr> = ours.union(&plan.ours).copied().collect();
    write_state(&opts.state_file, &opts.port, &intent)?;
    *ours = intent;
    api.put(pairs)
        .await
        .context("updating allowed_address_pairs")?;
    for a in &plan.add {
        info!(port = %opts.port, address = %a, "watch-addresses: pair added (the address is on this host)");
    }
    for a in &plan.remove {
        info!(port = %opts.port, address = %a, "watch-addresses: pair removed (the address left this host)");
    }
    *ours = plan.ours;
    write_state(&opts.state_file, &opts.port, ours)?;
    Ok(true)
}

/// `ovbmc cloud watch-addresses`: build the session and run until SIGTERM/SIGINT.
pub async fn command(args: &crate::cli::WatchAddressesArgs) -> anyhow::Result<()> {
    let env = super::config::process_env();
    let cfg = super::config::load(
        args.os_cloud.as_deref(),
        args.os_client_config_file.as_deref(),
        &env,
    )?;
    let mut cfg = cfg;
    if let Some(r) = &args.os_region_name {
        cfg.region = Some(r.clone());
    }
    let opts = SessionOptions {
        request_timeout: Duration::from_secs(args.timeout_secs.max(1)),
        ..SessionOptions::default()
    };
    // No Keystone request here: the first attempt authenticates, and a cloud that is down at
    // start is retried like one that goes down later.
    let session = Arc::new(Session::new(cfg, opts)?);
    let state_file = match &args.state_file {
        Some(f) => f.clone(),
        None => {
            let dir = std::env::var_os("STATE_DIRECTORY")
                .and_then(|v| {
                    v.to_str()
                        .and_then(|s| s.split(':').next())
                        .map(PathBuf::from)
                })
                .unwrap_or_else(|| "/var/lib/ovbmc".into());
            dir.join(format!("watch-addresses-{}.json", args.port))
        }
    };
    if super::parse_uuid(&args.port).is_none() {
        anyhow::bail!(
            "--port {:?}: give the port's id (`openstack port show NAME -f value -c id`)",
            args.port
        );
    }
    let w = WatchOptions {
        port: args.port.clone(),
        interface: args.interface.clone(),
        state_file,
        settle: Duration::from_millis(args.settle_ms),
        min_interval: Duration::from_millis(args.min_interval_ms),
        resync: Duration::from_secs(args.resync_secs),
    };
    let api = NeutronPort::new(session, &args.port);
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("watch-addresses: stopping (pairs are left as they are)");
    };
    run(&api, &w, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn set(v: &[&str]) -> BTreeSet<IpAddr> {
        v.iter().map(|s| ip(s)).collect()
    }
    fn pair(s: &str) -> Pair {
        Pair {
            ip_address: s.into(),
            mac_address: None,
        }
    }
    fn port(pairs: &[&str]) -> PortView {
        PortView {
            pairs: pairs.iter().map(|p| pair(p)).collect(),
            fixed: vec![ip("10.0.0.5")],
        }
    }

    #[test]
    fn a_new_address_gets_a_pair_others_pairs_are_kept() {
        let p = port(&["198.51.100.99"]);
        let plan = reconcile(&p, &set(&["10.0.0.5", "192.0.2.10"]), &set(&[]));
        assert_eq!(plan.add, [ip("192.0.2.10")]);
        assert!(plan.remove.is_empty());
        assert_eq!(
            plan.pairs.unwrap(),
            [pair("198.51.100.99"), pair("192.0.2.10")]
        );
        assert_eq!(plan.ours, set(&["192.0.2.10"]));
    }

    #[test]
    fn only_our_pairs_are_removed_when_their_address_goes() {
        // 198.51.100.99 is someone else's and not on the host: kept. 192.0.2.10 is ours and
        // gone: removed, written as /32 or bare.
        let p = port(&["198.51.100.99", "192.0.2.10/32", "2001:db8::10"]);
        let plan = reconcile(
            &p,
            &set(&["2001:db8::10"]),
            &set(&["192.0.2.10", "2001:db8::10"]),
        );
        assert_eq!(plan.remove, [ip("192.0.2.10")]);
        assert!(plan.add.is_empty());
        assert_eq!(
            plan.pairs.unwrap(),
            [pair("198.51.100.99"), pair("2001:db8::10")]
        );
        assert_eq!(plan.ours, set(&["2001:db8::10"]));
    }

    #[test]
    fn in_step_is_no_change() {
        let p = port(&["198.51.100.99", "192.0.2.10"]);
        let plan = reconcile(&p, &set(&["192.0.2.10", "10.0.0.5"]), &set(&["192.0.2.10"]));
        assert_eq!(plan.pairs, None);
        assert_eq!(plan.ours, set(&["192.0.2.10"]));
    }

    #[test]
    fn an_address_already_allowed_is_not_ours() {
        // Covered by someone's CIDR pair or by the fixed IP: nothing to add, and never ours
        // (so never removed either).
        let p = port(&["192.0.2.0/24"]);
        let plan = reconcile(&p, &set(&["192.0.2.10", "10.0.0.5"]), &set(&[]));
        assert_eq!(plan.pairs, None);
        assert!(plan.ours.is_empty());
        // Someone else's exact pair for an address that then leaves: kept.
        let p = port(&["192.0.2.10"]);
        let plan = reconcile(&p, &set(&[]), &set(&[]));
        assert_eq!(plan.pairs, None);
    }

    #[test]
    fn our_pair_removed_by_hand_is_added_again_and_gone_ones_are_forgotten() {
        let p = port(&[]);
        let plan = reconcile(
            &p,
            &set(&["192.0.2.10"]),
            &set(&["192.0.2.10", "192.0.2.11"]),
        );
        assert_eq!(plan.add, [ip("192.0.2.10")]);
        assert_eq!(plan.ours, set(&["192.0.2.10"]));
        // Ours, gone from the host, pair already gone: no PUT, just forgotten.
        let plan = reconcile(&p, &set(&[]), &set(&["192.0.2.11"]));
        assert_eq!(plan.pairs, None);
        assert!(plan.ours.is_empty());
    }

    #[test]
    fn covers_and_exactly() {
        assert!(pair("192.0.2.0/24").covers(ip("192.0.2.77")));
        assert!(!pair("192.0.2.0/24").covers(ip("192.0.3.1")));
        assert!(pair("2001:db8::/64").covers(ip("2001:db8::1")));
        assert!(!pair("2001:db8::/64").covers(ip("192.0.2.1")));
        assert!(pair("0.0.0.0/0").covers(ip("203.0.113.1")));
        assert!(pair("192.0.2.1/32").is_exactly(ip("192.0.2.1")));
        assert!(!pair("192.0.2.0/24").is_exactly(ip("192.0.2.0")));
        assert!(!pair("garbage").covers(ip("192.0.2.1")));
    }

    #[test]
    fn followed_addresses() {
        use crate::net::Cidr;
        let a = |ifname: &str, addr: &str| IfAddr {
            ifindex: 1,
            ifname: ifname.into(),
            cidr: Cidr {
                addr: ip(addr),
                prefix: 24,
            },
        };
        let addrs = [
            a("lo", "127.0.0.1"),
            a("eth0", "192.0.2.10"),
            a("eth0", "fe80::1"),
            a("eth0", "169.254.1.1"),
            a("eth1", "198.51.100.1"),
            a("eth1", "2001:db8::1"),
        ];
        assert_eq!(
            followed(&addrs, None),
            set(&["192.0.2.10", "198.51.100.1", "2001:db8::1"])
        );
        assert_eq!(followed(&addrs, Some("eth0")), set(&["192.0.2.10"]));
    }

    #[test]
    fn port_view_reads_neutron_show() {
        let v = json!({"port": {"id": "p", "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.5"}],
            "allowed_address_pairs": [{"ip_address": "192.0.2.10", "mac_address": "fa:16:3e:00:00:01"}]}});
        let p = port_view(&v).unwrap();
        assert_eq!(p.fixed, [ip("10.0.0.5")]);
        assert_eq!(p.pairs[0].mac_address.as_deref(), Some("fa:16:3e:00:00:01"));
        assert!(port_view(&json!({"port": {}})).is_none());
    }

    #[test]
    fn state_file_round_trip_and_wrong_port() {
        let dir = std::env::temp_dir().join(format!("ovbmc-watch-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s.json");
        assert!(read_state(&f, "p1").unwrap().is_empty());
        write_state(&f, "p1", &set(&["192.0.2.10", "2001:db8::10"])).unwrap();
        assert_eq!(
            read_state(&f, "p1").unwrap(),
            set(&["192.0.2.10", "2001:db8::10"])
        );
        let e = read_state(&f, "p2").unwrap_err().to_string();
        assert!(e.contains("belongs to port p1"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
