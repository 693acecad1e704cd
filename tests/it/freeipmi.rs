//! FreeIPMI (Debian `freeipmi-tools` 1.6.10) against `ovbmc --backend sim`: `ipmipower` and
//! `ipmi-chassis` over IPMI 2.0 (`-D LAN_2_0`), cipher suites 3 and 17 (`-I`).
//!
//! FreeIPMI is a second, independent RMCP+ implementation: it differs from ipmitool in
//! details (no Get Channel Cipher Suites, its own retransmission and sequence handling), so it
//! catches server behaviour that only happens to suit ipmitool. No `--workaround-flags` are
//! passed: a standard BMC needs none.
//!
//! FreeIPMI takes a port as `-h host:port` (ipmipower(8), "An optional port can be specified
//! with each host").

use std::path::{Path, PathBuf};

use crate::support::{Bmc, CLIENT_TIMEOUT, Ran, assert_field, client, run};

const TIER: &str = "freeipmi";

/// Common options: driver, host:port, credentials, cipher suite. The password goes on the
/// command line (`-p`): freeipmi has no password-file option, and this is a test password.
fn common_args(bmc: &Bmc, cipher: u8, password: &str) -> Vec<String> {
    vec![
        "-D".into(),
        "LAN_2_0".into(),
        "-h".into(),
        format!("{}:{}", bmc.addr, bmc.port),
        "-u".into(),
        bmc.cfg.user.clone(),
        "-p".into(),
        password.into(),
        "-I".into(),
        cipher.to_string(),
    ]
}

fn freeipmi(bin: &Path, bmc: &Bmc, cipher: u8, words: &[&str]) -> Ran {
    let mut args = common_args(bmc, cipher, &bmc.cfg.password);
    args.extend(words.iter().map(|w| w.to_string()));
    run(bin, &args, &[], CLIENT_TIMEOUT)
}

/// `ipmipower` prints one `<host>: <result>` line per host and exits 0 when all went well.
#[track_caller]
fn ipmipower_expect(bin: &Path, bmc: &Bmc, cipher: u8, op: &str, result: &str) {
    let r = freeipmi(bin, bmc, cipher, &[op]);
    r.expect_success();
    assert_eq!(
        r.stdout.trim(),
        format!("{}: {result}", bmc.addr),
        "ipmipower {op}: unexpected output:\n{r}"
    );
}

fn ipmipower() -> Option<PathBuf> {
    client(TIER, "ipmipower")
}

/// `ipmipower --stat/--on/--off` drive and report the simulated machine.
fn ipmipower_power_control(cipher: u8) {
    let Some(bin) = ipmipower() else {
        return;
    };
    let bmc = Bmc::start();
    ipmipower_expect(&bin, &bmc, cipher, "--stat", "off");
    ipmipower_expect(&bin, &bmc, cipher, "--on", "ok");
    ipmipower_expect(&bin, &bmc, cipher, "--stat", "on");
    ipmipower_expect(&bin, &bmc, cipher, "--off", "ok");
    ipmipower_expect(&bin, &bmc, cipher, "--stat", "off");
}

/// `ipmi-chassis --get-chassis-status` decodes Get Chassis Status.
fn ipmi_chassis_get_status(cipher: u8) {
    let (Some(chassis), Some(power)) = (client(TIER, "ipmi-chassis"), ipmipower()) else {
        return;
    };
    let bmc = Bmc::start();
    let r = freeipmi(&chassis, &bmc, cipher, &["--get-chassis-status"]);
    r.expect_success();
    assert_field(&r, "System Power", "off");
    ipmipower_expect(&power, &bmc, cipher, "--on", "ok");
    let r = freeipmi(&chassis, &bmc, cipher, &["--get-chassis-status"]);
    r.expect_success();
    assert_field(&r, "System Power", "on");
}

/// A wrong password must not yield a power state.
fn ipmipower_wrong_password_fails(cipher: u8) {
    let Some(bin) = ipmipower() else {
        return;
    };
    let bmc = Bmc::start();
    let mut args = common_args(&bmc, cipher, "wrong");
    args.push("--stat".into());
    let r = run(&bin, &args, &[], CLIENT_TIMEOUT);
    r.expect_failure();
    let out = r.stdout.trim();
    assert!(
        !out.ends_with(": on") && !out.ends_with(": off"),
        "wrong password got a power state:\n{r}"
    );
}

macro_rules! per_cipher_suite {
    ($($module:ident => $cipher:expr),* $(,)?) => {$(
        mod $module {
            const CIPHER: u8 = $cipher;
            #[test]
            fn ipmipower_power_control() {
                super::ipmipower_power_control(CIPHER)
            }
            #[test]
            fn ipmi_chassis_get_status() {
                super::ipmi_chassis_get_status(CIPHER)
            }
            #[test]
            fn ipmipower_wrong_password_fails() {
                super::ipmipower_wrong_password_fails(CIPHER)
            }
        }
    )*};
}

per_cipher_suite! {
    suite_3 => 3,
    suite_17 => 17,
}
