//! The Redfish face (DSP0266, protocol 1.6): one service for the whole fleet, on the machines
//! the IPMI face drives (see docs/redfish.md and docs/architecture.md, "Where a second front
//! end plugs in").
//!
//! One `System` (and its `Manager` and `Chassis`) per BMC, `Id` the machine's UUID. Power and
//! boot go through the same [`Machine`](crate::backend::Machine) as IPMI: `Reset` is
//! `Machine::power`, `Boot` reads and writes the System Boot Options parameter 5 flags, so
//! `ipmitool chassis bootdev` and Redfish show one setting. Served with hyper on the shared
//! HTTP stack ([`crate::http`]), over TLS by default ([`tls`]).

// The `Err` of the request paths is the answer itself (a `Response`, built at most once per
// request and returned at once), not an error value passed around: boxing it buys nothing.
#![allow(clippy::result_large_err)]

pub mod auth;
mod ethernet;
pub mod fuzzing;
pub(crate) mod media;
mod resources;
pub mod tasks;
pub mod tls;

pub use media::shown as media_url_shown;

use std::collections::hash_map::DefaultHasher;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{Hash as _, Hasher as _};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{
    ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, HeaderName, HeaderValue, IF_MATCH,
    LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::backend::{BackendError, MachineError, SharedMachine};
use crate::http::{Body, Limits, Peer};
use crate::settings::RedfishSettings;
use auth::{Credentials, Lockout, Role, Sessions};

/// Request bodies larger than this are refused with 413 (Ironic's are a few hundred bytes).
pub const MAX_BODY: usize = 16 * 1024;

/// `Retry-After` of a 503 (the machine busy or in a transition: what IPMI answers C0).
const RETRY_AFTER_SECS: u64 = 2;

/// The Base message registry the errors cite (../shared/redfish/registries/Base.1.22.1.json).
const BASE: &str = "Base.1.22";

/// One BMC as the Redfish face sees it.
pub struct System {
    /// `Id`: the machine's UUID.
    pub id: String,
    /// `Name`: the instance name.
    pub name: String,
    /// The BMC's IPMI user.
    pub user: String,
    /// Its password.
    pub password: Zeroizing<Vec<u8>>,
    /// Its role (from the IPMI privilege).
    pub role: Role,
    /// The machine, shared with the IPMI task.
    pub machine: SharedMachine,
}

impl System {
    /// The view of one BMC.
    pub fn new(
        name: &str,
        user: &str,
        password: &Zeroizing<Vec<u8>>,
        privilege: ipmi_proto::session::Privilege,
        machine: SharedMachine,
    ) -> Option<Self> {
        Some(Self {
            id: uuid_string(&machine.uuid()),
            name: name.to_string(),
            user: user.to_string(),
            password: password.clone(),
            role: Role::of(privilege)?,
            machine,
        })
    }
}

/// RFC 4122 text form of 16 bytes in RFC 4122 order.
pub fn uuid_string(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The face without a listener: a request in, its answer out, as [`start`]'s service gives it
/// once the body is read (fuzzing, [`fuzzing`], and tests).
pub struct Offline(Face);

impl Offline {
    /// A face for `systems` with the default lock-out limits and a 2 s backend budget.
    pub fn new(systems: Vec<System>) -> Self {
        Self(Face {
            inner: Arc::new(Inner {
                systems: RwLock::new(Arc::new(systems)),
                sessions: Sessions::new(Duration::from_secs(1800)),
                lockout: Arc::new(Lockout::new(ipmi_proto::config::Limits::default())),
                backend_timeout: Duration::from_secs(2),
                service_uuid: service_uuid(SocketAddr::from(([127, 0, 0, 1], 443))),
                log_limit: auth::LogLimit::default(),
                tasks: tasks::Tasks::default(),
            }),
        })
    }

    /// The answer to `req` with `body` (POST and PATCH; over [`MAX_BODY`] bytes: 413).
    pub async fn answer(&self, req: &Request<()>, body: Option<Bytes>) -> Response<Body> {
        self.0.handle(req, body, None).await
    }
}

/// A running Redfish face: update its fleet after a reload, stop it at shutdown.
pub struct Handle {
    face: Face,
    stop: CancellationToken,
}

impl Handle {
    /// Replace the fleet (after a reload: changed BMCs have new machines).
    pub fn update(&self, systems: Vec<System>) {
        self.face.set_systems(systems);
    }

    /// Stop serving.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Bind the listener and load (or make) the certificate: at start-up, before anything serves.
pub async fn bind(
    s: &RedfishSettings,
) -> anyhow::Result<(TcpListener, Option<tokio_rustls::TlsAcceptor>)> {
    let tls = if s.insecure_http {
        warn!(
            "redfish: plain HTTP (--redfish-insecure-http): passwords and session tokens \
             cross the network in clear text"
        );
        None
    } else {
        Some(tls::acceptor(s)?)
    };
    Ok((crate::http::bind(s.addr, "Redfish").await?, tls))
}

/// Serve the face on `listener` (bound by [`bind`]). `lockout` is the process's one failed-login
/// lock-out, also given to every BMC's IPMI endpoint (see [`auth::Lockout`]).
pub fn start(
    s: &RedfishSettings,
    bound: (TcpListener, Option<tokio_rustls::TlsAcceptor>),
    lockout: Arc<Lockout>,
    systems: Vec<System>,
) -> Handle {
    let (listener, tls) = bound;
    let face = Face {
        inner: Arc::new(Inner {
            systems: RwLock::new(Arc::new(systems)),
            sessions: Sessions::new(s.session_timeout),
            lockout,
            backend_timeout: s.backend_timeout,
            service_uuid: service_uuid(s.addr),
            log_limit: auth::LogLimit::default(),
            tasks: tasks::Tasks::default(),
        }),
    };
    if let Ok(a) = listener.local_addr() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        info!(addr = %a, "redfish: serving {scheme}://{a}/redfish/v1");
    }
    let stop = CancellationToken::new();
    let f = face.clone();
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let f = f.clone();
        async move { Ok::<_, Infallible>(f.answer(req).await) }
    });
    tokio::spawn(crate::http::serve_tls(
        "redfish",
        listener,
        tls,
        Limits::default(),
        service,
        stop.clone(),
    ));
    Handle { face, stop }
}

/// A stable service UUID (ServiceRoot `UUID`): derived from the listen address, so it does not
/// change across restarts.
fn service_uuid(addr: SocketAddr) -> String {
    let mut b = [0u8; 16];
    for (i, chunk) in b.chunks_mut(8).enumerate() {
        let mut h = DefaultHasher::new();
        ("ovbmc-redfish", i, addr).hash(&mut h);
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    // Version 4 / variant 1 bits, so it is a well-formed UUID.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid_string(&b)
}

#[derive(Clone)]
struct Face {
    inner: Arc<Inner>,
}

struct Inner {
    systems: RwLock<Arc<Vec<System>>>,
    sessions: Sessions,
    /// Shared with every BMC's IPMI endpoint ([`auth::Lockout`]'s `SharedLockout`).
    lockout: Arc<Lockout>,
    backend_timeout: Duration,
    service_uuid: String,
    log_limit: auth::LogLimit,
    /// The TaskService's tasks (virtual media inserts).
    tasks: tasks::Tasks,
}

/// Who is asking, and what they may see.
struct Who {
    user: String,
    /// The systems they may see (indices into `systems`), with their role on each.
    access: Vec<(usize, Role)>,
    systems: Arc<Vec<System>>,
}

impl Who {
    fn system(&self, id: &str) -> Option<(&System, Role)> {
        self.access
            .iter()
            .map(|(i, r)| (&self.systems[*i], *r))
            .find(|(s, _)| s.id == id)
    }

    fn visible(&self) -> impl Iterator<Item = (&System, Role)> {
        self.access.iter().map(|(i, r)| (&self.systems[*i], *r))
    }

    /// The highest role on any system (for the service-wide resources).
    fn role(&self) -> Role {
        self.access
            .iter()
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(Role::ReadOnly)
    }
}

/// An answer that is not the happy path.
type Answer = Response<Body>;

impl Face {
    fn set_systems(&self, systems: Vec<System>) {
        *self
            .inner
            .systems
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(systems);
    }

    fn systems(&self) -> Arc<Vec<System>> {
        self.inner
            .systems
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The systems these credentials open, with their roles (empty: a bad login).
    fn check(&self, c: &Credentials) -> (Arc<Vec<System>>, Vec<(usize, Role)>) {
        let systems = self.systems();
        let access = systems
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                // Both compared whatever the first says, so timing does not tell a good name.
                let u = auth::same(s.user.as_bytes(), c.user.as_bytes());
                let p = auth::same(&s.password, &c.password);
                u & p
            })
            .map(|(i, s)| (i, s.role))
            .collect();
        (systems, access)
    }

    /// A login with `c` from `peer`: the access, or why not (401). Failures are logged
    /// through [`auth::LogLimit`] (a peer can cause them at will), naming the user only if it
    /// is a configured one: a password typed into the user field never reaches the log.
    fn login(&self, c: Credentials, peer: Option<SocketAddr>) -> Result<Who, Answer> {
        let ip = peer.map(|p| p.ip());
        let (systems, access) = self.check(&c);
        let known = systems.iter().any(|s| s.user == c.user);
        let shown = || {
            if known {
                format!("{:?}", c.user)
            } else {
                format!("<unknown name, {} chars>", c.user.chars().count())
            }
        };
        if let Some(ip) = ip
            && self.inner.lockout.locked(&c.user, ip)
        {
            if let Some(more) = self.inner.log_limit.admit() {
                warn!(user = %shown(), %ip, suppressed = more,
                      "redfish: login refused: locked out after failed logins");
            }
            return Err(unauthorized());
        }
        if access.is_empty() {
            if let Some(ip) = ip {
                self.inner.lockout.failed(Some(&c.user), ip);
            }
            if let Some(more) = self.inner.log_limit.admit() {
                warn!(user = %shown(), ip = ?ip, suppressed = more, "redfish: failed login");
            }
            return Err(unauthorized());
        }
        if let Some(ip) = ip {
            self.inner.lockout.succeeded(&c.user, ip);
        }
        Ok(Who {
            user: c.user,
            access,
            systems,
        })
    }

    /// Authenticate a request: a session token, else Basic credentials.
    fn authenticate<B>(&self, req: &Request<B>, peer: Option<SocketAddr>) -> Result<Who, Answer> {
        let h = req.headers();
        if let Some(t) = h.get("x-auth-token") {
            let tok = t.to_str().unwrap_or("");
            let Some((c, id)) = self.inner.sessions.touch(tok) else {
                return Err(unauthorized());
            };
            let (systems, access) = self.check(&c);
            if access.is_empty() {
                // The fleet changed under the session (a reload changed the password).
                self.inner.sessions.close(&id);
                return Err(unauthorized());
            }
            return Ok(Who {
                user: c.user,
                access,
                systems,
            });
        }
        match h
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            Some(v) => match auth::basic(v) {
                Some(c) => self.login(c, peer),
                None => Err(unauthorized()),
            },
            None => Err(unauthorized()),
        }
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Answer {
        let peer = req.extensions().get::<Peer>().map(|p| p.0);
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, ());
        let body = if matches!(*req.method(), Method::POST | Method::PATCH) {
            match read_body(&req, body).await {
                Ok(b) => Some(b),
                Err(a) => return finish(a),
            }
        } else {
            None
        };
        self.handle(&req, body, peer).await
    }

    /// A request whose body has been read, to its answer: everything but the sockets (the
    /// entry point of [`Offline`], which the fuzz target and its corpus test use).
    async fn handle(
        &self,
        req: &Request<()>,
        body: Option<Bytes>,
        peer: Option<SocketAddr>,
    ) -> Answer {
        // DSP0266 §8.2.1 (request headers): an OData version other than 4.0 is refused with
        // 412. The Base registry's message for it is HeaderInvalid ("Header '%1' is
        // invalid."); its PreconditionFailed speaks of ETags, which would mislead here.
        if let Some(v) = req.headers().get("odata-version")
            && v.as_bytes() != b"4.0"
        {
            return finish(error(
                StatusCode::PRECONDITION_FAILED,
                "HeaderInvalid",
                "Header 'OData-Version' is invalid.",
                &["OData-Version"],
            ));
        }
        // [`read_body`] limits what the socket gives; a body handed in whole is held to the
        // same limit.
        if body.as_ref().is_some_and(|b| b.len() > MAX_BODY) {
            return finish(payload_too_large());
        }
        let mut r = self
            .route(req, body, peer, Deadline::after(self.inner.backend_timeout))
            .await;
        // DSP0266 §8.3.2: `Allow` on every GET and HEAD answer (here: the successful ones).
        if r.status() == StatusCode::OK
            && matches!(*req.method(), Method::GET | Method::HEAD)
            && let Some(allow) = allow_for(normalize(req.uri().path()))
        {
            let list: Vec<&str> = allow.iter().map(Method::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                r.headers_mut().insert(ALLOW, v);
            }
        }
        finish(r)
    }

    async fn route(
        &self,
        req: &Request<()>,
        body: Option<Bytes>,
        peer: Option<SocketAddr>,
        due: Deadline,
    ) -> Answer {
        let path = normalize(req.uri().path());
        let m = req.method();
        let get = *m == Method::GET || *m == Method::HEAD;
        // Open to everyone (DSP0266 §13.3.1): the version document, the service root, the
        // metadata and the OData service document; and the login itself.
        match path {
            "/redfish" | "/redfish/v1" | "/redfish/v1/$metadata" | "/redfish/v1/odata" => {
                if !get {
                    return not_allowed(&[Method::GET, Method::HEAD]);
                }
                return match path {
                    "/redfish" => json_ok(&json!({ "v1": "/redfish/v1/" })),
                    "/redfish/v1" => json_ok(&resources::service_root(&self.inner.service_uuid)),
                    "/redfish/v1/$metadata" => metadata(),
                    _ => json_ok(&resources::odata()),
                };
            }
            // DSP0266 §9.5.2.1: a POST to a collection's `Members` is a POST to the collection.
            resources::SESSIONS | "/redfish/v1/SessionService/Sessions/Members"
                if *m == Method::POST =>
            {
                return self.create_session(body, peer);
            }
            _ => {}
        }
        let who = match self.authenticate(req, peer) {
            Ok(w) => w,
            Err(a) => return a,
        };
        let Some(allow) = resources::allowed(path)
            .or_else(|| media::allowed(path))
            .or_else(|| tasks::allowed(path))
        else {
            return not_found(path);
        };
        if !allow.contains(m) {
            return not_allowed(allow);
        }
        let seg: Vec<&str> = path.trim_start_matches("/redfish/v1/").split('/').collect();
        match (seg.as_slice(), m.clone()) {
            (["Systems"], _) => json_ok(&resources::collection(
                "ComputerSystemCollection",
                "Computer System Collection",
                "/redfish/v1/Systems",
                who.visible()
                    .map(|(s, _)| format!("/redfish/v1/Systems/{}", s.id)),
            )),
            (["Systems", id], Method::PATCH) => self.patch_system(req, &who, id, body, due).await,
            (["Systems", id], _) => match who.system(id) {
                Some((s, _)) => match self.system_json(s, due).await {
                    Ok(v) => json_ok(&v),
                    Err(a) => a,
                },
                None => not_found(path),
            },
            (["Systems", id, "Actions", "ComputerSystem.Reset"], _) => {
                self.reset(&who, id, body, due).await
            }
            (["Systems", id, "EthernetInterfaces"], _) => match who.system(id) {
                Some((s, _)) => {
                    let (inv, _) = self.inventory_and_power(s, false, due).await;
                    json_ok(&ethernet::collection(&s.id, inv.as_ref()))
                }
                None => not_found(path),
            },
            (["Systems", id, "EthernetInterfaces", nic], _) => match who.system(id) {
                Some((s, _)) => {
                    let (inv, power) = self.inventory_and_power(s, true, due).await;
                    match ethernet::interface(&s.id, nic, inv.as_ref(), power) {
                        Some(v) => json_ok(&v),
                        None => not_found(path),
                    }
                }
                None => not_found(path),
            },
            (["Managers"], _) => json_ok(&resources::collection(
                "ManagerCollection",
                "Manager Collection",
                "/redfish/v1/Managers",
                who.visible()
                    .map(|(s, _)| format!("/redfish/v1/Managers/{}", s.id)),
            )),
            (["Managers", id, "VirtualMedia", rest @ ..], _) => {
                self.media(req, &who, id, rest, body, due).await
            }
            (["TaskService", rest @ ..], _) => self.task_service(&who, rest),
            (["Managers", id], _) => match who.system(id) {
                Some((s, _)) => json_ok(&resources::manager(&s.id, &s.name)),
                None => not_found(path),
            },
            (["Chassis"], _) => json_ok(&resources::collection(
                "ChassisCollection",
                "Chassis Collection",
                "/redfish/v1/Chassis",
                who.visible()
                    .map(|(s, _)| format!("/redfish/v1/Chassis/{}", s.id)),
            )),
            (["Chassis", id], _) => match who.system(id) {
                Some((s, _)) => json_ok(&resources::chassis(&s.id, &s.name)),
                None => not_found(path),
            },
            (["SessionService"], _) => json_ok(&resources::session_service(
                self.inner.sessions.timeout().as_secs(),
            )),
            (["SessionService", "Sessions"], _) => {
                let mine = self.inner.sessions.list();
                json_ok(&resources::collection(
                    "SessionCollection",
                    "Session Collection",
                    resources::SESSIONS,
                    mine.into_iter()
                        .filter(|(_, u)| *u == who.user || who.role() == Role::Administrator)
                        .map(|(id, _)| format!("{}/{id}", resources::SESSIONS)),
                ))
            }
            (["SessionService", "Sessions", id], method) => {
                let found = self.inner.sessions.list().into_iter().find(|(i, u)| {
                    i == id && (*u == who.user || who.role() == Role::Administrator)
                });
                match (found, method) {
                    (None, _) => not_found(path),
                    (Some(_), Method::DELETE) => {
                        self.inner.sessions.close(id);
                        no_content()
                    }
                    (Some((id, user)), _) => json_ok(&resources::session(&id, &user)),
                }
            }
            (["AccountService"], _) => json_ok(&resources::account_service()),
            (["AccountService", "Accounts"], _) => json_ok(&resources::collection(
                "ManagerAccountCollection",
                "Accounts Collection",
                "/redfish/v1/AccountService/Accounts",
                std::iter::once(format!("/redfish/v1/AccountService/Accounts/{}", who.user)),
            )),
            (["AccountService", "Accounts", user], _) if *user == who.user => {
                json_ok(&resources::account(&who.user, who.role()))
            }
            (["AccountService", "Roles"], _) => json_ok(&resources::collection(
                "RoleCollection",
                "Roles Collection",
                "/redfish/v1/AccountService/Roles",
                resources::ROLES
                    .iter()
                    .map(|r| format!("/redfish/v1/AccountService/Roles/{}", r.id())),
            )),
            (["AccountService", "Roles", id], _) => {
                match resources::ROLES.iter().find(|r| r.id() == *id) {
                    Some(r) => json_ok(&resources::role(*r)),
                    None => not_found(path),
                }
            }
            _ => not_found(path),
        }
    }

    /// POST SessionService/Sessions: a login (DSP0266 §13.3.4).
    fn create_session(&self, body: Option<Bytes>, peer: Option<SocketAddr>) -> Answer {
        let v = match parse_json(body) {
            Ok(v) => v,
            Err(a) => return a,
        };
        let field = |k: &str| v.get(k).and_then(Value::as_str);
        let (Some(user), Some(pw)) = (field("UserName"), field("Password")) else {
            let missing = if field("UserName").is_none() {
                "UserName"
            } else {
                "Password"
            };
            return error(
                StatusCode::BAD_REQUEST,
                "CreateFailedMissingReqProperties",
                &format!(
                    "The create operation failed because the required property {missing} was \
                     missing from the request."
                ),
                &[missing],
            );
        };
        let c = Credentials {
            user: user.to_string(),
            password: Zeroizing::new(pw.as_bytes().to_vec()),
        };
        let who = match self.login(c, peer) {
            Ok(w) => w,
            Err(a) => return a,
        };
        let (token, id) = self.inner.sessions.open(Credentials {
            user: who.user.clone(),
            password: Zeroizing::new(pw.as_bytes().to_vec()),
        });
        let mut r = json_response(
            StatusCode::CREATED,
            &resources::session(&id, &who.user),
            false,
        );
        let h = r.headers_mut();
        if let Ok(t) = HeaderValue::from_str(&token) {
            let mut t = t;
            t.set_sensitive(true);
            h.insert(HeaderName::from_static("x-auth-token"), t);
        }
        if let Ok(l) = HeaderValue::from_str(&format!("{}/{id}", resources::SESSIONS)) {
            h.insert(LOCATION, l);
        }
        r
    }

    /// The ComputerSystem document (reads power state and boot flags), by `due`.
    async fn system_json(&self, s: &System, due: Deadline) -> Result<Value, Answer> {
        let m = s.machine.clone();
        let power = within(due, async move { m.power_state().await }).await?;
        let m = s.machine.clone();
        let boot = within(due, async move { m.boot_flags().await }).await?;
        // Best effort: a machine whose backend cannot say is shown without the summaries.
        let m = s.machine.clone();
        let inv = due.best_effort(async move { m.inventory().await }).await;
        Ok(resources::system(&s.id, &s.name, power, boot, inv.as_ref()))
    }

    /// Best effort, by `due`: the inventory (`None` where the backend has none or cannot say)
    /// and, if `with_power`, the power state.
    async fn inventory_and_power(
        &self,
        s: &System,
        with_power: bool,
        due: Deadline,
    ) -> (
        Option<crate::backend::Inventory>,
        Option<crate::backend::PowerState>,
    ) {
        let m = s.machine.clone();
        let inv = due.best_effort(async move { m.inventory().await }).await;
        let power = if with_power {
            let m = s.machine.clone();
            within(due, async move { m.power_state().await }).await.ok()
        } else {
            None
        };
        (inv, power)
    }

    async fn patch_system(
        &self,
        req: &Request<()>,
        who: &Who,
        id: &str,
        body: Option<Bytes>,
        due: Deadline,
    ) -> Answer {
        let path = req.uri().path();
        let Some((s, role)) = who.system(id) else {
            return not_found(path);
        };
        if !role.may_configure() {
            return forbidden();
        }
        let v = match parse_json(body) {
            Ok(v) => v,
            Err(a) => return a,
        };
        let current = match self.system_json(s, due).await {
            Ok(c) => c,
            Err(a) => return a,
        };
        if let Some(refused) = stale(req.headers(), &current) {
            return refused;
        }
        let m = s.machine.clone();
        let flags = match within(due, async move { m.boot_flags().await }).await {
            Ok(f) => f,
            Err(a) => return a,
        };
        let new = match resources::patch_boot(&v, &current, flags) {
            Ok(f) => f,
            Err(e) => return e.answer(),
        };
        if new != flags {
            let m = &s.machine;
            let attempt = || {
                let m = m.clone();
                async move { m.set_boot_flags(new).await }
            };
            if let Err(a) = change(due, "boot override", &s.name, attempt).await {
                return a;
            }
            info!(system = %s.name, user = %who.user, boot = %new, "redfish: boot override set");
        }
        match self.system_json(s, due).await {
            Ok(v) => json_ok(&v),
            // The change is made; only the document after it is late (our own change made the
            // Nova view stale, so this read may wait for a list of its own). DSP0266 §9.5.3
            // lets a PATCH answer 204 without the resource: better than a 503 that would tell
            // the client (sushy does not retry a PATCH) that a change it asked for failed.
            Err(_) if new != flags => {
                info!(system = %s.name, "redfish: PATCH answered 204, the system not re-read in time");
                no_content()
            }
            Err(a) => a,
        }
    }

    async fn reset(&self, who: &Who, id: &str, body: Option<Bytes>, due: Deadline) -> Answer {
        let Some((s, role)) = who.system(id) else {
            return not_found(&format!("/redfish/v1/Systems/{id}"));
        };
        if !role.may_configure() {
            return forbidden();
        }
        let v = match parse_json(body) {
            Ok(v) => v,
            Err(a) => return a,
        };
        let action = match resources::reset_action(&v) {
            Ok(a) => a,
            Err(e) => return e.answer(),
        };
        let m = &s.machine;
        let attempt = || {
            let m = m.clone();
            async move { m.power(action).await }
        };
        match change(due, "reset", &s.name, attempt).await {
            Ok(()) => {
                info!(system = %s.name, user = %who.user, ?action, "redfish: reset");
                no_content()
            }
            Err(a) => a,
        }
    }
}

/// The headers every answer carries.
fn finish(mut r: Answer) -> Answer {
    let h = r.headers_mut();
    h.insert(
        HeaderName::from_static("odata-version"),
        HeaderValue::from_static("4.0"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The methods `path` takes, the open documents included.
fn allow_for(path: &str) -> Option<&'static [Method]> {
    match path {
        "/redfish" | "/redfish/v1" | "/redfish/v1/$metadata" | "/redfish/v1/odata" => {
            Some(&[Method::GET, Method::HEAD])
        }
        p => resources::allowed(p)
            .or_else(|| media::allowed(p))
            .or_else(|| tasks::allowed(p)),
    }
}

/// Trailing slashes do not matter (`/redfish/v1/` is the service root's canonical form).
fn normalize(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() { "/" } else { t }
}

fn payload_too_large() -> Answer {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PayloadTooLarge",
        "The supplied payload exceeds the maximum size supported by the service.",
        &[],
    )
}

/// The request body, at most [`MAX_BODY`] bytes (413 beyond).
async fn read_body(req: &Request<()>, body: hyper::body::Incoming) -> Result<Bytes, Answer> {
    let too_large = payload_too_large;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "MalformedJSON",
            "The request body submitted was malformed JSON and could not be parsed by the \
             receiving service.",
            &[],
        )),
    }
}

fn parse_json(body: Option<Bytes>) -> Result<Value, Answer> {
    let b = body.unwrap_or_default();
    match serde_json::from_slice::<Value>(&b) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "MalformedJSON",
            "The request body submitted was malformed JSON and could not be parsed by the \
             receiving service.",
            &[],
        )),
    }
}

/// When the answer to one request is due: the face's backend budget
/// (`--redfish-backend-timeout-ms`) after the request came, shared by every machine call it
/// makes. A GET of a system makes three calls and a boot PATCH five; a budget per call would let
/// one request wait several budgets, past what its client waits (Ironic: 60 s).
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline(tokio::time::Instant);

impl Deadline {
    fn after(budget: Duration) -> Self {
        Self(tokio::time::Instant::now() + budget)
    }

    /// What is left of it (zero once it has passed).
    fn left(self) -> Duration {
        self.0
            .saturating_duration_since(tokio::time::Instant::now())
    }

    /// `f` with the patience of what is left ([`crate::backend::patience`]): a read may wait
    /// for a Nova server list in flight nearly that long, far longer than an IPMI request may,
    /// because the HTTP clients of this face wait (Ironic: 60 s) where a 503 would fail a PATCH
    /// or an action outright (sushy retries only GETs).
    fn patient<F: Future>(self, f: F) -> impl Future<Output = F::Output> {
        crate::backend::with_patience(crate::backend::patience_within(self.left()), f)
    }

    /// `f`'s answer if it comes by the deadline and has one; else `None`.
    async fn best_effort<T>(self, f: impl Future<Output = Option<T>>) -> Option<T> {
        tokio::time::timeout_at(self.0, self.patient(f))
            .await
            .ok()
            .flatten()
    }
}

/// Run a machine call in its own task, waiting until `due` at most (as the IPMI face waits its
/// budget before answering C0): past it, or when the machine says busy, 503 with `Retry-After`;
/// the call itself goes on.
async fn within<T: Send + 'static>(
    due: Deadline,
    f: impl Future<Output = Result<T, BackendError>> + Send + 'static,
) -> Result<T, Answer> {
    match attempt(due, f).await {
        Attempt::Done(v) => Ok(v),
        Attempt::Refused(e) => Err(machine_error(&e)),
        Attempt::Answer(a) => Err(a),
    }
}

/// How one machine call in its own task ended by its deadline.
enum Attempt<T> {
    /// Its value.
    Done(T),
    /// The machine's error.
    Refused(BackendError),
    /// What to answer: the task died (500) or the deadline passed (503; the call goes on).
    Answer(Answer),
}

async fn attempt<T: Send + 'static>(
    due: Deadline,
    f: impl Future<Output = Result<T, BackendError>> + Send + 'static,
) -> Attempt<T> {
    let task = tokio::spawn(due.patient(f));
    match tokio::time::timeout_at(due.0, task).await {
        Ok(Ok(Ok(v))) => Attempt::Done(v),
        Ok(Ok(Err(e))) => Attempt::Refused(e),
        Ok(Err(_)) => Attempt::Answer(internal()),
        Err(_) => Attempt::Answer(busy()),
    }
}

/// How long a change waits before it asks a busy machine again.
const BUSY_PAUSE: Duration = Duration::from_millis(250);

/// Run a change (`f` makes one attempt) by `due`, asking again while the machine answers busy:
/// Nova still on an earlier action, or in a transition. The IPMI face answers C0 at once and
/// its clients retry; Ironic's sushy retries only GETs, and Ironic's Redfish reboot sends
/// ForceOff, sees PowerState Off at once (an accepted off is reported off), then sends On
/// while Nova is still powering off: answered 503, the reboot failed (seen in the lab's CI
/// run, 2026-12-04; ironic/drivers/modules/redfish/power.py `reboot`). A real BMC carries
/// such a sequence out. A busy answer sent nothing to Nova, so asking again is safe; a
/// timeout (sent, not confirmed) is not retried. At the deadline: 503 with `Retry-After`, and
/// a log line that says what was busy.
pub(super) async fn change<T, F, Fut>(
    due: Deadline,
    what: &str,
    system: &str,
    f: F,
) -> Result<T, Answer>
where
    T: Send + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, BackendError>> + Send + 'static,
{
    let t0 = tokio::time::Instant::now();
    let mut busy_answers = 0u32;
    loop {
        let e = match attempt(due, f()).await {
            Attempt::Done(v) => {
                if busy_answers > 0 {
                    info!(
                        system,
                        waited_ms = t0.elapsed().as_millis() as u64,
                        "redfish: {what} waited for the machine to finish what it was doing"
                    );
                }
                return Ok(v);
            }
            Attempt::Refused(e) => e,
            Attempt::Answer(a) => {
                if a.status() == StatusCode::SERVICE_UNAVAILABLE {
                    info!(system, "redfish: {what}: no answer by the deadline: 503");
                }
                return Err(a);
            }
        };
        if e.kind != MachineError::Busy || due.left() < BUSY_PAUSE * 2 {
            if e.kind == MachineError::Busy {
                info!(
                    system,
                    "redfish: {what}: still busy at the deadline ({e}): 503"
                );
            }
            return Err(machine_error(&e));
        }
        busy_answers += 1;
        tokio::time::sleep(BUSY_PAUSE).await;
    }
}

fn machine_error(e: &BackendError) -> Answer {
    match e.kind {
        MachineError::Busy | MachineError::Timeout => busy(),
        MachineError::NotInPresentState => error(
            StatusCode::CONFLICT,
            "ResourceInUse",
            "The change to the requested resource failed because the resource is in use or \
             in transition.",
            &[],
        ),
        MachineError::Unsupported => error(
            StatusCode::BAD_REQUEST,
            "ActionNotSupported",
            "The action ComputerSystem.Reset is not supported by the resource.",
            &["ComputerSystem.Reset"],
        ),
        MachineError::Failed => {
            warn!(error = %e, "redfish: the machine failed");
            internal()
        }
    }
}

fn busy() -> Answer {
    let secs = RETRY_AFTER_SECS.to_string();
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceTemporarilyUnavailable",
        &format!("The service is temporarily unavailable.  Retry in {secs} seconds."),
        &[&secs],
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    r
}

fn internal() -> Answer {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "The request failed due to an internal service error.  The service is still \
         operational.",
        &[],
    )
}

fn unauthorized() -> Answer {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "NoValidSession",
        "There is no valid session established with the implementation.",
        &[],
    );
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"ovbmc Redfish\", charset=\"UTF-8\""),
    );
    r
}

fn forbidden() -> Answer {
    error(
        StatusCode::FORBIDDEN,
        "InsufficientPrivilege",
        "There are insufficient privileges for the account or credentials associated with \
         the current session to perform the requested operation.",
        &[],
    )
}

fn not_found(path: &str) -> Answer {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("The requested resource of type Resource named '{path}' was not found."),
        &["Resource", path],
    )
}

fn not_allowed(allow: &[Method]) -> Answer {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "OperationNotAllowed",
        "The HTTP method is not allowed on this resource.",
        &[],
    );
    let list: Vec<&str> = allow.iter().map(Method::as_str).collect();
    if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
        r.headers_mut().insert(ALLOW, v);
    }
    r
}

fn no_content() -> Answer {
    let mut r = Response::new(Full::default());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// An error answer: the Base registry's message `id` (DSP0266 §9.6, "Error responses").
pub(crate) fn error(status: StatusCode, id: &str, message: &str, args: &[&str]) -> Answer {
    let v = json!({
        "error": {
            "code": format!("{BASE}.{id}"),
            "message": message,
            "@Message.ExtendedInfo": [{
                "@odata.type": "#Message.v1_1_1.Message",
                "MessageId": format!("{BASE}.{id}"),
                "Message": message,
                "MessageArgs": args,
                "Severity": if status.is_server_error() || status == StatusCode::PRECONDITION_FAILED {
                    "Critical"
                } else {
                    "Warning"
                },
            }],
        }
    });
    json_response(status, &v, false)
}

/// 412 `PreconditionFailed` when the request's `If-Match` names none of `current`'s ETag and
/// is not `*` (RFC 9110 §13.1.1; DSP0266 "ETags"); `None` without `If-Match` or on a match.
pub(super) fn stale(headers: &hyper::HeaderMap, current: &Value) -> Option<Answer> {
    let want = headers.get(IF_MATCH)?;
    let tag = etag(current);
    let ok = want
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        // A client that sends the tag back marked weak is not refused for it.
        .any(|w| w == "*" || w.trim_start_matches("W/") == tag);
    (!ok).then(|| {
        error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "The ETag supplied did not match the ETag required to change this resource.",
            &[],
        )
    })
}

/// A strong tag (`If-Match` compares strongly, RFC 9110 §13.1.1): a hash of the document as
/// sent (serde_json writes an object's keys in order, so equal documents are equal bytes).
fn etag(v: &Value) -> String {
    let mut h = DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

/// A resource: its document with an `ETag`, and a `Link` to its JSON schema (DSP0266 §8.3.4,
/// `rel=describedby`) from its `@odata.type`.
fn json_ok(v: &Value) -> Answer {
    let mut r = json_response(StatusCode::OK, v, true);
    if let Some(t) = v["@odata.type"].as_str() {
        // "#ComputerSystem.v1_20_0.ComputerSystem" -> ComputerSystem.v1_20_0.json;
        // "#ComputerSystemCollection.ComputerSystemCollection" -> ComputerSystemCollection.json.
        let t = t.trim_start_matches('#');
        let schema = t.rsplit_once('.').map_or(t, |(s, _)| s);
        let link = format!("<http://redfish.dmtf.org/schemas/v1/{schema}.json>; rel=describedby");
        if let Ok(l) = HeaderValue::from_str(&link) {
            r.headers_mut().insert(hyper::header::LINK, l);
        }
    }
    r
}

fn json_response(status: StatusCode, v: &Value, with_etag: bool) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if with_etag && let Ok(t) = HeaderValue::from_str(&etag(v)) {
        h.insert(ETAG, t);
    }
    r
}

fn metadata() -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(resources::metadata())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    r
}
