//! Per-address policy routing for a BMC host with several NICs on one subnet.
//!
//! Why: without it, the kernel picks a reply's outgoing NIC from the main table alone, so a
//! reply sent from the address of NIC 2 can leave through NIC 1; Neutron's port security
//! (anti-spoofing) drops a packet whose source does not belong to the port it leaves by, and
//! the client never hears back. OpenStack Virtual Baremetal hit exactly this and gave up on
//! one NIC per BMC address (see `docs/deploy.md`). The standard fix is source-based policy
//! routing (iproute2 `ip-rule(8)`): per BMC address
//!
//! ```text
//! ip rule add from ADDR table N priority P
//! ip route add SUBNET dev IF table N
//! ip route add default via GW dev IF table N
//! ```
//!
//! The parts:
//! * [`plan`]: a pure function from the host's state (addresses, routes, rules) and the BMC
//!   list to the [`Op`]s that are needed (unit-tested without a network);
//! * [`NetOps`]: reading that state and applying an op. [`netlink::Netlink`] talks to the
//!   kernel over rtnetlink (`--routing auto`, no iproute2 needed); [`iproute::IpCommand`] runs
//!   iproute2's `ip` instead (`--routing ip`, a fallback for a kernel or netlink quirk the
//!   crate gets wrong, and the easiest to trace: every change is exactly the printed command);
//! * [`Router`]: applies a plan idempotently (an op already present is neither added nor, at
//!   the end, removed), remembers what it added, and removes exactly that on reload or exit;
//! * [`oneshot`]: `ovbmc routes apply|remove`, the same plan installed or removed by a
//!   one-shot command, for a daemon that runs without CAP_NET_ADMIN.

pub mod iproute;
pub mod netlink;
pub mod oneshot;
pub mod plan;

use std::fmt;
use std::net::IpAddr;

pub use plan::{RouteRequest, RoutingSettings, plan};

use crate::cli::RoutingMode;

/// The [`NetOps`] for a `--routing` mode: iproute2 for `ip`, netlink otherwise (`auto`, and
/// `off` for `ovbmc routes --dry-run`, which only reads).
pub fn backend(mode: RoutingMode) -> Box<dyn NetOps> {
    match mode {
        RoutingMode::Ip => Box::new(iproute::IpCommand::default()),
        RoutingMode::Auto | RoutingMode::Off => Box::new(netlink::Netlink::new()),
    }
}

/// Why routing could not be read, planned or applied. (The I/O errors are fields called
/// `error`, not `source`: the message already shows them, and anyhow's `{:#}` would print a
/// `source` a second time.)
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The `ip` program could not be run.
    #[error("cannot run {program}: {error} (is iproute2 installed?)")]
    Spawn {
        /// The program.
        program: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The kernel refused a change for lack of privilege.
    #[error(
        "`{command}`: permission denied; policy routing needs CAP_NET_ADMIN (run as root, \
         or grant it: systemd AmbientCapabilities=CAP_NET_ADMIN, podman --cap-add=NET_ADMIN), \
         or use --routing off"
    )]
    Permission {
        /// The change, as the equivalent `ip` command.
        command: String,
    },
    /// The kernel refused a change or a dump (netlink).
    #[error("`{command}` failed: {error}{hint}")]
    Kernel {
        /// The change, as the equivalent `ip` command.
        command: String,
        /// The errno the kernel answered.
        error: std::io::Error,
        /// What it probably means (empty, or starting with ": ").
        hint: String,
    },
    /// The netlink socket could not be opened or used.
    #[error("netlink: {error} (try --routing ip, which runs iproute2's `ip` instead)")]
    Netlink {
        /// The I/O error.
        error: std::io::Error,
    },
    /// A command's JSON output was not understood.
    #[error("`{command}`: unexpected output: {message}")]
    Output {
        /// The command line.
        command: String,
        /// What was wrong.
        message: String,
    },
    /// The BMC address is not on this host (and `--add-address` was not given).
    #[error(
        "address {addr} is not on any interface of this host: add it (ip addr add \
         {addr}/PREFIX dev IF) or use --add-address (and set `interface` if no \
         interface's subnet holds it)"
    )]
    NotLocal {
        /// The address.
        addr: IpAddr,
    },
    /// No interface to add a missing address to.
    #[error(
        "{addr}: no interface has a subnet holding it; set `interface` (and `prefix`) for \
         this BMC"
    )]
    NoInterface {
        /// The address.
        addr: IpAddr,
    },
    /// The configured interface does not exist or does not hold the address.
    #[error("{addr}: {message}")]
    Interface {
        /// The address.
        addr: IpAddr,
        /// What is wrong.
        message: String,
    },
    /// Two BMCs would need different routes in one table.
    #[error("routing table {table}: {message}; give the BMCs different `table` numbers")]
    TableConflict {
        /// The table.
        table: u32,
        /// The BMC address that clashes with an earlier one.
        addr: IpAddr,
        /// What clashes.
        message: String,
    },
}

impl NetError {
    /// The BMC address the error is about, if it is about one: the daemon uses it to name the
    /// fleet file's `[[bmc]]` entry in the message (issue 15 item 18).
    pub fn addr(&self) -> Option<IpAddr> {
        match self {
            NetError::NotLocal { addr }
            | NetError::NoInterface { addr }
            | NetError::Interface { addr, .. }
            | NetError::TableConflict { addr, .. } => Some(*addr),
            _ => None,
        }
    }
}

/// A prefix: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The address (not necessarily the network address).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// The network address (host bits cleared).
    pub fn network(self) -> Self {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        };
        Self {
            addr,
            prefix: self.prefix,
        }
    }

    /// `ADDR/LEN` as Neutron writes a subnet's `cidr`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, l) = s.split_once('/')?;
        let addr: IpAddr = a.parse().ok()?;
        let prefix: u8 = l.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// Whether the two prefixes share an address: the shorter holds the other's network.
    pub fn overlaps(self, other: Self) -> bool {
        let (wide, narrow) = if self.prefix <= other.prefix {
            (self, other)
        } else {
            (other, self)
        };
        wide.contains(narrow.network().addr)
    }

    /// Whether `ip` lies in this prefix.
    pub fn contains(self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && Self {
                addr: ip,
                prefix: self.prefix,
            }
            .network()
                == self.network()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An address configured on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddr {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub ifname: String,
    /// The address and its prefix length.
    pub cidr: Cidr,
}

/// A route as read back (only the fields the planner compares).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination; `None` is the default route.
    pub dst: Option<Cidr>,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Outgoing interface.
    pub dev: Option<String>,
}

/// A rule as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Source selector (`None` is `from all`).
    pub src: Option<Cidr>,
    /// The table looked up (`main`, `local` or a number, as `ip` prints it).
    pub table: String,
}

/// One change, rendered as the `ip` command that makes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `ip addr add ADDR/PREFIX dev IF`.
    Address {
        /// The address with the interface subnet's prefix length.
        cidr: Cidr,
        /// The interface.
        dev: String,
    },
    /// `ip route add DST|default [via GW] dev IF table N`.
    Route {
        /// Destination; `None` is the default route.
        dst: Option<Cidr>,
        /// Next hop.
        via: Option<IpAddr>,
        /// Interface.
        dev: String,
        /// Table.
        table: u32,
    },
    /// `ip rule add from ADDR table N priority P`.
    Rule {
        /// Source address (a host prefix).
        from: IpAddr,
        /// Table.
        table: u32,
        /// Rule priority.
        priority: u32,
    },
}

impl Op {
    fn family(&self) -> Option<&'static str> {
        let v6 = match self {
            Self::Address { cidr, .. } => cidr.addr.is_ipv6(),
            Self::Route { dst, via, .. } => dst
                .map(|d| d.addr.is_ipv6())
                .or(via.map(|v| v.is_ipv6()))
                .unwrap_or(false),
            Self::Rule { from, .. } => from.is_ipv6(),
        };
        // `ip rule` and a default route need the family spelled out; addresses and prefixes
        // carry it, but being explicit everywhere keeps the printed commands uniform.
        v6.then_some("-6")
    }

    /// The `ip` arguments that add (`add = true`) or delete this.
    pub fn args(&self, add: bool) -> Vec<String> {
        let verb = if add { "add" } else { "del" }.to_string();
        let mut a: Vec<String> = self.family().into_iter().map(String::from).collect();
        match self {
            Self::Address { cidr, dev } => {
                a.extend([
                    "addr".into(),
                    verb,
                    cidr.to_string(),
                    "dev".into(),
                    dev.clone(),
                ]);
                if add && cidr.addr.is_ipv6() {
                    // Skip duplicate address detection: a tentative address cannot be bound
                    // for a second or more, and the BMC must bind it right after.
                    a.push("nodad".into());
                }
            }
            Self::Route {
                dst,
                via,
                dev,
                table,
            } => {
                a.extend(["route".into(), verb]);
                a.push(dst.map_or_else(|| "default".into(), |d| d.network().to_string()));
                if let Some(v) = via {
                    a.extend(["via".into(), v.to_string()]);
                }
                a.extend(["dev".into(), dev.clone(), "table".into(), table.to_string()]);
            }
            Self::Rule {
                from,
                table,
                priority,
            } => a.extend([
                "rule".into(),
                verb,
                "from".into(),
                from.to_string(),
                "table".into(),
                table.to_string(),
                "priority".into(),
                priority.to_string(),
            ]),
        }
        a
    }

    /// The shell command that adds (`add`) or deletes this.
    pub fn command(&self, add: bool) -> String {
        format!("ip {}", self.args(add).join(" "))
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.command(true))
    }
}

/// What the host has now (the part of it the planner looks at).
#[derive(Clone, Debug, Default)]
pub struct HostState {
    /// Every address on every interface.
    pub addrs: Vec<IfAddr>,
    /// Interface names by index (interfaces without addresses included).
    pub links: Vec<(u32, String)>,
    /// The main table (both families).
    pub main_routes: Vec<Route>,
    /// All rules (both families).
    pub rules: Vec<Rule>,
    /// The routes of the tables asked for, by table.
    pub tables: std::collections::HashMap<u32, Vec<Route>>,
}

impl HostState {
    /// Whether `op` is already in effect.
    pub fn has(&self, op: &Op) -> bool {
        match op {
            Op::Address { cidr, dev } => self
                .addrs
                .iter()
                .any(|a| a.cidr.addr == cidr.addr && a.ifname == *dev),
            Op::Route {
                dst,
                via,
                dev,
                table,
            } => self.tables.get(table).is_some_and(|routes| {
                routes.iter().any(|r| {
                    r.dst.map(Cidr::network) == dst.map(Cidr::network)
                        && r.gateway == *via
                        && r.dev.as_deref() == Some(dev.as_str())
                })
            }),
            Op::Rule { from, table, .. } => {
                let host = if from.is_ipv4() { 32 } else { 128 };
                self.rules.iter().any(|r| {
                    r.src
                        == Some(Cidr {
                            addr: *from,
                            prefix: host,
                        })
                        && r.table == table.to_string()
                })
            }
        }
    }
}

/// What [`NetOps::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The change was made.
    Done,
    /// Nothing to do: an add found the entry there already (EEXIST; someone added it after
    /// the state was read), a delete found it gone. Such an entry is not ours to remove.
    AlreadyThere,
}

/// Reading the host's network state and changing it.
pub trait NetOps: Send + Sync {
    /// The addresses, links, main table, rules and the routes of `tables`.
    fn state(&self, tables: &[u32]) -> Result<HostState, NetError>;
    /// Add (`add = true`) or delete one op.
    fn apply(&self, op: &Op, add: bool) -> Result<Applied, NetError>;
}

/// Applies plans and undoes what it applied.
pub struct Router {
    ops: Box<dyn NetOps>,
    settings: RoutingSettings,
    /// Ops this process added, in the order added.
    added: Vec<Op>,
}

impl Router {
    /// A router that changes nothing yet.
    pub fn new(ops: Box<dyn NetOps>, settings: RoutingSettings) -> Self {
        Self {
            ops,
            settings,
            added: Vec::new(),
        }
    }

    /// The ops `reqs` need on this host now, in apply order, each with whether it is
    /// already present. Reads the host but changes nothing (`ovbmc routes --dry-run`).
    pub fn preview(&self, reqs: &[RouteRequest]) -> Result<Vec<(Op, bool)>, NetError> {
        let mut first = self.ops.state(&[])?;
        // Plan as if the addresses this process added were not there: the planner asks for
        // an address only when it is missing, and an address missing from the plan is one
        // `sync` removes, so without this a reload would take away the addresses it added.
        let ours = |a: &IfAddr| {
            self.added.iter().any(|op| match op {
                Op::Address { cidr, dev } => cidr.addr == a.cidr.addr && *dev == a.ifname,
                _ => false,
            })
        };
        first.addrs.retain(|a| !ours(a));
        let planned = plan(&first, reqs, &self.settings)?;
        let tables = tables_of(&planned.ops);
        let state = self.ops.state(&tables)?;
        for w in &planned.warnings {
            tracing::warn!("{w}");
        }
        Ok(planned
            .ops
            .into_iter()
            .map(|op| {
                let present = state.has(&op);
                (op, present)
            })
            .collect())
    }

    /// Make the host route exactly `reqs` (as far as this process is concerned): add what is
    /// missing, then delete what this process added earlier and no longer needs. On an error
    /// while adding, what this call added is rolled back and the error returned, so a failed
    /// start or reload leaves the host as it was.
    pub fn sync(&mut self, reqs: &[RouteRequest]) -> Result<(), NetError> {
        let wanted = self.preview(reqs)?;
        let mut new_added = Vec::new();
        for (op, present) in &wanted {
            if *present || self.added.contains(op) {
                continue;
            }
            // A rule must be looked for before it is added (done above, from the state): the
            // kernel takes `from A lookup N` again at another priority, and older kernels
            // stack even an identical copy, NLM_F_EXCL or not. (Linux 6.18 answers EEXIST to
            // an identical one, which is then `AlreadyThere`.)
            tracing::info!("routing: {}", op.command(true));
            match self.ops.apply(op, true) {
                Ok(Applied::Done) => new_added.push(op.clone()),
                Ok(Applied::AlreadyThere) => {
                    tracing::info!("routing: already present: {}", op.command(true));
                }
                Err(e) => {
                    for done in new_added.iter().rev() {
                        self.delete(done);
                    }
                    return Err(e);
                }
            }
        }
        let keep: Vec<&Op> = wanted.iter().map(|(op, _)| op).collect();
        let (stay, go): (Vec<Op>, Vec<Op>) = std::mem::take(&mut self.added)
            .into_iter()
            .partition(|op| keep.contains(&op));
        for op in go.iter().rev() {
            self.delete(op);
        }
        self.added = stay;
        self.added.extend(new_added);
        Ok(())
    }

    /// Remove everything this process added (newest first). Failures are logged: at exit
    /// there is nobody left to hand them to.
    pub fn teardown(&mut self) {
        for op in std::mem::take(&mut self.added).iter().rev() {
            self.delete(op);
        }
    }

    fn delete(&self, op: &Op) {
        tracing::info!("routing: {}", op.command(false));
        match self.ops.apply(op, false) {
            Ok(Applied::Done) => {}
            Ok(Applied::AlreadyThere) => {
                tracing::info!("routing: already gone: {}", op.command(true));
            }
            Err(e) => tracing::warn!("routing: could not undo `{}`: {e}", op.command(true)),
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        // An error path that returns early still must not leave rules behind.
        self.teardown();
    }
}

fn tables_of(ops: &[Op]) -> Vec<u32> {
    let mut t: Vec<u32> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Route { table, .. } => Some(*table),
            _ => None,
        })
        .collect();
    t.sort_unstable();
    t.dedup();
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_and_overlap() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        assert_eq!(c("192.0.2.0/24").prefix, 24);
        assert_eq!(Cidr::parse("192.0.2.0/33"), None);
        assert_eq!(Cidr::parse("192.0.2.0"), None);
        assert_eq!(c("2001:db8::/64").prefix, 64);
        assert!(c("192.0.2.0/24").overlaps(c("192.0.2.45/32")));
        assert!(c("192.0.2.45/32").overlaps(c("192.0.2.0/24")));
        assert!(!c("192.0.2.0/24").overlaps(c("192.0.3.45/32")));
        assert!(!c("192.0.3.44/30").overlaps(c("192.0.3.48/30")));
        assert!(!c("192.0.2.0/24").overlaps(c("2001:db8::/64")));
    }

    #[test]
    fn cidr_math() {
        let c = Cidr {
            addr: "198.51.100.11".parse().unwrap(),
            prefix: 24,
        };
        assert_eq!(c.network().to_string(), "198.51.100.0/24");
        assert!(c.contains("198.51.100.1".parse().unwrap()));
        assert!(!c.contains("198.51.101.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let z = Cidr {
            addr: "10.1.2.3".parse().unwrap(),
            prefix: 0,
        };
        assert_eq!(z.network().to_string(), "0.0.0.0/0");
        let v6 = Cidr {
            addr: "2001:db8::5".parse().unwrap(),
            prefix: 64,
        };
        assert_eq!(v6.network().to_string(), "2001:db8::/64");
    }

    /// A host that records the changes asked of it and answers from a script.
    struct Fake {
        state: std::sync::Mutex<HostState>,
        /// Commands answered with `AlreadyThere`.
        there: Vec<String>,
        /// A command answered with an error.
        fail: Option<String>,
        calls: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl NetOps for Fake {
        fn state(&self, _tables: &[u32]) -> Result<HostState, NetError> {
            Ok(self.state.lock().unwrap().clone())
        }
        fn apply(&self, op: &Op, add: bool) -> Result<Applied, NetError> {
            let c = op.command(add);
            self.calls.lock().unwrap().push(c.clone());
            if self.fail.as_ref() == Some(&c) {
                return Err(NetError::Permission { command: c });
            }
            if let Op::Address { cidr, dev } = op {
                let mut st = self.state.lock().unwrap();
                st.addrs.retain(|a| a.cidr.addr != cidr.addr);
                if add {
                    st.addrs.push(IfAddr {
                        ifindex: 3,
                        ifname: dev.clone(),
                        cidr: *cidr,
                    });
                }
            }
            Ok(if self.there.contains(&c) {
                Applied::AlreadyThere
            } else {
                Applied::Done
            })
        }
    }

    fn one_nic() -> HostState {
        HostState {
            addrs: vec![IfAddr {
                ifindex: 3,
                ifname: "eth2".into(),
                cidr: Cidr {
                    addr: "198.51.100.11".parse().unwrap(),
                    prefix: 24,
                },
            }],
            links: vec![(3, "eth2".into())],
            main_routes: vec![Route {
                dst: None,
                gateway: Some("198.51.100.1".parse().unwrap()),
                dev: Some("eth2".into()),
            }],
            ..HostState::default()
        }
    }

    const RULE: &str = "ip rule add from 198.51.100.11 table 1003 priority 1000";
    const ONLINK: &str = "ip route add 198.51.100.0/24 dev eth2 table 1003";
    const DEFAULT: &str = "ip route add default via 198.51.100.1 dev eth2 table 1003";

    #[test]
    fn router_keeps_what_it_did_not_add() {
        let calls = std::sync::Arc::default();
        let fake = Fake {
            state: one_nic().into(),
            // Someone added the rule between the read and the add (EEXIST).
            there: vec![RULE.into()],
            fail: None,
            calls: std::sync::Arc::clone(&calls),
        };
        let reqs = [RouteRequest::new("198.51.100.11".parse().unwrap())];
        let mut r = Router::new(Box::new(fake), RoutingSettings::default());
        r.sync(&reqs).unwrap();
        assert_eq!(*calls.lock().unwrap(), [ONLINK, DEFAULT, RULE]);
        // A second sync (a reload with the same fleet) adds nothing it added before.
        calls.lock().unwrap().clear();
        r.sync(&reqs).unwrap();
        assert_eq!(*calls.lock().unwrap(), [RULE]);
        calls.lock().unwrap().clear();
        drop(r);
        // At exit: exactly what it added, newest first; the rule was not its to remove.
        assert_eq!(
            *calls.lock().unwrap(),
            [
                "ip route del default via 198.51.100.1 dev eth2 table 1003",
                "ip route del 198.51.100.0/24 dev eth2 table 1003",
            ]
        );
    }

    #[test]
    fn router_keeps_the_addresses_it_added_across_reloads() {
        let calls = std::sync::Arc::default();
        let fake = Fake {
            state: one_nic().into(),
            there: vec![],
            fail: None,
            calls: std::sync::Arc::clone(&calls),
        };
        let settings = RoutingSettings {
            add_address: true,
            ..RoutingSettings::default()
        };
        let reqs = [RouteRequest::new("198.51.100.12".parse().unwrap())];
        let mut r = Router::new(Box::new(fake), settings);
        r.sync(&reqs).unwrap();
        assert_eq!(
            calls.lock().unwrap()[0],
            "ip addr add 198.51.100.12/24 dev eth2"
        );
        calls.lock().unwrap().clear();
        r.sync(&reqs).unwrap();
        assert!(
            calls.lock().unwrap().is_empty(),
            "a reload with the same fleet changed: {:?}",
            calls.lock().unwrap()
        );
        // A reload without the BMC removes its routing and the address.
        r.sync(&[]).unwrap();
        assert_eq!(
            calls.lock().unwrap().last().map(String::as_str),
            Some("ip addr del 198.51.100.12/24 dev eth2")
        );
    }

    #[test]
    fn router_rolls_back_a_failed_start() {
        let calls = std::sync::Arc::default();
        let fake = Fake {
            state: one_nic().into(),
            there: vec![],
            fail: Some(RULE.into()),
            calls: std::sync::Arc::clone(&calls),
        };
        let mut r = Router::new(Box::new(fake), RoutingSettings::default());
        let e = r
            .sync(&[RouteRequest::new("198.51.100.11".parse().unwrap())])
            .unwrap_err();
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        assert_eq!(
            *calls.lock().unwrap(),
            [
                ONLINK,
                DEFAULT,
                RULE,
                "ip route del default via 198.51.100.1 dev eth2 table 1003",
                "ip route del 198.51.100.0/24 dev eth2 table 1003",
            ]
        );
        calls.lock().unwrap().clear();
        drop(r);
        assert!(calls.lock().unwrap().is_empty(), "nothing left to undo");
    }

    #[test]
    fn commands() {
        let rule = Op::Rule {
            from: "198.51.100.11".parse().unwrap(),
            table: 1003,
            priority: 1000,
        };
        assert_eq!(
            rule.command(true),
            "ip rule add from 198.51.100.11 table 1003 priority 1000"
        );
        let route = Op::Route {
            dst: None,
            via: Some("2001:db8::1".parse().unwrap()),
            dev: "eth1".into(),
            table: 7,
        };
        assert_eq!(
            route.command(false),
            "ip -6 route del default via 2001:db8::1 dev eth1 table 7"
        );
        let addr = Op::Address {
            cidr: Cidr {
                addr: "198.51.100.12".parse().unwrap(),
                prefix: 24,
            },
            dev: "eth2".into(),
        };
        assert_eq!(addr.command(true), "ip addr add 198.51.100.12/24 dev eth2");
    }
}
