//! Redfish virtual media on the Nova backend, end to end against the lab's real Keystone,
//! Glance and Nova (fake virt driver; `tests/lab/openstack`, server `baremetal_1`): InsertMedia
//! of an ISO served from a loopback HTTP server makes a Glance image tagged `ovbmc-vmedia`
//! (checked with the lab's `openstack` CLI); a boot override `Cd` once and a reset rescue the
//! instance with that image (the lab hypervisor names the rescue image and its
//! `hw_rescue_device` in the console log, which `openstack console log show` prints); the next
//! reset boots the disk again (ACTIVE); EjectMedia of a rescued instance unrescues it and
//! deletes the image; an image a previous run left is deleted when ovbmc starts. With
//! `--vmedia-import web-download`, Glance fetches the ISO itself. SKIPs (as the nova tier does)
//! without the lab.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::nova::{BAREMETAL_1, hold, runtime, settled, until};
use crate::redfish::Client;
use crate::support::{LabCli, PASSWORD, ScratchDir, lab_env};
use ipmi_proto::machine::BootDevice;
use ovbmc::backend::{BootFlags, Machine as _, PowerAction};

const INSTANCE: &str = "baremetal_1";
/// How long a lab step may take before the test fails (the lab's take seconds).
const DEADLINE: Duration = Duration::from_secs(120);

/// The lab's `openstack` CLI, JSON output.
fn openstack(clouds: &Path, args: &[&str]) -> Value {
    LabCli::with(clouds).json(args)
}

/// The lab's `openstack` CLI, plain output.
fn openstack_text(clouds: &Path, args: &[&str]) -> String {
    LabCli::with(clouds).text(args)
}

/// The ids of the virtual media images Glance holds for `instance` (tag and property).
fn media_images(clouds: &Path, instance: &str) -> Vec<String> {
    let v = openstack(
        clouds,
        &[
            "image",
            "list",
            "--tag",
            "ovbmc-vmedia",
            "--property",
            &format!("ovbmc_instance={instance}"),
        ],
    );
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ID"].as_str().map(str::to_string))
        .collect()
}

/// Serve `body` to every GET on a loopback address of our own until the process ends.
fn serve_iso(body: Vec<u8>) -> String {
    serve_iso_to(crate::support::unique_loopback(), body, None)
}

/// [`serve_iso`] on `addr`, with `only` a 404 to every request whose User-Agent does not
/// contain it (so that Glance's own fetch fails and ovbmc's succeeds).
fn serve_iso_to(addr: Ipv4Addr, body: Vec<u8>, only: Option<&'static str>) -> String {
    let l = TcpListener::bind((addr, 0)).expect("ISO server");
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            // The request head only (a GET has no body).
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&b[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let agent = head
                .lines()
                .find_map(|l| l.strip_prefix("user-agent:"))
                .unwrap_or("");
            if only.is_some_and(|o| !agent.contains(&o.to_ascii_lowercase())) {
                let _ = write!(
                    c,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                continue;
            }
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(&body);
        }
    });
    format!("http://{addr}:{port}/boot.iso")
}

/// Retry `f` while the machine answers busy (the loaded lab's first lists can take longer
/// than one BMC request waits, and a transition may be finishing).
async fn retry<F, Fut>(what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), ovbmc::backend::BackendError>>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        match f().await {
            Ok(()) => return,
            Err(e) if Instant::now() < end => {
                println!("{what}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// The server ACTIVE with disk boot, whatever an earlier (failed) run left.
async fn to_active(m: &ovbmc::cloud::machine::NovaMachine) {
    let s = m.session().clone();
    let id = m.instance_id().to_string();
    let srv = until(&s, &id, "no task", |s| s.task_state.is_none()).await;
    if srv.status == "RESCUE" {
        retry("power off", || m.power(PowerAction::Off)).await;
        until(&s, &id, "SHUTOFF", settled("SHUTOFF")).await;
    }
    let disk = BootFlags::new(BootDevice::Disk, true, false);
    retry("set disk", || m.set_boot_flags(disk)).await;
    retry("power on", || m.power(PowerAction::On)).await;
    until(&s, &id, "ACTIVE", settled("ACTIVE")).await;
}

fn admin() -> Vec<String> {
    vec!["-u".to_string(), format!("admin:{PASSWORD}")]
}

/// A request, retried while ovbmc answers 503 (Nova busy or the insert still uploading).
fn req_ready(c: &Client, method: &str, path: &str, body: Option<&str>) -> (u16, String, Value) {
    let end = Instant::now() + DEADLINE;
    loop {
        let r = c.req(method, path, &admin(), body);
        if r.0 != 503 {
            return r;
        }
        assert!(Instant::now() < end, "{method} {path}: still 503: {}", r.2);
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn reset(c: &Client, system: &str, kind: &str) {
    let (s, _, v) = req_ready(
        c,
        "POST",
        &format!("{system}/Actions/ComputerSystem.Reset"),
        Some(&json!({ "ResetType": kind }).to_string()),
    );
    assert!(s == 200 || s == 204, "Reset {kind}: {s} {v}");
}

fn boot_once(c: &Client, system: &str, target: &str) {
    let body = json!({"Boot": {
        "BootSourceOverrideTarget": target,
        "BootSourceOverrideEnabled": "Once",
    }});
    let (s, _, v) = req_ready(c, "PATCH", system, Some(&body.to_string()));
    assert!(s == 200 || s == 204, "PATCH boot {target}: {s} {v}");
}

/// InsertMedia and wait for its task to end: the Task's `TaskState`.
fn insert(c: &Client, cd: &str, url: &str) -> String {
    let body = json!({"Image": url, "Inserted": true, "WriteProtected": true});
    let (s, head, v) = c.req(
        "POST",
        &format!("{cd}/Actions/VirtualMedia.InsertMedia"),
        &admin(),
        Some(&body.to_string()),
    );
    assert_eq!(s, 202, "InsertMedia: {head}\n{v}");
    let monitor =
        crate::redfish_media::header(&head, "location").expect("a task monitor in Location");
    let monitor = monitor
        .strip_prefix(&c.base)
        .map(str::to_string)
        .unwrap_or(monitor);
    let end = Instant::now() + DEADLINE;
    loop {
        let (s, _, v) = c.req("GET", &monitor, &admin(), None);
        if s != 202 {
            assert_eq!(s, 200, "task monitor: {v}");
            return v["TaskState"].as_str().unwrap_or("").to_string();
        }
        assert!(Instant::now() < end, "the insert task never ended: {v}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Wait until the console log names a rescue from `image` after `from` earlier lines.
fn rescued_from(clouds: &Path, image: &str, from: usize) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        let log = openstack_text(clouds, &["console", "log", "show", INSTANCE]);
        let tail: Vec<&str> = log.lines().skip(from).collect();
        if let Some(l) = tail.iter().find(|l| l.contains("rescue from image")) {
            return l.to_string();
        }
        assert!(
            Instant::now() < end,
            "no rescue from {image} in the console log:\n{}",
            tail.join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn console_lines(clouds: &Path) -> usize {
    openstack_text(clouds, &["console", "log", "show", INSTANCE])
        .lines()
        .count()
}

fn start(clouds: &Path, dir: &Path, extra: &[&str]) -> (crate::nova::Bmc, Client, String, String) {
    let (bmc, c) = crate::redfish::start_nova_with(clouds, dir, INSTANCE, extra);
    let (s, _, v) = c.req("GET", "/redfish/v1/Systems", &admin(), None);
    assert_eq!(s, 200, "{v}");
    let system = v["Members"][0]["@odata.id"].as_str().unwrap().to_string();
    let (s, _, v) = c.req("GET", "/redfish/v1/Managers", &admin(), None);
    assert_eq!(s, 200, "{v}");
    let manager = v["Members"][0]["@odata.id"].as_str().unwrap().to_string();
    let cd = format!("{manager}/VirtualMedia/Cd");
    let (s, _, v) = c.req("GET", &cd, &admin(), None);
    assert_eq!(s, 200, "{cd}: {v}");
    (bmc, c, system, cd)
}

/// An "ISO" of `len` bytes: Glance does not look inside; the ISO 9660 magic at its offset for
/// the look.
fn fake_iso(len: usize) -> Vec<u8> {
    let mut iso = vec![0u8; len];
    iso[0x8001..0x8006].copy_from_slice(b"CD001");
    iso
}

/// InsertMedia of `url` (`len` bytes) to completion: Glance then holds one active image of that
/// size for instance `id`; its `image show`. `log` is shown if the insert fails.
fn insert_one(
    clouds: &Path,
    c: &Client,
    cd: &str,
    url: &str,
    len: usize,
    id: &str,
    log: &str,
) -> Value {
    assert_eq!(insert(c, cd, url), "Completed", "{log}");
    let imgs = media_images(clouds, id);
    assert_eq!(imgs.len(), 1, "one ovbmc-vmedia image for {id}: {imgs:?}");
    let shown = openstack(clouds, &["image", "show", &imgs[0]]);
    assert_eq!(shown["status"], "active", "{shown}");
    assert_eq!(shown["size"], len as u64, "{shown}");
    shown
}

/// Wait until no virtual media image is left for instance `id`, and ovbmc's log names
/// `image` (the one it deleted `when`).
fn gone(clouds: &Path, id: &str, image: &str, when: &str, log: impl Fn() -> String) {
    let end = Instant::now() + DEADLINE;
    while !media_images(clouds, id).is_empty() {
        assert!(
            Instant::now() < end,
            "image {image} not deleted {when}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(log().contains(image), "{}", log());
}

/// EjectMedia, which must succeed.
fn eject(c: &Client, cd: &str) {
    let (s, _, v) = req_ready(
        c,
        "POST",
        &format!("{cd}/Actions/VirtualMedia.EjectMedia"),
        Some("{}"),
    );
    assert!(s == 200 || s == 204, "EjectMedia: {s} {v}");
}

/// What each test starts from: the lab, `baremetal_1` held and ACTIVE with disk boot, no
/// virtual media image of an earlier failed run, a scratch directory with the password file.
struct Lab {
    clouds: std::path::PathBuf,
    _g: std::sync::MutexGuard<'static, ()>,
    rt: tokio::runtime::Runtime,
    id: String,
    session: std::sync::Arc<ovbmc::cloud::session::Session>,
    dir: ScratchDir,
}

/// [`Lab`], or None (the test SKIPs, saying why) without the lab or its CLI.
fn prepare(scratch: &str) -> Option<Lab> {
    let clouds = crate::nova::lab()?;
    if lab_env("openstack", "openstack").is_none() {
        crate::support::skip("nova", "no openstack CLI in the lab");
        return None;
    }
    let _g = hold(&BAREMETAL_1);
    let rt = runtime();
    let (id, session) = rt.block_on(async {
        let m = crate::nova::machine(&clouds, ovbmc::cloud::BootStrategy::Metadata, INSTANCE).await;
        to_active(&m).await;
        (m.instance_id().to_string(), m.session().clone())
    });
    for img in media_images(&clouds, &id) {
        openstack_text(&clouds, &["image", "delete", &img]);
    }
    let dir = ScratchDir::new(scratch);
    dir.write_secret("pw", PASSWORD);
    Some(Lab {
        clouds,
        _g,
        rt,
        id,
        session,
        dir,
    })
}

#[test]
fn redfish_virtual_media_on_nova_rescues_from_a_glance_iso() {
    let Some(Lab {
        clouds,
        _g,
        rt,
        id,
        session,
        dir,
    }) = prepare("redfish-media-nova")
    else {
        return;
    };
    let iso = fake_iso(256 * 1024);
    let url = serve_iso(iso.clone());
    let (bmc, c, system, cd) = start(&clouds, dir.path(), &[]);

    // 1. Insert: one image in Glance, tagged, an active ISO with hw_rescue_device=cdrom.
    let shown = insert_one(&clouds, &c, &cd, &url, iso.len(), &id, &bmc.log());
    let image = shown["id"].as_str().unwrap().to_string();
    assert_eq!(shown["disk_format"], "iso", "{shown}");
    assert_eq!(shown["properties"]["hw_rescue_device"], "cdrom", "{shown}");
    let (_, _, doc) = c.req("GET", &cd, &admin(), None);
    assert_eq!(
        (doc["Inserted"].as_bool(), doc["Image"].as_str()),
        (Some(true), Some(url.as_str())),
        "{doc}"
    );

    // 2. Cd once and a reset: rescued with that image.
    let before = console_lines(&clouds);
    boot_once(&c, &system, "Cd");
    reset(&c, &system, "ForceRestart");
    rt.block_on(until(&session, &id, "RESCUE", settled("RESCUE")));
    let line = rescued_from(&clouds, &image, before);
    assert!(
        line.contains(&image) && line.contains("hw_rescue_device=cdrom"),
        "rescued from another image: {line} (want {image})"
    );

    // 3. The override was once: the next reset boots the disk (unrescue), media still in.
    reset(&c, &system, "ForceRestart");
    rt.block_on(until(&session, &id, "ACTIVE", settled("ACTIVE")));
    assert_eq!(media_images(&clouds, &id), vec![image.clone()]);

    // 4. Cd once again, reset: rescued; EjectMedia unrescues and deletes the image.
    let before = console_lines(&clouds);
    boot_once(&c, &system, "Cd");
    reset(&c, &system, "ForceRestart");
    rt.block_on(until(&session, &id, "RESCUE", settled("RESCUE")));
    rescued_from(&clouds, &image, before);
    eject(&c, &cd);
    rt.block_on(until(&session, &id, "ACTIVE", settled("ACTIVE")));
    assert_eq!(media_images(&clouds, &id), Vec::<String>::new());
    let (_, _, doc) = c.req("GET", &cd, &admin(), None);
    assert_eq!(doc["Inserted"].as_bool(), Some(false), "{doc}");

    // 5. A stale image (a run that died with media inserted): deleted at the next start.
    drop(bmc);
    // With a file (the CLI would otherwise upload whatever its stdin holds).
    let file = dir.path().join("stale.iso");
    std::fs::write(&file, &iso).expect("stale.iso");
    let stale = openstack(
        &clouds,
        &[
            "image",
            "create",
            "--disk-format",
            "iso",
            "--container-format",
            "bare",
            "--private",
            "--file",
            file.to_str().unwrap(),
            "--tag",
            "ovbmc-vmedia",
            "--property",
            &format!("ovbmc_instance={id}"),
            "ovbmc-vmedia-stale-test",
        ],
    );
    let stale = stale["id"].as_str().expect("stale image id").to_string();
    assert_eq!(media_images(&clouds, &id), vec![stale.clone()]);
    let (bmc, _c, _, _) = start(&clouds, dir.path(), &[]);
    gone(&clouds, &id, &stale, "at start", || bmc.log());
}

/// `--vmedia-import web-download`: Glance fetches the ISO itself (its interoperable image
/// import; the lab's Glance may fetch from 127.0.0.1 on any port, `[import_filtering_opts]`),
/// so the bytes never pass through ovbmc: the image is active with the ISO's size, the
/// log says how it came, and EjectMedia deletes it; where Glance's fetch fails, the insert
/// falls back to ovbmc's upload.
#[test]
fn redfish_virtual_media_on_nova_by_glance_web_download() {
    let Some(Lab {
        clouds,
        _g,
        id,
        dir,
        ..
    }) = prepare("redfish-media-web-download")
    else {
        return;
    };
    let iso = fake_iso(192 * 1024);
    // On 127.0.0.1: the one loopback host the lab's Glance may fetch from (allowed_hosts).
    let url = serve_iso_to(Ipv4Addr::LOCALHOST, iso.clone(), None);
    let (bmc, c, _system, cd) = start(&clouds, dir.path(), &["--vmedia-import", "web-download"]);

    let shown = insert_one(&clouds, &c, &cd, &url, iso.len(), &id, &bmc.log());
    assert_eq!(shown["properties"]["hw_rescue_device"], "cdrom", "{shown}");
    assert!(
        bmc.log().contains("imported by Glance (web-download)"),
        "not imported by Glance:\n{}",
        bmc.log()
    );
    eject(&c, &cd);
    assert_eq!(media_images(&clouds, &id), Vec::<String>::new());

    // A URL Glance cannot fetch (its server answers 404 to all but ovbmc): the import fails
    // in Glance, and the insert falls back to ovbmc's own upload.
    let url = serve_iso_to(Ipv4Addr::LOCALHOST, iso.clone(), Some("ovbmc/"));
    insert_one(&clouds, &c, &cd, &url, iso.len(), &id, &bmc.log());
    let log = bmc.log();
    // How Glance's failure showed (for the record in the test's output).
    for l in log.lines().filter(|l| l.contains("did not work")) {
        println!("{l}");
    }
    assert!(
        log.contains("web-download import did not work") && log.contains("uploading it instead"),
        "no fall-back to an upload:\n{log}"
    );
    eject(&c, &cd);
    assert_eq!(media_images(&clouds, &id), Vec::<String>::new());
}

/// A BMC that leaves the fleet (SIGHUP with it gone from the fleet file) takes its virtual
/// media image with it: ovbmc deletes the Glance image it made for that BMC (the instance is
/// no longer ovbmc's to boot from it). A simulator BMC keeps the fleet from being empty.
#[test]
fn redfish_virtual_media_image_goes_when_the_bmc_leaves_the_fleet() {
    let Some(Lab {
        clouds,
        _g,
        id,
        dir,
        ..
    }) = prepare("redfish-media-retire")
    else {
        return;
    };
    let iso = fake_iso(128 * 1024);
    let url = serve_iso(iso.clone());
    let (a, b, r) = (
        crate::support::unique_loopback(),
        crate::support::unique_loopback(),
        crate::support::unique_loopback(),
    );
    let port = crate::support::free_udp_port(a);
    let rport = crate::redfish::free_tcp_port(r);
    let head = format!(
        "[defaults]\npassword_file = \"{}\"\nport = {port}\n\
         [cloud]\nos_cloud = \"lab\"\nos_client_config_file = \"{}\"\n\
         boot_strategy = \"metadata\"\n\
         [redfish]\naddress = \"{r}:{rport}\"\nstate_dir = \"state\"\n\
         [[bmc]]\naddress = \"{b}\"\ninstance = \"keeper\"\nbackend = \"sim\"\n\
         user = \"keeper\"\n",
        dir.path().join("pw").display(),
        clouds.display()
    );
    let nova =
        format!("[[bmc]]\naddress = \"{a}\"\ninstance = \"{INSTANCE}\"\nbackend = \"nova\"\n");
    let cfg = dir.path().join("fleet.toml");
    std::fs::write(&cfg, format!("{head}{nova}")).unwrap();
    let log_file = dir.path().join("ovbmc.log");
    let mut p = crate::fleet::FleetProc::spawn(
        &[],
        &["--config".into(), cfg.display().to_string()],
        log_file.clone(),
    );
    p.wait_log("serving bmcs=2", 1, Duration::from_secs(60))
        .unwrap_or_else(|l| panic!("{l}"));
    let c = Client {
        base: format!("https://{r}:{rport}"),
        cert: dir.path().join("state/redfish-cert.pem"),
        log_file,
    };
    let (s, _, v) = req_ready(&c, "GET", "/redfish/v1/Managers", None);
    assert_eq!(s, 200, "{v}");
    let manager = v["Members"][0]["@odata.id"].as_str().unwrap().to_string();
    let cd = format!("{manager}/VirtualMedia/Cd");
    let shown = insert_one(&clouds, &c, &cd, &url, iso.len(), &id, &p.log());
    let image = shown["id"].as_str().unwrap().to_string();

    // The Nova BMC leaves the fleet: its image is deleted.
    std::fs::write(&cfg, &head).unwrap();
    p.signal("HUP");
    p.wait_log("reload:", 1, Duration::from_secs(30))
        .unwrap_or_else(|l| panic!("{l}"));
    gone(&clouds, &id, &image, "when its BMC left the fleet", || {
        p.log()
    });
}
