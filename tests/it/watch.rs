//! `ovbmc cloud watch-addresses` (issue 14 item 2) in a network namespace this test creates:
//! a veth interface whose addresses are added and removed with `ip addr`, and an in-process
//! fake Keystone + Neutron (the two Neutron calls the command makes, "Show port details" and
//! "Update port") on the namespace's loopback, stopped for 30 s and started again.
//!
//! The test re-runs this test binary inside the namespace (`ip netns exec NS <it> --exact
//! watch::inner_in_netns --include-ignored`), so that the fake, the watcher and `ip addr` all
//! see the same interfaces and loopback and no traffic leaves the namespace.
//!
//! Needs root and iproute2; otherwise it prints `SKIP watch-addresses: <why>` and passes,
//! unless `OVBMC_REQUIRE_LABS=1`. No timing is asserted: each step waits for the port to
//! converge, with a generous deadline.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{ScratchDir, find_program, ovbmc_bin, sh, skip};

const TIER: &str = "watch-addresses";
const INNER_ENV: &str = "OVBMC_IT_WATCH_NETNS";
const PORT_ID: &str = "5b0d4a76-1f3e-4c4e-9a8e-2f6e1c0a7d21";
const PORT_MAC: &str = "fa:16:3e:12:34:56";
/// How long one convergence may take (it is seconds; the cloud-down step is 30 s + backoff).
const DEADLINE: Duration = Duration::from_secs(150);

fn root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

struct Netns(String);

impl Netns {
    /// A new namespace `name` (one left over from a killed run is deleted first).
    fn fresh(name: String) -> Self {
        let ns = Netns(name);
        let _ = Command::new("ip")
            .args(["netns", "del", &ns.0])
            .stderr(Stdio::null())
            .status();
        sh(&["ip", "netns", "add", &ns.0]);
        ns
    }

    /// Run the ignored test `name` of this binary inside the namespace with `envs`, and
    /// assert that it ran and passed.
    fn run_inner(&self, name: &str, envs: &[(&str, &std::ffi::OsStr)]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .arg(std::env::current_exe().expect("test binary"))
            .args([
                name,
                "--exact",
                "--include-ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run the inner test");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("1 passed"),
            "inner test in {}:\n{text}",
            self.0
        );
        println!("{text}");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// The outer half: make the namespace and run [`inner_in_netns`] in it.
#[test]
fn watch_addresses_follows_the_host_and_survives_the_cloud_down() {
    let why = if !root() {
        Some("needs root (network namespaces)")
    } else if find_program("ip").is_none() {
        Some("ip (iproute2) not installed")
    } else {
        None
    };
    if let Some(why) = why {
        if std::env::var("OVBMC_REQUIRE_LABS").is_ok_and(|v| v == "1") {
            panic!("{TIER}: {why} and OVBMC_REQUIRE_LABS=1");
        }
        skip(TIER, why);
        return;
    }
    let ns = Netns::fresh(format!("ovbmc-watch-{}", std::process::id()));
    ns.run_inner("watch::inner_in_netns", &[(INNER_ENV, ns.0.as_ref())]);
}

/// The fake's state: the port's pairs, and the count of requests.
#[derive(Default)]
struct PortState {
    pairs: Vec<Value>,
    puts: u32,
}

/// A minimal Keystone v3 + Neutron v2.0 on 127.0.0.1: one token, one port. HTTP/1.1 with
/// `Connection: close` (one request per connection; enough for reqwest).
struct FakeCloud {
    addr: SocketAddr,
    st: Arc<Mutex<PortState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeCloud {
    fn start(addr: SocketAddr, st: Arc<Mutex<PortState>>) -> Self {
        let l = TcpListener::bind(addr).expect("bind the fake cloud");
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, t) = (st.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !t.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => answer(c, addr, &s),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            addr,
            st,
            stop,
            thread: Some(thread),
        }
    }

    /// The cloud goes away: the listener is closed (connections are refused).
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn pairs(&self) -> Vec<String> {
        let st = self.st.lock().unwrap();
        st.pairs
            .iter()
            .filter_map(|p| p["ip_address"].as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for FakeCloud {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(mut c: TcpStream, me: SocketAddr, st: &Mutex<PortState>) {
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    let port_path = format!("/v2.0/ports/{PORT_ID}");
    let port = |pairs: &Vec<Value>| {
        json!({"port": {"id": PORT_ID, "mac_address": PORT_MAC,
            "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.5"}],
            "port_security_enabled": true, "allowed_address_pairs": pairs}})
    };
    let (status, extra, out) = match (method.as_str(), path.as_str()) {
        ("POST", "/v3/auth/tokens") => {
            let base = format!("http://{me}");
            let v = json!({"token": {"expires_at": "2099-01-01T00:00:00.000000Z",
                "project": {"id": "p"}, "catalog": [
                {"type": "compute", "endpoints": [
                    {"interface": "public", "region": "R", "url": format!("{base}/compute/v2.1")}]},
                {"type": "network", "endpoints": [
                    {"interface": "public", "region": "R", "url": base}]}]}});
            ("201 Created", "X-Subject-Token: fake-token\r\n", v)
        }
        ("GET", p) if p == port_path => {
            let st = st.lock().unwrap();
            ("200 OK", "", port(&st.pairs))
        }
        ("PUT", p) if p == port_path => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            match v["port"]["allowed_address_pairs"].as_array() {
                Some(list) => {
                    let mut st = st.lock().unwrap();
                    // As Neutron does: a pair without a MAC gets the port's.
                    st.pairs = list
                        .iter()
                        .map(|p| {
                            let mut p = p.clone();
                            if p.get("mac_address").is_none() {
                                p["mac_address"] = json!(PORT_MAC);
                            }
                            p
                        })
                        .collect();
                    st.puts += 1;
                    ("200 OK", "", port(&st.pairs))
                }
                None => (
                    "400 Bad Request",
                    "",
                    json!({"NeutronError": {"message": "bad body"}}),
                ),
            }
        }
        _ => (
            "404 Not Found",
            "",
            json!({"NeutronError": {"message": "not found"}}),
        ),
    };
    let text = out.to_string();
    let _ = write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         {extra}Connection: close\r\n\r\n{text}",
        text.len()
    );
}

struct Watcher {
    child: Child,
    log: PathBuf,
}

impl Watcher {
    fn start(dir: &Path, clouds: &Path) -> Self {
        let log = dir.join(format!(
            "watch-{}.log",
            std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()
        ));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(ovbmc_bin())
            .args([
                "cloud",
                "watch-addresses",
                "--port",
                PORT_ID,
                "--interface",
                "w0",
            ])
            .arg("--state-file")
            .arg(dir.join("state.json"))
            .args(["--os-cloud", "fake", "--os-client-config-file"])
            .arg(clouds)
            .args([
                "--settle-ms",
                "200",
                "--min-interval-ms",
                "500",
                "--resync-secs",
                "5",
            ])
            .args(["--timeout", "5"])
            .env_remove("OS_CLOUD")
            .env("OVBMC_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn ovbmc cloud watch-addresses");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                assert!(
                    st.success(),
                    "watch-addresses exited {st} at SIGTERM:\n{}",
                    self.log()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("watch-addresses did not stop at SIGTERM:\n{}", self.log());
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- watch-addresses log ---\n{}--- end ---", self.log());
        }
    }
}

/// Wait until the port's pairs are exactly `want` (in any order).
#[track_caller]
fn converge(cloud: &FakeCloud, w: &mut Watcher, want: &[&str], what: &str) {
    let end = Instant::now() + DEADLINE;
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    loop {
        let mut got = cloud.pairs();
        got.sort();
        if got == want {
            println!("{what}: pairs {got:?}");
            return;
        }
        if let Ok(Some(st)) = w.child.try_wait() {
            panic!("{what}: watch-addresses exited ({st}):\n{}", w.log());
        }
        assert!(
            Instant::now() < end,
            "{what}: pairs {got:?}, wanted {want:?}\n{}",
            w.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The inner half, run by the outer test inside its namespace (and skipped anywhere else).
#[test]
#[ignore = "run inside a network namespace by watch_addresses_follows_the_host_..."]
fn inner_in_netns() {
    if std::env::var_os(INNER_ENV).is_none() {
        return;
    }
    sh(&["ip", "link", "set", "lo", "up"]);
    // A veth pair rather than a dummy interface: this kernel has no dummy module, and every
    // kernel that has network namespaces has veth.
    sh(&[
        "ip", "link", "add", "w0", "type", "veth", "peer", "name", "w0p",
    ]);
    sh(&["ip", "link", "set", "w0p", "up"]);
    sh(&["ip", "link", "set", "w0", "up"]);
    // The port's fixed IP: allowed anyway, so never a pair.
    sh(&["ip", "addr", "add", "10.0.0.5/24", "dev", "w0"]);
    // An address on another interface: not followed with --interface w0.
    sh(&[
        "ip", "link", "add", "w1", "type", "veth", "peer", "name", "w1p",
    ]);
    sh(&["ip", "link", "set", "w1p", "up"]);
    sh(&["ip", "link", "set", "w1", "up"]);
    sh(&["ip", "addr", "add", "203.0.113.50/24", "dev", "w1"]);

    let st = Arc::new(Mutex::new(PortState {
        // Someone else's pair: kept whatever happens.
        pairs: vec![json!({"ip_address": "198.51.100.99", "mac_address": PORT_MAC})],
        puts: 0,
    }));
    let mut cloud = FakeCloud::start("127.0.0.1:0".parse().unwrap(), st.clone());
    let addr = cloud.addr;
    let dir = ScratchDir::new("watch");
    let clouds = dir.path().join("clouds.yaml");
    std::fs::write(
        &clouds,
        format!(
            "clouds:\n  fake:\n    auth:\n      auth_url: http://{addr}/v3\n      username: u\n      \
             password: p\n      project_name: p\n      user_domain_name: Default\n      \
             project_domain_name: Default\n    region_name: R\n"
        ),
    )
    .unwrap();

    let mut w = Watcher::start(dir.path(), &clouds);
    converge(&cloud, &mut w, &["198.51.100.99"], "start: nothing to add");

    sh(&["ip", "addr", "add", "192.0.2.10/24", "dev", "w0"]);
    converge(
        &cloud,
        &mut w,
        &["198.51.100.99", "192.0.2.10"],
        "IPv4 VIP arrives",
    );
    sh(&["ip", "addr", "add", "2001:db8::10/64", "dev", "w0", "nodad"]);
    converge(
        &cloud,
        &mut w,
        &["198.51.100.99", "192.0.2.10", "2001:db8::10"],
        "IPv6 VIP arrives",
    );
    sh(&["ip", "addr", "del", "192.0.2.10/24", "dev", "w0"]);
    converge(
        &cloud,
        &mut w,
        &["198.51.100.99", "2001:db8::10"],
        "IPv4 VIP leaves",
    );

    // The rate: five addresses at once (a failover brings several VIPs) within the settle
    // time (200 ms) are one change, so one or two PUTs (two if the burst straddles a
    // settle), never one per address; and gone at once, likewise.
    let burst: Vec<String> = (20..25).map(|i| format!("192.0.2.{i}")).collect();
    let puts = || st.lock().unwrap().puts;
    let before = puts();
    for a in &burst {
        sh(&["ip", "addr", "add", &format!("{a}/32"), "dev", "w0"]);
    }
    let mut with: Vec<&str> = vec!["198.51.100.99", "2001:db8::10"];
    with.extend(burst.iter().map(String::as_str));
    converge(&cloud, &mut w, &with, "a burst of five VIPs arrives");
    let n = puts() - before;
    assert!(n <= 2, "{n} PUTs for a burst of five addresses");
    let before = puts();
    for a in &burst {
        sh(&["ip", "addr", "del", &format!("{a}/32"), "dev", "w0"]);
    }
    converge(
        &cloud,
        &mut w,
        &["198.51.100.99", "2001:db8::10"],
        "the burst leaves",
    );
    let n = puts() - before;
    assert!(n <= 2, "{n} PUTs for five addresses leaving");

    // The cloud down for 30 s, the host changing meanwhile.
    cloud.stop();
    sh(&["ip", "addr", "add", "192.0.2.11/24", "dev", "w0"]);
    sh(&["ip", "addr", "del", "2001:db8::10/64", "dev", "w0"]);
    std::thread::sleep(Duration::from_secs(30));
    let log = w.log();
    assert!(
        log.contains("retry_in_secs"),
        "no retry logged while down:\n{log}"
    );
    let mut cloud = FakeCloud::start(addr, st.clone());
    converge(
        &cloud,
        &mut w,
        &["198.51.100.99", "192.0.2.11"],
        "cloud back: converged",
    );
    assert!(w.log().contains("the cloud answers again"), "{}", w.log());

    // A restart remembers what it added: the address leaves while the watcher is stopped,
    // and a pair someone adds meanwhile is kept.
    w.terminate();
    sh(&["ip", "addr", "del", "192.0.2.11/24", "dev", "w0"]);
    st.lock()
        .unwrap()
        .pairs
        .push(json!({"ip_address": "192.0.2.200", "mac_address": PORT_MAC}));
    let mut w = Watcher::start(dir.path(), &clouds);
    converge(
        &cloud,
        &mut w,
        &["198.51.100.99", "192.0.2.200"],
        "after a restart: its own pair removed, the others kept",
    );
    // Someone else's pair for an address that is on the host and then leaves: not ours.
    sh(&["ip", "addr", "add", "192.0.2.200/24", "dev", "w0"]);
    sh(&["ip", "addr", "del", "192.0.2.200/24", "dev", "w0"]);
    sh(&["ip", "addr", "add", "192.0.2.12/24", "dev", "w0"]);
    converge(
        &cloud,
        &mut w,
        &["198.51.100.99", "192.0.2.200", "192.0.2.12"],
        "a pair it did not add survives its address leaving",
    );
    let state = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(
        state.contains("192.0.2.12") && !state.contains("192.0.2.200"),
        "{state}"
    );
    println!("--- watch-addresses log ---\n{}--- end ---", w.log());
    w.terminate();
    cloud.stop();
}

// ---- Against the lab's real Neutron -------------------------------------------------------
//
// The watcher runs in a namespace of its own (its addresses are the namespace's), but the
// lab's Keystone and Neutron listen on the host's loopback. The bridge: the outer test listens
// on a Unix socket per service (file-system sockets are not per network namespace) and
// connects each to the service on the host's 127.0.0.1; the inner test listens on the same
// port on the namespace's 127.0.0.1 and connects each to that Unix socket. So the catalog's
// URLs (http://127.0.0.1:PORT) work unchanged inside, and all traffic stays on loopbacks.

const REAL_ENV: &str = "OVBMC_IT_WATCH_REAL";

/// Copy both ways between two streams until either side closes.
fn splice<A, B>(a: A, b: B)
where
    A: std::io::Read + std::io::Write + Send + 'static + TryCloneStream,
    B: std::io::Read + std::io::Write + Send + 'static + TryCloneStream,
{
    let (mut a2, mut b2) = (a.try_clone_stream(), b.try_clone_stream());
    let (mut a, mut b) = (a, b);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b2);
        b2.shutdown_write();
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut b, &mut a2);
        a2.shutdown_write();
    });
}

trait TryCloneStream: Sized {
    fn try_clone_stream(&self) -> Self;
    fn shutdown_write(&self);
}

impl TryCloneStream for TcpStream {
    fn try_clone_stream(&self) -> Self {
        self.try_clone().expect("clone tcp")
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl TryCloneStream for std::os::unix::net::UnixStream {
    fn try_clone_stream(&self) -> Self {
        self.try_clone().expect("clone unix")
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

fn lab_openstack(args: &[&str]) -> Result<String, String> {
    let cli = crate::support::LabCli::find().ok_or("no lab openstack CLI or clouds.yaml")?;
    let ran = cli.ran(args);
    if ran.success() {
        Ok(ran.stdout.trim().to_string())
    } else {
        Err(ran.stderr.trim().to_string())
    }
}

struct LabPort(String);

impl Drop for LabPort {
    fn drop(&mut self) {
        let _ = lab_openstack(&["port", "delete", &self.0]);
    }
}

/// The outer half against the lab: a port made on the lab's provisioning network with a pair
/// set "by hand", the bridge, and the inner half in a namespace.
#[test]
fn watch_addresses_against_the_labs_real_neutron() {
    let Some(clouds) = crate::nova::lab() else {
        return;
    };
    if crate::support::lab_env("openstack", "neutron").as_deref() != Some("real") {
        skip(
            TIER,
            "the lab runs the null Neutron (OVBMC_LAB_NEUTRON=real for this test)",
        );
        return;
    }
    if !root() || find_program("ip").is_none() {
        if std::env::var("OVBMC_REQUIRE_LABS").is_ok_and(|v| v == "1") {
            panic!("{TIER}: needs root and ip, and OVBMC_REQUIRE_LABS=1");
        }
        skip(TIER, "needs root (network namespaces) and ip");
        return;
    }
    let name = format!("ovbmc-it-watch-{}", std::process::id());
    let id = lab_openstack(&[
        "port",
        "create",
        "--network",
        "provision",
        "--allowed-address",
        "ip-address=198.51.100.99",
        &name,
        "-f",
        "value",
        "-c",
        "id",
    ])
    .unwrap_or_else(|e| panic!("lab port create: {e}"));
    let port = LabPort(id);
    let dir = ScratchDir::new("watch-real");
    let ports: Vec<u16> = ["keystone_port", "neutron_port"]
        .iter()
        .map(|k| {
            crate::support::lab_env("openstack", k)
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("lab {k}"))
        })
        .collect();
    for p in &ports {
        let sock = dir.path().join(format!("{p}.sock"));
        let l = std::os::unix::net::UnixListener::bind(&sock).expect("bind unix socket");
        let p = *p;
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                if let Ok(t) = TcpStream::connect(("127.0.0.1", p)) {
                    splice(c, t);
                }
            }
        });
    }
    let ns = Netns::fresh(format!("ovbmc-watchr-{}", std::process::id()));
    let ports_csv = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    ns.run_inner(
        "watch::inner_against_the_lab",
        &[
            (REAL_ENV, dir.path().as_os_str()),
            ("OVBMC_IT_WATCH_PORTS", ports_csv.as_ref()),
            ("OVBMC_IT_WATCH_PORT_ID", port.0.as_ref()),
            ("OVBMC_IT_WATCH_CLOUDS", clouds.as_ref()),
        ],
    );
    // Checked from outside too, with the openstack CLI: the hand-set pair is still there.
    let pairs = lab_openstack(&[
        "port",
        "show",
        &port.0,
        "-f",
        "json",
        "-c",
        "allowed_address_pairs",
    ])
    .expect("port show");
    assert!(pairs.contains("198.51.100.99"), "{pairs}");
}

/// The port's pairs as the lab's Neutron shows them (through the bridge).
fn lab_pairs(rt: &tokio::runtime::Runtime, api: &ovbmc::cloud::watch::NeutronPort) -> Vec<String> {
    use ovbmc::cloud::watch::PortPairs as _;
    match rt.block_on(api.get()) {
        Ok(v) => v.pairs.into_iter().map(|p| p.ip_address).collect(),
        Err(e) => vec![format!("error: {e}")],
    }
}

/// The inner half against the lab, run by the outer test inside its namespace.
#[test]
#[ignore = "run inside a network namespace by watch_addresses_against_the_labs_real_neutron"]
fn inner_against_the_lab() {
    let Some(dir) = std::env::var_os(REAL_ENV).map(PathBuf::from) else {
        return;
    };
    let ports: Vec<u16> = std::env::var("OVBMC_IT_WATCH_PORTS")
        .unwrap()
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    let port_id = std::env::var("OVBMC_IT_WATCH_PORT_ID").unwrap();
    let clouds = PathBuf::from(std::env::var("OVBMC_IT_WATCH_CLOUDS").unwrap());
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&[
        "ip", "link", "add", "w0", "type", "veth", "peer", "name", "w0p",
    ]);
    sh(&["ip", "link", "set", "w0p", "up"]);
    sh(&["ip", "link", "set", "w0", "up"]);
    for p in ports {
        let l = TcpListener::bind(("127.0.0.1", p)).expect("bind bridge in the namespace");
        let sock = dir.join(format!("{p}.sock"));
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                if let Ok(u) = std::os::unix::net::UnixStream::connect(&sock) {
                    splice(c, u);
                }
            }
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let env = ovbmc::cloud::config::process_env();
    let cfg = ovbmc::cloud::config::load(Some("lab"), Some(&clouds), &env).expect("lab cloud");
    let session = std::sync::Arc::new(
        ovbmc::cloud::session::Session::new(cfg, Default::default()).expect("session"),
    );
    let api = ovbmc::cloud::watch::NeutronPort::new(session, &port_id);

    let log = dir.join("watch.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(ovbmc_bin())
        .args([
            "cloud",
            "watch-addresses",
            "--port",
            &port_id,
            "--interface",
            "w0",
        ])
        .arg("--state-file")
        .arg(dir.join("state.json"))
        .args(["--os-cloud", "lab", "--os-client-config-file"])
        .arg(&clouds)
        .args([
            "--settle-ms",
            "200",
            "--min-interval-ms",
            "500",
            "--resync-secs",
            "5",
        ])
        .env_remove("OS_CLOUD")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn watch-addresses");
    let wait_for = |want: &[&str], what: &str, child: &mut Child| {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        let end = Instant::now() + DEADLINE;
        loop {
            let mut got = lab_pairs(&rt, &api);
            got.sort();
            if got == want {
                println!("{what}: Neutron shows pairs {got:?}");
                return;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "{what}: watch-addresses exited {st}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < end,
                "{what}: pairs {got:?}, wanted {want:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait_for(&["198.51.100.99"], "start", &mut child);
    sh(&["ip", "addr", "add", "192.0.2.10/24", "dev", "w0"]);
    wait_for(&["198.51.100.99", "192.0.2.10"], "VIP arrives", &mut child);
    sh(&["ip", "addr", "add", "2001:db8::10/64", "dev", "w0", "nodad"]);
    wait_for(
        &["198.51.100.99", "192.0.2.10", "2001:db8::10"],
        "IPv6 VIP arrives",
        &mut child,
    );
    sh(&["ip", "addr", "del", "192.0.2.10/24", "dev", "w0"]);
    sh(&["ip", "addr", "del", "2001:db8::10/64", "dev", "w0"]);
    wait_for(
        &["198.51.100.99"],
        "VIPs leave: the hand-set pair stays",
        &mut child,
    );
    println!(
        "--- watch-addresses log ---\n{}--- end ---",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let _ = child.kill();
    let _ = child.wait();
}
