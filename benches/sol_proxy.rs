//! `cargo bench --bench sol_proxy [-- ARGS]`: Serial over LAN to a lab guest through ovbmc
//! (`--backend nova --console serial`, driven by `ovbmc-bench --mode sol-echo|sol-burst`)
//! beside the same path without ovbmc (a WebSocket client straight to the OpenStack lab's
//! nova-serialproxy): keystroke-to-echo latency and guest-output throughput, as a table
//! (`scripts/bench-sol-proxy`, which ARGS go to: `--server NAME --count N --bytes N
//! --repeat N --json FILE`). Without the lab up (`tests/lab/openstack/setup && up`) the
//! script prints a SKIP line and succeeds. Under `cargo test --benches` it skips: it needs
//! the lab. See docs/performance.md, "Serial over LAN".

mod common;

fn main() -> std::process::ExitCode {
    let (bench, extra) = common::args();
    if !bench {
        println!("sol_proxy: skipped (not a bench run; use `cargo bench --bench sol_proxy`)");
        return std::process::ExitCode::SUCCESS;
    }
    common::run_script("bench-sol-proxy", &extra)
}
