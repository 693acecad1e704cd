//! The UDP runtime: one socket and one task per BMC address, feeding an
//! [`ipmi_proto::Endpoint`], with machine calls completed inline when the machine answers at
//! once and as separate tasks otherwise.
//!
//! Replies always leave from the socket that received the request, so the kernel uses the
//! BMC address as the source address, which per-address policy routing and ipmitool (it
//! `connect()`s its UDP socket) both depend on.
//!
//! Per-BMC cost when idle is nothing: the task sleeps in `recv_from`, and a timer is armed
//! only while the endpoint has sessions (from [`Endpoint::poll_timeout`]), so 10,000 idle
//! BMCs make no wake-ups.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes};
use ipmi_proto::endpoint::{Event, LoginFailure, SolEvent, Stats};
use ipmi_proto::machine::{MachineError, MachineReply, MachineRequest, MachineResult};
use ipmi_proto::sol::SolInput;
use ipmi_proto::wire::Escaped;
use ipmi_proto::{BmcConfig, Endpoint, Entropy, Output, Ticket};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use zeroize::Zeroize as _;

use crate::backend::{BackendError, BoxFuture, SharedMachine};
use crate::cli::ConsoleMode;
use crate::console::{ConsoleLink, Input, Opener};
use crate::metrics::{BmcMetrics, ErrorKind, Metrics};
use crate::tasks::Tasks;

/// The OS random source (getrandom), as the protocol crate's entropy.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        // The kernel CSPRNG does not fail once the system is up; if it ever does, no safe
        // session IDs or IVs can be made, so stopping is the only honest choice.
        getrandom::fill(buf).expect("the OS random source failed");
    }
}

/// Bytes fetched from the OS per refill of a [`PooledEntropy`].
const POOL: usize = 256;

/// The OS random source read in 256-byte chunks: every encrypted reply needs a 16-byte IV,
/// and one `getrandom` call per IV is a system call per packet. The bytes are the kernel
/// CSPRNG's, only fetched ahead; each is handed out once and wiped as it is handed out, and
/// the rest is wiped on drop, so no future IV or session ID lingers in freed memory.
/// Requests larger than half the pool go to the OS directly.
pub struct PooledEntropy {
    /// Allocated at the first use: an idle BMC (most of a 10,000-BMC fleet) pays 16 bytes.
    buf: Option<Box<[u8; POOL]>>,
    /// Next unread byte; `POOL` when empty (it starts empty: no syscall for an idle BMC).
    pos: usize,
}

impl Default for PooledEntropy {
    fn default() -> Self {
        Self {
            buf: None,
            pos: POOL,
        }
    }
}

impl std::fmt::Debug for PooledEntropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PooledEntropy")
    }
}

impl Entropy for PooledEntropy {
    fn fill(&mut self, out: &mut [u8]) {
        if out.len() > POOL / 2 {
            OsEntropy.fill(out);
            return;
        }
        let buf = self.buf.get_or_insert_with(|| Box::new([0; POOL]));
        let mut done = 0;
        while done < out.len() {
            if self.pos == POOL {
                OsEntropy.fill(&mut buf[..]);
                self.pos = 0;
            }
            let n = (out.len() - done).min(POOL - self.pos);
            let src = &mut buf[self.pos..self.pos + n];
            out[done..done + n].copy_from_slice(src);
            src.zeroize();
            self.pos += n;
            done += n;
        }
    }
}

impl Drop for PooledEntropy {
    fn drop(&mut self) {
        if let Some(b) = &mut self.buf {
            b.zeroize();
        }
    }
}

/// One BMC to serve.
pub struct BmcSpec {
    /// Where it is configured ("FILE: bmc #N (ADDR): ", empty on the command line), which
    /// errors about it start with.
    pub place: String,
    /// Address and port to bind.
    pub addr: SocketAddr,
    /// Protocol configuration (users, GUID, limits).
    pub config: BmcConfig,
    /// The machine it controls.
    pub machine: SharedMachine,
    /// What SOL carries (`--console` / `console`, resolved).
    pub console: ConsoleMode,
}

/// Runtime options.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// How long a request waits for the machine before the client is told "node busy"
    /// (C0); the machine call itself goes on and its outcome is logged. ipmitool waits 1 s
    /// per try, and the answer has to arrive before that.
    pub backend_budget: Duration,
    /// Where the BMCs count (served by `--metrics`; kept even without it: the counters
    /// cost a few relaxed atomics per packet).
    pub metrics: Arc<Metrics>,
    /// Where machine calls that outlive the budget are tracked, with the Nova plans'
    /// background steps (the same set is handed to the Nova machines).
    pub tasks: Tasks,
    /// How long [`Server::drain`] waits for them at shutdown (`--shutdown-timeout`).
    pub shutdown_timeout: Duration,
}

/// The default of `--shutdown-timeout` (and `[defaults] shutdown_timeout_secs`).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            backend_budget: Duration::from_millis(700),
            metrics: Metrics::new(),
            tasks: Tasks::new(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// A BMC whose socket is bound.
pub struct BoundBmc {
    socket: UdpSocket,
    spec: BmcSpec,
}

impl BoundBmc {
    /// The bound address (useful when binding port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// A BMC on a socket that is already bound (the one [`Server::stop`] handed back), so
    /// that a reload can change a BMC's settings without giving up its address even briefly.
    pub fn from_socket(socket: UdpSocket, spec: BmcSpec) -> Self {
        Self { socket, spec }
    }
}

/// Bind a UDP socket for `addr`.
pub fn bind_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // A bigger receive buffer rides out bursts (many clients, or a flood) without drops;
    // the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(1 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Bind every BMC's socket. Either all bind or none is kept: nothing starts half-way.
pub fn bind_all(specs: Vec<BmcSpec>) -> anyhow::Result<Vec<BoundBmc>> {
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let socket = bind_socket(spec.addr).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                " (the address is not on this host: add it, or use --routing auto with \
                 --add-address)"
            } else if e.kind() == std::io::ErrorKind::PermissionDenied {
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
            } else {
                ""
            };
            anyhow::Error::new(e).context(format!(
                "{}cannot bind UDP {} for instance {}{hint}",
                spec.place,
                spec.addr,
                spec.machine.name()
            ))
        })?;
        out.push(BoundBmc { socket, spec });
    }
    Ok(out)
}

/// A running BMC: its own cancellation token (a child of the server's) and its task, which
/// hands its socket back when it stops.
struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Option<UdpSocket>>,
}

/// A set of BMC tasks that can grow and shrink while it runs (fleet reloads): each BMC has a
/// child [`CancellationToken`], so one can be stopped without touching the others, and
/// cancelling the parent stops them all.
pub struct Server {
    opts: ServerOptions,
    shutdown: CancellationToken,
    /// BMC tasks and machine calls, waited for (bounded) at the end.
    tracker: TaskTracker,
    running: HashMap<SocketAddr, Running>,
}

impl Server {
    /// An empty server; `shutdown` stops every BMC it will run.
    pub fn new(opts: ServerOptions, shutdown: CancellationToken) -> Self {
        Self {
            opts,
            shutdown,
            tracker: TaskTracker::new(),
            running: HashMap::new(),
        }
    }

    /// Start serving `b`, keyed by its bound address. A BMC already running on that address
    /// is an error in the caller (addresses are unique); the old one is stopped first.
    pub fn start(&mut self, b: BoundBmc) {
        let key = b.socket.local_addr().unwrap_or(b.spec.addr);
        let name = b.spec.machine.name();
        info!(addr = %key, instance = %name, "listening");
        let cancel = self.shutdown.child_token();
        let metrics = self.opts.metrics.bmc(key, &name);
        let task = self.tracker.spawn(supervise(
            b,
            key,
            self.opts.clone(),
            metrics,
            cancel.clone(),
        ));
        if let Some(old) = self.running.insert(key, Running { cancel, task }) {
            warn!(addr = %key, "a BMC was already running on this address; stopping it");
            old.cancel.cancel();
        }
    }

    /// Stop the BMC on `addr` and return its socket (still bound), or `None` if none ran
    /// there. Its in-flight machine calls finish in the background.
    pub async fn stop(&mut self, addr: SocketAddr) -> Option<UdpSocket> {
        let r = self.running.remove(&addr)?;
        r.cancel.cancel();
        r.task.await.ok().flatten()
    }

    /// Stop the BMC on `addr` for good (removed from the fleet): as [`Server::stop`], and its
    /// series leave `/metrics`. (A BMC that is only restarted keeps its counters.)
    pub async fn remove(&mut self, addr: SocketAddr) -> Option<UdpSocket> {
        let s = self.stop(addr).await;
        self.opts.metrics.remove(addr);
        s
    }

    /// The addresses being served.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.running.keys().copied().collect()
    }

    /// Stop every BMC, then wait (at most `shutdown_timeout`) for the background work still
    /// running: machine calls answered "busy" and Nova plans. Each one not finished is logged
    /// with what it had left to do. Returns how many did not finish.
    pub async fn drain(self) -> usize {
        self.shutdown.cancel();
        self.tracker.close();
        // BMC tasks stop at the next turn of their loop.
        self.tracker.wait().await;
        self.opts.tasks.drain(self.opts.shutdown_timeout).await
    }
}

/// What a BMC task does with the machine: at most one call is polled inline per packet.
struct Calls {
    machine: SharedMachine,
    name: String,
    budget: Duration,
    metrics: Arc<BmcMetrics>,
    read_errors: Arc<ReadErrors>,
    /// Where calls that did not finish inline send their result, made at the first such
    /// call: a tokio channel costs about 1 KiB (measured with massif, 2,000 BMCs), and most
    /// BMCs of a large fleet never make a call that waits.
    results: Option<Results>,
    /// Its bound (see `serve_bmc`).
    results_cap: usize,
    tasks: Tasks,
}

type Results = (
    mpsc::Sender<(Ticket, MachineResult)>,
    mpsc::Receiver<(Ticket, MachineResult)>,
);

/// The next result of a call that went to a task; never, while there has been none.
async fn next_result(results: &mut Option<Results>) -> Option<(Ticket, MachineResult)> {
    match results {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Calls {
    /// Start `request`. The machine future is polled once here, with a no-op waker: the
    /// simulator and a fresh cached Nova status are ready at once, and then the result is
    /// returned without a task, a channel hop or a second wake-up (about 5 µs of CPU less
    /// per request, docs/performance.md).
    /// Otherwise the same future moves to a task with the busy budget, whose result comes
    /// back through the channel. Either way it ends in [`finish`], which logs the outcome.
    fn start(&mut self, ticket: Ticket, request: MachineRequest) -> Option<MachineResult> {
        let m = self.machine.clone();
        let started = Instant::now();
        // Within the budget, a read may wait for a Nova list in flight (`Session::view`).
        let patience = crate::backend::patience_within(self.budget);
        let mut fut: BoxFuture<'static, Result<MachineReply, BackendError>> =
            Box::pin(crate::backend::with_patience(patience, async move {
                run_request(&m, request).await
            }));
        // A future must cope with being polled by a different waker later (std::task docs:
        // "the most recent call to poll" wins), so the task below picks it up correctly.
        if let Poll::Ready(r) = fut
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
        {
            self.metrics.backend_call(started.elapsed());
            return Some(finish(
                &self.name,
                request,
                r,
                &self.metrics,
                &self.read_errors,
            ));
        }
        let cap = self.results_cap;
        let tx = self
            .results
            .get_or_insert_with(|| mpsc::channel(cap))
            .0
            .clone();
        let budget = self.budget;
        let name = self.name.clone();
        let metrics = self.metrics.clone();
        let read_errors = self.read_errors.clone();
        let tasks = self.tasks.clone();
        self.tasks
            .spawn(format!("{name}: {request:?}"), |_| async move {
                let result = call_with_budget(
                    fut,
                    started,
                    request,
                    budget,
                    &name,
                    metrics,
                    read_errors,
                    &tasks,
                )
                .await;
                // Bounded by `Limits::max_pending` (see `serve_bmc`); if the BMC stopped, the
                // result is dropped (its outcome was logged).
                let _ = tx.send((ticket, result)).await;
            });
        None
    }
}

/// The per-BMC timer, armed only while the endpoint has sessions (or another deadline).
///
/// It never sleeps longer than the shortest session timeout (`cap`): a session created after
/// the last look at the endpoint expires at least `cap` after that look, so waking at `cap`
/// and looking again ([`Endpoint::poll_timeout`], a scan of the sessions) never misses an
/// expiry, and no packet has to pay for a scan. A BMC with no sessions has no timer at all.
struct Timer {
    /// Created at the first use: most BMCs of a large fleet are idle and never need one.
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl Timer {
    fn new() -> Self {
        Self {
            sleep: None,
            armed: false,
        }
    }

    fn cap(ep: &Endpoint) -> Duration {
        let l = &ep.config().limits;
        l.setup_timeout.min(l.idle_timeout)
    }

    fn arm(&mut self, at: Instant) {
        let at = tokio::time::Instant::from_std(at);
        match &mut self.sleep {
            Some(s) => {
                if s.deadline() != at {
                    s.as_mut().reset(at);
                }
            }
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.armed = true;
    }

    /// The timer fired: expire what is due and look for the next deadline.
    fn fired(&mut self, ep: &mut Endpoint, now: Instant) {
        ep.handle_timeout(now);
        match ep.poll_timeout() {
            // Floor: should the endpoint ever report a deadline already past, the task
            // must not spin.
            Some(at) => self.arm(at.clamp(now + Duration::from_millis(10), now + Self::cap(ep))),
            None => self.armed = false,
        }
    }

    /// Wake no later than `at` (a SOL retransmit or accumulate deadline, which are shorter
    /// than the session timers the timer otherwise sleeps for).
    fn arm_by(&mut self, at: Instant) {
        let sooner = match &self.sleep {
            Some(s) if self.armed => tokio::time::Instant::from_std(at) < s.deadline(),
            _ => true,
        };
        if sooner {
            self.arm(at);
        }
    }

    /// After a packet: arm if the endpoint now has sessions and the timer sleeps.
    fn after_packet(&mut self, ep: &Endpoint, now: Instant) {
        if !self.armed && (ep.session_counts() != (0, 0) || ep.summary_pending()) {
            self.arm(now + Self::cap(ep));
        }
    }

    /// Resolves when the armed deadline passes; never while disarmed.
    async fn wait(&mut self) {
        match (&mut self.sleep, self.armed) {
            (Some(s), true) => s.as_mut().await,
            _ => std::future::pending().await,
        }
    }
}

/// Larger than any IPMI datagram we answer (the longest requests are a few hundred bytes);
/// anything longer is cut and then dropped as malformed.
const RECV_BUF_LEN: usize = 2048;

thread_local! {
    static RECV_BUF: std::cell::RefCell<Box<[u8; RECV_BUF_LEN]>> =
        std::cell::RefCell::new(Box::new([0; RECV_BUF_LEN]));
}

/// First wait before restarting a BMC whose task panicked; doubled for each panic in a row,
/// up to [`RESTART_MAX`]. A BMC that then served for [`RESTART_RESET`] starts over at 1 s.
const RESTART_FIRST: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);
const RESTART_RESET: Duration = Duration::from_secs(60);

/// Run one BMC's task, and restart it if it panics: the panic is logged, the BMC is marked
/// down (`/healthz` answers 503 naming it) until it serves again after a back-off. The
/// socket stays bound throughout (the supervisor holds it), so no other process can take the
/// address meanwhile and a restart needs no bind. Sessions of the panicked task are lost
/// (clients log in again). Returns the socket when the BMC is stopped.
async fn supervise(
    b: BoundBmc,
    addr: SocketAddr,
    opts: ServerOptions,
    metrics: Arc<BmcMetrics>,
    shutdown: CancellationToken,
) -> Option<UdpSocket> {
    let BoundBmc { socket, spec } = b;
    let socket = Arc::new(socket);
    let name = spec.machine.name();
    let health = opts.metrics.clone();
    let mut wait = RESTART_FIRST;
    loop {
        let started = Instant::now();
        // The BMC runs inside this task, its panics caught here (one task per BMC, not a
        // supervisor and a worker: a second task cost about 1.3 KiB per BMC, measured with
        // massif over 2,000 BMCs). A future that panicked is dropped, never polled again.
        let outcome = {
            let mut run = std::pin::pin!(serve_bmc(
                socket.clone(),
                spec.config.clone(),
                spec.machine.clone(),
                spec.console,
                opts.clone(),
                metrics.clone(),
                shutdown.clone(),
            ));
            std::future::poll_fn(|cx| {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run.as_mut().poll(cx)
                })) {
                    Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
                    Ok(Poll::Pending) => Poll::Pending,
                    Err(panic) => Poll::Ready(Err(panic)),
                }
            })
            .await
            // The BMC's future (a panicked one included) is dropped here, before any wait.
        };
        match outcome {
            Ok(()) => break,
            Err(panic) => {
                let why = panic
                    .downcast::<String>()
                    .map(|s| *s)
                    .or_else(|p| p.downcast::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|_| "a panic".into());
                if started.elapsed() >= RESTART_RESET {
                    wait = RESTART_FIRST;
                }
                health.health().set_down(addr);
                tracing::error!(instance = %name, addr = %addr, panic = %Escaped(&why),
                    restart_in_secs = wait.as_secs(), "BMC task panicked; marked down, restarting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(RESTART_MAX);
                health.health().set_up(addr);
                info!(instance = %name, addr = %addr, "BMC restarted after a panic");
            }
        }
    }
    health.health().set_up(addr);
    Arc::try_unwrap(socket).ok()
}

/// A test hook, honoured only in debug builds and only when the process was started with
/// `OVBMC_TEST_PANIC=1` in its environment: a datagram consisting of exactly
/// [`TEST_PANIC_DATAGRAM`] makes the BMC task that receives it panic, so that the tests can
/// show a panic is supervised (tests/it/metrics.rs). A release build has no such code path,
/// and without the variable no datagram can cause it; the bytes are not an RMCP packet.
const TEST_PANIC_DATAGRAM: &[u8] = b"ovbmc-test-panic";

fn test_panic_hook(datagram: &[u8]) {
    if cfg!(debug_assertions) && datagram == TEST_PANIC_DATAGRAM {
        static ARMED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *ARMED.get_or_init(|| std::env::var("OVBMC_TEST_PANIC").as_deref() == Ok("1")) {
            panic!("test panic requested (OVBMC_TEST_PANIC=1, debug build)");
        }
    }
}

fn serve_bmc(
    socket: Arc<UdpSocket>,
    config: BmcConfig,
    machine: SharedMachine,
    console: ConsoleMode,
    opts: ServerOptions,
    metrics: Arc<BmcMetrics>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    // Set-up runs here, outside the future: what it consumes (the arguments, the spec, the
    // configuration moved into the endpoint) would otherwise keep a slot in the BMC task's
    // state for good (rustc keeps storage of moved-from locals, rust-lang/rust#62958); that
    // was about 0.5 KiB of each BMC's 3.3 KiB task.
    let spec = BmcSpec {
        place: String::new(),
        addr: socket.local_addr().unwrap_or(([0, 0, 0, 0], 0).into()),
        config,
        machine,
        console,
    };
    let name = spec.machine.name();
    // The bound address (a plain address in log fields, never `Some(...)`).
    let local = socket.local_addr().unwrap_or(spec.addr);
    // The channel of machine results is bounded by what the endpoint lets be in flight per
    // BMC (`Limits::max_pending`, beyond which it answers C0 at once), so a call task never
    // waits on it and a flood cannot grow it.
    let results = spec.config.limits.max_pending.max(1);
    let lockout_secs = spec.config.limits.lockout_duration.as_secs();
    let mut ep = Endpoint::new(spec.config);
    ep.set_log_key(log_key());
    // SOL: the console is opened when a console activates it, and dropped when it ends.
    let opener = match spec.console {
        ConsoleMode::Off => Opener::off(),
        mode => Opener::new(spec.machine.console(), mode, format!("{name} ({local})")),
    };
    ep.set_sol_port(local.port());
    ep.set_sol_available(opener.available());
    let mut sol = SolLink::default();
    let mut reconnects_carried = 0;
    let mut rng = PooledEntropy::default();
    let mut calls = Calls {
        machine: spec.machine,
        name: name.clone(),
        budget: opts.backend_budget,
        metrics: metrics.clone(),
        read_errors: Arc::default(),
        results: None,
        results_cap: results,
        tasks: opts.tasks.clone(),
    };
    let mut timer = Timer::new();
    let mut carried = Stats::default();
    async move {
        loop {
            let now;
            let mut out = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = socket.readable() => {
                    now = Instant::now();
                    match r {
                        // The datagram is read into the worker thread's buffer, not one per BMC
                        // (2 KiB × 10,000 BMCs): nothing awaits while it is borrowed.
                        Ok(()) => RECV_BUF.with_borrow_mut(|buf| match socket.try_recv_from(&mut buf[..]) {
                            Ok((n, peer)) => {
                                test_panic_hook(&buf[..n]);
                                // A drop's reason is counted in the endpoint's Stats::dropped_by,
                                // which metrics.sync_endpoint turns into
                                // ovbmc_datagrams_dropped_total{reason}.
                                ep.handle(now, peer, &buf[..n], &mut rng).ok()
                            }
                            // Readiness was stale; tokio clears it, and we wait again.
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                            Err(e) => {
                                // ICMP port-unreachable from an earlier reply surfaces here on
                                // Linux; it concerns that one client only.
                                debug!(error = %e, "recv");
                                None
                            }
                        }),
                        Err(e) => {
                            debug!(error = %e, "readable");
                            None
                        }
                    }
                },
                Some((ticket, result)) = next_result(&mut calls.results) => {
                    now = Instant::now();
                    ep.complete(now, ticket, result, &mut rng)
                }
                _ = timer.wait() => {
                    now = Instant::now();
                    timer.fired(&mut ep, now);
                    None
                }
                // SOL: the console's link, once the backend has it.
                link = pending_link(&mut sol.pending), if sol.pending.is_some() => {
                    now = Instant::now();
                    sol.pending = None;
                    match link {
                        Some(link) if ep.sol_active() => sol.attach(link),
                        Some(_) => {}
                        None => {
                            warn!(instance = %name, addr = %local, "SOL: the console could not be opened");
                            ep.sol_deactivate(now, &mut rng);
                        }
                    }
                    None
                }
                // Guest output, read only while the endpoint has room for it (backpressure: the
                // backend's channel fills, and it stops reading the guest).
                chunk = recv_opt(&mut sol.from_guest),
                    if sol.left.is_empty() && ep.sol_room() > 0 => {
                    now = Instant::now();
                    match chunk {
                        Some(b) => sol.left = b,
                        None => {
                            info!(instance = %name, addr = %local, "SOL: the console closed");
                            sol.detach();
                            ep.sol_deactivate(now, &mut rng);
                        }
                    }
                    None
                }
                // Operator input, taken from the endpoint only when the console has room.
                permit = reserve_opt(sol.to_guest.clone()), if ep.sol_input_pending() => {
                    now = Instant::now();
                    match permit {
                        Some(p) => {
                            if let Some(i) = ep.poll_sol_input() {
                                // The permit's sender is a clone: nothing to keep.
                                let _ = p.send(match i {
                                    SolInput::Data(d) => Input::Data(Bytes::from(d)),
                                    SolInput::Break => Input::Break,
                                });
                            }
                        }
                        None => {
                            sol.detach();
                            ep.sol_deactivate(now, &mut rng);
                        }
                    }
                    None
                }
            };
            // A machine call that completes inline loops back into the endpoint once.
            while let Some(o) = out.take() {
                if let Some(a) = ep.take_answered() {
                    metrics.request(a.netfn.0, a.cmd, a.cc.0);
                }
                match o {
                    Output::Transmit { to, data } => {
                        if let Err(e) = socket.send_to(&data, to).await {
                            debug!(%to, error = %e, "send");
                        }
                    }
                    Output::Machine { ticket, request } => {
                        if let Some(result) = calls.start(ticket, request) {
                            out = ep.complete(now, ticket, result, &mut rng);
                        }
                    }
                    // A SOL packet: what it calls for goes out through poll_transmit below.
                    Output::Consumed => {}
                }
            }
            if let Some(a) = ep.take_answered() {
                metrics.request(a.netfn.0, a.cmd, a.cc.0);
            }
            while let Some(ev) = ep.poll_event() {
                metrics.on_event(&ev);
                log_event(&name, local, lockout_secs, ev);
            }
            while let Some(ev) = ep.poll_sol_event() {
                match ev {
                    SolEvent::Activated { sid, peer } => {
                        info!(instance = %name, addr = %local, %peer, sid = format_args!("{sid:#010x}"), "SOL activated");
                        sol.detach();
                        sol.pending = opener.open();
                        if sol.pending.is_none() {
                            ep.sol_deactivate(now, &mut rng);
                        }
                    }
                    SolEvent::Deactivated { sid, reason } => {
                        info!(instance = %name, addr = %local, sid = format_args!("{sid:#010x}"), reason = reason.label(), "SOL ended");
                        sol.detach();
                    }
                }
            }
            if ep.sol_active() {
                if !sol.left.is_empty() {
                    let n = ep.sol_push(&sol.left, now);
                    sol.left.advance(n);
                }
                // Acknowledgements, guest output, retransmits: everything due now.
                while let Some((to, data)) = ep.poll_transmit(now, &mut rng) {
                    if let Err(e) = socket.send_to(&data, to).await {
                        debug!(%to, error = %e, "send");
                    }
                }
                if let Some(at) = ep.sol_timeout() {
                    timer.arm_by(at);
                }
            } else {
                // The last packet of an instance the BMC ended.
                while let Some((to, data)) = ep.poll_transmit(now, &mut rng) {
                    let _ = socket.send_to(&data, to).await;
                }
            }
            metrics.sync_endpoint(ep.stats(), &mut carried, ep.session_counts());
            metrics.sync_sol(
                ep.sol_active(),
                opener
                    .stats()
                    .reconnects
                    .load(std::sync::atomic::Ordering::Relaxed),
                &mut reconnects_carried,
            );
            timer.after_packet(&ep, now);
        }
        info!(instance = %name, addr = %local, "stopped");
    }
}

/// The console of the active SOL instance, as the BMC task holds it.
#[derive(Default)]
struct SolLink {
    /// The link the backend is opening.
    pending: Option<oneshot::Receiver<ConsoleLink>>,
    from_guest: Option<mpsc::Receiver<Bytes>>,
    to_guest: Option<mpsc::Sender<Input>>,
    /// Guest output read but not yet taken by the endpoint.
    left: Bytes,
}

impl SolLink {
    fn attach(&mut self, link: ConsoleLink) {
        self.from_guest = Some(link.from_guest);
        self.to_guest = Some(link.to_guest);
        self.left = Bytes::new();
    }

    /// Drop the console (the backend's task ends when its channels close).
    fn detach(&mut self) {
        *self = Self::default();
    }
}

async fn pending_link(rx: &mut Option<oneshot::Receiver<ConsoleLink>>) -> Option<ConsoleLink> {
    match rx {
        Some(rx) => rx.await.ok(),
        None => std::future::pending().await,
    }
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Room for one input in the console's channel (its capacity bounds what is in flight to
/// the guest); `None` if the console is gone. Pending while there is no console.
async fn reserve_opt(tx: Option<mpsc::Sender<Input>>) -> Option<mpsc::OwnedPermit<Input>> {
    match tx {
        Some(tx) => tx.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

/// Finish a machine call that was not ready at once: answer busy if it takes longer than
/// `budget`, but let it finish in the background and log how it ended, so an action
/// answered "busy" is never silently lost.
// The call's context is passed piecewise because the task owns it after `Calls::start` returns.
#[allow(clippy::too_many_arguments)]
async fn call_with_budget(
    fut: BoxFuture<'static, Result<MachineReply, BackendError>>,
    started: Instant,
    request: MachineRequest,
    budget: Duration,
    name: &str,
    metrics: Arc<BmcMetrics>,
    read_errors: Arc<ReadErrors>,
    tasks: &Tasks,
) -> MachineResult {
    // JoinHandle is Unpin: it can be polled by reference and then moved into the follow-up.
    let mut call = tokio::spawn(fut);
    // The budget counts from the request, which includes the inline poll.
    let left = budget.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, &mut call).await {
        Ok(Ok(r)) => {
            metrics.backend_call(started.elapsed());
            finish(name, request, r, &metrics, &read_errors)
        }
        Ok(Err(join)) => {
            metrics.backend_error(ErrorKind::Aborted);
            warn!(instance = %name, ?request, error = %join, "machine call failed");
            Err(MachineError::Failed)
        }
        Err(_) => {
            metrics.backend_error(ErrorKind::BudgetExceeded);
            let name = name.to_string();
            // Tracked: shutdown waits for it, or logs it as not finished.
            let what = format!("{name}: {request:?} (answered busy, still running)");
            tasks.spawn(what, |_| async move {
                match call.await {
                    Ok(Ok(_)) => {
                        metrics.backend_call(started.elapsed());
                        info!(instance = %name, ?request, "slow machine call completed after the client was told busy")
                    }
                    Ok(Err(e)) => {
                        metrics.backend_call(started.elapsed());
                        metrics.backend_error(ErrorKind::Machine(e.kind));
                        warn!(instance = %name, ?request, error = %e, "slow machine call failed")
                    }
                    Err(e) => {
                        metrics.backend_error(ErrorKind::Aborted);
                        warn!(instance = %name, ?request, error = %e, "machine call aborted")
                    }
                }
            });
            Err(MachineError::Busy)
        }
    }
}

/// Errors of one BMC's machine *reads* (power status, boot flags), so that the same error
/// repeated by every poll is logged once per cause and not once per packet (issue 5: "the log
/// says what is wrong once per cause"). Ironic polls every node's power state every 120 s and
/// monitoring may poll every second; an instance deleted behind ovbmc's back, or a project
/// that lost access to it, answers every one of them with the same error. Actions are always
/// logged: each is a deliberate request whose failure the operator must see.
#[derive(Debug, Default)]
struct ReadErrors(std::sync::Mutex<Option<(String, Instant)>>);

impl ReadErrors {
    /// The same error is logged again at warning level after this long, so a lasting fault
    /// stays visible in a log that is read from its end.
    const REPEAT_AFTER: Duration = Duration::from_secs(300);

    /// Whether `error` is news: a different error from the last one, or the same after
    /// [`Self::REPEAT_AFTER`].
    fn is_news(&self, error: &str, now: Instant) -> bool {
        // A poisoned lock only means another call panicked while logging; the state is a
        // plain value and still usable.
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((e, at)) if e == error && now.duration_since(*at) < Self::REPEAT_AFTER => false,
            _ => {
                *last = Some((error.to_string(), now));
                true
            }
        }
    }

    /// A read succeeded: whether it ends a run of errors (worth one line saying so).
    fn recovered(&self) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        last.take().is_some()
    }
}

fn finish(
    name: &str,
    request: MachineRequest,
    r: Result<MachineReply, BackendError>,
    metrics: &BmcMetrics,
    read_errors: &ReadErrors,
) -> MachineResult {
    let is_read = matches!(
        request,
        MachineRequest::PowerState | MachineRequest::GetBootFlags
    );
    match r {
        Ok(v) => {
            if is_read && read_errors.recovered() {
                info!(instance = %name, ?request, "machine reads succeed again");
            }
            if let MachineRequest::Power(a) = request {
                info!(instance = %name, action = %a, "power action accepted");
            } else if let MachineRequest::SetBootFlags(f) = request {
                info!(instance = %name, boot = %f, "boot flags set");
            }
            Ok(v)
        }
        Err(e) => {
            metrics.backend_error(ErrorKind::Machine(e.kind));
            match e.kind {
                MachineError::Busy => debug!(instance = %name, ?request, error = %e, "busy"),
                MachineError::NotInPresentState => {
                    info!(instance = %name, ?request, error = %e, "refused in present state")
                }
                _ if is_read && !read_errors.is_news(&e.to_string(), Instant::now()) => {
                    debug!(instance = %name, ?request, error = %e, "machine error (again)")
                }
                _ => warn!(instance = %name, ?request, error = %e, "machine error"),
            }
            Err(e.kind)
        }
    }
}

async fn run_request(
    m: &SharedMachine,
    request: MachineRequest,
) -> Result<MachineReply, BackendError> {
    Ok(match request {
        MachineRequest::PowerState => MachineReply::PowerState(m.power_state().await?),
        MachineRequest::Power(a) => {
            m.power(a).await?;
            MachineReply::Done
        }
        MachineRequest::GetBootFlags => MachineReply::BootFlags(m.boot_flags().await?),
        MachineRequest::SetBootFlags(f) => {
            m.set_boot_flags(f).await?;
            MachineReply::Done
        }
    })
}

/// The key unknown user names are hashed with in the log, one per process (so a name tried
/// on many BMCs, or before and after a reload, shows one tag), never derived from a secret.
fn log_key() -> [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).expect("the OS random source failed");
        k
    })
}

/// Log one endpoint event. The endpoint already rate-limits what unauthenticated peers cause
/// (first occurrences, then [`Event::Suppressed`] with a count per interval), so each event
/// is one line.
fn log_event(name: &str, local: SocketAddr, lockout_secs: u64, ev: Event) {
    match ev {
        Event::SessionOpened {
            sid,
            peer,
            user,
            suite,
        } => {
            debug!(instance = %name, %peer, user = %Escaped(&user), sid = format_args!("{sid:#010x}"), suite = suite.id(), "session opened")
        }
        Event::SessionClosed { sid, reason } => {
            debug!(instance = %name, sid = format_args!("{sid:#010x}"), ?reason, "session closed")
        }
        Event::LoginFailed { peer, user, reason } => {
            let hint = match reason {
                LoginFailure::AbandonedAfterRakp2 => {
                    " (the client did not accept our RAKP 2: wrong password?)"
                }
                LoginFailure::NoCipherMatch => " (only cipher suites 3 and 17 are offered)",
                _ => "",
            };
            warn!(instance = %name, addr = %local, %peer, user = %user, reason = reason.label(), "login failed{hint}")
        }
        Event::HalfOpenEvicted { peer } => {
            warn!(instance = %name, %peer, "half-open session table full: evicting the oldest (login flood?)");
        }
        Event::LockedOut {
            source,
            user,
            until: _,
        } => {
            // The configured duration (`--lockout-secs`), not the time left by the moment
            // this line is written, which reads one second short (issue 15 item 18).
            let secs = lockout_secs;
            match (source, user) {
                (Some(ip), _) => {
                    warn!(instance = %name, source = %ip, seconds = secs, "too many failed logins: source locked out")
                }
                (_, Some(u)) => {
                    warn!(instance = %name, user = %Escaped(&u), seconds = secs, "too many failed logins: user locked out")
                }
                _ => {}
            }
        }
        Event::RefusedLockedOut { peer } => {
            info!(instance = %name, %peer, "login refused: locked out");
        }
        Event::AnswerThrottled { peer } => {
            warn!(instance = %name, %peer, "session-less answers to this source over budget: not answered (a reflection flood with a forged source?)");
        }
        Event::Suppressed { kind, count, over } => {
            warn!(instance = %name, addr = %local, kind = kind.label(), count, seconds = over.as_secs(),
                "{count} more '{}' events in the last {} s not logged one by one (flood?)", kind.label(), over.as_secs())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_read_error_is_news_once_per_cause() {
        let r = ReadErrors::default();
        let t0 = Instant::now();
        assert!(r.is_news("instance not found", t0));
        assert!(!r.is_news("instance not found", t0 + Duration::from_secs(1)));
        // A different cause is news; so is the first one again, after it.
        assert!(r.is_news("Nova answered 403", t0 + Duration::from_secs(2)));
        assert!(r.is_news("instance not found", t0 + Duration::from_secs(3)));
        // A lasting fault is repeated now and then.
        assert!(r.is_news(
            "instance not found",
            t0 + Duration::from_secs(3) + ReadErrors::REPEAT_AFTER
        ));
        assert!(r.recovered());
        assert!(!r.recovered());
        assert!(r.is_news("instance not found", t0 + Duration::from_secs(4)));
    }

    #[test]
    fn pooled_entropy_hands_out_each_byte_once_and_wipes_it() {
        let mut e = PooledEntropy::default();
        assert!(e.buf.is_none(), "no allocation before the first use");
        let mut seen = Vec::new();
        // 16-byte IVs across several refills, plus odd sizes straddling the pool's end.
        for len in [16, 16, 4, 16, 250, 3, 16, 100, 16] {
            let mut b = vec![0u8; len];
            e.fill(&mut b);
            seen.extend_from_slice(&b);
        }
        // Random bytes: 453 zeros in a row would be a bug, not chance.
        assert!(seen.iter().any(|&b| b != 0));
        // Whatever was handed out is no longer in the pool.
        let pool = e.buf.as_ref().expect("allocated");
        assert!(pool[..e.pos].iter().all(|&b| b == 0));
        // Large requests bypass the pool.
        let pos = e.pos;
        let mut big = [0u8; 200];
        e.fill(&mut big);
        assert_eq!(e.pos, pos);
        assert!(big.iter().any(|&b| b != 0));
    }
}
