//! `cargo bench --bench daemon [-- --duration S --clients N]`: the load generator
//! (`ovbmc-bench`, src/bin/ovbmc-bench.rs) against the real `ovbmc` binary (simulator
//! backend, one BMC on 127.0.0.1), printing a table: sessions/s, requests/s, latency, and the
//! server's CPU per request and RSS read from /proc; then Serial over LAN through the
//! simulator's console: keystroke-to-echo latency and guest-output throughput. Both binaries
//! are the ones cargo built for this target (release profile under `cargo bench`).
//!
//! Under `cargo test --benches` (no `--bench` argument) it does one tiny smoke run (one client,
//! one second, the debug build) and checks only that sessions completed: never a timing.
//! See docs/performance.md.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};

const OVBMC: &str = env!("CARGO_BIN_EXE_ovbmc");
const LOADGEN: &str = env!("CARGO_BIN_EXE_ovbmc-bench");
const PASSWORD: &str = "bench-password";

/// (label, ovbmc-bench arguments). Session-less answers to a source are budgeted (the
/// reflection defence, docs/security.md): logins come from 1,024 loopback source addresses
/// (`--sources`), or they would measure the budget (about 150 logins/s from one address); no
/// ASF ping, which is only session-less.
const WORKLOADS: &[(&str, &[&str])] = &[
    (
        "login, suite 17, no commands",
        &[
            "--mode",
            "login",
            "--suite",
            "17",
            "--commands",
            "0",
            "--sources",
            "1024",
        ],
    ),
    (
        "login, suite 3, no commands",
        &[
            "--mode",
            "login",
            "--suite",
            "3",
            "--commands",
            "0",
            "--sources",
            "1024",
        ],
    ),
    (
        "hold, suite 17, Get Device ID",
        &["--mode", "hold", "--suite", "17", "--command", "device-id"],
    ),
    (
        "hold, suite 17, Chassis Status (backend)",
        &[
            "--mode",
            "hold",
            "--suite",
            "17",
            "--command",
            "chassis-status",
        ],
    ),
];

/// The ovbmc process; killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    // Bind port 0, read it, let it go: a small race, acceptable on loopback for a bench.
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(16_623)
}

fn start(pw: &Path, port: u16) -> std::io::Result<Server> {
    let child = Command::new(OVBMC)
        .args([
            "--backend",
            "sim",
            "--bind",
            "127.0.0.1",
            "--instance",
            "bench",
        ])
        .args(["--port", &port.to_string(), "--sim-power-on-ms", "0"])
        .arg("--password-file")
        .arg(pw)
        .env("OVBMC_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    Ok(Server(child))
}

fn loadgen(
    port: u16,
    pw: &Path,
    pid: u32,
    args: &[&str],
    extra: &[String],
) -> Result<serde_json::Value, String> {
    let out = Command::new(LOADGEN)
        .args(["--target", &format!("127.0.0.1:{port}"), "--json"])
        .arg("--password-file")
        .arg(pw)
        .args(["--pid", &pid.to_string()])
        .args(args)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {LOADGEN}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ovbmc-bench {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).map_err(|e| format!("ovbmc-bench output {text:?}: {e}"))
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v.get(key)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0)
}

fn main() -> ExitCode {
    let (bench, extra) = common::args();
    let dir = std::env::temp_dir().join(format!("ovbmc-bench-{}", std::process::id()));
    let pw: PathBuf = dir.join("pw");
    let write = || {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::create_dir_all(&dir)?;
        // 0600: ovbmc warns about a secret file others can read.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&pw)?
            .write_all(PASSWORD.as_bytes())
    };
    if let Err(e) = write() {
        eprintln!("daemon bench: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let code = run(bench, &extra, &pw);
    let _ = std::fs::remove_dir_all(&dir);
    code
}

/// A fresh server on a free port, once it answers. Fresh for every workload: the per-source
/// budget for session-less answers (the reflection defence) must not carry over from one
/// workload's pre-session messages to the next.
fn serve(pw: &Path) -> Result<(Server, u16), String> {
    let port = free_port();
    let server = start(pw, port).map_err(|e| format!("cannot start {OVBMC}: {e}"))?;
    // Until it answers (probe re-sends to a silent target; bounded by --duration).
    loadgen(
        port,
        pw,
        server.0.id(),
        &["--mode", "probe", "--duration", "30"],
        &[],
    )
    .map_err(|e| format!("ovbmc did not come up: {e}"))?;
    Ok((server, port))
}

/// A figure, or "-" where the workload has none (no commands, so no command latency).
fn cell(v: f64, decimals: usize) -> String {
    if v == 0.0 {
        "-".into()
    } else {
        format!("{v:.decimals$}")
    }
}

fn run(bench: bool, extra: &[String], pw: &Path) -> ExitCode {
    if !bench {
        // Smoke: the pipeline works end to end. Counts only, never a timing.
        let smoke = ["--mode", "login", "--clients", "1", "--duration", "1"];
        let r = serve(pw).and_then(|(s, port)| loadgen(port, pw, s.0.id(), &smoke, &[]));
        return match r {
            Ok(v) if f(&v, "sessions") >= 1.0 => {
                println!("daemon: smoke run ok (use `cargo bench --bench daemon` to measure)");
                ExitCode::SUCCESS
            }
            Ok(v) => {
                eprintln!("daemon: smoke run completed no session: {v}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("daemon: smoke run: {e}");
                ExitCode::FAILURE
            }
        };
    }
    println!(
        "\novbmc-bench against the ovbmc binary (simulator, 127.0.0.1, a fresh process per \
         workload); extra args: {extra:?}\n"
    );
    println!(
        "| workload | sessions/s | requests/s | command p50 µs | command p99 µs | server CPU µs/request | RSS MiB | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for (label, args) in WORKLOADS {
        let r = serve(pw).and_then(|(s, port)| loadgen(port, pw, s.0.id(), args, extra));
        match r {
            Ok(v) => println!(
                "| {label} | {} | {:.0} | {} | {} | {:.1} | {:.1} | {:.0} |",
                cell(f(&v, "sessions_per_s"), 0),
                f(&v, "requests_per_s"),
                cell(f(&v, "p50_us"), 0),
                cell(f(&v, "p99_us"), 0),
                f(&v, "server_cpu_us_per_request"),
                f(&v, "server_rss_kib") / 1024.0,
                f(&v, "errors"),
            ),
            Err(e) => {
                eprintln!("{label}: {e}");
                failed = true;
            }
        }
    }
    // Serial over LAN through the simulator's console (ovbmc-bench's own SOL client, no
    // ipmitool in the path): keystroke-to-echo latency and guest-output throughput.
    println!(
        "\n| SOL workload | keystrokes | echo p50 µs | echo p99 µs | bytes | MB/s | server CPU µs/KiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, args) in SOL_WORKLOADS {
        let r = serve(pw).and_then(|(s, port)| loadgen(port, pw, s.0.id(), args, &[]));
        match r {
            Ok(v) => println!(
                "| {label} | {} | {} | {} | {} | {} | {} |",
                cell(f(&v, "count"), 0),
                cell(f(&v, "echo_p50_us"), 0),
                cell(f(&v, "echo_p99_us"), 0),
                cell(f(&v, "bytes"), 0),
                cell(f(&v, "mb_per_s"), 2),
                cell(f(&v, "server_cpu_us_per_kib"), 1),
            ),
            Err(e) => {
                eprintln!("{label}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// (label, ovbmc-bench arguments) of the SOL table.
const SOL_WORKLOADS: &[(&str, &[&str])] = &[
    (
        "echo, suite 17",
        &["--mode", "sol-echo", "--suite", "17", "--count", "500"],
    ),
    (
        "echo, suite 3",
        &["--mode", "sol-echo", "--suite", "3", "--count", "500"],
    ),
    (
        "burst 4 MiB, suite 17",
        &["--mode", "sol-burst", "--suite", "17", "--bytes", "4194304"],
    ),
    (
        "burst 4 MiB, suite 3",
        &["--mode", "sol-burst", "--suite", "3", "--bytes", "4194304"],
    ),
];
