//! The whole endpoint fed sequences of datagrams with a simulated clock, including
//! authenticated in-session requests built from the input (see `fuzzing::endpoint_sequence`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ipmi_proto::fuzzing::endpoint_sequence(data));
