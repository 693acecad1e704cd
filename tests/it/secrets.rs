//! Secret files as a careless or hostile set-up leaves them (issue "Hostile and careless
//! input", item 9): a FIFO or device named as the password file, a password file every user
//! can read, and the hex Kg form Ironic uses (`ipmi_hex_kg_key`).

use std::time::Duration;

use crate::ipmitool::Ipmitool;
use crate::support::{Bmc, BmcConfig, PasswordSource, ScratchDir};

fn with_password_file(path: &std::path::Path, extra: &[&str]) -> BmcConfig {
    let mut extra_args = vec!["--password-file".to_string(), path.display().to_string()];
    extra_args.extend(extra.iter().map(|s| s.to_string()));
    BmcConfig {
        password_source: PasswordSource::None,
        extra_args,
        ..BmcConfig::default()
    }
}

/// A FIFO as the password file is refused at once with a message saying what it is. Before the
/// fix, ovbmc blocked in open(2) — no log line, and SIGTERM went unanswered — until something
/// wrote to the FIFO; this test then timed out.
#[test]
fn a_fifo_as_password_file_is_refused_at_once() {
    let dir = ScratchDir::new("fifo");
    let fifo = dir.path().join("password");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(st.success());
    let mut bmc = Bmc::spawn(with_password_file(&fifo, &[]));
    let status = bmc.wait_exit(Duration::from_secs(8)).unwrap_or_else(|| {
        bmc.signal("KILL");
        panic!("ovbmc is blocked on a FIFO password file:\n{}", bmc.log())
    });
    assert!(!status.success(), "{status}:\n{}", bmc.log());
    assert!(bmc.log().contains("named pipe (FIFO)"), "{}", bmc.log());
}

/// A device (endless input) is refused too instead of being read forever.
#[test]
fn a_device_as_password_file_is_refused() {
    let mut bmc = Bmc::spawn(with_password_file(std::path::Path::new("/dev/zero"), &[]));
    let status = bmc
        .wait_exit(Duration::from_secs(8))
        .unwrap_or_else(|| panic!("ovbmc kept running on /dev/zero:\n{}", bmc.log()));
    assert!(!status.success());
    assert!(bmc.log().contains("a device"), "{}", bmc.log());
}

/// A password file that every user may read is served (refusing would break existing
/// set-ups) but warned about, naming the file and the fix.
#[test]
fn a_world_readable_password_file_is_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = ScratchDir::new("mode");
    let p = dir.write_secret("pw", crate::support::PASSWORD);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bmc = Bmc::start_with(with_password_file(&p, &[]));
    let log = bmc.log();
    assert!(
        log.contains("readable by every user") && log.contains("chmod 600"),
        "no warning for a 0644 password file:\n{log}"
    );
    assert!(
        !log.contains(crate::support::PASSWORD),
        "the password is in the log:\n{log}"
    );
}

/// A Kg file in hex (`0x…`, as Ironic's `ipmi_hex_kg_key`) is the key those bytes spell:
/// ipmitool `-y HEX` logs in, ipmitool without the key does not.
#[test]
fn a_hex_kg_file_is_decoded() {
    let dir = ScratchDir::new("kg");
    let hex = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";
    let kg = dir.write_secret("kg", &format!("0x{hex}\n"));
    let bmc = Bmc::start_with(BmcConfig {
        extra_args: vec!["--kg-file".into(), kg.display().to_string()],
        ..BmcConfig::default()
    });
    let Some(t) = Ipmitool::new(&bmc, Some(17)) else {
        return;
    };
    let r = t.clone().extra(&["-y", hex]).run(&["power", "status"]);
    assert_eq!(r.expect_success().trim(), "Chassis Power is off", "{r}");
    let r = t.run(&["power", "status"]);
    assert!(!r.success(), "logged in without the Kg:\n{r}");
}
