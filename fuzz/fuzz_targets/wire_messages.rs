//! Fuzz target: see `cxnode::fuzz::wire_messages`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = cxnode::fuzz::wire_messages(data);
});
