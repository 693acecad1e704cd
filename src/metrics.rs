//! Prometheus metrics (`--metrics ADDR`): per-BMC counters kept in relaxed atomics, and a
//! small HTTP/1.1 responder for `GET /metrics` and `GET /healthz`.
//!
//! The hot path (one UDP datagram) only touches its own BMC's [`BmcMetrics`]: a few relaxed
//! atomic adds and stores, no lock and no allocation. The registry lock is taken when a BMC
//! starts or stops and when `/metrics` is scraped. The metric names and their meaning are
//! documented in `docs/configuration.md` ("Metrics"); keep the two in step.
//!
//! The responder is deliberately tiny (no hyper): GET only, one request per connection
//! (`Connection: close`), the request head bounded in size and in time, a bounded number of
//! connections at once. A scraper needs nothing more, and nothing more can go wrong.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use ipmi_proto::endpoint::{Event, EventKind, LoginFailure, Stats};
use ipmi_proto::machine::MachineError;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Commands named in `ovbmc_requests_total{command=...}` (IPMI v2.0 Appendix G numbering).
/// Anything else (unknown commands, which get C1) is counted as `other`, so that a client
/// cannot create series at will.
const COMMANDS: &[(u8, u8, &str)] = &[
    (0x06, 0x01, "get_device_id"),
    (0x06, 0x02, "cold_reset"),
    (0x06, 0x03, "warm_reset"),
    (0x06, 0x04, "get_self_test_results"),
    (0x06, 0x08, "get_device_guid"),
    (0x06, 0x37, "get_system_guid"),
    (0x06, 0x38, "get_channel_auth_capabilities"),
    (0x06, 0x3b, "set_session_privilege_level"),
    (0x06, 0x3c, "close_session"),
    (0x06, 0x3d, "get_session_info"),
    (0x06, 0x41, "get_channel_access"),
    (0x06, 0x42, "get_channel_info"),
    (0x06, 0x44, "get_user_access"),
    (0x06, 0x46, "get_user_name"),
    (0x06, 0x54, "get_channel_cipher_suites"),
    (0x00, 0x00, "get_chassis_capabilities"),
    (0x00, 0x01, "get_chassis_status"),
    (0x00, 0x02, "chassis_control"),
    (0x00, 0x04, "chassis_identify"),
    (0x00, 0x08, "set_system_boot_options"),
    (0x00, 0x09, "get_system_boot_options"),
    (0x0a, 0x20, "get_sdr_repository_info"),
    (0x0a, 0x22, "reserve_sdr_repository"),
    (0x0a, 0x23, "get_sdr"),
    (0x0a, 0x40, "get_sel_info"),
    (0x0a, 0x42, "reserve_sel"),
    (0x0a, 0x43, "get_sel_entry"),
    (0x0c, 0x02, "get_lan_configuration_parameters"),
    // Every command of netFn 2Ch (PICMG, VITA, DCMI: ipmitool probes them at start-up and
    // gets C1) under one name.
    (GROUP, 0x00, "group_extension"),
];

/// NetFn 2Ch, group extension (IPMI v2.0 Table 5-1).
const GROUP: u8 = 0x2c;

/// Distinct (command, completion code) pairs kept per BMC. A BMC driven by ipmitool and
/// Ironic sees about a dozen; pairs beyond this are counted in `command="overflow"`.
const REQUEST_SLOTS: usize = 24;

/// Upper bounds (seconds) of the backend latency histogram buckets: the simulator and a
/// cached Nova answer sit in the first, a Nova API call in the middle, and the last ones
/// bracket the "node busy" budget (700 ms by default) and Nova's own timeouts.
const LATENCY_BUCKETS: [f64; 9] = [0.0005, 0.005, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// Backend error kinds, as labelled (the `MachineError` kinds plus the runtime's own).
const ERROR_KINDS: [&str; 7] = [
    "busy",
    "not_in_present_state",
    "unsupported",
    "failed",
    "timeout",
    "budget_exceeded",
    "aborted",
];

/// A backend error as counted in `ovbmc_backend_errors_total{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The machine answered with an error of this kind.
    Machine(MachineError),
    /// The call outlived the budget: the client was told "node busy" (it goes on).
    BudgetExceeded,
    /// The call's task panicked or was cancelled.
    Aborted,
}

impl ErrorKind {
    fn index(self) -> usize {
        match self {
            Self::Machine(MachineError::Busy) => 0,
            Self::Machine(MachineError::NotInPresentState) => 1,
            Self::Machine(MachineError::Unsupported) => 2,
            Self::Machine(MachineError::Failed) => 3,
            Self::Machine(MachineError::Timeout) => 4,
            Self::BudgetExceeded => 5,
            Self::Aborted => 6,
        }
    }
}

const LOGIN_FAILURES: [LoginFailure; 5] = [
    LoginFailure::NoCipherMatch,
    LoginFailure::UnknownUser,
    LoginFailure::BadRole,
    LoginFailure::BadRakp3,
    LoginFailure::AbandonedAfterRakp2,
];

fn failure_index(r: LoginFailure) -> usize {
    match r {
        LoginFailure::NoCipherMatch => 0,
        LoginFailure::UnknownUser => 1,
        LoginFailure::BadRole => 2,
        LoginFailure::BadRakp3 => 3,
        LoginFailure::AbandonedAfterRakp2 => 4,
    }
}

/// The counters of one BMC. Written by its socket task (and, for backend calls, by the call
/// tasks), read by the scraper; every access is a relaxed atomic.
#[derive(Debug)]
pub struct BmcMetrics {
    addr: SocketAddr,
    instance: String,
    sessions_active: AtomicU32,
    sessions_half_open: AtomicU32,
    datagrams: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    logins: AtomicU64,
    login_failures: [AtomicU64; 5],
    lockouts_source: AtomicU64,
    lockouts_user: AtomicU64,
    refused_locked_out: AtomicU64,
    evictions: AtomicU64,
    /// Allocated at the first request: a BMC nobody talks to (most of a 10,000-BMC fleet at
    /// any moment) costs about 200 bytes instead of 700.
    detail: OnceLock<Box<Detail>>,
}

/// The larger per-BMC tables.
#[derive(Debug, Default)]
struct Detail {
    /// Open addressing over (command index + 1) << 8 | completion code; 0 = free slot.
    request_keys: [AtomicU32; REQUEST_SLOTS],
    request_counts: [AtomicU64; REQUEST_SLOTS],
    requests_overflow: AtomicU64,
    /// Non-cumulative bucket counts; the last one is +Inf.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
    backend_errors: [AtomicU64; ERROR_KINDS.len()],
}

impl BmcMetrics {
    fn new(addr: SocketAddr, instance: String) -> Self {
        Self {
            addr,
            instance,
            sessions_active: AtomicU32::new(0),
            sessions_half_open: AtomicU32::new(0),
            datagrams: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            logins: AtomicU64::new(0),
            login_failures: Default::default(),
            lockouts_source: AtomicU64::new(0),
            lockouts_user: AtomicU64::new(0),
            refused_locked_out: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            detail: OnceLock::new(),
        }
    }

    fn detail(&self) -> &Detail {
        self.detail.get_or_init(Default::default)
    }

    /// Carry the endpoint's counters over: `prev` is what was carried last time (kept by the
    /// caller), so the registry's counters only grow even if the endpoint is replaced.
    #[inline]
    pub fn sync_endpoint(&self, now: &Stats, prev: &mut Stats, sessions: (usize, usize)) {
        fn add(c: &AtomicU64, now: u64, prev: &mut u64) {
            if now != *prev {
                c.fetch_add(now.wrapping_sub(*prev), Relaxed);
                *prev = now;
            }
        }
        add(&self.datagrams, now.datagrams, &mut prev.datagrams);
        add(&self.dropped, now.dropped, &mut prev.dropped);
        add(
            &self.retries,
            now.retries_answered,
            &mut prev.retries_answered,
        );
        // Events the endpoint did not report one by one (rate limit) count all the same.
        for kind in EventKind::ALL {
            if let Some(c) = self.counter(kind) {
                let i = kind.index();
                add(c, now.unreported[i], &mut prev.unreported[i]);
            }
        }
        self.sessions_active.store(sessions.0 as u32, Relaxed);
        self.sessions_half_open.store(sessions.1 as u32, Relaxed);
    }

    /// Count what an endpoint event says (logins, failures, lock-outs, evictions).
    pub fn on_event(&self, ev: &Event) {
        match ev {
            Event::SessionOpened { .. } => self.logins.fetch_add(1, Relaxed),
            Event::LoginFailed { reason, .. } => {
                self.login_failures[failure_index(*reason)].fetch_add(1, Relaxed)
            }
            Event::LockedOut {
                source: Some(_), ..
            } => self.lockouts_source.fetch_add(1, Relaxed),
            Event::LockedOut { .. } => self.lockouts_user.fetch_add(1, Relaxed),
            Event::RefusedLockedOut { .. } => self.refused_locked_out.fetch_add(1, Relaxed),
            Event::HalfOpenEvicted { .. } => self.evictions.fetch_add(1, Relaxed),
            Event::SessionClosed { .. } => 0,
            // Counted in ovbmc_datagrams_dropped_total (from the endpoint's stats).
            Event::AnswerThrottled { .. } => 0,
            // A log summary: its events were counted from `Stats::unreported` as they
            // happened (`sync_endpoint`).
            Event::Suppressed { .. } => 0,
        };
    }

    /// The counter an event of `kind` adds to.
    fn counter(&self, kind: EventKind) -> Option<&AtomicU64> {
        Some(match kind {
            EventKind::LoginFailed(r) => &self.login_failures[failure_index(r)],
            EventKind::RefusedLockedOut => &self.refused_locked_out,
            EventKind::HalfOpenEvicted => &self.evictions,
            EventKind::SourceLockedOut => &self.lockouts_source,
            EventKind::AnswerThrottled => return None,
        })
    }

    /// Count one answered request by command and completion code.
    #[inline]
    pub fn request(&self, netfn: u8, cmd: u8, cc: u8) {
        let idx = COMMANDS
            .iter()
            .position(|&(n, c, _)| n == netfn && (c == cmd || n == GROUP))
            .map_or(0, |i| i + 1);
        let key = ((idx as u32 + 1) << 8) | cc as u32;
        let start = (key as usize).wrapping_mul(0x9e37) % REQUEST_SLOTS;
        let d = self.detail();
        for i in 0..REQUEST_SLOTS {
            let s = (start + i) % REQUEST_SLOTS;
            let k = d.request_keys[s].load(Relaxed);
            if k == key {
                d.request_counts[s].fetch_add(1, Relaxed);
                return;
            }
            if k == 0 {
                // A BMC restarted on reload can briefly have two writers (the old task is
                // still stopping): the exchange keeps one slot per key. A scrape between the
                // exchange and the add reads 0 for the new pair, which is harmless.
                match d.request_keys[s].compare_exchange(0, key, Relaxed, Relaxed) {
                    Ok(_) => {
                        d.request_counts[s].fetch_add(1, Relaxed);
                        return;
                    }
                    Err(k) if k == key => {
                        d.request_counts[s].fetch_add(1, Relaxed);
                        return;
                    }
                    Err(_) => continue,
                }
            }
        }
        d.requests_overflow.fetch_add(1, Relaxed);
    }

    /// Record how long one backend call took.
    pub fn backend_call(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let b = LATENCY_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        let d = self.detail();
        d.latency_buckets[b].fetch_add(1, Relaxed);
        d.latency_sum_us
            .fetch_add(took.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// Count one backend error.
    pub fn backend_error(&self, kind: ErrorKind) {
        self.detail().backend_errors[kind.index()].fetch_add(1, Relaxed);
    }
}

/// All BMCs' metrics, and whether the process is serving.
#[derive(Debug, Default)]
pub struct Metrics {
    bmcs: RwLock<BTreeMap<SocketAddr, Arc<BmcMetrics>>>,
    serving: AtomicBool,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The metrics of the BMC on `addr` for `instance`: the existing ones if the same BMC ran
    /// there before (a restart keeps its counters), fresh ones otherwise.
    pub fn bmc(&self, addr: SocketAddr, instance: &str) -> Arc<BmcMetrics> {
        let mut map = self.bmcs.write().unwrap_or_else(|e| e.into_inner());
        match map.get(&addr) {
            Some(m) if m.instance == instance => m.clone(),
            _ => {
                let m = Arc::new(BmcMetrics::new(addr, instance.to_string()));
                map.insert(addr, m.clone());
                m
            }
        }
    }

    /// Forget the BMC on `addr` (removed from the fleet).
    pub fn remove(&self, addr: SocketAddr) {
        self.bmcs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
    }

    /// Set whether the fleet is being served (`/healthz` answers 200 only then).
    pub fn set_serving(&self, on: bool) {
        self.serving.store(on, Relaxed);
    }

    /// Whether the fleet is being served.
    pub fn serving(&self) -> bool {
        self.serving.load(Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4). Labelled series whose value is zero
    /// are left out, so that 10,000 idle BMCs make a short page.
    pub fn render(&self) -> String {
        let bmcs: Vec<Arc<BmcMetrics>> = self
            .bmcs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut o = String::with_capacity(1024 + bmcs.len() * 700);
        let labels: Vec<String> = bmcs
            .iter()
            .map(|b| {
                format!(
                    "bmc=\"{}\",instance=\"{}\"",
                    escape(&b.addr.to_string()),
                    escape(&b.instance)
                )
            })
            .collect();
        let each = |o: &mut String,
                    name: &str,
                    kind: &str,
                    help: &str,
                    v: &dyn Fn(&BmcMetrics) -> u64,
                    skip_zero: bool| {
            header(o, name, kind, help);
            for (b, l) in bmcs.iter().zip(&labels) {
                let x = v(b);
                if !(skip_zero && x == 0) {
                    let _ = writeln!(o, "{name}{{{l}}} {x}");
                }
            }
        };

        header(
            &mut o,
            "ovbmc_build_info",
            "gauge",
            "Always 1; the labels say which ovbmc this is.",
        );
        let _ = writeln!(
            o,
            "ovbmc_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        header(
            &mut o,
            "ovbmc_bmcs_configured",
            "gauge",
            "BMC addresses this process serves.",
        );
        let _ = writeln!(o, "ovbmc_bmcs_configured {}", bmcs.len());
        header(
            &mut o,
            "ovbmc_serving",
            "gauge",
            "1 while the fleet is served, 0 during start-up and shutdown.",
        );
        let _ = writeln!(o, "ovbmc_serving {}", u8::from(self.serving()));

        each(
            &mut o,
            "ovbmc_sessions_active",
            "gauge",
            "Authenticated RMCP+ sessions.",
            &|b| b.sessions_active.load(Relaxed).into(),
            false,
        );
        each(
            &mut o,
            "ovbmc_sessions_half_open",
            "gauge",
            "Sessions in set-up (Open Session or RAKP 2 sent).",
            &|b| b.sessions_half_open.load(Relaxed).into(),
            false,
        );
        each(
            &mut o,
            "ovbmc_datagrams_received_total",
            "counter",
            "UDP datagrams received.",
            &|b| b.datagrams.load(Relaxed),
            false,
        );
        each(
            &mut o,
            "ovbmc_datagrams_dropped_total",
            "counter",
            "Datagrams dropped unanswered: malformed, unauthenticated, replayed, or not for us.",
            &|b| b.dropped.load(Relaxed),
            false,
        );
        each(
            &mut o,
            "ovbmc_retries_answered_total",
            "counter",
            "Client retries answered from the reply cache (the command did not run again).",
            &|b| b.retries.load(Relaxed),
            false,
        );
        each(
            &mut o,
            "ovbmc_logins_total",
            "counter",
            "Successful RMCP+ logins (RAKP 4 sent).",
            &|b| b.logins.load(Relaxed),
            false,
        );

        header(
            &mut o,
            "ovbmc_login_failures_total",
            "counter",
            "Failed logins by reason.",
        );
        for (b, l) in bmcs.iter().zip(&labels) {
            for (i, r) in LOGIN_FAILURES.iter().enumerate() {
                let x = b.login_failures[i].load(Relaxed);
                if x != 0 {
                    let _ = writeln!(
                        o,
                        "ovbmc_login_failures_total{{{l},reason=\"{}\"}} {x}",
                        r.label()
                    );
                }
            }
        }
        header(
            &mut o,
            "ovbmc_lockouts_total",
            "counter",
            "Lock-outs imposed after repeated failed logins, by what was locked (source or user).",
        );
        for (b, l) in bmcs.iter().zip(&labels) {
            for (what, c) in [("source", &b.lockouts_source), ("user", &b.lockouts_user)] {
                let x = c.load(Relaxed);
                if x != 0 {
                    let _ = writeln!(o, "ovbmc_lockouts_total{{{l},scope=\"{what}\"}} {x}");
                }
            }
        }
        each(
            &mut o,
            "ovbmc_logins_refused_locked_out_total",
            "counter",
            "Login attempts refused because their source or user was locked out.",
            &|b| b.refused_locked_out.load(Relaxed),
            true,
        );
        each(
            &mut o,
            "ovbmc_half_open_evictions_total",
            "counter",
            "Half-open sessions evicted to make room (a login flood).",
            &|b| b.evictions.load(Relaxed),
            true,
        );

        header(
            &mut o,
            "ovbmc_requests_total",
            "counter",
            "IPMI requests answered, by command and completion code (hex); retries excluded.",
        );
        for (b, l) in bmcs.iter().zip(&labels) {
            let Some(b) = b.detail.get() else { continue };
            let mut rows: Vec<(&str, u8, u64)> = Vec::new();
            for s in 0..REQUEST_SLOTS {
                let k = b.request_keys[s].load(Relaxed);
                if k == 0 {
                    continue;
                }
                let idx = (k >> 8) as usize - 1;
                let name = if idx == 0 {
                    "other"
                } else {
                    COMMANDS.get(idx - 1).map_or("other", |c| c.2)
                };
                rows.push((name, k as u8, b.request_counts[s].load(Relaxed)));
            }
            rows.sort_unstable();
            for (name, cc, x) in rows {
                let _ = writeln!(
                    o,
                    "ovbmc_requests_total{{{l},command=\"{name}\",cc=\"{cc:02x}\"}} {x}"
                );
            }
            let x = b.requests_overflow.load(Relaxed);
            if x != 0 {
                let _ = writeln!(
                    o,
                    "ovbmc_requests_total{{{l},command=\"overflow\",cc=\"\"}} {x}"
                );
            }
        }

        header(
            &mut o,
            "ovbmc_backend_call_duration_seconds",
            "histogram",
            "Time the machine (Nova or the simulator) took per call, including calls that \
             outlived the busy budget.",
        );
        for (b, l) in bmcs.iter().zip(&labels) {
            let Some(b) = b.detail.get() else { continue };
            let counts: Vec<u64> = b.latency_buckets.iter().map(|c| c.load(Relaxed)).collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let mut cum = 0;
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                cum += counts[i];
                let _ = writeln!(
                    o,
                    "ovbmc_backend_call_duration_seconds_bucket{{{l},le=\"{le}\"}} {cum}"
                );
            }
            let _ = writeln!(
                o,
                "ovbmc_backend_call_duration_seconds_bucket{{{l},le=\"+Inf\"}} {total}"
            );
            let _ = writeln!(
                o,
                "ovbmc_backend_call_duration_seconds_sum{{{l}}} {}",
                b.latency_sum_us.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                o,
                "ovbmc_backend_call_duration_seconds_count{{{l}}} {total}"
            );
        }
        header(
            &mut o,
            "ovbmc_backend_errors_total",
            "counter",
            "Machine calls that failed, by kind (budget_exceeded: the client was told busy \
             while the call went on).",
        );
        for (b, l) in bmcs.iter().zip(&labels) {
            let Some(b) = b.detail.get() else { continue };
            for (i, kind) in ERROR_KINDS.iter().enumerate() {
                let x = b.backend_errors[i].load(Relaxed);
                if x != 0 {
                    let _ = writeln!(o, "ovbmc_backend_errors_total{{{l},kind=\"{kind}\"}} {x}");
                }
            }
        }
        o
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Bind the metrics listener (at start-up, with the BMC sockets: a bad address is an error
/// before anything serves).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::Error::new(e).context(format!("cannot listen for metrics on TCP {addr}"))
    })
}

/// The largest request head we read; a scraper's is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one connection may take from accept to the last byte written.
const CONN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at accept.
const MAX_CONNS: usize = 32;

/// Serve `GET /metrics` and `GET /healthz` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on accept.
                    warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "metrics: too many connections; closing this one");
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(CONN_TIMEOUT, connection(stream, &m)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "metrics: connection"),
                Err(_) => debug!(%peer, "metrics: connection timed out"),
            }
        });
    }
}

async fn connection(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut n = 0;
    let head_end = loop {
        if let Some(i) = find(&buf[..n], b"\r\n\r\n") {
            break Some(i);
        }
        if n == buf.len() {
            break None;
        }
        let r = stream.read(&mut buf[n..]).await?;
        if r == 0 {
            // The client closed before a complete head: nothing to answer.
            if n == 0 {
                return Ok(());
            }
            break find(&buf[..n], b"\n\n");
        }
        n += r;
    };
    let (status, ctype, body): (&str, &str, String) = match head_end {
        None => (
            "431 Request Header Fields Too Large",
            "text/plain; charset=utf-8",
            "request head too large\n".into(),
        ),
        Some(end) => route(&buf[..end], metrics),
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        resp.push_str("Allow: GET\r\n");
    }
    resp.push_str("\r\n");
    stream.write_all(resp.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

const TEXT: &str = "text/plain; charset=utf-8";

fn route(head: &[u8], metrics: &Metrics) -> (&'static str, &'static str, String) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return ("400 Bad Request", TEXT, "bad request line\n".into());
    };
    if !version.starts_with("HTTP/1.") {
        return ("400 Bad Request", TEXT, "HTTP/1.x only\n".into());
    }
    let path = target.split('?').next().unwrap_or_default();
    let known = matches!(path, "/metrics" | "/healthz");
    if known && method != "GET" {
        return ("405 Method Not Allowed", TEXT, "GET only\n".into());
    }
    match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" if metrics.serving() => ("200 OK", TEXT, "ok\n".into()),
        "/healthz" => ("503 Service Unavailable", TEXT, "not serving\n".into()),
        _ => (
            "404 Not Found",
            TEXT,
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:623".parse().unwrap()
    }

    #[test]
    fn request_table_counts_and_overflows() {
        let m = BmcMetrics::new(addr(), "n".into());
        for _ in 0..3 {
            m.request(0x00, 0x01, 0x00);
        }
        m.request(0x00, 0x02, 0xd4);
        m.request(0x2c, 0x3e, 0xc1);
        m.request(0x2c, 0x00, 0xc1);
        m.request(0x30, 0x01, 0xc1);
        // Fill every slot: the rest overflow instead of growing.
        for cc in 0..40u8 {
            m.request(0x06, 0x01, cc);
        }
        let reg = Metrics::default();
        reg.bmcs.write().unwrap().insert(addr(), Arc::new(m));
        let text = reg.render();
        assert!(text.contains(
            "ovbmc_requests_total{bmc=\"127.0.0.1:623\",instance=\"n\",command=\"get_chassis_status\",cc=\"00\"} 3"
        ), "{text}");
        assert!(text.contains("command=\"chassis_control\",cc=\"d4\"} 1"));
        assert!(text.contains("command=\"group_extension\",cc=\"c1\"} 2"));
        assert!(text.contains("command=\"other\",cc=\"c1\"} 1"));
        assert!(text.contains("command=\"overflow\""));
    }

    #[test]
    fn histogram_is_cumulative_and_labels_are_escaped() {
        let reg = Metrics::default();
        let m = reg.bmc(addr(), "we\"ird\\name\n");
        m.backend_call(Duration::from_micros(100));
        m.backend_call(Duration::from_millis(300));
        m.backend_error(ErrorKind::BudgetExceeded);
        let text = reg.render();
        assert!(text.contains("instance=\"we\\\"ird\\\\name\\n\""), "{text}");
        assert!(text.contains("le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("le=\"0.5\"} 2\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("_count{bmc=\"127.0.0.1:623\","), "{text}");
        assert!(text.contains("kind=\"budget_exceeded\"} 1"), "{text}");
        // The same BMC again keeps its counters; another instance on the address does not.
        assert!(Arc::ptr_eq(&m, &reg.bmc(addr(), "we\"ird\\name\n")));
        assert!(!Arc::ptr_eq(&m, &reg.bmc(addr(), "other")));
    }

    #[test]
    fn routes() {
        let m = Metrics::default();
        assert!(route(b"GET /healthz HTTP/1.1", &m).0.starts_with("503"));
        m.set_serving(true);
        assert_eq!(route(b"GET /healthz HTTP/1.1", &m).2, "ok\n");
        assert!(route(b"GET /metrics?x=1 HTTP/1.0", &m).0.starts_with("200"));
        assert!(route(b"POST /metrics HTTP/1.1", &m).0.starts_with("405"));
        assert!(route(b"GET /nope HTTP/1.1", &m).0.starts_with("404"));
        assert!(route(b"DELETE /nope HTTP/1.1", &m).0.starts_with("404"));
        assert!(route(b"GET /metrics", &m).0.starts_with("400"));
        assert!(route(b"\xff\xfe", &m).0.starts_with("400"));
    }
}
