//! Entry points shared by the cargo-fuzz targets in `fuzz/` and by the test that replays
//! their committed corpora, so a crash found by fuzzing stays a regression test.
//!
//! Every function must return normally for every input: the decoders and the endpoint never
//! panic on input.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::client::Client;
use crate::crypto::CipherSuite;
use crate::endpoint::{Endpoint, Entropy, Output};
use crate::machine::{BootFlags, MachineReply, MachineRequest, PowerState};
use crate::session::Privilege;
use crate::wire::{self, IpmiRequest, IpmiResponse};
use crate::{BmcConfig, User};

/// Decode `data` as a datagram, as an IPMI request and as a response.
pub fn decoders(data: &[u8]) {
    let _ = wire::decode_datagram(data);
    if let Ok(r) = IpmiRequest::decode(data) {
        // Whatever decodes must encode back to the same bytes.
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(out, data, "IPMI request round trip");
    }
    let _ = IpmiResponse::decode(data);
    for icv in [12, 16] {
        let _ = wire::split_trailer(data, data.len().saturating_sub(4), icv);
    }
}

/// Deterministic entropy (xorshift); the fuzzer controls everything else.
struct Xorshift(u64);

impl Entropy for Xorshift {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

fn endpoint() -> Endpoint {
    let user = User::new(
        "admin",
        Zeroizing::new(b"password".to_vec()),
        Privilege::Administrator,
    )
    .expect("valid user");
    let mut cfg = BmcConfig::new(vec![user], [1; 16]).expect("valid config");
    cfg.limits.max_half_open = 16;
    cfg.limits.max_sessions = 4;
    Endpoint::new(cfg)
}

fn answer(r: MachineRequest) -> MachineReply {
    match r {
        MachineRequest::PowerState => MachineReply::PowerState(PowerState::On),
        MachineRequest::GetBootFlags => MachineReply::BootFlags(BootFlags::default()),
        _ => MachineReply::Done,
    }
}

/// Feed the endpoint a sequence of datagrams with a simulated clock. The input is split
/// into records: `[delay_ms: u8][len: u8][bytes; len]`. Before the fuzzer's datagrams a real
/// suite-17 client logs in, and every record whose first byte is 0xFF is replaced by an
/// in-session request from that client with the rest as netFn, command and data, so the
/// fuzzer reaches the command handlers behind encryption.
pub fn endpoint_sequence(data: &[u8]) {
    let mut ep = endpoint();
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut now = Instant::now();
    let peer: SocketAddr = "127.0.0.1:623".parse().expect("address");
    let mut c = Client::new(
        CipherSuite::Suite17,
        "admin",
        b"password",
        Privilege::Administrator,
    );
    let step = |ep: &mut Endpoint, rng: &mut Xorshift, d: &[u8], now: Instant| match ep
        .handle(now, peer, d, rng)
    {
        Some(Output::Machine { ticket, request }) => {
            ep.complete(now, ticket, Ok(answer(request)), rng)
        }
        o => o,
    };
    let reply = |o: Option<Output>| match o {
        Some(Output::Transmit { data, .. }) => data,
        _ => Vec::new(),
    };
    let r = reply(step(&mut ep, &mut rng, &c.open_session_request(), now));
    let logged_in = c
        .handle_open_session_response(&r, &mut rng)
        .ok()
        .and_then(|rakp1| {
            c.handle_rakp2(&reply(step(&mut ep, &mut rng, &rakp1, now)))
                .ok()
        })
        .and_then(|rakp3| {
            c.handle_rakp4(&reply(step(&mut ep, &mut rng, &rakp3, now)))
                .ok()
        })
        .is_some();
    let mut rest = data;
    while rest.len() >= 2 {
        let (delay, len) = (rest[0], rest[1] as usize);
        rest = &rest[2..];
        let chunk = &rest[..len.min(rest.len())];
        rest = &rest[chunk.len()..];
        now += Duration::from_millis(delay as u64 * 50);
        ep.handle_timeout(now);
        if logged_in && chunk.len() >= 3 && chunk[0] == 0xff {
            let d = c.request(chunk[1] & 0x3f, chunk[2], &chunk[3..], &mut rng);
            if let Some(Output::Transmit { data, .. }) = step(&mut ep, &mut rng, &d, now) {
                let _ = c.response(&data);
            }
        } else {
            let _ = step(&mut ep, &mut rng, chunk, now);
        }
        while ep.poll_event().is_some() {}
    }
}
