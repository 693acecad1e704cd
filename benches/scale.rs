//! `cargo bench --bench scale [-- ARGS]`: one ovbmc process serving 1, 1,000 and 10,000 BMC
//! endpoints on loopback (simulator backend): start-up, idle RSS and CPU, load spread over all
//! endpoints, the cost curve as clients grow (`scripts/bench-scale`, which ARGS go to:
//! `--sizes 1,1000,10000 --duration S --clients N --curve 1,2,4 --idle S --json FILE`).
//! Under `cargo test --benches` it skips: it takes minutes. See docs/performance.md.

mod common;

fn main() -> std::process::ExitCode {
    let (bench, extra) = common::args();
    if !bench {
        println!("scale: skipped (not a bench run; use `cargo bench --bench scale`)");
        return std::process::ExitCode::SUCCESS;
    }
    common::run_script("bench-scale", &extra)
}
