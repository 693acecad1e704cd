//! `--mode sol-echo` and `--mode sol-burst`: Serial over LAN through one BMC, with the crate's
//! own client (no ipmitool in the measured path). Log in, Activate Payload (SOL instance 1,
//! encrypted and authenticated), then
//!
//! * `sol-echo`: type one character and wait for the guest's echo of it, `--count` times
//!   (a DEL after each, so the line never grows): keystroke-to-echo latency;
//! * `sol-burst`: send `burst N` (the simulator console's and the OpenStack lab guest's
//!   command: N bytes of a fixed 64-character pattern) and take them, acknowledging every
//!   packet as ipmitool does: guest-output throughput, checked complete and in order.
//!
//! Then Deactivate Payload and Close Session.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ipmi_proto::client::Client;
use ipmi_proto::codes::PayloadType;
use ipmi_proto::sol::packet::{SolPacket, next_seq};
use tokio::net::UdpSocket;

use super::{Rng, login, proc_figures};

/// The burst pattern both guests use (`src/console/sim.rs`, the lab's guest console).
const PATTERN: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

struct Sol<'a> {
    sock: &'a UdpSocket,
    c: &'a mut Client,
    rng: &'a mut Rng,
    seq: u8,
    /// Guest output received, in order, with the BMC's retransmits removed.
    got: Vec<u8>,
    last_rx: Option<(u8, usize)>,
    buf: Vec<u8>,
}

impl Sol<'_> {
    /// Wait up to `t` for one datagram; acknowledge guest data at once. Returns the ack
    /// fields of a SOL packet ((0, 0) for anything else), or `None` on time-out.
    async fn step(&mut self, t: Duration) -> anyhow::Result<Option<(u8, u8)>> {
        let n = match tokio::time::timeout(t, self.sock.recv(&mut self.buf)).await {
            Err(_) => return Ok(None),
            Ok(r) => r?,
        };
        let (ty, plain) = self.c.open(&self.buf[..n])?;
        if ty != PayloadType::SOL {
            return Ok(Some((0, 0)));
        }
        let p = SolPacket::read(&plain).map_err(|e| anyhow::anyhow!("SOL packet: {e}"))?;
        if p.seq != 0 {
            let len = p.data.len();
            if self.last_rx != Some((p.seq, len)) {
                self.got.extend_from_slice(p.data);
                self.last_rx = Some((p.seq, len));
            }
            let ack = SolPacket {
                seq: 0,
                ack_seq: p.seq,
                accepted: len as u8,
                ctrl: 0,
                data: &[],
            };
            let d = self.c.sol(&ack.to_vec(), self.rng);
            self.sock.send(&d).await?;
        }
        Ok(Some((p.ack_seq, p.accepted)))
    }

    /// Send `data` (≤ 255 bytes) and wait for its acknowledgement, taking guest output
    /// meanwhile; sent again with the same sequence number after 500 ms (IPMI v2.0 §15.11).
    async fn send(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.seq = next_seq(self.seq);
        let p = SolPacket {
            seq: self.seq,
            ack_seq: 0,
            accepted: 0,
            ctrl: 0,
            data,
        };
        let d = self.c.sol(&p.to_vec(), self.rng);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut resent = Instant::now();
        self.sock.send(&d).await?;
        while Instant::now() < deadline {
            if let Some((ack, _)) = self.step(Duration::from_millis(200)).await?
                && ack == self.seq
            {
                return Ok(());
            }
            if resent.elapsed() > Duration::from_millis(500) {
                self.sock.send(&d).await?;
                resent = Instant::now();
            }
        }
        bail!("no acknowledgement of SOL packet {} within 5 s", self.seq)
    }

    /// Take guest output until `done(&got)`, or until `t` passes with nothing arriving.
    async fn until(&mut self, t: Duration, done: impl Fn(&[u8]) -> bool) -> anyhow::Result<bool> {
        while !done(&self.got) {
            if self.step(t).await?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// An in-session request; SOL packets arriving before its answer are skipped.
async fn request(
    sock: &UdpSocket,
    c: &mut Client,
    rng: &mut Rng,
    netfn: u8,
    cmd: u8,
    data: &[u8],
) -> anyhow::Result<(u8, Vec<u8>)> {
    let d = c.request(netfn, cmd, data, rng);
    let mut buf = vec![0u8; 2048];
    sock.send(&d).await?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let n = tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf))
            .await
            .context("timeout")??;
        if let Ok((ty, _)) = c.open(&buf[..n])
            && ty == PayloadType::IPMI
        {
            let (_, cc, data) = c.response(&buf[..n])?;
            return Ok((cc.0, data));
        }
    }
    bail!("no answer to {netfn:#04x}/{cmd:#04x}")
}

/// What one SOL run measured.
pub struct Report {
    pub mode: &'static str,
    pub count: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// The BMC process's CPU time over the measured part (10 ms ticks).
    pub server_cpu_ms: Option<f64>,
}

/// One SOL run against `target` (see the module documentation).
pub async fn run(
    target: SocketAddr,
    c: &mut Client,
    echo: bool,
    count: usize,
    bytes: u64,
    pid: Option<u32>,
) -> anyhow::Result<Report> {
    let sock = UdpSocket::bind(if target.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    })
    .await?;
    sock.connect(target).await?;
    let mut rng = Rng::new(0x5eed_0001);
    let mut buf = vec![0u8; 1024];
    login(&sock, c, &mut rng, &mut buf).await?;
    // Activate Payload: SOL, instance 1, encrypted and authenticated (IPMI v2.0 Table 24-2).
    let (cc, _) = request(&sock, c, &mut rng, 0x06, 0x48, &[1, 1, 0xc0, 0, 0, 0]).await?;
    if cc != 0 {
        bail!("Activate Payload: cc {cc:#04x}");
    }
    let mut s = Sol {
        sock: &sock,
        c,
        rng: &mut rng,
        seq: 0,
        got: Vec::new(),
        last_rx: None,
        buf: vec![0u8; 2048],
    };
    // The banner and whatever the console had: taken until it is quiet.
    s.until(Duration::from_millis(500), |_| false).await?;
    s.got.clear();
    let before = pid.and_then(proc_figures);
    let start = Instant::now();
    let mut lat = Vec::with_capacity(count);
    if echo {
        for _ in 0..count {
            let t0 = Instant::now();
            s.got.clear();
            s.send(b"x").await?;
            if !s
                .until(Duration::from_secs(5), |g| g.contains(&b'x'))
                .await?
            {
                bail!("no echo within 5 s");
            }
            lat.push(t0.elapsed().as_micros() as u64);
            s.got.clear();
            s.send(b"\x7f").await?;
            s.until(Duration::from_secs(5), |g| g.ends_with(b"\x08 \x08"))
                .await?;
        }
    } else {
        let head = format!("burst {bytes}\r\n");
        s.send(format!("burst {bytes}\r").as_bytes()).await?;
        let want = head.len() + bytes as usize;
        if !s
            .until(Duration::from_secs(10), |g| g.len() >= want)
            .await?
        {
            bail!("the burst stopped after {} of {want} bytes", s.got.len());
        }
        let at = s
            .got
            .windows(head.len())
            .position(|w| w == head.as_bytes())
            .context("the burst command was not echoed")?;
        s.until(Duration::from_secs(10), |g| g.len() >= at + want)
            .await?;
        let body = s
            .got
            .get(at + head.len()..at + want)
            .context("the burst is short")?;
        if let Some(k) = body
            .iter()
            .enumerate()
            .position(|(k, &b)| b != PATTERN[k % 64])
        {
            bail!("burst byte {k} is wrong: the output is not complete and in order");
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let after = pid.and_then(proc_figures);
    let server_cpu_ms = match (before, after) {
        (Some(b), Some(a)) => Some(a.0.saturating_sub(b.0) as f64 * 10.0),
        _ => None,
    };
    drop(s);
    request(&sock, c, &mut rng, 0x06, 0x49, &[1, 1, 0, 0, 0, 0]).await?;
    let sid = c.bmc_session_id().to_le_bytes();
    let _ = request(&sock, c, &mut rng, 0x06, 0x3c, &sid).await;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Ok(Report {
        mode: if echo { "sol-echo" } else { "sol-burst" },
        count: if echo { count } else { 0 },
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        bytes: if echo { 0 } else { bytes },
        seconds,
        server_cpu_ms,
    })
}
