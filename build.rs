//! Build script: records the git revision the binary was built from, for `ovbmc --version`
//! and the metrics' build-info line (a user reporting a problem can say exactly what runs).
//! Outside a git checkout (a source tarball, `cargo install` from crates.io) it says
//! "unknown".

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Watch `path` for changes, if it exists (cargo reruns the script on every build for a
/// missing file, which would rebuild the crate each time).
fn watch(path: String) {
    let p = PathBuf::from(path);
    if p.exists() {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

fn main() {
    let rev = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=OVBMC_GIT_REV={rev}");
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it points to (a commit).
    // `--git-path` resolves both for worktrees too, where `.git` is a file.
    for p in ["HEAD", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", p]) {
            watch(path);
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &r])
    {
        watch(path);
    }
    println!("cargo:rerun-if-changed=build.rs");
}
