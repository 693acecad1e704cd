//! Prometheus metrics (`--metrics ADDR`): per-BMC counters kept in relaxed atomics
//! (this file), their text exposition (`render.rs`, rendered at most once a second and shared
//! by concurrent scrapers), the health state behind `/healthz` ([`Health`]), and the two paths
//! on the shared HTTP stack (`http.rs`, over [`crate::http`]).
//!
//! The hot path (one UDP datagram) only touches its own BMC's [`BmcMetrics`]: a few relaxed
//! atomic adds and stores, no lock and no allocation. The registry lock is taken when a BMC
//! starts or stops and when `/metrics` is rendered. The metric names and their meaning are
//! documented in `docs/configuration.md` ("Metrics"); keep the two in step.

pub mod http;
mod render;

pub use http::{bind, serve};
pub use render::{Page, Pages};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use ipmi_proto::commands;
use ipmi_proto::endpoint::{DropReason, Event, EventKind, LoginFailure, Stats};
use ipmi_proto::machine::MachineError;

/// The `command` label of a request, as an index: 0 is `other`, 1..=N the protocol crate's
/// command table (`ipmi_proto::commands::COMMANDS`, which names every command the BMC
/// implements), N+1 every netFn 2Ch command (PICMG, VITA, DCMI: ipmitool probes them at
/// start-up and gets C1) under one name. Anything else (unknown commands, which get C1) is
/// `other`, so that a client cannot create series at will.
fn command_label_index(netfn: u8, cmd: u8) -> usize {
    match commands::command_index(netfn, cmd) {
        Some(i) => i + 1,
        None if netfn == GROUP => commands::COMMANDS.len() + 1,
        None => 0,
    }
}

/// The `command` label for [`command_label_index`]'s `idx`.
pub(crate) fn command_label(idx: usize) -> &'static str {
    match idx.checked_sub(1) {
        Some(i) if i == commands::COMMANDS.len() => "group_extension",
        Some(i) => commands::COMMANDS.get(i).map_or("other", |c| c.name),
        None => "other",
    }
}

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
    /// `dropped` by reason, indexed by `DropReason::index`.
    dropped_by: [AtomicU64; DropReason::ALL.len()],
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
    /// Serial over LAN: instances active now (0 or 1), activations, characters each way,
    /// retransmits (from the endpoint's `Stats`), and console connections made again.
    sol_active: AtomicU32,
    sol_activations: AtomicU64,
    sol_bytes_to_console: AtomicU64,
    sol_bytes_from_console: AtomicU64,
    sol_retransmits: AtomicU64,
    console_reconnects: AtomicU64,
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
            dropped_by: Default::default(),
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
        for (i, c) in self.dropped_by.iter().enumerate() {
            add(c, now.dropped_by[i], &mut prev.dropped_by[i]);
        }
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
        if now.sol_activations != 0 {
            // SOL only follows a request, so the detail tables exist by then.
            let d = self.detail();
            add(
                &d.sol_activations,
                now.sol_activations,
                &mut prev.sol_activations,
            );
            add(
                &d.sol_bytes_to_console,
                now.sol_bytes_to_console,
                &mut prev.sol_bytes_to_console,
            );
            add(
                &d.sol_bytes_from_console,
                now.sol_bytes_from_console,
                &mut prev.sol_bytes_from_console,
            );
            add(
                &d.sol_retransmits,
                now.sol_retransmits,
                &mut prev.sol_retransmits,
            );
        }
    }

    /// SOL's state outside the endpoint's counters: whether an instance is active, and the
    /// console's connection count (`reconnects`, the backend's running total; `prev` is what
    /// was carried last time).
    pub fn sync_sol(&self, active: bool, reconnects: u64, prev: &mut u64) {
        if !active && reconnects == *prev && self.detail.get().is_none() {
            return;
        }
        let d = self.detail();
        d.sol_active.store(u32::from(active), Relaxed);
        if reconnects != *prev {
            d.console_reconnects
                .fetch_add(reconnects.wrapping_sub(*prev), Relaxed);
            *prev = reconnects;
        }
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
        let idx = command_label_index(netfn, cmd);
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

/// All BMCs' metrics, and the health state `/healthz` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    bmcs: RwLock<BTreeMap<SocketAddr, Arc<BmcMetrics>>>,
    health: Health,
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

    /// Forget the BMC on `addr` (removed from the fleet): its series leave `/metrics`, and if
    /// it was marked down it no longer counts against `/healthz`.
    pub fn remove(&self, addr: SocketAddr) {
        self.bmcs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
        self.health.set_up(addr);
    }

    /// BMC addresses in the registry (`ovbmc_bmcs_configured`).
    pub fn bmcs_configured(&self) -> usize {
        self.bmcs.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// What `/healthz` reports: whether the fleet is served and which BMCs are down.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Set whether the fleet is being served (`/healthz` answers 200 only then); the same as
    /// `health().set_serving(on)`.
    pub fn set_serving(&self, on: bool) {
        self.health.set_serving(on);
    }

    /// Whether the fleet is being served.
    pub fn serving(&self) -> bool {
        self.health.serving()
    }
}

/// The state behind `/healthz`: `200 ok` while the fleet is served and no BMC is down, `503`
/// otherwise, with a body saying why.
///
/// For the daemon's supervision: a BMC whose task died (panicked, or its socket failed) is
/// marked with [`Health::set_down`] until it serves again ([`Health::set_up`]); removing a BMC
/// from the registry ([`Metrics::remove`]) also clears its mark. Marks are keyed by the BMC's
/// address, the same key as its series, and cost nothing on the datagram path.
#[derive(Debug, Default)]
pub struct Health {
    serving: AtomicBool,
    down: Mutex<BTreeSet<SocketAddr>>,
}

impl Health {
    /// Set whether the fleet is being served.
    pub fn set_serving(&self, on: bool) {
        self.serving.store(on, Relaxed);
    }

    /// Whether the fleet is being served.
    pub fn serving(&self) -> bool {
        self.serving.load(Relaxed)
    }

    fn down_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<SocketAddr>> {
        self.down.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mark the BMC on `bmc` down: `/healthz` answers 503 until it is marked up. True if it
    /// was not marked already.
    pub fn set_down(&self, bmc: SocketAddr) -> bool {
        self.down_set().insert(bmc)
    }

    /// Mark the BMC on `bmc` up again. True if it was marked down.
    pub fn set_up(&self, bmc: SocketAddr) -> bool {
        self.down_set().remove(&bmc)
    }

    /// The BMCs marked down, in address order.
    pub fn down(&self) -> Vec<SocketAddr> {
        self.down_set().iter().copied().collect()
    }
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
}
