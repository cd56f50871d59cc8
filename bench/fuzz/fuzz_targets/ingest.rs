#![no_main]
// The property this checks is documented on `wasmpipe::fuzzing::ingest`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmpipe::fuzzing::ingest(data));
