//! Fuzz target: see `cxnode::fuzz::link_batches`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cxnode::fuzz::link_batches(data);
});
