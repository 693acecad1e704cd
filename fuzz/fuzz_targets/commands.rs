//! Every command's request data through the dispatcher at each privilege level, with the
//! machine's answers (see `fuzzing::commands`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ipmi_proto::fuzzing::commands(data));
