//! The accept loop and connection policy shared by every HTTP face.
//!
//! Why a policy at all: the listener is unauthenticated, and a client that opens a connection
//! and then sends its request head a byte at a time (or never) costs the server nothing but a
//! slot. With a fixed number of slots and nothing else, 32 such clients silenced `/metrics`
//! and `/healthz` (issue 15 item 4). So:
//! - hyper's header-read timeout ([`Limits::header_read_timeout`]) closes a connection that
//!   has not sent a complete request head in time, also between keep-alive requests;
//! - an answer that takes longer than [`Limits::request_timeout`] is cut by a sweep once a
//!   second. That includes the time hyper spends writing it after the body has been handed
//!   over: hyper starts no header-read timer while a write is blocked, so a client that asks
//!   for a 4 MB page and never reads it would otherwise hold the connection (and the page)
//!   for good. The sweep closes a connection idle for longer than the request timeout too,
//!   which a healthy idle one never is (hyper closes it at the header-read timeout);
//! - when [`Limits::max_connections`] are open, a new connection is always accepted and the
//!   connection that has been idle (waiting for a request head) the longest is closed to make
//!   room; only when every connection is in the middle of an answer does the one busy the
//!   longest go. A client that is being answered is never shed for one that is not, and a
//!   slow client cannot keep a newcomer out: it would have to open `max_connections`
//!   connections between the newcomer's connect and its request head;
//! - after each accept the loop yields, so the new connection's task reads its request head
//!   (already in the socket buffer for a scraper) before the next accept can shed it.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Bounds of one face's listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; at the limit the longest-idle one is shed for a new one.
    /// Counted in the process's open files: keep it well inside the 256 descriptors ovbmc
    /// reserves beside its BMC sockets (`FD_RESERVE` in main.rs).
    pub max_connections: usize,
    /// Time from the start of reading a request head (the connection's start, or the end of
    /// the previous answer) to its last byte; hyper closes the connection after it.
    pub header_read_timeout: Duration,
    /// Time from a complete request head to the end of its answer.
    pub request_timeout: Duration,
    /// hyper's read buffer, which bounds a request head (larger heads get 431; hyper's
    /// minimum is 8 KiB).
    pub max_head: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 128,
            // A scraper sends its head at once; a few seconds cover a loaded machine.
            header_read_timeout: Duration::from_secs(5),
            // A 4 MB page (10,000 BMCs) written to a 10 Mbit/s link takes about 3 s.
            request_timeout: Duration::from_secs(10),
            max_head: 16 * 1024,
        }
    }
}

/// Serve `service` on `listener` until `shutdown`; `name` names the face in log lines.
/// Connections still open at shutdown are told to close after their answer in progress and
/// given a second to do so.
pub async fn serve<S, B>(
    name: &'static str,
    listener: TcpListener,
    limits: Limits,
    service: S,
    shutdown: CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_tls(name, listener, None, limits, service, shutdown).await;
}

/// [`serve`], over TLS when `tls` is given: the handshake runs in the connection's task,
/// bounded by the header-read timeout and sheddable like a connection waiting for its head.
pub async fn serve_tls<S, B>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    service: S,
    shutdown: CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let table = Arc::new(Table::new());
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head.max(8192));
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shed_log = ShedLog::default();
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                let idle = limits
                    .request_timeout
                    .max(limits.header_read_timeout + Duration::from_secs(1));
                let n = table.expire(limits.request_timeout, idle);
                shed_log.note(name, n, "an answer outlived the request timeout");
                continue;
            }
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on accept.
                    warn!(error = %e, "{name}: accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        // Answers are small or one buffer: send them without waiting for Nagle.
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        let slot = Arc::new(Slot::new(table.epoch));
        if table.admit(id, slot.clone(), limits.max_connections) {
            shed_log.note(name, 1, "the connection limit was reached");
        }
        let svc = Tracked {
            inner: service.clone(),
            slot: slot.clone(),
            peer,
        };
        let table = table.clone();
        let stop = shutdown.clone();
        let h1 = h1.clone();
        let tls = tls.clone();
        let handshake = limits.header_read_timeout;
        tokio::spawn(async move {
            match tls {
                None => drive(name, &h1, TokioIo::new(stream), svc, &slot, &stop, peer).await,
                Some(acceptor) => {
                    let hs = tokio::time::timeout(handshake, acceptor.accept(stream));
                    tokio::select! {
                        r = hs => match r {
                            Ok(Ok(s)) => {
                                drive(name, &h1, TokioIo::new(s), svc, &slot, &stop, peer).await;
                            }
                            Ok(Err(e)) => debug!(%peer, error = %e, "{name}: TLS handshake"),
                            Err(_) => debug!(%peer, "{name}: TLS handshake timed out"),
                        },
                        _ = slot.kill.cancelled() => debug!(%peer, "{name}: connection shed"),
                        _ = stop.cancelled() => {}
                    }
                }
            }
            table.remove(id);
        });
        // The task just spawned runs next on this worker: it reads the new connection's
        // request head before this loop accepts (and perhaps sheds) again.
        tokio::task::yield_now().await;
    }
}

/// Serve one connection until it ends, is shed, or the face stops (then it is told to close
/// after the answer in progress and given a second).
async fn drive<I, S, B>(
    name: &str,
    h1: &http1::Builder,
    io: I,
    svc: Tracked<S>,
    slot: &Slot,
    stop: &CancellationToken,
    peer: std::net::SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let conn = h1.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(%peer, error = %e, "{name}: connection");
            }
        }
        _ = slot.kill.cancelled() => debug!(%peer, "{name}: connection shed"),
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

/// `busy_since` of a connection with no request in flight.
const IDLE: u64 = u64::MAX;

/// One open connection, as the accept loop sees it.
#[derive(Debug)]
struct Slot {
    epoch: Instant,
    /// Milliseconds since `epoch` when the connection last became idle: accepted, or the body
    /// of its last answer handed to hyper.
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` when the request in flight arrived; [`IDLE`] if none.
    busy_since: AtomicU64,
    /// Cancelled to close the connection (shed or timed out).
    kill: CancellationToken,
}

impl Slot {
    fn new(epoch: Instant) -> Self {
        let s = Self {
            epoch,
            idle_since: AtomicU64::new(0),
            busy_since: AtomicU64::new(IDLE),
            kill: CancellationToken::new(),
        };
        s.idle_since.store(s.now(), Relaxed);
        s
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The sort key of the shedding order: idle connections first, each group by how long it
    /// has been in that state (smallest timestamp first).
    fn shed_key(&self) -> (bool, u64) {
        match self.busy_since.load(Relaxed) {
            IDLE => (false, self.idle_since.load(Relaxed)),
            since => (true, since),
        }
    }
}

/// The open connections of one listener.
struct Table {
    epoch: Instant,
    conns: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Table {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            conns: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add a connection; at the limit, first shed the one [`victim`] picks. True if one was shed.
    fn admit(&self, id: u64, slot: Arc<Slot>, max: usize) -> bool {
        let mut conns = self.lock();
        let mut shed = false;
        while conns.len() >= max.max(1) {
            let Some(v) = victim(&conns) else { break };
            if let Some(s) = conns.remove(&v) {
                s.kill.cancel();
                shed = true;
            }
        }
        conns.insert(id, slot);
        shed
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Close the connections busy with one answer for longer than `busy`, or idle for longer
    /// than `idle` (stuck writing an answer whose body hyper already took); how many.
    fn expire(&self, busy: Duration, idle: Duration) -> usize {
        let now = self.epoch.elapsed().as_millis() as u64;
        let (busy, idle) = (busy.as_millis() as u64, idle.as_millis() as u64);
        let mut conns = self.lock();
        let before = conns.len();
        conns.retain(|_, s| {
            let keep = match s.busy_since.load(Relaxed) {
                IDLE => now.saturating_sub(s.idle_since.load(Relaxed)) <= idle,
                b => now.saturating_sub(b) <= busy,
            };
            if !keep {
                s.kill.cancel();
            }
            keep
        });
        before - conns.len()
    }
}

/// The connection to shed to make room: the longest-idle one, else the longest-busy one.
fn victim(conns: &HashMap<u64, Arc<Slot>>) -> Option<u64> {
    conns
        .iter()
        .min_by_key(|(id, s)| (s.shed_key(), **id))
        .map(|(id, _)| *id)
}

/// Sheds are logged the first time and then at most once a minute, with the count since the
/// last line: a flood of slow clients must not become a flood of log lines.
#[derive(Default)]
struct ShedLog {
    last: Option<Instant>,
    unlogged: usize,
}

impl ShedLog {
    fn note(&mut self, name: &str, n: usize, why: &str) {
        if n == 0 {
            return;
        }
        self.unlogged += n;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            warn!(
                closed = self.unlogged,
                "{name}: closed connections because {why} (slow or idle clients first; \
                 logged at most once a minute)"
            );
            self.last = Some(Instant::now());
            self.unlogged = 0;
        }
    }
}

/// The face's service, marking the connection busy from a request's arrival until its answer's
/// body is done (or dropped).
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    slot: Arc<Slot>,
    peer: std::net::SocketAddr,
}

/// The client's address, in every request's extensions (the Redfish face's failed-login
/// lock-out counts per source).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body + Unpin,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(Peer(self.peer));
        let busy = Busy::begin(self.slot.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|inner| TrackedBody { inner, _busy: busy }))
        })
    }
}

/// Marks a connection busy while alive.
struct Busy(Arc<Slot>);

impl Busy {
    fn begin(slot: Arc<Slot>) -> Self {
        slot.busy_since.store(slot.now(), Relaxed);
        Self(slot)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Relaxed);
        self.0.busy_since.store(IDLE, Relaxed);
    }
}

/// An answer's body that keeps its connection marked busy until hyper has taken its last frame
/// (or dropped it: `HEAD`, a closed connection).
struct TrackedBody<B> {
    inner: B,
    _busy: Busy,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    // hyper writes Content-Length from an exact hint, for GET and HEAD alike.
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(epoch: Instant, idle_since: u64, busy_since: u64) -> Arc<Slot> {
        let s = Slot::new(epoch);
        s.idle_since.store(idle_since, Relaxed);
        s.busy_since.store(busy_since, Relaxed);
        Arc::new(s)
    }

    #[test]
    fn idle_connections_are_shed_before_busy_ones_oldest_first() {
        let t = Table::new();
        let e = t.epoch;
        // 1: busy since 5; 2: idle since 20; 3: idle since 10; 4: busy since 1.
        for (id, idle, busy) in [(1, 0, 5), (2, 20, IDLE), (3, 10, IDLE), (4, 0, 1)] {
            t.lock().insert(id, slot(e, idle, busy));
        }
        assert_eq!(victim(&t.lock()), Some(3));
        assert!(t.admit(5, slot(e, 30, IDLE), 4));
        assert!(!t.lock().contains_key(&3));
        assert_eq!(victim(&t.lock()), Some(2));
        assert!(t.admit(6, slot(e, 31, IDLE), 4));
        assert!(t.admit(7, slot(e, 32, IDLE), 4), "then the idle newcomer 5");
        assert!(!t.lock().contains_key(&5));
        // Only busy ones and the newest idle ones left: idle 6 goes before busy 4.
        assert!(t.admit(8, slot(e, 33, IDLE), 4));
        assert!(!t.lock().contains_key(&6));
        let mut left: Vec<u64> = t.lock().keys().copied().collect();
        left.sort_unstable();
        assert_eq!(left, [1, 4, 7, 8]);
        // Below the limit nothing is shed.
        assert!(!t.admit(9, slot(e, 34, IDLE), 8));
    }

    #[test]
    fn answers_that_outlive_the_request_timeout_are_cut_and_so_are_stuck_writers() {
        let t = Table::new();
        let e = t.epoch;
        let stuck = slot(e, 0, 0);
        let idle = slot(e, 0, IDLE);
        t.lock().insert(1, stuck.clone());
        t.lock().insert(2, idle.clone());
        std::thread::sleep(Duration::from_millis(30));
        let long = Duration::from_secs(60);
        assert_eq!(t.expire(long, long), 0);
        assert_eq!(t.expire(Duration::from_millis(10), long), 1);
        assert!(stuck.kill.is_cancelled() && !idle.kill.is_cancelled());
        assert_eq!(t.lock().len(), 1);
        // Idle far beyond the header-read timeout: stuck writing a taken body.
        assert_eq!(t.expire(long, Duration::from_millis(10)), 1);
        assert!(idle.kill.is_cancelled());
        assert!(t.lock().is_empty());
    }
}
