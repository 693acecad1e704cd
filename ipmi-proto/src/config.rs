//! What one BMC is configured with: its users, optional BMC key, identity and limits.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::session::Privilege;

/// A BMC user (IPMI v2.0 §6.9). The password is the RAKP key Kuid.
#[derive(Clone)]
pub struct User {
    /// User name, 1–16 bytes, compared exactly.
    pub name: String,
    /// Password, 1–20 bytes (the IPMI 2.0 limit, §13.31), zeroized on drop.
    pub password: Zeroizing<Vec<u8>>,
    /// The highest privilege this user may hold.
    pub max_privilege: Privilege,
}

impl core::fmt::Debug for User {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("max_privilege", &self.max_privilege)
            .finish()
    }
}

/// Why a user or BMC key cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// User names are 1 to 16 bytes (RAKP 1 ULENm, IPMI v2.0 Table 13-11).
    #[error("user name must be 1 to 16 bytes, got {0}")]
    UserNameLength(usize),
    /// Passwords are 1 to 20 bytes in IPMI 2.0; an empty one is refused (no null passwords).
    #[error("password must be 1 to 20 bytes, got {0}")]
    PasswordLength(usize),
    /// The BMC key Kg is 1 to 20 bytes.
    #[error("BMC key (Kg) must be 1 to 20 bytes, got {0}")]
    KgLength(usize),
    /// No user is configured: nobody could log in.
    #[error("no user configured")]
    NoUsers,
}

impl User {
    /// A checked user.
    pub fn new(
        name: &str,
        password: Zeroizing<Vec<u8>>,
        max_privilege: Privilege,
    ) -> Result<Self, ConfigError> {
        if name.is_empty() || name.len() > 16 {
            return Err(ConfigError::UserNameLength(name.len()));
        }
        if password.is_empty() || password.len() > 20 {
            return Err(ConfigError::PasswordLength(password.len()));
        }
        Ok(Self {
            name: name.to_string(),
            password,
            max_privilege,
        })
    }
}

/// Limits and timers (defaults follow IPMI v2.0 §6.12 and OpenBMC's session manager).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Active sessions per BMC; Open Session beyond this answers status 01.
    pub max_sessions: usize,
    /// Half-open (unauthenticated) sessions per BMC; beyond this the oldest is evicted, so a
    /// flood cannot lock out a real client and memory stays bounded.
    pub max_half_open: usize,
    /// Half-open sessions one source (IPv4 address or IPv6 /64) may hold; its next Open
    /// Session evicts its own oldest, so one flooding host cannot push out anyone else's
    /// handshake (0: no per-source share). Far above any honest console, which needs one.
    pub max_half_open_per_source: usize,
    /// A handshake not finished within this is dropped (and counted as a failed login if the
    /// client had been sent a RAKP 2).
    pub setup_timeout: Duration,
    /// An active session with no valid packet for this long is closed (spec default 60 s).
    pub idle_timeout: Duration,
    /// How long a reply is kept for answering client retries.
    pub reply_cache_ttl: Duration,
    /// Machine requests (power, boot flags, chassis status) one session may have in flight;
    /// beyond it the request is answered C0 "node busy" at once. Consoles send one at a time.
    pub max_pending_per_session: usize,
    /// Machine requests one BMC may have in flight, from all its sessions; beyond it C0.
    pub max_pending: usize,
    /// Online guessing: this many failed logins from one source (an IPv4 address or an IPv6
    /// /64, as for the half-open share) within `lockout_window` lock that source out for
    /// `lockout_duration` (0 disables).
    pub source_lockout_threshold: u32,
    /// Failed logins for one user (from any source) within `lockout_window` that lock the
    /// user out for `lockout_duration` (0 disables). Higher than the per-source figure, so
    /// one noisy source cannot lock the real operator out as easily; and a source trusted
    /// for that user (`lockout_trust`) is not locked out by it at all.
    pub user_lockout_threshold: u32,
    /// A source (IPv4 address or IPv6 /64) that logged in successfully as a user within this
    /// long is trusted for that user: a per-user lock-out caused by failures from elsewhere
    /// does not apply to it (its own per-source lock-out still does). Without this, anyone
    /// who knows the user name locks the operator out with garbage RAKP 3 messages, which
    /// need no secret (0 disables the exemption).
    pub lockout_trust: Duration,
    /// At most this many (user, source) pairs are trusted; beyond it the one whose last
    /// login is oldest is forgotten. Only a successful login adds one, so nobody without the
    /// password can fill the table.
    pub max_trusted: usize,
    /// The window failed logins are counted in.
    pub lockout_window: Duration,
    /// How long a lock-out lasts. While locked, Open Session (source) or RAKP 1 (user)
    /// answers status 01 "insufficient resources", which Ironic treats as retryable.
    pub lockout_duration: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 32,
            max_half_open: 1024,
            max_half_open_per_source: 64,
            setup_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            reply_cache_ttl: Duration::from_secs(10),
            max_pending_per_session: 4,
            max_pending: 32,
            source_lockout_threshold: 10,
            user_lockout_threshold: 30,
            lockout_trust: Duration::from_secs(24 * 3600),
            max_trusted: 256,
            lockout_window: Duration::from_secs(60),
            lockout_duration: Duration::from_secs(60),
        }
    }
}

/// Get Device ID identity (IPMI v2.0 §20.1).
#[derive(Clone, Debug)]
pub struct DeviceIdentity {
    /// Manufacturer IANA number (20 bits). Default 0: ipmitool prints "Unknown".
    pub manufacturer_id: u32,
    /// Product ID.
    pub product_id: u16,
    /// Firmware major revision (7 bits).
    pub firmware_major: u8,
    /// Firmware minor revision as two BCD digits.
    pub firmware_minor_bcd: u8,
}

impl Default for DeviceIdentity {
    fn default() -> Self {
        Self {
            manufacturer_id: 0,
            product_id: 0x0b4c, // "ovbmc"-ish; any stable value will do
            firmware_major: 0,
            firmware_minor_bcd: 0x10,
        }
    }
}

/// A failed-login lock-out kept outside the endpoint and shared with other login paths (in
/// ovbmc: every BMC's endpoint and the Redfish face, so that a user name and a source have
/// one count across them). The endpoint asks it beside its own tables, with the same rules:
/// `source_locked` at Open Session, `user_locked` at RAKP 1 (a source trusted for the user is
/// the implementor's to exempt, as [`Limits::lockout_trust`] does here), and tells it each
/// failure it counts (`user` only where it counts one against the user, protocol notes
/// §11.3) and each login.
pub trait SharedLockout: Send + Sync {
    /// Whether logins from `source` are refused.
    fn source_locked(&self, source: IpAddr) -> bool;
    /// Whether logins as `user` from `source` are refused.
    fn user_locked(&self, user: &str, source: IpAddr) -> bool;
    /// A failed login from `source`, counted against `user` too when given.
    fn failed(&self, user: Option<&str>, source: IpAddr);
    /// A good login as `user` from `source`.
    fn succeeded(&self, user: &str, source: IpAddr);
}

/// Everything one virtual BMC needs. Its `Debug` shows no secret: user passwords and Kg are
/// printed as `<redacted>` (Debug output ends up in logs and panic messages).
#[derive(Clone)]
pub struct BmcConfig {
    /// Users that may log in.
    pub users: Vec<User>,
    /// BMC key Kg (IPMI v2.0 §13.31); `None` means SIK is keyed with the user's password.
    pub kg: Option<Zeroizing<Vec<u8>>>,
    /// System GUID in RFC 4122 byte order (for Nova, the instance UUID).
    pub uuid: [u8; 16],
    /// Get Device ID contents.
    pub identity: DeviceIdentity,
    /// Limits and timers.
    pub limits: Limits,
    /// A lock-out shared with other endpoints and faces, asked beside the endpoint's own.
    pub shared_lockout: Option<Arc<dyn SharedLockout>>,
}

impl core::fmt::Debug for BmcConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BmcConfig")
            .field("users", &self.users)
            .field("kg", &self.kg.as_ref().map(|_| "<redacted>"))
            .field("uuid", &self.uuid)
            .field("identity", &self.identity)
            .field("limits", &self.limits)
            .field("shared_lockout", &self.shared_lockout.is_some())
            .finish()
    }
}

impl BmcConfig {
    /// A checked configuration.
    pub fn new(users: Vec<User>, uuid: [u8; 16]) -> Result<Self, ConfigError> {
        if users.is_empty() {
            return Err(ConfigError::NoUsers);
        }
        Ok(Self {
            users,
            kg: None,
            uuid,
            identity: DeviceIdentity::default(),
            limits: Limits::default(),
            shared_lockout: None,
        })
    }

    /// The GUID as sent on the wire (Get System GUID, RAKP 2): the RFC 4122 bytes reversed,
    /// the "IPMI" encoding ipmitool's `mc guid` decodes (IPMI v2.0 §22.14, ipmitool
    /// `ipmi_mc_print_guid`).
    pub fn wire_guid(&self) -> [u8; 16] {
        let mut g = self.uuid;
        g.reverse();
        g
    }

    /// Set the BMC key.
    pub fn with_kg(mut self, kg: Zeroizing<Vec<u8>>) -> Result<Self, ConfigError> {
        if kg.is_empty() || kg.len() > 20 {
            return Err(ConfigError::KgLength(kg.len()));
        }
        self.kg = Some(kg);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11 item 5: neither a password nor Kg appears in `Debug` output, in any form
    /// (text, or the byte list a derived `Debug` of the buffer prints), plain or pretty.
    #[test]
    fn debug_redacts_passwords_and_kg() {
        let pw = b"hunter2-password".to_vec();
        let kg = b"kg-secret-0123456789".to_vec();
        let user = User::new(
            "admin",
            Zeroizing::new(pw.clone()),
            Privilege::Administrator,
        )
        .unwrap();
        let cfg = BmcConfig::new(vec![user], [1; 16])
            .unwrap()
            .with_kg(Zeroizing::new(kg.clone()))
            .unwrap();
        let ep = crate::Endpoint::new(cfg.clone());
        for out in [
            format!("{cfg:?}"),
            format!("{cfg:#?}"),
            format!("{:?}", cfg.users),
            format!("{ep:?}"),
        ] {
            for secret in [&pw, &kg] {
                let text = String::from_utf8_lossy(secret);
                let bytes = format!("{secret:?}");
                let inner = bytes.trim_start_matches('[').trim_end_matches(']');
                assert!(!out.contains(&*text), "{out}");
                assert!(!out.contains(inner), "{out}");
                assert!(!out.contains(&hex(secret)), "{out}");
            }
        }
        let shown = format!("{cfg:?}");
        assert!(shown.contains("kg: Some(\"<redacted>\")"), "{shown}");
        assert!(
            shown.contains("admin"),
            "the user name is no secret: {shown}"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
