#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raintree_fuzz::frame_opener::run(data));
