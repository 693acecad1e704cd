//! The console's decoders (Open Session Response, RAKP 2, RAKP 4, in-session responses)
//! on odd answers at each step of a real login: the client never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ipmi_proto::fuzzing::client(data));
