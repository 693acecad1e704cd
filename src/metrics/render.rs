//! The Prometheus text exposition (format 0.0.4) of the registry, and the page cache that
//! renders it at most once per [`MAX_AGE`] however many scrapers ask (issue 15 item 5: the page
//! of a 10,000-BMC fleet is about 4 MB, and 32 looping scrapers each rendering their own copy
//! took the process from 75 to 192 MB).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, atomic::Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Mutex;

use super::{
    BmcMetrics, Detail, ERROR_KINDS, LATENCY_BUCKETS, LOGIN_FAILURES, Metrics, REQUEST_SLOTS,
    command_label,
};
use ipmi_proto::endpoint::DropReason;

impl Metrics {
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
        header(
            &mut o,
            "ovbmc_datagrams_dropped_total",
            "counter",
            "Datagrams dropped unanswered, by reason (malformed, unauthenticated, replayed, ...).",
        );
        for (b, l) in bmcs.iter().zip(&labels) {
            for r in DropReason::ALL {
                let x = b.dropped_by[r.index()].load(Relaxed);
                if x != 0 {
                    let _ = writeln!(
                        o,
                        "ovbmc_datagrams_dropped_total{{{l},reason=\"{}\"}} {x}",
                        r.label()
                    );
                }
            }
        }
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

        let sol = |f: fn(&Detail) -> u64| move |b: &BmcMetrics| b.detail.get().map_or(0, |d| f(d));
        each(
            &mut o,
            "ovbmc_sol_active",
            "gauge",
            "Serial over LAN instances active (0 or 1 per BMC).",
            &sol(|d| d.sol_active.load(Relaxed).into()),
            false,
        );
        each(
            &mut o,
            "ovbmc_sol_activations_total",
            "counter",
            "Serial over LAN activations granted (Activate Payload answered 00h).",
            &sol(|d| d.sol_activations.load(Relaxed)),
            true,
        );
        each(
            &mut o,
            "ovbmc_sol_bytes_to_console_total",
            "counter",
            "Console characters sent to SOL consoles (guest output; retransmits not counted).",
            &sol(|d| d.sol_bytes_to_console.load(Relaxed)),
            true,
        );
        each(
            &mut o,
            "ovbmc_sol_bytes_from_console_total",
            "counter",
            "Characters SOL consoles sent to the guest.",
            &sol(|d| d.sol_bytes_from_console.load(Relaxed)),
            true,
        );
        each(
            &mut o,
            "ovbmc_sol_retransmits_total",
            "counter",
            "SOL packets sent again after their retry interval went unacknowledged.",
            &sol(|d| d.sol_retransmits.load(Relaxed)),
            true,
        );
        each(
            &mut o,
            "ovbmc_console_reconnects_total",
            "counter",
            "Console backend connections made again (Nova serial console after a drop).",
            &sol(|d| d.console_reconnects.load(Relaxed)),
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
                let name = command_label((k >> 8) as usize - 1);
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

/// How long a rendered page is served before the next scrape renders a new one. Prometheus
/// scrapes every 15 s or more, so only concurrent or looping scrapers ever see a cached page.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// One rendered page, shared (a reference count, not a copy) by every scraper it serves.
#[derive(Clone, Debug)]
pub struct Page {
    /// The exposition text.
    pub body: Bytes,
    /// Which render this is (1, 2, ...): pages with the same number are the same bytes.
    pub generation: u64,
    rendered: Instant,
}

/// The rendered page of a registry, made again at most once per `MAX_AGE` (1 s), by one
/// render at a time.
///
/// A scraper that arrives while a render runs waits for that render and takes its page,
/// however old the previous one was; so N concurrent scrapers cost one render, not N, and
/// never more than one render runs (the lock is held by the render itself, not by the scraper
/// that started it: a scraper that hangs up does not free the lock for a second render).
/// The render runs on tokio's blocking pool, away from the workers that serve `/healthz`.
pub struct Pages {
    render: Box<dyn Fn() -> String + Send + Sync>,
    latest: Arc<Mutex<Option<Page>>>,
    /// The generation of the newest page (0: none yet).
    generation: AtomicU64,
    /// Scrapers waiting for the lock (tests wait for them to line up).
    waiting: AtomicUsize,
    /// Unix milliseconds when this cache was made: with the generation, a validator that
    /// differs across restarts (the `ETag`).
    boot: u64,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages")
            .field("generation", &self.generations())
            .finish_non_exhaustive()
    }
}

impl Pages {
    /// A cache of the exposition of `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Self::with_renderer(move || metrics.render())
    }

    /// A cache of what `render` makes.
    pub fn with_renderer(render: impl Fn() -> String + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            render: Box::new(render),
            latest: Arc::new(Mutex::new(None)),
            generation: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            boot: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        })
    }

    /// How many renders this cache has made.
    pub fn generations(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// An entity tag for `page` (RFC 9110 §8.8.3): the same tag means the same bytes.
    pub fn etag(&self, page: &Page) -> String {
        format!("\"{:x}-{}\"", self.boot, page.generation)
    }

    /// The current page: the cached one if it is fresh or was rendered while this call
    /// waited, else a new render. `Err` if the render panicked.
    pub async fn get(self: &Arc<Self>) -> Result<Page, tokio::task::JoinError> {
        let seen = self.generations();
        self.waiting.fetch_add(1, Relaxed);
        let mut guard = self.latest.clone().lock_owned().await;
        self.waiting.fetch_sub(1, Relaxed);
        if let Some(p) = guard.as_ref()
            && (p.generation > seen || p.rendered.elapsed() < MAX_AGE)
        {
            return Ok(p.clone());
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let body = Bytes::from((me.render)());
            let page = Page {
                body,
                generation: me.generations() + 1,
                rendered: Instant::now(),
            };
            // Drop the previous page (or its last reference here) before publishing.
            *guard = Some(page.clone());
            me.generation.store(page.generation, Ordering::Release);
            page
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// 32 scrapers that arrive while a render runs all get that one render (issue 15 item 5):
    /// before the page cache each scrape rendered its own page.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_render() {
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = std::sync::Mutex::new(go_rx);
        let started_tx = std::sync::Mutex::new(started_tx);
        let pages = Pages::with_renderer(move || {
            started_tx.lock().unwrap().send(()).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
            "page\n".to_string()
        });
        let first = tokio::spawn({
            let p = pages.clone();
            async move { p.get().await.unwrap() }
        });
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        let rest: Vec<_> = (0..31)
            .map(|_| {
                let p = pages.clone();
                tokio::spawn(async move { p.get().await.unwrap() })
            })
            .collect();
        while pages.waiting.load(Relaxed) < 31 {
            tokio::task::yield_now().await;
        }
        go_tx.send(()).unwrap();
        let first = first.await.unwrap();
        for r in rest {
            let p = r.await.unwrap();
            assert_eq!(p.generation, first.generation);
            // The same buffer, not a copy.
            assert_eq!(p.body.as_ptr(), first.body.as_ptr());
        }
        assert_eq!(pages.generations(), 1);
        assert_eq!(&first.body[..], b"page\n");
    }

    /// A page older than MAX_AGE is rendered again; a fresh one is not.
    #[tokio::test]
    async fn a_stale_page_is_rendered_again() {
        let pages = Pages::with_renderer(|| "x".into());
        let a = pages.get().await.unwrap();
        let b = pages.get().await.unwrap();
        assert_eq!((a.generation, b.generation), (1, 1));
        pages.latest.lock().await.as_mut().unwrap().rendered -= MAX_AGE;
        let c = pages.get().await.unwrap();
        assert_eq!(c.generation, 2);
        assert_ne!(pages.etag(&a), pages.etag(&c));
    }
}
