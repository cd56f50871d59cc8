#![no_main]
// The property this checks is documented on `wasmpipe::fuzzing::jsonl`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmpipe::fuzzing::jsonl(data));
