//! One cloud session shared by every BMC: one Keystone token, one HTTP client, and one cached,
//! coalesced view of the project's servers.
//!
//! * Token: issued with `POST /v3/auth/tokens` (Keystone API v3, "Password authentication with
//!   scoped authorization" / "Authenticating with an Application Credential"), re-issued before
//!   it expires and once when a request gets 401.
//! * View: one `GET /servers/detail` (Nova API, "List Servers Detailed") answers the status of
//!   every bound instance at once. A view is reused while it is younger than the TTL and newer
//!   than our last own action ([`Session::invalidate`]); callers that need a refresh at the same
//!   time queue on one lock and share the single request made by the first of them, so the
//!   number of Nova requests per poll cycle does not grow with the number of BMCs.
//! * A failing cloud: the refresh runs in its own task, and a BMC request waits for it at most
//!   [`SessionOptions::wait`] (inside the server's budget), then is answered busy while the
//!   refresh goes on; a failed refresh is remembered for the TTL from the moment it *ended*,
//!   so a dead or slow Keystone/Nova costs one request per TTL, not one per IPMI packet. Each
//!   cause is logged once ([`LogOnce`]) and its end once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::CloudError;
use super::config::{Auth, CloudConfig, DomainRef, ProjectRef, UserRef};
use super::secret::Secret;

/// The newest compute API microversion we ask for. Everything we read (`status`,
/// `OS-EXT-STS:task_state`, `OS-EXT-STS:power_state`, `metadata`, `fault`, `image`) exists
/// from 2.1 on; 2.17 adds `trigger_crash_dump`; 2.69 may return `status: UNKNOWN` for servers
/// in a down cell, which we treat as busy. 2.96 is 2024.1 (Caracal); we negotiate down to what
/// the cloud offers (Nova API reference, "Microversions").
pub const PREFERRED_MICROVERSION: (u32, u32) = (2, 96);

/// Tunables (tests shorten them).
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout; every future we start ends by itself within this.
    pub request_timeout: Duration,
    /// How long a server view is reused (and a failed refresh remembered).
    pub cache_ttl: Duration,
    /// How long a request waits for a server list in flight before it is answered busy, where
    /// the face did not set its own patience ([`crate::backend::with_patience`]; both faces
    /// do). Below the IPMI face's default budget (700 ms).
    pub wait: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            cache_ttl: Duration::from_secs(2),
            wait: Duration::from_millis(500),
        }
    }
}

/// A token and what came with it.
#[derive(Clone, Debug)]
struct Token {
    value: Secret,
    /// When to issue a new one (well before `expires_at`).
    refresh_at: Instant,
    compute_url: String,
    image_url: Option<String>,
    network_url: Option<String>,
    /// The project the token is scoped to (Neutron's quota API is per project).
    project_id: Option<String>,
}

/// One server as Nova lists it; only the fields we use. Parsed leniently: a field with an
/// unexpected type is treated as absent rather than failing the whole list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Server {
    /// Instance UUID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// API status (`ACTIVE`, `SHUTOFF`, `RESCUE`, `ERROR`, `REBOOT`, ...).
    pub status: String,
    /// `OS-EXT-STS:task_state`: set while Nova works on the instance.
    pub task_state: Option<String>,
    /// `OS-EXT-STS:power_state`: 1 running, 4 shutdown, ...
    pub power_state: Option<i64>,
    /// Instance metadata.
    pub metadata: HashMap<String, String>,
    /// `fault.message`, shown for ERROR instances.
    pub fault: Option<String>,
    /// Image the instance was built (or rebuilt) from; `None` when volume-backed.
    pub image_id: Option<String>,
    /// The flavor as embedded in the server (compute microversion 2.47 and later: `vcpus`,
    /// `ram` in MiB, `disk` in GiB, `original_name`); `None` before 2.47, where only its id is.
    pub flavor: Option<Flavor>,
    /// MAC addresses of the instance's ports (`addresses.*[].OS-EXT-IPS-MAC:mac_addr`),
    /// each once, in the order listed.
    pub macs: Vec<String>,
    /// Each (MAC, network name) pair of `addresses` (the map's keys are network names), each
    /// once: which networks a port is on (`ovbmc nodes-json --network`).
    pub mac_networks: Vec<(String, String)>,
}

/// A flavor's sizes, from a server document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flavor {
    /// `original_name`.
    pub name: Option<String>,
    /// `vcpus`.
    pub vcpus: Option<u32>,
    /// `ram`, MiB.
    pub ram_mib: Option<u64>,
    /// `disk`, GiB.
    pub disk_gib: Option<u64>,
}

impl Flavor {
    fn from_json(f: &Value) -> Option<Self> {
        // Before 2.47 the flavor is only `{"id", "links"}`: no sizes, nothing to report.
        f.get("vcpus")?;
        let n = |k: &str| f.get(k).and_then(Value::as_u64);
        Some(Self {
            name: f
                .get("original_name")
                .and_then(Value::as_str)
                .map(str::to_string),
            vcpus: n("vcpus").and_then(|v| u32::try_from(v).ok()),
            ram_mib: n("ram"),
            disk_gib: n("disk"),
        })
    }
}

/// The MAC addresses of a server's `addresses` map, each once.
fn macs_of(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (m, _) in mac_networks_of(v) {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// The (MAC, network name) pairs of a server's `addresses` map, each once.
fn mac_networks_of(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let Some(nets) = v.get("addresses").and_then(Value::as_object) else {
        return out;
    };
    for (net, addrs) in nets {
        for a in addrs.as_array().into_iter().flatten() {
            if let Some(m) = a.get("OS-EXT-IPS-MAC:mac_addr").and_then(Value::as_str) {
                let pair = (m.to_ascii_lowercase(), net.clone());
                if !out.contains(&pair) {
                    out.push(pair);
                }
            }
        }
    }
    out
}

impl Server {
    /// Parse one element of `servers`; `None` when it has no id.
    pub fn from_json(v: &Value) -> Option<Self> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let metadata = v
            .get("metadata")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            id: s("id")?,
            name: s("name").unwrap_or_default(),
            status: s("status").unwrap_or_default(),
            task_state: s("OS-EXT-STS:task_state"),
            power_state: v.get("OS-EXT-STS:power_state").and_then(Value::as_i64),
            metadata,
            fault: v
                .get("fault")
                .and_then(|f| f.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string),
            image_id: v
                .get("image")
                .and_then(|i| i.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string),
            flavor: v.get("flavor").and_then(Flavor::from_json),
            macs: macs_of(v),
            mac_networks: mac_networks_of(v),
        })
    }
}

/// The servers of the project at one moment.
#[derive(Debug)]
pub struct View {
    /// When the request that produced this view was sent: anything we did before this is
    /// reflected in it.
    pub started: Instant,
    /// Servers by id.
    pub servers: HashMap<String, Server>,
}

/// The outcome of one refresh, as its waiters receive it (`None` while it runs).
type Outcome = Option<Result<Arc<View>, CloudError>>;

#[derive(Default)]
struct Cache {
    view: Option<Arc<View>>,
    /// The last failed refresh: when it *ended* and why. Remembered for the TTL from its end,
    /// so that a request that took 30 s to fail is not retried at once by every waiter.
    failed: Option<(Instant, CloudError)>,
    /// The refresh in flight: when it started, and where its outcome will appear.
    inflight: Option<(Instant, tokio::sync::watch::Receiver<Outcome>)>,
}

/// [`LogOnce`] subject of the server list.
const LIST: &str = "Nova server list";
/// [`LogOnce`] subject of "the server list is slow".
const SLOW: &str = "Nova server list is slow";

/// Logs one line per cause, not per packet: a warning when a cause first appears for a subject,
/// nothing while it repeats, and an info line when the subject works again.
#[derive(Default)]
pub struct LogOnce(Mutex<HashMap<String, String>>);

impl LogOnce {
    /// Report a failure of `subject`.
    pub fn failed(&self, subject: &str, cause: &str, message: &dyn std::fmt::Display) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.get(subject).map(String::as_str) != Some(cause) {
            m.insert(subject.to_string(), cause.to_string());
            let text = message.to_string();
            // Errors often name their request already ("Nova server list: HTTP 500: ...").
            if text.starts_with(subject) {
                tracing::warn!("{text}");
            } else {
                tracing::warn!("{subject}: {text}");
            }
        }
    }

    /// Report a success of `subject`.
    pub fn ok(&self, subject: &str) {
        self.ok_saying(subject, "working again");
    }

    /// Report a success of `subject`, with what to say if it had failed.
    pub fn ok_saying(&self, subject: &str, message: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.remove(subject).is_some() {
            tracing::info!("{subject}: {message}");
        }
    }
}

/// Counters, for tests and the log.
#[derive(Debug, Default)]
pub struct Stats {
    /// Keystone token requests.
    pub token_requests: AtomicU64,
    /// Server list requests (pages count one each).
    pub list_requests: AtomicU64,
}

/// The shared cloud session.
pub struct Session {
    cfg: CloudConfig,
    opts: SessionOptions,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<Token>>,
    microversion: Mutex<(u32, u32)>,
    cache: Mutex<Cache>,
    /// Views started before this instant are stale (we changed something since).
    invalidated_at: Mutex<Instant>,
    /// Log de-duplication.
    pub log: LogOnce,
    /// Counters.
    pub stats: Stats,
    /// See [`Session::websocket_tls`].
    ws_tls: std::sync::OnceLock<Option<Arc<rustls::ClientConfig>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("origin", &self.cfg.origin)
            .finish_non_exhaustive()
    }
}

/// `r` if its status is a success; else the HTTP error, with the service's message from the
/// body (read whole: an error body is short).
async fn refused(what: String, r: reqwest::Response) -> Result<reqwest::Response, CloudError> {
    let status = r.status();
    if status.is_success() {
        return Ok(r);
    }
    let body = r.text().await.unwrap_or_default();
    Err(CloudError::Http {
        what,
        status: status.as_u16(),
        message: error_message(&body),
    })
}

/// The message inside an OpenStack error body: Nova wraps it as `{"conflictingRequest":
/// {"message": ..., "code": 409}}`, Keystone as `{"error": {"message": ...}}`.
fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v.as_object()?.values().find_map(|inner| {
            inner
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
    });
    let mut m = from_json.unwrap_or_else(|| body.trim().to_string());
    if m.len() > 300 {
        let mut cut = 300;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push('…');
    }
    m
}

fn transport_error(what: &str, e: reqwest::Error) -> CloudError {
    if e.is_timeout() {
        CloudError::Timeout {
            what: what.to_string(),
        }
    } else {
        // reqwest's Display names the URL (never a token: tokens travel in headers only).
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        CloudError::Transport {
            what: what.to_string(),
            message: msg,
        }
    }
}

/// Parse Keystone's `expires_at` (ISO 8601 UTC, e.g. `2025-01-31T12:00:00.000000Z`) into seconds
/// since the epoch. `None` when it does not look like that.
pub fn parse_utc(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), proleptic Gregorian.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se).ok()
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInner,
}

#[derive(Deserialize)]
struct TokenInner {
    expires_at: String,
    #[serde(default)]
    catalog: Vec<CatalogEntry>,
    #[serde(default)]
    project: Option<TokenProject>,
}

#[derive(Deserialize)]
struct TokenProject {
    id: String,
}

#[derive(Deserialize)]
struct CatalogEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    endpoints: Vec<Endpoint>,
}

#[derive(Deserialize)]
struct Endpoint {
    interface: String,
    url: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    region_id: Option<String>,
}

fn domain_json(d: &DomainRef) -> Value {
    match d {
        DomainRef::Id(id) => json!({ "id": id }),
        DomainRef::Name(n) => json!({ "name": n }),
    }
}

fn user_json(u: &UserRef) -> Value {
    match u {
        UserRef::Id(id) => json!({ "id": id }),
        UserRef::Name { name, domain } => json!({ "name": name, "domain": domain_json(domain) }),
    }
}

/// The body of `POST /v3/auth/tokens`.
fn auth_body(auth: &Auth) -> Value {
    match auth {
        Auth::Password {
            user,
            password,
            project,
        } => {
            let mut u = user_json(user);
            u["password"] = Value::String(password.expose().to_string());
            let project = match project {
                ProjectRef::Id(id) => json!({ "id": id }),
                ProjectRef::Name { name, domain } => {
                    json!({ "name": name, "domain": domain_json(domain) })
                }
            };
            json!({ "auth": {
                "identity": { "methods": ["password"], "password": { "user": u } },
                "scope": { "project": project },
            }})
        }
        Auth::ApplicationCredential { id, name, secret } => {
            let mut c = json!({ "secret": secret.expose() });
            if let Some(id) = id {
                c["id"] = json!(id);
            } else if let Some((n, user)) = name {
                c["name"] = json!(n);
                c["user"] = user_json(user);
            }
            // No scope: an application credential is bound to its project.
            json!({ "auth": { "identity": {
                "methods": ["application_credential"], "application_credential": c,
            }}})
        }
    }
}

fn find_endpoint(
    catalog: &[CatalogEntry],
    kind: &str,
    interface: &str,
    region: Option<&str>,
) -> Option<String> {
    catalog
        .iter()
        .filter(|c| c.kind == kind)
        .flat_map(|c| c.endpoints.iter())
        .find(|e| {
            e.interface == interface
                && region.is_none_or(|r| {
                    e.region.as_deref() == Some(r) || e.region_id.as_deref() == Some(r)
                })
        })
        .map(|e| e.url.trim_end_matches('/').to_string())
}

/// `(max, min)` from a compute version document.
fn version_range(v: &Value) -> Option<((u32, u32), (u32, u32))> {
    let ver = v.get("version")?;
    Some((
        parse_version(ver.get("version")?.as_str()?)?,
        parse_version(ver.get("min_version")?.as_str()?)?,
    ))
}

/// Parse `"2.96"`.
fn parse_version(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Session {
    /// Build the HTTP client (rustls with the ring provider, `OS_CACERT` trusted in addition to
    /// the system roots). Does not talk to the cloud yet.
    pub fn new(cfg: CloudConfig, opts: SessionOptions) -> Result<Self, CloudError> {
        // reqwest is built with `rustls-no-provider`: pick ring (no C toolchain or cmake
        // needed, unlike aws-lc-rs). Installing fails only if a provider is already installed,
        // which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.request_timeout)
            .user_agent(concat!("ovbmc/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.cacert {
            let pem = std::fs::read(path)
                .map_err(|e| CloudError::Config(format!("cacert {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| CloudError::Config(format!("cacert {}: {e}", path.display())))?;
            b = b.tls_certs_merge(certs);
        }
        if !cfg.verify_tls {
            tracing::warn!("{}: TLS certificate verification is OFF", cfg.origin);
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b
            .build()
            .map_err(|e| CloudError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            cfg,
            opts,
            http,
            token: tokio::sync::Mutex::new(None),
            microversion: Mutex::new(PREFERRED_MICROVERSION),
            cache: Mutex::new(Cache::default()),
            invalidated_at: Mutex::new(Instant::now()),
            log: LogOnce::default(),
            stats: Stats::default(),
            ws_tls: std::sync::OnceLock::new(),
        })
    }

    /// The TLS configuration for `wss://` console WebSockets, with the same trust as this
    /// session's HTTPS (made at the first use: a fleet without consoles never reads the
    /// system's roots for it). `None`, logged once, when it cannot be made.
    pub fn websocket_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.ws_tls
            .get_or_init(|| match super::tls::client_config(&self.cfg) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("{}: TLS for console WebSockets: {e}", self.cfg.origin);
                    None
                }
            })
            .clone()
    }

    /// Where the credentials came from.
    pub fn origin(&self) -> &str {
        &self.cfg.origin
    }

    /// The options in force.
    pub fn options(&self) -> &SessionOptions {
        &self.opts
    }

    /// The compute microversion in use.
    pub fn microversion(&self) -> (u32, u32) {
        *self.microversion.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Authenticate and agree on a microversion: what `cloud::connect` does first, so that bad
    /// credentials are a start-up error and not a runtime one.
    pub async fn connect(&self) -> Result<(), CloudError> {
        let tok = self.token().await?;
        // GET on the versioned compute root returns {"version": {"version": max,
        // "min_version": min, ...}} (Nova API reference, "Show Details of Specific API Version").
        // A catalog URL may carry a project id after /v2.1: strip it for this request.
        let root = match tok.compute_url.find("/v2.1") {
            Some(i) => format!("{}/", &tok.compute_url[..i + 5]),
            None => format!("{}/", tok.compute_url),
        };
        let got = async {
            let r = self
                .http
                .get(&root)
                .headers(self.auth_headers(&tok).unwrap_or_default())
                .send()
                .await
                .map_err(|e| transport_error("Nova version document", e))?;
            let v: Value = r
                .json()
                .await
                .map_err(|e| transport_error("Nova version document", e))?;
            version_range(&v).ok_or_else(|| CloudError::Decode {
                what: "Nova version document".into(),
                message: "no version/min_version".into(),
            })
        }
        .await;
        match got {
            Ok((max, min)) => {
                let mv = PREFERRED_MICROVERSION.min(max);
                if mv < min {
                    return Err(CloudError::Config(format!(
                        "Nova at {} supports microversions {}.{}..{}.{}, none we can use",
                        tok.compute_url, min.0, min.1, max.0, max.1
                    )));
                }
                *self.microversion.lock().unwrap_or_else(|e| e.into_inner()) = mv;
                tracing::info!(
                    "{}: Nova {} (microversions up to {}.{}), using {}.{}",
                    self.cfg.origin,
                    tok.compute_url,
                    max.0,
                    max.1,
                    mv.0,
                    mv.1
                );
            }
            Err(e) => tracing::warn!(
                "{}: could not read Nova's version document ({e}); assuming microversion {}.{}",
                self.cfg.origin,
                PREFERRED_MICROVERSION.0,
                PREFERRED_MICROVERSION.1
            ),
        }
        Ok(())
    }

    fn auth_headers(&self, tok: &Token) -> Option<HeaderMap> {
        let mut h = HeaderMap::new();
        let mut t = HeaderValue::from_str(tok.value.expose()).ok()?;
        t.set_sensitive(true);
        h.insert("x-auth-token", t);
        let (a, b) = self.microversion();
        // Both spellings: the legacy header and the generic one (Nova API reference,
        // "Microversions"); Nova accepts either.
        h.insert(
            "x-openstack-nova-api-version",
            HeaderValue::from_str(&format!("{a}.{b}")).ok()?,
        );
        h.insert(
            "openstack-api-version",
            HeaderValue::from_str(&format!("compute {a}.{b}")).ok()?,
        );
        Some(h)
    }

    /// A valid token: the cached one, or a new one when it is due for renewal. Concurrent
    /// callers wait on the lock and share the one issued.
    async fn token(&self) -> Result<Token, CloudError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.clone());
        }
        let t = self.issue_token().await?;
        *slot = Some(t.clone());
        Ok(t)
    }

    /// Forget `failed` (after a 401), unless a newer token already replaced it. True if this
    /// call dropped it (the first of several concurrent requests that got the 401).
    async fn drop_token(&self, failed: &Secret) -> bool {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| &t.value == failed) {
            *slot = None;
            return true;
        }
        false
    }

    async fn issue_token(&self) -> Result<Token, CloudError> {
        const WHAT: &str = "Keystone token request";
        self.stats.token_requests.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}/auth/tokens", self.cfg.auth_url);
        let r = self
            .http
            .post(&url)
            .json(&auth_body(&self.cfg.auth))
            .send()
            .await
            .map_err(|e| transport_error(WHAT, e))?;
        let r = refused(format!("{WHAT} for {}", self.cfg.origin), r).await?;
        let value = r
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(Secret::new)
            .ok_or_else(|| CloudError::Decode {
                what: WHAT.into(),
                message: "no X-Subject-Token header".into(),
            })?;
        let body: TokenBody = r.json().await.map_err(|e| CloudError::Decode {
            what: WHAT.into(),
            message: e.to_string(),
        })?;
        let region = self.cfg.region.as_deref();
        let iface = self.cfg.interface.as_str();
        let project_id = body.token.project.as_ref().map(|p| p.id.as_str());
        let compute_url =
            match &self.cfg.compute_endpoint_override {
                Some(u) => fill_project(u, project_id),
                None => find_endpoint(&body.token.catalog, "compute", iface, region).ok_or_else(
                    || CloudError::NoEndpoint {
                        service: "compute".into(),
                        interface: iface.into(),
                        region: region.unwrap_or("any").into(),
                    },
                )?,
            };
        let image_url = match &self.cfg.image_endpoint_override {
            Some(u) => Some(fill_project(u, project_id)),
            None => find_endpoint(&body.token.catalog, "image", iface, region),
        };
        let network_url = match &self.cfg.network_endpoint_override {
            Some(u) => Some(fill_project(u, project_id)),
            None => find_endpoint(&body.token.catalog, "network", iface, region),
        };
        let project_id = project_id.map(str::to_string);
        // Renew at half the remaining lifetime, at most 10 minutes before expiry, so a token
        // never expires under a request (Keystone's default lifetime is one hour).
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let left = parse_utc(&body.token.expires_at)
            .map(|e| e.saturating_sub(now_unix))
            .unwrap_or(300);
        let renew_in = if left > 1200 { left - 600 } else { left / 2 };
        tracing::debug!(
            "{}: new token, expires in {left} s, renewing in {renew_in} s",
            self.cfg.origin
        );
        Ok(Token {
            value,
            refresh_at: Instant::now() + Duration::from_secs(renew_in),
            compute_url,
            image_url,
            network_url,
            project_id,
        })
    }

    /// The catalog URL of a service.
    pub async fn endpoint(&self, service: Service) -> Result<String, CloudError> {
        let tok = self.token().await?;
        self.base_url(&tok, service)
    }

    /// The project id the token is scoped to, if Keystone said.
    pub async fn project_id(&self) -> Result<Option<String>, CloudError> {
        Ok(self.token().await?.project_id)
    }

    fn base_url(&self, tok: &Token, service: Service) -> Result<String, CloudError> {
        let missing = |name: &str| CloudError::NoEndpoint {
            service: name.into(),
            interface: self.cfg.interface.clone(),
            region: self.cfg.region.clone().unwrap_or_else(|| "any".into()),
        };
        match service {
            Service::Compute => Ok(tok.compute_url.clone()),
            Service::Image => tok.image_url.clone().ok_or_else(|| missing("image")),
            Service::Network => tok.network_url.clone().ok_or_else(|| missing("network")),
        }
    }

    /// Send an authenticated request to a service endpoint (`compute` or `image`) and return
    /// the response body on success. A 401 drops the token and retries exactly once with a new
    /// one (the token may have been revoked or expired early).
    pub async fn call(
        &self,
        what: &str,
        method: Method,
        service: Service,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CloudError> {
        self.call_with(what, method, service, path, body, &[]).await
    }

    /// [`Session::call`] with extra request headers (Neutron's `If-Match:
    /// revision_number=N` on an update, so that it is refused with 412 when the resource
    /// changed since it was read).
    pub async fn call_with(
        &self,
        what: &str,
        method: Method,
        service: Service,
        path: &str,
        body: Option<&Value>,
        extra: &[(reqwest::header::HeaderName, String)],
    ) -> Result<Value, CloudError> {
        let mut retried = false;
        loop {
            let tok = self.token().await?;
            let base = self.base_url(&tok, service)?;
            let url = if path.starts_with("http://") || path.starts_with("https://") {
                path.to_string()
            } else {
                format!("{base}{path}")
            };
            let headers = self.auth_headers(&tok).ok_or_else(|| CloudError::Decode {
                what: what.into(),
                message: "token is not a valid header value".into(),
            })?;
            let mut req = self.http.request(method.clone(), &url).headers(headers);
            for (k, v) in extra {
                req = req.header(k.clone(), v.as_str());
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let r = req.send().await.map_err(|e| transport_error(what, e))?;
            let status = r.status();
            if status == StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                // Logged by the request that notices first, not by each one in flight.
                if self.drop_token(&tok.value).await {
                    tracing::info!("{what}: token refused (401), re-authenticating");
                }
                continue;
            }
            let text = r.text().await.map_err(|e| transport_error(what, e))?;
            if !status.is_success() {
                return Err(CloudError::Http {
                    what: what.into(),
                    status: status.as_u16(),
                    message: error_message(&text),
                });
            }
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| CloudError::Decode {
                what: what.into(),
                message: e.to_string(),
            });
        }
    }

    /// The HTTP client (the cloud's TLS trust: `OS_CACERT`/`cacert` and the system roots), for
    /// fetching a virtual media image. Send no cloud credentials with it.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Send `body` (a stream, not retried) to an image-service URL with `method` and
    /// `content_type`, with at most `timeout` for the whole transfer (Glance "Upload binary
    /// image data": `PUT /v2/images/{id}/file`, application/octet-stream, 204); the body's
    /// length, when the source declared one, is sent as Content-Length.
    pub async fn send_stream(
        &self,
        what: &str,
        method: Method,
        url: &str,
        content_type: &str,
        (body, length): (reqwest::Body, Option<u64>),
        timeout: Duration,
    ) -> Result<(), CloudError> {
        let tok = self.token().await?;
        let headers = self.auth_headers(&tok).ok_or_else(|| CloudError::Decode {
            what: what.into(),
            message: "token is not a valid header value".into(),
        })?;
        let mut req = self
            .http
            .request(method, url)
            .headers(headers)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            // A connection that carried a streamed upload is not reused: the lab's Glance
            // (cheroot) answered the next request on it with a 500 after a chunked PUT, and
            // WSGI servers differ in how they end a chunked request body.
            .header(reqwest::header::CONNECTION, "close")
            .timeout(timeout);
        if let Some(n) = length {
            // A declared length is sent as Content-Length (RFC 9112 §6.2) rather than
            // chunked: not every WSGI server in front of Glance reads chunked bodies.
            req = req.header(reqwest::header::CONTENT_LENGTH, n);
        }
        let r = req
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(what, e))?;
        refused(what.into(), r).await.map(drop)
    }

    /// Every server of the project, following pagination (`servers_links` rel `next`).
    pub async fn list_servers(&self) -> Result<HashMap<String, Server>, CloudError> {
        let mut out = HashMap::new();
        let mut next = "/servers/detail".to_string();
        // Nova pages at its max_limit (1000 by default); 100 pages is far beyond any project.
        for _ in 0..100 {
            self.stats.list_requests.fetch_add(1, Ordering::Relaxed);
            let v = self
                .call(
                    "Nova server list",
                    Method::GET,
                    Service::Compute,
                    &next,
                    None,
                )
                .await?;
            let servers =
                v.get("servers")
                    .and_then(Value::as_array)
                    .ok_or_else(|| CloudError::Decode {
                        what: "Nova server list".into(),
                        message: "no \"servers\" array".into(),
                    })?;
            for s in servers.iter().filter_map(Server::from_json) {
                out.insert(s.id.clone(), s);
            }
            let link = v
                .get("servers_links")
                .and_then(Value::as_array)
                .and_then(|l| {
                    l.iter()
                        .find(|x| x.get("rel").and_then(Value::as_str) == Some("next"))
                })
                .and_then(|x| x.get("href"))
                .and_then(Value::as_str);
            match link {
                // Nova writes its own (catalog) URL into the link; behind an endpoint override
                // that URL may be unreachable, so keep only the path and query.
                Some(href) if !servers.is_empty() => {
                    next = match href.find("/servers/detail") {
                        Some(i) => href[i..].to_string(),
                        None => href.to_string(),
                    }
                }
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    /// Mark every view taken so far as stale (after one of our own actions).
    pub fn invalidate(&self) {
        *self
            .invalidated_at
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// A view no older than the TTL and no older than our last action; `max_age` tightens the
    /// TTL (e.g. when waiting for a transition to finish). Waits for a list in flight at most
    /// the calling face's patience ([`crate::backend::patience`]: about half a second for
    /// IPMI, many seconds for Redfish), or [`SessionOptions::wait`] where no face set one,
    /// then fails with a busy-kind timeout (the list goes on in the background and its
    /// outcome serves the next callers).
    pub async fn view(
        self: &Arc<Self>,
        max_age: Option<Duration>,
    ) -> Result<Arc<View>, CloudError> {
        let wait = crate::backend::patience().unwrap_or(self.opts.wait);
        self.view_wait(max_age, Some(wait)).await
    }

    /// [`Session::view`] with an explicit wait bound (`None`: until the list ends, which the
    /// request timeout bounds; for start-up and tests).
    pub async fn view_wait(
        self: &Arc<Self>,
        max_age: Option<Duration>,
        wait: Option<Duration>,
    ) -> Result<Arc<View>, CloudError> {
        let now = Instant::now();
        let age = max_age.map_or(self.opts.cache_ttl, |a| a.min(self.opts.cache_ttl));
        let inv = *self
            .invalidated_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let not_before = now.checked_sub(age).map_or(inv, |t| t.max(inv));
        let mut rx = {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = &c.view
                && v.started >= not_before
            {
                return Ok(v.clone());
            }
            if let Some((t, e)) = &c.failed
                && *t >= not_before
            {
                return Err(e.clone());
            }
            match &c.inflight {
                // A list that started after `not_before` is as good as a new one: share it. A
                // BMC request (bounded wait) also shares an older one, as long as it started
                // after our last action: against a slow Nova, starting another list each TTL
                // would only pile up requests that all wait for the same slow service.
                Some((started, rx))
                    if *started >= not_before || (wait.is_some() && *started >= inv) =>
                {
                    rx.clone()
                }
                _ => {
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    let started = Instant::now();
                    c.inflight = Some((started, rx.clone()));
                    let me = self.clone();
                    tokio::spawn(async move { me.refresh(started, tx).await });
                    rx
                }
            }
        };
        let outcome = {
            let done = rx.wait_for(Option::is_some);
            match wait {
                None => done.await.map(|o| o.clone()),
                Some(w) => match tokio::time::timeout(w, done).await {
                    Ok(r) => r.map(|o| o.clone()),
                    Err(_) => {
                        self.log.failed(
                            SLOW,
                            "slow",
                            &format!(
                                "no answer within {} ms; requests are answered busy (IPMI C0, \
                                 Redfish 503) until Nova answers",
                                w.as_millis()
                            ),
                        );
                        return Err(CloudError::Timeout {
                            what: format!("{LIST} (still waiting)"),
                        });
                    }
                },
            }
        };
        match outcome {
            Ok(Some(r)) => r,
            // The refresh task ended without an outcome (it panicked): say so, try again later.
            Ok(None) | Err(_) => Err(CloudError::Transport {
                what: LIST.into(),
                message: "the refresh task ended without an answer".into(),
            }),
        }
    }

    /// One server list, in its own task so that no BMC request waits longer than it wants to;
    /// the outcome goes to the cache and to every waiter.
    async fn refresh(self: Arc<Self>, started: Instant, tx: tokio::sync::watch::Sender<Outcome>) {
        let r = self.list_servers().await;
        let out = {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if c.inflight.as_ref().is_some_and(|(s, _)| *s == started) {
                c.inflight = None;
            }
            match r {
                Ok(servers) => {
                    let v = Arc::new(View { started, servers });
                    if c.view.as_ref().is_none_or(|old| old.started < started) {
                        c.view = Some(v.clone());
                    }
                    c.failed = None;
                    Ok(v)
                }
                Err(e) => {
                    c.failed = Some((Instant::now(), e.clone()));
                    Err(e)
                }
            }
        };
        match &out {
            Ok(_) => {
                self.log.ok_saying(SLOW, "answering in time again");
                self.log.ok(LIST);
            }
            Err(e) => self.log.failed(LIST, &e.cause(), e),
        }
        let _ = tx.send(Some(out));
    }
}

/// Fill `%(project_id)s` in an endpoint override, as keystoneauth does for catalog-style URLs.
fn fill_project(url: &str, project_id: Option<&str>) -> String {
    match project_id {
        Some(p) => url
            .replace("%(project_id)s", p)
            .replace("$(project_id)s", p),
        None => url.to_string(),
    }
}

/// Which catalog endpoint a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// Nova.
    Compute,
    /// Glance.
    Image,
    /// Neutron.
    Network,
}

#[cfg(test)]
mod tests {

    #[test]
    fn flavor_sizes_and_port_macs_are_read_from_a_server() {
        // Compute API 2.47+ "server show": the flavor embedded, the ports under addresses.
        let v = json!({"id": "x", "flavor": {"original_name": "bm.small", "vcpus": 4,
                "ram": 8192, "disk": 40, "ephemeral": 0, "swap": 0},
            "addresses": {"prov": [{"addr": "192.0.2.5", "OS-EXT-IPS-MAC:mac_addr": "FA:16:3E:00:00:01"}],
                "ext": [{"addr": "2001:db8::5", "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:01"},
                        {"addr": "198.51.100.7", "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:02"}]}});
        let s = Server::from_json(&v).unwrap();
        let f = s.flavor.unwrap();
        assert_eq!(
            (f.name.as_deref(), f.vcpus, f.ram_mib, f.disk_gib),
            (Some("bm.small"), Some(4), Some(8192), Some(40))
        );
        let mut macs = s.macs.clone();
        macs.sort();
        assert_eq!(macs, ["fa:16:3e:00:00:01", "fa:16:3e:00:00:02"]);
        let mut nets = s.mac_networks.clone();
        nets.sort();
        let pair = |m: &str, n: &str| (m.to_string(), n.to_string());
        assert_eq!(
            nets,
            [
                pair("fa:16:3e:00:00:01", "ext"),
                pair("fa:16:3e:00:00:01", "prov"),
                pair("fa:16:3e:00:00:02", "ext")
            ]
        );
        // Before 2.47 the flavor is a reference only.
        let old = json!({"id": "x", "flavor": {"id": "1", "links": []}});
        assert_eq!(Server::from_json(&old).unwrap().flavor, None);
    }

    use super::*;

    #[test]
    fn utc_parsing() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_utc("2025-01-31T12:00:00.000000Z"),
            Some(1_738_324_800)
        );
        assert_eq!(parse_utc("2024-02-29T00:00:01Z"), Some(1_709_164_801));
        assert_eq!(parse_utc("garbage"), None);
        assert_eq!(parse_utc("2025-13-01T00:00:00Z"), None);
        assert_eq!(parse_utc("２０２５-01-01T00:00:00Z"), None);
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(r#"{"conflictingRequest": {"message": "busy", "code": 409}}"#),
            "busy"
        );
        assert_eq!(
            error_message(r#"{"error": {"message": "no", "code": 401}}"#),
            "no"
        );
        assert_eq!(error_message("plain"), "plain");
    }

    #[test]
    fn auth_bodies_have_the_keystone_shape() {
        let b = auth_body(&Auth::Password {
            user: UserRef::Name {
                name: "u".into(),
                domain: DomainRef::Name("Default".into()),
            },
            password: Secret::new("p"),
            project: ProjectRef::Id("pid".into()),
        });
        assert_eq!(b["auth"]["identity"]["password"]["user"]["password"], "p");
        assert_eq!(b["auth"]["scope"]["project"]["id"], "pid");
        let b = auth_body(&Auth::ApplicationCredential {
            id: Some("cid".into()),
            name: None,
            secret: Secret::new("s"),
        });
        assert_eq!(
            b["auth"]["identity"]["methods"][0],
            "application_credential"
        );
        assert_eq!(b["auth"]["identity"]["application_credential"]["id"], "cid");
        assert!(b["auth"].get("scope").is_none());
    }
}
