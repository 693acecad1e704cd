//! `--metrics`: the Prometheus endpoint of a real `ovbmc --backend sim`, after real ipmitool
//! traffic — successful commands, a USER-level session refused a power command (D4), a
//! wrong password, and enough unknown-user logins to lock the source out (issue 5 item 3).
//! The HTTP side is read with a plain `TcpStream`, as a scraper would.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::ipmitool::Ipmitool;
use crate::support::{Bmc, BmcConfig, Ran, client};

const TIER: &str = "metrics";

/// A TCP port that was free on `addr` a moment ago (the address is unique to this test).
fn free_tcp_port(addr: Ipv4Addr) -> u16 {
    let l = TcpListener::bind((addr, 0)).expect("bind a TCP probe");
    l.local_addr().expect("local_addr").port()
}

/// One HTTP/1.1 request; returns the status code and the body.
fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to the metrics listener {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (code, body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: ovbmc\r\nUser-Agent: it\r\n\r\n"),
    )
}

/// The sum of the samples of `name` whose labels include every `k="v"` of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let n = series.split('{').next().unwrap_or_default();
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().expect("a number"))
        .sum()
}

/// ipmitool `-C 17` against `bmc`, one try per step (a refused login must not turn into four),
/// as `user`, with `-P pw` instead of the password file and `-L level` when given.
struct Tool<'a>(Ipmitool<'a>);

impl Tool<'_> {
    fn run(
        &self,
        user: &str,
        pw: Option<&str>,
        level: Option<&'static str>,
        words: &[&str],
    ) -> Ran {
        let mut i = self.0.clone().user(user).extra(&["-R", "1", "-N", "2"]);
        if let Some(p) = pw {
            i = i.password(p);
        }
        if let Some(l) = level {
            i = i.level(l);
        }
        i.run(words)
    }
}

#[test]
fn counters_move_with_real_ipmitool_traffic() {
    // The metrics tier's own SKIP line when ipmitool is missing.
    if client(TIER, "ipmitool").is_none() {
        return;
    }
    // The BMC's address is chosen by `Bmc::spawn`; the metrics go on 127.0.0.1, a free port.
    let maddr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port(Ipv4Addr::LOCALHOST)));
    let bmc = Bmc::start_with(BmcConfig {
        extra_args: vec!["--metrics".into(), maddr.to_string()],
        ..BmcConfig::default()
    });
    let t = Tool(Ipmitool::new(&bmc, Some(17)).expect("ipmitool is installed"));

    // /healthz turns 200 once the fleet is served (a moment after the socket is bound).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = get(maddr, "/healthz");
        if code == 200 {
            assert_eq!(body, "ok\n");
            break;
        }
        assert!(Instant::now() < deadline, "/healthz stayed {code}: {body}");
        thread::sleep(Duration::from_millis(50));
    }

    // Good traffic: two logins, a power-on (machine path), a status read.
    t.run("admin", None, None, &["chassis", "power", "on"])
        .expect_success();
    t.run("admin", None, None, &["chassis", "power", "status"])
        .expect_success();
    // A USER session may read but not control: Chassis Control answers D4.
    let r = t.run("admin", None, Some("USER"), &["chassis", "power", "off"]);
    r.expect_failure();
    assert!(r.output().contains("nsufficient privilege"), "{r}");
    // A wrong password: ipmitool rejects our RAKP 2 and gives up.
    t.run(
        "admin",
        Some("wrong-password"),
        None,
        &["chassis", "power", "status"],
    )
    .expect_failure();

    let (code, text) = get(maddr, "/metrics");
    assert_eq!(code, 200, "{text}");
    let bmc_label = bmc.socket_addr().to_string();
    let me = [("bmc", bmc_label.as_str()), ("instance", "it-node")];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        me.iter().copied().chain(extra.iter().copied()).collect()
    };
    for line in [
        "# TYPE ovbmc_requests_total counter",
        "# TYPE ovbmc_backend_call_duration_seconds histogram",
        "# HELP ovbmc_sessions_active ",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    assert!(
        text.contains(&format!(
            "ovbmc_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert_eq!(sample(&text, "ovbmc_bmcs_configured", &[]), 1.0, "{text}");
    assert_eq!(sample(&text, "ovbmc_logins_total", &me), 3.0, "{text}");
    // Every ipmitool closed its session on the way out.
    assert_eq!(sample(&text, "ovbmc_sessions_active", &me), 0.0, "{text}");
    assert!(
        sample(&text, "ovbmc_datagrams_received_total", &me) >= 20.0,
        "{text}"
    );
    let req = |cmd: &'static str, cc: &'static str| {
        sample(
            &text,
            "ovbmc_requests_total",
            &with(&[("command", cmd), ("cc", cc)]),
        )
    };
    assert_eq!(req("chassis_control", "00"), 1.0, "{text}");
    assert_eq!(req("chassis_control", "d4"), 1.0, "{text}");
    assert!(req("get_chassis_status", "00") >= 1.0, "{text}");
    assert!(req("get_channel_auth_capabilities", "00") >= 4.0, "{text}");
    assert_eq!(req("close_session", "00"), 3.0, "{text}");
    // The simulator answered every machine call (power on, power status).
    assert!(
        sample(&text, "ovbmc_backend_call_duration_seconds_count", &me) >= 2.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "ovbmc_backend_errors_total", &me),
        0.0,
        "{text}"
    );

    // The wrong password is counted as a failed login: at once if ipmitool reports its
    // RAKP 2 check failure in RAKP 3, else when the half-open session expires (5 s) — which
    // also shows that the expiry timer fires without a packet to wake the BMC.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, text) = get(maddr, "/metrics");
        if sample(&text, "ovbmc_login_failures_total", &me) >= 1.0 {
            assert!(
                sample(
                    &text,
                    "ovbmc_login_failures_total",
                    &with(&[("reason", "abandoned_after_rakp2")])
                ) + sample(
                    &text,
                    "ovbmc_login_failures_total",
                    &with(&[("reason", "bad_password")])
                ) >= 1.0,
                "{text}"
            );
            assert_eq!(sample(&text, "ovbmc_sessions_half_open", &me), 0.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wrong password never counted:\n{text}"
        );
        thread::sleep(Duration::from_millis(200));
    }

    // Online guessing: unknown users from one source. The source is locked out at the
    // default threshold (10 failures in 60 s) and further logins are refused. Last, because
    // every later ipmitool from this host would be refused too.
    for i in 0..12 {
        t.run(
            &format!("guess{i}"),
            Some("x"),
            None,
            &["chassis", "power", "status"],
        )
        .expect_failure();
    }
    let (_, text) = get(maddr, "/metrics");
    assert!(
        sample(
            &text,
            "ovbmc_login_failures_total",
            &with(&[("reason", "unknown_user")])
        ) >= 9.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "ovbmc_lockouts_total", &with(&[("scope", "source")])),
        1.0,
        "{text}"
    );
    assert!(
        sample(&text, "ovbmc_logins_refused_locked_out_total", &me) >= 1.0,
        "{text}"
    );

    // The HTTP edges: an unknown path, another method, a malformed request line.
    assert_eq!(get(maddr, "/nope").0, 404);
    assert_eq!(
        http(maddr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0,
        405
    );
    assert_eq!(http(maddr, "hello\r\n\r\n").0, 400);
    // Still serving after all that.
    assert_eq!(get(maddr, "/healthz").0, 200);
}

/// A metrics address that cannot be bound stops ovbmc before it serves anything.
#[test]
fn unusable_metrics_address_is_a_start_up_error() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = taken.local_addr().unwrap();
    let cfg = BmcConfig {
        extra_args: vec!["--metrics".into(), addr.to_string()],
        ..BmcConfig::default()
    };
    let mut bmc = Bmc::spawn(cfg);
    let status = bmc
        .wait_exit(Duration::from_secs(20))
        .expect("ovbmc should exit");
    assert!(!status.success());
    let log = bmc.log();
    assert!(
        log.contains(&format!("cannot listen for metrics on TCP {addr}")),
        "{log}"
    );
    assert!(!log.contains("serving"), "{log}");
}

/// The lock-out is configurable (issue 5 item 3): with `--lockout-source-failures 2
/// --lockout-secs 3`, two unknown-user logins lock this source out, the right password is then
/// refused too, and once the 3 s are over the right password works again; the metrics count
/// the one lock-out.
#[test]
fn lockout_threshold_and_duration_come_from_the_command_line() {
    // The metrics tier's own SKIP line when ipmitool is missing.
    if client(TIER, "ipmitool").is_none() {
        return;
    }
    let maddr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port(Ipv4Addr::LOCALHOST)));
    let bmc = Bmc::start_with(BmcConfig {
        extra_args: [
            "--metrics",
            &maddr.to_string(),
            "--lockout-source-failures",
            "2",
            "--lockout-secs",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..BmcConfig::default()
    });
    let t = Tool(Ipmitool::new(&bmc, Some(17)).expect("ipmitool is installed"));
    t.run("admin", None, None, &["chassis", "power", "status"])
        .expect_success();
    for i in 0..2 {
        t.run(
            &format!("guess{i}"),
            Some("x"),
            None,
            &["chassis", "power", "status"],
        )
        .expect_failure();
    }
    let locked_at = Instant::now();
    t.run("admin", None, None, &["chassis", "power", "status"])
        .expect_failure();
    let (_, text) = get(maddr, "/metrics");
    assert_eq!(
        sample(&text, "ovbmc_lockouts_total", &[("scope", "source")]),
        1.0,
        "{text}"
    );
    // The lock-out ends 3 s after it began (allow for slow machines; no upper bound asserted).
    thread::sleep(
        Duration::from_secs(3).saturating_sub(locked_at.elapsed()) + Duration::from_millis(500),
    );
    t.run("admin", None, None, &["chassis", "power", "status"])
        .expect_success();
}
