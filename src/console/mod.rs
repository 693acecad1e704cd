//! Console backends: the machine's serial console, which SOL (IPMI v2.0 ch. 15) carries to the
//! operator. A backend hands the BMC a [`ConsoleLink`]: bounded channels each way, so a slow
//! operator holds the guest's output back (backpressure) instead of losing it, and a slow
//! guest holds the operator's input back.
//!
//! Backends: [`sim`] (the simulator's console, for tests and trying ovbmc without a cloud);
//! Nova's serial console through nova-serialproxy and Nova's console log follow (issue 12).

pub mod log;
pub mod nova_log;
pub mod nova_serial;
pub mod sim;

use bytes::Bytes;
use tokio::sync::mpsc;

/// What the operator sends to the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Characters for the guest's serial input.
    Data(Bytes),
    /// A serial break (SOL Operation b4; ipmitool's `~B`).
    Break,
}

/// An open console: the guest's output and a way to send it input. Dropping the link closes
/// the console (the backend's task ends).
#[derive(Debug)]
pub struct ConsoleLink {
    /// The guest's output, in order.
    pub from_guest: mpsc::Receiver<Bytes>,
    /// Input for the guest.
    pub to_guest: mpsc::Sender<Input>,
    /// Whether input reaches the guest (false for a read-only console log).
    pub writable: bool,
}

/// Channel depth each way: with chunks of up to 4 KiB this bounds what one console buffers.
pub const LINK_DEPTH: usize = 16;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::cli::ConsoleMode;
use crate::cloud::session::Session;
pub use nova_serial::ConsoleStats;

/// How often the console log is read in log mode.
pub const LOG_INTERVAL: Duration = Duration::from_secs(2);

/// Where a machine's console comes from ([`crate::backend::Machine::console`]).
#[derive(Clone)]
pub enum Source {
    /// The simulator's console ([`sim`]).
    Sim {
        /// The machine's name (banner and prompt).
        name: String,
    },
    /// A Nova instance: its serial console or its console log.
    Nova {
        /// The cloud session.
        session: Arc<Session>,
        /// The server ID.
        id: String,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sim { name } => write!(f, "Sim({name:?})"),
            Self::Nova { id, .. } => write!(f, "Nova({id})"),
        }
    }
}

/// Which Nova console a BMC ended up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NovaKind {
    Serial,
    Log,
}

/// How one BMC opens its console when SOL is activated: the machine's [`Source`] and the
/// BMC's [`ConsoleMode`]. For `auto` on Nova, the first activation asks Nova whether it
/// offers a serial console and keeps the answer (logged once per BMC).
#[derive(Clone, Debug)]
pub struct Opener {
    source: Option<Source>,
    mode: ConsoleMode,
    label: String,
    stats: Arc<ConsoleStats>,
    chosen: Arc<OnceLock<NovaKind>>,
}

impl Opener {
    /// An opener for the BMC named `label` in logs.
    pub fn new(source: Option<Source>, mode: ConsoleMode, label: String) -> Self {
        Self {
            source,
            mode,
            label,
            stats: Arc::default(),
            chosen: Arc::default(),
        }
    }

    /// No console at all (`--console off`, or a machine without one).
    pub fn off() -> Self {
        Self::new(None, ConsoleMode::Off, String::new())
    }

    /// Whether SOL can be activated.
    pub fn available(&self) -> bool {
        self.mode != ConsoleMode::Off && self.source.is_some()
    }

    /// The counters of this BMC's console connections.
    pub fn stats(&self) -> &Arc<ConsoleStats> {
        &self.stats
    }

    /// Open the console; the link arrives on the receiver (at once for the simulator; after
    /// Nova answered for `auto`, without holding the BMC's task up meanwhile). `None` if
    /// there is no console to open.
    pub fn open(&self) -> Option<oneshot::Receiver<ConsoleLink>> {
        if !self.available() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        match self.source.clone()? {
            Source::Sim { name } => {
                let _ = tx.send(sim::open(&name));
            }
            Source::Nova { session, id } => {
                let this = self.clone();
                tokio::spawn(async move {
                    let kind = this.nova_kind(&session, &id).await;
                    let label = this.label.clone();
                    let stats = this.stats.clone();
                    let link = match kind {
                        NovaKind::Serial => {
                            // Only a wss:// URL uses it; made once per cloud session.
                            let tls = session.websocket_tls();
                            nova_serial::open(session, id, label, tls, stats)
                        }
                        NovaKind::Log => nova_log::open(session, id, label, LOG_INTERVAL, stats),
                    };
                    let _ = tx.send(link);
                });
            }
        }
        Some(rx)
    }

    /// Serial or log, per the mode; `auto` asks Nova once.
    async fn nova_kind(&self, session: &Session, id: &str) -> NovaKind {
        match self.mode {
            ConsoleMode::Serial | ConsoleMode::Off => NovaKind::Serial,
            ConsoleMode::Log => NovaKind::Log,
            ConsoleMode::Auto => {
                if let Some(k) = self.chosen.get() {
                    return *k;
                }
                let kind = match nova_serial::console_url(session, id).await {
                    Err(nova_serial::UrlError::Unavailable(e)) => {
                        tracing::info!(
                            "{}: SOL console: Nova's console log (read-only): {e}",
                            self.label
                        );
                        NovaKind::Log
                    }
                    // A transient error decides nothing: the serial backend keeps trying, and
                    // the next activation asks again.
                    Err(nova_serial::UrlError::Other(e)) => {
                        tracing::warn!(
                            "{}: SOL console: cannot ask Nova for a serial console yet ({e}); \
                             trying the serial console",
                            self.label
                        );
                        return NovaKind::Serial;
                    }
                    Ok(_) => {
                        tracing::info!(
                            "{}: SOL console: Nova's serial console (nova-serialproxy)",
                            self.label
                        );
                        NovaKind::Serial
                    }
                };
                let _ = self.chosen.set(kind);
                kind
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_simulator_console_opens_in_every_mode_but_off() {
        for mode in [ConsoleMode::Auto, ConsoleMode::Serial, ConsoleMode::Log] {
            let o = Opener::new(
                Some(Source::Sim { name: "n".into() }),
                mode,
                "n (test)".into(),
            );
            assert!(o.available());
            let mut link = o.open().expect("a console").await.expect("a link");
            let banner = link.from_guest.recv().await.unwrap();
            assert!(banner.ends_with(b"n login: "), "{mode:?}");
        }
        let off = Opener::new(
            Some(Source::Sim { name: "n".into() }),
            ConsoleMode::Off,
            String::new(),
        );
        assert!(!off.available() && off.open().is_none());
        assert!(!Opener::off().available());
        assert!(
            Opener::new(None, ConsoleMode::Auto, String::new())
                .open()
                .is_none()
        );
    }

    /// `auto` on a cloud without serial consoles follows the console log (read-only) and
    /// keeps that choice; `serial` asks for the serial console whatever Nova offers.
    #[tokio::test]
    async fn auto_falls_back_to_the_log_where_nova_has_no_serial_console() {
        use crate::cloud::fake::Fake;
        use crate::cloud::fake_tests::{fast, session};
        const ID: &str = "00000000-0000-4000-8000-00000000000b";
        let f = Fake::start().await;
        f.add_server(ID, "a", "ACTIVE");
        f.lock().console_log = "boot\n".into();
        let source = Source::Nova {
            session: session(&f, fast()).await,
            id: ID.into(),
        };
        let auto = Opener::new(Some(source.clone()), ConsoleMode::Auto, "a".into());
        let open = |o: &Opener| {
            let rx = o.open().expect("a console");
            async move {
                tokio::time::timeout(Duration::from_secs(10), rx)
                    .await
                    .expect("a link within 10 s")
                    .expect("a link")
            }
        };
        let mut link = open(&auto).await;
        assert!(!link.writable, "the log, read-only");
        let first = tokio::time::timeout(Duration::from_secs(10), link.from_guest.recv())
            .await
            .expect("the log within 10 s")
            .unwrap();
        assert_eq!(&first[..], b"boot\r\n");
        // Decided once per BMC: a serial console that appears later is not picked up
        // behind the operator's back.
        f.lock().serial_url = Some("ws://127.0.0.1:1/?token=x".into());
        assert!(!open(&auto).await.writable);
        let serial = Opener::new(Some(source), ConsoleMode::Serial, "a".into());
        assert!(open(&serial).await.writable);
    }
}
