//! A small Neutron (Networking API v2.0) client on the shared Keystone [`Session`]: ports,
//! networks, subnets, security groups and their rules, tags, and the port quota. Only the
//! fields ovbmc reads or writes are typed; everything follows the Networking API v2.0
//! reference (docs.openstack.org/api-ref/network/v2): "Ports", "Networks", "Subnets",
//! "Security groups", "Security group rules", "Tag extension (tags)", "Quotas extension".
//!
//! Errors carry Neutron's own message: an error body is `{"NeutronError": {"type": ...,
//! "message": ..., "detail": ...}}`, and [`CloudError::Http`] holds its `message`.
//!
//! The API other parts use (`ovbmc cloud watch-addresses` keeps a port's pairs in step):
//! [`Neutron::lazy`], [`Neutron::get_port`], [`Neutron::update_port_pairs`],
//! [`Neutron::add_tag`], [`Neutron::remove_tag`].
//!
//! **Read, change, write.** `allowed_address_pairs` is replaced whole by "Update port", so
//! two writers (`cloud apply`, a `watch-addresses`, an operator) that each read the list and
//! write it back would lose each other's change. [`Neutron::update_port_pairs`] sends the
//! `revision_number` it read as `If-Match: revision_number=N` (Neutron's `revision-if-match`
//! extension, `neutron/api/api_common.py` `check_request_for_revision_constraint` and
//! `neutron/services/revisions/revision_plugin.py` `_enforce_if_match_constraints`): when
//! the port changed meanwhile Neutron refuses with 412 Precondition Failed, and the caller
//! re-reads and decides again ([`is_stale`]).

use std::net::IpAddr;
use std::sync::Arc;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::CloudError;
use super::session::{Service, Session};

/// One entry of a port's `allowed_address_pairs`: an IP address or CIDR, and the MAC it may
/// be sent from (Neutron fills in the port's own MAC when none is given).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPair {
    /// `ip_address`: an address or a CIDR.
    pub ip_address: String,
    /// `mac_address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

impl AddressPair {
    /// A pair for `ip` alone, with no MAC (so Neutron takes the port's own: API reference,
    /// "Update port", `allowed_address_pairs`).
    pub fn of(ip: IpAddr) -> Self {
        Self {
            ip_address: ip.to_string(),
            mac_address: None,
        }
    }

    /// Does this pair stand for exactly `ip` (`192.0.2.45` or `192.0.2.45/32`)?
    pub fn is_address(&self, ip: IpAddr) -> bool {
        same_address(&self.ip_address, ip)
    }

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
}

/// `pairs` with a pair for each of `remove` taken out and one for each of `add` put in
/// (unless one is there already): the change a caller decided on, applied again to a list
/// re-read after a 412 ([`is_stale`]). Pairs neither names are kept as they are.
pub fn edit_pairs(pairs: &[AddressPair], add: &[IpAddr], remove: &[IpAddr]) -> Vec<AddressPair> {
    let mut out: Vec<AddressPair> = pairs
        .iter()
        .filter(|p| !remove.iter().any(|r| p.is_address(*r)))
        .cloned()
        .collect();
    for a in add {
        if !out.iter().any(|p| p.is_address(*a)) {
            out.push(AddressPair::of(*a));
        }
    }
    out
}

/// Is this Neutron's 412 to an `If-Match: revision_number=N` update (the resource changed
/// since it was read)?
pub fn is_stale(e: &CloudError) -> bool {
    matches!(e, CloudError::Http { status: 412, .. })
}

/// Is `text` the address `ip`, written bare or as a host prefix (`/32`, `/128`)?
pub fn same_address(text: &str, ip: IpAddr) -> bool {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let host_len = if ip.is_ipv4() { "32" } else { "128" };
    addr.parse::<IpAddr>().ok() == Some(ip) && len.is_none_or(|l| l == host_len)
}

/// One of a port's `extra_dhcp_opts` (the `extra_dhcp_opt` extension).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpOpt {
    /// `opt_name`, e.g. `bootfile-name`, `tftp-server`, `server-ip-address`.
    pub opt_name: String,
    /// `opt_value`; `null` in an update removes the option.
    pub opt_value: Option<String>,
    /// `ip_version` (4 or 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
}

/// One of a port's `fixed_ips`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    /// `subnet_id`; left out of a request when empty (Neutron then takes the network's subnet
    /// that holds `ip_address`: a port create on a subnet made in the same run).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subnet_id: String,
    /// `ip_address`.
    pub ip_address: String,
}

/// A port (the fields ovbmc uses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Port {
    /// `id`.
    pub id: String,
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `network_id`.
    #[serde(default)]
    pub network_id: String,
    /// `device_id`: the server it is attached to, or empty.
    #[serde(default)]
    pub device_id: String,
    /// `device_owner`: `compute:<zone>` for a server's port.
    #[serde(default)]
    pub device_owner: String,
    /// `mac_address`.
    #[serde(default)]
    pub mac_address: String,
    /// `fixed_ips`.
    #[serde(default)]
    pub fixed_ips: Vec<FixedIp>,
    /// `allowed_address_pairs` (absent without the extension).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub allowed_address_pairs: Vec<AddressPair>,
    /// `extra_dhcp_opts` (absent without the extension).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub extra_dhcp_opts: Vec<DhcpOpt>,
    /// `security_groups`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub security_groups: Vec<String>,
    /// `port_security_enabled` (absent without the extension: treated as on).
    #[serde(default)]
    pub port_security_enabled: Option<bool>,
    /// `tags`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
    /// `revision_number` (standard attribute; absent without the `standard-attr-revisions`
    /// extension), bumped by every change of the port.
    #[serde(default)]
    pub revision_number: Option<u64>,
}

impl Port {
    /// The port's fixed addresses.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.fixed_ips
            .iter()
            .filter_map(|f| f.ip_address.parse().ok())
    }

    /// A name for messages: `name (id)` or the id.
    pub fn label(&self) -> String {
        label(&self.name, &self.id)
    }
}

/// `name (id)`, or the id alone when the name is empty.
pub fn label(name: &str, id: &str) -> String {
    if name.is_empty() {
        id.to_string()
    } else {
        format!("{name} ({id})")
    }
}

/// A network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Network {
    /// `id`.
    pub id: String,
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `mtu` (the `net-mtu` extension).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// `subnets`: ids.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// `tags`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
}

/// One of a subnet's `host_routes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    /// `destination` (CIDR).
    pub destination: String,
    /// `nexthop` (address).
    pub nexthop: String,
}

/// A subnet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Subnet {
    /// `id`.
    pub id: String,
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `network_id`.
    #[serde(default)]
    pub network_id: String,
    /// `cidr`.
    #[serde(default)]
    pub cidr: String,
    /// `ip_version`.
    #[serde(default)]
    pub ip_version: u8,
    /// `host_routes`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub host_routes: Vec<HostRoute>,
    /// `tags`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
}

/// A security group rule. Rules have no tags in Neutron (they are not a taggable resource,
/// `neutron/db/models/securitygroup.py`: only `SecurityGroup` has `tag_support`), so ovbmc
/// marks its own in `description`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// `id` (empty in a create body).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// `security_group_id`.
    pub security_group_id: String,
    /// `direction`: `ingress` or `egress`.
    pub direction: String,
    /// `ethertype`: `IPv4` or `IPv6`.
    pub ethertype: String,
    /// `protocol`: `udp`, `tcp`, ... or null for any.
    #[serde(default)]
    pub protocol: Option<String>,
    /// `port_range_min`.
    #[serde(default)]
    pub port_range_min: Option<u16>,
    /// `port_range_max`.
    #[serde(default)]
    pub port_range_max: Option<u16>,
    /// `remote_ip_prefix`.
    #[serde(default)]
    pub remote_ip_prefix: Option<String>,
    /// `remote_group_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_group_id: Option<String>,
    /// `description`.
    #[serde(default)]
    pub description: Option<String>,
}

/// A security group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct SecurityGroup {
    /// `id`.
    pub id: String,
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `tags`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
    /// `security_group_rules`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub security_group_rules: Vec<Rule>,
}

/// The body of a port create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewPort {
    /// `name`.
    pub name: String,
    /// `network_id`.
    pub network_id: String,
    /// `fixed_ips`.
    pub fixed_ips: Vec<FixedIp>,
    /// `security_groups` (left out: Neutron picks the project's default group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<String>>,
    /// `device_owner` (left out: none). A port on a subnet per port carries
    /// [`PORT_SUBNET_SERVICE_TYPE`], the one owner that subnet gives addresses to; Nova sets
    /// its own (`compute:<zone>`) when it attaches the port, and the address stays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_owner: Option<String>,
    /// `description`.
    pub description: String,
}

/// The subnet service type of a subnet per port ("Subnet service types" extension): Neutron
/// gives addresses of such a subnet only to ports of that `device_owner`
/// (neutron/objects/subnet.py, `_query_entity_service_subnets`), never to a port made on the
/// network without an address. Without it a port made on the provisioning network while
/// `apply` runs (between a subnet and its port; seen against the lab's Neutron, where the
/// other cloud test's port took an IPMI address and `apply` then got 409 "already
/// allocated"), or after `destroy` deleted the port but not yet its subnet, could get the
/// IPMI address. Neutron accepts only types that begin like a device owner (`compute:`,
/// `network:`, ...: neutron_lib's `validate_subnet_service_types`).
pub const PORT_SUBNET_SERVICE_TYPE: &str = "compute:ovbmc-ipmi";

/// One of a subnet's `allocation_pools`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// `start`.
    pub start: String,
    /// `end`.
    pub end: String,
}

/// The body of a subnet create: one of layout B's subnets per port (docs/deploy.md §1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewSubnet {
    /// `name`.
    pub name: String,
    /// `network_id`.
    pub network_id: String,
    /// `cidr`.
    pub cidr: String,
    /// `ip_version`.
    pub ip_version: u8,
    /// `gateway_ip`: sent as null when `None` (left out, Neutron would take the first address).
    pub gateway_ip: Option<String>,
    /// `enable_dhcp`.
    pub enable_dhcp: bool,
    /// `allocation_pools`: the IPMI address alone. With Neutron's default pool (the whole
    /// block) a port made on the network without an address may get one from the block: seen
    /// against the lab's Neutron, where such a port got the other address of a /30 made for
    /// an IPMI address. An empty list is taken as "the default" (also seen there). Once the
    /// IPMI address's port holds it the pool is exhausted, and Neutron allocates from the
    /// network's other subnets.
    pub allocation_pools: Vec<Pool>,
    /// `service_types`: [`PORT_SUBNET_SERVICE_TYPE`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_types: Vec<String>,
    /// `description`.
    pub description: String,
}

/// The taggable resources ovbmc tags ("Tag extension": `/v2.0/{resource_type}/{id}/tags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `ports`.
    Port,
    /// `subnets`.
    Subnet,
    /// `security-groups`.
    SecurityGroup,
}

impl Resource {
    /// The collection in the URL.
    pub fn collection(self) -> &'static str {
        match self {
            Self::Port => "ports",
            Self::Subnet => "subnets",
            Self::SecurityGroup => "security-groups",
        }
    }

    /// The word in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Port => "port",
            Self::Subnet => "subnet",
            Self::SecurityGroup => "security group",
        }
    }
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Percent-encode a path segment or query value (RFC 3986 unreserved characters pass).
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A Neutron v2.0 resource type, as its URL and JSON name it ("ports" / "port").
trait Object: DeserializeOwned {
    /// The word for messages.
    const KIND: &'static str;
    /// The URL collection (`/v2.0/{COLLECTION}`).
    const COLLECTION: &'static str;
    /// The JSON key of one object; its plural, `KEY` + "s", holds a list.
    const KEY: &'static str;
    fn id(&self) -> &String;
}

macro_rules! neutron_object {
    ($t:ty, $kind:literal, $collection:literal, $key:literal) => {
        impl Object for $t {
            const KIND: &'static str = $kind;
            const COLLECTION: &'static str = $collection;
            const KEY: &'static str = $key;
            fn id(&self) -> &String {
                &self.id
            }
        }
    };
}
neutron_object!(Port, "port", "ports", "port");
neutron_object!(Network, "network", "networks", "network");
neutron_object!(Subnet, "subnet", "subnets", "subnet");
neutron_object!(
    SecurityGroup,
    "security group",
    "security-groups",
    "security_group"
);

/// The Neutron client.
#[derive(Clone, Debug)]
pub struct Neutron {
    session: Arc<Session>,
    /// `/v2.0`, or empty when the catalog URL already ends in it: found at the first call.
    prefix: tokio::sync::OnceCell<String>,
}

impl Neutron {
    /// A client on `session`; fails when the catalog has no `network` endpoint.
    pub async fn new(session: Arc<Session>) -> Result<Self, CloudError> {
        let n = Self::lazy(session);
        n.prefix().await?;
        Ok(n)
    }

    /// A client on `session` that talks to Keystone only at its first call (for
    /// `watch-addresses`, which must start while the cloud is down and retry).
    pub fn lazy(session: Arc<Session>) -> Self {
        Self {
            session,
            prefix: tokio::sync::OnceCell::new(),
        }
    }

    async fn prefix(&self) -> Result<&str, CloudError> {
        self.prefix
            .get_or_try_init(|| async {
                // The catalog's network URL is usually unversioned (http://neutron:9696),
                // sometimes ends in /v2.0 (keystoneauth discovers either).
                let base = self.session.endpoint(Service::Network).await?;
                let base = base.trim_end_matches('/');
                Ok::<_, CloudError>(if base.ends_with("/v2.0") { "" } else { "/v2.0" }.into())
            })
            .await
            .map(String::as_str)
    }

    /// The session underneath.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    async fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CloudError> {
        self.call_with(what, method, path, body, &[]).await
    }

    /// [`Self::call`] with extra request headers (`If-Match`).
    async fn call_with(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        extra: &[(reqwest::header::HeaderName, String)],
    ) -> Result<Value, CloudError> {
        let path = format!("{}{path}", self.prefix().await?);
        self.session
            .call_with(what, method, Service::Network, &path, body, extra)
            .await
    }

    /// `{key: T}` out of the answer to the request, sent with the `extra` headers.
    async fn typed<T: DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        key: &str,
        extra: &[(reqwest::header::HeaderName, String)],
    ) -> Result<T, CloudError> {
        let v = self.call_with(what, method, path, body, extra).await?;
        let inner = v.get(key).cloned().ok_or_else(|| CloudError::Decode {
            what: what.into(),
            message: format!("no {key:?} in the answer"),
        })?;
        serde_json::from_value(inner).map_err(|e| CloudError::Decode {
            what: what.into(),
            message: e.to_string(),
        })
    }

    /// `GET /v2.0/{collection}?filters`, every page (Neutron pages only when asked to with
    /// `limit`, and then links `next` in `{collection}_links`; we follow those if present).
    async fn list<T: DeserializeOwned>(
        &self,
        what: &str,
        collection: &str,
        key: &str,
        filters: &[(&str, &str)],
    ) -> Result<Vec<T>, CloudError> {
        let q: Vec<String> = filters
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let mut path = format!("/{collection}");
        if !q.is_empty() {
            path.push('?');
            path.push_str(&q.join("&"));
        }
        let mut out = Vec::new();
        let mut next = Some(format!("{}{path}", self.prefix().await?));
        // 100 pages at Neutron's page size is far beyond any project.
        for _ in 0..100 {
            let Some(p) = next.take() else { break };
            let v = self
                .session
                .call(what, Method::GET, Service::Network, &p, None)
                .await?;
            let items = v.get(key).cloned().unwrap_or(Value::Array(vec![]));
            let page: Vec<T> = serde_json::from_value(items).map_err(|e| CloudError::Decode {
                what: what.into(),
                message: e.to_string(),
            })?;
            out.extend(page);
            next = v
                .get(format!("{key}_links"))
                .and_then(Value::as_array)
                .and_then(|l| {
                    l.iter()
                        .find(|x| x.get("rel").and_then(Value::as_str) == Some("next"))
                })
                .and_then(|x| x.get("href").and_then(Value::as_str))
                .map(str::to_string);
        }
        Ok(out)
    }

    /// `GET /v2.0/{collection}/{id}` ("Show ... details").
    async fn get<T: Object>(&self, id: &str) -> Result<T, CloudError> {
        let what = format!("Neutron {} show", T::KIND);
        let path = format!("/{}/{}", T::COLLECTION, encode(id));
        self.typed(&what, Method::GET, &path, None, T::KEY, &[])
            .await
    }

    /// Every `T` matching the filters.
    async fn list_of<T: Object>(&self, filters: &[(&str, &str)]) -> Result<Vec<T>, CloudError> {
        let what = format!("Neutron {} list", T::KIND);
        let key = format!("{}s", T::KEY);
        self.list(&what, T::COLLECTION, &key, filters).await
    }

    /// A `T` by id, else by exact, unique name (as the openstack CLI resolves a name: an id
    /// that is not found is tried as a name, since a name may look like a UUID).
    async fn find<T: Object>(&self, name_or_id: &str) -> Result<T, CloudError> {
        if super::parse_uuid(name_or_id).is_some() {
            match self.get(name_or_id).await {
                Err(CloudError::Http { status: 404, .. }) => {}
                other => return other,
            }
        }
        let found: Vec<T> = self.list_of(&[("name", name_or_id)]).await?;
        unique(T::KIND, name_or_id, found, |x| x.id())
    }

    /// One port ("Show port details").
    pub async fn get_port(&self, id: &str) -> Result<Port, CloudError> {
        self.get(id).await
    }

    /// Ports matching the filters ("List ports"), e.g. `[("device_id", id)]`,
    /// `[("tags", "ovbmc:lab")]`.
    pub async fn list_ports(&self, filters: &[(&str, &str)]) -> Result<Vec<Port>, CloudError> {
        self.list_of(filters).await
    }

    /// A port by id or by exact, unique name.
    pub async fn find_port(&self, name_or_id: &str) -> Result<Port, CloudError> {
        self.find(name_or_id).await
    }

    /// Replace a port's `allowed_address_pairs` with `pairs` ("Update port"). The list is
    /// replaced whole, so callers pass the pairs they read and keep, and the port's
    /// `revision_number` as they read it: it goes as `If-Match: revision_number=N`, and a
    /// port changed since is refused with 412 ([`is_stale`]: re-read, decide again; see the
    /// module docs). `None` (a cloud without revisions) sends no constraint. Neutron refuses
    /// more than its `max_allowed_address_pair` (10 by default) with a 400 whose message
    /// names the limit; [`pair_limit_from`] reads it.
    pub async fn update_port_pairs(
        &self,
        id: &str,
        pairs: &[AddressPair],
        revision: Option<u64>,
    ) -> Result<Port, CloudError> {
        let body = json!({ "port": { "allowed_address_pairs": pairs } });
        let extra: Vec<_> = revision
            .map(|r| (reqwest::header::IF_MATCH, format!("revision_number={r}")))
            .into_iter()
            .collect();
        self.typed(
            "Neutron port update",
            Method::PUT,
            &format!("/ports/{}", encode(id)),
            Some(&body),
            "port",
            &extra,
        )
        .await
    }

    /// Set or remove some of a port's `extra_dhcp_opts`: Neutron updates the options named
    /// and keeps the others; an option with `opt_value: null` is removed (API reference,
    /// "Update port", extra_dhcp_opts).
    pub async fn update_port_dhcp_opts(
        &self,
        id: &str,
        opts: &[DhcpOpt],
    ) -> Result<Port, CloudError> {
        self.update_port(id, &json!({ "extra_dhcp_opts": opts }))
            .await
    }

    /// `PUT /v2.0/ports/{id}` with `{"port": fields}`.
    pub async fn update_port(&self, id: &str, fields: &Value) -> Result<Port, CloudError> {
        self.typed(
            "Neutron port update",
            Method::PUT,
            &format!("/ports/{}", encode(id)),
            Some(&json!({ "port": fields })),
            "port",
            &[],
        )
        .await
    }

    /// Create a port.
    pub async fn create_port(&self, p: &NewPort) -> Result<Port, CloudError> {
        self.typed(
            "Neutron port create",
            Method::POST,
            "/ports",
            Some(&json!({ "port": p })),
            "port",
            &[],
        )
        .await
    }

    /// Delete a port (a 404 counts as done).
    pub async fn delete_port(&self, id: &str) -> Result<(), CloudError> {
        self.delete("Neutron port delete", &format!("/ports/{}", encode(id)))
            .await
    }

    async fn delete(&self, what: &str, path: &str) -> Result<(), CloudError> {
        match self.call(what, Method::DELETE, path, None).await {
            Ok(_) | Err(CloudError::Http { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A network by id or exact, unique name.
    pub async fn find_network(&self, name_or_id: &str) -> Result<Network, CloudError> {
        self.find(name_or_id).await
    }

    /// One subnet.
    pub async fn get_subnet(&self, id: &str) -> Result<Subnet, CloudError> {
        self.get(id).await
    }

    /// Subnets matching the filters.
    pub async fn list_subnets(&self, filters: &[(&str, &str)]) -> Result<Vec<Subnet>, CloudError> {
        self.list_of(filters).await
    }

    /// A subnet by id or exact, unique name.
    pub async fn find_subnet(&self, name_or_id: &str) -> Result<Subnet, CloudError> {
        self.find(name_or_id).await
    }

    /// Create a subnet.
    pub async fn create_subnet(&self, s: &NewSubnet) -> Result<Subnet, CloudError> {
        self.typed(
            "Neutron subnet create",
            Method::POST,
            "/subnets",
            Some(&json!({ "subnet": s })),
            "subnet",
            &[],
        )
        .await
    }

    /// Delete a subnet (a 404 counts as done).
    pub async fn delete_subnet(&self, id: &str) -> Result<(), CloudError> {
        self.delete("Neutron subnet delete", &format!("/subnets/{}", encode(id)))
            .await
    }

    /// Replace a subnet's `host_routes` whole.
    pub async fn update_subnet_routes(
        &self,
        id: &str,
        routes: &[HostRoute],
    ) -> Result<Subnet, CloudError> {
        self.typed(
            "Neutron subnet update",
            Method::PUT,
            &format!("/subnets/{}", encode(id)),
            Some(&json!({ "subnet": { "host_routes": routes } })),
            "subnet",
            &[],
        )
        .await
    }

    /// A security group (with its rules) by id or exact, unique name.
    pub async fn find_security_group(&self, name_or_id: &str) -> Result<SecurityGroup, CloudError> {
        self.find(name_or_id).await
    }

    /// One security group with its rules.
    pub async fn get_security_group(&self, id: &str) -> Result<SecurityGroup, CloudError> {
        self.get(id).await
    }

    /// Security groups matching the filters (with their rules).
    pub async fn list_security_groups(
        &self,
        filters: &[(&str, &str)],
    ) -> Result<Vec<SecurityGroup>, CloudError> {
        self.list_of(filters).await
    }

    /// Create a rule (its `id` is ignored).
    pub async fn create_rule(&self, r: &Rule) -> Result<Rule, CloudError> {
        self.typed(
            "Neutron security group rule create",
            Method::POST,
            "/security-group-rules",
            Some(&json!({ "security_group_rule": r })),
            "security_group_rule",
            &[],
        )
        .await
    }

    /// Delete a rule (a 404 counts as done).
    pub async fn delete_rule(&self, id: &str) -> Result<(), CloudError> {
        self.delete(
            "Neutron security group rule delete",
            &format!("/security-group-rules/{}", encode(id)),
        )
        .await
    }

    /// Add one tag (`PUT /v2.0/{resource}/{id}/tags/{tag}`; adding a tag already there is a
    /// no-op in Neutron).
    pub async fn add_tag(&self, res: Resource, id: &str, tag: &str) -> Result<(), CloudError> {
        self.call(
            "Neutron tag add",
            Method::PUT,
            &format!("/{}/{}/tags/{}", res.collection(), encode(id), encode(tag)),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Remove one tag (`DELETE /v2.0/{resource}/{id}/tags/{tag}`; a 404 counts as done).
    pub async fn remove_tag(&self, res: Resource, id: &str, tag: &str) -> Result<(), CloudError> {
        self.delete(
            "Neutron tag remove",
            &format!("/{}/{}/tags/{}", res.collection(), encode(id), encode(tag)),
        )
        .await
    }

    /// The project's port quota and use, `(limit, used)`, from `GET
    /// /v2.0/quotas/{project_id}/details` ("Show quota details for a project"); `None` when
    /// the cloud does not say (no `quota_details` extension, or the policy refuses it). A
    /// limit of -1 means unlimited.
    pub async fn port_quota(&self) -> Option<(i64, i64)> {
        let project = self.session.project_id().await.ok()??;
        let v = self
            .call(
                "Neutron quota details",
                Method::GET,
                &format!("/quotas/{}/details", encode(&project)),
                None,
            )
            .await
            .ok()?;
        let p = v.get("quota")?.get("port")?;
        Some((p.get("limit")?.as_i64()?, p.get("used")?.as_i64()?))
    }

    /// Is the extension with this alias loaded (`GET /v2.0/extensions/{alias}`)?
    pub async fn has_extension(&self, alias: &str) -> Result<bool, CloudError> {
        match self
            .call(
                "Neutron extension show",
                Method::GET,
                &format!("/extensions/{}", encode(alias)),
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(CloudError::Http { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The limit in Neutron's "too many pairs" refusal (`AllowedAddressPairExhausted`, a 400:
/// "The number of allowed address pair exceeds the maximum 10.", neutron-lib
/// `neutron_lib/exceptions/allowedaddresspairs.py`). The limit is the server's
/// `[DEFAULT] max_allowed_address_pair` (default 10); the API does not expose it otherwise.
pub fn pair_limit_from(e: &CloudError) -> Option<u32> {
    let CloudError::Http {
        status: 400,
        message,
        ..
    } = e
    else {
        return None;
    };
    let rest = message
        .split_once("allowed address pair exceeds the maximum")?
        .1;
    rest.trim().trim_end_matches('.').trim().parse().ok()
}

fn unique<T>(
    kind: &str,
    name: &str,
    found: Vec<T>,
    id: impl Fn(&T) -> &String,
) -> Result<T, CloudError> {
    let mut found = found;
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(CloudError::Config(format!(
            "no Neutron {kind} with the id or name {name:?}"
        ))),
        n => Err(CloudError::Config(format!(
            "{n} Neutron {kind}s are named {name:?} ({}); use the id",
            found
                .iter()
                .map(|x| id(x).as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_decode_with_nulls_and_missing_extensions() {
        let p: Port = serde_json::from_value(json!({
            "id": "p1", "name": "bmc", "network_id": "n", "mac_address": "fa:16:3e:00:00:01",
            "fixed_ips": [{"subnet_id": "s", "ip_address": "192.0.2.10"}],
            "allowed_address_pairs": [{"ip_address": "192.0.2.45/32",
                                       "mac_address": "fa:16:3e:00:00:01"}],
            "extra_dhcp_opts": null, "tags": ["ovbmc:lab"], "port_security_enabled": true,
        }))
        .unwrap();
        assert!(p.allowed_address_pairs[0].is_address("192.0.2.45".parse().unwrap()));
        assert!(p.extra_dhcp_opts.is_empty());
        assert!(p.security_groups.is_empty());
        assert_eq!(
            p.addresses().collect::<Vec<_>>(),
            ["192.0.2.10".parse::<IpAddr>().unwrap()]
        );
        assert!(same_address(
            "2001:db8::1/128",
            "2001:db8::1".parse().unwrap()
        ));
        assert!(!same_address("192.0.2.0/24", "192.0.2.0".parse().unwrap()));
    }

    #[test]
    fn edit_pairs_reapplies_a_change_and_keeps_the_rest() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let now = vec![
            AddressPair::of(ip("198.51.100.7")),
            AddressPair {
                ip_address: "192.0.2.45/32".into(),
                mac_address: None,
            },
            AddressPair::of(ip("192.0.2.46")),
        ];
        let out = edit_pairs(
            &now,
            &[ip("192.0.2.46"), ip("192.0.2.47")],
            &[ip("192.0.2.45")],
        );
        let got: Vec<&str> = out.iter().map(|p| p.ip_address.as_str()).collect();
        assert_eq!(got, ["198.51.100.7", "192.0.2.46", "192.0.2.47"]);
        assert!(is_stale(&CloudError::Http {
            what: "x".into(),
            status: 412,
            message: String::new()
        }));
    }

    #[test]
    fn pair_limit_is_read_from_the_400() {
        let e = CloudError::Http {
            what: "Neutron port update".into(),
            status: 400,
            message: "The number of allowed address pair exceeds the maximum 10.".into(),
        };
        assert_eq!(pair_limit_from(&e), Some(10));
        let other = CloudError::Http {
            what: "x".into(),
            status: 400,
            message: "Invalid input".into(),
        };
        assert_eq!(pair_limit_from(&other), None);
    }

    #[test]
    fn tags_and_filters_are_encoded() {
        assert_eq!(
            encode("ovbmc:lab:pair=192.0.2.45"),
            "ovbmc%3Alab%3Apair%3D192.0.2.45"
        );
        assert_eq!(encode("2001:db8::/64"), "2001%3Adb8%3A%3A%2F64");
    }
}
