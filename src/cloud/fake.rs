//! An in-process fake Keystone + Nova + Glance for unit tests: a scriptable state machine with
//! injectable failures, served on 127.0.0.1 by the daemon's own HTTP stack ([`crate::http`]).

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::{self, Limits};

/// A scripted failure: the next `times` requests whose "METHOD path" contains `matches` get
/// `status` (or, with `delay`, no answer for that long).
#[derive(Clone, Debug)]
pub struct Inject {
    pub matches: String,
    pub status: u16,
    pub body: String,
    pub delay: Option<Duration>,
    pub times: u32,
}

#[derive(Debug, Default)]
pub struct St {
    pub servers: BTreeMap<String, Value>,
    /// "METHOD path" of every request.
    pub log: Vec<String>,
    pub valid_tokens: HashSet<String>,
    pub issued: u32,
    pub injects: Vec<Inject>,
    /// After an action the task stays set for this many list requests.
    pub task_lists: u32,
    /// id → (list requests left, final status, final power_state)
    pub pending: BTreeMap<String, (u32, String, i64)>,
    /// Token lifetime in seconds.
    pub token_life: u64,
    /// What `POST /servers/{id}/remote-consoles` answers: the URL, or (None) 400 as Nova
    /// does with `[serial_console] enabled=False` (ConsoleTypeUnavailable).
    pub serial_url: Option<String>,
    /// The console log every server shares (`os-getConsoleOutput`).
    pub console_log: String,
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    pub st: Arc<Mutex<St>>,
}

impl Fake {
    pub async fn start() -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let st = Arc::new(Mutex::new(St {
            token_life: 3600,
            ..St::default()
        }));
        let f = Fake { addr, st };
        let g = f.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let g = g.clone();
            async move { Ok::<_, Infallible>(g.answer(req).await) }
        });
        // Runs until the test's runtime ends.
        tokio::spawn(http::serve(
            "fake cloud",
            l,
            Limits::default(),
            service,
            CancellationToken::new(),
        ));
        f
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, St> {
        self.st.lock().unwrap()
    }

    pub fn add_server(&self, id: &str, name: &str, status: &str) {
        let power = if status == "SHUTOFF" { 4 } else { 1 };
        self.lock().servers.insert(
            id.into(),
            json!({"id": id, "name": name, "status": status, "OS-EXT-STS:task_state": null,
                   "OS-EXT-STS:power_state": power, "metadata": {}, "image": {"id": "img"}}),
        );
    }

    pub fn inject(&self, matches: &str, status: u16, times: u32) {
        self.lock().injects.push(Inject {
            matches: matches.into(),
            status,
            body: json!({"conflictingRequest": {"message": format!("injected {status}"), "code": status}}).to_string(),
            delay: None,
            times,
        });
    }

    pub fn inject_delay(&self, matches: &str, delay: Duration, times: u32) {
        self.lock().injects.push(Inject {
            matches: matches.into(),
            status: 200,
            body: String::new(),
            delay: Some(delay),
            times,
        });
    }

    pub fn count(&self, what: &str) -> usize {
        self.lock().log.iter().filter(|l| l.contains(what)).count()
    }

    pub fn server(&self, id: &str) -> Value {
        self.lock().servers[id].clone()
    }

    pub fn clouds_yaml(&self) -> String {
        format!(
            "clouds:\n  fake:\n    auth:\n      auth_url: http://{}/identity\n      username: u\n      password: p\n      project_name: p\n    region_name: R\n",
            self.addr
        )
    }

    /// One request through [`Fake::handle`]: the method, the target as sent (path and
    /// query), the header fields (lower-case names) and the body as text.
    async fn answer(&self, req: Request<Incoming>) -> Response<http::Body> {
        let method = req.method().to_string();
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let headers: BTreeMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_string(), v)
            })
            .collect();
        let body = match req.into_body().collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => String::new(),
        };
        let (status, extra, resp) = self.handle(&method, &target, &headers, &body).await;
        let mut r = Response::new(Full::new(Bytes::from(resp)));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for line in extra.split("\r\n") {
            if let Some((k, v)) = line.split_once(':')
                && let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.trim().as_bytes()),
                    HeaderValue::from_str(v.trim()),
                )
            {
                h.insert(k, v);
            }
        }
        r
    }

    async fn handle(
        &self,
        method: &str,
        path: &str,
        headers: &BTreeMap<String, String>,
        body: &str,
    ) -> (u16, String, String) {
        let line = format!("{method} {path}");
        let inject = {
            let mut st = self.lock();
            st.log.push(line.clone());
            let hit = st
                .injects
                .iter_mut()
                .find(|i| i.times > 0 && line.contains(&i.matches));
            hit.map(|i| {
                i.times -= 1;
                i.clone()
            })
        };
        if let Some(i) = inject {
            match i.delay {
                Some(d) => tokio::time::sleep(d).await,
                None => return (i.status, String::new(), i.body),
            }
        }
        if method == "POST" && path == "/identity/v3/auth/tokens" {
            let v: Value = serde_json::from_str(body).unwrap_or_default();
            let pw = &v["auth"]["identity"]["password"]["user"]["password"];
            if pw != "p" {
                return (
                    401,
                    String::new(),
                    r#"{"error":{"message":"bad","code":401}}"#.into(),
                );
            }
            let mut st = self.lock();
            st.issued += 1;
            let tok = format!("tok{}", st.issued);
            st.valid_tokens.insert(tok.clone());
            let exp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + st.token_life;
            let days = exp / 86400;
            let secs = exp % 86400;
            let (y, m, d) = civil(days as i64);
            let expires = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000000Z",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            );
            let base = format!("http://{}", self.addr);
            let resp = json!({"token": {"expires_at": expires, "catalog": [
                {"type": "compute", "endpoints": [
                    {"interface": "public", "region": "Other", "url": "http://192.0.2.1/nope"},
                    {"interface": "public", "region": "R", "url": format!("{base}/compute/v2.1/")}]},
                {"type": "image", "endpoints": [
                    {"interface": "public", "region": "R", "url": format!("{base}/image")}]}]}});
            return (201, format!("x-subject-token: {tok}\r\n"), resp.to_string());
        }
        let tok = headers.get("x-auth-token").cloned().unwrap_or_default();
        if !self.lock().valid_tokens.contains(&tok) {
            return (
                401,
                String::new(),
                r#"{"error":{"message":"auth","code":401}}"#.into(),
            );
        }
        if method == "GET" && path == "/compute/v2.1/" {
            return (
                200,
                String::new(),
                json!({"version": {"id": "v2.1", "version": "2.104", "min_version": "2.1"}})
                    .to_string(),
            );
        }
        if method == "GET" && path == "/compute/v2.1/servers/detail" {
            let mut st = self.lock();
            let done: Vec<String> = st
                .pending
                .iter_mut()
                .filter_map(|(id, p)| {
                    if p.0 == 0 {
                        Some(id.clone())
                    } else {
                        p.0 -= 1;
                        None
                    }
                })
                .collect();
            for id in done {
                if let Some((_, status, power)) = st.pending.remove(&id)
                    && let Some(s) = st.servers.get_mut(&id)
                {
                    s["status"] = json!(status);
                    s["OS-EXT-STS:power_state"] = json!(power);
                    s["OS-EXT-STS:task_state"] = Value::Null;
                }
            }
            let servers: Vec<Value> = st.servers.values().cloned().collect();
            return (
                200,
                String::new(),
                json!({ "servers": servers }).to_string(),
            );
        }
        if let Some(rest) = path.strip_prefix("/compute/v2.1/servers/") {
            let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
            let v: Value = serde_json::from_str(body).unwrap_or_default();
            let mut st = self.lock();
            let task_lists = st.task_lists;
            let (serial_url, console_log) = (st.serial_url.clone(), st.console_log.clone());
            let Some(s) = st.servers.get_mut(id) else {
                return (
                    404,
                    String::new(),
                    r#"{"itemNotFound":{"message":"nf"}}"#.into(),
                );
            };
            if what == "metadata" && method == "POST" {
                if s["status"] == "RESCUE" {
                    return (
                        409,
                        String::new(),
                        r#"{"conflictingRequest":{"message":"rescued"}}"#.into(),
                    );
                }
                if let Some(m) = v["metadata"].as_object() {
                    for (k, val) in m {
                        s["metadata"][k] = val.clone();
                    }
                }
                return (
                    200,
                    String::new(),
                    json!({"metadata": s["metadata"]}).to_string(),
                );
            }
            if what == "remote-consoles" && method == "POST" {
                return match &serial_url {
                    Some(url) => (
                        200,
                        String::new(),
                        json!({"remote_console": {"protocol": "serial", "type": "serial", "url": url}})
                            .to_string(),
                    ),
                    None => (
                        400,
                        String::new(),
                        r#"{"badRequest":{"message":"Unavailable console type serial.","code":400}}"#
                            .into(),
                    ),
                };
            }
            if what == "action" && v.get("os-getConsoleOutput").is_some() {
                // The last `length` lines (all when null), as nova/compute/api.py does.
                let n = v["os-getConsoleOutput"]["length"]
                    .as_u64()
                    .map(|n| n as usize);
                let lines: Vec<&str> = console_log.split_inclusive('\n').collect();
                let from = n.map_or(0, |n| lines.len().saturating_sub(n));
                let output: String = lines[from..].concat();
                return (200, String::new(), json!({ "output": output }).to_string());
            }
            if what == "action" {
                if !s["OS-EXT-STS:task_state"].is_null() {
                    return (
                        409,
                        String::new(),
                        r#"{"conflictingRequest":{"message":"task"}}"#.into(),
                    );
                }
                let status = s["status"].as_str().unwrap_or_default().to_string();
                let (ok, task, fin, power) = match v
                    .as_object()
                    .and_then(|o| o.keys().next())
                    .map(String::as_str)
                {
                    Some("os-start") => (status == "SHUTOFF", "powering-on", "ACTIVE", 1),
                    Some("os-stop") => (status == "ACTIVE", "powering-off", "SHUTOFF", 4),
                    Some("reboot") => (status != "RESCUE", "rebooting_hard", "ACTIVE", 1),
                    Some("rescue") => (status != "RESCUE", "rescuing", "RESCUE", 1),
                    Some("unrescue") => (status == "RESCUE", "unrescuing", "ACTIVE", 1),
                    Some("rebuild") => (
                        status != "RESCUE",
                        "rebuilding",
                        status.as_str(),
                        if status == "SHUTOFF" { 4 } else { 1 },
                    ),
                    Some("trigger_crash_dump") => {
                        return (202, String::new(), String::new());
                    }
                    _ => (false, "", "", 0),
                };
                if !ok {
                    return (
                        409,
                        String::new(),
                        r#"{"conflictingRequest":{"message":"state"}}"#.into(),
                    );
                }
                let fin = fin.to_string();
                if task_lists == 0 {
                    s["status"] = json!(fin);
                    s["OS-EXT-STS:power_state"] = json!(power);
                } else {
                    s["OS-EXT-STS:task_state"] = json!(task);
                    st.pending.insert(id.to_string(), (task_lists, fin, power));
                }
                return (202, String::new(), String::new());
            }
        }
        (
            404,
            String::new(),
            r#"{"itemNotFound":{"message":"no route"}}"#.into(),
        )
    }
}

/// Civil date from days since 1970-01-01 (Howard Hinnant).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
