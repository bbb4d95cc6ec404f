//! Fuzz target: see `cxnode::fuzz::journal_frames`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cxnode::fuzz::journal_frames(data);
});
