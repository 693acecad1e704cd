//! The planner of `ovbmc cloud plan | apply | destroy`: what the host cloud's Neutron should
//! look like for a fleet ([`Desired`]) against what it looks like ([`Actual`]) gives the
//! changes, one line each, and the API operations that make them ([`Plan`]). Pure: no I/O,
//! so it is tested on its own; `super::netcmd` reads the cloud and carries the operations out.
//!
//! Ownership. Every resource ovbmc creates or edits carries the tag `ovbmc:FLEET` (the
//! marker), and each thing ovbmc put on it one more tag saying what
//! (`ovbmc:FLEET:pair=192.0.2.45`, `ovbmc:FLEET:dhcp=bootfile-name`,
//! `ovbmc:FLEET:route=169.254.169.254`, `ovbmc:FLEET:port` for a port ovbmc created,
//! `ovbmc:FLEET:subnet` for a subnet it created).
//! Neutron tags are per resource, up to 255 characters each and 50 per resource
//! (`neutron/extensions/tagging.py` MAX_TAG_LEN, MAX_TAGS_COUNT). Security group rules cannot
//! be tagged (only groups can), so ovbmc's rules say `ovbmc:FLEET` in their `description`
//! and their group carries the marker.
//!
//! So an address pair, DHCP option, host route or rule that was already there when ovbmc
//! came is "kept" and never recorded: `destroy` leaves it, and a resource without the marker
//! is never changed by `destroy`. A record is written *before* the change it records (a
//! crash in between leaves a record of nothing, which the next run tidies) and removed
//! *after* the change is undone.
//!
//! `destroy` is the plan for an empty [`Desired`]: everything recorded goes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use super::neutron::{
    AddressPair, DhcpOpt, FixedIp, HostRoute, NewPort, NewSubnet, PORT_SUBNET_SERVICE_TYPE, Pool,
    Port, Resource, Rule, SecurityGroup, Subnet, label, same_address,
};
use crate::net::Cidr;

/// The metadata service's address (the EC2/OpenStack metadata convention), which a node
/// PXE-booted by Ironic reaches through the undercloud.
pub const METADATA: &str = "169.254.169.254";

/// Neutron's default `[DEFAULT] max_allowed_address_pair` (neutron
/// `neutron/conf/extensions/allowedaddresspairs.py`); the API does not expose the value.
pub const DEFAULT_PAIR_LIMIT: u32 = 10;

/// The longest prefix a subnet per port may have for IPv4: Neutron refuses a port address
/// that is its subnet's network or broadcast address (`neutron/ipam/utils.py`
/// `check_subnet_ip`; against the lab's Neutron a /32 subnet is made but no port can have its
/// address, a /30 works), so a /30 holds two usable addresses.
pub const PORT_SUBNET_V4: u8 = 30;

/// The same for IPv6: only the network (subnet-router anycast) address is refused; a /127
/// holds one usable address (checked against the lab's Neutron).
pub const PORT_SUBNET_V6: u8 = 127;

/// TripleO's minimum MTU on the provisioning network.
pub const MIN_MTU: u32 = 1500;

/// The marker tag of a fleet.
pub fn marker(fleet: &str) -> String {
    format!("ovbmc:{fleet}")
}

fn record(fleet: &str, what: &str) -> String {
    format!("ovbmc:{fleet}:{what}")
}

/// What the `what` records among `tags` name (`ovbmc:{fleet}:{what}VALUE` → `VALUE`): the
/// things this fleet's ovbmc set on a resource.
fn recorded<'a>(tags: &'a [String], fleet: &str, what: &str) -> impl Iterator<Item = &'a str> {
    let prefix = record(fleet, what);
    tags.iter()
        .filter_map(move |t| t.strip_prefix(prefix.as_str()))
}

/// Docs/deploy.md's two layouts for the BMC VM's IPMI addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// A: the extra addresses are allowed address pairs of the BMC VM's one port.
    #[default]
    A,
    /// B: one port per address on the provisioning subnet, attached to the BMC VM.
    B,
}

/// A rule the faces need: ingress `protocol` to `port` from `remote`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleWant {
    /// `udp` or `tcp`.
    pub protocol: String,
    /// The destination port.
    pub port: u16,
    /// The source prefix (the provisioning subnet's CIDR).
    pub remote: String,
    /// `IPv4` or `IPv6`.
    pub ethertype: String,
    /// What it is for, for the plan line.
    pub why: String,
}

/// What the fleet wants of Neutron, with names already resolved to ids.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// The fleet's name (the tag).
    pub fleet: String,
    /// The layout.
    pub layout: Layout,
    /// The IPMI (and Redfish) addresses the BMC VM answers on.
    pub addresses: Vec<IpAddr>,
    /// Layout A: the BMC VM's port.
    pub bmc_port: Option<String>,
    /// Layout B: the BMC VM (Nova server id) the address ports are attached to.
    pub bmc_server: Option<String>,
    /// Layout B with a subnet per port: each address's port on a subnet of its own, the
    /// address's block of [`Self::port_subnet_prefix`]. [`Actual::subnets`] then holds every
    /// subnet of the network, so that an overlap is found before Neutron refuses it.
    pub subnet_per_port: bool,
    /// The prefix length of those subnets (`None`: the smallest block Neutron takes a port
    /// address in, [`PORT_SUBNET_V4`] or [`PORT_SUBNET_V6`]).
    pub port_subnet_prefix: Option<u8>,
    /// The provisioning network.
    pub network_id: String,
    /// The provisioning subnet.
    pub subnet_id: String,
    /// The provisioning network's MTU, if Neutron said.
    pub mtu: Option<u32>,
    /// Carry on with an MTU below [`MIN_MTU`].
    pub allow_small_mtu: bool,
    /// The group the rules go in (and layout B's ports are in).
    pub security_group: Option<String>,
    /// The rules.
    pub rules: Vec<RuleWant>,
    /// The bare-metal instances' ports on the provisioning network.
    pub boot_ports: Vec<String>,
    /// `bootfile-name` for them (`boot.ipxe`, `inspector.ipxe`).
    pub ipxe_file: Option<String>,
    /// The undercloud's port and address on the provisioning subnet.
    pub undercloud: Option<(String, IpAddr)>,
    /// The metadata host route and the undercloud's pair for it.
    pub metadata_route: bool,
    /// The per-port pair limit assumed.
    pub pair_limit: u32,
}

impl Desired {
    /// Nothing: the plan for it is `destroy`.
    pub fn nothing(fleet: &str) -> Self {
        Self {
            fleet: fleet.into(),
            pair_limit: DEFAULT_PAIR_LIMIT,
            ..Self::default()
        }
    }
}

/// What Neutron has: every resource the desire names and every one tagged with the marker.
#[derive(Clone, Debug, Default)]
pub struct Actual {
    /// Ports by id.
    pub ports: BTreeMap<String, Port>,
    /// Subnets by id.
    pub subnets: BTreeMap<String, Subnet>,
    /// Security groups (with their rules) by id.
    pub groups: BTreeMap<String, SecurityGroup>,
}

/// The kind of a change line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// A resource is made.
    Create,
    /// A resource is changed.
    Update,
    /// A resource (or a thing ovbmc made on one) is removed.
    Delete,
    /// Already as wanted.
    Keep,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`, so that `{:<6}` lines the plan up.
        f.pad(match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Keep => "keep",
        })
    }
}

/// One line of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What kind.
    pub verb: Verb,
    /// What.
    pub text: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<6} {}", self.verb, self.text)
    }
}

/// One API operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Add a tag.
    AddTag(Resource, String, String),
    /// Remove a tag.
    RemoveTag(Resource, String, String),
    /// Replace a port's `allowed_address_pairs`.
    SetPairs {
        /// Port id.
        port: String,
        /// The whole new list.
        pairs: Vec<AddressPair>,
        /// The port's `revision_number` when read (sent as `If-Match`, so a port changed
        /// since is refused rather than overwritten).
        revision: Option<u64>,
        /// The pairs this op adds ...
        add: Vec<IpAddr>,
        /// ... and removes: applied again to the port re-read after a 412.
        remove: Vec<IpAddr>,
    },
    /// Set (or with a null value remove) some of a port's `extra_dhcp_opts`.
    SetDhcp {
        /// Port id.
        port: String,
        /// The options to set or remove.
        opts: Vec<DhcpOpt>,
    },
    /// Replace a subnet's `host_routes`.
    SetRoutes {
        /// Subnet id.
        subnet: String,
        /// The whole new list.
        routes: Vec<HostRoute>,
    },
    /// Create a rule.
    CreateRule(Rule),
    /// Delete a rule.
    DeleteRule(String),
    /// Create a port, tag it, and attach it to a server.
    CreatePort {
        /// The port.
        port: NewPort,
        /// Its tags.
        tags: Vec<String>,
        /// The server to attach it to.
        attach: Option<String>,
    },
    /// Attach a port to a server (Nova "Create Interface").
    Attach {
        /// Server id.
        server: String,
        /// Port id.
        port: String,
    },
    /// Detach a port from a server (Nova "Detach Interface").
    Detach {
        /// Server id.
        server: String,
        /// Port id.
        port: String,
    },
    /// Delete a port.
    DeletePort(String),
    /// Create a subnet and tag it.
    CreateSubnet {
        /// The subnet.
        subnet: NewSubnet,
        /// Its tags.
        tags: Vec<String>,
    },
    /// Delete a subnet.
    DeleteSubnet(String),
}

/// The changes and the operations that make them.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// One line per change (and per thing kept).
    pub changes: Vec<Change>,
    /// Things the user should know (a limit about to be passed, a value set by someone else).
    pub warnings: Vec<String>,
    /// Records first, then the changes, then the records of what was undone.
    pub ops: Vec<Op>,
}

impl Plan {
    /// Is there nothing to do?
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// `N to create, N to update, N to delete, N unchanged`.
    pub fn summary(&self) -> String {
        let n = |v: Verb| self.changes.iter().filter(|c| c.verb == v).count();
        format!(
            "{} to create, {} to update, {} to delete, {} unchanged",
            n(Verb::Create),
            n(Verb::Update),
            n(Verb::Delete),
            n(Verb::Keep)
        )
    }
}

/// Working state while planning.
struct Builder<'a> {
    d: &'a Desired,
    plan: Plan,
    pre: Vec<Op>,
    post: Vec<Op>,
}

impl Builder<'_> {
    fn line(&mut self, verb: Verb, text: String) {
        self.plan.changes.push(Change { verb, text });
    }

    /// Tags: write the records that are new before, remove the stale ones after; the marker
    /// stays while any record (or, for a group, a rule of ours) does.
    fn tags(
        &mut self,
        res: Resource,
        id: &str,
        name: &str,
        tags: &[String],
        want: &BTreeSet<String>,
        keep_marker: bool,
    ) {
        let fleet = &self.d.fleet;
        let m = marker(fleet);
        let prefix = format!("{m}:");
        let have: BTreeSet<String> = tags
            .iter()
            .filter(|t| t.starts_with(&prefix))
            .cloned()
            .collect();
        let marked = tags.contains(&m);
        let marker_wanted = keep_marker || !want.is_empty();
        if marker_wanted && !marked {
            self.line(
                Verb::Update,
                format!("{} {}: tag {m}", res.noun(), label(name, id)),
            );
            self.pre.push(Op::AddTag(res, id.into(), m.clone()));
        }
        for t in want.difference(&have) {
            self.pre.push(Op::AddTag(res, id.into(), t.clone()));
        }
        for t in have.difference(want) {
            self.post.push(Op::RemoveTag(res, id.into(), t.clone()));
        }
        if !marker_wanted && marked {
            self.line(
                Verb::Update,
                format!("{} {}: untag {m}", res.noun(), label(name, id)),
            );
            self.post.push(Op::RemoveTag(res, id.into(), m));
        }
    }
}

/// The DHCP options a bare-metal port needs to boot iPXE from the undercloud (dnsmasq option
/// names as Neutron passes them; OVN maps them: `neutron/common/ovn/constants.py`).
fn wanted_dhcp(d: &Desired) -> Vec<(String, String)> {
    match (&d.ipxe_file, &d.undercloud) {
        (Some(file), Some((_, addr))) => vec![
            ("bootfile-name".into(), file.clone()),
            ("tftp-server".into(), addr.to_string()),
            ("server-ip-address".into(), addr.to_string()),
        ],
        _ => Vec::new(),
    }
}

fn covers(r: &Rule, w: &RuleWant) -> bool {
    r.direction == "ingress"
        && r.ethertype == w.ethertype
        && r.remote_group_id.is_none()
        && r.protocol.as_deref().is_none_or(|p| p == w.protocol)
        && r.port_range_min.is_none_or(|lo| lo <= w.port)
        && r.port_range_max.is_none_or(|hi| hi >= w.port)
        && r.remote_ip_prefix
            .as_deref()
            .is_none_or(|p| p == w.remote || p == "0.0.0.0/0" || p == "::/0")
}

/// Plan: `d` against `a`. Fails (with why) only where carrying on would build something that
/// cannot work: the MTU.
pub fn plan(d: &Desired, a: &Actual) -> Result<Plan, String> {
    if let Some(mtu) = d.mtu
        && mtu < MIN_MTU
        && !d.allow_small_mtu
    {
        return Err(format!(
            "the provisioning network's MTU is {mtu}: TripleO needs {MIN_MTU} (PXE and the \
             overcloud images assume it, and fragments are dropped); ask the cloud for a \
             network with MTU {MIN_MTU}, or pass --allow-small-mtu (or set allow_small_mtu = \
             true in [cloud.network]) to carry on"
        ));
    }
    let mut b = Builder {
        d,
        plan: Plan::default(),
        pre: Vec::new(),
        post: Vec::new(),
    };
    let fleet = d.fleet.as_str();
    let rec_port = record(fleet, "port");
    let rec_subnet = record(fleet, "subnet");

    // Layout B: one port per address (and with a subnet per port, its subnet first).
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut claimed_subnets: BTreeSet<String> = BTreeSet::new();
    if d.layout == Layout::B {
        if d.subnet_per_port {
            port_subnets(&mut b, a, &mut claimed_subnets)?;
        }
        for ip in &d.addresses {
            let ours = a.ports.values().find(|p| {
                p.tags.contains(&rec_port)
                    && p.network_id == d.network_id
                    && p.addresses().any(|x| x == *ip)
            });
            if let Some(p) = ours {
                claimed.insert(p.id.clone());
                b.line(
                    Verb::Keep,
                    format!("port {}: IPMI address {ip} (ovbmc's)", p.label()),
                );
                if let Some(s) = &d.bmc_server
                    && p.device_id != *s
                {
                    b.line(
                        Verb::Update,
                        format!("port {}: attach to the BMC VM {s}", p.label()),
                    );
                    b.plan.ops.push(Op::Attach {
                        server: s.clone(),
                        port: p.id.clone(),
                    });
                }
                continue;
            }
            if let Some(p) = a
                .ports
                .values()
                .find(|p| p.network_id == d.network_id && p.addresses().any(|x| x == *ip))
            {
                b.line(
                    Verb::Keep,
                    format!(
                        "port {}: IPMI address {ip} is its fixed IP (not ovbmc's; left alone)",
                        p.label()
                    ),
                );
                claimed.insert(p.id.clone());
                continue;
            }
            let name = format!("ovbmc-{fleet}-{ip}");
            b.line(
                Verb::Create,
                format!(
                    "port {name}: IPMI address {ip}{}",
                    d.bmc_server
                        .as_ref()
                        .map(|s| format!(", attached to the BMC VM {s}"))
                        .unwrap_or_default()
                ),
            );
            b.plan.ops.push(Op::CreatePort {
                port: NewPort {
                    name,
                    network_id: d.network_id.clone(),
                    fixed_ips: vec![FixedIp {
                        // With a subnet per port, Neutron finds it from the address (it may
                        // be made by this very plan, so its id is not known yet).
                        subnet_id: if d.subnet_per_port {
                            String::new()
                        } else {
                            d.subnet_id.clone()
                        },
                        ip_address: ip.to_string(),
                    }],
                    security_groups: d.security_group.clone().map(|g| vec![g]),
                    device_owner: d
                        .subnet_per_port
                        .then(|| PORT_SUBNET_SERVICE_TYPE.to_string()),
                    description: format!("made by ovbmc cloud apply for fleet {fleet}"),
                },
                tags: vec![marker(fleet), rec_port.clone()],
                attach: d.bmc_server.clone(),
            });
        }
    }

    // Every port the desire names or ovbmc marked, in id order.
    let dhcp = wanted_dhcp(d);
    for p in a.ports.values() {
        if p.tags.contains(&rec_port) && !claimed.contains(&p.id) {
            // A port ovbmc made that the fleet no longer wants.
            if !p.device_id.is_empty() && p.device_owner.starts_with("compute:") {
                b.plan.ops.push(Op::Detach {
                    server: p.device_id.clone(),
                    port: p.id.clone(),
                });
            }
            b.line(Verb::Delete, format!("port {} (ovbmc made it)", p.label()));
            b.plan.ops.push(Op::DeletePort(p.id.clone()));
            continue;
        }
        let mut want_records: BTreeSet<String> = BTreeSet::new();
        if p.tags.contains(&rec_port) {
            want_records.insert(rec_port.clone());
        }
        // Pairs.
        let mut wanted_pairs: Vec<(IpAddr, &str)> = Vec::new();
        if d.layout == Layout::A && d.bmc_port.as_deref() == Some(p.id.as_str()) {
            for ip in &d.addresses {
                if p.addresses().any(|x| x == *ip) {
                    b.line(
                        Verb::Keep,
                        format!("port {}: {ip} is its fixed IP", p.label()),
                    );
                } else {
                    wanted_pairs.push((*ip, "IPMI address"));
                }
            }
        }
        if d.metadata_route
            && let Some((u, _)) = &d.undercloud
            && *u == p.id
            && let Ok(m) = METADATA.parse::<IpAddr>()
        {
            wanted_pairs.push((m, "metadata address"));
        }
        let mut pairs = p.allowed_address_pairs.clone();
        let mut pairs_changed = false;
        let (mut added, mut removed): (Vec<IpAddr>, Vec<IpAddr>) = (Vec::new(), Vec::new());
        let security_off = p.port_security_enabled == Some(false);
        for (ip, why) in &wanted_pairs {
            let rec = record(fleet, &format!("pair={ip}"));
            if security_off {
                b.line(
                    Verb::Keep,
                    format!(
                        "port {}: {why} {ip} needs no address pair (port security is off)",
                        p.label()
                    ),
                );
            } else if pairs.iter().any(|x| x.is_address(*ip)) {
                let whose = if p.tags.contains(&rec) {
                    want_records.insert(rec);
                    "ovbmc's"
                } else {
                    "not ovbmc's; kept"
                };
                b.line(
                    Verb::Keep,
                    format!(
                        "port {}: allowed_address_pair {ip} ({why}, {whose})",
                        p.label()
                    ),
                );
            } else {
                want_records.insert(rec);
                pairs.push(AddressPair::of(*ip));
                added.push(*ip);
                pairs_changed = true;
                b.line(
                    Verb::Update,
                    format!("port {}: add allowed_address_pair {ip} ({why})", p.label()),
                );
            }
        }
        for ip in recorded(&p.tags, fleet, "pair=").filter_map(|ip| ip.parse::<IpAddr>().ok()) {
            if wanted_pairs.iter().any(|(w, _)| *w == ip) {
                continue;
            }
            let before = pairs.len();
            pairs.retain(|x| !x.is_address(ip));
            if pairs.len() != before {
                pairs_changed = true;
                removed.push(ip);
                b.line(
                    Verb::Delete,
                    format!(
                        "port {}: allowed_address_pair {ip} (ovbmc added it)",
                        p.label()
                    ),
                );
            }
        }
        if pairs_changed {
            if pairs.len() > d.pair_limit as usize {
                b.plan.warnings.push(format!(
                    "port {} would have {} allowed address pairs; Neutron refuses more than \
                     max_allowed_address_pair ({} unless the cloud changed it): use layout B",
                    p.label(),
                    pairs.len(),
                    d.pair_limit
                ));
            }
            b.plan.ops.push(Op::SetPairs {
                port: p.id.clone(),
                pairs,
                revision: p.revision_number,
                add: added,
                remove: removed,
            });
        }
        // DHCP options.
        let mut opts = Vec::new();
        let boot = d.boot_ports.contains(&p.id);
        for (name, value) in dhcp.iter().filter(|_| boot) {
            let rec = record(fleet, &format!("dhcp={name}"));
            let ours = p.tags.contains(&rec);
            match p.extra_dhcp_opts.iter().find(|o| o.opt_name == *name) {
                Some(o) if o.opt_value.as_deref() == Some(value) => {
                    if ours {
                        want_records.insert(rec);
                    }
                    b.line(
                        Verb::Keep,
                        format!(
                            "port {}: extra_dhcp_opt {name}={value}{}",
                            p.label(),
                            if ours { "" } else { " (not ovbmc's; kept)" }
                        ),
                    );
                }
                Some(o) if !ours => {
                    b.line(
                        Verb::Keep,
                        format!(
                            "port {}: extra_dhcp_opt {name}={} (set by someone else; left alone)",
                            p.label(),
                            o.opt_value.as_deref().unwrap_or("null")
                        ),
                    );
                    b.plan.warnings.push(format!(
                        "port {}: extra_dhcp_opt {name} is {:?}, not {value:?}, and ovbmc did \
                         not set it: change or remove it by hand for iPXE to reach the undercloud",
                        p.label(),
                        o.opt_value.as_deref().unwrap_or("null")
                    ));
                }
                _ => {
                    want_records.insert(rec);
                    opts.push(DhcpOpt {
                        opt_name: name.clone(),
                        opt_value: Some(value.clone()),
                        ip_version: Some(4),
                    });
                    b.line(
                        Verb::Update,
                        format!("port {}: set extra_dhcp_opt {name}={value}", p.label()),
                    );
                }
            }
        }
        for name in recorded(&p.tags, fleet, "dhcp=") {
            if boot && dhcp.iter().any(|(n, _)| n == name) {
                continue;
            }
            if p.extra_dhcp_opts.iter().any(|o| o.opt_name == name) {
                opts.push(DhcpOpt {
                    opt_name: name.into(),
                    opt_value: None,
                    ip_version: Some(4),
                });
                b.line(
                    Verb::Delete,
                    format!("port {}: extra_dhcp_opt {name} (ovbmc set it)", p.label()),
                );
            }
        }
        if !opts.is_empty() {
            b.plan.ops.push(Op::SetDhcp {
                port: p.id.clone(),
                opts,
            });
        }
        b.tags(
            Resource::Port,
            &p.id,
            &p.name,
            &p.tags,
            &want_records,
            false,
        );
    }

    // Subnets: the ones ovbmc made that are no longer wanted (after their ports above), and
    // the metadata host route.
    for s in a.subnets.values() {
        let mut want_records = BTreeSet::new();
        if s.tags.contains(&rec_subnet) {
            if !claimed_subnets.contains(&s.id) {
                b.line(
                    Verb::Delete,
                    format!(
                        "subnet {} {} (ovbmc made it)",
                        label(&s.name, &s.id),
                        s.cidr
                    ),
                );
                b.plan.ops.push(Op::DeleteSubnet(s.id.clone()));
                continue;
            }
            want_records.insert(rec_subnet.clone());
        }
        let mut routes = s.host_routes.clone();
        let mut changed = false;
        let dest = format!("{METADATA}/32");
        // Not `route=169.254.169.254/32`: a `/` in a tag cannot go through the tag URL
        // (`/v2.0/subnets/{id}/tags/{tag}`; seen against the lab's Neutron 29: the tag was
        // not stored), and the route is always a /32.
        let rec = record(fleet, &format!("route={METADATA}"));
        let wanted = match &d.undercloud {
            Some((_, addr)) if d.metadata_route && s.id == d.subnet_id && addr.is_ipv4() => {
                Some(addr.to_string())
            }
            _ => None,
        };
        let ours = s.tags.contains(&rec);
        let have = routes.iter().position(|r| r.destination == dest);
        match (&wanted, have) {
            (Some(hop), Some(i)) if routes[i].nexthop == *hop => {
                if ours {
                    want_records.insert(rec.clone());
                }
                b.line(
                    Verb::Keep,
                    format!(
                        "subnet {}: host_route {dest} via {hop}{}",
                        label(&s.name, &s.id),
                        if ours { "" } else { " (not ovbmc's; kept)" }
                    ),
                );
            }
            (Some(hop), Some(i)) if !ours => {
                b.line(
                    Verb::Keep,
                    format!(
                        "subnet {}: host_route {dest} via {} (set by someone else; left alone)",
                        label(&s.name, &s.id),
                        routes[i].nexthop
                    ),
                );
                b.plan.warnings.push(format!(
                    "subnet {}: the metadata route goes via {}, not the undercloud {hop}, and \
                     ovbmc did not set it",
                    label(&s.name, &s.id),
                    routes[i].nexthop
                ));
            }
            (Some(hop), Some(i)) => {
                want_records.insert(rec.clone());
                routes[i].nexthop = hop.clone();
                changed = true;
                b.line(
                    Verb::Update,
                    format!(
                        "subnet {}: host_route {dest} via {hop}",
                        label(&s.name, &s.id)
                    ),
                );
            }
            (Some(hop), None) => {
                want_records.insert(rec.clone());
                routes.push(HostRoute {
                    destination: dest.clone(),
                    nexthop: hop.clone(),
                });
                changed = true;
                b.line(
                    Verb::Update,
                    format!(
                        "subnet {}: add host_route {dest} via {hop} (the undercloud)",
                        label(&s.name, &s.id)
                    ),
                );
            }
            (None, Some(i)) if ours => {
                routes.remove(i);
                changed = true;
                b.line(
                    Verb::Delete,
                    format!(
                        "subnet {}: host_route {dest} (ovbmc added it)",
                        label(&s.name, &s.id)
                    ),
                );
            }
            (None, _) => {}
        }
        if changed {
            b.plan.ops.push(Op::SetRoutes {
                subnet: s.id.clone(),
                routes,
            });
        }
        b.tags(
            Resource::Subnet,
            &s.id,
            &s.name,
            &s.tags,
            &want_records,
            false,
        );
    }

    // Security groups: the faces' rules.
    let m = marker(fleet);
    for g in a.groups.values() {
        let wants: &[RuleWant] = if d.security_group.as_deref() == Some(g.id.as_str()) {
            &d.rules
        } else {
            &[]
        };
        let mut used: BTreeSet<&str> = BTreeSet::new();
        let mut ours_left = false;
        for w in wants {
            let what = format!(
                "ingress {} {} from {} ({})",
                w.protocol, w.port, w.remote, w.why
            );
            if let Some(r) = g.security_group_rules.iter().find(|r| covers(r, w)) {
                let ours = r.description.as_deref() == Some(m.as_str());
                ours_left |= ours;
                used.insert(r.id.as_str());
                b.line(
                    Verb::Keep,
                    format!(
                        "security group {}: rule {what}{}",
                        label(&g.name, &g.id),
                        if ours { "" } else { " (not ovbmc's)" }
                    ),
                );
            } else {
                ours_left = true;
                b.line(
                    Verb::Create,
                    format!("security group {}: rule {what}", label(&g.name, &g.id)),
                );
                b.plan.ops.push(Op::CreateRule(Rule {
                    id: String::new(),
                    security_group_id: g.id.clone(),
                    direction: "ingress".into(),
                    ethertype: w.ethertype.clone(),
                    protocol: Some(w.protocol.clone()),
                    port_range_min: Some(w.port),
                    port_range_max: Some(w.port),
                    remote_ip_prefix: Some(w.remote.clone()),
                    remote_group_id: None,
                    description: Some(m.clone()),
                }));
            }
        }
        for r in &g.security_group_rules {
            if r.description.as_deref() == Some(m.as_str()) && !used.contains(r.id.as_str()) {
                b.line(
                    Verb::Delete,
                    format!(
                        "security group {}: rule {} {} {} from {} (ovbmc made it)",
                        label(&g.name, &g.id),
                        r.direction,
                        r.protocol.as_deref().unwrap_or("any"),
                        r.port_range_min.map(|p| p.to_string()).unwrap_or_default(),
                        r.remote_ip_prefix.as_deref().unwrap_or("anywhere"),
                    ),
                );
                b.plan.ops.push(Op::DeleteRule(r.id.clone()));
            }
        }
        b.tags(
            Resource::SecurityGroup,
            &g.id,
            &g.name,
            &g.tags,
            &BTreeSet::new(),
            ours_left,
        );
    }

    let Builder {
        mut plan,
        pre,
        post,
        ..
    } = b;
    let main = std::mem::take(&mut plan.ops);
    plan.ops = pre.into_iter().chain(main).chain(post).collect();
    Ok(plan)
}

/// Layout B with a subnet per port: each address's block is a subnet of the network,
/// ovbmc's (kept), someone else's with exactly that CIDR (used, left alone), or made. Fails
/// where Neutron would refuse: two addresses in one block, or a block that overlaps another
/// subnet of the network (Neutron refuses overlapping subnets on one network).
fn port_subnets(
    b: &mut Builder<'_>,
    a: &Actual,
    claimed: &mut BTreeSet<String>,
) -> Result<(), String> {
    let d = b.d;
    let fleet = d.fleet.as_str();
    let rec_subnet = record(fleet, "subnet");
    let mut blocks: Vec<(IpAddr, Cidr)> = Vec::new();
    for ip in &d.addresses {
        let max = if ip.is_ipv4() {
            PORT_SUBNET_V4
        } else {
            PORT_SUBNET_V6
        };
        let len = d.port_subnet_prefix.unwrap_or(max);
        if len > max {
            return Err(format!(
                "port_subnet_prefix {len}: Neutron takes no port address in an {} subnet longer \
                 than /{max} (the network and broadcast addresses are refused), and {ip} needs \
                 one",
                if ip.is_ipv4() { "IPv4" } else { "IPv6" }
            ));
        }
        let block = Cidr {
            addr: *ip,
            prefix: len,
        }
        .network();
        let broadcast = match block.addr {
            IpAddr::V4(n) => Some(IpAddr::V4(
                (u32::from(n) | (u32::MAX >> u32::from(len).min(31))).into(),
            )),
            IpAddr::V6(_) => None,
        };
        if *ip == block.addr || Some(*ip) == broadcast {
            return Err(format!(
                "IPMI address {ip} is the {} address of its subnet {block}, which Neutron does \
                 not give a port: pick another address or another port_subnet_prefix",
                if *ip == block.addr {
                    "network"
                } else {
                    "broadcast"
                }
            ));
        }
        if let Some((other, _)) = blocks.iter().find(|(_, c)| *c == block) {
            return Err(format!(
                "IPMI addresses {other} and {ip} fall in one /{len} ({block}): with \
                 subnet_per_port each address needs a block of its own; pick addresses in \
                 different blocks or a longer port_subnet_prefix"
            ));
        }
        blocks.push((*ip, block));
    }
    let on_net: Vec<(&Subnet, Cidr)> = a
        .subnets
        .values()
        .filter(|s| s.network_id == d.network_id)
        .filter_map(|s| Cidr::parse(&s.cidr).map(|c| (s, c.network())))
        .collect();
    for (ip, block) in blocks {
        if let Some((s, _)) = on_net.iter().find(|(_, c)| *c == block) {
            claimed.insert(s.id.clone());
            let whose = if s.tags.contains(&rec_subnet) {
                "ovbmc's"
            } else {
                "not ovbmc's; used as it is"
            };
            b.line(
                Verb::Keep,
                format!(
                    "subnet {} {block}: for IPMI address {ip} ({whose})",
                    label(&s.name, &s.id)
                ),
            );
            continue;
        }
        if let Some((s, c)) = on_net.iter().find(|(_, c)| c.overlaps(block)) {
            return Err(format!(
                "IPMI address {ip}: its subnet {block} would overlap subnet {} ({c}) of the \
                 provisioning network, and Neutron refuses overlapping subnets on one network: \
                 with subnet_per_port the addresses must lie outside the network's other subnets \
                 (docs/deploy.md, layout B)",
                label(&s.name, &s.id)
            ));
        }
        let name = format!("ovbmc-{fleet}-{ip}");
        b.line(
            Verb::Create,
            format!(
                "subnet {name} {block}: for IPMI address {ip} (no DHCP, no gateway, pool {ip} only)"
            ),
        );
        b.plan.ops.push(Op::CreateSubnet {
            subnet: NewSubnet {
                name,
                network_id: d.network_id.clone(),
                cidr: block.to_string(),
                ip_version: if ip.is_ipv4() { 4 } else { 6 },
                // No gateway and no DHCP: the address is put on its NIC by ovbmc (`[routing]
                // add_address`), and the NIC's replies are routed by `--routing auto`.
                gateway_ip: None,
                enable_dhcp: false,
                allocation_pools: vec![Pool {
                    start: ip.to_string(),
                    end: ip.to_string(),
                }],
                // Its address for its port alone (see the constant).
                service_types: vec![PORT_SUBNET_SERVICE_TYPE.to_string()],
                description: format!("made by ovbmc cloud apply for fleet {fleet}"),
            },
            tags: vec![marker(fleet), rec_subnet.clone()],
        });
    }
    Ok(())
}

/// Are these the same address (for messages comparing pair text)?
pub fn pair_is(p: &AddressPair, ip: &str) -> bool {
    ip.parse().is_ok_and(|ip| same_address(&p.ip_address, ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: &str = "net";
    const SUB: &str = "sub";
    const SG: &str = "sg";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn port(id: &str, fixed: &str) -> Port {
        Port {
            id: id.into(),
            name: format!("{id}-name"),
            network_id: NET.into(),
            fixed_ips: vec![FixedIp {
                subnet_id: SUB.into(),
                ip_address: fixed.into(),
            }],
            port_security_enabled: Some(true),
            ..Port::default()
        }
    }

    fn actual() -> Actual {
        let mut a = Actual::default();
        for p in [
            port("bmc", "192.0.2.10"),
            port("uc", "192.0.2.1"),
            port("bm0", "192.0.2.100"),
        ] {
            a.ports.insert(p.id.clone(), p);
        }
        a.subnets.insert(
            SUB.into(),
            Subnet {
                id: SUB.into(),
                name: "provision".into(),
                network_id: NET.into(),
                cidr: "192.0.2.0/24".into(),
                ip_version: 4,
                ..Subnet::default()
            },
        );
        a.groups.insert(
            SG.into(),
            SecurityGroup {
                id: SG.into(),
                name: "bmc-sg".into(),
                ..SecurityGroup::default()
            },
        );
        a
    }

    fn desired() -> Desired {
        Desired {
            fleet: "lab".into(),
            layout: Layout::A,
            addresses: vec![ip("192.0.2.10"), ip("192.0.2.45"), ip("192.0.2.46")],
            bmc_port: Some("bmc".into()),
            network_id: NET.into(),
            subnet_id: SUB.into(),
            mtu: Some(1500),
            security_group: Some(SG.into()),
            rules: vec![RuleWant {
                protocol: "udp".into(),
                port: 623,
                remote: "192.0.2.0/24".into(),
                ethertype: "IPv4".into(),
                why: "IPMI".into(),
            }],
            boot_ports: vec!["bm0".into()],
            ipxe_file: Some("boot.ipxe".into()),
            undercloud: Some(("uc".into(), ip("192.0.2.1"))),
            metadata_route: true,
            pair_limit: DEFAULT_PAIR_LIMIT,
            ..Desired::default()
        }
    }

    /// Carry the operations out on the snapshot, as Neutron would.
    fn run(a: &mut Actual, ops: &[Op]) {
        let mut n = 0;
        for op in ops {
            match op.clone() {
                Op::AddTag(r, id, t) | Op::RemoveTag(r, id, t) => {
                    let add = matches!(op, Op::AddTag(..));
                    let tags = match r {
                        Resource::Port => &mut a.ports.get_mut(&id).unwrap().tags,
                        Resource::Subnet => &mut a.subnets.get_mut(&id).unwrap().tags,
                        Resource::SecurityGroup => &mut a.groups.get_mut(&id).unwrap().tags,
                    };
                    tags.retain(|x| *x != t);
                    if add {
                        tags.push(t);
                    }
                }
                Op::SetPairs { port, pairs, .. } => {
                    a.ports.get_mut(&port).unwrap().allowed_address_pairs = pairs
                }
                Op::SetDhcp { port, opts } => {
                    let p = a.ports.get_mut(&port).unwrap();
                    for o in opts {
                        p.extra_dhcp_opts.retain(|x| x.opt_name != o.opt_name);
                        if o.opt_value.is_some() {
                            p.extra_dhcp_opts.push(o);
                        }
                    }
                }
                Op::SetRoutes { subnet, routes } => {
                    a.subnets.get_mut(&subnet).unwrap().host_routes = routes
                }
                Op::CreateRule(mut r) => {
                    n += 1;
                    r.id = format!("rule{n}");
                    a.groups
                        .get_mut(&r.security_group_id.clone())
                        .unwrap()
                        .security_group_rules
                        .push(r);
                }
                Op::DeleteRule(id) => {
                    for g in a.groups.values_mut() {
                        g.security_group_rules.retain(|r| r.id != id);
                    }
                }
                Op::CreatePort { port, tags, attach } => {
                    let id = format!("new-{}", port.name);
                    a.ports.insert(
                        id.clone(),
                        Port {
                            id,
                            name: port.name,
                            network_id: port.network_id,
                            fixed_ips: port.fixed_ips,
                            tags,
                            device_id: attach.unwrap_or_default(),
                            device_owner: "compute:nova".into(),
                            port_security_enabled: Some(true),
                            ..Port::default()
                        },
                    );
                }
                Op::Attach { server, port } => a.ports.get_mut(&port).unwrap().device_id = server,
                Op::Detach { port, .. } => a.ports.get_mut(&port).unwrap().device_id.clear(),
                Op::DeletePort(id) => {
                    a.ports.remove(&id);
                }
                Op::CreateSubnet { subnet, tags } => {
                    // Neutron refuses overlapping subnets on one network.
                    let new = Cidr::parse(&subnet.cidr).unwrap();
                    assert!(a.subnets.values().all(|s| s.network_id != subnet.network_id
                        || !Cidr::parse(&s.cidr).unwrap().overlaps(new)));
                    let id = format!("new-{}", subnet.name);
                    a.subnets.insert(
                        id.clone(),
                        Subnet {
                            id,
                            name: subnet.name,
                            network_id: subnet.network_id,
                            cidr: subnet.cidr,
                            ip_version: subnet.ip_version,
                            tags,
                            ..Subnet::default()
                        },
                    );
                }
                Op::DeleteSubnet(id) => {
                    // Neutron refuses to delete a subnet a port still has an address on.
                    let c = Cidr::parse(&a.subnets[&id].cidr).unwrap();
                    assert!(
                        a.ports
                            .values()
                            .all(|p| p.addresses().all(|x| !c.contains(x)))
                    );
                    a.subnets.remove(&id);
                }
            }
        }
    }

    fn tagged(a: &Actual) -> Vec<String> {
        let any = |t: &[String]| t.iter().any(|x| x.starts_with("ovbmc:"));
        a.ports
            .values()
            .filter(|p| any(&p.tags))
            .map(|p| p.id.clone())
            .chain(
                a.subnets
                    .values()
                    .filter(|s| any(&s.tags))
                    .map(|s| s.id.clone()),
            )
            .chain(
                a.groups
                    .values()
                    .filter(|g| any(&g.tags))
                    .map(|g| g.id.clone()),
            )
            .collect()
    }

    #[test]
    fn empty_cloud_lists_every_change_then_converges() {
        let d = desired();
        let mut a = actual();
        let p = plan(&d, &a).unwrap();
        let text: Vec<String> = p.changes.iter().map(|c| c.to_string()).collect();
        let has = |s: &str| text.iter().any(|l| l.contains(s));
        assert!(has(
            "update port bmc-name (bmc): add allowed_address_pair 192.0.2.45"
        ));
        assert!(has("add allowed_address_pair 192.0.2.46"));
        assert!(has(
            "keep   port bmc-name (bmc): 192.0.2.10 is its fixed IP"
        ));
        assert!(has(
            "port uc-name (uc): add allowed_address_pair 169.254.169.254"
        ));
        assert!(has(
            "port bm0-name (bm0): set extra_dhcp_opt bootfile-name=boot.ipxe"
        ));
        assert!(has("set extra_dhcp_opt tftp-server=192.0.2.1"));
        assert!(has("set extra_dhcp_opt server-ip-address=192.0.2.1"));
        assert!(has("add host_route 169.254.169.254/32 via 192.0.2.1"));
        assert!(has(
            "create security group bmc-sg (sg): rule ingress udp 623 from 192.0.2.0/24"
        ));
        assert!(has("tag ovbmc:lab"));
        // Records come first, then the changes, untags last.
        assert!(matches!(p.ops[0], Op::AddTag(..)));
        run(&mut a, &p.ops);
        let again = plan(&d, &a).unwrap();
        assert!(again.is_empty(), "{:?}", again.ops);
        assert!(again.changes.iter().all(|c| c.verb == Verb::Keep));
        assert_eq!(tagged(&a), ["bm0", "bmc", "uc", "sub", "sg"]);
        // Destroy undoes all of it and leaves nothing tagged.
        let gone = plan(&Desired::nothing("lab"), &a).unwrap();
        run(&mut a, &gone.ops);
        assert!(tagged(&a).is_empty(), "{:?}", tagged(&a));
        let clean = actual();
        for (id, p) in &a.ports {
            assert_eq!(p, &clean.ports[id]);
        }
        assert_eq!(a.subnets, clean.subnets);
        assert_eq!(a.groups, clean.groups);
        assert!(plan(&Desired::nothing("lab"), &a).unwrap().is_empty());
    }

    #[test]
    fn what_others_set_survives_apply_and_destroy() {
        let d = desired();
        let mut a = actual();
        // Someone's pair (one the fleet also wants, and one it does not), someone's DHCP
        // option with another value, someone's rule that already covers IPMI.
        let bmc = a.ports.get_mut("bmc").unwrap();
        bmc.allowed_address_pairs = vec![
            AddressPair {
                ip_address: "192.0.2.45".into(),
                mac_address: Some("fa:16:3e:00:00:01".into()),
            },
            AddressPair {
                ip_address: "192.0.2.200".into(),
                mac_address: None,
            },
        ];
        a.ports.get_mut("bm0").unwrap().extra_dhcp_opts = vec![DhcpOpt {
            opt_name: "bootfile-name".into(),
            opt_value: Some("theirs.ipxe".into()),
            ip_version: Some(4),
        }];
        let theirs = Rule {
            id: "r0".into(),
            security_group_id: SG.into(),
            direction: "ingress".into(),
            ethertype: "IPv4".into(),
            protocol: Some("udp".into()),
            port_range_min: Some(600),
            port_range_max: Some(700),
            remote_ip_prefix: Some("192.0.2.0/24".into()),
            ..Rule::default()
        };
        a.groups.get_mut(SG).unwrap().security_group_rules = vec![theirs.clone()];
        let before = a.clone();
        let p = plan(&d, &a).unwrap();
        assert!(p.changes.iter().any(|c| {
            c.to_string()
                .contains("allowed_address_pair 192.0.2.45 (IPMI address, not ovbmc's; kept)")
        }));
        assert!(p.warnings.iter().any(|w| w.contains("bootfile-name")));
        run(&mut a, &p.ops);
        let pairs = &a.ports["bmc"].allowed_address_pairs;
        assert_eq!(pairs.len(), 3);
        assert!(pair_is(&pairs[0], "192.0.2.45") && pairs[0].mac_address.is_some());
        assert!(pair_is(&pairs[1], "192.0.2.200"));
        assert!(pair_is(&pairs[2], "192.0.2.46"));
        assert_eq!(a.ports["bm0"].extra_dhcp_opts.len(), 3);
        assert_eq!(a.groups[SG].security_group_rules, vec![theirs.clone()]);
        assert!(plan(&d, &a).unwrap().is_empty());
        // A pair added by hand after apply survives destroy too.
        a.ports
            .get_mut("bmc")
            .unwrap()
            .allowed_address_pairs
            .push(AddressPair {
                ip_address: "192.0.2.201".into(),
                mac_address: None,
            });
        let ops = plan(&Desired::nothing("lab"), &a).unwrap().ops;
        run(&mut a, &ops);
        let pairs: Vec<&str> = a.ports["bmc"]
            .allowed_address_pairs
            .iter()
            .map(|p| p.ip_address.as_str())
            .collect();
        assert_eq!(pairs, ["192.0.2.45", "192.0.2.200", "192.0.2.201"]);
        assert_eq!(
            a.ports["bm0"].extra_dhcp_opts,
            before.ports["bm0"].extra_dhcp_opts
        );
        assert_eq!(a.groups[SG].security_group_rules, vec![theirs]);
        assert!(tagged(&a).is_empty());
    }

    #[test]
    fn small_mtu_fails_unless_allowed() {
        let mut d = desired();
        d.mtu = Some(1450);
        let e = plan(&d, &actual()).unwrap_err();
        assert!(
            e.contains("1450") && e.contains("TripleO needs 1500"),
            "{e}"
        );
        assert!(e.contains("--allow-small-mtu"), "{e}");
        d.allow_small_mtu = true;
        assert!(plan(&d, &actual()).is_ok());
        // Destroy never looks at the MTU.
        assert!(plan(&Desired::nothing("lab"), &actual()).is_ok());
    }

    #[test]
    fn pair_limit_is_reported() {
        let mut d = desired();
        d.addresses = (1..=12)
            .map(|i| ip(&format!("192.0.2.{}", 20 + i)))
            .collect();
        let p = plan(&d, &actual()).unwrap();
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("12 allowed address pairs") && w.contains("layout B")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn layout_b_makes_one_port_per_address_and_destroy_removes_them() {
        let mut d = desired();
        d.layout = Layout::B;
        d.bmc_port = None;
        d.bmc_server = Some("bmc-vm".into());
        let mut a = actual();
        let p = plan(&d, &a).unwrap();
        let creates: Vec<String> = p
            .changes
            .iter()
            .filter(|c| c.verb == Verb::Create && c.text.starts_with("port"))
            .map(|c| c.text.clone())
            .collect();
        // 192.0.2.10 is the BMC port's fixed IP already (someone else's port): left alone.
        assert_eq!(creates.len(), 2, "{creates:?}");
        assert!(creates[0].contains("ovbmc-lab-192.0.2.45") && creates[0].contains("bmc-vm"));
        run(&mut a, &p.ops);
        assert_eq!(a.ports.len(), 5);
        assert!(plan(&d, &a).unwrap().is_empty());
        // The fleet shrinks: the port for the address it dropped goes.
        d.addresses.pop();
        let p = plan(&d, &a).unwrap();
        assert!(
            p.ops
                .contains(&Op::DeletePort("new-ovbmc-lab-192.0.2.46".into()))
        );
        assert!(p.ops.iter().any(|o| matches!(o, Op::Detach { .. })));
        run(&mut a, &p.ops);
        let ops = plan(&Desired::nothing("lab"), &a).unwrap().ops;
        run(&mut a, &ops);
        assert_eq!(a.ports.len(), 3);
        assert!(tagged(&a).is_empty());
    }

    #[test]
    fn layout_b_with_a_subnet_per_port_makes_them_and_destroy_removes_them() {
        let mut d = desired();
        d.layout = Layout::B;
        d.bmc_port = None;
        d.bmc_server = Some("bmc-vm".into());
        d.subnet_per_port = true;
        d.addresses = vec![ip("192.0.3.45"), ip("192.0.3.49")];
        let mut a = actual();
        let p = plan(&d, &a).unwrap();
        let subnets: Vec<&Op> = p
            .ops
            .iter()
            .filter(|o| matches!(o, Op::CreateSubnet { .. }))
            .collect();
        assert_eq!(subnets.len(), 2, "{:?}", p.changes);
        // Each subnet is made before the port whose address it holds.
        let first_subnet = p
            .ops
            .iter()
            .position(|o| matches!(o, Op::CreateSubnet { .. }));
        let first_port = p
            .ops
            .iter()
            .position(|o| matches!(o, Op::CreatePort { .. }));
        assert!(first_subnet < first_port);
        assert!(
            p.changes
                .iter()
                .any(|c| c.verb == Verb::Create && c.text.contains("192.0.3.44/30"))
        );
        run(&mut a, &p.ops);
        assert_eq!(a.subnets.len(), 3);
        assert!(plan(&d, &a).unwrap().is_empty());
        // The fleet shrinks: the port and then the subnet of the address it dropped go.
        d.addresses.pop();
        let p = plan(&d, &a).unwrap();
        let port = p
            .ops
            .iter()
            .position(|o| *o == Op::DeletePort("new-ovbmc-lab-192.0.3.49".into()));
        let subnet = p
            .ops
            .iter()
            .position(|o| *o == Op::DeleteSubnet("new-ovbmc-lab-192.0.3.49".into()));
        assert!(port.is_some() && port < subnet, "{:?}", p.ops);
        run(&mut a, &p.ops);
        let ops = plan(&Desired::nothing("lab"), &a).unwrap().ops;
        run(&mut a, &ops);
        assert_eq!(a.subnets.len(), 1);
        assert!(tagged(&a).is_empty());
    }

    #[test]
    fn a_subnet_per_port_refuses_what_neutron_would() {
        let mut d = desired();
        d.layout = Layout::B;
        d.bmc_server = Some("bmc-vm".into());
        d.subnet_per_port = true;
        // Inside the provisioning subnet: Neutron refuses the overlap.
        d.addresses = vec![ip("192.0.2.45")];
        let e = plan(&d, &actual()).unwrap_err();
        assert!(e.contains("overlap") && e.contains("192.0.2.0/24"), "{e}");
        // Two addresses in one block.
        d.addresses = vec![ip("192.0.3.45"), ip("192.0.3.46")];
        d.port_subnet_prefix = Some(29);
        let e = plan(&d, &actual()).unwrap_err();
        assert!(e.contains("one /29"), "{e}");
        // The network or broadcast address of its block, or a block too small for a port.
        d.port_subnet_prefix = None;
        d.addresses = vec![ip("192.0.3.44")];
        assert!(plan(&d, &actual()).unwrap_err().contains("network address"));
        d.addresses = vec![ip("192.0.3.47")];
        assert!(
            plan(&d, &actual())
                .unwrap_err()
                .contains("broadcast address")
        );
        d.port_subnet_prefix = Some(32);
        d.addresses = vec![ip("192.0.3.45")];
        let e = plan(&d, &actual()).unwrap_err();
        assert!(e.contains("longer than /30"), "{e}");
        d.port_subnet_prefix = Some(29);
        // Someone else's subnet of exactly the block is used and left alone.
        d.addresses = vec![ip("192.0.3.45")];
        let mut a = actual();
        a.subnets.insert(
            "theirs".into(),
            Subnet {
                id: "theirs".into(),
                network_id: NET.into(),
                cidr: "192.0.3.40/29".into(),
                ip_version: 4,
                ..Subnet::default()
            },
        );
        let p = plan(&d, &a).unwrap();
        assert!(!p.ops.iter().any(|o| matches!(o, Op::CreateSubnet { .. })));
        run(&mut a, &p.ops);
        let ops = plan(&Desired::nothing("lab"), &a).unwrap().ops;
        run(&mut a, &ops);
        assert!(a.subnets.contains_key("theirs"));
    }

    #[test]
    fn another_fleets_records_are_not_ours() {
        let mut a = actual();
        a.ports.get_mut("bmc").unwrap().tags = vec![
            "ovbmc:other".into(),
            "ovbmc:other:pair=192.0.2.45".into(),
            "ovbmc:lab2".into(),
        ];
        a.ports.get_mut("bmc").unwrap().allowed_address_pairs = vec![AddressPair {
            ip_address: "192.0.2.45".into(),
            mac_address: None,
        }];
        let p = plan(&Desired::nothing("lab"), &a).unwrap();
        assert!(p.is_empty(), "{:?}", p.ops);
    }

    #[test]
    fn port_security_off_needs_no_pairs() {
        let mut a = actual();
        a.ports.get_mut("bmc").unwrap().port_security_enabled = Some(false);
        let p = plan(&desired(), &a).unwrap();
        assert!(
            !p.ops
                .iter()
                .any(|o| matches!(o, Op::SetPairs { port, .. } if port == "bmc"))
        );
        assert!(
            p.changes
                .iter()
                .any(|c| c.text.contains("port security is off"))
        );
    }
}
