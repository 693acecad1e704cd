//! Shared by the daemon-level benches (`benches/*.rs`, `harness = false`): whether this is a
//! real bench run, and the paths cargo built.
//!
//! `cargo bench` passes `--bench` to a `harness = false` target; `cargo test --benches` (and
//! `--all-targets`) runs it without, and then a bench does a tiny smoke run or skips plainly:
//! tests never time anything and never need the peers.

#![allow(dead_code)] // each bench uses a part

use std::path::PathBuf;

/// The arguments after the program name, and whether `--bench` was among them.
pub fn args() -> (bool, Vec<String>) {
    let mut bench = false;
    let rest = std::env::args()
        .skip(1)
        .filter(|a| {
            let b = a == "--bench";
            bench |= b;
            !b
        })
        .collect();
    (bench, rest)
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run one of `scripts/bench-*` (Python) with the binaries cargo just built for this bench
/// (release profile under `cargo bench`), passing `extra` through; it prints the table.
pub fn run_script(name: &str, extra: &[String]) -> std::process::ExitCode {
    let script = root().join("scripts").join(name);
    // The scripts look for target/release/{ovbmc,ovbmc-bench}; `cargo bench` has just built
    // them there (the bench profile inherits release), so no second build.
    let st = std::process::Command::new("python3")
        .arg(&script)
        .arg("--no-build")
        .args(extra)
        .current_dir(root())
        .status();
    match st {
        Ok(s) if s.success() => std::process::ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("{}: {s}", script.display());
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cannot run python3 {}: {e}", script.display());
            std::process::ExitCode::FAILURE
        }
    }
}
