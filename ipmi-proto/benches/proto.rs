//! criterion micro-benches of the protocol crate's hot paths: datagram decode/encode, the
//! session key schedule, one in-session command through `Endpoint::handle`, and one full
//! RMCP+ set-up through the endpoint, for suites 3 and 17.
//!
//! Run with `cargo bench -p ipmi-proto` (figures in docs/performance.md); `cargo test
//! --benches` runs each bench once as a smoke test, plain `cargo test` does not build them.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ipmi_proto::client::Client;
use ipmi_proto::codes::PayloadType;
use ipmi_proto::crypto::{CipherSuite, SessionKeys};
use ipmi_proto::endpoint::DropReason;
use ipmi_proto::fuzzing::Xorshift as Rng; // cheap: the benches measure the protocol, not the RNG
use ipmi_proto::session::Privilege;
use ipmi_proto::wire::{self, Datagram};
use ipmi_proto::{BmcConfig, Endpoint, Output, User};
use zeroize::Zeroizing;

const SUITES: [(CipherSuite, &str); 2] = [
    (CipherSuite::Suite3, "suite3"),
    (CipherSuite::Suite17, "suite17"),
];

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn endpoint() -> Endpoint {
    let u = User::new(
        "admin",
        Zeroizing::new(b"password".to_vec()),
        Privilege::Administrator,
    )
    .unwrap();
    Endpoint::new(BmcConfig::new(vec![u], [7; 16]).unwrap())
}

fn transmit(o: Result<Output, DropReason>) -> Vec<u8> {
    match o {
        Ok(Output::Transmit { data, .. }) => data,
        other => panic!("expected a datagram, got {other:?}"),
    }
}

/// Open Session → RAKP 1 → RAKP 3 → Set Session Privilege (ADMINISTRATOR), as ipmitool does
/// after Get Channel Authentication Capabilities.
fn login(ep: &mut Endpoint, c: &mut Client, now: Instant, rng: &mut Rng) {
    let r = transmit(ep.handle(now, peer(), &c.open_session_request(), rng));
    let rakp1 = c.handle_open_session_response(&r, rng).unwrap();
    let r = transmit(ep.handle(now, peer(), &rakp1, rng));
    let rakp3 = c.handle_rakp2(&r).unwrap();
    let r = transmit(ep.handle(now, peer(), &rakp3, rng));
    c.handle_rakp4(&r).unwrap();
    let req = c.request(0x06, 0x3b, &[4], rng);
    let r = transmit(ep.handle(now, peer(), &req, rng));
    let (_, cc, _) = c.response(&r).unwrap();
    assert_eq!(cc, 0);
}

fn close(ep: &mut Endpoint, c: &mut Client, now: Instant, rng: &mut Rng) {
    let sid = c.bmc_session_id().to_le_bytes();
    let req = c.request(0x06, 0x3c, &sid, rng);
    transmit(ep.handle(now, peer(), &req, rng));
}

fn logged_in(suite: CipherSuite) -> (Endpoint, Client, Rng) {
    let mut ep = endpoint();
    let mut rng = Rng::new(0x1234_5678_9abc_def1);
    let mut c = Client::new(suite, "admin", b"password", Privilege::Administrator);
    login(&mut ep, &mut c, Instant::now(), &mut rng);
    (ep, c, rng)
}

fn wire_codec(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("wire");
    for (suite, name) in SUITES {
        let (_, mut c, mut rng) = logged_in(suite);
        let d = c.request(0x00, 0x01, &[], &mut rng);
        g.throughput(Throughput::Bytes(d.len() as u64));
        g.bench_function(BenchmarkId::new("decode_v20", name), |b| {
            b.iter(|| match wire::decode_datagram(black_box(&d)) {
                Ok(Datagram::V20(p)) => wire::split_trailer(&d, p.trailer.len(), suite.icv_len())
                    .unwrap()
                    .0
                    .len(),
                _ => unreachable!(),
            })
        });
    }
    g.bench_function("encode_v20_header", |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            out.clear();
            let at = wire::begin_v20(
                &mut out,
                PayloadType::IPMI,
                true,
                true,
                black_box(0x1234),
                7,
            );
            out.extend_from_slice(&[0u8; 32]);
            wire::finish_v20(&mut out, at);
            out.len()
        })
    });
    g.finish();
}

fn key_schedule(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("keys");
    for (suite, name) in SUITES {
        g.bench_function(BenchmarkId::new("derive_sik_k1_k2", name), |b| {
            b.iter(|| {
                SessionKeys::derive(
                    suite,
                    black_box(b"password"),
                    &[1; 16],
                    &[2; 16],
                    0x14,
                    b"admin",
                )
            })
        });
    }
    g.finish();
}

/// One authenticated + encrypted Get Device ID (answered inside the endpoint): verify,
/// decrypt, dispatch, encrypt, sign. The client's cost (building the request) is outside the
/// timed part.
fn in_session(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("endpoint");
    for (suite, name) in SUITES {
        let (mut ep, mut c, mut rng) = logged_in(suite);
        let mut client_rng = Rng::new(0x5555_aaaa_1234_4321);
        let now = Instant::now();
        g.bench_function(BenchmarkId::new("get_device_id", name), |b| {
            b.iter_batched(
                || c.request(0x06, 0x01, &[], &mut client_rng),
                |req| transmit(ep.handle(now, peer(), &req, &mut rng)),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// A complete set-up through the endpoint, server and client side together (the client's
/// share is about the same as the server's: the same HMACs): Open Session, RAKP 1, RAKP 3,
/// Set Session Privilege, Close Session.
fn handshake(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("endpoint");
    for (suite, name) in SUITES {
        let mut ep = endpoint();
        let mut rng = Rng::new(0x0fed_cba9_8765_4321);
        let now = Instant::now();
        g.bench_function(BenchmarkId::new("login_close_with_client", name), |b| {
            b.iter(|| {
                let mut c = Client::new(suite, "admin", b"password", Privilege::Administrator);
                login(&mut ep, &mut c, now, &mut rng);
                close(&mut ep, &mut c, now, &mut rng);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, wire_codec, key_schedule, in_session, handshake);
criterion_main!(benches);
