#![no_main]
// The property this checks is documented on `wasmpipe::fuzzing::query_string`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmpipe::fuzzing::query_string(data));
