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
//!   changed, and the `revision_number` read as `If-Match`: a port someone changed in between
//!   is refused with 412, re-read and decided again, so no one's pair is lost to the race;
//!   see [`super::neutron`]).
//! * **Cloud down**: a failed GET or PUT is logged and retried with exponential backoff (1 s to
//!   60 s), each time from the host's addresses *now*, so it converges to the present state
//!   when the cloud is back, however many changes happened meanwhile.
//!
//! The decision is the pure [`reconcile`]; the Neutron calls go through [`PortPairs`], which
//! [`NeutronPort`] implements on the project's Neutron client ([`super::neutron::Neutron`]:
//! "Show port details" and "Update port").

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{info, warn};

use super::CloudError;
use super::neutron::{AddressPair, Neutron, Port, is_stale};
use super::session::{Session, SessionOptions};
use crate::net::IfAddr;

/// What the port says now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortView {
    /// `allowed_address_pairs`.
    pub pairs: Vec<AddressPair>,
    /// The addresses of `fixed_ips` (allowed anyway).
    pub fixed: Vec<IpAddr>,
    /// `revision_number` as read (`None`: the cloud has no revisions).
    pub revision: Option<u64>,
}

impl From<&Port> for PortView {
    fn from(p: &Port) -> Self {
        Self {
            pairs: p.allowed_address_pairs.clone(),
            fixed: p.addresses().collect(),
            revision: p.revision_number,
        }
    }
}

/// What to do: the new pair list (if it changes), and the set of addresses this command
/// added, after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The whole list to PUT, or `None` when nothing changes.
    pub pairs: Option<Vec<AddressPair>>,
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
    let mut pairs: Vec<AddressPair> = Vec::with_capacity(port.pairs.len());
    for p in &port.pairs {
        match gone.iter().find(|a| p.is_address(**a)) {
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
    pairs.extend(add.iter().map(|a| AddressPair::of(*a)));
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
/// against a fake; [`NeutronPort`] is the real one.
pub trait PortPairs: Send + Sync {
    /// Read the port (`GET /v2.0/ports/{id}`).
    fn get(&self) -> impl Future<Output = Result<PortView, CloudError>> + Send;
    /// Replace its `allowed_address_pairs` (`PUT /v2.0/ports/{id}`), only if its revision is
    /// still `revision` (else a 412, [`is_stale`]).
    fn put(
        &self,
        pairs: &[AddressPair],
        revision: Option<u64>,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
}

/// [`PortPairs`] on the project's Neutron client, for one port.
pub struct NeutronPort {
    neutron: Neutron,
    port: String,
}

impl NeutronPort {
    /// The port `port` (its id) on `session`; no request is sent before the first call.
    pub fn new(session: Arc<Session>, port: &str) -> Self {
        Self {
            neutron: Neutron::lazy(session),
            port: port.to_string(),
        }
    }
}

impl PortPairs for NeutronPort {
    async fn get(&self) -> Result<PortView, CloudError> {
        Ok(PortView::from(&self.neutron.get_port(&self.port).await?))
    }

    async fn put(&self, pairs: &[AddressPair], revision: Option<u64>) -> Result<(), CloudError> {
        self.neutron
            .update_port_pairs(&self.port, pairs, revision)
            .await
            .map(|_| ())
    }
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
    converge(api, opts, &host, ours).await
}

/// How many 412s (the port changed between our GET and PUT) in one round before it counts
/// as a failed attempt (and is retried with backoff).
const STALE_RETRIES: u32 = 5;

/// Bring the port in step with `host`: read, decide, write with `If-Match`, and on a 412 read
/// and decide again.
async fn converge<P: PortPairs>(
    api: &P,
    opts: &WatchOptions,
    host: &BTreeSet<IpAddr>,
    ours: &mut BTreeSet<IpAddr>,
) -> anyhow::Result<bool> {
    let mut tries = 0;
    let plan = loop {
        let port = api.get().await.context("reading the port")?;
        let plan = reconcile(&port, host, ours);
        let Some(pairs) = &plan.pairs else {
            if plan.ours != *ours {
                // Ours that left the host and whose pair someone else already removed.
                *ours = plan.ours;
                write_state(&opts.state_file, &opts.port, ours)?;
            }
            return Ok(false);
        };
        // Before the PUT: every pair about to be added is recorded as ours (see the module
        // docs).
        let intent: BTreeSet<IpAddr> = ours.union(&plan.ours).copied().collect();
        write_state(&opts.state_file, &opts.port, &intent)?;
        *ours = intent;
        match api.put(pairs, port.revision).await {
            Ok(()) => break plan,
            Err(e) if is_stale(&e) && tries < STALE_RETRIES => {
                tries += 1;
                info!(port = %opts.port, "watch-addresses: the port changed since it was read (412); reading it again");
            }
            Err(e) => return Err(e).context("updating allowed_address_pairs"),
        }
    };
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
    let cfg = args.cloud.load()?;
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
    fn pair(s: &str) -> AddressPair {
        AddressPair {
            ip_address: s.into(),
            mac_address: None,
        }
    }
    fn port(pairs: &[&str]) -> PortView {
        PortView {
            pairs: pairs.iter().map(|p| pair(p)).collect(),
            fixed: vec![ip("10.0.0.5")],
            revision: Some(1),
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
        assert!(pair("192.0.2.1/32").is_address(ip("192.0.2.1")));
        assert!(!pair("192.0.2.0/24").is_address(ip("192.0.2.0")));
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
        let v = serde_json::json!({"id": "p", "revision_number": 7,
            "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.5"}],
            "allowed_address_pairs": [{"ip_address": "192.0.2.10", "mac_address": "fa:16:3e:00:00:01"}]});
        let p: Port = serde_json::from_value(v).unwrap();
        let p = PortView::from(&p);
        assert_eq!(p.fixed, [ip("10.0.0.5")]);
        assert_eq!(p.revision, Some(7));
        assert_eq!(p.pairs[0].mac_address.as_deref(), Some("fa:16:3e:00:00:01"));
    }

    /// A port that behaves like Neutron with `If-Match`: a PUT with a revision other than
    /// the port's is refused with 412; the first PUT finds that "someone else" added a pair
    /// after our GET.
    struct Racy {
        port: std::sync::Mutex<PortView>,
        race_once: std::sync::atomic::AtomicBool,
        puts: std::sync::atomic::AtomicU32,
    }

    impl PortPairs for Racy {
        async fn get(&self) -> Result<PortView, CloudError> {
            Ok(self.port.lock().unwrap().clone())
        }
        async fn put(&self, pairs: &[AddressPair], rev: Option<u64>) -> Result<(), CloudError> {
            use std::sync::atomic::Ordering;
            self.puts.fetch_add(1, Ordering::SeqCst);
            let mut p = self.port.lock().unwrap();
            if self.race_once.swap(false, Ordering::SeqCst) {
                p.pairs.push(pair("198.51.100.7"));
                p.revision = p.revision.map(|r| r + 1);
            }
            if rev != p.revision {
                return Err(CloudError::Http {
                    what: "Neutron port update".into(),
                    status: 412,
                    message: "Constrained to 1, but current revision is 2".into(),
                });
            }
            p.pairs = pairs.to_vec();
            p.revision = p.revision.map(|r| r + 1);
            Ok(())
        }
    }

    #[test]
    fn a_pair_added_between_our_read_and_write_survives() {
        let dir = std::env::temp_dir().join(format!("ovbmc-watch-race-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let opts = WatchOptions {
            port: "p".into(),
            interface: None,
            state_file: dir.join("s.json"),
            settle: Duration::ZERO,
            min_interval: Duration::ZERO,
            resync: Duration::from_secs(1),
        };
        let api = Racy {
            port: std::sync::Mutex::new(port(&["198.51.100.99"])),
            race_once: true.into(),
            puts: 0.into(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut ours = BTreeSet::new();
        let changed = rt
            .block_on(converge(&api, &opts, &set(&["192.0.2.10"]), &mut ours))
            .unwrap();
        assert!(changed);
        assert_eq!(api.puts.load(std::sync::atomic::Ordering::SeqCst), 2);
        let p = api.port.lock().unwrap().clone();
        assert_eq!(
            p.pairs,
            [
                pair("198.51.100.99"),
                pair("198.51.100.7"),
                pair("192.0.2.10")
            ]
        );
        assert_eq!(ours, set(&["192.0.2.10"]));
        assert_eq!(read_state(&opts.state_file, "p").unwrap(), ours);
        let _ = std::fs::remove_dir_all(&dir);
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
