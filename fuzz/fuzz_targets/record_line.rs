//! Fuzz target: see `cxnode::fuzz::record_line`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cxnode::fuzz::record_line(data);
});
