//! Nova's serial console as a SOL backend: `POST /servers/{id}/remote-consoles` (protocol
//! and type `serial`, compute microversion 2.6 or later; `os-getSerialConsole` before that)
//! gives a `ws://…/?token=…` URL to nova-serialproxy, which relays raw bytes to the guest's
//! serial port as binary WebSocket frames (websockify rejects text frames; subprotocol
//! `binary`). Facts and sources: nova api-ref "servers-remote-consoles",
//! nova/console/websocketproxy.py, websockify/websocket.py.
//!
//! The link survives the instance: when the WebSocket drops (reboot, rebuild, rescue, proxy
//! restart) a fresh URL is fetched — a token is good for `[consoleauth] token_ttl` (600 s by
//! default), so every connection asks for a new one — and the console comes back by itself,
//! with a growing pause between tries. Output the operator has not taken yet is not read
//! from the socket (TCP backpressure to the proxy), never dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;

use super::{ConsoleLink, Input, LINK_DEPTH};
use crate::cloud::CloudError;
use crate::cloud::session::{Service, Session};

/// Counters shared by a console task and the metrics.
#[derive(Debug, Default)]
pub struct ConsoleStats {
    /// Connections made after the first (the console came back).
    pub reconnects: AtomicU64,
    /// Bytes from the guest.
    pub from_guest: AtomicU64,
    /// Bytes to the guest.
    pub to_guest: AtomicU64,
}

/// Why no serial console URL could be had.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// This cloud or instance has no serial console (400 ConsoleTypeUnavailable with
    /// `[serial_console] enabled=False`, or 501 from a driver without one): use the log.
    #[error("Nova offers no serial console here: {0}")]
    Unavailable(CloudError),
    /// Anything else (instance not ready, cloud down): try again later.
    #[error(transparent)]
    Other(CloudError),
}

/// Ask Nova for a serial console URL for server `id`.
pub async fn console_url(session: &Session, id: &str) -> Result<String, UrlError> {
    let (path, body, key) = if session.microversion() >= (2, 6) {
        (
            format!("/servers/{id}/remote-consoles"),
            json!({"remote_console": {"protocol": "serial", "type": "serial"}}),
            "remote_console",
        )
    } else {
        (
            format!("/servers/{id}/action"),
            json!({"os-getSerialConsole": {"type": "serial"}}),
            "console",
        )
    };
    let v = session
        .call(
            "serial console",
            Method::POST,
            Service::Compute,
            &path,
            Some(&body),
        )
        .await
        .map_err(|e| match e {
            CloudError::Http {
                status: 400 | 501, ..
            } => UrlError::Unavailable(e),
            e => UrlError::Other(e),
        })?;
    url_of(&v, key).ok_or_else(|| {
        UrlError::Other(CloudError::Decode {
            what: "serial console".into(),
            message: format!("no {key}.url in the answer"),
        })
    })
}

fn url_of(v: &Value, key: &str) -> Option<String> {
    let url = v.get(key)?.get("url")?.as_str()?;
    (url.starts_with("ws://") || url.starts_with("wss://")).then(|| url.to_owned())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connect to a nova-serialproxy URL, offering the `binary` subprotocol. No Origin header:
/// the proxy checks it only when present ("a missing origin header indicates a non-browser
/// client", nova/console/websocketproxy.py).
pub async fn connect(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> anyhow::Result<Ws> {
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
    let connector = tls.map(tokio_tungstenite::Connector::Rustls);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(15),
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no WebSocket handshake within 15 s"))??;
    Ok(ws)
}

/// Where the link ended.
enum Ended {
    /// The BMC closed the link: stop.
    Closed,
    /// The WebSocket dropped: connect again.
    Dropped(String),
}

/// Open Nova's serial console of server `id`: a task that keeps a WebSocket to
/// nova-serialproxy up until the link is dropped. `label` names the BMC in the log.
pub fn open(
    session: Arc<Session>,
    id: String,
    label: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    stats: Arc<ConsoleStats>,
) -> ConsoleLink {
    let (out_tx, from_guest) = mpsc::channel::<Bytes>(LINK_DEPTH);
    let (to_guest, mut in_rx) = mpsc::channel::<Input>(LINK_DEPTH);
    tokio::spawn(async move {
        let mut pause = Duration::from_secs(1);
        let mut first = true;
        let mut told = false;
        loop {
            let ws = match console_url(&session, &id).await {
                Ok(url) => connect(&url, tls.clone()).await,
                Err(e) => {
                    if matches!(e, UrlError::Unavailable(_)) && !std::mem::replace(&mut told, true)
                    {
                        // Say it where the operator looks, once, not only in the BMC's log.
                        let notice = format!("\r\n[ovbmc: {e}; trying again]\r\n");
                        if out_tx.send(Bytes::from(notice)).await.is_err() {
                            return;
                        }
                    }
                    Err(anyhow::Error::new(e))
                }
            };
            let ended = match ws {
                Ok(ws) => {
                    if !std::mem::replace(&mut first, false) {
                        stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("{label}: serial console connected again");
                    } else {
                        tracing::info!("{label}: serial console connected (nova-serialproxy)");
                    }
                    let since = Instant::now();
                    let ended = pump(ws, &out_tx, &mut in_rx, &stats).await;
                    if since.elapsed() > Duration::from_secs(30) {
                        pause = Duration::from_secs(1);
                    }
                    ended
                }
                Err(e) => Ended::Dropped(format!("{e:#}")),
            };
            match ended {
                Ended::Closed => return,
                Ended::Dropped(why) => {
                    tracing::warn!(
                        "{label}: serial console lost ({why}); trying again in {pause:?}"
                    );
                }
            }
            // Wait, but end at once if the BMC closes the link meanwhile.
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = out_tx.closed() => return,
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    });
    ConsoleLink {
        from_guest,
        to_guest,
        writable: true,
    }
}

async fn pump(
    mut ws: Ws,
    out: &mpsc::Sender<Bytes>,
    input: &mut mpsc::Receiver<Input>,
    stats: &ConsoleStats,
) -> Ended {
    // A chunk read from the proxy that the BMC side has no room for yet: while it waits, the
    // socket is not read, so the proxy (and the guest) are held back instead of bytes lost.
    let mut held: Option<Bytes> = None;
    loop {
        tokio::select! {
            permit = out.reserve(), if held.is_some() => match permit {
                Ok(p) => p.send(held.take().expect("guarded")),
                Err(_) => return Ended::Closed,
            },
            msg = ws.next(), if held.is_none() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    stats.from_guest.fetch_add(b.len() as u64, Ordering::Relaxed);
                    held = Some(b);
                }
                // websockify sends only binary frames; take text as bytes all the same.
                Some(Ok(Message::Text(t))) => held = Some(Bytes::from(t.as_str().to_owned())),
                Some(Ok(Message::Close(f))) => {
                    return Ended::Dropped(format!("closed by the proxy{}", f.map(|f| format!(": {}", f.reason)).unwrap_or_default()));
                }
                Some(Ok(_)) => {} // ping/pong are answered by tungstenite
                Some(Err(e)) => return Ended::Dropped(e.to_string()),
                None => return Ended::Dropped("connection closed".into()),
            },
            inp = input.recv() => match inp {
                Some(Input::Data(b)) => {
                    let n = b.len() as u64;
                    if let Err(e) = ws.send(Message::Binary(b)).await {
                        return Ended::Dropped(e.to_string());
                    }
                    stats.to_guest.fetch_add(n, Ordering::Relaxed);
                }
                // A raw TCP serial port (libvirt `<serial type='tcp'>`) has no out-of-band
                // break; nothing to send it as.
                Some(Input::Break) => tracing::debug!("serial break not supported by Nova's serial console"),
                None => {
                    let _ = ws.close(None).await;
                    return Ended::Closed;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_read_from_either_answer_shape() {
        let new = json!({"remote_console": {"protocol": "serial", "type": "serial",
            "url": "ws://127.0.0.1:6083/?token=abc"}});
        assert_eq!(
            url_of(&new, "remote_console").as_deref(),
            Some("ws://127.0.0.1:6083/?token=abc")
        );
        let old = json!({"console": {"type": "serial", "url": "wss://p.example:6083/?token=x"}});
        assert_eq!(
            url_of(&old, "console").as_deref(),
            Some("wss://p.example:6083/?token=x")
        );
        assert_eq!(
            url_of(&json!({"console": {"url": "http://x"}}), "console"),
            None
        );
        assert_eq!(url_of(&json!({}), "console"), None);
    }
}

#[cfg(test)]
mod proxy_tests {
    //! Against the in-process fake Nova and a WebSocket server standing in for
    //! nova-serialproxy (the real proxy runs in the OpenStack lab's tests).
    use std::sync::atomic::AtomicUsize;

    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    use super::*;
    use crate::cloud::fake::Fake;
    use crate::cloud::fake_tests::{fast, session};

    const ID: &str = "00000000-0000-4000-8000-00000000000a";

    /// A proxy that greets each connection with "hello N", echoes binary frames, and drops
    /// the connection on "drop" (as a reboot does). It insists on the `binary` subprotocol
    /// being offered, and refuses text frames, as websockify does.
    async fn proxy() -> (String, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/?token=t", l.local_addr().unwrap());
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    // The callback's error type is tungstenite's own (large) response type.
                    #[allow(clippy::result_large_err)]
                    let check = |req: &Request, mut resp: Response| {
                        let offered = req.headers().get("Sec-WebSocket-Protocol");
                        assert_eq!(offered.and_then(|v| v.to_str().ok()), Some("binary"));
                        assert!(req.headers().get("Origin").is_none());
                        resp.headers_mut()
                            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
                        Ok(resp)
                    };
                    let mut ws = tokio_tungstenite::accept_hdr_async(tcp, check)
                        .await
                        .unwrap();
                    ws.send(Message::Binary(Bytes::from(format!("hello {n}"))))
                        .await
                        .unwrap();
                    while let Some(Ok(m)) = ws.next().await {
                        match m {
                            Message::Binary(b) if &b[..] == b"drop" => return,
                            Message::Binary(b) => ws.send(Message::Binary(b)).await.unwrap(),
                            Message::Text(_) => panic!("text frame"),
                            _ => {}
                        }
                    }
                });
            }
        });
        (url, conns)
    }

    async fn recv_until(link: &mut ConsoleLink, want: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        while !got.windows(want.len()).any(|w| w == want) {
            let chunk = tokio::time::timeout(Duration::from_secs(10), link.from_guest.recv())
                .await
                .expect("console output within 10 s")
                .expect("link open");
            got.extend_from_slice(&chunk);
        }
        got
    }

    #[tokio::test]
    async fn the_console_carries_bytes_and_comes_back_after_a_drop_with_a_fresh_url() {
        let f = Fake::start().await;
        f.add_server(ID, "a", "ACTIVE");
        let (url, conns) = proxy().await;
        f.lock().serial_url = Some(url);
        let s = session(&f, fast()).await;
        let stats = Arc::new(ConsoleStats::default());
        let mut link = open(s, ID.into(), "bmc a".into(), None, stats.clone());
        recv_until(&mut link, b"hello 1").await;
        link.to_guest
            .send(Input::Data(Bytes::from_static(b"echo me")))
            .await
            .unwrap();
        recv_until(&mut link, b"echo me").await;
        link.to_guest
            .send(Input::Data(Bytes::from_static(b"drop")))
            .await
            .unwrap();
        recv_until(&mut link, b"hello 2").await;
        assert_eq!(stats.reconnects.load(Ordering::Relaxed), 1);
        assert_eq!(conns.load(Ordering::SeqCst), 2);
        assert_eq!(
            f.count("remote-consoles"),
            2,
            "a fresh URL (token) for each connection"
        );
        assert_eq!(stats.to_guest.load(Ordering::Relaxed), 11);
    }

    #[tokio::test]
    async fn a_cloud_without_serial_consoles_is_told_apart_from_a_passing_failure() {
        let f = Fake::start().await;
        f.add_server(ID, "a", "ACTIVE");
        let s = session(&f, fast()).await;
        assert!(matches!(
            console_url(&s, ID).await,
            Err(UrlError::Unavailable(_))
        ));
        f.lock().serial_url = Some("ws://127.0.0.1:1/?token=x".into());
        f.inject("remote-consoles", 409, 1);
        assert!(matches!(console_url(&s, ID).await, Err(UrlError::Other(_))));
        assert_eq!(
            console_url(&s, ID).await.unwrap(),
            "ws://127.0.0.1:1/?token=x"
        );
    }
}

#[cfg(test)]
mod wss_tests {
    //! `wss://`: the console WebSocket over TLS, trusted like the cloud's HTTPS.
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    use super::*;
    use crate::cloud::tls::client_config_for;

    /// A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl
    /// command (Debian's `openssl`): (CA, server certificate, server key), or `None` where
    /// there is no openssl.
    fn test_pki(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
        let p = |f: &str| dir.join(f);
        std::fs::write(
            p("ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .ok()?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let steps: [Vec<&str>; 3] = [
            [
                &["req", "-x509"][..],
                &ec,
                &["-days", "1", "-subj", "/CN=ovbmc test CA"],
            ]
            .concat(),
            [&["req"][..], &ec, &["-subj", "/CN=127.0.0.1"]].concat(),
            vec!["x509", "-req", "-days", "1", "-CAcreateserial"],
        ];
        let files: [Vec<PathBuf>; 3] = [
            vec!["-keyout".into(), p("ca.key"), "-out".into(), p("ca.pem")],
            vec!["-keyout".into(), p("srv.key"), "-out".into(), p("srv.csr")],
            vec![
                "-in".into(),
                p("srv.csr"),
                "-CA".into(),
                p("ca.pem"),
                "-CAkey".into(),
                p("ca.key"),
                "-extfile".into(),
                p("ext"),
                "-out".into(),
                p("srv.pem"),
            ],
        ];
        for (args, files) in steps.iter().zip(&files) {
            let ok = Command::new("openssl")
                .args(args)
                .args(files)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                return None;
            }
        }
        Some((p("ca.pem"), p("srv.pem"), p("srv.key")))
    }

    /// A TLS WebSocket server greeting each connection with "hello over tls".
    async fn tls_proxy(cert: &Path, key: &Path) -> String {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("wss://{}/?token=t", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // The `binary` subprotocol chosen, as websockify chooses it when offered.
                    #[allow(clippy::result_large_err)]
                    let binary = |_: &Request, mut resp: Response| {
                        resp.headers_mut()
                            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tls, binary).await else {
                        return;
                    };
                    let _ = ws
                        .send(Message::Binary(Bytes::from_static(b"hello over tls")))
                        .await;
                    while let Some(Ok(_)) = ws.next().await {}
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn wss_is_verified_with_the_clouds_ca_bundle() {
        let dir = std::env::temp_dir().join(format!("ovbmc-wss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let Some((ca, cert, key)) = test_pki(&dir) else {
            eprintln!("SKIP wss test: no openssl command to make a certificate");
            return;
        };
        let url = tls_proxy(&cert, &key).await;
        // Trusted through the cloud's CA bundle (OS_CACERT / clouds.yaml cacert).
        let tls = client_config_for(Some(&ca), true).unwrap();
        let mut ws = connect(&url, Some(tls)).await.unwrap();
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], b"hello over tls"),
            other => panic!("{other:?}"),
        }
        // Not trusted without it: the handshake fails, nothing is read.
        let system_only = client_config_for(None, true).unwrap();
        let e = connect(&url, Some(system_only)).await.unwrap_err();
        assert!(
            format!("{e:#}").to_lowercase().contains("certificate"),
            "{e:#}"
        );
        // `verify: false` accepts it (the session warns about that at start-up).
        assert!(
            connect(&url, Some(client_config_for(None, false).unwrap()))
                .await
                .is_ok()
        );
    }
}
