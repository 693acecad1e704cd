//! [`NetOps`] over rtnetlink: the kernel's routing socket, no iproute2 needed (`--routing auto`).
//!
//! All netlink code lives here, behind [`NetOps`]: rtnetlink breaks its API every few months
//! (0.23 in Aug 2026, 0.24 in Nov 2026), so its version is pinned in `Cargo.toml` and a bump
//! touches this file only.
//!
//! The messages mirror what iproute2 sends for the commands `ovbmc routes --dry-run` prints
//! (checked with `strace -e trace=sendmsg -xx ip ...`, iproute2 6.1): the same header fields,
//! attributes and flags (`NLM_F_CREATE|NLM_F_EXCL` to add, so an add never silently changes
//! an existing entry; plain to delete), with three differences that change nothing for the
//! lookup: routes are `proto static` (iproute2 says `boot`), an IPv4 address also gets its
//! broadcast address (as `ip addr add ... brd +`), and an IPv6 default route has no empty
//! RTA_DST. [`request`] builds them and is pure, so the unit tests below check every field
//! without privileges; [`Netlink`] sends them.
//!
//! Why a thread per call: [`NetOps`] is synchronous, and the [`super::Router`] calls it from
//! anywhere, including from `Drop` on a tokio worker thread when start-up fails. A tokio
//! runtime cannot be entered from inside another one, so each call runs a small
//! current-thread runtime on a short-lived thread of its own and waits for it. The calls are
//! few (a read and a handful of changes per start or reload), so the cost does not matter.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::stream::{Stream, StreamExt as _};
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{AddressMessageBuilder, Handle, IpVersion, RouteMessageBuilder};

use super::{Applied, Cidr, HostState, IfAddr, NetError, NetOps, Op, Route, Rule};

/// Routing through rtnetlink.
#[derive(Clone, Copy, Debug, Default)]
pub struct Netlink;

impl Netlink {
    /// A netlink backend (it opens a socket per call, nothing up front).
    pub fn new() -> Self {
        Self
    }
}

impl NetOps for Netlink {
    fn state(&self, tables: &[u32]) -> Result<HostState, NetError> {
        run(|h| read_state(h, tables))
    }

    fn apply(&self, op: &Op, add: bool) -> Result<Applied, NetError> {
        run(|h| async move {
            let links = dump(h.link().get().execute(), "ip link show").await?;
            let names = link_names(&links);
            let dev = match op {
                Op::Address { dev, .. } | Op::Route { dev, .. } => Some(dev.as_str()),
                Op::Rule { .. } => None,
            };
            let ifindex = match dev {
                Some(d) => Some(
                    names
                        .iter()
                        .find(|(_, n)| n.as_str() == d)
                        .map(|(i, _)| *i)
                        .ok_or_else(|| NetError::Kernel {
                            command: op.command(add),
                            error: io::Error::from_raw_os_error(ENODEV),
                            hint: format!(": there is no interface {d}"),
                        })?,
                ),
                None => None,
            };
            send(h, request(op, add, ifindex.unwrap_or(0)), op, add).await
        })
    }
}

// errno values (Linux, asm-generic/errno-base.h and errno.h). The ones the kernel answers a
// routing change with.
const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EACCES: i32 = 13;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EINVAL: i32 = 22;
const EADDRNOTAVAIL: i32 = 99;
const ENETUNREACH: i32 = 101;
const EHOSTUNREACH: i32 = 113;

/// Run `f` with a fresh netlink connection on a thread of its own (see the module docs).
fn run<T, F, Fut>(f: F) -> Result<T, NetError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, NetError>>,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|error| NetError::Netlink { error })?;
            rt.block_on(async {
                let (conn, handle, _) =
                    rtnetlink::new_connection().map_err(|error| NetError::Netlink { error })?;
                // The connection task reads the socket; it ends when the runtime is dropped.
                tokio::spawn(conn);
                f(handle).await
            })
        })
        .join()
        .unwrap_or_else(|_| {
            Err(NetError::Netlink {
                error: io::Error::other("the netlink thread panicked"),
            })
        })
    })
}

/// Collect a dump (`ip ... show`), turning a kernel error into a [`NetError`] that names
/// the command it stands for.
async fn dump<T>(
    stream: impl Stream<Item = Result<T, rtnetlink::Error>>,
    command: &str,
) -> Result<Vec<T>, NetError> {
    let mut stream = std::pin::pin!(stream);
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(m) => out.push(m),
            Err(rtnetlink::Error::NetlinkError(e)) => {
                return Err(kernel_error(command.to_string(), e.to_io(), None));
            }
            Err(e) => {
                return Err(NetError::Netlink {
                    error: io::Error::other(format!("{command}: {e}")),
                });
            }
        }
    }
    Ok(out)
}

async fn read_state(h: Handle, tables: &[u32]) -> Result<HostState, NetError> {
    let links = dump(h.link().get().execute(), "ip link show").await?;
    let names = link_names(&links);
    let mut st = HostState {
        links: names.iter().map(|(i, n)| (*i, n.clone())).collect(),
        ..HostState::default()
    };
    st.links.sort_unstable();
    for a in dump(h.address().get().execute(), "ip addr show").await? {
        st.addrs.extend(if_addr(&a, &names));
    }
    for (family, name) in [(AddressFamily::Inet, "-4"), (AddressFamily::Inet6, "-6")] {
        // A dump request's header selects nothing unless NETLINK_GET_STRICT_CHK is on (it is
        // not): the kernel returns every table of the family, which is split up here.
        let mut q = RouteMessage::default();
        q.header.address_family = family;
        let cmd = format!("ip {name} route show table all");
        for m in dump(h.route().get(q).execute(), &cmd).await? {
            let Some((table, r)) = route_of(&m, &names) else {
                continue;
            };
            if table == u32::from(RouteHeader::RT_TABLE_MAIN) {
                st.main_routes.push(r);
            } else if tables.contains(&table) {
                st.tables.entry(table).or_default().push(r);
            }
        }
        let v = if family == AddressFamily::Inet {
            IpVersion::V4
        } else {
            IpVersion::V6
        };
        let cmd = format!("ip {name} rule show");
        for m in dump(h.rule().get(v).execute(), &cmd).await? {
            st.rules.extend(rule_of(&m));
        }
    }
    Ok(st)
}

fn link_names(links: &[LinkMessage]) -> HashMap<u32, String> {
    links
        .iter()
        .filter_map(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some((l.header.index, n.clone())),
                _ => None,
            })
        })
        .collect()
}

/// An address as `ip addr` shows it: IFA_LOCAL (the host's own address; on a point-to-point
/// link IFA_ADDRESS is the peer), else IFA_ADDRESS (IPv6 sends only that).
fn if_addr(m: &AddressMessage, names: &HashMap<u32, String>) -> Option<IfAddr> {
    let pick = |local: bool| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) if local => Some(*ip),
            AddressAttribute::Address(ip) if !local => Some(*ip),
            _ => None,
        })
    };
    let addr = pick(true).or_else(|| pick(false))?;
    Some(IfAddr {
        ifindex: m.header.index,
        ifname: names.get(&m.header.index)?.clone(),
        cidr: Cidr {
            addr,
            prefix: m.header.prefix_len,
        },
    })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A route and the table it is in (RTA_TABLE when present: the header's byte only holds
/// tables below 256).
fn route_of(m: &RouteMessage, names: &HashMap<u32, String>) -> Option<(u32, Route)> {
    let mut table = u32::from(m.header.table);
    let (mut dst, mut gateway, mut oif) = (None, None, None);
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = route_ip(d),
            RouteAttribute::Gateway(g) => gateway = route_ip(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let prefix = m.header.destination_prefix_length;
    let dst = match (dst, prefix) {
        // `default` (iproute2 sends RTA_DST ::/0 for an IPv6 default route; the kernel
        // reports it without, either is prefix length 0).
        (_, 0) => None,
        (Some(addr), prefix) => Some(Cidr { addr, prefix }),
        (None, _) => return None,
    };
    Some((
        table,
        Route {
            dst,
            gateway,
            dev: oif.and_then(|i| names.get(&i).cloned()),
        },
    ))
}

/// A rule as `ip -j rule show` reports it (the table by name for the three named ones, so
/// that [`HostState::has`] compares the same way for both backends).
fn rule_of(m: &RuleMessage) -> Option<Rule> {
    let mut table = u32::from(m.header.table);
    let mut src = None;
    for a in &m.attributes {
        match a {
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Source(ip) => src = Some(*ip),
            _ => {}
        }
    }
    if m.header.action != RuleAction::ToTable {
        // `goto`, `blackhole`, `nop` ...: not a lookup, never one of ours.
        return None;
    }
    let table = match table {
        253 => "default".to_string(),
        254 => "main".to_string(),
        255 => "local".to_string(),
        t => t.to_string(),
    };
    Some(Rule {
        src: src.map(|addr| Cidr {
            addr,
            prefix: m.header.src_len,
        }),
        table,
    })
}

/// The netlink message for `op` (`add` or delete), `ifindex` being the index of its `dev`.
/// Pure: the unit tests check it field by field.
pub(crate) fn request(op: &Op, add: bool, ifindex: u32) -> NetlinkMessage<RouteNetlinkMessage> {
    let body = match op {
        Op::Rule {
            from,
            table,
            priority,
        } => {
            let mut m = RuleMessage::default();
            m.header.family = family(*from);
            m.header.src_len = host_len(*from);
            // As iproute2: a table above 255 goes in FRA_TABLE with the header's byte unset
            // (RT_TABLE_UNSPEC); the delete leaves the action unset, which matches any.
            set_table(
                &mut m.header.table,
                &mut m.attributes,
                *table,
                RuleAttribute::Table,
            );
            m.attributes.insert(0, RuleAttribute::Source(*from));
            m.attributes.push(RuleAttribute::Priority(*priority));
            if add {
                m.header.action = RuleAction::ToTable;
                RouteNetlinkMessage::NewRule(m)
            } else {
                RouteNetlinkMessage::DelRule(m)
            }
        }
        Op::Route {
            dst,
            via,
            dev: _,
            table,
        } => {
            let m = route_message(*dst, *via, ifindex, *table, add);
            if add {
                RouteNetlinkMessage::NewRoute(m)
            } else {
                RouteNetlinkMessage::DelRoute(m)
            }
        }
        Op::Address { cidr, dev: _ } => {
            let mut m = match cidr.addr {
                IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
                    .index(ifindex)
                    .address(a, cidr.prefix)
                    .build(),
                IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
                    .index(ifindex)
                    .address(a, cidr.prefix)
                    .build(),
            };
            if add && cidr.addr.is_ipv6() {
                // `nodad`: a tentative address cannot be bound for a second or more, and
                // the BMC binds it right after (the same reason `Op::args` gives).
                m.header.flags |= AddressHeaderFlags::Nodad;
            }
            if add {
                RouteNetlinkMessage::NewAddress(m)
            } else {
                RouteNetlinkMessage::DelAddress(m)
            }
        }
    };
    let mut msg = NetlinkMessage::from(body);
    msg.header.flags = if add {
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE
    } else {
        NLM_F_REQUEST | NLM_F_ACK
    };
    msg.finalize();
    msg
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn host_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn set_table<A>(byte: &mut u8, attrs: &mut Vec<A>, table: u32, attr: impl Fn(u32) -> A) {
    match u8::try_from(table) {
        Ok(t) => *byte = t,
        Err(_) => {
            *byte = 0;
            attrs.push(attr(table));
        }
    }
}

fn route_message(
    dst: Option<Cidr>,
    via: Option<IpAddr>,
    ifindex: u32,
    table: u32,
    add: bool,
) -> RouteMessage {
    let v6 = dst
        .map(|d| d.addr.is_ipv6())
        .or(via.map(|v| v.is_ipv6()))
        .unwrap_or(false);
    // The builder gives the family and the header defaults; the attributes are pushed in
    // iproute2's order (its typed setters would need one copy of this per family).
    let mut m = if v6 {
        RouteMessageBuilder::<Ipv6Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    };
    if let Some(d) = dst {
        let net = d.network();
        m.header.destination_prefix_length = net.prefix;
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(net.addr)));
    }
    if let Some(g) = via {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(g)));
    }
    set_table(
        &mut m.header.table,
        &mut m.attributes,
        table,
        RouteAttribute::Table,
    );
    m.attributes.push(RouteAttribute::Oif(ifindex));
    if add {
        // `ip route add` without `via` is an on-link route: scope link, as iproute2 sets it.
        m.header.scope = if via.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        m.header.protocol = RouteProtocol::Static;
        m.header.kind = RouteType::Unicast;
    } else {
        // As `ip route del`: scope "nowhere", protocol and type unset, which the kernel reads
        // as "any" (fib_table_delete), so the delete matches the route we added.
        m.header.scope = RouteScope::NoWhere;
        m.header.protocol = RouteProtocol::Unspec;
        m.header.kind = RouteType::Unspec;
    }
    m
}

/// Send one change and read the kernel's answer (an ACK or an errno).
async fn send(
    mut h: Handle,
    msg: NetlinkMessage<RouteNetlinkMessage>,
    op: &Op,
    add: bool,
) -> Result<Applied, NetError> {
    let command = op.command(add);
    let replies = h.request(msg).map_err(|e| NetError::Netlink {
        error: io::Error::other(format!("{command}: {e}")),
    })?;
    let mut replies = std::pin::pin!(replies);
    while let Some(reply) = replies.next().await {
        let NetlinkPayload::Error(e) = reply.payload else {
            continue;
        };
        let Some(code) = e.code else {
            // An ACK.
            return Ok(Applied::Done);
        };
        let errno = code.get().abs();
        return match (add, errno) {
            // NLM_F_EXCL: the entry is there already (someone added it since we read the
            // state). It is not ours to remove later.
            (true, EEXIST) => Ok(Applied::AlreadyThere),
            // Gone already: ENOENT for a rule, ESRCH for a route, EADDRNOTAVAIL for an address.
            (false, ENOENT | ESRCH | EADDRNOTAVAIL) => Ok(Applied::AlreadyThere),
            _ => Err(kernel_error(
                command,
                io::Error::from_raw_os_error(errno),
                Some(op),
            )),
        };
    }
    Ok(Applied::Done)
}

/// The error for errno `error` from `command` (the change `op`, if it is one), with what it
/// most likely means.
fn kernel_error(command: String, error: io::Error, op: Option<&Op>) -> NetError {
    let errno = error.raw_os_error().unwrap_or(0);
    if matches!(errno, EPERM | EACCES) {
        return NetError::Permission { command };
    }
    let hint = match (op, errno) {
        // A gateway the kernel cannot reach through `dev`: IPv4 answers EINVAL ("Nexthop has
        // invalid gateway"), IPv6 EHOSTUNREACH (Linux 6.18, checked with iproute2).
        (
            Some(Op::Route {
                via: Some(gw), dev, ..
            }),
            EINVAL | ENETUNREACH | EHOSTUNREACH,
        ) => format!(
            ": gateway {gw} is not reachable through {dev} (not in {dev}'s subnet?); set \
             this BMC's `gateway`"
        ),
        (_, ENODEV) => ": no such interface".into(),
        _ => String::new(),
    };
    NetError::Kernel {
        command,
        error,
        hint,
    }
}

/// Address changes as the kernel announces them (RTM_NEWADDR / RTM_DELADDR on the
/// RTNLGRP_IPV4_IFADDR and RTNLGRP_IPV6_IFADDR groups: what `ip monitor address` shows), one
/// `()` per notification, for `ovbmc cloud watch-addresses`, which then reads the addresses
/// again through [`NetOps::state`] (a notification only says that something changed; a
/// re-read cannot miss one that was lost when the socket's buffer overflowed). The monitor
/// runs on a thread of its own, as every netlink call here does; it ends when the receiver is
/// dropped, and the receiver ends (`None`) if the socket fails.
pub fn address_events() -> Result<tokio::sync::mpsc::UnboundedReceiver<()>, NetError> {
    use rtnetlink::MulticastGroup;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("netlink-monitor".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(rt) => rt,
                Err(error) => {
                    let _ = ready_tx.send(Err(NetError::Netlink { error }));
                    return;
                }
            };
            rt.block_on(async move {
                let groups = [MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr];
                let (conn, _handle, mut messages) =
                    match rtnetlink::new_multicast_connection(&groups) {
                        Ok(c) => c,
                        Err(error) => {
                            let _ = ready_tx.send(Err(NetError::Netlink { error }));
                            return;
                        }
                    };
                tokio::spawn(conn);
                let _ = ready_tx.send(Ok(()));
                while messages.next().await.is_some() {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
            });
        })
        .map_err(|error| NetError::Netlink { error })?;
    ready_rx.recv().unwrap_or_else(|_| {
        Err(NetError::Netlink {
            error: io::Error::other("the netlink monitor thread ended"),
        })
    })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_core::{NetlinkBuffer, NetlinkDeserializable, NetlinkHeader};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Serialise, then parse back: what the kernel would read.
    fn wire(op: &Op, add: bool, ifindex: u32) -> (NetlinkHeader, RouteNetlinkMessage) {
        let msg = request(op, add, ifindex);
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        let nl = NetlinkBuffer::new_checked(&buf[..]).unwrap();
        assert_eq!(usize::try_from(nl.length()).unwrap(), buf.len());
        let header = msg.header;
        let body = RouteNetlinkMessage::deserialize(&header, nl.payload()).unwrap();
        (header, body)
    }

    const ADD: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;
    const DEL: u16 = NLM_F_REQUEST | NLM_F_ACK;

    // The expected fields below are what iproute2 6.1 sends for the same commands (strace
    // -e trace=sendmsg -xx ip ...).

    #[test]
    fn rule_add_and_del() {
        let op = Op::Rule {
            from: ip("198.51.100.11"),
            table: 1003,
            priority: 1000,
        };
        let (h, body) = wire(&op, true, 0);
        assert_eq!(h.flags, ADD);
        let RouteNetlinkMessage::NewRule(m) = body else {
            panic!("{body:?}")
        };
        assert_eq!(m.header.family, AddressFamily::Inet);
        assert_eq!((m.header.src_len, m.header.dst_len), (32, 0));
        assert_eq!(m.header.table, 0, "table > 255 goes in FRA_TABLE");
        assert_eq!(m.header.action, RuleAction::ToTable);
        assert_eq!(
            m.attributes,
            [
                RuleAttribute::Source(ip("198.51.100.11")),
                RuleAttribute::Table(1003),
                RuleAttribute::Priority(1000),
            ]
        );
        let (h, body) = wire(&op, false, 0);
        assert_eq!(h.flags, DEL);
        let RouteNetlinkMessage::DelRule(m) = body else {
            panic!("{body:?}")
        };
        assert_eq!(m.header.action, RuleAction::Unspec);
        assert_eq!(m.attributes.len(), 3);

        let v6 = Op::Rule {
            from: ip("2001:db8::11"),
            table: 7,
            priority: 1000,
        };
        let (_, body) = wire(&v6, true, 0);
        let RouteNetlinkMessage::NewRule(m) = body else {
            panic!("{body:?}")
        };
        assert_eq!(m.header.family, AddressFamily::Inet6);
        assert_eq!(m.header.src_len, 128);
        assert_eq!(m.header.table, 7, "a small table fits the header");
        assert_eq!(
            m.attributes,
            [
                RuleAttribute::Source(ip("2001:db8::11")),
                RuleAttribute::Priority(1000),
            ]
        );
    }

    #[test]
    fn routes() {
        let onlink = Op::Route {
            dst: Some(Cidr {
                addr: ip("198.51.100.11"),
                prefix: 24,
            }),
            via: None,
            dev: "eth1".into(),
            table: 1003,
        };
        let (h, body) = wire(&onlink, true, 3);
        assert_eq!(h.flags, ADD);
        let RouteNetlinkMessage::NewRoute(m) = body else {
            panic!("{body:?}")
        };
        assert_eq!(m.header.address_family, AddressFamily::Inet);
        assert_eq!(m.header.destination_prefix_length, 24);
        assert_eq!(m.header.table, 0);
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(m.header.kind, RouteType::Unicast);
        assert_eq!(
            m.attributes,
            [
                RouteAttribute::Destination(RouteAddress::Inet("198.51.100.0".parse().unwrap())),
                RouteAttribute::Table(1003),
                RouteAttribute::Oif(3),
            ]
        );

        let default = Op::Route {
            dst: None,
            via: Some(ip("198.51.100.1")),
            dev: "eth1".into(),
            table: 1003,
        };
        let (_, body) = wire(&default, true, 3);
        let RouteNetlinkMessage::NewRoute(m) = body else {
            panic!("{body:?}")
        };
        assert_eq!(m.header.destination_prefix_length, 0);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert_eq!(
            m.attributes,
            [
                RouteAttribute::Gateway(RouteAddress::Inet("198.51.100.1".parse().unwrap())),
                RouteAttribute::Table(1003),
                RouteAttribute::Oif(3),
            ]
        );
        let (h, body) = wire(&default, false, 3);
        assert_eq!(h.flags, DEL);
        let RouteNetlinkMessage::DelRoute(m) = body else {
            panic!("{body:?}")
        };
        assert_eq!(m.header.scope, RouteScope::NoWhere);
        assert_eq!(m.header.protocol, RouteProtocol::Unspec);
        assert_eq!(m.header.kind, RouteType::Unspec);
        assert_eq!(m.attributes.len(), 3);

        let v6 = Op::Route {
            dst: None,
            via: Some(ip("2001:db8::1")),
            dev: "eth1".into(),
            table: 7,
        };
        let (_, body) = wire(&v6, true, 3);
        let RouteNetlinkMessage::NewRoute(m) = body else {
            panic!("{body:?}")
        };
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
        assert_eq!(m.header.table, 7);
        assert_eq!(
            m.attributes,
            [
                RouteAttribute::Gateway(RouteAddress::Inet6("2001:db8::1".parse().unwrap())),
                RouteAttribute::Oif(3),
            ]
        );
    }

    #[test]
    fn addresses() {
        let v4 = Op::Address {
            cidr: Cidr {
                addr: ip("198.51.100.12"),
                prefix: 24,
            },
            dev: "eth1".into(),
        };
        let (h, body) = wire(&v4, true, 3);
        assert_eq!(h.flags, ADD);
        let RouteNetlinkMessage::NewAddress(m) = body else {
            panic!("{body:?}")
        };
        assert_eq!(m.header.family, AddressFamily::Inet);
        assert_eq!((m.header.prefix_len, m.header.index), (24, 3));
        assert!(m.header.flags.is_empty());
        for want in [
            AddressAttribute::Local(ip("198.51.100.12")),
            AddressAttribute::Address(ip("198.51.100.12")),
        ] {
            assert!(m.attributes.contains(&want), "{want:?} in {m:?}");
        }
        let (h, body) = wire(&v4, false, 3);
        assert_eq!(h.flags, DEL);
        assert!(matches!(body, RouteNetlinkMessage::DelAddress(_)));

        let v6 = Op::Address {
            cidr: Cidr {
                addr: ip("2001:db8::12"),
                prefix: 64,
            },
            dev: "eth1".into(),
        };
        let (_, body) = wire(&v6, true, 3);
        let RouteNetlinkMessage::NewAddress(m) = body else {
            panic!("{body:?}")
        };
        assert_eq!(m.header.family, AddressFamily::Inet6);
        assert_eq!(m.header.flags, AddressHeaderFlags::Nodad);
        assert!(
            m.attributes
                .contains(&AddressAttribute::Local(ip("2001:db8::12")))
        );
    }

    #[test]
    fn reads_kernel_messages() {
        let names: HashMap<u32, String> = [(2, "eth1".to_string()), (3, "eth2".to_string())]
            .into_iter()
            .collect();
        // A default route in the main table, as the kernel reports it.
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.attributes = vec![
            RouteAttribute::Table(254),
            RouteAttribute::Gateway(RouteAddress::Inet("198.51.100.1".parse().unwrap())),
            RouteAttribute::Oif(2),
        ];
        let (t, r) = route_of(&m, &names).unwrap();
        assert_eq!(t, 254);
        assert_eq!(
            r,
            Route {
                dst: None,
                gateway: Some(ip("198.51.100.1")),
                dev: Some("eth1".into())
            }
        );
        // Our on-link route in a table above 255.
        let msg = request(
            &Op::Route {
                dst: Some(Cidr {
                    addr: ip("198.51.100.0"),
                    prefix: 24,
                }),
                via: None,
                dev: "eth2".into(),
                table: 1003,
            },
            true,
            3,
        );
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) = msg.payload else {
            panic!()
        };
        let (t, r) = route_of(&m, &names).unwrap();
        assert_eq!(t, 1003);
        assert_eq!(r.dst.unwrap().to_string(), "198.51.100.0/24");
        assert_eq!(r.dev.as_deref(), Some("eth2"));

        // Rules: ours, and the kernel's `from all lookup main`.
        let msg = request(
            &Op::Rule {
                from: ip("198.51.100.11"),
                table: 1003,
                priority: 1000,
            },
            true,
            0,
        );
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRule(m)) = msg.payload else {
            panic!()
        };
        let r = rule_of(&m).unwrap();
        assert_eq!(r.src.unwrap().to_string(), "198.51.100.11/32");
        assert_eq!(r.table, "1003");
        let mut main = RuleMessage::default();
        main.header.family = AddressFamily::Inet;
        main.header.table = RouteHeader::RT_TABLE_MAIN;
        main.header.action = RuleAction::ToTable;
        main.attributes = vec![RuleAttribute::Table(254), RuleAttribute::Priority(32766)];
        assert_eq!(
            rule_of(&main),
            Some(Rule {
                src: None,
                table: "main".into()
            })
        );

        // Addresses: IFA_LOCAL wins over IFA_ADDRESS (a point-to-point peer).
        let mut a = AddressMessage::default();
        a.header.index = 3;
        a.header.prefix_len = 32;
        a.attributes = vec![
            AddressAttribute::Address(ip("203.0.113.9")),
            AddressAttribute::Local(ip("198.51.100.11")),
        ];
        let got = if_addr(&a, &names).unwrap();
        assert_eq!(got.ifname, "eth2");
        assert_eq!(got.cidr.to_string(), "198.51.100.11/32");
    }

    /// The kernel's own answers, in a private network namespace (`unshare -rn`: no root
    /// needed where user namespaces are allowed): every op added, added again (EEXIST ->
    /// `AlreadyThere`), read back, deleted, deleted again (ENOENT/ESRCH/EADDRNOTAVAIL ->
    /// `AlreadyThere`); and the errors for a bad gateway and a missing interface. The test
    /// re-runs itself inside the namespace (set up with iproute2), so it never touches the
    /// host's routing.
    #[test]
    fn kernel_round_trip() {
        const INSIDE: &str = "OVBMC_NETLINK_TEST_NS";
        if std::env::var_os(INSIDE).is_some() {
            return kernel_round_trip_inside();
        }
        let exe = std::env::current_exe().unwrap();
        let setup = "set -e; ip link set lo up; \
            ip link add eth1 type veth peer name p1; ip link set eth1 up; ip link set p1 up; \
            ip addr add 198.51.100.10/24 dev eth1; \
            ip -6 addr add 2001:db8::10/64 dev eth1 nodad; \
            ip route add default via 198.51.100.1 dev eth1; \
            exec \"$0\" net::netlink::tests::kernel_round_trip --exact --nocapture";
        let out = match std::process::Command::new("unshare")
            .args(["-rn", "sh", "-c", setup])
            .arg(&exe)
            .env(INSIDE, "1")
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                eprintln!("SKIP kernel_round_trip: cannot run unshare: {e}");
                return;
            }
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() && !text.contains("kernel_round_trip") {
            // unshare or ip failed before the test ran: no user namespaces, no iproute2.
            eprintln!("SKIP kernel_round_trip: no private network namespace here: {text}");
            return;
        }
        assert!(out.status.success(), "inside the namespace:\n{text}");
        assert!(text.contains("1 passed"), "{text}");
    }

    fn kernel_round_trip_inside() {
        let nl = Netlink::new();
        let st = nl.state(&[]).unwrap();
        let eth1 = st.links.iter().find(|(_, n)| n == "eth1").expect("eth1").0;
        assert!(
            st.addrs
                .iter()
                .any(|a| a.ifindex == eth1 && a.cidr.to_string() == "198.51.100.10/24"),
            "{st:?}"
        );
        assert!(
            st.main_routes.contains(&Route {
                dst: None,
                gateway: Some(ip("198.51.100.1")),
                dev: Some("eth1".into()),
            }),
            "{st:?}"
        );
        let dev = || "eth1".to_string();
        let cidr = |s: &str| {
            let (a, p) = s.split_once('/').unwrap();
            Cidr {
                addr: ip(a),
                prefix: p.parse().unwrap(),
            }
        };
        let ops = [
            Op::Address {
                cidr: cidr("198.51.100.12/24"),
                dev: dev(),
            },
            Op::Address {
                cidr: cidr("2001:db8::12/64"),
                dev: dev(),
            },
            Op::Route {
                dst: Some(cidr("198.51.100.0/24")),
                via: None,
                dev: dev(),
                table: 1003,
            },
            Op::Route {
                dst: None,
                via: Some(ip("198.51.100.1")),
                dev: dev(),
                table: 1003,
            },
            Op::Route {
                dst: Some(cidr("2001:db8::/64")),
                via: None,
                dev: dev(),
                table: 1003,
            },
            Op::Route {
                dst: None,
                via: Some(ip("2001:db8::1")),
                dev: dev(),
                table: 1003,
            },
            Op::Rule {
                from: ip("198.51.100.12"),
                table: 1003,
                priority: 1000,
            },
            Op::Rule {
                from: ip("2001:db8::12"),
                table: 1003,
                priority: 1000,
            },
        ];
        for op in &ops {
            assert_eq!(nl.apply(op, true).unwrap(), Applied::Done, "{op}");
            assert_eq!(nl.apply(op, true).unwrap(), Applied::AlreadyThere, "{op}");
        }
        let st = nl.state(&[1003]).unwrap();
        for op in &ops {
            assert!(st.has(op), "not read back: {op}\n{st:?}");
        }
        let bad_gw = Op::Route {
            dst: None,
            via: Some(ip("203.0.113.1")),
            dev: dev(),
            table: 1004,
        };
        let e = nl.apply(&bad_gw, true).unwrap_err().to_string();
        assert!(
            e.contains("gateway 203.0.113.1 is not reachable through eth1"),
            "{e}"
        );
        let no_dev = Op::Route {
            dst: None,
            via: Some(ip("198.51.100.1")),
            dev: "eth9".into(),
            table: 1004,
        };
        let e = nl.apply(&no_dev, true).unwrap_err().to_string();
        assert!(e.contains("there is no interface eth9"), "{e}");
        for op in ops.iter().rev() {
            assert_eq!(nl.apply(op, false).unwrap(), Applied::Done, "del {op}");
            assert_eq!(
                nl.apply(op, false).unwrap(),
                Applied::AlreadyThere,
                "del {op}"
            );
        }
        let st = nl.state(&[1003]).unwrap();
        for op in &ops {
            assert!(!st.has(op), "left behind: {op}");
        }
    }

    #[test]
    fn errors_name_the_command_and_the_capability() {
        let e = kernel_error(
            "ip rule add from 192.0.2.45 table 1003 priority 1000".into(),
            io::Error::from_raw_os_error(EPERM),
            None,
        );
        let s = e.to_string();
        assert!(s.contains("ip rule add from 192.0.2.45"), "{s}");
        assert!(s.contains("CAP_NET_ADMIN"), "{s}");
        let op = Op::Route {
            dst: None,
            via: Some(ip("203.0.113.1")),
            dev: "eth2".into(),
            table: 1003,
        };
        let e = kernel_error(
            op.command(true),
            io::Error::from_raw_os_error(EINVAL),
            Some(&op),
        );
        let s = e.to_string();
        assert!(
            s.contains("gateway 203.0.113.1 is not reachable through eth2"),
            "{s}"
        );
    }
}
