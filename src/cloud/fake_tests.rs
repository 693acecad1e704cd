//! Backend tests against the in-process fake cloud ([`super::fake`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use super::fake::Fake;
use super::machine::{BOOT_KEY, MachineOptions, NovaMachine, PXE_FIRST_KEY};
use super::session::{Session, SessionOptions};
use super::{BootStrategy, build_on, config};
use crate::backend::Machine;
use ipmi_proto::machine::{BootDevice, BootFlags, MachineError, PowerAction, PowerState};

const A: &str = "00000000-0000-4000-8000-00000000000a";
const B: &str = "00000000-0000-4000-8000-00000000000b";

pub(crate) async fn session(f: &Fake, opts: SessionOptions) -> Arc<Session> {
    let dir = std::env::temp_dir().join(format!(
        "ovbmc-fake-{}-{}",
        std::process::id(),
        f.addr.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("clouds.yaml");
    std::fs::write(&file, f.clouds_yaml()).unwrap();
    let cfg = config::load_from(Some("fake"), &[file], &[], &|_| None).unwrap();
    let s = Arc::new(Session::new(cfg, opts).unwrap());
    s.connect().await.unwrap();
    s
}

pub(crate) fn fast() -> SessionOptions {
    SessionOptions {
        cache_ttl: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
        ..SessionOptions::default()
    }
}

fn mopts(strategy: BootStrategy) -> MachineOptions {
    MachineOptions {
        strategy,
        ipxe_image: Some("ipxe".into()),
        confirm_timeout: Duration::from_secs(10),
        settle_poll: Duration::from_millis(20),
        ..MachineOptions::default()
    }
}

async fn machine(f: &Fake, strategy: BootStrategy) -> Arc<NovaMachine> {
    let s = session(f, fast()).await;
    build_on(&s, &mopts(strategy), &[A.to_string()])
        .await
        .unwrap()
        .remove(0)
}

/// Poll the BMC (which drives the fake's transitions) until `cond` holds.
async fn poll_until<F: FnMut() -> bool>(m: &NovaMachine, mut cond: F) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "condition not reached");
        let _ = m.power_state().await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
}

/// Poll until `cond` holds (no timing assertions: only a generous deadline).
async fn eventually<F: FnMut() -> bool>(mut cond: F) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "condition not reached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn revoked_token_reauthenticates_once() {
    let f = Fake::start().await;
    f.add_server(A, "a", "ACTIVE");
    let m = machine(&f, BootStrategy::Metadata).await;
    assert_eq!(f.lock().issued, 1);
    // The token is revoked: the next request gets 401, then one new token, then success.
    f.lock().valid_tokens.clear();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(m.power_state().await.unwrap(), PowerState::On);
    assert_eq!(f.lock().issued, 2);
    // 401 even with a fresh token: exactly one retry, then a failure (no loop).
    f.inject("servers/detail", 401, 5);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let e = m.power_state().await.unwrap_err();
    assert_eq!(e.kind, MachineError::Failed);
    assert_eq!(f.lock().issued, 3);
    assert_eq!(f.count("servers/detail"), 1 + 2 + 2);
}

#[tokio::test]
async fn conflict_and_server_error_are_busy() {
    let f = Fake::start().await;
    f.add_server(A, "a", "ACTIVE");
    let m = machine(&f, BootStrategy::Metadata).await;
    f.inject("/action", 409, 1);
    let e = m.power(PowerAction::Off).await.unwrap_err();
    assert_eq!(e.kind, MachineError::Busy);
    assert!(e.message.contains("injected 409"), "{}", e.message);
    // A 5xx is the cloud's trouble, not the request's: busy, so that the client retries.
    f.inject("servers/detail", 500, 1);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let e = m.power_state().await.unwrap_err();
    assert_eq!(e.kind, MachineError::Busy);
    // The failure is not cached beyond its own request: the next poll recovers.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(m.power_state().await.unwrap(), PowerState::On);
}

#[tokio::test]
async fn slow_cloud_times_out_as_busy() {
    let f = Fake::start().await;
    f.add_server(A, "a", "ACTIVE");
    let s = session(
        &f,
        SessionOptions {
            request_timeout: Duration::from_millis(300),
            ..fast()
        },
    )
    .await;
    let m = build_on(&s, &mopts(BootStrategy::Metadata), &[A.to_string()])
        .await
        .unwrap()
        .remove(0);
    f.inject_delay("servers/detail", Duration::from_secs(3), 1);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let e = m.power_state().await.unwrap_err();
    assert_eq!(e.kind, MachineError::Busy);
    assert!(e.message.contains("no answer in time"), "{}", e.message);
}

#[tokio::test]
async fn many_bmcs_share_one_list_request() {
    let f = Fake::start().await;
    let ids: Vec<String> = (0..8)
        .map(|i| format!("00000000-0000-4000-8000-0000000001{i:02}"))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        f.add_server(id, &format!("n{i}"), "ACTIVE");
    }
    let s = session(
        &f,
        SessionOptions {
            cache_ttl: Duration::from_secs(30),
            ..fast()
        },
    )
    .await;
    let ms = build_on(&s, &mopts(BootStrategy::Metadata), &ids)
        .await
        .unwrap();
    let before = s.stats.list_requests.load(Ordering::Relaxed);
    // An action invalidates the view: every BMC then needs a new one at the same moment.
    s.invalidate();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        for m in &ms {
            let m = m.clone();
            tasks.push(tokio::spawn(async move { m.power_state().await }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), PowerState::On);
    }
    assert_eq!(s.stats.list_requests.load(Ordering::Relaxed) - before, 1);
}

#[tokio::test]
async fn accepted_off_is_reported_until_nova_confirms() {
    let f = Fake::start().await;
    f.add_server(A, "a", "ACTIVE");
    f.lock().task_lists = 3;
    let m = machine(&f, BootStrategy::Metadata).await;
    m.power(PowerAction::Off).await.unwrap();
    // Nova still says ACTIVE (powering-off): we say off, never a stale "on".
    for _ in 0..3 {
        assert_eq!(m.power_state().await.unwrap(), PowerState::Off);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // Off again during the transition: accepted without a call.
    m.power(PowerAction::Off).await.unwrap();
    assert_eq!(f.count("/action"), 1);
    eventually(|| f.server(A)["status"] == "SHUTOFF").await;
    assert_eq!(m.power_state().await.unwrap(), PowerState::Off);
    // Off when off: no call.
    tokio::time::sleep(Duration::from_millis(60)).await;
    m.power(PowerAction::Soft).await.unwrap();
    assert_eq!(f.count("/action"), 1);
}

#[tokio::test]
async fn one_time_pxe_is_consumed_after_the_boot() {
    let f = Fake::start().await;
    f.add_server(A, "a", "SHUTOFF");
    f.lock().task_lists = 2;
    let m = machine(&f, BootStrategy::Metadata).await;
    let pxe = BootFlags::new(BootDevice::Pxe, false, true);
    m.set_boot_flags(pxe).await.unwrap();
    let meta = f.server(A)["metadata"].clone();
    assert_eq!(meta[PXE_FIRST_KEY], "1");
    assert_eq!(meta[BOOT_KEY], "a004000000");
    assert_eq!(m.boot_flags().await.unwrap(), pxe);
    m.power(PowerAction::On).await.unwrap();
    // Consumed at once as far as IPMI is concerned (valid bit clear, EFI kept) ...
    let after = m.boot_flags().await.unwrap();
    assert!(!after.valid() && after.efi());
    // ... but pxe-first stays until Nova has booted the guest.
    assert_eq!(f.server(A)["metadata"][PXE_FIRST_KEY], "1");
    eventually(|| f.server(A)["metadata"][PXE_FIRST_KEY] == "").await;
    assert_eq!(f.server(A)["metadata"][BOOT_KEY], "2004000000");
    eventually(|| !m.busy()).await;
    assert_eq!(m.power_state().await.unwrap(), PowerState::On);
}

#[tokio::test]
async fn persistent_flags_are_seen_by_a_second_bmc_and_not_rewritten() {
    let f = Fake::start().await;
    f.add_server(A, "a", "ACTIVE");
    let m1 = machine(&f, BootStrategy::Metadata).await;
    let m2 = machine(&f, BootStrategy::Metadata).await;
    let disk = BootFlags::new(BootDevice::Disk, true, false);
    m1.set_boot_flags(disk).await.unwrap();
    // The second session sees it once its cached view is older than the TTL.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(m2.boot_flags().await.unwrap(), disk);
    let writes = f.count("/metadata");
    m2.set_boot_flags(disk).await.unwrap();
    assert_eq!(f.count("/metadata"), writes);
}

#[tokio::test]
async fn rescue_strategy_leaves_rescue_before_stopping() {
    let f = Fake::start().await;
    f.add_server(A, "a", "SHUTOFF");
    f.lock().task_lists = 1;
    let m = machine(&f, BootStrategy::Rescue).await;
    m.set_boot_flags(BootFlags::new(BootDevice::Pxe, true, false))
        .await
        .unwrap();
    m.power(PowerAction::On).await.unwrap();
    poll_until(&m, || f.server(A)["status"] == "RESCUE").await;
    assert!(f.lock().log.iter().any(|l| l.contains("/action")));
    // Nova refuses metadata writes while rescued: the flags are kept and written later.
    let disk = BootFlags::new(BootDevice::Disk, true, false);
    eventually(|| !m.busy()).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    m.set_boot_flags(disk).await.unwrap();
    assert_eq!(m.boot_flags().await.unwrap(), disk);
    m.power(PowerAction::Off).await.unwrap();
    assert_eq!(m.power_state().await.unwrap(), PowerState::Off);
    eventually(|| f.server(A)["status"] == "SHUTOFF").await;
    eventually(|| f.server(A)["metadata"][BOOT_KEY] == "c008000000").await;
    eventually(|| !m.busy()).await;
    assert_eq!(m.power_state().await.unwrap(), PowerState::Off);
}

#[tokio::test]
async fn error_state_and_task_state() {
    let f = Fake::start().await;
    f.add_server(A, "a", "ACTIVE");
    let m = machine(&f, BootStrategy::Metadata).await;
    {
        let mut st = f.lock();
        let s = st.servers.get_mut(A).unwrap();
        s["OS-EXT-STS:task_state"] = json!("migrating");
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        m.power(PowerAction::Off).await.unwrap_err().kind,
        MachineError::Busy
    );
    {
        let mut st = f.lock();
        let s = st.servers.get_mut(A).unwrap();
        s["OS-EXT-STS:task_state"] = json!(null);
        s["status"] = json!("ERROR");
        s["fault"] = json!({"message": "No valid host was found", "code": 500});
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    let e = m.power_state().await.unwrap_err();
    assert_eq!(e.kind, MachineError::Failed);
    assert!(e.message.contains("No valid host"), "{}", e.message);
}

#[tokio::test]
async fn instance_resolution() {
    let f = Fake::start().await;
    f.add_server(A, "twin", "ACTIVE");
    f.add_server(B, "twin", "ACTIVE");
    let s = session(&f, fast()).await;
    let o = mopts(BootStrategy::Metadata);
    let e = build_on(&s, &o, &["twin".into()]).await.unwrap_err();
    assert!(e.to_string().contains("ambiguous"), "{e}");
    assert!(e.to_string().contains(A), "{e}");
    let e = build_on(&s, &o, &["ghost".into()]).await.unwrap_err();
    assert!(e.to_string().contains("no server"), "{e}");
    assert!(!e.to_string().contains("did you mean"), "{e}");
    let e = build_on(&s, &o, &["Twin".into()]).await.unwrap_err();
    assert!(e.to_string().contains("did you mean \"twin\""), "{e}");
    let m = build_on(&s, &o, &[B.to_uppercase()]).await.unwrap();
    assert_eq!(m[0].uuid()[15], 0x0b);
    assert_eq!(m[0].name(), "twin");
    // The 32-digit form without dashes, as nova.md promises (issue 15 item 15; refused as "no
    // server" before the fix).
    let m = build_on(&s, &o, &[B.replace('-', "")]).await.unwrap();
    assert_eq!(m[0].instance_id(), B);
}

/// A slow list: a BMC request waits at most `wait`, then is answered busy while the list goes
/// on; its outcome then serves the next request. Requests during the wait share the one list.
#[tokio::test]
async fn slow_list_answers_busy_within_the_wait_and_serves_later_requests() {
    let f = Fake::start().await;
    f.add_server(A, "a", "ACTIVE");
    let s = session(
        &f,
        SessionOptions {
            wait: Duration::from_millis(100),
            ..fast()
        },
    )
    .await;
    let m = build_on(&s, &mopts(BootStrategy::Metadata), &[A.to_string()])
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let before = s.stats.list_requests.load(Ordering::Relaxed);
    f.inject_delay("servers/detail", Duration::from_millis(600), 1);
    for _ in 0..3 {
        let e = m.power_state().await.unwrap_err();
        assert_eq!(e.kind, MachineError::Busy);
        assert!(e.message.contains("still waiting"), "{}", e.message);
    }
    // The same list, not one per request.
    assert_eq!(s.stats.list_requests.load(Ordering::Relaxed) - before, 1);
    eventually(|| s.stats.list_requests.load(Ordering::Relaxed) - before == 1).await;
    let mut ok = false;
    for _ in 0..50 {
        if m.power_state().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the slow list never served a request");
}

/// A failed list is remembered for the TTL after it *ended*: a list that took longer than the
/// TTL to fail is not retried by every request queued behind it.
#[tokio::test]
async fn a_failure_is_remembered_from_its_end() {
    let f = Fake::start().await;
    f.add_server(A, "a", "ACTIVE");
    let s = session(
        &f,
        SessionOptions {
            cache_ttl: Duration::from_millis(400),
            request_timeout: Duration::from_millis(200),
            wait: Duration::from_secs(2),
            ..fast()
        },
    )
    .await;
    let m = build_on(&s, &mopts(BootStrategy::Metadata), &[A.to_string()])
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(450)).await;
    f.inject_delay("servers/detail", Duration::from_secs(3), 1);
    let lists = f.count("servers/detail");
    let e = m.power_state().await.unwrap_err();
    assert!(e.message.contains("no answer in time"), "{}", e.message);
    // At once again: the remembered failure, no new request.
    let e2 = m.power_state().await.unwrap_err();
    assert_eq!(e2.kind, MachineError::Busy);
    assert_eq!(f.count("servers/detail"), lists + 1);
}

/// While a power action waits for a slow Nova, a retried or second action is answered busy
/// and not sent: one os-stop reaches Nova.
#[tokio::test]
async fn a_second_action_while_one_is_in_flight_is_busy_not_sent() {
    let f = Fake::start().await;
    f.add_server(A, "a", "ACTIVE");
    let m = machine(&f, BootStrategy::Metadata).await;
    f.inject_delay("/action", Duration::from_millis(500), 1);
    let m2 = m.clone();
    let first = tokio::spawn(async move { m2.power(PowerAction::Off).await });
    eventually(|| f.count("/action") == 1).await;
    let e = m.power(PowerAction::Off).await.unwrap_err();
    assert_eq!(e.kind, MachineError::Busy);
    assert!(
        e.message.contains("still waiting for Nova"),
        "{}",
        e.message
    );
    let e = m
        .set_boot_flags(BootFlags::new(BootDevice::Pxe, false, false))
        .await
        .unwrap_err();
    assert_eq!(e.kind, MachineError::Busy);
    first.await.unwrap().unwrap();
    assert_eq!(f.count("/action"), 1);
    assert_eq!(m.power_state().await.unwrap(), PowerState::Off);
}

/// Issue 15 item 17: the rescue strategy clears a `libvirt:pxe-first` left by the metadata
/// strategy (OVB's Nova would otherwise put the network first on every boot), even when the
/// flags themselves do not change.
#[tokio::test]
async fn rescue_strategy_clears_an_old_pxe_first() {
    let f = Fake::start().await;
    f.add_server(A, "a", "ACTIVE");
    f.lock().servers.get_mut(A).unwrap()["metadata"] =
        json!({ "libvirt:pxe-first": "1", "ovbmc:boot": "c008000000" });
    let m = machine(&f, BootStrategy::Rescue).await;
    m.set_boot_flags(BootFlags::new(BootDevice::Disk, true, false))
        .await
        .unwrap();
    let meta = f.lock().servers[A]["metadata"].clone();
    assert_eq!(meta["libvirt:pxe-first"], json!(""), "{meta}");
}

/// A Redfish face (no listener) on machine `m` as system "a", user admin/secret: the face and
/// the system's path.
fn redfish_face(m: &Arc<NovaMachine>) -> (crate::redfish::Offline, String) {
    let pw = zeroize::Zeroizing::new(b"secret".to_vec());
    let sys = crate::redfish::System::new(
        "a",
        "admin",
        &pw,
        ipmi_proto::session::Privilege::Administrator,
        m.clone(),
    )
    .unwrap();
    let path = format!("/redfish/v1/Systems/{}", sys.id);
    (crate::redfish::Offline::new(vec![sys]), path)
}

/// `b` with admin/secret's HTTP Basic credentials, no body.
fn authed(b: hyper::http::request::Builder) -> hyper::Request<()> {
    b.header(
        hyper::header::AUTHORIZATION,
        crate::redfish::fuzzing::basic("admin", "secret"),
    )
    .body(())
    .unwrap()
}

/// Server "a", ACTIVE, and its machine on a session whose view lasts 10 s (so only an
/// `invalidate` makes the next read list again).
async fn slow_view() -> (Fake, Arc<Session>, Arc<NovaMachine>) {
    let f = Fake::start().await;
    f.add_server(A, "a", "ACTIVE");
    let opts = SessionOptions {
        cache_ttl: Duration::from_secs(10),
        ..fast()
    };
    let s = session(&f, opts).await;
    let m = build_on(&s, &mopts(BootStrategy::Metadata), &[A.to_string()])
        .await
        .unwrap()
        .remove(0);
    (f, s, m)
}

/// The wait for a slow Nova server list depends on the face: an IPMI call (budget 700 ms) is
/// answered busy while the list is still out, and a Redfish GET (budget 2 s here) waits for
/// that same list and answers 200 — the defect this fixes: Ironic's Redfish boot-device PATCH
/// got 503 when one list took over 500 ms, and Ironic does not retry a PATCH.
#[tokio::test]
async fn a_slow_list_is_busy_for_ipmi_and_awaited_by_redfish() {
    use crate::backend::{patience_within, with_patience};
    let (f, s, m) = slow_view().await;
    // Stale, so the next read lists again (and that one list then serves the rest).
    s.invalidate();
    f.inject_delay("servers/detail", Duration::from_millis(1200), 1);
    let lists = f.count("servers/detail");
    let ipmi = patience_within(crate::settings::DEFAULT_BACKEND_TIMEOUT);
    let e = with_patience(ipmi, m.power_state()).await.unwrap_err();
    assert_eq!(e.kind, MachineError::Busy);
    assert!(e.message.contains("no answer in time"), "{}", e.message);

    let (face, path) = redfish_face(&m);
    let req = authed(hyper::Request::get(path));
    let r = face.answer(&req, None).await;
    assert_eq!(r.status(), hyper::StatusCode::OK);
    // One list served both: the Redfish request joined the one IPMI gave up on.
    assert_eq!(f.count("servers/detail"), lists + 1);
}

/// One deadline per Redfish request, not one budget per machine call: a boot PATCH whose
/// re-read after the change would wait for a second slow list answers 204 by its deadline (the
/// change made), where a budget per call let it run past the budget and answer 200 late.
#[tokio::test]
async fn a_redfish_patch_keeps_one_deadline_and_answers_204_when_the_reread_is_late() {
    let (f, s, m) = slow_view().await;
    // Offline's budget is 2 s: the read before the change (a fresh list, 1.2 s) leaves 0.8 s,
    // and the change makes the view stale, so the read after it needs a list of its own.
    let (face, path) = redfish_face(&m);
    s.invalidate();
    f.inject_delay("servers/detail", Duration::from_millis(1200), 2);
    let req = authed(
        hyper::Request::patch(&path).header(hyper::header::CONTENT_TYPE, "application/json"),
    );
    let body = br#"{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}"#;
    let r = face
        .answer(&req, Some(bytes::Bytes::from_static(body)))
        .await;
    assert_eq!(r.status(), hyper::StatusCode::NO_CONTENT);
    // The change was made: the next GET (its own deadline) shows it.
    let r = face.answer(&authed(hyper::Request::get(&path)), None).await;
    assert_eq!(r.status(), hyper::StatusCode::OK);
    let b = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["Boot"]["BootSourceOverrideTarget"], "Pxe", "{v}");
    assert_eq!(v["Boot"]["BootSourceOverrideEnabled"], "Once", "{v}");
}

/// Issue 13: a Redfish change asks a busy machine again until its deadline (Offline's budget,
/// 2 s) rather than answering 503 at once: Ironic's reboot sends ForceOff, then On while Nova
/// is still powering off, and sushy does not retry a POST. Past the deadline: 503 with
/// `Retry-After` and a Base message, and nothing sent to Nova.
#[tokio::test]
async fn redfish_changes_wait_for_a_busy_nova_then_answer_503_with_retry_after() {
    let f = Fake::start().await;
    f.add_server(A, "a", "ACTIVE");
    let m = machine(&f, BootStrategy::Metadata).await;
    let (face, path) = redfish_face(&m);
    let reset = |kind: &str| {
        let body = bytes::Bytes::from(format!(r#"{{"ResetType":"{kind}"}}"#));
        let req = authed(
            hyper::Request::post(format!("{path}/Actions/ComputerSystem.Reset"))
                .header(hyper::header::CONTENT_TYPE, "application/json"),
        );
        (req, body)
    };
    let busy = |r: hyper::Response<_>, what: &str| {
        assert_eq!(r.status(), hyper::StatusCode::SERVICE_UNAVAILABLE, "{what}");
        assert!(
            r.headers().contains_key(hyper::header::RETRY_AFTER),
            "{what}: no Retry-After: {:?}",
            r.headers()
        );
        r
    };
    async fn message_id(r: hyper::Response<http_body_util::Full<bytes::Bytes>>) -> String {
        let b = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        v["error"]["@Message.ExtendedInfo"][0]["MessageId"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    // 1. An action waiting for Nova's answer (4.5 s) past both deadlines: 503, nothing sent.
    f.inject_delay("/action", Duration::from_millis(4500), 1);
    let m2 = m.clone();
    let first = tokio::spawn(async move { m2.power(PowerAction::Off).await });
    eventually(|| f.count("/action") == 1).await;
    let (req, body) = reset("ForceOff");
    let r = busy(face.answer(&req, Some(body)).await, "Reset while in flight");
    let id = message_id(r).await;
    assert!(id.starts_with("Base."), "{id}");
    let patch = authed(
        hyper::Request::patch(&path).header(hyper::header::CONTENT_TYPE, "application/json"),
    );
    let body = br#"{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}"#;
    busy(
        face.answer(&patch, Some(bytes::Bytes::from_static(body)))
            .await,
        "boot PATCH while in flight",
    );
    first.await.unwrap().unwrap();
    assert_eq!(f.count("/action"), 1, "a busy answer sent nothing");

    // 2. Ironic's reboot, turned around: a change made while Nova still carries out the one
    //    before (the task set for three more lists) waits for it, then is made.
    f.lock().task_lists = 3;
    m.power(PowerAction::On).await.unwrap();
    let (req, body) = reset("ForceOff");
    let r = face.answer(&req, Some(body)).await;
    assert_eq!(
        r.status(),
        hyper::StatusCode::NO_CONTENT,
        "Reset after a short transition"
    );
    assert_eq!(f.count("/action"), 3, "os-start, then os-stop");
    // The fake finishes a transition after that many server lists: read until it has.
    for _ in 0..100 {
        if f.server(A)["status"] == "SHUTOFF" && f.server(A)["OS-EXT-STS:task_state"].is_null() {
            break;
        }
        let _ = m.power_state().await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(f.server(A)["status"], "SHUTOFF");

    // 3. A transition longer than the deadline: 503, nothing sent.
    f.lock().task_lists = 1000;
    m.power(PowerAction::On).await.unwrap();
    let (req, body) = reset("ForceOff");
    busy(
        face.answer(&req, Some(body)).await,
        "Reset while Nova powers on",
    );
    assert_eq!(f.count("/action"), 4, "a busy answer sent nothing");
}
