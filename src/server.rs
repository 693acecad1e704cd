//! The UDP runtime: one socket and one task per BMC address, feeding an
//! [`ipmi_proto::Endpoint`], with machine calls running as separate tasks.
//!
//! Replies always leave from the socket that received the request, so the kernel uses the
//! BMC address as the source address, which per-address policy routing and ipmitool (it
//! `connect()`s its UDP socket) both depend on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ipmi_proto::endpoint::{Event, LoginFailure};
use ipmi_proto::machine::{MachineError, MachineReply, MachineRequest, MachineResult};
use ipmi_proto::{BmcConfig, Endpoint, Entropy, Output, Ticket};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::backend::{BackendError, SharedMachine};

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

/// One BMC to serve.
pub struct BmcSpec {
    /// Address and port to bind.
    pub addr: SocketAddr,
    /// Protocol configuration (users, GUID, limits).
    pub config: BmcConfig,
    /// The machine it controls.
    pub machine: SharedMachine,
}

/// Runtime options.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// How long a request waits for the machine before the client is told "node busy"
    /// (C0); the machine call itself goes on and its outcome is logged. ipmitool waits 1 s
    /// per try, and the answer has to arrive before that.
    pub backend_budget: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            backend_budget: Duration::from_millis(700),
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
                "cannot bind UDP {} for instance {}{hint}",
                spec.addr,
                spec.machine.name()
            ))
        })?;
        out.push(BoundBmc { socket, spec });
    }
    Ok(out)
}

/// Serve until `shutdown` is cancelled, then wait (bounded) for in-flight machine calls.
pub async fn run(bmcs: Vec<BoundBmc>, opts: ServerOptions, shutdown: CancellationToken) {
    let mut server = Server::new(opts, shutdown.clone());
    for b in bmcs {
        server.start(b);
    }
    shutdown.cancelled().await;
    server.drain().await;
}

/// A running BMC: its own cancellation token (a child of the server's) and its task, which
/// hands its socket back when it stops.
struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<UdpSocket>,
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
        info!(addr = %key, instance = %b.spec.machine.name(), "listening");
        let cancel = self.shutdown.child_token();
        let task = self.tracker.spawn(serve_bmc(
            b,
            self.opts.clone(),
            cancel.clone(),
            self.tracker.clone(),
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
        r.task.await.ok()
    }

    /// The addresses being served.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.running.keys().copied().collect()
    }

    /// Stop everything and wait (at most 10 s) for in-flight machine calls.
    pub async fn drain(self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tracker.wait())
            .await
            .is_err()
        {
            warn!("shutdown: some machine calls did not finish within 10 s");
        }
    }
}

async fn serve_bmc(
    b: BoundBmc,
    opts: ServerOptions,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> UdpSocket {
    let BoundBmc { socket, spec } = b;
    let machine = spec.machine;
    let name = machine.name();
    let local = socket.local_addr().ok();
    let mut ep = Endpoint::new(spec.config);
    let mut rng = OsEntropy;
    let (tx, mut rx) = mpsc::unbounded_channel::<(Ticket, MachineResult)>();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 2048];
    let mut counters = [0u64; 2];
    loop {
        let out = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, peer)) => ep.handle(Instant::now(), peer, &buf[..n], &mut rng),
                Err(e) => {
                    // ICMP port-unreachable from an earlier reply surfaces here on Linux;
                    // it concerns that one client only.
                    debug!(error = %e, "recv");
                    None
                }
            },
            Some((ticket, result)) = rx.recv() => ep.complete(Instant::now(), ticket, result, &mut rng),
            _ = tick.tick() => {
                ep.handle_timeout(Instant::now());
                None
            }
        };
        match out {
            Some(Output::Transmit { to, data }) => {
                if let Err(e) = socket.send_to(&data, to).await {
                    debug!(%to, error = %e, "send");
                }
            }
            Some(Output::Machine { ticket, request }) => {
                let m = machine.clone();
                let tx = tx.clone();
                let budget = opts.backend_budget;
                let name = name.clone();
                tracker.spawn(async move {
                    let result = call_with_budget(m, request, budget, &name).await;
                    let _ = tx.send((ticket, result));
                });
            }
            None => {}
        }
        while let Some(ev) = ep.poll_event() {
            log_event(&name, local, ev, &mut counters);
        }
    }
    info!(instance = %name, addr = ?local, "stopped");
    socket
}

/// Run one machine call; answer busy if it takes longer than `budget`, but let it finish in
/// the background and log how it ended, so an action answered "busy" is never silently lost.
async fn call_with_budget(
    m: SharedMachine,
    request: MachineRequest,
    budget: Duration,
    name: &str,
) -> MachineResult {
    // JoinHandle is Unpin: it can be polled by reference and then moved into the follow-up.
    let mut call = tokio::spawn(async move { run_request(&m, request).await });
    match tokio::time::timeout(budget, &mut call).await {
        Ok(Ok(r)) => finish(name, request, r),
        Ok(Err(join)) => {
            warn!(instance = %name, ?request, error = %join, "machine call failed");
            Err(MachineError::Failed)
        }
        Err(_) => {
            let name = name.to_string();
            tokio::spawn(async move {
                match call.await {
                    Ok(Ok(_)) => {
                        info!(instance = %name, ?request, "slow machine call completed after the client was told busy")
                    }
                    Ok(Err(e)) => {
                        warn!(instance = %name, ?request, error = %e, "slow machine call failed")
                    }
                    Err(e) => warn!(instance = %name, ?request, error = %e, "machine call aborted"),
                }
            });
            Err(MachineError::Busy)
        }
    }
}

fn finish(
    name: &str,
    request: MachineRequest,
    r: Result<MachineReply, BackendError>,
) -> MachineResult {
    match r {
        Ok(v) => {
            if let MachineRequest::Power(a) = request {
                info!(instance = %name, action = %a, "power action accepted");
            } else if let MachineRequest::SetBootFlags(f) = request {
                info!(instance = %name, boot = %f, "boot flags set");
            }
            Ok(v)
        }
        Err(e) => {
            match e.kind {
                MachineError::Busy => debug!(instance = %name, ?request, error = %e, "busy"),
                MachineError::NotInPresentState => {
                    info!(instance = %name, ?request, error = %e, "refused in present state")
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

/// Log one endpoint event. `counters` are [half-open evictions, refused locked-out logins],
/// used to log floods once per thousand instead of once per packet.
fn log_event(name: &str, local: Option<SocketAddr>, ev: Event, counters: &mut [u64; 2]) {
    match ev {
        Event::SessionOpened {
            sid,
            peer,
            user,
            suite,
        } => {
            debug!(instance = %name, %peer, %user, sid = format_args!("{sid:#010x}"), suite = suite.id(), "session opened")
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
            warn!(instance = %name, addr = ?local, %peer, user = %user, reason = reason.label(), "login failed{hint}")
        }
        Event::HalfOpenEvicted { peer } => {
            counters[0] += 1;
            // One line per 1000 evictions: a flood must not flood the log as well.
            if counters[0] % 1000 == 1 {
                warn!(instance = %name, %peer, total = counters[0], "half-open session table full: evicting the oldest (login flood?)");
            }
        }
        Event::LockedOut {
            source,
            user,
            until,
        } => {
            let secs = until
                .saturating_duration_since(std::time::Instant::now())
                .as_secs();
            match (source, user) {
                (Some(ip), _) => {
                    warn!(instance = %name, source = %ip, seconds = secs, "too many failed logins: source locked out")
                }
                (_, Some(u)) => {
                    warn!(instance = %name, user = %u, seconds = secs, "too many failed logins: user locked out")
                }
                _ => {}
            }
        }
        Event::RefusedLockedOut { peer } => {
            counters[1] += 1;
            if counters[1] % 1000 == 1 {
                info!(instance = %name, %peer, total = counters[1], "login refused: locked out");
            }
        }
    }
}
