//! `/metrics` and `/healthz` on the shared HTTP stack ([`crate::http`]).
//!
//! `GET` and `HEAD` (RFC 9110 §9.3.2: the same head as `GET`, no body; hyper leaves the body
//! out and keeps its `Content-Length`) on the two paths; `405` with `Allow` for other methods
//! there, `404` elsewhere. Request heads hyper cannot parse — including a version other than
//! HTTP/1.0 and HTTP/1.1, such as `HTTP/1.9` — are answered `400` by hyper itself and never
//! reach this module. Query strings are ignored.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, ETAG, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::{Metrics, Pages};
use crate::http::{self, Body, Limits, text};

/// The Prometheus text format's content type (exposition format 0.0.4).
const PROMETHEUS: HeaderValue =
    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");

/// BMC addresses named in a `503` body; beyond, the count says the rest.
const NAMED_DOWN: usize = 8;

/// Bind the metrics listener (at start-up, with the BMC sockets: a bad address is an error
/// before anything serves).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    http::bind(addr, "metrics").await
}

/// Serve `/metrics` and `/healthz` on `listener` until `shutdown`, with the default
/// [`Limits`].
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let face = Face::new(metrics);
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let face = face.clone();
        async move { Ok::<_, Infallible>(face.answer(&req).await) }
    });
    http::serve("metrics", listener, Limits::default(), service, shutdown).await;
}

/// The metrics face: the registry and its page cache.
#[derive(Clone, Debug)]
pub struct Face {
    metrics: Arc<Metrics>,
    pages: Arc<Pages>,
}

impl Face {
    /// The face of `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            pages: Pages::new(metrics.clone()),
            metrics,
        }
    }

    /// The answer to `req` (only its method and path are read).
    pub async fn answer<B>(&self, req: &Request<B>) -> Response<Body> {
        let path = req.uri().path();
        if !matches!(path, "/metrics" | "/healthz") {
            return text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics or /healthz\n",
            );
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if path == "/healthz" {
            return self.health();
        }
        match self.pages.get().await {
            Ok(page) => {
                let etag = self.pages.etag(&page);
                let mut r = Response::new(Full::new(page.body));
                r.headers_mut().insert(CONTENT_TYPE, PROMETHEUS);
                if let Ok(v) = HeaderValue::from_str(&etag) {
                    r.headers_mut().insert(ETAG, v);
                }
                r
            }
            Err(e) => {
                error!(error = %e, "metrics: rendering the page failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n")
            }
        }
    }

    fn health(&self) -> Response<Body> {
        let health = self.metrics.health();
        if !health.serving() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "not serving\n");
        }
        let down = health.down();
        if down.is_empty() {
            return text(StatusCode::OK, "ok\n");
        }
        let mut body = format!(
            "{} of {} BMCs down:",
            down.len(),
            self.metrics.bmcs_configured().max(down.len())
        );
        for a in down.iter().take(NAMED_DOWN) {
            let _ = write!(body, " {a}");
        }
        if down.len() > NAMED_DOWN {
            let _ = write!(body, " and {} more", down.len() - NAMED_DOWN);
        }
        body.push('\n');
        text(StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    async fn ask(face: &Face, method: &str, path: &str) -> (StatusCode, String, Response<Body>) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let r = face.answer(&req).await;
        let (parts, body) = r.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        (
            parts.status,
            text,
            Response::from_parts(parts, Full::default()),
        )
    }

    #[tokio::test]
    async fn routes() {
        let m = Metrics::new();
        let face = Face::new(m.clone());
        assert_eq!(
            ask(&face, "GET", "/healthz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        m.set_serving(true);
        let (s, body, _) = ask(&face, "GET", "/healthz").await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "ok\n"));
        assert_eq!(ask(&face, "HEAD", "/healthz").await.0, StatusCode::OK);
        let (s, body, r) = ask(&face, "GET", "/metrics?x=1").await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.contains("# TYPE ovbmc_serving gauge"), "{body}");
        assert_eq!(r.headers()[CONTENT_TYPE], PROMETHEUS);
        assert!(r.headers().contains_key(ETAG));
        assert_eq!(ask(&face, "HEAD", "/metrics").await.0, StatusCode::OK);
        let (s, _, r) = ask(&face, "POST", "/metrics").await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        assert_eq!(ask(&face, "GET", "/nope").await.0, StatusCode::NOT_FOUND);
        assert_eq!(ask(&face, "DELETE", "/nope").await.0, StatusCode::NOT_FOUND);
    }

    /// The supervision hook: a BMC marked down turns `/healthz` to 503, naming it; marking it
    /// up (or removing it from the fleet) turns it back.
    #[tokio::test]
    async fn healthz_reports_bmcs_marked_down() {
        let m = Metrics::new();
        m.set_serving(true);
        let a: SocketAddr = "127.0.0.1:623".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:623".parse().unwrap();
        m.bmc(a, "node-a");
        m.bmc(b, "node-b");
        let face = Face::new(m.clone());
        assert!(m.health().set_down(b));
        assert!(!m.health().set_down(b));
        let (s, body, _) = ask(&face, "GET", "/healthz").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "1 of 2 BMCs down: 127.0.0.2:623\n");
        assert!(m.health().set_up(b));
        assert_eq!(ask(&face, "GET", "/healthz").await.0, StatusCode::OK);
        m.health().set_down(a);
        m.remove(a);
        assert_eq!(ask(&face, "GET", "/healthz").await.0, StatusCode::OK);
        // Many down: eight named, the rest counted.
        for i in 0..10u8 {
            m.health().set_down(SocketAddr::from(([127, 0, 1, i], 623)));
        }
        let (_, body, _) = ask(&face, "GET", "/healthz").await;
        assert!(
            body.starts_with("10 of 10 BMCs down: 127.0.1.0:623 "),
            "{body}"
        );
        assert!(body.ends_with(" and 2 more\n"), "{body}");
    }
}
