//! The embedded simulator: a machine with power state, boot flags and transition delays.
//!
//! It exists so that ovbmc can be demonstrated and tested with every IPMI client on a machine
//! with no cloud. Its behaviour follows what a cloud instance does: power transitions take a
//! while (configurable), and during a transition a new action is refused as busy, as Nova
//! refuses an action while `task_state` is set.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{BackendError, BoxFuture, InsertOptions, Machine, MediaState};
use ipmi_proto::machine::{BootDevice, BootFlags, MachineError, PowerAction, PowerState};

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Name for logs.
    pub name: String,
    /// Power state at start.
    pub initial_power: PowerState,
    /// How long a power-on (and the "on" half of a cycle or reset) takes.
    pub power_on_delay: Duration,
    /// How long a power-off takes (hard off is quicker than soft in real life; we use one figure).
    pub power_off_delay: Duration,
    /// Delay before each answer (simulates a slow control plane).
    pub api_latency: Duration,
    /// System UUID (RFC 4122 byte order).
    pub uuid: [u8; 16],
    /// The largest virtual media image an insert reads (`--vmedia-max-mib`, as the Nova
    /// backend), in bytes.
    pub vmedia_max_bytes: u64,
}

impl SimConfig {
    /// Defaults with a UUID derived from the name, so it is stable across restarts.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            initial_power: PowerState::Off,
            power_on_delay: Duration::from_millis(0),
            power_off_delay: Duration::from_millis(0),
            api_latency: Duration::ZERO,
            uuid: name_uuid(name),
            vmedia_max_bytes: 4096 * 1024 * 1024,
        }
    }
}

/// A UUID from a name (FNV-1a mixing; stable, not cryptographic).
fn name_uuid(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        for b in name.bytes().chain([i as u8]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        chunk.copy_from_slice(&h.to_be_bytes());
    }
    // Version 4 layout: ipmitool's GUID auto-detection only knows versions 1 to 5.
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80; // RFC 4122 variant
    out
}

#[derive(Debug)]
struct State {
    /// Settled power state.
    power: PowerState,
    /// A transition in progress: the state it ends in and when.
    transition: Option<(PowerState, Instant)>,
    boot: BootFlags,
    /// The device the last boot used (for tests and logs).
    last_boot_device: BootDevice,
    boots: u64,
    /// The virtual CD slot.
    media: MediaState,
    /// The image the last boot from `Cd` booted (`None`: the last boot was not from media).
    booted_media: Option<String>,
}

impl State {
    /// Settle a transition whose time has come.
    fn settle(&mut self, now: Instant) {
        if let Some((to, at)) = self.transition
            && now >= at
        {
            self.power = to;
            self.transition = None;
        }
    }

    fn boot(&mut self, name: &str) {
        self.last_boot_device = self.boot.effective_device();
        // A CD boot boots the inserted media, as a real BMC's virtual CD does; with the slot
        // empty the firmware falls through to the next device (reported as no media).
        self.booted_media = None;
        if self.last_boot_device == BootDevice::Cdrom {
            match (&self.media.image, self.media.inserted) {
                (Some(url), true) => {
                    tracing::info!(
                        "{name}: booting from the virtual CD {}",
                        crate::redfish::media::shown(url)
                    );
                    self.booted_media = Some(url.clone());
                }
                _ => tracing::info!("{name}: boot from CD, but no media is inserted"),
            }
        }
        self.boot = self.boot.after_boot();
        self.boots += 1;
    }
}

/// A simulated machine.
#[derive(Debug)]
pub struct SimMachine {
    cfg: SimConfig,
    state: Mutex<State>,
}

impl SimMachine {
    /// A new simulated machine.
    pub fn new(cfg: SimConfig) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                power: cfg.initial_power,
                transition: None,
                boot: BootFlags::default(),
                last_boot_device: BootDevice::NoOverride,
                boots: 0,
                media: MediaState::default(),
                booted_media: None,
            }),
            cfg,
        })
    }

    /// The device the most recent boot used, and how many boots happened.
    pub fn last_boot(&self) -> (BootDevice, u64) {
        let s = self.lock();
        (s.last_boot_device, s.boots)
    }

    /// The image the most recent boot booted from the virtual CD, if it was a CD boot with
    /// media inserted.
    pub fn booted_media(&self) -> Option<String> {
        self.lock().booted_media.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state itself stays consistent
        // because every update is a plain assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn latency(&self) {
        if !self.cfg.api_latency.is_zero() {
            tokio::time::sleep(self.cfg.api_latency).await;
        }
    }

    fn do_power(&self, action: PowerAction) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut s = self.lock();
        s.settle(now);
        if let Some((to, _)) = s.transition {
            return Err(BackendError::new(
                MachineError::Busy,
                format!("{}: powering {} in progress", self.cfg.name, on_off(to)),
            ));
        }
        let on = self.cfg.power_on_delay;
        let off = self.cfg.power_off_delay;
        match (action, s.power) {
            // Idempotent, as Ironic expects: on when on and off when off succeed.
            (PowerAction::On, PowerState::On) => {}
            (PowerAction::Off | PowerAction::Soft, PowerState::Off) => {}
            (PowerAction::On, PowerState::Off) => {
                s.boot(&self.cfg.name);
                s.transition = Some((PowerState::On, now + on));
            }
            (PowerAction::Off | PowerAction::Soft, PowerState::On) => {
                s.transition = Some((PowerState::Off, now + off));
            }
            // A reset of an off machine powers it on (as Nova's hard reboot of SHUTOFF does);
            // a cycle while off is "not supported in present state" (IPMI v2.0 §28.3).
            (PowerAction::Reset, _) => {
                s.boot(&self.cfg.name);
                s.power = PowerState::On;
                if !on.is_zero() {
                    s.power = PowerState::Off;
                    s.transition = Some((PowerState::On, now + on));
                }
            }
            (PowerAction::Cycle, PowerState::Off) => {
                return Err(BackendError::new(
                    MachineError::NotInPresentState,
                    format!("{}: power cycle while off", self.cfg.name),
                ));
            }
            (PowerAction::Cycle, PowerState::On) => {
                s.boot(&self.cfg.name);
                if !(on + off).is_zero() {
                    s.power = PowerState::Off;
                    s.transition = Some((PowerState::On, now + on + off));
                }
            }
            // Nothing to interrupt while off: accepted as a no-op, like the Nova backend (and
            // virtualbmc), so that Ironic's inject_nmi of a powered-off node succeeds.
            (PowerAction::Diag, PowerState::On | PowerState::Off) => {}
        }
        Ok(())
    }
}

/// Read `url` to its end, at most `max` bytes; how many it had.
async fn fetch(url: &str, max: u64) -> Result<u64, String> {
    let shown = crate::redfish::media::shown(url);
    // reqwest is built with `rustls-no-provider` (see cloud::session); an https image needs one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("virtual media {shown}: HTTP client: {e}"))?;
    let too_large = || {
        format!(
            "virtual media {shown}: larger than the limit of {} MiB (vmedia_max_mib)",
            max / (1024 * 1024)
        )
    };
    let mut r = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("virtual media {shown}: fetching failed: {}", causes(e)))?;
    if !r.status().is_success() {
        return Err(format!("virtual media {shown}: HTTP {}", r.status()));
    }
    if r.content_length().is_some_and(|n| n > max) {
        return Err(too_large());
    }
    // Counted as it streams: a server that declares nothing, or less than it sends, is cut
    // off at the limit too.
    let mut seen: u64 = 0;
    while let Some(chunk) = r
        .chunk()
        .await
        .map_err(|e| format!("virtual media {shown}: reading failed: {}", causes(e)))?
    {
        seen += chunk.len() as u64;
        if seen > max {
            return Err(too_large());
        }
    }
    Ok(seen)
}

/// An error and its causes ("error sending request" alone does not say "connection refused"),
/// without the URL (the caller shows it, credentials removed).
fn causes(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

fn on_off(p: PowerState) -> &'static str {
    match p {
        PowerState::On => "on",
        PowerState::Off => "off",
    }
}

impl Machine for SimMachine {
    fn power_state(&self) -> BoxFuture<'_, Result<PowerState, BackendError>> {
        Box::pin(async move {
            self.latency().await;
            let mut s = self.lock();
            s.settle(Instant::now());
            // Report the state the machine is actually in: a machine powering off still runs.
            Ok(s.power)
        })
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.latency().await;
            self.do_power(action)
        })
    }

    fn boot_flags(&self) -> BoxFuture<'_, Result<BootFlags, BackendError>> {
        Box::pin(async move {
            self.latency().await;
            Ok(self.lock().boot)
        })
    }

    fn set_boot_flags(&self, flags: BootFlags) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.latency().await;
            self.lock().boot = flags;
            Ok(())
        })
    }

    fn uuid(&self) -> [u8; 16] {
        self.cfg.uuid
    }

    fn name(&self) -> String {
        self.cfg.name.clone()
    }

    fn console(&self) -> Option<crate::console::Source> {
        Some(crate::console::Source::Sim {
            name: self.cfg.name.clone(),
        })
    }

    fn media_state(&self) -> Option<MediaState> {
        Some(self.lock().media.clone())
    }

    /// Reads the image at the URL to its end (streamed, counted against `vmedia_max_bytes`,
    /// nothing kept: the simulator has no disk to boot it from) and records it. Reading it
    /// makes an insert fail as the Nova backend's does: unreachable URL, HTTP error, image
    /// too large, each with a message for the task.
    fn insert_media(
        &self,
        url: String,
        options: InsertOptions,
    ) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.latency().await;
            self.lock().media.inserting = true;
            let read = fetch(&url, self.cfg.vmedia_max_bytes).await;
            let mut s = self.lock();
            s.media.inserting = false;
            let n = read.map_err(|why| {
                tracing::warn!("{}: virtual CD: {why}", self.cfg.name);
                BackendError::new(MachineError::Failed, why)
            })?;
            tracing::info!(
                "{}: virtual CD: {} inserted ({n} bytes)",
                self.cfg.name,
                crate::redfish::media::shown(&url)
            );
            s.media = MediaState::holding(url, &options);
            Ok(())
        })
    }

    fn eject_media(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.latency().await;
            let mut s = self.lock();
            if let Some(url) = s.media.image.take() {
                tracing::info!(
                    "{}: virtual CD: {} ejected",
                    self.cfg.name,
                    crate::redfish::media::shown(&url)
                );
            }
            s.media = MediaState::default();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_time_boot_flags_clear_after_power_on() {
        let m = SimMachine::new(SimConfig::new("t"));
        m.set_boot_flags(BootFlags::new(BootDevice::Pxe, false, true))
            .await
            .unwrap();
        m.power(PowerAction::On).await.unwrap();
        assert_eq!(m.last_boot().0, BootDevice::Pxe);
        let f = m.boot_flags().await.unwrap();
        assert!(!f.valid() && f.efi());
        assert_eq!(m.power_state().await.unwrap(), PowerState::On);
    }

    #[tokio::test]
    async fn persistent_flags_survive_boots_and_cycle_off_is_refused() {
        let m = SimMachine::new(SimConfig::new("t"));
        let e = m.power(PowerAction::Cycle).await.unwrap_err();
        assert_eq!(e.kind, MachineError::NotInPresentState);
        m.set_boot_flags(BootFlags::new(BootDevice::Disk, true, false))
            .await
            .unwrap();
        m.power(PowerAction::Reset).await.unwrap();
        m.power(PowerAction::Cycle).await.unwrap();
        assert_eq!(m.last_boot(), (BootDevice::Disk, 2));
        assert!(m.boot_flags().await.unwrap().valid());
    }

    /// A one-request HTTP server on loopback answering `body`; its image URL.
    async fn serve_once(body: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x.iso", l.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes()).await;
            let _ = c.write_all(&body).await;
        });
        url
    }

    #[tokio::test]
    async fn a_cd_boot_boots_the_inserted_media() {
        let m = SimMachine::new(SimConfig::new("t"));
        let url = serve_once(vec![0u8; 2048]).await;
        m.insert_media(url.clone(), InsertOptions::default())
            .await
            .unwrap();
        assert!(m.media_state().unwrap().inserted);
        m.set_boot_flags(BootFlags::new(BootDevice::Cdrom, false, true))
            .await
            .unwrap();
        m.power(PowerAction::On).await.unwrap();
        assert_eq!(m.booted_media().as_deref(), Some(url.as_str()));
        // The one-time override is consumed: the next boot is from disk.
        m.power(PowerAction::Reset).await.unwrap();
        assert_eq!(m.booted_media(), None);
        m.eject_media().await.unwrap();
        assert_eq!(m.media_state().unwrap(), MediaState::default());
    }

    #[tokio::test]
    async fn an_insert_fails_on_a_large_image_and_an_unreachable_url() {
        let mut cfg = SimConfig::new("t");
        cfg.vmedia_max_bytes = 1024;
        let m = SimMachine::new(cfg);
        let url = serve_once(vec![0u8; 2048]).await;
        let e = m
            .insert_media(url, InsertOptions::default())
            .await
            .unwrap_err();
        assert!(e.message.contains("larger than the limit"), "{}", e.message);
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = m
            .insert_media(
                format!("http://127.0.0.1:{port}/x.iso"),
                InsertOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(e.message.contains("fetching failed"), "{}", e.message);
        assert_eq!(m.media_state().unwrap(), MediaState::default());
    }

    #[tokio::test]
    async fn transition_answers_busy() {
        let mut cfg = SimConfig::new("t");
        cfg.power_on_delay = Duration::from_secs(60);
        let m = SimMachine::new(cfg);
        m.power(PowerAction::On).await.unwrap();
        assert_eq!(m.power_state().await.unwrap(), PowerState::Off);
        let e = m.power(PowerAction::Off).await.unwrap_err();
        assert_eq!(e.kind, MachineError::Busy);
    }
}
