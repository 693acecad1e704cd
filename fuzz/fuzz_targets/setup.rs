//! Open Session Request, RAKP 1 and RAKP 3 payloads against a live handshake (see
//! `fuzzing::setup`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ipmi_proto::fuzzing::setup(data));
