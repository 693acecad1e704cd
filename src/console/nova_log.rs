//! Nova's console log as a read-only SOL backend, for clouds that leave `[serial_console]`
//! off (most public ones): `os-getConsoleOutput` (`POST /servers/{id}/action`, nova api-ref
//! "Show Console Output") polled for its last lines, of which only the new ones are passed on
//! ([`super::log::LogFollower`]); input is discarded, with one notice in the console stream
//! saying why.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde_json::json;
use tokio::sync::mpsc;

use super::log::{Follow, LogFollower};
use super::nova_serial::ConsoleStats;
use super::{ConsoleLink, Input, LINK_DEPTH};
use crate::cloud::CloudError;
use crate::cloud::session::{Service, Session};

/// Lines read each time, and the most a catching-up read asks for.
const WINDOW: usize = 100;
const MAX_WINDOW: usize = 10_000;

/// What the operator sees, once, when typing into a read-only console.
pub const READ_ONLY_NOTICE: &str = "\r\n[ovbmc: this is the instance's console log from Nova, read-only: \
this cloud gives no serial console for it, so typed input is discarded]\r\n";

/// The log's last `lines` lines.
pub async fn fetch(session: &Session, id: &str, lines: usize) -> Result<String, CloudError> {
    let v = session
        .call(
            "console log",
            Method::POST,
            Service::Compute,
            &format!("/servers/{id}/action"),
            Some(&json!({"os-getConsoleOutput": {"length": lines}})),
        )
        .await?;
    Ok(v.get("output")
        .and_then(|o| o.as_str())
        .unwrap_or_default()
        .to_owned())
}

/// A lone LF becomes CR LF, so a log written with Unix line ends does not staircase on the
/// operator's terminal; CR LF is left as it is.
fn terminal_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 32);
    let mut prev = '\0';
    for c in s.chars() {
        if c == '\n' && prev != '\r' {
            out.push('\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

/// Open the console log of server `id`, read every `interval`.
pub fn open(
    session: Arc<Session>,
    id: String,
    label: String,
    interval: Duration,
    stats: Arc<ConsoleStats>,
) -> ConsoleLink {
    let (out_tx, from_guest) = mpsc::channel::<Bytes>(LINK_DEPTH);
    let (to_guest, mut in_rx) = mpsc::channel::<Input>(LINK_DEPTH);
    tokio::spawn(async move {
        let mut follower = LogFollower::new(WINDOW, MAX_WINDOW);
        let mut told = false;
        let mut failing = false;
        let mut wait = Duration::ZERO;
        loop {
            // The next read is due `wait` after the last one; input in between is answered
            // without moving that deadline (else steady typing would stop the reads).
            let due = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => break,
                    inp = in_rx.recv() => match inp {
                        None => return,
                        Some(_) if !told => {
                            told = true;
                            if out_tx.send(Bytes::from_static(READ_ONLY_NOTICE.as_bytes())).await.is_err() {
                                return;
                            }
                        }
                        Some(_) => {}
                    },
                }
            }
            wait = interval;
            let text = match fetch(&session, &id, follower.window()).await {
                Ok(t) => {
                    if std::mem::replace(&mut failing, false) {
                        tracing::info!("{label}: console log readable again");
                    }
                    t
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!("{label}: console log: {e}; trying again");
                    }
                    wait = (interval * 4).min(Duration::from_secs(30));
                    continue;
                }
            };
            match follower.take(&text) {
                Follow::ReadMore(_) => wait = Duration::ZERO,
                Follow::New(s) if s.is_empty() => {}
                Follow::New(s) => {
                    let s = terminal_lines(&s);
                    stats
                        .from_guest
                        .fetch_add(s.len() as u64, Ordering::Relaxed);
                    // `send` waits while the BMC side is full: the log is read no faster than
                    // the operator takes it.
                    for chunk in s.as_bytes().chunks(4096) {
                        if out_tx.send(Bytes::copy_from_slice(chunk)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    ConsoleLink {
        from_guest,
        to_guest,
        writable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::fake::Fake;
    use crate::cloud::fake_tests::{fast, session};

    const ID: &str = "00000000-0000-4000-8000-00000000000a";

    #[test]
    fn lone_line_feeds_become_cr_lf() {
        assert_eq!(terminal_lines("a\nb\r\nc\n"), "a\r\nb\r\nc\r\n");
    }

    async fn recv(link: &mut ConsoleLink) -> String {
        let b = tokio::time::timeout(Duration::from_secs(10), link.from_guest.recv())
            .await
            .expect("output within 10 s")
            .expect("link open");
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_log_is_followed_and_input_gets_one_notice() {
        let f = Fake::start().await;
        f.add_server(ID, "a", "ACTIVE");
        f.lock().console_log = "boot 1\nboot 2\n".into();
        let s = session(&f, fast()).await;
        let stats = Arc::new(ConsoleStats::default());
        let mut link = open(
            s,
            ID.into(),
            "bmc a".into(),
            Duration::from_millis(20),
            stats,
        );
        assert!(!link.writable);
        assert_eq!(recv(&mut link).await, "boot 1\r\nboot 2\r\n");
        f.lock().console_log.push_str("login: ");
        assert_eq!(recv(&mut link).await, "login: ");
        link.to_guest
            .send(Input::Data(Bytes::from_static(b"root\r")))
            .await
            .unwrap();
        link.to_guest
            .send(Input::Data(Bytes::from_static(b"x")))
            .await
            .unwrap();
        assert_eq!(recv(&mut link).await, READ_ONLY_NOTICE);
        f.lock().console_log.push_str("\nmore\n");
        assert_eq!(
            recv(&mut link).await,
            "\r\nmore\r\n",
            "one notice only, then the log"
        );
        let reads = f.count("action");
        assert!(reads >= 3, "{reads}");
    }

    /// Typing faster than the poll interval must not hold the reads back: the next read is
    /// due `interval` after the last one, whatever arrives meanwhile.
    #[tokio::test]
    async fn steady_typing_does_not_stop_the_log() {
        let f = Fake::start().await;
        f.add_server(ID, "a", "ACTIVE");
        f.lock().console_log = "boot\n".into();
        let s = session(&f, fast()).await;
        let stats = Arc::new(ConsoleStats::default());
        let mut link = open(
            s,
            ID.into(),
            "bmc a".into(),
            Duration::from_millis(200),
            stats,
        );
        assert_eq!(recv(&mut link).await, "boot\r\n");
        f.lock().console_log.push_str("later\n");
        let to_guest = link.to_guest.clone();
        let typist = tokio::spawn(async move {
            loop {
                if to_guest
                    .send(Input::Data(Bytes::from_static(b"x")))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        assert_eq!(recv(&mut link).await, READ_ONLY_NOTICE);
        assert_eq!(recv(&mut link).await, "later\r\n", "read while typing");
        typist.abort();
    }
}
