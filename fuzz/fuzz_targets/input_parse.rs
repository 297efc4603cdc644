//! Any bytes as a text and as a binary input message: the parser agrees with the reference on
//! `serde_json`, every error reply is valid JSON, nothing panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| playpod_hotpath::input::fuzzing::check_parse(data));
