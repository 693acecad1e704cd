//! The Redfish face's router and JSON bodies (PATCH of Systems and of the virtual CD, the
//! Reset/InsertMedia/EjectMedia actions, sessions), one request per input, no sockets (see
//! `ovbmc::redfish::fuzzing` for the input format).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ovbmc::redfish::fuzzing::request(data);
});
