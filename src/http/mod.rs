//! The one HTTP stack of ovbmc: every face it shows over TCP (`/metrics` and `/healthz`, see
//! [`crate::metrics::http`]; Redfish, see [`crate::redfish`]) is a hyper 1.x `Service` handed
//! to [`serve`] or [`serve_tls`].
//!
//! hyper parses and writes HTTP/1.1 (request heads, keep-alive, `HEAD`, automatic 400/431
//! answers to malformed requests). What hyper leaves to the server is here, shared by every
//! face: the accept loop, a bound on connections with idle and slow ones shed first, the
//! header-read and per-request timeouts, and shutdown (see [`Limits`] and `server.rs`).
//!
//! # Adding a face
//! A face is any `hyper::service::Service<Request<Incoming>>` that is `Clone`; each face gets
//! its own listener and its own [`Limits`]. Plain hyper is enough for two fixed paths (a `match`
//! on the path). A face that needs a router, extractors and JSON (Redfish) can build an axum
//! `Router` and mount it here unchanged through hyper-util's `service::TowerToHyperService`
//! (its `service` feature): the connection policy stays in this module either way.
//! TLS goes between accept and hyper: [`serve_tls`] wraps each stream in the connection task
//! with a `tokio_rustls::TlsAcceptor`, the handshake bounded by the header-read timeout and
//! sheddable like an idle connection. Every request carries the client's address as a
//! [`Peer`] extension.

mod server;

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::net::TcpListener;

pub use server::{Limits, Peer, serve, serve_tls};

/// The body of every answer built here: one buffer, sent as it is (a shared `Bytes` page is
/// written to the socket without a copy).
pub type Body = Full<Bytes>;

/// `text/plain; charset=utf-8`.
pub const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// A plain-text answer.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, TEXT);
    r
}

/// Bind a face's listener (at start-up, with the BMC sockets: a bad address is an error before
/// anything serves). `what` names the face in the error.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::Error::new(e).context(format!("cannot listen for {what} on TCP {addr}"))
    })
}
