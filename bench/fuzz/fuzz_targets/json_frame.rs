#![no_main]
// The property this checks is documented on `wasmpipe::fuzzing::json_frame`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmpipe::fuzzing::json_frame(data));
