//! `cargo bench --bench redfish_side_by_side [-- ARGS]`: ovbmc's Redfish face beside
//! sushy-tools' OpenStack driver on the lab's Nova, as a table
//! (`scripts/bench-redfish-side-by-side`, which ARGS go to: `--systems 1,5 --cycles N
//! --interval S --seconds S --repeat N --json FILE`). Without the OpenStack lab it says so and
//! skips. Under `cargo test --benches` it skips: it needs the lab and takes minutes. See
//! docs/performance.md.

mod common;

fn main() -> std::process::ExitCode {
    let (bench, extra) = common::args();
    if !bench {
        println!(
            "redfish_side_by_side: skipped (not a bench run; use `cargo bench --bench redfish_side_by_side`)"
        );
        return std::process::ExitCode::SUCCESS;
    }
    common::run_script("bench-redfish-side-by-side", &extra)
}
