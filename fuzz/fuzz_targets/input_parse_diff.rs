//! A keymap spec and a sequence of messages played into a simulated keyboard: errors change no
//! key, `changes(old, new)` takes the keyboard from `old` to `new`, leaving releases every key.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| playpod_hotpath::input::fuzzing::check_sequence(data));
