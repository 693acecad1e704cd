//! pyghmi's IPMI client (PyPI `pyghmi`) against `ovbmc --backend sim`, via
//! `tests/py/pyghmi_client.py`.
//!
//! pyghmi is the library behind virtualbmc, OVB's openstackbmc and parts of the OpenStack
//! tooling. Its client asks for cipher suite 17 directly (no Get Channel Cipher Suites),
//! increments the message tag per attempt, and writes boot options without the
//! set-in-progress dance, so it exercises paths ipmitool does not.
//!
//! The Python comes from `OVBMC_PYTHON`, else the venv `scripts/test-all` makes
//! (`~/.cache/ovbmc/venv`), else `python3`; the tier runs when that Python can import pyghmi.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Bmc, BmcConfig, PASSWORD, clients_required, find_program, run, skip};

const TIER: &str = "pyghmi";

/// A Python that can `import pyghmi`, or `None` after printing SKIP (a failure when clients
/// are required).
pub(crate) fn python_with_pyghmi() -> Option<PathBuf> {
    python_with("pyghmi.ipmi.command", TIER, "pyghmi")
}

/// A Python that can `import module` — `$OVBMC_PYTHON`, the test venv that scripts/test-all
/// makes (`~/.cache/ovbmc/venv`), or `python3` — or `None` after printing SKIP for `tier`
/// (a failure when clients are required). `what` names the package in the messages.
pub(crate) fn python_with(module: &str, tier: &str, what: &str) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("OVBMC_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/ovbmc/venv/bin/python"));
    }
    candidates.extend(find_program("python3"));
    let found = candidates.into_iter().find(|py| {
        py.is_file()
            && run(
                py,
                &["-c".into(), format!("import {module}")],
                &[],
                Duration::from_secs(30),
            )
            .success()
    });
    if found.is_none() {
        if clients_required() {
            panic!("{tier}: no Python with {what} (run scripts/test-all, or set OVBMC_PYTHON)");
        }
        skip(tier, &format!("{what} not installed"));
    }
    found
}

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/pyghmi_client.py")
}

/// The `result` of step `name`, panicking with the whole report if the step failed.
#[track_caller]
fn result<'a>(report: &'a Value, name: &str, context: &str) -> &'a Value {
    let step = &report[name];
    assert_eq!(
        step["ok"],
        Value::Bool(true),
        "pyghmi step {name} failed: {}\n{context}",
        step["error"]
    );
    &step["result"]
}

/// get_power, set_power('on', wait=True), set_power('off'), set_bootdev(network, persistent,
/// UEFI) and get_bootdev all work and agree with each other.
#[test]
fn pyghmi_power_and_persistent_uefi_network_boot() {
    let Some(python) = python_with_pyghmi() else {
        return;
    };
    let bmc = Bmc::start_with(BmcConfig::default());
    let ran = run(
        &python,
        &[
            client_script().display().to_string(),
            bmc.addr.to_string(),
            bmc.port.to_string(),
            bmc.cfg.user.clone(),
        ],
        &[("OVBMC_PASSWORD", PASSWORD)],
        // pyghmi's own timeouts are long (its logon gives up after about 30 s); allow for one.
        Duration::from_secs(90),
    );
    let context = ran.to_string();
    assert!(!ran.timed_out(), "pyghmi client hung:\n{context}");
    let report: Value = serde_json::from_str(ran.stdout.trim())
        .unwrap_or_else(|e| panic!("pyghmi client printed no JSON ({e}):\n{context}"));

    result(&report, "connect", &context);
    assert_eq!(
        result(&report, "get_power_initial", &context)["powerstate"],
        "off",
        "{context}"
    );
    assert_eq!(
        result(&report, "set_power_on", &context)["powerstate"],
        "on",
        "{context}"
    );
    assert_eq!(
        result(&report, "get_power_after_on", &context)["powerstate"],
        "on",
        "{context}"
    );
    assert_eq!(
        result(&report, "set_power_off", &context)["pendingpowerstate"],
        "off",
        "{context}"
    );
    assert_eq!(
        result(&report, "get_power_after_off", &context)["powerstate"],
        "off",
        "{context}"
    );
    assert_eq!(
        result(&report, "set_bootdev", &context)["bootdev"],
        "network",
        "{context}"
    );
    let bootdev = result(&report, "get_bootdev", &context);
    assert_eq!(
        bootdev,
        &serde_json::json!({"bootdev": "network", "persistent": true, "uefimode": true}),
        "{context}"
    );
    result(&report, "logout", &context);
    assert!(ran.success(), "pyghmi client exited non-zero:\n{context}");
}
