//! Who is asking: HTTP Basic credentials or a SessionService token (DSP0266 §13.3), checked
//! against the fleet's IPMI users, the failed-login lock-out, and the sessions.
//!
//! The users are the BMCs' own (`user` and password of each `[[bmc]]`): a login is good when
//! some BMC has that user and password, and it sees the systems of exactly those BMCs, each
//! with the role its `privilege` maps to. Passwords and tokens are never logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipmi_proto::config::Limits;
use ipmi_proto::session::Privilege;
use zeroize::Zeroizing;

/// A Redfish role (DSP0266 §13.2.5, the predefined roles), from the IPMI privilege.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// IPMI USER: `Login` only.
    ReadOnly,
    /// IPMI OPERATOR: also `ConfigureComponents` (reset, boot override).
    Operator,
    /// IPMI ADMINISTRATOR: everything.
    Administrator,
}

impl Role {
    /// The role of an IPMI privilege (CALLBACK and below have none).
    pub fn of(p: Privilege) -> Option<Self> {
        match p {
            Privilege::Administrator => Some(Self::Administrator),
            Privilege::Operator => Some(Self::Operator),
            Privilege::User => Some(Self::ReadOnly),
            Privilege::Callback => None,
        }
    }

    /// Its `RoleId`.
    pub fn id(self) -> &'static str {
        match self {
            Self::ReadOnly => "ReadOnly",
            Self::Operator => "Operator",
            Self::Administrator => "Administrator",
        }
    }

    /// Whether it may change components (reset, boot override).
    pub fn may_configure(self) -> bool {
        self >= Self::Operator
    }
}

/// Credentials of a request, checked or not.
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <password>)", self.user)
    }
}

/// `Authorization: Basic …` decoded (RFC 7617); `None` if malformed.
pub fn basic(header: &str) -> Option<Credentials> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = Zeroizing::new(base64_decode(rest.trim())?);
    let colon = raw.iter().position(|&b| b == b':')?;
    let user = std::str::from_utf8(&raw[..colon]).ok()?.to_string();
    Some(Credentials {
        user,
        password: Zeroizing::new(raw[colon + 1..].to_vec()),
    })
}

/// Standard base64 (RFC 4648 §4, padding optional); `None` on any other byte.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Equal in time independent of where they differ (the lengths may leak; they do in IPMI too).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The lock-out key of a source: an IPv4 address or an IPv6 /64, as the IPMI face counts.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

#[derive(Default)]
struct Failures {
    since: Option<Instant>,
    count: u32,
    locked_until: Option<Instant>,
}

impl Failures {
    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|t| now < t)
    }

    fn fail(&mut self, now: Instant, threshold: u32, window: Duration, duration: Duration) {
        if threshold == 0 {
            return;
        }
        if self.since.is_none_or(|s| now.duration_since(s) > window) {
            self.since = Some(now);
            self.count = 0;
        }
        self.count += 1;
        if self.count >= threshold {
            self.locked_until = Some(now + duration);
            self.count = 0;
            self.since = None;
        }
    }
}

/// Tables bounded in size: beyond this, the stalest entries go (a flood of sources or names
/// cannot grow them without end).
const MAX_TRACKED: usize = 4096;

/// The failed-login lock-out, with the IPMI face's thresholds (`--lockout-*`): per source, per
/// user name, and the trust a source earns by logging in as a user.
pub struct Lockout {
    limits: Limits,
    inner: Mutex<LockoutTables>,
}

#[derive(Default)]
struct LockoutTables {
    sources: HashMap<IpAddr, Failures>,
    users: HashMap<String, Failures>,
    trusted: HashMap<(String, IpAddr), Instant>,
}

impl Lockout {
    /// With the IPMI face's limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            inner: Mutex::new(LockoutTables::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LockoutTables> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a login of `user` from `ip` is refused without looking at the password.
    pub fn locked(&self, user: &str, ip: IpAddr) -> bool {
        self.source_locked_at(Instant::now(), ip) || self.user_locked_at(Instant::now(), user, ip)
    }

    fn source_locked_at(&self, now: Instant, ip: IpAddr) -> bool {
        self.lock()
            .sources
            .get(&source_key(ip))
            .is_some_and(|f| f.locked(now))
    }

    /// The user's lock-out, which a source that logged in as the user recently is exempt from
    /// (as the IPMI face's, `--lockout-trust-secs`).
    fn user_locked_at(&self, now: Instant, user: &str, ip: IpAddr) -> bool {
        let t = self.lock();
        let trusted = t
            .trusted
            .get(&(user.to_string(), source_key(ip)))
            .is_some_and(|at| now.duration_since(*at) < self.limits.lockout_trust);
        !trusted && t.users.get(user).is_some_and(|f| f.locked(now))
    }

    /// Count a failed login against its source and, if given, its user name.
    pub fn failed(&self, user: Option<&str>, ip: IpAddr) {
        let now = Instant::now();
        let l = &self.limits;
        let mut t = self.lock();
        for m in [t.sources.len(), t.users.len()] {
            if m >= MAX_TRACKED {
                t.sources.retain(|_, f| f.locked(now));
                t.users.retain(|_, f| f.locked(now));
                break;
            }
        }
        t.sources.entry(source_key(ip)).or_default().fail(
            now,
            l.source_lockout_threshold,
            l.lockout_window,
            l.lockout_duration,
        );
        if let Some(user) = user
            && (t.users.len() < MAX_TRACKED || t.users.contains_key(user))
        {
            t.users.entry(user.to_string()).or_default().fail(
                now,
                l.user_lockout_threshold,
                l.lockout_window,
                l.lockout_duration,
            );
        }
    }

    /// A good login: the source is trusted for the user.
    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        let mut t = self.lock();
        let key = (user.to_string(), source_key(ip));
        if !t.trusted.contains_key(&key)
            && t.trusted.len() >= self.limits.max_trusted.max(1)
            && let Some(old) = t
                .trusted
                .iter()
                .min_by_key(|(_, v)| **v)
                .map(|(k, _)| k.clone())
        {
            t.trusted.remove(&old);
        }
        t.trusted.insert(key, Instant::now());
    }
}

/// The one lock-out of the process when the Redfish face is served: every BMC's IPMI endpoint
/// asks and feeds it too (`BmcConfig::shared_lockout`), so failed IPMI logins lock Redfish
/// logins out and the other way round, one count per user name and per source.
impl ipmi_proto::config::SharedLockout for Lockout {
    fn source_locked(&self, source: IpAddr) -> bool {
        self.source_locked_at(Instant::now(), source)
    }

    fn user_locked(&self, user: &str, source: IpAddr) -> bool {
        self.user_locked_at(Instant::now(), user, source)
    }

    fn failed(&self, user: Option<&str>, source: IpAddr) {
        Lockout::failed(self, user, source);
    }

    fn succeeded(&self, user: &str, source: IpAddr) {
        Lockout::succeeded(self, user, source);
    }
}

/// Log lines a peer can cause at will (failed logins, refusals during a lock-out): the first
/// [`LogLimit::BURST`] in [`LogLimit::WINDOW`] one by one, then one line per window carrying
/// the count of those not logged (as the IPMI face limits its own).
#[derive(Default)]
pub struct LogLimit(Mutex<Option<(Instant, u32, u64)>>);

impl LogLimit {
    /// Lines logged one by one per window.
    pub const BURST: u32 = 5;
    /// The window.
    pub const WINDOW: Duration = Duration::from_secs(10);

    /// `Some(n)`: log this event, saying `n` were not logged before it; `None`: count it.
    pub fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (start, logged, suppressed) = g.get_or_insert((now, 0, 0));
        if now.duration_since(*start) >= Self::WINDOW {
            let more = *suppressed;
            *g = Some((now, 1, 0));
            return Some(more);
        }
        if *logged < Self::BURST {
            *logged += 1;
            Some(0)
        } else {
            *suppressed += 1;
            None
        }
    }
}

/// One SessionService session.
pub struct Session {
    /// Its `Id` (not the token).
    pub id: String,
    /// Who logged in (checked again against the fleet on every use: a reload that changes
    /// the password ends what it may see).
    pub creds: Credentials,
    last_used: Instant,
}

/// At most this many sessions; a new one beyond evicts the one unused the longest.
pub const MAX_SESSIONS: usize = 256;

/// The sessions, by token.
pub struct Sessions {
    timeout: Duration,
    by_token: Mutex<HashMap<String, Session>>,
}

/// A random hex string of `n` bytes.
fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Sessions {
    /// Sessions closed after `timeout` unused.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            by_token: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_token.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The idle timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Open a session for checked credentials: (token, id).
    pub fn open(&self, creds: Credentials) -> (Zeroizing<String>, String) {
        let token = Zeroizing::new(random_hex(32));
        let id = random_hex(8);
        let mut t = self.lock();
        let now = Instant::now();
        t.retain(|_, s| now.duration_since(s.last_used) < self.timeout);
        if t.len() >= MAX_SESSIONS
            && let Some(k) = t
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            t.remove(&k);
        }
        t.insert(
            token.to_string(),
            Session {
                id: id.clone(),
                creds,
                last_used: now,
            },
        );
        (token, id)
    }

    /// The credentials and id of a live session, marking it used.
    pub fn touch(&self, token: &str) -> Option<(Credentials, String)> {
        let mut t = self.lock();
        let now = Instant::now();
        let s = t.get_mut(token)?;
        if now.duration_since(s.last_used) >= self.timeout {
            t.remove(token);
            return None;
        }
        s.last_used = now;
        Some((
            Credentials {
                user: s.creds.user.clone(),
                password: s.creds.password.clone(),
            },
            s.id.clone(),
        ))
    }

    /// The live sessions: (id, user name).
    pub fn list(&self) -> Vec<(String, String)> {
        let now = Instant::now();
        let mut v: Vec<(String, String)> = self
            .lock()
            .values()
            .filter(|s| now.duration_since(s.last_used) < self.timeout)
            .map(|s| (s.id.clone(), s.creds.user.clone()))
            .collect();
        v.sort();
        v
    }

    /// Close the session `id`; whether there was one.
    pub fn close(&self, id: &str) -> bool {
        let mut t = self.lock();
        let before = t.len();
        t.retain(|_, s| s.id != id);
        t.len() < before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode() {
        let c = basic("Basic YWRtaW46cGFzczp3b3Jk").unwrap();
        assert_eq!(c.user, "admin");
        assert_eq!(&c.password[..], b"pass:word");
        assert!(basic("Bearer x").is_none());
        assert!(basic("Basic !!!").is_none());
        assert!(basic("Basic YWRtaW4").is_none(), "no colon");
    }

    #[test]
    fn lockout_after_threshold_and_trust() {
        let limits = Limits {
            source_lockout_threshold: 3,
            user_lockout_threshold: 5,
            ..Limits::default()
        };
        let l = Lockout::new(limits);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        l.succeeded("admin", c);
        for _ in 0..3 {
            assert!(!l.locked("admin", a));
            l.failed(Some("admin"), a);
        }
        assert!(l.locked("admin", a), "source locked");
        assert!(!l.locked("admin", b));
        l.failed(Some("admin"), b);
        l.failed(Some("admin"), b);
        assert!(l.locked("admin", b), "user locked after 5");
        assert!(
            !l.locked("admin", c),
            "a trusted source is not locked by the user lock-out"
        );
    }

    #[test]
    fn log_lines_are_limited() {
        let l = LogLimit::default();
        let logged = (0..100).filter(|_| l.admit().is_some()).count();
        assert_eq!(logged, LogLimit::BURST as usize);
    }

    #[test]
    fn sessions_expire_and_close() {
        let s = Sessions::new(Duration::from_millis(50));
        let (tok, id) = s.open(Credentials {
            user: "u".into(),
            password: Zeroizing::new(b"p".to_vec()),
        });
        assert_eq!(s.touch(&tok).unwrap().1, id);
        assert_eq!(s.list().len(), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.touch(&tok).is_none(), "idle timeout");
        let (tok, id) = s.open(Credentials {
            user: "u".into(),
            password: Zeroizing::new(b"p".to_vec()),
        });
        assert!(s.close(&id));
        assert!(s.touch(&tok).is_none());
        assert!(!s.close(&id));
    }

    #[test]
    fn roles_from_privileges() {
        assert_eq!(Role::of(Privilege::User), Some(Role::ReadOnly));
        assert_eq!(Role::of(Privilege::Operator), Some(Role::Operator));
        assert_eq!(
            Role::of(Privilege::Administrator),
            Some(Role::Administrator)
        );
        assert!(!Role::ReadOnly.may_configure() && Role::Operator.may_configure());
    }
}
