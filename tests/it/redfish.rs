//! The Redfish face (`--redfish`, docs/redfish.md) of a running `ovbmc --backend sim`, over
//! HTTPS with its self-signed certificate: raw HTTP with curl (auth, every Reset type, boot
//! override round trips with ipmitool, ETag/If-Match, errors), and sushy, the client Ironic
//! uses (from `OVBMC_PYTHON`, else `~/.cache/ovbmc/venv`, else `python3`; SKIP without it).

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ipmitool::Ipmitool;
use crate::support::{
    Bmc, BmcConfig, PASSWORD, Ran, ScratchDir, USER, clients_required, find_program, run, skip,
};

const TIER: &str = "redfish";

/// A BMC with its Redfish face.
pub(crate) struct Face {
    pub(crate) bmc: Bmc,
    client: Client,
    /// The system's URI.
    pub(crate) system: String,
}

impl Face {
    /// `tests/py/SCRIPT BASE CA USER PASSWORD SYSTEM EXTRA...` with `py` (a Python with sushy).
    pub(crate) fn sushy(&self, py: &Path, script: &str, extra: &[String], t: Duration) -> Ran {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/py")
            .join(script);
        let mut a = vec![
            script.display().to_string(),
            format!("{}/redfish/v1", self.base),
            self.cert.display().to_string(),
            USER.into(),
            PASSWORD.into(),
            self.system.clone(),
        ];
        a.extend(extra.iter().cloned());
        run(py, &a, &[], t)
    }
}

impl std::ops::Deref for Face {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// curl for one Redfish service.
pub(crate) struct Client {
    pub(crate) base: String,
    pub(crate) cert: PathBuf,
    /// The server's log, shown when a request fails.
    pub(crate) log_file: PathBuf,
}

pub(crate) fn free_tcp_port(addr: Ipv4Addr) -> u16 {
    TcpListener::bind((addr, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

/// Start a BMC serving Redfish on its own loopback address, state in `state`.
pub(crate) fn start(state: &Path, extra: &[&str]) -> Face {
    let addr = crate::support::unique_loopback();
    start_at(state, extra, addr, free_tcp_port(addr))
}

/// [`start`] with Redfish at `addr:port` (a restart on the address of a kept certificate).
fn start_at(state: &Path, extra: &[&str], addr: Ipv4Addr, port: u16) -> Face {
    start_cfg(state, extra, addr, port, BmcConfig::default())
}

/// [`start_at`] from `base` (the simulator's delays).
pub(crate) fn start_cfg(
    state: &Path,
    extra: &[&str],
    addr: Ipv4Addr,
    port: u16,
    base: BmcConfig,
) -> Face {
    let mut cfg = BmcConfig {
        extra_args: vec![
            "--redfish".into(),
            format!("{addr}:{port}"),
            "--redfish-state-dir".into(),
            state.display().to_string(),
        ],
        ..base
    };
    cfg.extra_args.extend(extra.iter().map(|s| s.to_string()));
    let bmc = Bmc::start_with(cfg);
    wait_listening(addr, port, Duration::from_secs(10), || bmc.log());
    let scheme = if extra.contains(&"--redfish-insecure-http") {
        "http"
    } else {
        "https"
    };
    let mut f = Face {
        client: Client {
            base: format!("{scheme}://{addr}:{port}"),
            // The operator's certificate if one is given, else the self-signed one.
            cert: extra
                .iter()
                .position(|a| *a == "--redfish-cert")
                .map_or_else(|| f_cert(state), |i| PathBuf::from(extra[i + 1])),
            log_file: bmc.log_file.clone(),
        },
        bmc,
        system: String::new(),
    };
    let (s, _, v) = f.req("GET", "/redfish/v1/Systems", &basic(), None);
    assert_eq!(s, 200, "{v}");
    f.system = v["Members"][0]["@odata.id"].as_str().unwrap().to_string();
    f
}

/// Wait until `addr:port` accepts connections; fail with `log` after `within`.
fn wait_listening(addr: Ipv4Addr, port: u16, within: Duration, log: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while TcpStream::connect((addr, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "Redfish never listened:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Nova BMC for the lab's `instance` (password file `dir/pw`) with its Redfish face on a
/// free loopback port (the self-signed certificate in `dir/state`), once it listens, and a
/// client for that face.
pub(crate) fn start_nova(clouds: &Path, dir: &Path, instance: &str) -> (crate::nova::Bmc, Client) {
    start_nova_with(clouds, dir, instance, &[])
}

/// [`start_nova`] with more ovbmc arguments.
pub(crate) fn start_nova_with(
    clouds: &Path,
    dir: &Path,
    instance: &str,
    extra: &[&str],
) -> (crate::nova::Bmc, Client) {
    let port = free_tcp_port(Ipv4Addr::LOCALHOST);
    let state = dir.join("state");
    let listen = format!("127.0.0.1:{port}");
    let state_dir = state.display().to_string();
    let mut args = vec!["--redfish", &listen, "--redfish-state-dir", &state_dir];
    args.extend_from_slice(extra);
    let bmc = crate::nova::start_bmc_with(clouds, dir, crate::nova::free_port(), instance, &args);
    // The Nova backend binds its instance first: seconds on the lab's busy Nova.
    wait_listening(Ipv4Addr::LOCALHOST, port, Duration::from_secs(60), || {
        bmc.log()
    });
    let c = Client {
        base: format!("https://127.0.0.1:{port}"),
        cert: f_cert(&state),
        log_file: bmc.log_path(),
    };
    (bmc, c)
}

pub(crate) fn basic() -> Vec<String> {
    vec!["-u".into(), format!("{USER}:{PASSWORD}")]
}

impl Client {
    /// One request: (status, head, JSON body or Null).
    pub(crate) fn req(
        &self,
        method: &str,
        path: &str,
        auth: &[String],
        body: Option<&str>,
    ) -> (u16, String, Value) {
        let curl = find_program("curl").expect("curl");
        let mut a: Vec<String> = vec![
            "-s".into(),
            "-S".into(),
            "-i".into(),
            "--http1.1".into(),
            "-X".into(),
            method.into(),
        ];
        if self.base.starts_with("https") {
            a.extend(["--cacert".into(), self.cert.display().to_string()]);
        }
        a.extend(auth.iter().cloned());
        if let Some(b) = body {
            a.extend([
                "-H".into(),
                "Content-Type: application/json".into(),
                "--data-binary".into(),
                b.into(),
            ]);
        }
        a.push(format!("{}{path}", self.base));
        let r = run(&curl, &a, &[], Duration::from_secs(30));
        let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        assert!(r.success(), "curl failed:\n{r}\n{log}");
        let out = r.stdout.replace("\r\n", "\n");
        let (head, body) = out.split_once("\n\n").unwrap_or((&out, ""));
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let v = serde_json::from_str(body).unwrap_or(Value::Null);
        (status, head.to_string(), v)
    }

    pub(crate) fn get(&self, path: &str) -> Value {
        let (s, _, v) = self.req("GET", path, &basic(), None);
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }
}

pub(crate) fn message_id(v: &Value) -> String {
    v["error"]["@Message.ExtendedInfo"][0]["MessageId"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A session unused for the idle timeout (`--redfish-session-timeout`, 30 s here, its least)
/// is closed: its token then gets 401 `NoValidSession`, and its Session resource is gone;
/// one used meanwhile stays open (the timeout is idle time, not age).
#[test]
fn redfish_session_expires_after_the_idle_timeout() {
    let dir = ScratchDir::new("redfish-session-timeout");
    let f = start(dir.path(), &["--redfish-session-timeout", "30"]);
    let login = format!("{{\"UserName\":\"{USER}\",\"Password\":\"{PASSWORD}\"}}");
    let sessions = "/redfish/v1/SessionService/Sessions";
    let open = || {
        let (s, h, v) = f.req("POST", sessions, &[], Some(&login));
        assert_eq!(s, 201, "{v}");
        let token = crate::redfish_media::header(&h, "x-auth-token")
            .unwrap_or_else(|| panic!("no X-Auth-Token in {h}"));
        vec!["-H".to_string(), format!("X-Auth-Token: {token}")]
    };
    let idle = open();
    let busy = open();
    assert_eq!(f.req("GET", &f.system, &idle, None).0, 200);
    // Used every 10 s: never idle for 30 s.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_secs(10));
        assert_eq!(f.req("GET", &f.system, &busy, None).0, 200);
    }
    let (s, _, v) = f.req("GET", &f.system, &idle, None);
    assert_eq!(
        (s, message_id(&v).as_str()),
        (401, "Base.1.22.NoValidSession"),
        "an idle session still works after 40 s"
    );
    let (s, _, v) = f.req("GET", sessions, &basic(), None);
    assert_eq!(s, 200);
    assert_eq!(
        v["Members@odata.count"], 1,
        "the idle session is still listed: {v}"
    );
}

#[test]
fn redfish_auth_basic_sessions_and_errors() {
    let dir = ScratchDir::new("redfish-auth");
    let f = start(dir.path(), &[]);
    // Open without credentials: the version document, the root, $metadata, odata.
    for p in [
        "/redfish",
        "/redfish/v1/",
        "/redfish/v1/$metadata",
        "/redfish/v1/odata",
    ] {
        let (s, h, _) = f.req("GET", p, &[], None);
        assert_eq!(s, 200, "{p}: {h}");
        assert!(h.to_lowercase().contains("odata-version: 4.0"), "{h}");
    }
    let (s, h, v) = f.req("GET", &f.system, &[], None);
    assert_eq!(s, 401);
    assert!(h.to_lowercase().contains("www-authenticate: basic"), "{h}");
    assert_eq!(message_id(&v), "Base.1.22.NoValidSession");
    let bad = vec!["-u".to_string(), format!("{USER}:wrong")];
    assert_eq!(f.req("GET", &f.system, &bad, None).0, 401);
    // A session: token and Location; the token works alone; DELETE logs out.
    let login = format!("{{\"UserName\":\"{USER}\",\"Password\":\"{PASSWORD}\"}}");
    let (s, h, v) = f.req(
        "POST",
        "/redfish/v1/SessionService/Sessions",
        &[],
        Some(&login),
    );
    assert_eq!(s, 201, "{v}");
    let header = |name: &str| {
        h.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(": ")?;
                k.eq_ignore_ascii_case(name).then_some(v)
            })
            .map(|x| x.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {h}"))
    };
    let location = header("location");
    let token = vec![
        "-H".to_string(),
        format!("X-Auth-Token: {}", header("x-auth-token")),
    ];
    assert_eq!(v["UserName"], USER);
    assert!(
        !f.bmc.log().contains(&header("x-auth-token")),
        "token logged"
    );
    assert!(!f.bmc.log().contains(PASSWORD), "password logged");
    assert_eq!(f.req("GET", &f.system, &token, None).0, 200);
    assert_eq!(f.req("GET", &location, &token, None).0, 200);
    assert_eq!(f.req("DELETE", &location, &token, None).0, 204);
    assert_eq!(f.req("GET", &f.system, &token, None).0, 401);
    let bad_login = format!("{{\"UserName\":\"{USER}\",\"Password\":\"nope\"}}");
    let sessions = "/redfish/v1/SessionService/Sessions";
    assert_eq!(f.req("POST", sessions, &[], Some(&bad_login)).0, 401);
    // 404, 405 with Allow, 400 with Base messages, 413.
    let (s, _, v) = f.req("GET", "/redfish/v1/Nope", &basic(), None);
    assert_eq!(
        (s, message_id(&v).as_str()),
        (404, "Base.1.22.ResourceNotFound")
    );
    let (s, h, _) = f.req("DELETE", "/redfish/v1/Systems", &basic(), None);
    assert_eq!(s, 405);
    assert!(h.to_lowercase().contains("allow: get, head"), "{h}");
    let (s, _, v) = f.req("PATCH", &f.system, &basic(), Some("{not json"));
    assert_eq!(
        (s, message_id(&v).as_str()),
        (400, "Base.1.22.MalformedJSON")
    );
    // DSP0266 §8.2.1: another OData version is refused with 412, naming the header.
    let mut odata5 = basic();
    odata5.extend(["-H".to_string(), "OData-Version: 5.0".to_string()]);
    let (s, _, v) = f.req("GET", &f.system, &odata5, None);
    assert_eq!(
        (s, message_id(&v).as_str()),
        (412, "Base.1.22.HeaderInvalid"),
        "{v}"
    );
    let (s, _, v) = f.req("PATCH", &f.system, &basic(), Some(r#"{"Name":"x"}"#));
    assert_eq!(
        (s, message_id(&v).as_str()),
        (400, "Base.1.22.PropertyNotWritable")
    );
    let big = format!("{{\"Boot\":\"{}\"}}", "x".repeat(20_000));
    let (s, _, v) = f.req("PATCH", &f.system, &basic(), Some(&big));
    assert_eq!(
        (s, message_id(&v).as_str()),
        (413, "Base.1.22.PayloadTooLarge")
    );
    // Service resources.
    for p in [
        "/redfish/v1/SessionService",
        "/redfish/v1/AccountService",
        "/redfish/v1/AccountService/Roles/ReadOnly",
        &format!("/redfish/v1/AccountService/Accounts/{USER}"),
    ] {
        f.get(p);
    }
    let sys = f.get(&f.system);
    assert_eq!(sys["Name"], "it-node");
    let mgr = sys["Links"]["ManagedBy"][0]["@odata.id"].as_str().unwrap();
    assert_eq!(f.get(mgr)["ManagerType"], "BMC");
}

/// Failed logins lock the source out with the IPMI face's thresholds (even the right password
/// then gets 401), and a name that is no configured user never reaches the log as text.
#[test]
fn redfish_failed_logins_lock_out_and_unknown_names_are_not_logged() {
    let dir = ScratchDir::new("redfish-lockout");
    let f = start(dir.path(), &["--lockout-source-failures", "3"]);
    let typo = vec!["-u".to_string(), "it-secret-typed-as-user:x".to_string()];
    for _ in 0..3 {
        assert_eq!(f.req("GET", &f.system, &typo, None).0, 401);
    }
    assert_eq!(
        f.req("GET", &f.system, &basic(), None).0,
        401,
        "not locked out"
    );
    let log = f.bmc.log();
    assert!(!log.contains("it-secret-typed-as-user"), "{log}");
    assert!(log.contains("<unknown name, 23 chars>"), "{log}");
    assert!(log.contains("locked out"), "{log}");
}

/// One lock-out for both faces (one count per user name): failed IPMI logins lock the user
/// out of Redfish, and failed Redfish logins lock the user out of IPMI. Per-user counts only
/// (`--lockout-source-failures 0`), no trust exemption (`--lockout-trust-secs 0`: the start-up
/// GET logged in from the same source). The IPMI failures are logins asking for more than the
/// user's privilege (RAKP 1 "unauthorized role", counted against the user; a wrong password
/// through ipmitool is abandoned after RAKP 2 and counts against the source only).
#[test]
fn redfish_and_ipmi_share_the_failed_login_lock_out() {
    let flags = [
        "--lockout-source-failures",
        "0",
        "--lockout-user-failures",
        "3",
        "--lockout-trust-secs",
        "0",
        "--user-privilege",
        "OPERATOR",
    ];
    // IPMI failures lock Redfish.
    let dir = ScratchDir::new("redfish-shared-lockout-ipmi");
    let f = start(dir.path(), &flags);
    let Some(ipmi) = Ipmitool::new(&f.bmc, None) else {
        return;
    };
    ipmi.clone()
        .level("OPERATOR")
        .run(&["chassis", "power", "status"])
        .expect_success();
    let too_high = ipmi.clone().level("ADMINISTRATOR");
    for _ in 0..3 {
        assert!(!too_high.run(&["chassis", "power", "status"]).success());
    }
    let (s, _, v) = f.req("GET", &f.system, &basic(), None);
    assert_eq!(s, 401, "Redfish not locked by IPMI failures: {v}");
    assert!(f.bmc.log().contains("locked out"), "{}", f.bmc.log());
    drop(f);

    // Redfish failures lock IPMI.
    let dir = ScratchDir::new("redfish-shared-lockout-redfish");
    let f = start(dir.path(), &flags);
    let ipmi = Ipmitool::new(&f.bmc, None).unwrap().level("OPERATOR");
    ipmi.run(&["chassis", "power", "status"]).expect_success();
    let bad = vec!["-u".to_string(), format!("{USER}:wrong")];
    for _ in 0..3 {
        assert_eq!(f.req("GET", &f.system, &bad, None).0, 401);
    }
    assert_eq!(f.req("GET", &f.system, &basic(), None).0, 401);
    assert!(
        !ipmi.run(&["chassis", "power", "status"]).success(),
        "IPMI not locked by Redfish failures:\n{}",
        f.bmc.log()
    );
}

#[test]
fn redfish_read_only_role_may_read_but_not_reset() {
    let dir = ScratchDir::new("redfish-ro");
    let f = start(dir.path(), &["--user-privilege", "USER"]);
    let sys = f.get(&f.system);
    assert_eq!(sys["PowerState"], "Off");
    let reset = format!("{}/Actions/ComputerSystem.Reset", f.system);
    let (s, _, v) = f.req("POST", &reset, &basic(), Some(r#"{"ResetType":"On"}"#));
    assert_eq!(
        (s, message_id(&v).as_str()),
        (403, "Base.1.22.InsufficientPrivilege")
    );
    let body = r#"{"Boot":{"BootSourceOverrideTarget":"Pxe"}}"#;
    assert_eq!(f.req("PATCH", &f.system, &basic(), Some(body)).0, 403);
    assert_eq!(f.get(&f.system)["PowerState"], "Off");
}

#[test]
fn redfish_every_reset_type_and_etag() {
    let dir = ScratchDir::new("redfish-reset");
    let f = start(dir.path(), &[]);
    let reset = format!("{}/Actions/ComputerSystem.Reset", f.system);
    let sys = f.get(&f.system);
    let types = &sys["Actions"]["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"];
    assert_eq!(types.as_array().unwrap().len(), 7, "{types}");
    for (ty, after) in [
        ("On", "On"),
        ("ForceRestart", "On"),
        ("GracefulRestart", "On"),
        ("PowerCycle", "On"),
        ("Nmi", "On"),
        ("ForceOff", "Off"),
        ("On", "On"),
        ("GracefulShutdown", "Off"),
    ] {
        let (s, _, v) = f.req(
            "POST",
            &reset,
            &basic(),
            Some(&format!("{{\"ResetType\":\"{ty}\"}}")),
        );
        assert_eq!(s, 204, "{ty}: {v}");
        assert_eq!(f.get(&f.system)["PowerState"], after, "after {ty}");
    }
    let (s, _, v) = f.req("POST", &reset, &basic(), Some(r#"{"ResetType":"Off"}"#));
    assert_eq!(
        (s, message_id(&v).as_str()),
        (400, "Base.1.22.ActionParameterValueNotInList")
    );
    // If-Match: a stale ETag is refused with 412, the current one accepted.
    let (_, h, _) = f.req("GET", &f.system, &basic(), None);
    let tag = h
        .lines()
        .find_map(|l| {
            l.split_once(": ")
                .filter(|(k, _)| k.eq_ignore_ascii_case("etag"))
        })
        .map(|(_, v)| v)
        .expect("an ETag")
        .trim()
        .to_string();
    let body = r#"{"Boot":{"BootSourceOverrideTarget":"Hdd"}}"#;
    let mut stale = basic();
    stale.extend(["-H".into(), "If-Match: W/\"0000000000000000\"".into()]);
    let (s, _, v) = f.req("PATCH", &f.system, &stale, Some(body));
    assert_eq!(
        (s, message_id(&v).as_str()),
        (412, "Base.1.22.PreconditionFailed")
    );
    let mut good = basic();
    good.extend(["-H".into(), format!("If-Match: {tag}")]);
    assert_eq!(f.req("PATCH", &f.system, &good, Some(body)).0, 200);
    assert_eq!(f.get(&f.system)["Boot"]["BootSourceOverrideTarget"], "Hdd");
}

#[test]
fn redfish_boot_override_is_the_ipmi_boot_setting() {
    let dir = ScratchDir::new("redfish-boot");
    let f = start(dir.path(), &[]);
    let Some(ipmi) = Ipmitool::new(&f.bmc, None) else {
        return;
    };
    let body = r#"{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Continuous","BootSourceOverrideMode":"UEFI"}}"#;
    let (s, _, v) = f.req("PATCH", &f.system, &basic(), Some(body));
    assert_eq!(s, 200, "{v}");
    let r = ipmi.run(&["chassis", "bootparam", "get", "5"]);
    let out = r.expect_success().to_string();
    assert!(out.contains("Force PXE"), "{out}");
    assert!(out.contains("Options apply to all future boots"), "{out}");
    assert!(out.contains("BIOS EFI boot"), "{out}");
    // And back: ipmitool sets a one-time legacy disk boot, Redfish reads it.
    ipmi.run(&["chassis", "bootdev", "disk"]).expect_success();
    let b = &f.get(&f.system)["Boot"];
    assert_eq!(b["BootSourceOverrideTarget"], "Hdd", "{b}");
    assert_eq!(b["BootSourceOverrideEnabled"], "Once", "{b}");
    assert_eq!(b["BootSourceOverrideMode"], "Legacy", "{b}");
    ipmi.run(&["chassis", "bootdev", "pxe"]).expect_success();
    assert_eq!(f.get(&f.system)["Boot"]["BootSourceOverrideTarget"], "Pxe");
}

/// A change while the machine is busy (in a power transition) waits for it until the
/// request's deadline (`--redfish-backend-timeout-ms`): within it the change is made, past it
/// 503 with `Retry-After`, as the IPMI face answers C0; a machine slower than the budget gets
/// 503 too.
#[test]
fn redfish_busy_machine_is_503_with_retry_after() {
    let slow_on = || BmcConfig {
        power_on_ms: 3000,
        ..BmcConfig::default()
    };
    let on_then_off = |f: &Face| {
        let reset = format!("{}/Actions/ComputerSystem.Reset", f.system);
        assert_eq!(
            f.req("POST", &reset, &basic(), Some(r#"{"ResetType":"On"}"#))
                .0,
            204
        );
        f.req(
            "POST",
            &reset,
            &basic(),
            Some(r#"{"ResetType":"ForceOff"}"#),
        )
    };
    // A budget (1 s) shorter than the power-on (3 s): 503.
    let dir = ScratchDir::new("redfish-busy");
    let addr = crate::support::unique_loopback();
    let short = ["--redfish-backend-timeout-ms", "1000"];
    let f = start_cfg(dir.path(), &short, addr, free_tcp_port(addr), slow_on());
    let (s, h, v) = on_then_off(&f);
    assert_eq!(
        (s, message_id(&v).as_str()),
        (503, "Base.1.22.ServiceTemporarilyUnavailable"),
        "{h}"
    );
    assert!(h.to_lowercase().contains("retry-after: 2"), "{h}");
    assert!(
        f.bmc.log().contains("still busy at the deadline"),
        "no log line for the 503:\n{}",
        f.bmc.log()
    );
    drop(f);
    // The default budget (20 s): the ForceOff waits for the power-on, then is carried out
    // (Ironic's reboot sends On right after ForceOff, and sushy does not retry a POST).
    let dir = ScratchDir::new("redfish-busy-waits");
    let addr = crate::support::unique_loopback();
    let f = start_cfg(dir.path(), &[], addr, free_tcp_port(addr), slow_on());
    let (s, h, _) = on_then_off(&f);
    assert_eq!(s, 204, "{h}");
    assert_eq!(f.get(&f.system)["PowerState"], "Off");
    assert!(
        f.bmc.log().contains("waited for the machine"),
        "{}",
        f.bmc.log()
    );
    drop(f);
    // A machine slower than the budget: the GET is answered 503 at the budget.
    let dir = ScratchDir::new("redfish-slow");
    let addr = crate::support::unique_loopback();
    let extra = [
        "--sim-api-latency-ms",
        "1500",
        "--redfish-backend-timeout-ms",
        "200",
    ];
    let f = start_at(dir.path(), &extra, addr, free_tcp_port(addr));
    let t = Instant::now();
    let (s, h, _) = f.req("GET", &f.system, &basic(), None);
    assert_eq!(s, 503, "{h}");
    assert!(
        t.elapsed() < Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    assert!(h.to_lowercase().contains("retry-after"), "{h}");
}

/// The self-signed certificate is made once (key 0600) and kept across restarts; curl
/// verifies every answer against it. Plain HTTP only when asked.
#[test]
fn redfish_tls_certificate_is_kept_across_restarts() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = ScratchDir::new("redfish-tls");
    let f = start(dir.path(), &[]);
    let cert = std::fs::read(&f.cert).unwrap();
    let mode = std::fs::metadata(dir.path().join("redfish-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let at: std::net::SocketAddr = f.base.trim_start_matches("https://").parse().unwrap();
    drop(f);
    let std::net::IpAddr::V4(ip) = at.ip() else {
        unreachable!()
    };
    let f = start_at(dir.path(), &[], ip, at.port());
    assert_eq!(std::fs::read(&f.cert).unwrap(), cert, "a new certificate");
    f.get("/redfish/v1/Systems");
    drop(f);
    // The operator's own pair (here: the one just made): nothing is written to the state dir.
    let own = ScratchDir::new("redfish-own");
    let (c, k) = (f_cert(dir.path()), dir.path().join("redfish-key.pem"));
    let f = start_at(
        own.path(),
        &[
            "--redfish-cert",
            &c.display().to_string(),
            "--redfish-key",
            &k.display().to_string(),
        ],
        ip,
        at.port(),
    );
    assert_eq!(f.cert, c);
    f.get("/redfish/v1/Systems");
    assert!(!own.path().join("redfish-cert.pem").exists());
    drop(f);
    let plain = ScratchDir::new("redfish-plain");
    let f = start(plain.path(), &["--redfish-insecure-http"]);
    f.get("/redfish/v1/Systems");
    assert!(!f.cert.exists(), "plain HTTP made a certificate");
}

pub(crate) fn f_cert(state: &Path) -> PathBuf {
    state.join("redfish-cert.pem")
}

/// A Python that can `import sushy`, or `None` after printing SKIP.
pub(crate) fn python_with_sushy() -> Option<PathBuf> {
    crate::pyghmi::python_with("sushy", TIER, "sushy")
}

/// sushy, as Ironic's redfish driver drives it: session auth, the system, power on and off,
/// a boot source.
#[test]
fn redfish_sushy_power_and_boot_source() {
    let Some(py) = python_with_sushy() else {
        return;
    };
    let dir = ScratchDir::new("redfish-sushy");
    let f = start(dir.path(), &[]);
    let r = f.sushy(&py, "sushy_client.py", &[], Duration::from_secs(60));
    assert!(r.success(), "sushy client failed:\n{r}\n{}", f.bmc.log());
    assert!(r.stdout.contains("OK"), "{r}");
    let b = &f.get(&f.system)["Boot"];
    assert_eq!(b["BootSourceOverrideTarget"], "Pxe", "{b}");
    assert_eq!(b["BootSourceOverrideEnabled"], "Continuous", "{b}");
}

/// The CSDL schemas for DMTF's validator, offline: `OVBMC_REDFISH_SCHEMAS`, else the ones
/// the project keeps for this test (`tests/fixtures/redfish-csdl`, see its README).
fn schema_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("OVBMC_REDFISH_SCHEMAS")
        .map(PathBuf::from)
        .into_iter()
        .chain([root.join("tests/fixtures/redfish-csdl")])
        .find(|d| d.join("ComputerSystem_v1.xml").is_file())
}

/// A DMTF validator's program (`name`, e.g. `rf_service_validator`) beside the venv's Python
/// (`OVBMC_PYTHON`, else `~/.cache/ovbmc/venv`); `None` (and SKIP, or a panic when clients are
/// required) without it.
fn dmtf_validator(name: &str, what: &str) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("OVBMC_PYTHON") {
        candidates.push(PathBuf::from(p).with_file_name(name));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/ovbmc/venv/bin").join(name));
    }
    let found = candidates.into_iter().find(|p| p.is_file());
    if found.is_none() {
        if clients_required() {
            panic!("{TIER}: {name} not installed (run scripts/test-all)");
        }
        skip(TIER, &format!("{what} not installed"));
    }
    found
}

/// Run DMTF's `redfish-service-validator` against `c` as `user`, with session and with Basic
/// auth, logs under `dir`; asserts no failure and returns the (auth, counts) lines.
fn service_validator(validator: &Path, schemas: &Path, c: &Client, user: &str, dir: &Path) {
    for auth in ["Session", "Basic"] {
        let logs = dir.join(format!("validator-{auth}"));
        let r = run(
            validator,
            &[
                "--user".into(),
                user.into(),
                "--password".into(),
                PASSWORD.into(),
                "--rhost".into(),
                c.base.clone(),
                "--authtype".into(),
                auth.into(),
                "--schema_directory".into(),
                schemas.display().to_string(),
                "--logdir".into(),
                logs.display().to_string(),
            ],
            &[],
            Duration::from_secs(300),
        );
        // The summary table: | PASS | WARN | FAIL | NOT TESTED |, then the counts.
        let counts: Vec<u64> = r
            .stdout
            .lines()
            .skip_while(|l| !l.contains("FAIL"))
            .find(|l| l.trim_start().starts_with('|') && l.chars().any(|c| c.is_ascii_digit()))
            .map(|l| l.split('|').filter_map(|c| c.trim().parse().ok()).collect())
            .unwrap_or_default();
        let log = std::fs::read_to_string(&c.log_file).unwrap_or_default();
        // What failed, from the validator's own logs (its summary only counts).
        let why: Vec<String> = std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .flat_map(|t| {
                t.lines()
                    .filter(|l| l.contains("FAIL") || l.contains("ERROR"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            r.success() && counts.len() == 4 && counts[2] == 0,
            "validator ({auth}) found failures {counts:?}:\n{}\n{r}\n{log}",
            why.join("\n")
        );
        eprintln!(
            "redfish-service-validator ({auth}, {}): {} pass, {} warn, {} fail, {} not tested",
            c.base, counts[0], counts[1], counts[2], counts[3]
        );
    }
}

/// DMTF's `redfish-service-validator` (PyPI; `rf_service_validator` beside the venv's Python)
/// walks the whole service with session and with Basic auth and finds no failure. SKIP
/// without the validator or the schemas.
#[test]
fn redfish_service_validator_finds_no_failures() {
    let Some(validator) = dmtf_validator("rf_service_validator", "redfish-service-validator")
    else {
        return;
    };
    let Some(schemas) = schema_dir() else {
        skip(TIER, "no Redfish CSDL schemas (set OVBMC_REDFISH_SCHEMAS)");
        return;
    };
    let dir = ScratchDir::new("redfish-validator");
    let f = start(dir.path(), &[]);
    // Media in the CD and two tasks (one Completed, one Exception), so that the validator
    // walks a filled VirtualMedia and Task resources, not only empty collections.
    let img = crate::redfish_media::ImageServer::start(4096);
    let cd = crate::redfish_media::cd(&f);
    let insert = crate::redfish_media::insert_action(&cd);
    for url in [crate::redfish_media::unreachable_url(), img.url("v.iso")] {
        let body = format!(r#"{{"Image":"{url}"}}"#);
        let (s, h, v) = f.req("POST", &insert, &basic(), Some(&body));
        assert_eq!(s, 202, "{v}");
        crate::redfish_media::follow(&f, &h);
    }
    assert_eq!(f.get(&cd)["Inserted"], true);
    service_validator(&validator, &schemas, &f, USER, dir.path());
}

/// A fleet behind one Redfish service: each user sees its own BMC's system with its own role,
/// and a SIGHUP reload gives the face the new fleet.
#[test]
fn redfish_serves_a_fleet_per_user_and_follows_a_reload() {
    let dir = ScratchDir::new("redfish-fleet");
    let pw = dir.write_secret("pw", PASSWORD);
    let (a, b, r) = (
        crate::support::unique_loopback(),
        crate::support::unique_loopback(),
        crate::support::unique_loopback(),
    );
    let port = crate::support::free_udp_port(a);
    let rport = free_tcp_port(r);
    let fleet = |name: &str| {
        format!(
            "[defaults]\nbackend = \"sim\"\npassword_file = \"{}\"\nsim_power_on_ms = 0\n\
             sim_power_off_ms = 0\nport = {port}\n\
             [redfish]\naddress = \"{r}:{rport}\"\nstate_dir = \"state\"\n\
             [[bmc]]\naddress = \"{a}\"\ninstance = \"{name}\"\n\
             [[bmc]]\naddress = \"{b}\"\ninstance = \"node-b\"\nuser = \"viewer\"\n\
             privilege = \"USER\"\n",
            pw.display()
        )
    };
    let cfg = dir.path().join("fleet.toml");
    std::fs::write(&cfg, fleet("node-a")).unwrap();
    let log_file = dir.path().join("ovbmc.log");
    let mut p = crate::fleet::FleetProc::spawn(
        &[],
        &["--config".into(), cfg.display().to_string()],
        log_file.clone(),
    );
    p.wait_log("serving bmcs=2", 1, Duration::from_secs(30))
        .unwrap_or_else(|l| panic!("{l}"));
    let c = Client {
        base: format!("https://{r}:{rport}"),
        cert: dir.path().join("state/redfish-cert.pem"),
        log_file,
    };
    let viewer = vec!["-u".to_string(), format!("viewer:{PASSWORD}")];
    let names = |auth: &[String]| -> Vec<String> {
        let (s, _, v) = c.req("GET", "/redfish/v1/Systems", auth, None);
        assert_eq!(s, 200, "{v}");
        v["Members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let (_, _, sys) = c.req("GET", m["@odata.id"].as_str().unwrap(), auth, None);
                sys["Name"].as_str().unwrap().to_string()
            })
            .collect()
    };
    assert_eq!(names(&basic()), ["node-a"]);
    assert_eq!(names(&viewer), ["node-b"]);
    let (_, _, v) = c.req("GET", "/redfish/v1/Systems", &viewer, None);
    let sys = v["Members"][0]["@odata.id"].as_str().unwrap().to_string();
    let reset = format!("{sys}/Actions/ComputerSystem.Reset");
    let on = Some(r#"{"ResetType":"On"}"#);
    assert_eq!(c.req("POST", &reset, &viewer, on).0, 403);
    let (_, _, acct) = c.req(
        "GET",
        "/redfish/v1/AccountService/Accounts/viewer",
        &viewer,
        None,
    );
    assert_eq!(acct["RoleId"], "ReadOnly");
    // The admin does not see (or reach) the viewer's system.
    assert_eq!(c.req("GET", &sys, &basic(), None).0, 404);

    std::fs::write(&cfg, fleet("node-a-renamed")).unwrap();
    p.signal("HUP");
    p.wait_log("reload:", 1, Duration::from_secs(30))
        .unwrap_or_else(|l| panic!("{l}"));
    assert_eq!(names(&basic()), ["node-a-renamed"]);
    assert_eq!(names(&viewer), ["node-b"]);
}

/// Run DMTF's `redfish-protocol-validator` against `c` as `user` over HTTPS, trusting `c`'s
/// certificate, report under `dir`; asserts no failure.
fn protocol_validator(validator: &Path, c: &Client, user: &str, dir: &Path) {
    let cert = c.cert.display().to_string();
    let r = run(
        validator,
        &[
            "-u".into(),
            user.into(),
            "-p".into(),
            PASSWORD.into(),
            "-r".into(),
            c.base.clone(),
            "--ca-bundle".into(),
            cert.clone(),
            "--report-dir".into(),
            dir.join("report").display().to_string(),
        ],
        // Some of its requests ignore --ca-bundle and use requests' default trust.
        &[("REQUESTS_CA_BUNDLE", cert.as_str())],
        Duration::from_secs(300),
    );
    let summary = r
        .stdout
        .lines()
        .chain(r.stderr.lines())
        .find(|l| l.starts_with("Summary"))
        .unwrap_or("")
        .to_string();
    let log = std::fs::read_to_string(&c.log_file).unwrap_or_default();
    assert!(
        r.success() && summary.contains("FAIL: 0,"),
        "protocol validator: {summary}\n{r}\n{log}"
    );
    eprintln!("redfish-protocol-validator ({}): {summary}", c.base);
}

/// DMTF's `redfish-protocol-validator` (PyPI; `rf_protocol_validator` beside the venv's Python)
/// over HTTPS, trusting the self-signed certificate, finds no failure. SKIP without it.
#[test]
fn redfish_protocol_validator_finds_no_failures() {
    let Some(validator) = dmtf_validator("rf_protocol_validator", "redfish-protocol-validator")
    else {
        return;
    };
    let dir = ScratchDir::new("redfish-protocol");
    let f = start(dir.path(), &[]);
    protocol_validator(&validator, &f, USER, dir.path());
}

/// Both DMTF validators against `ovbmc --backend nova --redfish` on the lab's Nova
/// (`baremetal_0`; the redfish/nova tier: SKIP without the lab or the validators): 0
/// failures, and the System's EthernetInterfaces are the instance's port MACs as Nova lists
/// them.
#[test]
fn redfish_nova_validators_find_no_failures() {
    let Some(clouds) = crate::nova::lab() else {
        return;
    };
    let (Some(service), Some(protocol)) = (
        dmtf_validator("rf_service_validator", "redfish-service-validator"),
        dmtf_validator("rf_protocol_validator", "redfish-protocol-validator"),
    ) else {
        return;
    };
    let Some(schemas) = schema_dir() else {
        skip(TIER, "no Redfish CSDL schemas (set OVBMC_REDFISH_SCHEMAS)");
        return;
    };
    let _g = crate::nova::hold(&crate::nova::BAREMETAL_0);
    let dir = ScratchDir::new("redfish-nova-validators");
    dir.write_secret("pw", PASSWORD);
    let (_bmc, c) = start_nova(&clouds, dir.path(), "baremetal_0");
    let admin = vec!["-u".to_string(), format!("admin:{PASSWORD}")];
    let (s, _, v) = c.req("GET", "/redfish/v1/Systems", &admin, None);
    assert_eq!(s, 200, "{v}");
    let system = v["Members"][0]["@odata.id"].as_str().unwrap().to_string();
    let (s, _, sys) = c.req("GET", &system, &admin, None);
    assert_eq!(
        (s, sys["Name"].as_str()),
        (200, Some("baremetal_0")),
        "{sys}"
    );
    // What the cloud says, read with its own CLI: the flavor's vCPUs and RAM, the ports' MACs.
    let cli = crate::support::LabCli::with(&clouds);
    let flavor = cli.json(&["flavor", "show", "baremetal"]);
    assert_eq!(
        sys["ProcessorSummary"]["Count"], flavor["vcpus"],
        "{sys} vs {flavor}"
    );
    let ram = flavor["ram"].as_f64().expect("flavor ram");
    assert_eq!(
        sys["MemorySummary"]["TotalSystemMemoryGiB"].as_f64(),
        Some(ram / 1024.0),
        "{sys} vs {flavor}"
    );
    // EthernetInterfaces: one member per port of the instance.
    let mut macs: Vec<String> = cli
        .json(&["port", "list", "--server", "baremetal_0"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["MAC Address"].as_str().unwrap().to_lowercase())
        .collect();
    macs.sort();
    let nics = sys["EthernetInterfaces"]["@odata.id"].as_str().unwrap();
    let (s, _, col) = c.req("GET", nics, &admin, None);
    assert_eq!(s, 200, "{col}");
    let mut got: Vec<String> = col["Members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let (s, _, nic) = c.req("GET", m["@odata.id"].as_str().unwrap(), &admin, None);
            assert_eq!(s, 200, "{nic}");
            nic["MACAddress"].as_str().unwrap().to_lowercase()
        })
        .collect();
    got.sort();
    assert_eq!(got, macs, "{col}");
    eprintln!("redfish nova: {} EthernetInterfaces ({macs:?})", macs.len());
    service_validator(&service, &schemas, &c, "admin", dir.path());
    protocol_validator(&protocol, &c, "admin", dir.path());
}
