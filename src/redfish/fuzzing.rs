//! The fuzz entry point of the Redfish face (`fuzz/fuzz_targets/redfish.rs`) and its corpus
//! replay (`cargo test --lib redfish::fuzzing`): one request built from the input, through the
//! router and the JSON body parsers ([`super::Offline`], no sockets), on one system whose
//! machine only records (no power delays, and a virtual media insert fetches nothing: fuzzed
//! URLs must not become traffic).
//!
//! Input: byte 0 the method, byte 1 the headers (bit 0 good Basic credentials, bit 1 bad
//! ones, bit 2 an unknown `X-Auth-Token`, bit 3 `If-Match: *`, bit 4 `OData-Version: 5.0`),
//! then the path up to a newline (`{id}` stands for the system's Id, so that short inputs
//! reach the System, Manager and VirtualMedia resources), then the body.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use hyper::{Method, Request};
use ipmi_proto::machine::{BootFlags, PowerAction, PowerState};
use zeroize::Zeroizing;

use super::{Offline, System};
use crate::backend::{BackendError, BoxFuture, InsertOptions, Machine, MediaState};

const USER: &str = "fuzz";
const PASSWORD: &str = "fuzz-password";

/// A machine that records what it is told, instantly.
#[derive(Default)]
struct Recorder {
    power: Mutex<Option<PowerState>>,
    boot: Mutex<BootFlags>,
    media: Mutex<MediaState>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Machine for Recorder {
    fn power_state(&self) -> BoxFuture<'_, Result<PowerState, BackendError>> {
        Box::pin(async move { Ok(lock(&self.power).unwrap_or(PowerState::Off)) })
    }
    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            *lock(&self.power) = Some(match action {
                PowerAction::Off | PowerAction::Soft => PowerState::Off,
                _ => PowerState::On,
            });
            Ok(())
        })
    }
    fn boot_flags(&self) -> BoxFuture<'_, Result<BootFlags, BackendError>> {
        Box::pin(async move { Ok(*lock(&self.boot)) })
    }
    fn set_boot_flags(&self, flags: BootFlags) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            *lock(&self.boot) = flags;
            Ok(())
        })
    }
    fn uuid(&self) -> [u8; 16] {
        *b"ovbmc-fuzz-redfi"
    }
    fn name(&self) -> String {
        "fuzz".into()
    }
    fn media_state(&self) -> Option<MediaState> {
        Some(lock(&self.media).clone())
    }
    fn insert_media(
        &self,
        url: String,
        options: InsertOptions,
    ) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            *lock(&self.media) = MediaState::holding(url, &options);
            Ok(())
        })
    }
    fn eject_media(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            *lock(&self.media) = MediaState::default();
            Ok(())
        })
    }
}

struct World {
    rt: tokio::runtime::Runtime,
    face: Offline,
    id: String,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let machine: crate::backend::SharedMachine = Arc::new(Recorder::default());
        let sys = System::new(
            "fuzz",
            USER,
            &Zeroizing::new(PASSWORD.as_bytes().to_vec()),
            ipmi_proto::session::Privilege::Administrator,
            machine,
        )
        .expect("an administrator maps to a role");
        let id = sys.id.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        World {
            rt,
            face: Offline::new(vec![sys]),
            id,
        }
    })
}

const METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PATCH,
    Method::DELETE,
    Method::PUT,
];

/// `Basic` credentials (RFC 7617; standard base64, RFC 4648 §4).
pub(crate) fn basic(user: &str, password: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{password}");
    let mut out = String::from("Basic ");
    for c in raw.as_bytes().chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Answer the request `data` describes; its status (`None`: not a request hyper could
/// carry, e.g. a path that is no URI). Panics only on a bug.
pub fn request(data: &[u8]) -> Option<u16> {
    let (&m, rest) = data.split_first()?;
    let (&h, rest) = rest.split_first()?;
    let (path, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let w = world();
    let path = String::from_utf8_lossy(path).replace("{id}", &w.id);
    let method = METHODS[m as usize % METHODS.len()].clone();
    let mut b = Request::builder().method(method.clone()).uri(path);
    if h & 1 != 0 {
        b = b.header("authorization", basic(USER, PASSWORD));
    }
    if h & 2 != 0 {
        b = b.header("authorization", basic(USER, "wrong"));
    }
    if h & 4 != 0 {
        b = b.header("x-auth-token", "0123456789abcdef");
    }
    if h & 8 != 0 {
        b = b.header("if-match", "*");
    }
    if h & 16 != 0 {
        b = b.header("odata-version", "5.0");
    }
    let req = b.body(()).ok()?;
    let body = matches!(method, Method::POST | Method::PATCH).then(|| Bytes::copy_from_slice(body));
    let r = w.rt.block_on(w.face.answer(&req, body));
    Some(r.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `fuzz/corpus/redfish` through the entry point: no panic, and no 500.
    #[test]
    fn the_redfish_corpus_replays() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/redfish");
        let mut n = 0;
        for e in std::fs::read_dir(dir).expect("fuzz/corpus/redfish") {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            if let Some(s) = request(&data) {
                assert_ne!(s, 500, "{}", p.display());
            }
            n += 1;
        }
        assert!(n >= 10, "only {n} corpus files");
    }

    fn input(m: u8, h: u8, path: &str, body: &[u8]) -> Vec<u8> {
        let mut v = vec![m, h];
        v.extend_from_slice(path.as_bytes());
        v.push(b'\n');
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn the_entry_point_answers_as_the_service_does() {
        let cd = "/redfish/v1/Managers/{id}/VirtualMedia/Cd";
        assert_eq!(request(&input(0, 0, "/redfish/v1/", b"")), Some(200));
        assert_eq!(request(&input(0, 0, cd, b"")), Some(401));
        assert_eq!(request(&input(0, 1, cd, b"")), Some(200));
        let insert = format!("{cd}/Actions/VirtualMedia.InsertMedia");
        let ok = br#"{"Image":"http://192.0.2.1/a.iso"}"#;
        assert_eq!(request(&input(2, 1, &insert, ok)), Some(202));
        assert_eq!(request(&input(2, 1, &insert, b"{}")), Some(400));
        // Over the 16 KiB limit: 413 before anything is parsed.
        let mut big = br#"{"Image":"http://h/"#.to_vec();
        big.extend(std::iter::repeat_n(b'a', super::super::MAX_BODY));
        big.extend_from_slice(br#".iso"}"#);
        assert_eq!(request(&input(2, 1, &insert, &big)), Some(413));
        assert_eq!(request(&input(3, 1, cd, &big)), Some(413));
        assert_eq!(request(&input(0, 0, "no uri at all \u{7f}", b"")), None);
    }
}
