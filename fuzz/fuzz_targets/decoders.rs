//! Every decoder on arbitrary bytes: RMCP/ASF, both session headers, trailers, IPMI messages.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ipmi_proto::fuzzing::decoders(data));
