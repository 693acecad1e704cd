//! `cargo bench --bench side_by_side [-- ARGS]`: the same RMCP+ load (suite 3) against ovbmc,
//! OpenIPMI's ipmi_sim, pyghmi's fakebmc and the C floor, as a table
//! (`scripts/bench-side-by-side`, which ARGS go to: `--duration S --repeat N --clients N
//! --json FILE`). A missing peer is reported and left out. Under `cargo test --benches` it
//! skips: it needs the peers and takes minutes. See docs/performance.md.

mod common;

fn main() -> std::process::ExitCode {
    let (bench, extra) = common::args();
    if !bench {
        println!("side_by_side: skipped (not a bench run; use `cargo bench --bench side_by_side`)");
        return std::process::ExitCode::SUCCESS;
    }
    common::run_script("bench-side-by-side", &extra)
}
