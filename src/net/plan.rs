//! Planning: from the host's state and the BMC addresses to the routing ops they need.
//! Pure (no I/O), so every decision is unit-tested.

use std::collections::HashMap;
use std::net::IpAddr;

use super::{Cidr, HostState, NetError, Op};

/// Process-wide routing settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingSettings {
    /// Table numbers are `table_base + ifindex` unless a BMC sets its own.
    pub table_base: u32,
    /// Priority of the rules.
    pub priority: u32,
    /// Add addresses that are not on the host.
    pub add_address: bool,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        // 1000 sits well before the main table's rule (32766) and clear of the small
        // numbers distributions and NetworkManager tend to use.
        Self {
            table_base: 1000,
            priority: 1000,
            add_address: false,
        }
    }
}

/// One BMC address to route, with its optional hints from the fleet file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteRequest {
    /// The BMC address.
    pub addr: Option<IpAddr>,
    /// `gateway`.
    pub gateway: Option<IpAddr>,
    /// `interface`.
    pub interface: Option<String>,
    /// `table`.
    pub table: Option<u32>,
    /// `prefix` (when the address has to be added).
    pub prefix: Option<u8>,
}

impl RouteRequest {
    /// A request for `addr` with no hints.
    pub fn new(addr: IpAddr) -> Self {
        Self {
            addr: Some(addr),
            ..Self::default()
        }
    }
}

/// A plan: ops in apply order (addresses, then routes, then rules, so that no rule ever
/// points at an empty table), and warnings for the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The ops.
    pub ops: Vec<Op>,
    /// Things the operator should know (e.g. no gateway found).
    pub warnings: Vec<String>,
}

/// Plan the routing for `reqs` on a host in `state`.
pub fn plan(
    state: &HostState,
    reqs: &[RouteRequest],
    s: &RoutingSettings,
) -> Result<Plan, NetError> {
    let mut addrs = Vec::new();
    let mut routes = Vec::new();
    let mut rules = Vec::new();
    let mut warnings = Vec::new();
    // (IPv6?, table) -> (dev, gateway) of the first BMC that used it, to catch clashes. The
    // kernel keeps IPv4 and IPv6 tables apart (the same number is two tables), so an
    // interface's IPv4 and IPv6 addresses share a number without sharing routes.
    let mut tables: HashMap<(bool, u32), (String, Option<IpAddr>)> = HashMap::new();
    let mut seen_addrs = Vec::new();
    for r in reqs {
        let Some(addr) = r.addr else { continue };
        // Loopback needs no policy routing (and has no gateway); skip quietly, so that a
        // test fleet on 127.0.0.0/8 can run with --routing auto too.
        if addr.is_loopback() || seen_addrs.contains(&addr) {
            continue;
        }
        seen_addrs.push(addr);
        let (ifindex, ifname, subnet) = locate(state, r, addr, s, &mut addrs)?;
        let table = r
            .table
            .unwrap_or_else(|| s.table_base.saturating_add(ifindex));
        let gateway = r.gateway.or_else(|| find_gateway(state, &ifname, subnet));
        if gateway.is_none() {
            warnings.push(format!(
                "routing: no gateway for {addr} on {ifname} (no default route in the main \
                 table via {ifname} or inside {}); only clients on that subnet will get \
                 answers. Set `gateway` for this BMC.",
                subnet.network()
            ));
        }
        match tables.get(&(addr.is_ipv6(), table)) {
            Some((dev, gw)) if *dev != ifname || *gw != gateway => {
                return Err(NetError::TableConflict {
                    table,
                    addr,
                    message: format!(
                        "{addr} needs dev {ifname} via {}, another BMC dev {dev} via {}",
                        show(gateway),
                        show(*gw)
                    ),
                });
            }
            Some(_) => {}
            None => {
                tables.insert((addr.is_ipv6(), table), (ifname.clone(), gateway));
                // The on-link route first: some kernels check a gateway against the table
                // the route goes in.
                routes.push(Op::Route {
                    dst: Some(subnet.network()),
                    via: None,
                    dev: ifname.clone(),
                    table,
                });
                if let Some(gw) = gateway {
                    routes.push(Op::Route {
                        dst: None,
                        via: Some(gw),
                        dev: ifname.clone(),
                        table,
                    });
                }
            }
        }
        rules.push(Op::Rule {
            from: addr,
            table,
            priority: s.priority,
        });
    }
    let mut ops = addrs;
    ops.extend(routes);
    ops.extend(rules);
    Ok(Plan { ops, warnings })
}

fn show(gw: Option<IpAddr>) -> String {
    gw.map_or_else(|| "no gateway".into(), |g| g.to_string())
}

/// The interface (index, name) and subnet that hold `addr`, adding an address op when
/// `--add-address` allows and it is missing.
fn locate(
    state: &HostState,
    r: &RouteRequest,
    addr: IpAddr,
    s: &RoutingSettings,
    addrs: &mut Vec<Op>,
) -> Result<(u32, String, Cidr), NetError> {
    if let Some(a) = state.addrs.iter().find(|a| a.cidr.addr == addr) {
        if let Some(want) = &r.interface
            && *want != a.ifname
        {
            return Err(NetError::Interface {
                addr,
                message: format!("is on {}, but the config says interface {want}", a.ifname),
            });
        }
        return Ok((a.ifindex, a.ifname.clone(), a.cidr));
    }
    if !s.add_address {
        return Err(NetError::NotLocal { addr });
    }
    // Where to add it: the named interface, else the interface whose subnet holds it.
    let (ifindex, ifname, prefix) = match &r.interface {
        Some(name) => {
            let ifindex = state
                .links
                .iter()
                .find(|(_, n)| n == name)
                .map(|(i, _)| *i)
                .ok_or_else(|| NetError::Interface {
                    addr,
                    message: format!("interface {name} does not exist"),
                })?;
            let from_subnet = state
                .addrs
                .iter()
                .find(|a| a.ifname == *name && a.cidr.contains(addr))
                .map(|a| a.cidr.prefix);
            let dflt = if addr.is_ipv4() { 24 } else { 64 };
            (
                ifindex,
                name.clone(),
                r.prefix.or(from_subnet).unwrap_or(dflt),
            )
        }
        None => {
            let a = state
                .addrs
                .iter()
                .find(|a| !a.cidr.addr.is_loopback() && a.cidr.prefix > 0 && a.cidr.contains(addr))
                .ok_or(NetError::NoInterface { addr })?;
            (
                a.ifindex,
                a.ifname.clone(),
                r.prefix.unwrap_or(a.cidr.prefix),
            )
        }
    };
    let cidr = Cidr { addr, prefix };
    addrs.push(Op::Address {
        cidr,
        dev: ifname.clone(),
    });
    Ok((ifindex, ifname, cidr))
}

/// The gateway replies from `subnet` on `ifname` should use: the main table's default route
/// via that interface, else a main-table default gateway that lies inside the subnet (the
/// usual case of several NICs on one subnet with one router, where the main table has a
/// default route via the first NIC only).
fn find_gateway(state: &HostState, ifname: &str, subnet: Cidr) -> Option<IpAddr> {
    let defaults = state.main_routes.iter().filter(|r| {
        r.dst.is_none()
            && r.gateway
                .is_some_and(|g| g.is_ipv4() == subnet.addr.is_ipv4())
    });
    let mut fallback = None;
    for r in defaults {
        if r.dev.as_deref() == Some(ifname) {
            return r.gateway;
        }
        if fallback.is_none() && r.gateway.is_some_and(|g| subnet.contains(g)) {
            fallback = r.gateway;
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::super::{IfAddr, Route, Rule};
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        let (a, p) = s.split_once('/').unwrap();
        Cidr {
            addr: ip(a),
            prefix: p.parse().unwrap(),
        }
    }

    /// The OVB shape: two NICs on one subnet, default route via the first only.
    fn host() -> HostState {
        HostState {
            addrs: vec![
                IfAddr {
                    ifindex: 2,
                    ifname: "eth1".into(),
                    cidr: cidr("198.51.100.10/24"),
                },
                IfAddr {
                    ifindex: 3,
                    ifname: "eth2".into(),
                    cidr: cidr("198.51.100.11/24"),
                },
            ],
            links: vec![(1, "lo".into()), (2, "eth1".into()), (3, "eth2".into())],
            main_routes: vec![
                Route {
                    dst: None,
                    gateway: Some(ip("198.51.100.1")),
                    dev: Some("eth1".into()),
                },
                Route {
                    dst: Some(cidr("198.51.100.0/24")),
                    gateway: None,
                    dev: Some("eth1".into()),
                },
            ],
            rules: vec![],
            tables: HashMap::new(),
        }
    }

    fn cmds(p: &Plan) -> Vec<String> {
        p.ops.iter().map(|o| o.command(true)).collect()
    }

    #[test]
    fn two_nics_one_subnet() {
        let reqs = [
            RouteRequest::new(ip("198.51.100.10")),
            RouteRequest::new(ip("198.51.100.11")),
        ];
        let p = plan(&host(), &reqs, &RoutingSettings::default()).unwrap();
        assert_eq!(
            cmds(&p),
            [
                "ip route add 198.51.100.0/24 dev eth1 table 1002",
                "ip route add default via 198.51.100.1 dev eth1 table 1002",
                "ip route add 198.51.100.0/24 dev eth2 table 1003",
                "ip route add default via 198.51.100.1 dev eth2 table 1003",
                "ip rule add from 198.51.100.10 table 1002 priority 1000",
                "ip rule add from 198.51.100.11 table 1003 priority 1000",
            ]
        );
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn hints_and_loopback() {
        let reqs = [
            RouteRequest::new(ip("127.0.0.1")),
            RouteRequest {
                gateway: Some(ip("198.51.100.254")),
                table: Some(77),
                ..RouteRequest::new(ip("198.51.100.11"))
            },
        ];
        let s = RoutingSettings {
            priority: 5,
            ..RoutingSettings::default()
        };
        let p = plan(&host(), &reqs, &s).unwrap();
        assert_eq!(
            cmds(&p),
            [
                "ip route add 198.51.100.0/24 dev eth2 table 77",
                "ip route add default via 198.51.100.254 dev eth2 table 77",
                "ip rule add from 198.51.100.11 table 77 priority 5",
            ]
        );
    }

    #[test]
    fn missing_addresses() {
        let reqs = [RouteRequest::new(ip("198.51.100.12"))];
        let e = plan(&host(), &reqs, &RoutingSettings::default()).unwrap_err();
        assert!(matches!(e, NetError::NotLocal { .. }), "{e}");
        let add = RoutingSettings {
            add_address: true,
            ..RoutingSettings::default()
        };
        let p = plan(&host(), &reqs, &add).unwrap();
        assert_eq!(cmds(&p)[0], "ip addr add 198.51.100.12/24 dev eth1");
        let on_eth2 = [RouteRequest {
            interface: Some("eth2".into()),
            ..RouteRequest::new(ip("198.51.100.12"))
        }];
        let p = plan(&host(), &on_eth2, &add).unwrap();
        assert_eq!(
            cmds(&p),
            [
                "ip addr add 198.51.100.12/24 dev eth2",
                "ip route add 198.51.100.0/24 dev eth2 table 1003",
                "ip route add default via 198.51.100.1 dev eth2 table 1003",
                "ip rule add from 198.51.100.12 table 1003 priority 1000",
            ]
        );
        let elsewhere = [RouteRequest::new(ip("203.0.113.5"))];
        assert!(matches!(
            plan(&host(), &elsewhere, &add),
            Err(NetError::NoInterface { .. })
        ));
        let wrong_if = [RouteRequest {
            interface: Some("eth2".into()),
            ..RouteRequest::new(ip("198.51.100.10"))
        }];
        assert!(matches!(
            plan(&host(), &wrong_if, &add),
            Err(NetError::Interface { .. })
        ));
    }

    #[test]
    fn dual_stack_shares_the_table_number() {
        let mut h = host();
        h.addrs.push(IfAddr {
            ifindex: 2,
            ifname: "eth1".into(),
            cidr: cidr("2001:db8::10/64"),
        });
        h.main_routes.push(Route {
            dst: None,
            gateway: Some(ip("2001:db8::1")),
            dev: Some("eth1".into()),
        });
        let reqs = [
            RouteRequest::new(ip("198.51.100.10")),
            RouteRequest::new(ip("2001:db8::10")),
        ];
        let p = plan(&h, &reqs, &RoutingSettings::default()).unwrap();
        assert_eq!(
            cmds(&p),
            [
                "ip route add 198.51.100.0/24 dev eth1 table 1002",
                "ip route add default via 198.51.100.1 dev eth1 table 1002",
                "ip -6 route add 2001:db8::/64 dev eth1 table 1002",
                "ip -6 route add default via 2001:db8::1 dev eth1 table 1002",
                "ip rule add from 198.51.100.10 table 1002 priority 1000",
                "ip -6 rule add from 2001:db8::10 table 1002 priority 1000",
            ]
        );
    }

    #[test]
    fn table_clash_and_no_gateway() {
        let reqs = [
            RouteRequest {
                table: Some(9),
                ..RouteRequest::new(ip("198.51.100.10"))
            },
            RouteRequest {
                table: Some(9),
                ..RouteRequest::new(ip("198.51.100.11"))
            },
        ];
        assert!(matches!(
            plan(&host(), &reqs, &RoutingSettings::default()),
            Err(NetError::TableConflict { table: 9, .. })
        ));
        let mut h = host();
        h.main_routes.clear();
        let p = plan(
            &h,
            &[RouteRequest::new(ip("198.51.100.11"))],
            &RoutingSettings::default(),
        )
        .unwrap();
        assert_eq!(p.ops.len(), 2);
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn presence() {
        let mut h = host();
        h.rules.push(Rule {
            src: Some(cidr("198.51.100.11/32")),
            table: "1003".into(),
        });
        h.tables.insert(
            1003,
            vec![Route {
                dst: None,
                gateway: Some(ip("198.51.100.1")),
                dev: Some("eth2".into()),
            }],
        );
        let p = plan(
            &h,
            &[RouteRequest::new(ip("198.51.100.11"))],
            &RoutingSettings::default(),
        )
        .unwrap();
        let present: Vec<bool> = p.ops.iter().map(|o| h.has(o)).collect();
        assert_eq!(present, [false, true, true]);
    }
}
