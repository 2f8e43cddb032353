#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raintree_fuzz::wire_decode::run(data));
