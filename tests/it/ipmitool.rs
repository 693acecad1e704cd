//! ipmitool (Debian 1.8.19, `-I lanplus`) against `ovbmc --backend sim`.
//!
//! These are the command lines Ironic and operators run (see
//! `tests/lab/ironic/ironic-ipmitool-commands.txt`, what the lab's `extract-commands` printed), checked on the text ipmitool prints,
//! because that text is what Ironic parses. Every scenario runs with cipher suite 3, with 17,
//! and with no `-C` (ipmitool then asks Get Channel Cipher Suites and picks 17 if offered).

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{
    Bmc, BmcConfig, CLIENT_TIMEOUT, LossyRelay, PASSWORD, Ran, assert_contains, assert_field,
    client, run,
};

const TIER: &str = "ipmitool";

/// One way of invoking ipmitool against one BMC (also used by tests/it/metrics.rs).
#[derive(Clone)]
pub(crate) struct Ipmitool<'a> {
    bin: PathBuf,
    bmc: &'a Bmc,
    cipher: Option<u8>,
    user: String,
    /// `-L` privilege level, if any.
    level: Option<&'static str>,
    /// `-P` password instead of the BMC's password file.
    password: Option<String>,
    /// Extra options placed before the command words (e.g. Ironic's `-R 1 -N 5`).
    extra: Vec<String>,
    /// Talk to this port instead of the BMC's (a relay in front of it).
    port: u16,
}

impl<'a> Ipmitool<'a> {
    /// ipmitool for `bmc` as the admin user with `-f <password file>`, or `None` (test
    /// skipped) when ipmitool is not installed.
    pub(crate) fn new(bmc: &'a Bmc, cipher: Option<u8>) -> Option<Self> {
        Some(Self {
            bin: client(TIER, "ipmitool")?,
            bmc,
            cipher,
            user: bmc.cfg.user.clone(),
            level: None,
            password: None,
            extra: Vec::new(),
            port: bmc.port,
        })
    }

    pub(crate) fn level(mut self, level: &'static str) -> Self {
        self.level = Some(level);
        self
    }

    pub(crate) fn user(mut self, user: &str) -> Self {
        self.user = user.to_string();
        self
    }

    pub(crate) fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_string());
        self
    }

    pub(crate) fn extra(mut self, args: &[&str]) -> Self {
        self.extra = args.iter().map(|s| s.to_string()).collect();
        self
    }

    fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The ipmitool binary.
    pub(crate) fn bin(&self) -> &std::path::Path {
        &self.bin
    }

    /// The full argument list for `words`.
    pub(crate) fn args(&self, words: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-I".into(),
            "lanplus".into(),
            "-H".into(),
            self.bmc.addr.to_string(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            self.user.clone(),
        ];
        match &self.password {
            Some(p) => a.extend(["-P".into(), p.clone()]),
            None => a.extend(["-f".into(), self.bmc.password_file.display().to_string()]),
        }
        if let Some(c) = self.cipher {
            a.extend(["-C".into(), c.to_string()]);
        }
        if let Some(l) = self.level {
            a.extend(["-L".into(), l.into()]);
        }
        a.extend(self.extra.iter().cloned());
        a.extend(words.iter().map(|w| w.to_string()));
        a
    }

    /// Run `ipmitool <options> <words>` with the usual deadline.
    pub(crate) fn run(&self, words: &[&str]) -> Ran {
        run(&self.bin, &self.args(words), &[], CLIENT_TIMEOUT)
    }

    /// Run and require exit status 0.
    #[track_caller]
    fn ok(&self, words: &[&str]) -> Ran {
        let r = self.run(words);
        r.expect_success();
        r
    }

    /// `power status` must print exactly `Chassis Power is <state>`.
    #[track_caller]
    fn expect_power(&self, state: &str) {
        let r = self.ok(&["power", "status"]);
        assert_eq!(
            r.stdout.trim(),
            format!("Chassis Power is {state}"),
            "unexpected power status:\n{r}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Scenarios, each run once per cipher-suite choice (see `per_cipher_suite!` below).
// ------------------------------------------------------------------------------------------

/// Every Chassis Control action ipmitool offers is accepted, prints ipmitool's confirmation,
/// and lands the simulated machine in the expected state (the simulator has zero delays here).
fn power_control_actions_change_power_state(cipher: Option<u8>) {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, cipher) else {
        return;
    };
    t.expect_power("off");

    let r = t.ok(&["power", "on"]);
    assert_contains(&r, "Chassis Power Control: Up/On");
    t.expect_power("on");

    let r = t.ok(&["power", "cycle"]);
    assert_contains(&r, "Chassis Power Control: Cycle");
    t.expect_power("on");

    let r = t.ok(&["power", "reset"]);
    assert_contains(&r, "Chassis Power Control: Reset");
    t.expect_power("on");

    let r = t.ok(&["power", "off"]);
    assert_contains(&r, "Chassis Power Control: Down/Off");
    t.expect_power("off");

    t.ok(&["power", "on"]);
    t.expect_power("on");
    let r = t.ok(&["power", "soft"]);
    assert_contains(&r, "Chassis Power Control: Soft");
    t.expect_power("off");
}

/// `chassis status` decodes Get Chassis Status; its power line follows the machine.
fn chassis_status_reports_power_state(cipher: Option<u8>) {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, cipher) else {
        return;
    };
    let r = t.ok(&["chassis", "status"]);
    assert_field(&r, "System Power", "off");
    t.ok(&["power", "on"]);
    let r = t.ok(&["chassis", "status"]);
    assert_field(&r, "System Power", "on");
    assert_field(&r, "Power Overload", "false");
    assert_field(&r, "Main Power Fault", "false");
}

/// `chassis bootdev pxe options=persistent` (five Set System Boot Options writes) is read back
/// by `chassis bootparam get 5` the way Ironic's `get_boot_device` parses it.
fn bootdev_pxe_persistent_reads_back_in_bootparam_5(cipher: Option<u8>) {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, cipher) else {
        return;
    };
    let r = t.ok(&["chassis", "bootdev", "pxe", "options=persistent"]);
    assert_contains(&r, "Set Boot Device to pxe");
    let r = t.ok(&["chassis", "bootparam", "get", "5"]);
    assert_contains(&r, "Boot parameter 5 is valid/unlocked");
    assert_contains(&r, "- Boot Flag Valid");
    assert_contains(&r, "- Options apply to all future boots");
    assert_contains(&r, "- Boot Device Selector : Force PXE");
}

/// `chassis bootdev disk options=efiboot` is a one-time EFI disk boot.
fn bootdev_disk_efiboot_reads_back_in_bootparam_5(cipher: Option<u8>) {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, cipher) else {
        return;
    };
    let r = t.ok(&["chassis", "bootdev", "disk", "options=efiboot"]);
    assert_contains(&r, "Set Boot Device to disk");
    let r = t.ok(&["chassis", "bootparam", "get", "5"]);
    assert_contains(&r, "- Boot Flag Valid");
    assert_contains(&r, "- Options apply to only next boot");
    assert_contains(&r, "- BIOS EFI boot");
    assert_contains(
        &r,
        "- Boot Device Selector : Force Boot from default Hard-Drive",
    );
}

/// `mc info` proves IPMI 2.0 to ipmitool; `mc guid` (Get System GUID) is stable.
fn mc_info_reports_ipmi_2_0_and_guid_is_stable(cipher: Option<u8>) {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, cipher) else {
        return;
    };
    let r = t.ok(&["mc", "info"]);
    assert_field(&r, "IPMI Version", "2.0");
    assert_field(&r, "Device Available", "yes");

    let first = t.ok(&["mc", "guid"]);
    let guid = crate::support::field(&first.stdout, "System GUID")
        .unwrap_or_else(|| panic!("no System GUID line:\n{first}"));
    assert!(
        is_uuid_text(&guid),
        "System GUID {guid:?} is not a UUID:\n{first}"
    );
    assert_ne!(guid, "00000000-0000-0000-0000-000000000000", "{first}");
    let second = t.ok(&["mc", "guid"]);
    assert_eq!(
        crate::support::field(&second.stdout, "System GUID").as_deref(),
        Some(guid.as_str()),
        "GUID changed between two calls:\n{second}"
    );
}

/// Ironic's `set_boot_device` for UEFI nodes: raw param 3 (don't clear the valid bit after
/// 60 s) then a raw param-5 write; both read back with `chassis bootparam get`.
fn ironic_raw_boot_options_are_stored(cipher: Option<u8>) {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, cipher) else {
        return;
    };
    t.ok(&["raw", "0x00", "0x08", "0x03", "0x08"]);
    let r = t.ok(&["chassis", "bootparam", "get", "3"]);
    assert_contains(
        &r,
        "Don't automatically clear boot flag valid bit on timeout",
    );

    // 0xe0 = valid | persistent | EFI, 0x04 = PXE: Ironic's UEFI persistent PXE.
    t.ok(&[
        "raw", "0x00", "0x08", "0x05", "0xe0", "0x04", "0x00", "0x00", "0x00",
    ]);
    let r = t.ok(&["chassis", "bootparam", "get", "5"]);
    assert_contains(&r, "Boot parameter data: e004000000");
    assert_contains(&r, "- Options apply to all future boots");
    assert_contains(&r, "- BIOS EFI boot");
    assert_contains(&r, "- Boot Device Selector : Force PXE");
}

/// The inventory commands Ironic and operators run must not error: `sel info`, `sdr list`
/// (which, against an empty repository, would try to erase it: protocol doc §8.5).
fn sel_info_and_sdr_list_succeed(cipher: Option<u8>) {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, cipher) else {
        return;
    };
    let r = t.ok(&["sel", "info"]);
    assert_contains(&r, "SEL Information");
    let r = t.ok(&["sdr", "list"]);
    assert!(
        !r.output().to_lowercase().contains("error"),
        "sdr list reported an error:\n{r}"
    );
}

/// `chassis identify` (default 15 s) and `chassis identify force` are accepted.
fn chassis_identify_is_accepted(cipher: Option<u8>) {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, cipher) else {
        return;
    };
    let r = t.ok(&["chassis", "identify"]);
    assert_contains(&r, "Chassis identify interval: default (15 seconds)");
    let r = t.ok(&["chassis", "identify", "0"]);
    assert_contains(&r, "Chassis identify interval: off");
}

/// A wrong password is refused (RAKP 2 HMAC mismatch on the client side), fast enough for
/// Ironic's 60 s retry budget, and does not lock out the right password afterwards.
fn wrong_password_is_refused_quickly(cipher: Option<u8>) {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, cipher) else {
        return;
    };
    let bad = Ipmitool::new(&bmc, cipher)
        .expect("checked above")
        .password("wrong");
    let r = bad.run(&["power", "status"]);
    r.expect_failure();
    assert!(
        r.elapsed < Duration::from_secs(10),
        "a wrong password took {:?} to fail:\n{r}",
        r.elapsed
    );
    assert!(
        !r.stdout.contains("Chassis Power is"),
        "wrong password got an answer:\n{r}"
    );
    t.expect_power("off");
}

/// A user name the BMC does not know is refused quickly.
fn unknown_user_is_refused_quickly(cipher: Option<u8>) {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, cipher) else {
        return;
    };
    let r = Ipmitool::new(&bmc, cipher)
        .expect("checked above")
        .user("nosuchuser")
        .run(&["power", "status"]);
    r.expect_failure();
    assert!(
        r.elapsed < Duration::from_secs(10),
        "an unknown user took {:?} to fail:\n{r}",
        r.elapsed
    );
    assert!(!r.stdout.contains("Chassis Power is"), "{r}");
    t.expect_power("off");
}

/// Generates one `#[test]` per scenario for each cipher-suite choice, named
/// `ipmitool::<choice>::<scenario>`.
macro_rules! per_cipher_suite {
    ($($module:ident => $cipher:expr),* $(,)?) => {$(
        mod $module {
            const CIPHER: Option<u8> = $cipher;
            #[test]
            fn power_control_actions_change_power_state() {
                super::power_control_actions_change_power_state(CIPHER)
            }
            #[test]
            fn chassis_status_reports_power_state() {
                super::chassis_status_reports_power_state(CIPHER)
            }
            #[test]
            fn bootdev_pxe_persistent_reads_back_in_bootparam_5() {
                super::bootdev_pxe_persistent_reads_back_in_bootparam_5(CIPHER)
            }
            #[test]
            fn bootdev_disk_efiboot_reads_back_in_bootparam_5() {
                super::bootdev_disk_efiboot_reads_back_in_bootparam_5(CIPHER)
            }
            #[test]
            fn mc_info_reports_ipmi_2_0_and_guid_is_stable() {
                super::mc_info_reports_ipmi_2_0_and_guid_is_stable(CIPHER)
            }
            #[test]
            fn ironic_raw_boot_options_are_stored() {
                super::ironic_raw_boot_options_are_stored(CIPHER)
            }
            #[test]
            fn sel_info_and_sdr_list_succeed() {
                super::sel_info_and_sdr_list_succeed(CIPHER)
            }
            #[test]
            fn chassis_identify_is_accepted() {
                super::chassis_identify_is_accepted(CIPHER)
            }
            #[test]
            fn wrong_password_is_refused_quickly() {
                super::wrong_password_is_refused_quickly(CIPHER)
            }
            #[test]
            fn unknown_user_is_refused_quickly() {
                super::unknown_user_is_refused_quickly(CIPHER)
            }
        }
    )*};
}

per_cipher_suite! {
    suite_3 => Some(3),
    suite_17 => Some(17),
    negotiated => None,
}

// ------------------------------------------------------------------------------------------
// Tests that are not about the cipher suite.
// ------------------------------------------------------------------------------------------

/// Suites 0, 1 and 2 lack authentication, encryption or integrity; suite 0 would accept any
/// password ("cipher zero"). ovbmc supports exactly 3 and 17, so ipmitool must fail to open
/// a session even with the right password.
#[test]
fn weak_cipher_suites_0_1_2_are_refused() {
    let bmc = Bmc::start();
    for suite in [0u8, 1, 2] {
        let Some(t) = Ipmitool::new(&bmc, Some(suite)) else {
            return;
        };
        let r = t.run(&["power", "status"]);
        r.expect_failure();
        assert!(
            !r.stdout.contains("Chassis Power is"),
            "suite {suite} got an answer:\n{r}"
        );
        assert!(
            r.elapsed < Duration::from_secs(10),
            "suite {suite} took {:?} to be refused:\n{r}",
            r.elapsed
        );
    }
}

/// A session opened at USER level may read the power state but not change it: Chassis
/// Control needs OPERATOR (IPMI v2.0 Appendix G), answered with D4.
#[test]
fn user_privilege_can_read_but_not_control_power() {
    let bmc = Bmc::start_with(BmcConfig {
        initial_power: "on",
        ..BmcConfig::default()
    });
    let Some(user) = Ipmitool::new(&bmc, Some(3)) else {
        return;
    };
    let user = user.level("USER");
    user.expect_power("on");
    let r = user.run(&["power", "off"]);
    r.expect_failure();
    assert!(
        r.stderr.contains("Insufficient privilege level"),
        "expected completion code D4 (Insufficient privilege level):\n{r}"
    );
    let admin = Ipmitool::new(&bmc, Some(3)).expect("checked above");
    admin.expect_power("on");
}

/// OPERATOR is enough for power control (Ironic can be configured with `ipmi_priv_level`).
#[test]
fn operator_privilege_can_control_power() {
    let bmc = Bmc::start();
    let Some(op) = Ipmitool::new(&bmc, Some(17)) else {
        return;
    };
    let op = op.level("OPERATOR");
    op.ok(&["power", "on"]);
    op.expect_power("on");
    op.ok(&["power", "off"]);
    op.expect_power("off");
}

/// The exact command-line shape Ironic 39 uses (`-L ADMINISTRATOR -R 1 -N 5 -f FILE`), with
/// its reboot (off + on) and one-time PXE boot, which the BMC consumes on the next power-on.
#[test]
fn ironic_command_line_shape_and_one_time_boot() {
    let bmc = Bmc::start_with(BmcConfig {
        initial_power: "on",
        ..BmcConfig::default()
    });
    let Some(t) = Ipmitool::new(&bmc, None) else {
        return;
    };
    let t = t.level("ADMINISTRATOR").extra(&["-R", "1", "-N", "5"]);
    t.expect_power("on");
    t.ok(&["chassis", "bootdev", "pxe"]);
    let r = t.ok(&["chassis", "bootparam", "get", "5"]);
    assert_contains(&r, "- Boot Flag Valid");
    assert_contains(&r, "- Options apply to only next boot");
    assert_contains(&r, "- Boot Device Selector : Force PXE");

    t.ok(&["power", "off"]);
    t.expect_power("off");
    t.ok(&["power", "on"]);
    t.expect_power("on");

    // One-time flags are cleared by the boot that used them (IPMI v2.0 §28.12 param 5).
    let r = t.ok(&["chassis", "bootparam", "get", "5"]);
    assert_contains(&r, "- Boot Flag Invalid");
}

/// Every boot device Ironic sets, both ways it sets them (raw param-5 writes for UEFI nodes,
/// `chassis bootdev` for legacy ones), reads back as the `Boot Device Selector` text Ironic's
/// `get_boot_device` maps back to the device.
#[test]
fn ironic_boot_devices_read_back_as_ironic_parses_them() {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, None) else {
        return;
    };
    let t = t.level("ADMINISTRATOR");
    // (Ironic's name, raw device byte, ipmitool bootdev word, what bootparam 5 prints)
    let devices = [
        ("pxe", "0x04", "pxe", "Force PXE"),
        ("disk", "0x08", "disk", "Force Boot from default Hard-Drive"),
        ("cdrom", "0x14", "cdrom", "Force Boot from CD/DVD"),
        ("bios", "0x18", "bios", "Force Boot into BIOS Setup"),
        (
            "safe",
            "0x0c",
            "safe",
            "Force Boot from default Hard-Drive, request Safe-Mode",
        ),
    ];
    for (name, byte, word, text) in devices {
        for (flags, persistent) in [("0xe0", true), ("0xa0", false)] {
            t.ok(&["raw", "0x00", "0x08", "0x03", "0x08"]);
            t.ok(&[
                "raw", "0x00", "0x08", "0x05", flags, byte, "0x00", "0x00", "0x00",
            ]);
            let r = t.ok(&["chassis", "bootparam", "get", "5"]);
            assert_contains(&r, &format!("- Boot Device Selector : {text}\n"));
            assert_eq!(
                r.stdout.contains("Options apply to all future boots"),
                persistent,
                "{name} (UEFI, persistent={persistent}):\n{r}"
            );
            assert_contains(&r, "- BIOS EFI boot");
        }
        let r = t.ok(&["chassis", "bootdev", word]);
        assert_contains(&r, &format!("Set Boot Device to {word}"));
        let r = t.ok(&["chassis", "bootparam", "get", "5"]);
        assert_contains(&r, &format!("- Boot Device Selector : {text}\n"));
        assert_contains(&r, "- Options apply to only next boot");
        assert_contains(&r, "- BIOS PC Compatible (legacy) boot");
    }
}

/// Ironic's other calls: inject NMI (`power diag`), vendor passthru `send_raw` of Get Device
/// ID, `bmc_reset` (`mc reset warm|cold`), sensor collection (`sdr -v`). After a BMC reset the
/// BMC still accepts new sessions.
#[test]
fn ironic_nmi_raw_bmc_reset_and_sensor_commands() {
    let bmc = Bmc::start_with(BmcConfig {
        initial_power: "on",
        ..BmcConfig::default()
    });
    let Some(t) = Ipmitool::new(&bmc, None) else {
        return;
    };
    let t = t.level("ADMINISTRATOR");
    let r = t.ok(&["power", "diag"]);
    assert_contains(&r, "Chassis Power Control: Diag");
    t.expect_power("on");

    let r = t.ok(&["raw", "0x06", "0x01"]);
    assert!(
        r.stdout.split_whitespace().count() >= 11,
        "Get Device ID answer too short:\n{r}"
    );

    t.ok(&["sdr", "-v"]);

    for kind in ["warm", "cold"] {
        let r = t.ok(&["mc", "reset", kind]);
        assert_contains(&r, &format!("Sent {kind} reset command to MC"));
        t.expect_power("on");
    }
}

/// `-P` on the command line and `-E` (IPMI_PASSWORD / IPMITOOL_PASSWORD in the environment,
/// Ironic's `store_cred_in_env`) authenticate like `-f`.
#[test]
fn password_from_command_line_and_environment_work() {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, Some(17)) else {
        return;
    };
    Ipmitool::new(&bmc, Some(17))
        .expect("checked above")
        .password(PASSWORD)
        .expect_power("off");

    let mut args = t.args(&["power", "status"]);
    // Replace `-f FILE` with `-E`.
    let f = args.iter().position(|a| a == "-f").expect("-f present");
    args.splice(f..f + 2, ["-E".to_string()]);
    let r = run(
        &t.bin,
        &args,
        &[("IPMI_PASSWORD", PASSWORD)],
        CLIENT_TIMEOUT,
    );
    assert_eq!(r.expect_success().trim(), "Chassis Power is off", "{r}");
}

/// Without `-C`, ipmitool reads the BMC's cipher suite list and takes the best one, 17.
#[test]
fn negotiation_picks_cipher_suite_17() {
    let bmc = Bmc::start();
    let Some(t) = Ipmitool::new(&bmc, None) else {
        return;
    };
    let r = t.ok(&["-v", "power", "status"]);
    assert!(
        r.stderr.contains("Using best available cipher suite 17"),
        "ipmitool did not choose suite 17:\n{r}"
    );
}

/// A Chassis Control whose answer is lost is retried by ipmitool (same rqSeq, new session
/// sequence number). The BMC must answer the retry from its cache, not run the action again:
/// here a second "power on" during the 20 s power-on would be refused as busy (C0), which
/// ipmitool reports as a failure (protocol doc §3.3, §7.2).
#[test]
fn retried_power_on_is_answered_from_cache_not_run_twice() {
    let bmc = Bmc::start_with(BmcConfig {
        power_on_ms: 20_000,
        ..BmcConfig::default()
    });
    let Some(t) = Ipmitool::new(&bmc, Some(3)) else {
        return;
    };
    // Learn how many datagrams a one-command session sends: the command is the one before
    // the last (Close Session).
    let relay = LossyRelay::start(&bmc, None);
    Ipmitool::new(&bmc, Some(3))
        .expect("checked above")
        .port(relay.port)
        .expect_power("off");
    let calibration = relay.finish();
    assert!(calibration.requests >= 3, "{calibration:?}");
    let command = calibration.requests - 1;

    let relay = LossyRelay::start(&bmc, Some(command));
    let r = t
        .port(relay.port)
        .extra(&["-R", "3", "-N", "2"])
        .run(&["power", "on"]);
    let stats = relay.finish();
    assert_eq!(
        stats.dropped, 1,
        "the answer was not dropped: {stats:?}\n{r}"
    );
    // One retry of the command; more only if the machine was so loaded that ipmitool gave up
    // waiting (2 s) for some other answer too.
    assert!(
        stats.requests > calibration.requests,
        "ipmitool did not retry: {stats:?}\n{r}"
    );
    r.expect_success();
    assert_contains(&r, "Chassis Power Control: Up/On");
}

/// Two BMCs with different instance names report different system GUIDs (ipmitool and
/// Ironic identify nodes by it).
#[test]
fn distinct_instances_have_distinct_guids() {
    let a = Bmc::start_with(BmcConfig {
        instance: "node-a".into(),
        ..BmcConfig::default()
    });
    let b = Bmc::start_with(BmcConfig {
        instance: "node-b".into(),
        ..BmcConfig::default()
    });
    let (Some(ta), Some(tb)) = (Ipmitool::new(&a, Some(3)), Ipmitool::new(&b, Some(3))) else {
        return;
    };
    let ga = ta.ok(&["mc", "guid"]);
    let gb = tb.ok(&["mc", "guid"]);
    assert_ne!(
        crate::support::field(&ga.stdout, "System GUID"),
        crate::support::field(&gb.stdout, "System GUID"),
        "two instances share a GUID:\n{ga}\n{gb}"
    );
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex.
fn is_uuid_text(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}
