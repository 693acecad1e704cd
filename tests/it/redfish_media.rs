//! Virtual media and the TaskService on the Redfish face (docs/redfish.md, "Virtual media") of
//! a running `ovbmc --backend sim --redfish`: the image served by a small HTTP server on
//! loopback; insert with the `InsertMedia` action and with the PATCH form, eject both ways,
//! the task monitor followed to its end, a one-time Cd boot booting the image, roles, bad
//! bodies (Base registry messages), an image over `--vmedia-max-mib` and an unreachable URL
//! ending the task in `Exception`; and sushy, as Ironic's redfish-virtual-media boot drives it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::redfish::{Face, basic, message_id, python_with_sushy, start};
use crate::support::ScratchDir;

/// An HTTP server on a loopback address of its own, answering every GET with `size` bytes
/// (Content-Length declared); stops when dropped.
pub(crate) struct ImageServer {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    /// How many requests it answered.
    pub(crate) hits: Arc<AtomicUsize>,
}

impl ImageServer {
    pub(crate) fn start(size: usize) -> Self {
        let l = TcpListener::bind((crate::support::unique_loopback(), 0)).expect("bind");
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (stop.clone(), hits.clone());
        std::thread::spawn(move || {
            let body = vec![0x5au8; size];
            for c in l.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut c) = c else { continue };
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                h.fetch_add(1, Ordering::Relaxed);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                     Content-Length: {size}\r\nConnection: close\r\n\r\n"
                );
                let _ = c.write_all(head.as_bytes());
                let _ = c.write_all(&body);
            }
        });
        Self { addr, stop, hits }
    }

    pub(crate) fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// A URL on a loopback port nothing listens on (bound, then closed).
pub(crate) fn unreachable_url() -> String {
    let addr = crate::support::unique_loopback();
    let port = TcpListener::bind((addr, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    format!("http://{addr}:{port}/gone.iso")
}

/// The CD of the face's system (its manager from `Links.ManagedBy`).
pub(crate) fn cd(f: &Face) -> String {
    let sys = f.get(&f.system);
    let m = sys["Links"]["ManagedBy"][0]["@odata.id"]
        .as_str()
        .expect("Links.ManagedBy")
        .to_string();
    let c = f.get(&format!("{m}/VirtualMedia"));
    assert_eq!(c["Members@odata.count"], 1, "{c}");
    c["Members"][0]["@odata.id"].as_str().unwrap().to_string()
}

/// Header `name` (any case) of a response head, trimmed.
pub(crate) fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Follow a 202's task monitor until it answers 200; the Task it ends with. Bounded polling
/// (no time asserted): the sim's insert is one local fetch.
pub(crate) fn follow(f: &Face, head: &str) -> Value {
    let monitor = header(head, "location").expect("Location: the task monitor");
    assert!(
        monitor.starts_with("/redfish/v1/TaskService/TaskMonitors/"),
        "{monitor}"
    );
    for _ in 0..300 {
        let (s, h, v) = f.req("GET", &monitor, &basic(), None);
        match s {
            202 => {
                assert_eq!(v["TaskState"], "Running", "{v}");
                assert!(header(&h, "retry-after").is_some(), "{h}");
                std::thread::sleep(Duration::from_millis(50));
            }
            200 => {
                // The Task resource says the same.
                let id = v["Id"].as_str().expect("the task's Id");
                let t = f.get(&format!("/redfish/v1/TaskService/Tasks/{id}"));
                assert_eq!(t["TaskState"], v["TaskState"], "{t}");
                return v;
            }
            s => panic!("task monitor {monitor}: {s} {v}\n{}", f.bmc.log()),
        }
    }
    panic!("task monitor {monitor} never ended\n{}", f.bmc.log());
}

pub(crate) fn insert_action(cd: &str) -> String {
    format!("{cd}/Actions/VirtualMedia.InsertMedia")
}

fn eject_action(cd: &str) -> String {
    format!("{cd}/Actions/VirtualMedia.EjectMedia")
}

/// Action and PATCH, insert and eject, the task monitor, and a one-time Cd boot that boots
/// the inserted image.
#[test]
fn redfish_media_insert_and_eject_by_action_and_patch() {
    let dir = ScratchDir::new("redfish-media");
    let img = ImageServer::start(64 * 1024);
    let f = start(dir.path(), &[]);
    let cd = cd(&f);
    let v = f.get(&cd);
    assert_eq!(
        (v["Inserted"].clone(), v["Image"].clone()),
        (false.into(), Value::Null)
    );
    assert!(
        v["MediaTypes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "CD"),
        "{v}"
    );
    let svc = f.get("/redfish/v1/TaskService");
    assert_eq!(
        svc["Tasks"]["@odata.id"], "/redfish/v1/TaskService/Tasks",
        "{svc}"
    );

    // The action, with every parameter Ironic may send.
    let url = img.url("boot.iso");
    let body = format!(
        r#"{{"Image":"{url}","Inserted":true,"WriteProtected":true,"TransferMethod":"Stream","TransferProtocolType":"HTTP"}}"#
    );
    let (s, h, v) = f.req("POST", &insert_action(&cd), &basic(), Some(&body));
    assert_eq!(s, 202, "{v}\n{}", f.bmc.log());
    let t = follow(&f, &h);
    assert_eq!(t["TaskState"], "Completed", "{t}");
    assert!(
        img.hits.load(Ordering::Relaxed) >= 1,
        "the image was never fetched"
    );
    let v = f.get(&cd);
    assert_eq!(v["Image"], url.as_str(), "{v}");
    assert_eq!(v["ImageName"], "boot.iso", "{v}");
    assert_eq!(v["Inserted"], true, "{v}");
    assert_eq!(v["ConnectedVia"], "URI", "{v}");
    let tasks = f.get("/redfish/v1/TaskService/Tasks");
    assert!(
        tasks["Members@odata.count"].as_u64().unwrap() >= 1,
        "{tasks}"
    );

    // Boot from it once: the sim boots the inserted image.
    let boot = r#"{"Boot":{"BootSourceOverrideTarget":"Cd","BootSourceOverrideEnabled":"Once"}}"#;
    let (s, _, v) = f.req("PATCH", &f.system, &basic(), Some(boot));
    assert!(s == 200 || s == 204, "{s} {v}");
    let reset = format!("{}/Actions/ComputerSystem.Reset", f.system);
    let (s, _, v) = f.req("POST", &reset, &basic(), Some(r#"{"ResetType":"On"}"#));
    assert!(s == 200 || s == 204, "{s} {v}");
    let log = f.bmc.log();
    assert!(
        log.contains(&format!("booting from the virtual CD {url}")),
        "the sim did not boot the media:\n{log}"
    );

    // Eject with the action (no body, as sushy posts it).
    let (s, _, v) = f.req("POST", &eject_action(&cd), &basic(), None);
    assert_eq!(s, 204, "{v}");
    let v = f.get(&cd);
    assert_eq!(
        (v["Inserted"].clone(), v["Image"].clone()),
        (false.into(), Value::Null)
    );

    // The PATCH form, with the ETag as sushy sends it.
    let (_, h, _) = f.req("GET", &cd, &basic(), None);
    let etag = header(&h, "etag").expect("an ETag on the CD");
    let url2 = img.url("second.iso");
    let if_match = {
        let mut a = basic();
        a.extend(["-H".into(), format!("If-Match: {etag}")]);
        a
    };
    let body = format!(r#"{{"Image":"{url2}","Inserted":true,"WriteProtected":true}}"#);
    let (s, h, v) = f.req("PATCH", &cd, &if_match, Some(&body));
    assert_eq!(s, 202, "{v}");
    assert_eq!(follow(&f, &h)["TaskState"], "Completed");
    assert_eq!(f.get(&cd)["Image"], url2.as_str());
    // A stale ETag is refused.
    let (s, _, v) = f.req("PATCH", &cd, &if_match, Some(r#"{"Image":null}"#));
    assert_eq!(
        (s, message_id(&v).as_str()),
        (412, "Base.1.22.PreconditionFailed")
    );
    // Eject by PATCH, as sushy does it.
    let (s, _, v) = f.req(
        "PATCH",
        &cd,
        &basic(),
        Some(r#"{"Image":null,"Inserted":false}"#),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["Inserted"].clone(), v["Image"].clone()),
        (false.into(), Value::Null)
    );
}

/// ReadOnly (IPMI USER) may read the CD but not change it (403); Operator may.
#[test]
fn redfish_media_roles() {
    let img = ImageServer::start(1024);
    let url = img.url("r.iso");
    let body = format!(r#"{{"Image":"{url}"}}"#);
    let dir = ScratchDir::new("redfish-media-ro");
    let f = start(dir.path(), &["--user-privilege", "USER"]);
    let cd = cd(&f);
    for (m, p, b) in [
        ("POST", insert_action(&cd), Some(body.as_str())),
        ("POST", eject_action(&cd), None),
        ("PATCH", cd.clone(), Some(body.as_str())),
    ] {
        let (s, _, v) = f.req(m, &p, &basic(), b);
        assert_eq!(
            (s, message_id(&v).as_str()),
            (403, "Base.1.22.InsufficientPrivilege"),
            "{m} {p}"
        );
    }
    assert_eq!(f.get(&cd)["Image"], Value::Null);
    assert_eq!(img.hits.load(Ordering::Relaxed), 0);
    drop(f);

    let dir = ScratchDir::new("redfish-media-op");
    let f = start(dir.path(), &["--user-privilege", "OPERATOR"]);
    let cd = self::cd(&f);
    let (s, h, v) = f.req("POST", &insert_action(&cd), &basic(), Some(&body));
    assert_eq!(s, 202, "{v}");
    assert_eq!(follow(&f, &h)["TaskState"], "Completed");
    let (s, _, _) = f.req("POST", &eject_action(&cd), &basic(), None);
    assert_eq!(s, 204);
}

/// Bad bodies: 400 with the Base registry message (and a log line saying why), 413 for a
/// body over the limit; an image over `--vmedia-max-mib` and an unreachable URL: the task
/// ends in `Exception` with a message.
#[test]
fn redfish_media_bad_bodies_large_images_and_unreachable_urls() {
    let dir = ScratchDir::new("redfish-media-bad");
    let f = start(dir.path(), &["--vmedia-max-mib", "1"]);
    let cd = cd(&f);
    let ins = insert_action(&cd);
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "POST",
            &ins,
            r#"{"Inserted":true}"#,
            400,
            "ActionParameterMissing",
        ),
        (
            "POST",
            &ins,
            r#"{"Image":"http://127.0.0.1/a.iso","TransferMethod":"Carrier pigeon"}"#,
            400,
            "ActionParameterValueNotInList",
        ),
        (
            "POST",
            &ins,
            r#"{"Image":"nfs://h/a.iso"}"#,
            400,
            "ActionParameterValueFormatError",
        ),
        (
            "POST",
            &ins,
            r#"{"Image":"file:///etc/passwd"}"#,
            400,
            "ActionParameterValueFormatError",
        ),
        (
            "POST",
            &ins,
            r#"{"Image":42}"#,
            400,
            "ActionParameterValueTypeError",
        ),
        ("POST", &ins, "not json", 400, "MalformedJSON"),
        (
            "PATCH",
            &cd,
            r#"{"Image":"ftp://h/a.iso"}"#,
            400,
            "PropertyValueFormatError",
        ),
        (
            "PATCH",
            &cd,
            r#"{"MediaTypes":["DVD"]}"#,
            400,
            "PropertyNotWritable",
        ),
        (
            "POST",
            &eject_action(&cd),
            r#"{"Image":"x"}"#,
            400,
            "ActionParameterUnknown",
        ),
    ];
    for (m, p, b, want, id) in cases {
        let (s, _, v) = f.req(m, p, &basic(), Some(b));
        assert_eq!(
            (s, message_id(&v)),
            (*want, format!("Base.1.22.{id}")),
            "{m} {p} {b}: {v}"
        );
        let info = &v["error"]["@Message.ExtendedInfo"][0];
        assert!(
            info["Message"].as_str().is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    }
    let log = f.bmc.log();
    assert!(
        log.contains("redfish: virtual media request refused"),
        "no log line for the refused bodies:\n{log}"
    );
    // A body over the service's limit (16 KiB): 413, before it is parsed.
    let big = format!(
        r#"{{"Image":"http://127.0.0.1/{}.iso"}}"#,
        "a".repeat(20 * 1024)
    );
    let (s, _, v) = f.req("POST", &ins, &basic(), Some(&big));
    assert_eq!(
        (s, message_id(&v).as_str()),
        (413, "Base.1.22.PayloadTooLarge")
    );

    // An image over --vmedia-max-mib 1: the task fails, the slot stays empty.
    let img = ImageServer::start(2 * 1024 * 1024);
    let body = format!(r#"{{"Image":"{}"}}"#, img.url("big.iso"));
    let (s, h, v) = f.req("POST", &ins, &basic(), Some(&body));
    assert_eq!(s, 202, "{v}");
    let t = follow(&f, &h);
    assert_eq!(t["TaskState"], "Exception", "{t}");
    let text = t["Messages"].to_string();
    assert!(text.contains("larger than the limit of 1 MiB"), "{t}");
    assert_eq!(f.get(&cd)["Image"], Value::Null);

    // Nothing listening at the URL: the task fails with the reason.
    let body = format!(r#"{{"Image":"{}"}}"#, unreachable_url());
    let (s, h, v) = f.req("POST", &ins, &basic(), Some(&body));
    assert_eq!(s, 202, "{v}");
    let t = follow(&f, &h);
    assert_eq!(t["TaskState"], "Exception", "{t}");
    assert!(t["Messages"].to_string().contains("fetching failed"), "{t}");
    assert_eq!(f.get(&cd)["Image"], Value::Null);
    let log = f.bmc.log();
    assert!(
        log.contains("virtual media insert failed"),
        "no log line for the failed insert:\n{log}"
    );
}

/// sushy's `insert_media`/`eject_media`, with the actions and with the PATCH form.
#[test]
fn redfish_media_sushy_insert_and_eject() {
    let Some(py) = python_with_sushy() else {
        return;
    };
    let img = ImageServer::start(8 * 1024);
    let dir = ScratchDir::new("redfish-media-sushy");
    let f = start(dir.path(), &[]);
    let r = f.sushy(
        &py,
        "sushy_vmedia.py",
        &[img.url("sushy.iso")],
        Duration::from_secs(120),
    );
    assert!(r.success(), "sushy vmedia failed:\n{r}\n{}", f.bmc.log());
    assert!(r.stdout.contains("OK"), "{r}");
    assert!(
        img.hits.load(Ordering::Relaxed) >= 2,
        "two inserts, two fetches"
    );
}

/// An `openssl s_server -WWW` on a loopback address of its own serving `dir` over HTTPS with
/// a certificate for that address signed by a CA made here (`dir/ca.pem`); killed on drop.
struct TlsImageServer {
    child: std::process::Child,
    url: String,
    ca: std::path::PathBuf,
}

impl TlsImageServer {
    fn start(dir: &std::path::Path, name: &str, size: usize) -> Option<Self> {
        let openssl = crate::support::find_program("openssl")?;
        let addr = crate::support::unique_loopback();
        let port = crate::redfish::free_tcp_port(addr);
        std::fs::write(dir.join(name), vec![0x5au8; size]).unwrap();
        std::fs::write(
            dir.join("leaf.ext"),
            format!(
                "subjectAltName=IP:{addr}\nbasicConstraints=CA:FALSE\n\
                 extendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
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
                &["-keyout", "ca.key", "-out", "ca.pem"],
            ]
            .concat()
            .into_iter()
            .chain(["-subj", "/CN=ovbmc test CA", "-days", "2"])
            .collect(),
            [
                &["req"][..],
                &ec,
                &["-keyout", "leaf.key", "-out", "leaf.csr"],
            ]
            .concat()
            .into_iter()
            .chain(["-subj", "/CN=ovbmc test image server"])
            .collect(),
            vec![
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "leaf.pem",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
            ],
        ];
        for args in &steps {
            let st = std::process::Command::new(&openssl)
                .args(args)
                .current_dir(dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("openssl");
            assert!(st.success(), "openssl {args:?}");
        }
        let child = std::process::Command::new(&openssl)
            .args([
                "s_server", "-quiet", "-WWW", "-cert", "leaf.pem", "-key", "leaf.key",
            ])
            .arg("-accept")
            .arg(format!("{addr}:{port}"))
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        for _ in 0..200 {
            if TcpStream::connect((addr, port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Some(Self {
            child,
            url: format!("https://{addr}:{port}/{name}"),
            ca: dir.join("ca.pem"),
        })
    }
}

impl Drop for TlsImageServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `https://` image is fetched with its certificate verified: trusted (the image server's
/// CA in `SSL_CERT_FILE`, which the platform verifier reads on Linux) the insert completes;
/// not trusted (the system's store) the task ends in Exception naming the certificate.
#[test]
fn redfish_media_https_image_is_verified() {
    let dir = ScratchDir::new("redfish-media-https");
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let Some(srv) = TlsImageServer::start(&www, "tls.iso", 64 * 1024) else {
        crate::support::skip("redfish", "no openssl for the HTTPS image server");
        return;
    };
    let body = format!(r#"{{"Image":"{}"}}"#, srv.url);
    let insert = |f: &Face| {
        let cd = cd(f);
        let (s, h, v) = f.req("POST", &insert_action(&cd), &basic(), Some(&body));
        assert_eq!(s, 202, "{v}");
        (cd, follow(f, &h))
    };

    let addr = crate::support::unique_loopback();
    let trusting = crate::redfish::start_cfg(
        &dir.path().join("a"),
        &[],
        addr,
        crate::redfish::free_tcp_port(addr),
        crate::support::BmcConfig {
            env: vec![("SSL_CERT_FILE".to_string(), srv.ca.display().to_string())],
            ..Default::default()
        },
    );
    let (cd_a, t) = insert(&trusting);
    assert_eq!(t["TaskState"], "Completed", "{t}\n{}", trusting.bmc.log());
    assert_eq!(trusting.get(&cd_a)["Image"], srv.url.as_str());

    let distrusting = start(&dir.path().join("b"), &[]);
    let (cd_b, t) = insert(&distrusting);
    assert_eq!(t["TaskState"], "Exception", "{t}");
    let text = t["Messages"].to_string().to_lowercase();
    println!("untrusted https image: {}", t["Messages"]);
    assert!(text.contains("certificate"), "{t}");
    assert_eq!(distrusting.get(&cd_b)["Image"], Value::Null);
}
